"""Runs INSIDE the QEMU guest (as root, real kernel): the agent's whole snapshot against one
``rdma -j link show``, at growing numbers of Soft-RoCE devices, in one boot.

For each size it adds dummy netdevs and rxe devices on them (one ``ip -b`` and one ``rdma -b`` batch
file: iproute2 6.1's rdma reads ``-batch`` as ``-b atch``), checks the snapshot sees them all, then
times ``take_snapshot(HostRoots())`` in-process (imports done, warmed up) both as the agent's loop
runs it every cycle (with its warm :class:`SnapshotCache`) and cold (``cache=None``: the first cycle
and each refresh), and ``subprocess.run(["rdma", "-j", "link", "show"])``, alternately,
``--repeats`` times each, and prints one JSON document with every sample and the medians.
benchmarks/vm_snapshot.py boots the guest.

Usage: python -m benchmarks.guest_snapshot [--sizes 1,8,64] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

RDMA_LINK = ["rdma", "-j", "link", "show"]
MODULES = ["rdma_rxe", "ib_uverbs", "ib_umad", "rdma_ucm"]


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def batch(tool: str, lines: list[str]) -> None:
    if not lines:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        sh(tool, "-b", f.name)


def add_devices(start: int, stop: int) -> None:
    """rxe<i> on dummy netdev d<i> for i in [start, stop)."""
    batch("ip", [cmd for i in range(start, stop) for cmd in (f"link add d{i} type dummy", f"link set d{i} up")])
    batch("rdma", [f"link add rxe{i} type rxe netdev d{i}" for i in range(start, stop)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1,8,64", help="comma-separated device counts, increasing")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(set(sizes)) or sizes[0] < 1:
        parser.error(f"--sizes must be increasing positive counts, got {args.sizes}")

    sh("modprobe", "-a", *MODULES)
    from agent.config import HostRoots
    from agent.discover.rdma_netlink import RdmaNetlink, forget_parsed_messages
    from agent.discover.snapshot import SnapshotCache, take_snapshot
    from agent.discover.sysfs import SysfsCache
    from benchmarks.breakdown import snapshot_breakdown

    roots = HostRoots()
    created = 0
    points: list[dict[str, Any]] = []
    for size in sizes:
        add_devices(created, size)
        created = size
        snapshot = take_snapshot(roots)  # warm-up
        steady = SnapshotCache(SysfsCache(refresh_every=1 << 62))  # the loop's cache between refreshes
        for _ in range(3):  # facts are kept from an identity's second sighting
            warm = take_snapshot(roots, cache=steady)
        listed = json.loads(subprocess.run(RDMA_LINK, check=True, capture_output=True, text=True).stdout)
        ours: list[float] = []
        cold: list[float] = []
        theirs: list[float] = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            take_snapshot(roots, cache=steady)
            ours.append(time.perf_counter() - started)
            forget_parsed_messages()  # as the process's first cycle
            started = time.perf_counter()
            take_snapshot(roots)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(RDMA_LINK, check=True, capture_output=True)
            theirs.append(time.perf_counter() - started)
        points.append(
            {
                "size": size,
                "devices_seen": len(snapshot.devices),
                "links_listed": len(listed),
                "netlink_available": snapshot.netlink_available,
                "warm_equals_cold": replace(warm, taken_at=0.0) == replace(snapshot, taken_at=0.0),
                "ours_s": ours,
                "cold_s": cold,
                "rdma_s": theirs,
                "ours_median_s": statistics.median(ours),
                "cold_median_s": statistics.median(cold),
                "rdma_median_s": statistics.median(theirs),
                "breakdown_s": snapshot_breakdown(roots, RdmaNetlink, cache=steady),
            }
        )
    json.dump(
        {
            "kernel": platform.release(),
            "iproute2": sh("rdma", "-V").strip(),
            "python": platform.python_version(),
            "points": points,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
