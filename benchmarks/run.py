"""Run every benchmark, print one table, save it as markdown and JSON.

    python -m benchmarks.run [--quick] [--no-vm] [--only NAME,...] [--out benchmarks/results/latest.md]

Each figure is set beside a baseline measured in the same run (see docs/benchmarks.md):

1. ``vm``        the whole snapshot vs one ``rdma -j link show``, real kernel under QEMU, 1/8/64 rxe;
2. ``scale``     the snapshot without a kernel (synthesized netlink, generated sysfs), 1 … 2,048
                 functions, vs a bare loop reading the same files;
3. ``resources`` RSS and CPU of the agent process vs Debian's prometheus-node-exporter;
4. ``scrape``    ``/metrics`` latency at 2,000 devices under 50 scrapers vs ``/healthz``;
5. ``kube``      Kubernetes API requests per hour in steady state vs a naive poller;
6. ``hostile``   the HTTP listener under hostile clients: distinct Accept headers, a flood of idle
                 connections, /healthz during it — each vs the same process before.

``--quick`` makes everything small (seconds; the smoke test uses it). ``--no-vm`` skips (1); the
table says why. Exit status 0 whether or not targets are met (the table is the result), 1 when a
benchmark could not run (its error is in the notes).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import hostile, kube_requests, resources, scale, scrape, vm_snapshot
from benchmarks.report import LoadMonitor, Results, Row, machine, markdown_table, save, skipped

DEFAULT_OUT = Path("benchmarks/results/latest.md")
BENCHMARKS = ("vm", "scale", "resources", "scrape", "kube", "hostile")


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """Sizes and counts of one run."""

    vm_sizes: tuple[int, ...]
    vm_repeats: int
    scale_sizes: tuple[int, ...]
    scale_min_repeats: int
    scale_max_repeats: int
    scale_min_seconds: float
    nics: int
    reconciles: int
    reconcile_chunk: int
    traced: int
    scrapes: int
    exporter_scrapes: int
    scrape_devices: int
    scrapers: int
    per_scraper: int
    solo_scrapes: int
    kube_cycles: int
    watch_timeout: int
    hostile_devices: int
    accepts: int
    idle: int
    probes: int

    @classmethod
    def full(cls) -> Plan:
        return cls(
            vm_sizes=(1, 8, 64),
            vm_repeats=15,
            scale_sizes=(1, 8, 64, 256, 1024, 2048),
            scale_min_repeats=5,
            scale_max_repeats=50,
            scale_min_seconds=2.0,
            nics=8,
            reconciles=10_000,
            reconcile_chunk=1_000,
            traced=2_000,
            scrapes=100,
            exporter_scrapes=100,
            scrape_devices=2_000,
            scrapers=50,
            per_scraper=4,
            solo_scrapes=10,
            kube_cycles=100,
            watch_timeout=1,
            hostile_devices=2_000,
            accepts=1_000,
            idle=3_000,
            probes=200,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            vm_sizes=(1, 8),
            vm_repeats=3,
            scale_sizes=(1, 8, 16),
            scale_min_repeats=1,
            scale_max_repeats=2,
            scale_min_seconds=0.0,
            nics=2,
            reconciles=20,
            reconcile_chunk=10,
            traced=5,
            scrapes=3,
            exporter_scrapes=3,
            scrape_devices=20,
            scrapers=5,
            per_scraper=2,
            solo_scrapes=2,
            kube_cycles=20,
            watch_timeout=1,
            hostile_devices=8,
            accepts=20,
            idle=300,
            probes=10,
        )


def steps(plan: Plan, results: Results, *, vm: bool, logs: Path) -> dict[str, Callable[[], None]]:
    def run_vm() -> None:
        if vm:
            vm_snapshot.run_vm(plan.vm_sizes, plan.vm_repeats, results)
        else:
            results.rows.extend(
                skipped(vm_snapshot.NAME, [f"{n} rxe" for n in plan.vm_sizes], "ms", vm_snapshot.TARGET, "--no-vm")
            )

    return {
        "vm": run_vm,
        "scale": lambda: scale.run(
            plan.scale_sizes,
            min_repeats=plan.scale_min_repeats,
            max_repeats=plan.scale_max_repeats,
            min_seconds=plan.scale_min_seconds,
            results=results,
        ),
        "resources": lambda: resources.run(
            functions=plan.nics,
            per_pf=1,
            reconciles=plan.reconciles,
            chunk=plan.reconcile_chunk,
            traced=plan.traced,
            scrapes=plan.scrapes,
            exporter_scrapes=plan.exporter_scrapes,
            results=results,
            log=logs / "resources-agent.log",
        ),
        "scrape": lambda: scrape.run(
            devices=plan.scrape_devices,
            clients=plan.scrapers,
            per_client=plan.per_scraper,
            single=plan.solo_scrapes,
            results=results,
            log=logs / "scrape-agent.log",
        ),
        "kube": lambda: kube_requests.run(cycles=plan.kube_cycles, watch_timeout=plan.watch_timeout, results=results),
        "hostile": lambda: hostile.run(
            devices=plan.hostile_devices,
            accepts=plan.accepts,
            idle=plan.idle,
            probes=plan.probes,
            results=results,
            log=logs / "hostile-agent.log",
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for the smoke test")
    parser.add_argument("--no-vm", action="store_true", help="skip the QEMU benchmark")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"markdown file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        known = ", ".join(BENCHMARKS)
        parser.error(f"--only: unknown benchmark(s) {', '.join(sorted(unknown))} (known: {known})")
    plan = Plan.quick() if args.quick else Plan.full()
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks.run", *map(shlex.quote, given)])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    monitor = LoadMonitor()
    results = Results()
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rna-bench-logs-") as logs:
        todo = steps(plan, results, vm=not args.no_vm, logs=Path(logs))
        for name in BENCHMARKS:
            if name not in only:
                continue
            started = time.monotonic()
            print(f"benchmarks: {name} …", file=sys.stderr, flush=True)
            try:
                todo[name]()
            except Exception as err:  # one broken benchmark must not lose the others' figures
                failed.append(name)
                results.rows.append(
                    Row(
                        benchmark=name,
                        size="—",
                        unit="",
                        ours=None,
                        baseline=None,
                        note=f"failed: {type(err).__name__}",
                    )
                )
                results.notes.append(f"{name} failed:\n\n```\n{traceback.format_exc()[-3000:]}```")
            results.details.setdefault("seconds", {})[name] = round(time.monotonic() - started, 1)
    md, js = save(results, args.out, command=command, date=date, machine_info=machine(), load=monitor.finish())
    print(markdown_table(results.rows))
    print(f"\nsaved {md} and {js}", file=sys.stderr)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)} (see the notes in {md})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
