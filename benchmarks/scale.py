"""Benchmark 2: the whole snapshot without a kernel, 1 … 2,048 functions.

For each size a node is generated on tmpfs (/dev/shm when there is one, like sysfs an in-memory
filesystem) and ``take_snapshot`` runs against it with synthesized netlink replies, three ways:

- **steady state** (the rows with a target): with the loop's :class:`SnapshotCache` warm, as every
  cycle but the first and each refresh runs — what the agent pays per interval;
- **cold**: ``cache=None`` and no netlink message parsed before (``forget_parsed_messages``),
  everything read and parsed, as the first cycle does (a refresh costs a little less: the netlink
  messages it parses are kept for the process's life);
- **average over a refresh period**: the mean of ``refresh_every`` consecutive cycles of a cache
  built as the loop builds it (30 s interval: 20 cycles, one of them a refresh).

The baseline is the least any reader without memory must do: list the same directories and read the
same files and links in a bare loop, no parsing. All are medians of repeated runs, interleaved, after
a warm-up.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agent.config import HostRoots
from agent.discover.rdma_netlink import forget_parsed_messages
from agent.discover.snapshot import SnapshotCache, take_snapshot
from agent.discover.sysfs import SysfsCache
from agent.model import NodeSnapshot
from benchmarks import stats
from benchmarks.breakdown import describe, snapshot_breakdown
from benchmarks.report import Results, Row
from benchmarks.synth import SynthExchange, build_node, read_all

NAME = "Snapshot, no kernel (vs bare read loop)"
TARGET_MS = 50.0
TARGET_AT = 2048
INTERVAL_SECONDS = 30.0  # the default interval: how the loop sizes its refresh period
NEVER = 1 << 62  # a refresh period no run reaches: the steady state alone


def functions(n: int) -> str:
    return f"{n:,} function" + ("" if n == 1 else "s")


def scratch_dir() -> str | None:
    """tmpfs for generated trees when the machine has one (sysfs is in memory too)."""
    shm = Path("/dev/shm")  # noqa: S108 - only ever the parent of a private TemporaryDirectory
    return str(shm) if shm.is_dir() else None


@dataclass(frozen=True, slots=True)
class Point:
    n: int
    ours: list[float]  # seconds per take_snapshot, steady state (warm cache)
    cold: list[float]  # seconds per take_snapshot without a cache
    period: list[float]  # seconds per take_snapshot over one refresh period of the loop's cache
    baseline: list[float]  # seconds per read loop
    breakdown: dict[str, float]  # seconds per part of the snapshot
    devices: int  # RDMA devices in the snapshot (sanity: == n)
    pci_functions: int
    problems: int


def measure(n: int, *, min_repeats: int, max_repeats: int, min_seconds: float) -> Point:
    with tempfile.TemporaryDirectory(prefix="rna-bench-", dir=scratch_dir()) as tmp:
        node = build_node(Path(tmp), n)
        exchange = SynthExchange(node.functions)
        roots = node.roots
        cold_snapshot = take_snapshot(roots, netlink=exchange.factory)  # warm-up (and a sanity check)
        steady = SnapshotCache(SysfsCache(refresh_every=NEVER))
        for _ in range(3):  # facts are kept from an identity's second sighting
            snapshot = take_snapshot(roots, netlink=exchange.factory, cache=steady)
        if _comparable(snapshot) != _comparable(cold_snapshot):
            raise AssertionError(f"scale {n}: the warm snapshot differs from the cold one")
        read_all(node)
        ours: list[float] = []
        cold: list[float] = []
        baseline: list[float] = []

        def once(action: Callable[[], object]) -> list[float]:
            return stats.repeat(action, min_repeats=1, max_repeats=1, min_seconds=0.0)

        while len(ours) < max_repeats and (
            len(ours) < min_repeats or sum(ours) + sum(cold) + sum(baseline) < min_seconds
        ):
            ours += once(lambda: take_snapshot(roots, netlink=exchange.factory, cache=steady))
            cold += once(lambda: first_cycle(roots, exchange))
            baseline += once(lambda: read_all(node))
        loop_cache = SnapshotCache.for_interval(INTERVAL_SECONDS)
        for _ in range(loop_cache.sysfs.refresh_every):  # one period to settle, then one measured
            take_snapshot(roots, netlink=exchange.factory, cache=loop_cache)
        period = stats.repeat(
            lambda: take_snapshot(roots, netlink=exchange.factory, cache=loop_cache),
            min_repeats=loop_cache.sysfs.refresh_every,
            max_repeats=loop_cache.sysfs.refresh_every,
            min_seconds=0.0,
        )
        parts = snapshot_breakdown(roots, exchange.factory, repeats=min(3, max_repeats), cache=steady)
    return Point(
        n=n,
        ours=ours,
        cold=cold,
        period=period,
        baseline=baseline,
        breakdown=parts,
        devices=len(snapshot.devices),
        pci_functions=len(snapshot.pci_functions),
        problems=len(snapshot.problems),
    )


def first_cycle(roots: HostRoots, exchange: SynthExchange) -> NodeSnapshot:
    """A snapshot as the process's first: no sysfs cache, no netlink message parsed before."""
    forget_parsed_messages()
    return take_snapshot(roots, netlink=exchange.factory)


