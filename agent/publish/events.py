"""Which Kubernetes Events the agent records: one per transition, never one per cycle (pure).

:func:`node_events` compares the state the loop published last cycle with this cycle's and names
what happened, for ``kubectl describe node`` and ``kubectl get events``:

=====================================  ========  =====================  ==============================
reason                                 type      action                 when
=====================================  ========  =====================  ==============================
``NetnsModeSwitched``                  Normal    ``SwitchNetnsMode``    the live netns mode changed
``RebootRequired``                     Warning   ``SwitchNetnsMode``    a reboot became required
``RebootNotRequired``                  Normal    ``SwitchNetnsMode``    it no longer is
``PersistedNetnsMode``                 Normal    ``PersistNetnsMode``   the managed modprobe.d file was written
``PersistedNetnsModeIgnored``          Warning   ``PersistNetnsMode``   the persisted mode was ignored at boot
``AllocatableZero``                    Warning   ``CheckAllocatable``   a resource dropped to 0 (or vanished)
``AllocatableRecovered``               Normal    ``CheckAllocatable``   it is allocatable again
``SelectorMatchesNothing``             Warning   ``CheckSelectors``     a device-plugin selector stopped matching
``RDMANotReady`` / ``RDMAReady``       W / N     ``CheckReadiness``     the RDMAReady condition changed
=====================================  ========  =====================  ==============================

The first cycle only sets the baseline for state comparisons (a restart re-announces nothing);
an action the agent took (the file written) is recorded whenever it happens. Repeats are
aggregated and rate-limited by the recorder (:mod:`agent.publish.kube.events`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from agent.model import ActionKind, AgentState, EnforcementState

NORMAL: Final = "Normal"
WARNING: Final = "Warning"
MAX_NOTE: Final = 1024  # events.k8s.io/v1 note


@dataclass(frozen=True, kw_only=True, slots=True)
class EventSpec:
    """An event to record about the agent's Node."""

    type: str  # Normal | Warning
    reason: str  # CamelCase, stable
    action: str  # what the agent was doing (events.k8s.io/v1 ``action``)
    note: str  # one line, for people

    def __post_init__(self) -> None:
        if len(self.note.encode()) > MAX_NOTE:
            object.__setattr__(self, "note", self.note.encode()[: MAX_NOTE - 3].decode(errors="ignore") + "...")


def node_events(prev: AgentState | None, state: AgentState) -> list[EventSpec]:
    """The events for the step from ``prev`` (None: the first cycle) to ``state``."""
    out = list(_actions(state.enforcement))
    if prev is not None:
        out += _enforcement(prev.enforcement, state.enforcement)
        out += _allocatable(prev, state)
        out += _readiness(prev, state)
    return out


def _actions(enforcement: EnforcementState | None) -> Iterator[EventSpec]:
    if enforcement is None:
        return
    failed = any(p.code == "persist_failed" for p in enforcement.problems)
    for action in enforcement.applied:
        if action.kind is ActionKind.WRITE_PERSISTED and not failed:
            yield EventSpec(
                type=NORMAL,
                reason="PersistedNetnsMode",
                action="PersistNetnsMode",
                note=f"{action.reason} (applies at the next load of ib_core)",
            )


def _enforcement(prev: EnforcementState | None, now: EnforcementState | None) -> Iterator[EventSpec]:
    if prev is None or now is None:
        return
    if prev.live is not None and now.live is not None and prev.live != now.live:
        yield EventSpec(
            type=NORMAL,
            reason="NetnsModeSwitched",
            action="SwitchNetnsMode",
            note=f"the RDMA netns mode is now {now.live.value} (was {prev.live.value})",
        )
    if now.reboot_required and not prev.reboot_required:
        yield EventSpec(
            type=WARNING,
            reason="RebootRequired",
            action="SwitchNetnsMode",
            note=now.reboot_reason or "a reboot is required for the desired RDMA netns mode",
        )
    elif prev.reboot_required and not now.reboot_required:
        yield EventSpec(
            type=NORMAL,
            reason="RebootNotRequired",
            action="SwitchNetnsMode",
            note="the desired RDMA netns mode is in effect: no reboot is required any more",
        )
    if now.persisted_ineffective and not prev.persisted_ineffective:
        mode = now.persisted.value if now.persisted is not None else "the persisted mode"
        yield EventSpec(
            type=WARNING,
            reason="PersistedNetnsModeIgnored",
            action="PersistNetnsMode",
            note=f"netns mode {mode} is persisted since before this boot, yet the live mode differs: "
            "ib_core was loaded without it (rebuild the initramfs)",
        )


def _allocatable(prev: AgentState, now: AgentState) -> Iterator[EventSpec]:
    before = {r.name: r.allocatable for r in prev.resources}
    after = {r.name: r.allocatable for r in now.resources}
    for name in sorted(before.keys() | after.keys()):
        was, was_expected = before.get(name), name in prev.expected_resources
        got, expected = after.get(name), name in now.expected_resources
        if (was or 0) > 0 and (got == 0 or (got is None and expected)):
            to = "0" if got == 0 else "nothing: the Node no longer lists it"
            note = f"{name} allocatable dropped from {was} to {to}"
            yield EventSpec(type=WARNING, reason="AllocatableZero", action="CheckAllocatable", note=note)
        elif (got or 0) > 0 and (was == 0 or (was is None and was_expected)):
            yield EventSpec(
                type=NORMAL,
                reason="AllocatableRecovered",
                action="CheckAllocatable",
                note=f"{name} is allocatable again: {got}",
            )
    matched = {m.resource: m.matched for m in prev.selectors}
    for match in now.selectors:
        if matched.get(match.resource, 0) > 0 and match.matched == 0:
            yield EventSpec(
                type=WARNING,
                reason="SelectorMatchesNothing",
                action="CheckSelectors",
                note=f"the device plugin's selector for {match.resource} no longer matches any RDMA device "
                f"of this node ({match.summary})",
            )


def _readiness(prev: AgentState, now: AgentState) -> Iterator[EventSpec]:
    if prev.condition is None or now.condition is None or prev.condition.status == now.condition.status:
        return
    ready = now.condition.status == "True"
    yield EventSpec(
        type=NORMAL if ready else WARNING,
        reason="RDMAReady" if ready else "RDMANotReady",
        action="CheckReadiness",
        note=f"{now.condition.reason}: {now.condition.message}",
    )
