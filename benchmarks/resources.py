"""Benchmark 3: memory and CPU of the running agent, beside Debian's prometheus-node-exporter.

The agent runs in its own process with production wiring (:mod:`benchmarks.agent_process`): a
synthetic node of 8 ConnectX PFs, desired netns mode ``shared``, labels published to a
kube-apiserver stand-in (tests/kube_standin.py) through the real watcher and publisher. From the
outside (psutil, as for node_exporter): RSS after start (one cycle done), RSS every 1,000 reconciles
up to 10,000, CPU time per reconcile and per ``/metrics`` scrape; from the inside, tracemalloc's
Python-heap growth over further cycles. node_exporter (default collectors, 127.0.0.1) is measured the
same way: RSS after its first scrape, CPU per scrape, RSS growth over a batch of scrapes. At a 30 s
interval the agent spends one reconcile and one scrape per interval, node_exporter one scrape.
Floors: the max RSS of ``python -c pass`` and of importing the runtime packages.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.agent_process import TEST_ONLY_PACKAGES, AgentProcess
from benchmarks.report import Results, Row
from benchmarks.scrape import fetch
from tests.kube_standin import KubeStandIn

MIB = 2**20
INTERVAL = 30.0
NODE = "gpu-node-1"
RUNTIME_IMPORTS = "import pyroute2, prometheus_client, kubernetes, psutil, yaml"
AGENT_IMPORTS = (
    "import agent.cli, agent.loop, agent.publish.kube.client, agent.publish.kube.node_labels,"
    " agent.publish.kube.watch, agent.publish.stages"
)
HIDE = "import sys; sys.modules.update(dict.fromkeys({names!r}))\n"
NODE_EXPORTER = "prometheus-node-exporter"
INSTALL = "apt-get install -y --no-install-recommends prometheus-node-exporter"


HWM_PRINT = "import sys; sys.stdout.write(open('/proc/self/status').read())"


def peak_rss(code: str) -> int:
    """Peak RSS in bytes of ``python -c CODE``, from its own VmHWM at exit (Documentation/filesystems/
    proc.rst). Not wait4's ru_maxrss: that also counts the parent's pages the child had before exec."""
    out = subprocess.run([sys.executable, "-c", f"{code}\n{HWM_PRINT}"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in the status of python -c {code!r}")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _sites(top: list[dict[str, Any]]) -> str:
    return "; ".join(f"{t['where']} {t['size_diff']:+,} B" for t in top[:3])


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeExporter:
    """Debian's prometheus-node-exporter on 127.0.0.1:<free port>, default collectors."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:  # it listens within a second; poll for it (a benchmark, not a test)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"{binary} did not start listening on 127.0.0.1:{self.port}") from None
                time.sleep(0.05)
        self.ps = psutil.Process(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> NodeExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scrape_cpu(ps: psutil.Process, port: int, count: int) -> tuple[float, int]:
    """CPU seconds of ``ps`` per /metrics scrape over ``count`` scrapes, and the answer's size."""
    size = 0
    before = cpu_seconds(ps)
    for _ in range(count):
        status, size = fetch(port, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
    return (cpu_seconds(ps) - before) / count, size


def measure_agent(
    *, functions: int, per_pf: int, reconciles: int, chunk: int, traced: int, scrapes: int, log: Path | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rna-bench-kube-") as tmp, KubeStandIn() as api:
        api.put_node(NODE)
        kubeconfig = api.write_kubeconfig(Path(tmp) / "kubeconfig")
        with AgentProcess(functions, per_pf=per_pf, kubeconfig=kubeconfig, node_name=NODE, stderr=log) as agent:
            ps = psutil.Process(agent.pid)
            idle = ps.memory_info().rss
            curve = [(0, idle)]
            cpu_before = cpu_seconds(ps)
            done = 0
            last: dict[str, Any] = {}
            while done < reconciles:
                step = min(chunk, reconciles - done)
                last = agent.command(f"reconcile {step}")
                done += step
                curve.append((done, ps.memory_info().rss))
            cpu_reconcile = (cpu_seconds(ps) - cpu_before) / reconciles
            cpu_scrape, body = _scrape_cpu(ps, agent.port, scrapes)
            trace = agent.command(f"trace {traced}")
        requests = api.counts()
    return {
        "idle_rss": idle,
        "rss_curve": curve,
        "cpu_per_reconcile": cpu_reconcile,
        "cpu_per_scrape": cpu_scrape,
        "metrics_bytes": body,
        "trace": trace,
        "last": last,
        "kube_requests": requests,
    }


def measure_node_exporter(binary: str, *, scrapes: int) -> dict[str, Any]:
    with NodeExporter(binary) as ne:
        started = ne.ps.memory_info().rss
        fetch(ne.port, "/metrics")
        first = ne.ps.memory_info().rss
        cpu_scrape, body = _scrape_cpu(ne.ps, ne.port, scrapes)
        after = ne.ps.memory_info().rss
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    banner = (version.stdout or version.stderr).splitlines()
    return {
        "rss_started": started,
        "rss_first_scrape": first,
        "rss_after": after,
        "scrapes": scrapes,
        "cpu_per_scrape": cpu_scrape,
        "metrics_bytes": body,
        "version": banner[0] if banner else "",
    }


def run(
    *,
    functions: int,
    per_pf: int,
    reconciles: int,
    chunk: int,
    traced: int,
    scrapes: int,
    exporter_scrapes: int,
    results: Results,
    log: Path | None = None,
) -> None:
    size = f"{functions} NICs"
    hide = HIDE.format(names=TEST_ONLY_PACKAGES)
    bare = peak_rss("pass")
    imports = peak_rss(hide + RUNTIME_IMPORTS)
    agent_modules = peak_rss(hide + AGENT_IMPORTS)
    core_api = peak_rss(hide + AGENT_IMPORTS + "\nimport kubernetes.client\nkubernetes.client.CoreV1Api")
    agent = measure_agent(
        functions=functions, per_pf=per_pf, reconciles=reconciles, chunk=chunk, traced=traced, scrapes=scrapes, log=log
    )
    binary = shutil.which(NODE_EXPORTER) or shutil.which("node_exporter")
    ne: dict[str, Any] | None = None
    reason = f"{NODE_EXPORTER} not installed ({INSTALL}, or benchmarks/install-deps.sh)"
    if binary is not None:
        try:
            ne = measure_node_exporter(binary, scrapes=exporter_scrapes)
        except (RuntimeError, OSError) as err:
            reason = f"{NODE_EXPORTER} failed: {err}"
    if ne is None:
        results.notes.append(f"node_exporter baseline not measured: {reason}")

    idle, curve = agent["idle_rss"], agent["rss_curve"]
    growth = curve[-1][1] - idle
    steady = curve[-1][1] - curve[1][1] if len(curve) > 2 else None
    ne_idle = ne["rss_first_scrape"] if ne else None
    ne_growth = (ne["rss_after"] - ne["rss_first_scrape"]) if ne else None
    per_interval = agent["cpu_per_reconcile"] + agent["cpu_per_scrape"]
    pct = per_interval / INTERVAL * 100
    ne_pct = ne["cpu_per_scrape"] / INTERVAL * 100 if ne else None
    trace = agent["trace"]
    half_cycles, half_growth = trace["second_half_cycles"], trace["second_half_growth_bytes"]
    name_mem = "Memory (vs node_exporter)"
    name_cpu = "CPU (vs node_exporter)"
    rows = [
        Row(
            benchmark=name_mem,
            size=f"{size}, RSS after start",
            unit="MiB",
            ours=idle / MIB,
            baseline=ne_idle / MIB if ne_idle is not None else None,
            target="≤ 64 MiB",
            met=idle <= 64 * MIB,
        ),
        Row(
            benchmark=name_mem,
            size=f"{size}, RSS above the {imports / MIB:.1f} MiB import floor",
            unit="MiB",
            ours=(idle - imports) / MIB,
            baseline=None,
        ),
        Row(
            benchmark=name_mem,
            size=f"{size}, RSS growth over {reconciles:,} reconciles",
            unit="MiB",
            ours=growth / MIB,
            baseline=ne_growth / MIB if ne_growth is not None else None,
            target="≤ 1 MiB",
            met=growth <= MIB,
        ),
    ]
    if steady is not None:
        rows.append(
            Row(
                benchmark=name_mem,
                size=f"{size}, RSS growth, reconciles {curve[1][0]:,}→{reconciles:,}",
                unit="MiB",
                ours=steady / MIB,
                baseline=None,
                target="≤ 1 MiB",
                met=steady <= MIB,
            )
        )
    rows += [
        Row(
            benchmark=name_mem,
            size=f"{size}, Python heap growth, reconciles {trace['cycles'] - half_cycles:,}"
            f"→{trace['cycles']:,} (tracemalloc)",
            unit="KiB",
            ours=half_growth / 1024,
            baseline=trace["traced_bytes"] / 1024,
            target="≤ 1 MiB per 10,000",
            met=half_growth * 10_000 / max(1, half_cycles) <= MIB,
        ),
        Row(
            benchmark=name_cpu,
            size=f"{size}, per reconcile",
            unit="ms",
            ours=agent["cpu_per_reconcile"] * 1000,
            baseline=ne["cpu_per_scrape"] * 1000 if ne else None,
        ),
        Row(
            benchmark=name_cpu,
            size=f"{size}, per /metrics scrape",
            unit="ms",
            ours=agent["cpu_per_scrape"] * 1000,
            baseline=ne["cpu_per_scrape"] * 1000 if ne else None,
        ),
        Row(
            benchmark=name_cpu,
            size=f"{size}, % of a core at 30 s",
            unit="%",
            ours=pct,
            baseline=ne_pct,
            target="≤ 0.2 %",
            met=pct <= 0.2,
        ),
    ]
    results.rows += rows
    results.notes.append(
        f'Memory floors (max RSS): `python -c pass` {bare / MIB:.1f} MiB; `python -c "{RUNTIME_IMPORTS}"` '
        f"{imports / MIB:.1f} MiB. Agent RSS every {curve[1][0] if len(curve) > 1 else 0:,} reconciles (MiB): "
        + ", ".join(f"{rss / MIB:.1f}" for _, rss in curve)
        + f". Importing the agent's modules peaks at {agent_modules / MIB:.1f} MiB. The agent never touches "
        f"`kubernetes.client.CoreV1Api` (kubernetes {_version('kubernetes')} imports it lazily, from its 4 MB "
        "core_v1_api.py, with ~250 models): that would add "
        f"{(core_api - agent_modules) / MIB:.1f} MiB ({core_api / MIB:.1f} MiB)"
        + f". Kubernetes requests during the run: {agent['kube_requests']}."
    )
    if ne:
        results.notes.append(
            f"node_exporter ({ne['version']}): RSS {ne['rss_started'] / MIB:.1f} MiB before any scrape, "
            f"{ne['rss_first_scrape'] / MIB:.1f} after the first, {ne['rss_after'] / MIB:.1f} after "
            f"{ne['scrapes']} more; {ne['metrics_bytes'] / 1024:.0f} KiB per answer vs the agent's "
            f"{agent['metrics_bytes'] / 1024:.0f} KiB. Its memory and CPU rows compare per interval: its growth over "
            f"{ne['scrapes']} scrapes, its CPU per scrape (it does nothing between scrapes)."
        )
    results.notes.append(
        f"Python heap (tracemalloc, after 20 warm-up cycles): {trace['growth_bytes'] / 1024:+,.1f} KiB over "
        f"{trace['cycles']:,} reconciles, {half_growth / 1024:+,.1f} KiB over the last {half_cycles:,}; largest sites "
        f"over all of them: {_sites(trace['top'])}; over the last ones: {_sites(trace['second_half_top'])}. "
        "The row's baseline is the whole traced heap."
    )
    results.details["resources"] = {
        "agent": agent,
        "node_exporter": ne,
        "python_pass_rss": bare,
        "runtime_imports_rss": imports,
        "agent_imports_rss": agent_modules,
        "core_v1_api_rss": core_api,
    }
