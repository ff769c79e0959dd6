"""Which ports are meant to be up (agent/publish/ports.py): the rule behind rdma_port_expected_up and
RdmaPortLinkDown — an uncabled spare port is not, a configured netdev's port is, a netdev-less port
is once it has been up, and link-down-ignore overrides all."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.model import AgentState, NodeSnapshot, RdmaDevice, RdmaPort
from agent.publish.ports import PortsStage, expected_up
from tests.builders import rdma_port


def _node(*ports: RdmaPort) -> NodeSnapshot:
    device = RdmaDevice(name="mlx5_0", ports=tuple(replace(p, port=n) for n, p in enumerate(ports, 1)))
    return NodeSnapshot(taken_at=0.0, netlink_available=True, devices=(device,))


UP = rdma_port("ens1f0np0")
UNCABLED = replace(rdma_port("ens1f1np1", up=False), netdev_admin_up=False)  # the spare port: netdev down
CONFIGURED_BUT_DOWN = replace(rdma_port("ens1f1np1", up=False), netdev_admin_up=True)  # a real link loss
IB_DOWN = replace(rdma_port(None, up=False, link_layer="InfiniBand"), netdev_admin_up=None)


@pytest.mark.parametrize(
    ("second", "seen", "patterns", "expected"),
    [
        (UNCABLED, (), (), {"mlx5_0/1"}),
        (CONFIGURED_BUT_DOWN, (), (), {"mlx5_0/1", "mlx5_0/2"}),
        (CONFIGURED_BUT_DOWN, (), ("mlx5_0/2",), {"mlx5_0/1"}),  # ignored by device/port
        (CONFIGURED_BUT_DOWN, (), ("ens1f1*",), {"mlx5_0/1"}),  # ignored by netdev
        (IB_DOWN, (), (), {"mlx5_0/1"}),  # no netdev, never up: not meant to be
        (IB_DOWN, ("mlx5_0/2",), (), {"mlx5_0/1", "mlx5_0/2"}),  # no netdev, was up: a loss
        (UP, (), ("mlx5_0/*",), set()),
    ],
)
def test_expected_up(second: RdmaPort, seen: tuple[str, ...], patterns: tuple[str, ...], expected: set[str]) -> None:
    assert expected_up(_node(UP, second), seen, patterns) == expected


def test_the_stage_remembers_ports_seen_up() -> None:
    stage = PortsStage()
    up, down = _node(UP, replace(IB_DOWN, state="ACTIVE", physical_state="LINK_UP")), _node(UP, IB_DOWN)
    assert stage(AgentState(snapshot=down)).ports_expected_up == {"mlx5_0/1"}
    assert stage(AgentState(snapshot=up)).ports_expected_up == {"mlx5_0/1", "mlx5_0/2"}
    assert stage(AgentState(snapshot=down)).ports_expected_up == {"mlx5_0/1", "mlx5_0/2"}  # lost: alert
