"""Whole NodeSnapshots from fixtures recorded in ONE boot of a real kernel (tools/regenerate_fixtures.py):
the sysfs tree of tests/fixtures/sysfs/<scenario> and the netlink replies of tests/fixtures/netlink/
<kernel>, read through the agent's own take_snapshot. Used for golden outputs (metrics, status)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from agent.discover.rdma_netlink import RdmaNetlink
from agent.discover.snapshot import take_snapshot
from agent.model import NodeSnapshot
from tests.netlink_fixtures import rxe_replay
from tests.sysfs_fixtures import SYSFS_DIR, load_tree

SCENARIOS = ("rxe-dummy-veth",)
TAKEN_AT = 1_795_000_000.0


def kernel_of(scenario: str) -> str:
    """The kernel a tree was captured on (first ``kernel`` line of its CAPTURE.txt)."""
    for line in (SYSFS_DIR / scenario / "CAPTURE.txt").read_text().splitlines():
        if line.startswith("kernel "):
            return line.split(None, 1)[1]
    raise LookupError(f"{scenario}: CAPTURE.txt names no kernel")


def fixture_snapshot(scenario: str) -> NodeSnapshot:
    if scenario not in SCENARIOS:
        raise LookupError(f"no recorded netlink for {scenario}; known: {', '.join(SCENARIOS)}")
    replay = rxe_replay(kernel_of(scenario))
    with tempfile.TemporaryDirectory(prefix="rna-snapshot-") as tmp:
        roots = load_tree(scenario, Path(tmp))
        return take_snapshot(roots, netlink=lambda: RdmaNetlink(exchange=replay), clock=lambda: TAKEN_AT)