def _comparable(snapshot: NodeSnapshot) -> NodeSnapshot:
    return replace(snapshot, taken_at=0.0)


def mean(samples: Sequence[float]) -> float:
    return sum(samples) / len(samples)


def run(sizes: Sequence[int], *, min_repeats: int, max_repeats: int, min_seconds: float, results: Results) -> None:
    points = [measure(n, min_repeats=min_repeats, max_repeats=max_repeats, min_seconds=min_seconds) for n in sizes]
    for p in points:
        ours_ms, base_ms = stats.median(p.ours) * 1000, stats.median(p.baseline) * 1000
        at_target = p.n == TARGET_AT
        results.rows.append(
            Row(
                benchmark=NAME,
                size=f"{functions(p.n)}, steady state",
                unit="ms",
                ours=ours_ms,
                baseline=base_ms,
                target=f"≤ {TARGET_MS:.0f} ms" if at_target else "—",
                met=(ours_ms <= TARGET_MS) if at_target else None,
            )
        )
        results.curve.append(
            {
                "n": p.n,
                "ms": ours_ms,
                "cold_ms": stats.median(p.cold) * 1000,
                "period_ms": mean(p.period) * 1000,
                "baseline_ms": base_ms,
                "repeats": len(p.ours),
            }
        )
        if at_target:
            cold_ms, period_ms = stats.median(p.cold) * 1000, mean(p.period) * 1000
            results.rows.append(
                Row(
                    benchmark=NAME,
                    size=f"{functions(p.n)}, cold (first cycle, each refresh)",
                    unit="ms",
                    ours=cold_ms,
                    baseline=base_ms,
                    target=f"≤ {TARGET_MS:.0f} ms",
                    met=cold_ms <= TARGET_MS,
                )
            )
            results.rows.append(
                Row(
                    benchmark=NAME,
                    size=f"{functions(p.n)}, mean over a {len(p.period)}-cycle refresh period",
                    unit="ms",
                    ours=period_ms,
                    baseline=base_ms,
                    target=f"≤ {TARGET_MS:.0f} ms",
                    met=period_ms <= TARGET_MS,
                )
            )
        if p.devices != p.n or p.pci_functions != p.n or p.problems:
            results.notes.append(
                f"scale {p.n}: the snapshot held {p.devices} devices, {p.pci_functions} PCI "
                f"functions and {p.problems} problems (expected {p.n}, {p.n}, 0)"
            )
    by_n = {p.n: p for p in points}
    xs = [float(p.n) for p in points]
    if len(set(xs)) >= 2:
        fit = stats.linear_fit(xs, [stats.median(p.ours) * 1000 for p in points])
        base_fit = stats.linear_fit(xs, [stats.median(p.baseline) * 1000 for p in points])
        results.rows.append(
            Row(
                benchmark=NAME,
                size=f"per function: slope over {len(xs)} sizes, R² {fit.r_squared:.4f}",
                unit="µs",
                ours=fit.slope * 1000,
                baseline=base_fit.slope * 1000,
                target=f"≤ {TARGET_MS / TARGET_AT * 1000:.1f} µs",
                met=fit.slope <= TARGET_MS / TARGET_AT,
            )
        )
        results.notes.append(
            f"Scale fit: take_snapshot ≈ {fit.intercept:.2f} ms + {fit.slope * 1000:.0f} µs × functions "
            f"(R² {fit.r_squared:.4f}); bare read loop ≈ {base_fit.intercept:.2f} ms + "
            f"{base_fit.slope * 1000:.0f} µs × functions (R² {base_fit.r_squared:.4f})."
        )
        results.details["scale_fit"] = {
            "slope_ms": fit.slope,
            "intercept_ms": fit.intercept,
            "r2": fit.r_squared,
            "baseline_slope_ms": base_fit.slope,
            "baseline_r2": base_fit.r_squared,
        }
    top = max(by_n)
    half = top // 2
    if half in by_n and half > 0:
        growth = stats.median(by_n[top].ours) / stats.median(by_n[half].ours)
        base_growth = stats.median(by_n[top].baseline) / stats.median(by_n[half].baseline)
        results.rows.append(
            Row(
                benchmark=NAME,
                size=f"t({top:,}) / t({half:,})",
                unit="×",
                ours=growth,
                baseline=base_growth,
                target="≤ 2.2 (linear)",
                met=growth <= 2.2,
            )
        )
    for p in (points[0], points[-1]) if len(points) > 1 else points:
        results.notes.append(f"No kernel, {functions(p.n)}, where the snapshot's time goes: {describe(p.breakdown)}.")
    results.details["scale"] = [
        {"n": p.n, "ours_s": p.ours, "baseline_s": p.baseline, "breakdown_s": p.breakdown} for p in points
    ]
