"""Events about the Node: which transitions are recorded (agent/publish/events.py, pure), how repeats
become series and floods are cut (Correlator, on a fake clock), and that what the recorder sends is
accepted by the API server's events.k8s.io/v1 validation (the real client against the stand-in)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.model import (
    Action,
    ActionKind,
    AgentState,
    DesiredMode,
    EnforcementState,
    NetnsMode,
    NodeCondition,
    NodeSnapshot,
    Problem,
    ResourceAmount,
    SelectorMatch,
)
from agent.publish.events import MAX_NOTE, EventSpec, node_events
from agent.publish.kube.client import load_api_client
from agent.publish.kube.events import (
    FINISH_SECONDS,
    HEARTBEAT_SECONDS,
    SPAM_BURST,
    SPAM_REFILL_SECONDS,
    Correlator,
    EventRecorder,
    event_name,
    micro_time,
)
from agent.publish.stages import EventsStage
from tests.kube_standin import KubeStandIn

NODE = "gpu-node-1"
T0 = 1_795_000_000.0
SNAPSHOT = NodeSnapshot(taken_at=T0, netlink_available=True)
RESOURCE = "spidernet.io/hca_shared_devices"
READY = NodeCondition(type="RDMAReady", status="True", reason="RDMAReady", message="RDMA is usable")
NOT_READY = NodeCondition(type="RDMAReady", status="False", reason="PortDown", message="port_link_up: …")


def enforcement(**kwargs: Any) -> EnforcementState:
    base: dict[str, Any] = {
        "desired": DesiredMode.EXCLUSIVE,
        "live": NetnsMode.SHARED,
        "persisted": None,
        "compliant": False,
    }
    return EnforcementState(**{**base, **kwargs})


def agent_state(**kwargs: Any) -> AgentState:
    return AgentState(snapshot=SNAPSHOT, **kwargs)


def reasons(prev: AgentState | None, now: AgentState) -> list[str]:
    return [e.reason for e in node_events(prev, now)]


# --- which transitions --------------------------------------------------------------------------------

TRANSITIONS = [
    ("steady", agent_state(condition=READY), agent_state(condition=READY), []),
    ("readiness lost", agent_state(condition=READY), agent_state(condition=NOT_READY), ["RDMANotReady"]),
    ("readiness back", agent_state(condition=NOT_READY), agent_state(condition=READY), ["RDMAReady"]),
    (
        "mode switched",
        agent_state(enforcement=enforcement()),
        agent_state(enforcement=enforcement(live=NetnsMode.EXCLUSIVE, compliant=True)),
        ["NetnsModeSwitched"],
    ),
    (
        "reboot required",
        agent_state(enforcement=enforcement()),
        agent_state(enforcement=enforcement(reboot_required=True, reboot_reason="busy")),
        ["RebootRequired"],
    ),
    (
        "reboot no longer required",
        agent_state(enforcement=enforcement(reboot_required=True)),
        agent_state(enforcement=enforcement()),
        ["RebootNotRequired"],
    ),
    (
        "persisted mode ignored",
        agent_state(enforcement=enforcement()),
        agent_state(enforcement=enforcement(persisted=NetnsMode.EXCLUSIVE, persisted_ineffective=True)),
        ["PersistedNetnsModeIgnored"],
    ),
    (
        "allocatable to zero",
        agent_state(resources=(ResourceAmount(name=RESOURCE, capacity=8, allocatable=8),)),
        agent_state(resources=(ResourceAmount(name=RESOURCE, capacity=8, allocatable=0),)),
        ["AllocatableZero"],
    ),
    (
        "expected resource vanished",
        agent_state(resources=(ResourceAmount(name=RESOURCE, allocatable=8),)),
        agent_state(expected_resources=(RESOURCE,)),
        ["AllocatableZero"],
    ),
    (
        "unexpected resource vanished",
        agent_state(resources=(ResourceAmount(name=RESOURCE, allocatable=8),)),
        agent_state(),
        [],
    ),
    (
        "allocatable back",
        agent_state(resources=(ResourceAmount(name=RESOURCE, allocatable=0),)),
        agent_state(resources=(ResourceAmount(name=RESOURCE, allocatable=8),)),
        ["AllocatableRecovered"],
    ),
    (
        "selector stops matching",
        agent_state(selectors=(SelectorMatch(resource=RESOURCE, matched=2, summary="s"),)),
        agent_state(selectors=(SelectorMatch(resource=RESOURCE, matched=0, summary="s"),)),
        ["SelectorMatchesNothing"],
    ),
]


@pytest.mark.parametrize(("prev", "now", "expected"), [c[1:] for c in TRANSITIONS], ids=[c[0] for c in TRANSITIONS])
def test_one_event_per_transition(prev: AgentState, now: AgentState, expected: list[str]) -> None:
    assert reasons(prev, now) == expected


def test_the_first_cycle_sets_a_baseline() -> None:
    assert reasons(None, agent_state(condition=NOT_READY, enforcement=enforcement(reboot_required=True))) == []


def test_writing_the_file_is_recorded_when_it_happens_unless_it_failed() -> None:
    write = Action(kind=ActionKind.WRITE_PERSISTED, mode=NetnsMode.EXCLUSIVE, reason="persist exclusive")
    done = agent_state(enforcement=enforcement(applied=(write,)))
    assert reasons(None, done) == ["PersistedNetnsMode"]
    failed = replace(
        done, enforcement=enforcement(applied=(write,), problems=(Problem(code="persist_failed", message="x"),))
    )
    assert reasons(None, failed) == []


def test_notes_are_bounded() -> None:
    spec = EventSpec(type="Warning", reason="R", action="A", note="é" * 2000)
    assert len(spec.note.encode()) <= MAX_NOTE and spec.note.endswith("...")


# --- series and the spam filter ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


DOWN = EventSpec(type="Warning", reason="RDMANotReady", action="CheckReadiness", note="port down")
UP = EventSpec(type="Normal", reason="RDMAReady", action="CheckReadiness", note="port up")


def test_repeats_become_a_series() -> None:
    clock = Clock()
    correlator = Correlator(NODE, clock)
    first = correlator.observe(DOWN)
    assert first is not None and first.create is not None and first.create["reason"] == "RDMANotReady"
    clock.now += 60
    second = correlator.observe(DOWN)
    assert second is not None and second.patch == {"series": {"count": 2, "lastObservedTime": micro_time(clock.now)}}
    assert second.name == first.name
    clock.now += 60
    assert correlator.observe(DOWN) is None  # the third is only counted
    clock.now += FINISH_SECONDS + 1
    (final,) = correlator.tick()  # the series ended: its count is sent once
    assert final.patch is not None and final.patch["series"]["count"] == 3
    again = correlator.observe(DOWN)
    assert again is not None and again.create is not None and again.name != first.name  # a new event


def test_a_long_series_is_refreshed_every_30_minutes() -> None:
    clock = Clock()
    correlator = Correlator(NODE, clock)
    sent = [correlator.observe(DOWN)]
    for _ in range(int(2 * 3600 / 60)):  # every minute for 2 hours
        clock.now += 60
        sent.append(correlator.observe(DOWN))
        sent += correlator.tick()
    requests = [r for r in sent if r is not None]
    # The create, the count-2 patch at minute 1, then one refresh per 30 minutes after it (31, 61, 91).
    assert len(requests) == 2 + int((2 * 3600 - 60) // HEARTBEAT_SECONDS) == 5


def test_a_flood_of_distinct_events_is_cut_by_the_spam_filter() -> None:
    clock = Clock()
    correlator = Correlator(NODE, clock)
    specs = [EventSpec(type="Warning", reason=f"Reason{i}", action="A", note="n") for i in range(100)]
    created = [r for r in (correlator.observe(s) for s in specs) if r is not None]
    assert len(created) == SPAM_BURST and correlator.spam_dropped == 100 - SPAM_BURST
    clock.now += SPAM_REFILL_SECONDS
    assert correlator.observe(EventSpec(type="Warning", reason="Late", action="A", note="n")) is not None
    assert correlator.observe(EventSpec(type="Normal", reason="Other", action="A", note="n")) is not None  # per type


def test_a_port_flapping_for_a_day_costs_a_bounded_number_of_requests() -> None:
    clock = Clock()
    correlator = Correlator(NODE, clock)
    requests = 0
    for minute in range(24 * 60):  # the condition flips every minute for 24 hours
        clock.now = T0 + 60 * minute
        requests += correlator.observe(DOWN if minute % 2 else UP) is not None
        requests += len(correlator.tick())
    # Two series (down, up): each a create, a count-2 patch and a refresh every 30 minutes.
    assert requests <= 2 * (2 + 24 * 3600 / HEARTBEAT_SECONDS)
    assert requests >= 2 * 2


def test_event_names_are_dns_subdomains_of_bounded_length() -> None:
    assert event_name(NODE, T0) == f"{NODE}.{int(T0 * 1e9):x}"
    long_node = ".".join(["a" * 63] * 3) + "." + "b" * 49  # 241 characters: a valid node name
    assert len(event_name(long_node, T0)) <= 253 and event_name(long_node, T0).startswith("rdma-node-agent.")


# --- the recorder against the stand-in's events.k8s.io/v1 validation -----------------------------------


@pytest.fixture
def api() -> Iterator[KubeStandIn]:
    with KubeStandIn() as server:
        yield server


@pytest.fixture
def recorder(api: KubeStandIn, tmp_path: Path) -> Iterator[tuple[EventRecorder, Clock]]:
    api_client = load_api_client(api.write_kubeconfig(tmp_path / "kubeconfig"))
    clock = Clock()
    rec = EventRecorder(api_client, NODE, clock=clock, request_timeout=(2.0, 2.0))
    yield rec, clock
    rec.stop()
    api_client.close()


def test_what_the_recorder_sends_is_valid(api: KubeStandIn, recorder: tuple[EventRecorder, Clock]) -> None:
    rec, clock = recorder
    rec.record(DOWN)
    clock.now += 1.5
    rec.record(DOWN)
    assert rec.flush()
    (event,) = api.events("default")
    assert event["regarding"] == {"kind": "Node", "apiVersion": "v1", "name": NODE, "uid": NODE}
    wanted = ("Warning", "RDMANotReady", "CheckReadiness", "port down")
    assert (event["type"], event["reason"], event["action"], event["note"]) == wanted
    assert event["reportingController"] == "rdma-node-agent" and event["series"]["count"] == 2
    assert (rec.stats.created, rec.stats.patched, rec.stats.failed) == (1, 1, 0)
    assert api.count(status=201) == 1 and api.count("patch", resource="events", status=200) == 1


def test_a_refused_event_is_counted_not_raised(api: KubeStandIn, recorder: tuple[EventRecorder, Clock]) -> None:
    rec, _ = recorder
    api.fail_next("create", 403)
    rec.record(DOWN)
    assert rec.flush()
    assert (rec.stats.created, rec.stats.failed) == (0, 1) and api.events() == []


def test_recording_never_blocks_and_the_queue_is_bounded(api: KubeStandIn, tmp_path: Path) -> None:
    api_client = load_api_client(api.write_kubeconfig(tmp_path / "kubeconfig"))
    api.delay_next("create", 30.0)  # the sender hangs on the first request
    rec = EventRecorder(api_client, NODE, clock=Clock(), request_timeout=(2.0, 2.0), queue_size=3)
    try:
        for i in range(SPAM_BURST):
            rec.record(EventSpec(type="Warning", reason=f"R{i}", action="A", note="n"))
        # 1 taken by the sender, 3 queued: the rest dropped and counted, record() returned at once.
        assert rec.stats.queue_dropped >= SPAM_BURST - 4
    finally:
        api.stop()
        rec.stop()
        api_client.close()


def test_the_stage_records_transitions_only(api: KubeStandIn, recorder: tuple[EventRecorder, Clock]) -> None:
    rec, clock = recorder
    stage = EventsStage(rec)
    for condition in (READY, READY, NOT_READY, NOT_READY, NOT_READY, READY):
        clock.now += 30
        stage(agent_state(condition=condition))
    assert rec.flush()
    assert [e["reason"] for e in api.events()] == ["RDMANotReady", "RDMAReady"]
    assert rec.stats.by_reason == {"RDMANotReady": 1, "RDMAReady": 1}


@pytest.mark.parametrize(
    ("prev", "now", "expected"), [c[1:] for c in TRANSITIONS if c[3]], ids=[c[0] for c in TRANSITIONS if c[3]]
)
def test_each_transition_reaches_the_server_as_a_valid_event(
    api: KubeStandIn, recorder: tuple[EventRecorder, Clock], prev: AgentState, now: AgentState, expected: list[str]
) -> None:
    rec, _ = recorder
    stage = EventsStage(rec)
    stage(prev)
    stage(now)
    assert rec.flush()
    assert [e["reason"] for e in api.events("default")] == expected
    assert rec.stats.failed == 0
