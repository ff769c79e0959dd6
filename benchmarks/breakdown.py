"""Where a snapshot's time goes: each reader ``take_snapshot`` calls, timed on its own."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.config import HostRoots
from agent.discover import modprobe, procfs
from agent.discover.rdma_netlink import RdmaNetlink
from agent.discover.snapshot import SnapshotCache
from agent.discover.sysfs import SysfsReader
from benchmarks.report import fmt

PARTS = (
    "netlink",
    "sysfs RDMA devices",
    "sysfs PCI functions",
    "sysfs char devices",
    "procfs + modprobe.d",
    "netns scan",
)


def _netlink(factory: Callable[[], RdmaNetlink]) -> None:
    with factory() as sock:
        for device in sock.devices():
            if device.index is not None:
                sock.ports(device.index)
        sock.system()


def _procfs(roots: HostRoots) -> None:
    procfs.read_modules(roots)
    kernel = procfs.read_kernel(roots)
    modprobe.read_persisted_netns_mode(roots, procfs.parse_cmdline_netns_mode(kernel.cmdline or ""))


def snapshot_breakdown(
    roots: HostRoots, netlink: Callable[[], RdmaNetlink], repeats: int = 3, cache: SnapshotCache | None = None
) -> dict[str, float]:
    """Median seconds of each part (the parts of agent.discover.snapshot.take_snapshot, in its order);
    with ``cache`` (already warm), the sysfs readers use its kept facts as the agent's loop does.
    Without netlink's ports handed over, the sysfs reader reads port state itself: an upper bound."""
    kept = cache.sysfs if cache is not None else None
    actions: dict[str, Callable[[], object]] = {
        "netlink": lambda: _netlink(netlink),
        "sysfs RDMA devices": lambda: SysfsReader(roots, cache=kept).rdma_devices(),
        "sysfs PCI functions": lambda: SysfsReader(roots, cache=kept).pci_functions(),
        "sysfs char devices": lambda: SysfsReader(roots, cache=kept).char_devices(),
        "procfs + modprobe.d": lambda: _procfs(roots),
        "netns scan": lambda: procfs.count_network_namespaces(roots),
    }
    out: dict[str, float] = {}
    for name, action in actions.items():
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            action()
            samples.append(time.perf_counter() - started)
        out[name] = sorted(samples)[len(samples) // 2]
    return out


def describe(parts: dict[str, float]) -> str:
    """``netlink 20 % (4.1 ms), …`` — shares of the parts' sum."""
    total = sum(parts.values()) or 1.0
    return ", ".join(f"{name} {value / total:.0%} ({fmt(value * 1000, 'ms')})" for name, value in parts.items())
