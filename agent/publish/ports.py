"""Which RDMA ports are meant to be up: the one rule behind ``rdma_port_expected_up`` and the
``RdmaPortLinkDown`` alert, so that the uncabled second port of a dual-port NIC is not a warning
forever while a real link loss still is.

A port is meant to be up unless ``link-down-ignore`` names it (a glob on ``device/port`` or on its
netdev, e.g. ``mlx5_1/1`` or ``ens1f1*``), and then when

* it is up now; or
* its netdev is administratively up (``IFF_UP``: someone configured it, so a link is expected); or
* it has no netdev the agent can see (InfiniBand without IPoIB, a netdev moved into a pod) and it
  has been up since the agent started.

A netdev set down on purpose, and a port never up without a netdev, are not meant to be up.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import replace

from agent.model import AgentState, NodeSnapshot, RdmaDevice, RdmaPort


def port_key(device: RdmaDevice, port: RdmaPort) -> str:
    return f"{device.name}/{port.port}"


def ignored(patterns: Sequence[str], device: RdmaDevice, port: RdmaPort) -> bool:
    names = [port_key(device, port), *([port.netdev] if port.netdev else [])]
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


def up_now(snapshot: NodeSnapshot) -> frozenset[str]:
    return frozenset(port_key(d, p) for d in snapshot.devices for p in d.ports if p.link_up)


def expected_up(snapshot: NodeSnapshot, seen_up: Iterable[str], patterns: Sequence[str] = ()) -> frozenset[str]:
    """The ports meant to be up (see the module docstring), as ``device/port``."""
    seen = set(seen_up)
    out: set[str] = set()
    for device in snapshot.devices:
        for port in device.ports:
            key = port_key(device, port)
            if ignored(patterns, device, port):
                continue
            if port.link_up or port.netdev_admin_up or (port.netdev_admin_up is None and key in seen):
                out.add(key)
    return frozenset(out)


class PortsStage:
    """Remembers the ports seen up since the start and publishes the ports meant to be up."""

    name = "ports"

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        self.patterns = tuple(patterns)
        self.seen_up: frozenset[str] = frozenset()

    def __call__(self, state: AgentState) -> AgentState:
        if state.snapshot is None:
            return state
        self.seen_up |= up_now(state.snapshot)
        return replace(state, ports_expected_up=expected_up(state.snapshot, self.seen_up, self.patterns))
