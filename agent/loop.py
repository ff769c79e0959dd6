"""The reconcile loop: discover → plan → enforce → publish, every interval and on SIGHUP.

Each stage records its own health (success, last success, duration) so one query shows which stage
broke; a failing stage never stops the others or the metrics server. The published
:class:`AgentState` is replaced as a whole after each cycle, so scrapes read a consistent view.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol, cast

from agent.config import Config
from agent.discover.rdma_netlink import RdmaNetlink
from agent.discover.snapshot import SnapshotCache, take_snapshot
from agent.errors import StageError
from agent.model import ActionKind, AgentState, DesiredMode, EnforcementState, NodeSnapshot, Problem, StageHealth
from agent.reconcile.enforce import Enforcer
from agent.reconcile.plan import EnforcerMemory, PlanInput, plan

logger = logging.getLogger(__name__)

# A cycle normally takes well under a second; past this one is stuck (a host read or an API request
# that hangs) and /healthz fails, so that kubelet restarts the agent. Requests to the API server
# time out after 40 s each (agent.publish.kube.api), so a slow API server alone never gets here.
CYCLE_DEADLINE_SECONDS = 120.0

CHANGES_HOST = (ActionKind.WRITE_PERSISTED, ActionKind.SET_RUNTIME_MODE)
SIGNALS = (ActionKind.SIGNAL_REBOOT, ActionKind.CLEAR_REBOOT)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())[:300]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Stage(Protocol):
    """A publishing stage (labels, allocatable): reads the state, returns it possibly enriched."""

    name: str

    def __call__(self, state: AgentState) -> AgentState: ...


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        netlink: Callable[[], RdmaNetlink] = RdmaNetlink,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        stages: Sequence[Stage] = (),
        write_hook: Callable[[str], None] | None = None,
        cycle_deadline: float | None = None,
    ) -> None:
        self.config = config
        self._netlink = netlink
        self._clock = clock
        self._timer = timer
        self._stages = tuple(stages)
        self.enforcer = Enforcer(config, netlink=netlink, write_hook=write_hook)
        self.memory: EnforcerMemory = self.enforcer.initial_memory()
        self._state = AgentState()
        # What discovery keeps across cycles: sysfs facts that cannot change while their device
        # lives, all read again every 10 minutes of cycles (SysfsCache says what is static and why).
        self.discovery = SnapshotCache.for_interval(config.interval_seconds)
        self._health: dict[str, StageHealth] = {}
        self._last_cycle_end: float | None = None
        self._cycle_started: float | None = None  # while a cycle runs
        self.cycle_deadline = cycle_deadline if cycle_deadline is not None else CYCLE_DEADLINE_SECONDS
        self.cycles = 0

    # --- read side (any thread) ---------------------------------------------------------------------

    def state(self) -> AgentState:
        return self._state

    def ready(self) -> bool:
        """A first snapshot exists and the last cycle's discovery succeeded."""
        discover = self._health.get("discover")
        return self._state.snapshot is not None and discover is not None and discover.success

    def healthy(self) -> bool:
        """The loop is alive: no cycle — the first one included — has been running for longer than
        ``cycle_deadline`` (a host read or a request that hangs), and one finished within three
        intervals (or none is due yet)."""
        now = self._timer()
        started = self._cycle_started
        if started is not None and now - started > self.cycle_deadline:
            return False
        if self._last_cycle_end is None:
            return True
        return now - self._last_cycle_end < 3 * self.config.interval_seconds + 30

    # --- one cycle ----------------------------------------------------------------------------------

    def _record(self, stage: str, started: float, success: bool) -> None:
        previous = self._health.get(stage)
        now = self._clock()
        self._health[stage] = StageHealth(
            stage=stage,
            success=success,
            last_success=now if success else (previous.last_success if previous else None),
            duration_seconds=self._timer() - started,
        )

    def _snapshot(self) -> NodeSnapshot:
        return take_snapshot(self.config.roots, netlink=self._netlink, clock=self._clock, cache=self.discovery)

    def _plan(self, snapshot: NodeSnapshot) -> EnforcementState:
        managed = self.config.netns_mode is not DesiredMode.UNMANAGED  # unmanaged never reads it
        text, error = self.enforcer.read_managed_file() if managed else (None, None)
        return plan(
            PlanInput(
                snapshot=snapshot,
                desired=self.config.netns_mode,
                managed_file_text=text,
                managed_file_display=self.enforcer.managed_display,
                memory=self.memory,
                now=self._clock(),
                dry_run=self.config.dry_run,
                managed_file_error=error,
            )
        )

    def reconcile(self, snapshot: NodeSnapshot) -> tuple[NodeSnapshot, EnforcementState]:
        """Plan, act, and plan again on what the host now is, for the state to report."""
        state = self._plan(snapshot)
        if self.config.dry_run:
            for action in state.plan:
                logger.info("dry run: would %s (%s)", action.kind.value, action.reason)
            return snapshot, state
        problems: list[Problem] = []
        changing = [a for a in state.plan if a.kind in CHANGES_HOST]
        if changing:
            self.memory, problems = self.enforcer.apply(changing, self.memory, self._clock())
            snapshot = self._snapshot()  # see what the change did
            state = self._plan(snapshot)
        signals = [a for a in state.plan if a.kind in SIGNALS]
        more: list[Problem] = []
        if signals:
            self.memory, more = self.enforcer.apply(signals, self.memory, self._clock())
            state = self._plan(snapshot)  # reflects the signal just given
        return snapshot, replace(
            state, problems=state.problems + tuple(problems) + tuple(more), applied=(*changing, *signals)
        )

    def run_once(self) -> AgentState:
        self._cycle_started = self._timer()
        try:
            return self._cycle()
        finally:
            self._cycle_started = None

    def _cycle(self) -> AgentState:
        started = self._timer()
        failures: tuple[Problem, ...] = ()
        try:
            snapshot: NodeSnapshot | None = self._snapshot()
            self._record("discover", started, True)
        except Exception as err:
            logger.exception("discovery failed")
            self._record("discover", started, False)
            snapshot = self._state.snapshot
            kept = " (the last snapshot is shown)" if snapshot is not None else ""
            failures = (Problem(code="discovery_failed", message=f"discovery failed: {_one_line(err)}{kept}"),)
        enforcement = self._state.enforcement
        if snapshot is not None:
            started = self._timer()
            try:
                snapshot, enforcement = self.reconcile(snapshot)
                self._record("enforce", started, True)
            except Exception:
                logger.exception("enforcement failed")
                self._record("enforce", started, False)
        state = AgentState(snapshot=snapshot, enforcement=enforcement, problems=failures)  # per cycle
        for stage in self._stages:
            started = self._timer()
            try:
                state = stage(state)
                self._record(stage.name, started, True)
            except StageError as err:
                logger.error("stage %s failed: %s", stage.name, err)
                state = cast(AgentState, err.state)
                self._record(stage.name, started, False)
            except Exception:
                logger.exception("stage %s failed", stage.name)
                self._record(stage.name, started, False)
        self._state = replace(state, stages=tuple(self._health[name] for name in sorted(self._health)))
        self._last_cycle_end = self._timer()
        self.cycles += 1
        return self._state

    def run_forever(self, stop: threading.Event, wake: threading.Event) -> None:
        """Reconcile every interval, at once when ``wake`` is set (SIGHUP), until ``stop`` (SIGTERM)."""
        while not stop.is_set():
            self.run_once()
            wake.wait(self.config.interval_seconds)
            wake.clear()
