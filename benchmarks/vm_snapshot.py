"""Benchmark 1: the agent's whole snapshot vs one ``rdma -j link show``, on a real kernel under QEMU.

One boot of the test bed (tools/vm/vmrun.py) runs benchmarks/guest_snapshot.py, which builds 1, 8
and 64 Soft-RoCE devices and times both in the guest. Guest Python runs under TCG, ~15× slower than
here, and so does ``rdma``: only the ratio means anything, not the milliseconds.
"""

from __future__ import annotations

import importlib
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.breakdown import describe
from benchmarks.report import Results, Row, skipped

REPO = Path(__file__).resolve().parents[1]
VMRUN_DIR = REPO / "tools" / "vm"


def _vmrun() -> Any:
    """tools/vm/vmrun.py. tools/ is not a package (tests/vm/conftest.py puts its directory on sys.path
    too); imported by name at run time, so mypy knows the file under one module name only."""
    if str(VMRUN_DIR) not in sys.path:
        sys.path.insert(0, str(VMRUN_DIR))
    return importlib.import_module("vmrun")


NAME = "Snapshot in QEMU (vs `rdma -j link show`)"
TARGET_RATIO = 0.5


TARGET = f"≤ {TARGET_RATIO:g}×"


def run_vm(sizes: Sequence[int], repeats: int, results: Results, *, timeout: float = 900) -> None:
    labels = [f"{n} rxe" for n in sizes]
    command = (
        f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m benchmarks.guest_snapshot "
        f"--sizes {','.join(map(str, sizes))} --repeats {repeats}"
    )
    vmrun = _vmrun()
    try:
        outcome = vmrun.run(command, timeout=timeout)
    except vmrun.VmUnavailable as err:
        results.rows += skipped(NAME, labels, "ms", TARGET, f"no QEMU test bed ({err})")
        return
    except vmrun.VmError as err:
        results.rows += skipped(NAME, labels, "ms", TARGET, f"the VM failed: {type(err).__name__}")
        results.notes.append(f"VM benchmark failed: {str(err)[:2000]}")
        return
    if outcome.returncode != 0:
        results.rows += skipped(NAME, labels, "ms", TARGET, f"guest script exited {outcome.returncode}")
        results.notes.append(f"VM benchmark guest stderr: {outcome.stderr[-2000:]}")
        return
    data = json.loads(outcome.stdout)
    for p in data["points"]:
        ours, theirs = p["ours_median_s"] * 1000, p["rdma_median_s"] * 1000
        results.rows.append(
            Row(
                benchmark=NAME,
                size=f"{p['size']} rxe",
                unit="ms",
                ours=ours,
                baseline=theirs,
                target=TARGET,
                met=ours / theirs <= TARGET_RATIO,
            )
        )
        if not p.get("warm_equals_cold", True):
            results.notes.append(f"VM {p['size']}: the warm snapshot differed from the cold one")
    for p in data["points"]:
        cold, theirs = p["cold_median_s"] * 1000, p["rdma_median_s"] * 1000
        results.rows.append(
            Row(
                benchmark=NAME,
                size=f"{p['size']} rxe, cold (first cycle, each refresh)",
                unit="ms",
                ours=cold,
                baseline=theirs,
                target=TARGET,
                met=cold / theirs <= TARGET_RATIO,
            )
        )
        if p["devices_seen"] != p["size"] or p["links_listed"] != p["size"] or not p["netlink_available"]:
            results.notes.append(
                f"VM {p['size']}: snapshot saw {p['devices_seen']} devices, rdma listed "
                f"{p['links_listed']} links, netlink {p['netlink_available']}"
            )
    results.notes.append(
        f"QEMU guest (TCG, 1 vCPU): kernel {data['kernel']}, {data['iproute2']}, Python {data['python']}; "
        f"medians of {repeats} alternating runs each after a warm-up; boot+run {outcome.seconds:.0f} s. The "
        "first rows are the steady state (the loop's cache warm, as every cycle but the first and each "
        "10-minute refresh runs), the cold rows read everything. The snapshot is everything the agent "
        "reads (netlink devices/ports/system, sysfs, procfs incl. every process's netns link, modprobe.d); "
        "`rdma -j link show` is one process doing one dump."
    )
    for p in (data["points"][0], data["points"][-1]):
        results.notes.append(f"VM, {p['size']} rxe, where the snapshot's time goes: {describe(p['breakdown_s'])}.")
    results.details["vm"] = data
