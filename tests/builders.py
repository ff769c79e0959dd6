"""Hand-built model values shared by unit tests (realistic ConnectX figures)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from agent.model import AgentState, RdmaPort
from agent.publish.metrics import RdmaCollector


def render_metrics(state: AgentState, version: str, *, python_version: str | None = None) -> bytes:
    """``/metrics`` text (format 0.0.4) for one state, through a fresh registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RdmaCollector(lambda: state, version=version, python_version=python_version))
    return generate_latest(registry)


def rdma_port(
    netdev: str | None,
    *,
    up: bool = True,
    netdev_index: int | None = None,
    link_layer: str = "Ethernet",
    rate: str = "100 Gb/sec (4X EDR)",
) -> RdmaPort:
    """Port 1: ACTIVE/LINK_UP when ``up``, else DOWN/DISABLED, with the state codes the kernel gives."""
    return RdmaPort(
        port=1,
        state="ACTIVE" if up else "DOWN",
        state_code=4 if up else 1,
        physical_state="LINK_UP" if up else "DISABLED",
        physical_state_code=5 if up else 3,
        netdev=netdev,
        netdev_index=netdev_index,
        link_layer=link_layer,
        rate=rate,
    )


# The kubelet's own Node conditions, as it posts them: what the agent's patches must leave alone.
KUBELET_CONDITIONS = [
    {
        "type": "MemoryPressure",
        "status": "False",
        "reason": "KubeletHasSufficientMemory",
        "message": "kubelet has sufficient memory available",
        "lastHeartbeatTime": "2026-11-01T00:00:00Z",
        "lastTransitionTime": "2026-10-01T00:00:00Z",
    },
    {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": "2026-11-01T00:00:00Z",
        "lastTransitionTime": "2026-10-01T00:00:00Z",
    },
]
