"""The agent's labels on its Node: :class:`NodeLabelPublisher`.

``sync(desired)`` diffs the desired labels against the watched ones (``labels.plan_node_patch``) and
sends at most ONE JSON merge patch that sets/removes the agent's labels and rewrites its ownership
annotation together; nothing differs → no request at all.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from agent.labelsyntax import validate_label
from agent.publish import labels as label_rules
from agent.publish.kube.api import FIELD_MANAGER, MERGE_PATCH, REQUEST_TIMEOUT, NodeApi, RequestTimeout
from agent.publish.kube.failures import ApiFailure, not_observed
from agent.publish.kube.watch import FreshView, NodeWatcher, ObservedNode

# One logger for the whole package, so that log lines keep naming agent.publish.kube.
logger = logging.getLogger(__package__)


class SkippedLabel(NamedTuple):
    """A desired label that was not published, and why."""

    key: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncResult:
    """What one ``sync`` did. ``patch`` is the ``metadata`` merge patch sent (None: no request made)."""

    patch: Mapping[str, Any] | None = None
    error: ApiFailure | None = None
    skipped: tuple[SkippedLabel, ...] = ()  # desired labels not published

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def patched(self) -> bool:
        return self.patch is not None and self.error is None


class NodeLabelPublisher:
    """Keeps the agent's labels on its Node equal to the desired ones, one merge patch per change."""

    def __init__(
        self,
        api_client: Any,
        watcher: NodeWatcher,
        *,
        prefix: str,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self._core = NodeApi(api_client)
        self._watcher = watcher
        self._prefix = prefix
        self._request_timeout = RequestTimeout(*request_timeout)
        self._view = FreshView(watcher)
        self._lock = threading.Lock()

    def current(self) -> ObservedNode | None:
        """The freshest view of the Node: the watch's, or our own patch's answer while the watch lags."""
        with self._lock:
            return self._view.current()

    def sync(self, desired: Mapping[str, str]) -> SyncResult:
        """Make the Node's labels under our prefix equal ``desired``: zero requests when they already are,
        otherwise ONE merge patch. Never raises for API or network failures: they come back in the result."""
        with self._lock:
            return self._sync(desired)

    def _sync(self, desired: Mapping[str, str]) -> SyncResult:
        valid, skipped = _publishable(desired, self._prefix)
        for key, reason in skipped:
            logger.warning("not publishing label %s: %s", key, reason)
        node = self._view.current()
        if node is None:
            return SyncResult(error=not_observed(self._watcher.name), skipped=skipped)
        # Labels and the ownership annotation in one body, so they cannot drift apart.
        body = label_rules.plan_node_patch(node.labels, node.annotations, valid, self._prefix)
        if body is None:
            return SyncResult(skipped=skipped)
        failure = self._view.patch(
            node,
            lambda: self._core.patch_node(
                self._watcher.name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._request_timeout,
            ),
        )
        if failure is not None:
            log = logger.error if failure.status == 422 else logger.warning
            log("patching labels of node %s failed: %s%s", self._watcher.name, failure, _advice(failure))
            return SyncResult(patch=body, error=failure, skipped=skipped)
        logger.info("labels of node %s patched: %s", self._watcher.name, json.dumps(body, sort_keys=True))
        return SyncResult(patch=body, skipped=skipped)


class _Publishable(NamedTuple):
    """The desired labels split into those to publish and those that may not be."""

    valid: dict[str, str]
    skipped: tuple[SkippedLabel, ...]


def _publishable(desired: Mapping[str, str], prefix: str) -> _Publishable:
    """The desired labels the API server will accept and that are ours to set; the rest, explained.

    ``labels.desired_labels`` already drops invalid labels; this is the last check before the wire,
    so that nothing the API server would refuse with 422 is ever sent, whatever the caller passes."""
    valid: dict[str, str] = {}
    skipped: list[SkippedLabel] = []
    for key, value in sorted(desired.items()):
        problem = validate_label(key, value)
        if problem is None and not key.startswith(prefix):
            problem = f"not under the agent's prefix {prefix}"
        if problem is None:
            valid[key] = value
        else:
            skipped.append(SkippedLabel(key, problem))
    return _Publishable(valid, tuple(skipped))


def _advice(failure: ApiFailure) -> str:
    if failure.status == 403:
        return (
            " (RBAC must grant list, watch and patch on nodes, and the admission policy allows only this"
            " node and the agent's prefix: see docs/kubernetes.md)"
        )
    if failure.status == 409:
        return " (the watch will deliver the current Node; retrying next cycle)"
    if failure.status == 422:
        return " (a bug: labels are validated before they are sent)"
    return "; retrying next cycle"
