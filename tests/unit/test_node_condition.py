"""The RDMAReady Node condition: what it says (agent/publish/condition.py), when it is written
(plan_condition: on change or heartbeat, never otherwise), and how (ConditionPublisher: one strategic
merge patch of nodes/status through the real client, the kubelet's conditions untouched), and that
the stage holds a change back like the ``ready`` label so a flapping port writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from agent.errors import StageError
from agent.model import (
    AgentState,
    CharDevice,
    DesiredMode,
    EnforcementState,
    NetnsMode,
    NodeSnapshot,
    Problem,
    RdmaDevice,
)
from agent.publish.condition import camel, condition_patch, desired_condition, plan_condition, rfc3339
from agent.publish.kube.node_status import ConditionPublisher
from agent.publish.kube.watch import NodeWatcher
from agent.publish.stages import ConditionStage
from tests.builders import KUBELET_CONDITIONS as KUBELET
from tests.builders import rdma_port
from tests.kube_standin import STRATEGIC_MERGE_PATCH, KubeStandIn

NODE = "gpu-node-1"
WAIT = 10.0
T0 = 1_795_000_000.0
HOUR = 3600.0


def snapshot(*, port_up: bool = True, second_port_up: bool = True) -> NodeSnapshot:
    ports = (rdma_port("ens1f0np0", up=port_up), replace(rdma_port("ens1f1np1", up=second_port_up), port=2))
    device = RdmaDevice(name="mlx5_0", ports=ports, char_devices=("uverbs0",))
    chars = (
        CharDevice(name="uverbs0", kind="uverbs", path="/dev/infiniband/uverbs0", present=True, rdma_device="mlx5_0"),
        CharDevice(name="rdma_cm", kind="rdma_cm", path="/dev/infiniband/rdma_cm", present=True),
    )
    return NodeSnapshot(
        taken_at=T0, netlink_available=True, devices=(device,), char_devices=chars, netns_mode=NetnsMode.SHARED
    )


def state(**kwargs: Any) -> AgentState:
    return AgentState(snapshot=snapshot(**kwargs))


# --- what it says ------------------------------------------------------------------------------------


def test_ready_says_true_with_stable_facts() -> None:
    condition = desired_condition(snapshot(), None, ())
    assert (condition.type, condition.status, condition.reason) == ("RDMAReady", "True", "RDMAReady")
    assert condition.message == "RDMA is usable: 1 RDMA device, netns mode shared"
    # A second port going down leaves the node ready and the condition word for word the same.
    assert desired_condition(snapshot(second_port_up=False), None, ()) == condition


def test_not_ready_names_the_cause_and_every_failing_rule() -> None:
    problems = (Problem(code="port_down", message="mlx5_0/1 is down"),)
    condition = desired_condition(snapshot(port_up=False, second_port_up=False), None, problems)
    assert (condition.status, condition.reason) == ("False", "PortDown")
    assert condition.message == (
        "port_link_up: no RDMA port is ACTIVE with physical state LINK_UP; "
        "uverbs_present: no device with a port up has its /dev/infiniband/uverbsN node"
    )


def test_reboot_required_reason() -> None:
    enforcement = EnforcementState(
        desired=DesiredMode.EXCLUSIVE,
        live=NetnsMode.SHARED,
        persisted=NetnsMode.EXCLUSIVE,
        compliant=False,
        reboot_required=True,
        problems=(Problem(code="netns_mode_busy", message="busy"),),
    )
    condition = desired_condition(snapshot(), enforcement, enforcement.problems)
    assert (condition.status, condition.reason) == ("False", "NetnsModeBusy")
    assert "netns_mode_compliant" in condition.message and "no_reboot_required" in condition.message


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("port_down", "PortDown"),
        ("no_rdma_netlink", "NoRdmaNetlink"),
        ("netns_mode_not_compliant", "NetnsModeNotCompliant"),
    ],
)
def test_reasons_are_camel_case_codes(code: str, reason: str) -> None:
    assert camel(code) == reason


# --- when it is written --------------------------------------------------------------------------------

READY = desired_condition(snapshot(), None, ())
DOWN = desired_condition(snapshot(port_up=False, second_port_up=False), None, ())


def test_plan_writes_the_whole_condition_first() -> None:
    wanted = plan_condition(None, READY, T0, HOUR)
    assert wanted == {
        "type": "RDMAReady",
        "status": "True",
        "reason": "RDMAReady",
        "message": READY.message,
        "lastHeartbeatTime": rfc3339(T0),
        "lastTransitionTime": rfc3339(T0),
    }


def test_plan_is_quiet_until_the_heartbeat() -> None:
    written = plan_condition(None, READY, T0, HOUR)
    assert written is not None
    assert plan_condition(written, READY, T0 + HOUR - 1, HOUR) is None
    beat = plan_condition(written, READY, T0 + HOUR, HOUR)
    assert beat == {**written, "lastHeartbeatTime": rfc3339(T0 + HOUR)}  # transition time kept


def test_plan_moves_the_transition_only_when_status_changes() -> None:
    written = plan_condition(None, READY, T0, HOUR)
    assert written is not None
    down = plan_condition(written, DOWN, T0 + 60, HOUR)
    assert down is not None and down["lastTransitionTime"] == rfc3339(T0 + 60)
    other = replace(DOWN, reason="NetnsModeBusy")
    again = plan_condition(down, other, T0 + 120, HOUR)
    assert again is not None and again["reason"] == "NetnsModeBusy"
    assert again["lastTransitionTime"] == rfc3339(T0 + 60)  # still False: same transition


def test_the_patch_is_strategic_and_carries_every_field() -> None:
    wanted = plan_condition(None, DOWN, T0, HOUR)
    assert wanted is not None
    assert condition_patch(wanted) == {"status": {"conditions": [wanted]}}
    assert set(wanted) == {"type", "status", "reason", "message", "lastHeartbeatTime", "lastTransitionTime"}


# --- how it is written: the real client against the stand-in -------------------------------------------


@pytest.fixture
def api() -> Iterator[KubeStandIn]:
    with KubeStandIn() as server:
        server.put_node(NODE, conditions=[dict(c) for c in KUBELET])
        yield server


@pytest.fixture
def watcher(api_client: Any) -> Iterator[NodeWatcher]:
    w = NodeWatcher(api_client, NODE, request_timeout=(2.0, 2.0)).start()
    assert w.wait_synced(WAIT)
    yield w
    w.stop()


@pytest.fixture
def publisher(api_client: Any, watcher: NodeWatcher) -> ConditionPublisher:
    return ConditionPublisher(api_client, watcher, heartbeat=HOUR, request_timeout=(2.0, 2.0))


def caught_up(api: KubeStandIn, watcher: NodeWatcher) -> None:
    want = api.node(NODE)["metadata"]["resourceVersion"]
    assert watcher.wait_until(lambda w: (o := w.observed()) is not None and o.resource_version == want, WAIT)


def test_kubelet_conditions_survive(api: KubeStandIn, publisher: ConditionPublisher) -> None:
    result = publisher.sync(READY, T0)
    assert result.ok and result.written is not None
    conditions = api.conditions(NODE)
    assert [conditions[c["type"]] for c in KUBELET] == KUBELET  # the kubelet's, byte for byte
    assert conditions["RDMAReady"] == result.written
    (patch,) = api.patches("nodes/status")
    assert patch.content_type == STRATEGIC_MERGE_PATCH and patch.body == condition_patch(result.written)


def test_one_patch_per_change_and_none_in_between(
    api: KubeStandIn, watcher: NodeWatcher, publisher: ConditionPublisher
) -> None:
    now = T0
    for condition, patches in ((READY, 1), (READY, 1), (DOWN, 2), (DOWN, 2), (READY, 3)):
        now += 30
        assert publisher.sync(condition, now).ok
        assert api.count("patch", resource="nodes/status") == patches
        # (no wait for the watch here: the publisher remembers its own write until the watch has it)
    caught_up(api, watcher)
    assert api.conditions(NODE)["RDMAReady"]["status"] == "True"
    assert api.conditions(NODE)["RDMAReady"]["lastTransitionTime"] == rfc3339(now)


def test_a_heartbeat_is_one_patch_an_hour(
    api: KubeStandIn, watcher: NodeWatcher, publisher: ConditionPublisher
) -> None:
    assert publisher.sync(READY, T0).ok
    caught_up(api, watcher)
    for minute in range(1, 121):  # two hours, a cycle a minute
        assert publisher.sync(READY, T0 + 60 * minute).ok
        caught_up(api, watcher)
    assert api.count("patch", resource="nodes/status") == 3  # the first write, then at 1 h and 2 h
    assert api.conditions(NODE)["RDMAReady"]["lastTransitionTime"] == rfc3339(T0)


def test_someone_else_changing_it_is_repaired(
    api: KubeStandIn, watcher: NodeWatcher, publisher: ConditionPublisher
) -> None:
    assert publisher.sync(READY, T0).ok
    api.update_node(NODE, lambda n: n["status"]["conditions"][-1].update(status="False", reason="Tampered"))
    caught_up(api, watcher)
    assert publisher.sync(READY, T0 + 30).ok
    assert api.conditions(NODE)["RDMAReady"]["reason"] == "RDMAReady"
    assert api.count("patch", resource="nodes/status") == 2


def test_a_failed_patch_is_reported_then_retried(api: KubeStandIn, publisher: ConditionPublisher) -> None:
    api.fail_next("patch", 500, resource="nodes/status")
    failed = publisher.sync(READY, T0)
    assert not failed.ok and failed.error is not None and failed.error.status == 500
    assert "RDMAReady" not in api.conditions(NODE)
    assert publisher.sync(READY, T0 + 30).ok
    assert api.conditions(NODE)["RDMAReady"]["status"] == "True"


def test_only_its_own_condition_type(publisher: ConditionPublisher) -> None:
    with pytest.raises(ValueError, match="only the condition type RDMAReady"):
        publisher.sync(replace(READY, type="Ready"), T0)


# --- the stage: hysteresis shared with the ready label, zero requests in steady state ------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_zero_requests_over_100_steady_cycles(
    api: KubeStandIn, watcher: NodeWatcher, publisher: ConditionPublisher
) -> None:
    clock = Clock()
    stage = ConditionStage(60.0, publisher, timer=clock, clock=lambda: T0 + clock.now)
    stage(state())
    caught_up(api, watcher)
    before = api.counts()
    for _ in range(100):  # 100 cycles of 30 s: 50 minutes, under the 1 h heartbeat
        clock.now += 30
        assert stage(state()).condition == READY
    assert api.counts() == before


def test_a_flapping_port_writes_nothing(api: KubeStandIn, watcher: NodeWatcher, publisher: ConditionPublisher) -> None:
    clock = Clock()
    stage = ConditionStage(60.0, publisher, timer=clock, clock=lambda: T0 + clock.now)
    stage(state())
    for cycle in range(100):  # 50 min; the only port down every other 30 s cycle, never for 60 s
        clock.now += 30
        published = stage(state(port_up=cycle % 2 == 1, second_port_up=False)).condition
        assert published == READY
    assert api.count("patch", resource="nodes/status") == 1
    clock.now += 30
    stage(state(port_up=False, second_port_up=False))
    clock.now += 60  # down for the whole hold: now it is published, once
    assert stage(state(port_up=False, second_port_up=False)).condition == DOWN
    assert api.count("patch", resource="nodes/status") == 2


def test_a_failed_publish_fails_the_stage_with_the_condition(publisher: ConditionPublisher, api: KubeStandIn) -> None:
    api.fail_next("patch", 403, resource="nodes/status")
    with pytest.raises(StageError, match="node condition not published") as info:
        ConditionStage(60.0, publisher)(state())
    failed = info.value.state
    assert isinstance(failed, AgentState) and failed.condition == READY  # status shows what it would be


def test_without_a_publisher_the_condition_is_only_computed() -> None:
    assert ConditionStage(60.0)(state(port_up=False, second_port_up=False)).condition == DOWN
