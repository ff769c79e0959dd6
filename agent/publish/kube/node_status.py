"""The agent's condition on its Node: :class:`ConditionPublisher`.

``sync(condition, now)`` compares the wanted ``RDMAReady`` condition with the watched Node
(:func:`agent.publish.condition.plan_condition`) and sends at most ONE strategic merge patch to
``nodes/<name>/status`` — the request the kubelet itself uses for its conditions. The list is merged
by ``type`` on the server, so the kubelet's ``Ready``, ``MemoryPressure``, … and any other tool's
conditions stay as they are; the agent never sends a condition type it does not own. Steady state:
no request between heartbeats.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.model import NodeCondition
from agent.publish.condition import CONDITION_TYPE, condition_patch, plan_condition
from agent.publish.kube.api import (
    FIELD_MANAGER,
    REQUEST_TIMEOUT,
    STRATEGIC_MERGE_PATCH,
    NodeApi,
    RequestTimeout,
)
from agent.publish.kube.failures import ApiFailure, not_observed
from agent.publish.kube.watch import FreshView, NodeWatcher

logger = logging.getLogger(__package__)

HEARTBEAT_SECONDS = 3600.0  # default of node-condition-heartbeat


@dataclass(frozen=True, kw_only=True, slots=True)
class ConditionResult:
    """What one ``sync`` did: the condition written (None: no request made) or why it failed."""

    written: Mapping[str, str] | None = None
    error: ApiFailure | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ConditionPublisher:
    """Keeps the Node's ``RDMAReady`` condition equal to the wanted one."""

    def __init__(
        self,
        api_client: Any,
        watcher: NodeWatcher,
        *,
        heartbeat: float = HEARTBEAT_SECONDS,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self._core = NodeApi(api_client)
        self._watcher = watcher
        self._view = FreshView(watcher)
        self._heartbeat = heartbeat
        self._request_timeout = RequestTimeout(*request_timeout)
        self._lock = threading.Lock()

    def sync(self, condition: NodeCondition, now: float) -> ConditionResult:
        """Zero requests when the Node says so already and no heartbeat is due; else ONE patch. Never
        raises for API or network failures: they come back in the result."""
        if condition.type != CONDITION_TYPE:  # the admission policy would deny it; say so here first
            raise ValueError(f"the agent owns only the condition type {CONDITION_TYPE}, not {condition.type}")
        with self._lock:
            node = self._view.current()
            if node is None:
                return ConditionResult(error=not_observed(self._watcher.name))
            wanted = plan_condition(node.conditions.get(CONDITION_TYPE), condition, now, self._heartbeat)
            if wanted is None:
                return ConditionResult()
            failure = self._view.patch(
                node,
                lambda: self._core.patch_node_status(
                    self._watcher.name,
                    condition_patch(wanted),
                    field_manager=FIELD_MANAGER,
                    _content_type=STRATEGIC_MERGE_PATCH,
                    _preload_content=False,
                    _request_timeout=self._request_timeout,
                ),
            )
            if failure is not None:
                logger.warning(
                    "patching the %s condition of node %s failed: %s",
                    CONDITION_TYPE,
                    self._watcher.name,
                    failure,
                    extra={"node": self._watcher.name},
                )
                return ConditionResult(written=wanted, error=failure)
            logger.info(
                "node %s condition %s=%s (%s)",
                self._watcher.name,
                CONDITION_TYPE,
                wanted["status"],
                wanted["reason"],
                extra={"node": self._watcher.name},
            )
            return ConditionResult(written=wanted)
