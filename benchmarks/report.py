"""The benchmark table: rows, the machine they ran on, and the markdown/JSON it is saved as."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

COLUMNS = ("benchmark", "size", "ours", "baseline", "ratio", "target", "met?")


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    """One line of the table. ``ours``/``baseline`` are numbers in ``unit`` (None: not measured);
    ``met`` is None when the row has no target or was not measured."""

    benchmark: str
    size: str
    unit: str
    ours: float | None
    baseline: float | None
    target: str = "—"
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    def cells(self) -> tuple[str, ...]:
        ours = fmt(self.ours, self.unit) if self.ours is not None else f"skipped: {self.note}" if self.note else "—"
        ratio = self.ratio
        return (
            self.benchmark,
            self.size,
            ours,
            fmt(self.baseline, self.unit) if self.baseline is not None else "—",
            f"{ratio:.3g}×" if ratio is not None else "—",
            self.target,
            {True: "yes", False: "**no**", None: "—"}[self.met],
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def skipped(benchmark: str, sizes: Sequence[str], unit: str, target: str, reason: str) -> list[Row]:
    return [
        Row(benchmark=benchmark, size=s, unit=unit, ours=None, baseline=None, target=target, note=reason) for s in sizes
    ]


def fmt(value: float, unit: str) -> str:
    """A number with its unit, to about three significant digits."""
    if unit in ("count", "/h"):
        text = f"{value:,.0f}" if value == round(value) else f"{value:,.1f}"
        return text if unit == "count" else f"{text}/h"
    if unit == "%":
        return f"{value:.3g} %"
    if unit == "×":
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


@dataclass(slots=True)
class Results:
    """Everything one run produced."""

    rows: list[Row] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)  # scale: n, ms, ms/device, baseline
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # raw figures per benchmark, for the JSON


# --- the machine ----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "os": os_name(),
        "python": platform.python_version(),
    }


class LoadMonitor:
    """The machine's load while the benchmarks ran: load averages at both ends, and how busy all
    CPUs were, split into this benchmark's processes and everything else."""

    def __init__(self) -> None:
        self.load_before = os.getloadavg()
        self.cpu_before = psutil.cpu_times()
        self.own_before = _own_cpu()
        self.wall_before = time.monotonic()

    def finish(self) -> dict[str, Any]:
        cpu_after = psutil.cpu_times()
        wall = time.monotonic() - self.wall_before
        busy = sum(cpu_after) - sum(self.cpu_before) - (cpu_after.idle - self.cpu_before.idle)
        busy -= getattr(cpu_after, "iowait", 0.0) - getattr(self.cpu_before, "iowait", 0.0)
        own = _own_cpu() - self.own_before
        cores = os.cpu_count() or 1
        return {
            "load_average_before": [round(x, 2) for x in self.load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "wall_seconds": round(wall, 1),
            "cpu_busy_cores": round(busy / wall, 2) if wall else None,
            "cpu_busy_cores_benchmark": round(own / wall, 2) if wall else None,
            "cpu_busy_cores_others": round(max(0.0, busy - own) / wall, 2) if wall else None,
            "cores": cores,
        }


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# --- output ----------------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(
    results: Results, *, command: str, date: str, machine_info: dict[str, Any], load: dict[str, Any]
) -> str:
    m = machine_info
    out = [
        "# rdma-node-agent benchmarks",
        "",
        f"`{command}` — {date}",
        "",
        f"Machine: {m['nproc']} × {m['cpu_model']}, {m['memory_gib']} GiB, {m['os']}, kernel {m['kernel']}, "
        f"Python {m['python']}.",
        f"Load: load average {_load(load['load_average_before'])} before, {_load(load['load_average_after'])} "
        f"after; over the {load['wall_seconds']:.0f} s run the CPUs were busy {load['cpu_busy_cores']} of "
        f"{load['cores']} cores ({load['cpu_busy_cores_benchmark']} this benchmark, "
        f"{load['cpu_busy_cores_others']} everything else).",
        "",
        markdown_table(results.rows),
    ]
    if results.curve:
        out += [
            "",
            "Snapshot cost by size (no kernel; synthesized netlink, generated sysfs on tmpfs):",
            "",
            "| functions | steady state | per function | cold | per function | mean over a refresh period "
            "| read-loop baseline | per function | steady / baseline |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for p in results.curve:
            out.append(
                f"| {p['n']:,.0f} | {fmt(p['ms'], 'ms')} | {p['ms'] / p['n'] * 1000:.1f} µs | "
                f"{fmt(p['cold_ms'], 'ms')} | {p['cold_ms'] / p['n'] * 1000:.0f} µs | {fmt(p['period_ms'], 'ms')} | "
                f"{fmt(p['baseline_ms'], 'ms')} | {p['baseline_ms'] / p['n'] * 1000:.0f} µs | "
                f"{p['ms'] / p['baseline_ms']:.3g}× |"
            )
    if results.notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in results.notes]
    return "\n".join(out) + "\n"


def _load(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def save(
    results: Results, out: Path, *, command: str, date: str, machine_info: dict[str, Any], load: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``out`` (markdown) and the JSON next to it (same name, ``.json``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(results, command=command, date=date, machine_info=machine_info, load=load))
    data = {
        "command": command,
        "date": date,
        "machine": machine_info,
        "load": load,
        "columns": list(COLUMNS),
        "rows": [r.to_json() for r in results.rows],
        "curve": results.curve,
        "notes": results.notes,
        "details": results.details,
    }
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return out, json_path
