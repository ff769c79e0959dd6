"""The publishing stages the loop runs after discover and enforce: allocatable, node labels, the
Node condition and Events.

Each stage takes the :class:`AgentState` and returns it enriched (resources, selector matches,
publish-side problems). A stage that could not do its job raises, so the loop records it as failed
(``rdma_agent_stage_success{stage=…} 0``) while the other stages and the metrics keep going.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from agent.diagnose.diagnosis import consumer_problems, selector_problems, why_zero
from agent.diagnose.expected import expected_resources, remember_offered
from agent.diagnose.quantity import resources_from_node
from agent.diagnose.selection import match_selectors, plugin_view
from agent.errors import PublishError, StageError
from agent.model import AgentState, NodeCondition, Problem
from agent.publish.condition import CONDITION_TYPE, desired_condition
from agent.publish.events import node_events
from agent.publish.features_file import write_features
from agent.publish.kube.events import EventRecorder
from agent.publish.kube.node_labels import NodeLabelPublisher
from agent.publish.kube.node_status import ConditionPublisher
from agent.publish.kube.watch import NodeWatcher
from agent.publish.labels import Hysteresis, hysteresis_keys, labels_and_problems
from agent.publish.plugin_source import NoSource, PluginConfigSource

logger = logging.getLogger(__name__)


class LabelsStage:
    """Desired labels (with hysteresis on link-driven ones) → the Node (one merge patch when they
    differ) or an NFD features.d file."""

    name = "labels"

    def __init__(
        self,
        prefix: str,
        hold_seconds: float,
        *,
        node: NodeLabelPublisher | None = None,
        watcher: NodeWatcher | None = None,
        features_file: Path | None = None,
        host_root: Path = Path("/"),
        features_ttl: float | None = None,
        timer: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = prefix
        self.hysteresis = Hysteresis(hold_seconds, hysteresis_keys(prefix))
        self.node, self.watcher, self.features_file = node, watcher, features_file
        self.host_root = host_root
        self.features_ttl = features_ttl  # the features file's lease (# +expiry-time); None: none
        self.timer, self.clock = timer, clock

    def __call__(self, state: AgentState) -> AgentState:
        if state.snapshot is None:
            return state
        wanted, dropped = labels_and_problems(state.snapshot, state.enforcement, self.prefix)
        problems = tuple(dropped)
        labels = self.hysteresis.update(self.timer(), wanted)
        state = replace(state, problems=state.problems + problems)
        if self.features_file is not None:
            try:
                write_features(
                    self.features_file, labels, root=self.host_root, ttl_seconds=self.features_ttl, now=self.clock()
                )
            except PublishError as err:
                problem = Problem(code="nfd_features_failed", message=str(err), subject=str(self.features_file))
                raise StageError(str(err), replace(state, problems=(*state.problems, problem))) from err
        if self.node is not None:
            result = self.node.sync(labels)
            if not result.ok:
                raise PublishError(f"node labels not published: {result.error}")
            if self.watcher is not None and not self.watcher.healthy():
                raise PublishError("node labels not verified: the Node watch is not healthy")
        return state


class AllocatableStage:
    """The Node's RDMA extended resources, the shared device plugin's selectors against this node,
    and why an allocatable count is zero."""

    name = "allocatable"

    def __init__(
        self, prefixes: tuple[str, ...], plugin_config: PluginConfigSource | None, watcher: NodeWatcher | None
    ) -> None:
        self.prefixes, self.watcher = prefixes, watcher
        self.plugin_config = plugin_config if plugin_config is not None else NoSource()
        self.seen: frozenset[str] = frozenset()  # resources this Node offered (capacity > 0) since the start

    def __call__(self, state: AgentState) -> AgentState:
        if state.snapshot is None:
            return state
        view, enforcement = plugin_view(state.snapshot), state.enforcement  # the plugin's devices, once a cycle
        config, read_problems, source = self.plugin_config.read()
        problems = list(read_problems)
        matches = match_selectors(view, config) if config is not None else ()
        if config is not None:
            problems += selector_problems(view, matches, config)
        observed = self.watcher.observed() if self.watcher is not None else None
        resources = resources_from_node(observed.capacity, observed.allocatable, self.prefixes) if observed else ()
        problems += consumer_problems(view, enforcement, resources, config)
        expected: tuple[str, ...] = ()
        if observed is not None:  # before the Node is seen every resource would look missing
            problems += why_zero(view, enforcement, resources, matches, config)
            self.seen = remember_offered(self.seen, resources)
            expected = expected_resources(config, matches, self.seen)
        return replace(
            state,
            resources=resources,
            selectors=matches,
            expected_resources=expected,
            plugin_config=source,
            problems=state.problems + tuple(problems),
        )


class ConditionStage:
    """The ``RDMAReady`` Node condition: computed every cycle (``status`` shows it), published when a
    publisher is given. A change of status goes through the same hysteresis as the ``ready`` label, on
    the same inputs, so the label and the condition never disagree: while a change is held, the last
    condition stays as it was (message included), so a flapping port writes nothing."""

    name = "condition"

    def __init__(
        self,
        hold_seconds: float,
        publisher: ConditionPublisher | None = None,
        *,
        timer: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hysteresis = Hysteresis(hold_seconds, (CONDITION_TYPE,))
        self.publisher = publisher
        self.timer, self.clock = timer, clock
        self.held: NodeCondition | None = None  # the condition published last (status after the hold)

    def __call__(self, state: AgentState) -> AgentState:
        if state.snapshot is None:
            return state
        now = desired_condition(state.snapshot, state.enforcement, state.all_problems)
        status = self.hysteresis.update(self.timer(), {CONDITION_TYPE: now.status})[CONDITION_TYPE]
        if status == now.status or self.held is None:
            self.held = now
        state = replace(state, condition=self.held)
        if self.publisher is not None:
            result = self.publisher.sync(self.held, self.clock())
            if not result.ok:
                raise StageError(f"node condition not published: {result.error}", state)
        return state


class EventsStage:
    """Events for what changed since the last cycle (:func:`agent.publish.events.node_events`),
    handed to the recorder, which aggregates, rate-limits and sends them in the background."""

    name = "events"

    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder
        self.previous: AgentState | None = None

    def __call__(self, state: AgentState) -> AgentState:
        if state.snapshot is None:
            return state
        for event in node_events(self.previous, state):
            self.recorder.record(event)
        self.recorder.tick()
        self.previous = state
        return state
