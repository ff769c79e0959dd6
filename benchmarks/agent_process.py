"""The agent as it runs in production, in a process of its own, over a synthetic node.

``python -m benchmarks.agent_process --functions N [--kubeconfig F --node-name X]`` wires the agent the
way ``rdma-node-agent run`` does (``Agent``, the publishing stages and ``metrics_exposition`` of
``agent.cli``, ``MetricsServer``), with a generated sysfs tree and synthesized netlink replies instead
of the host's, runs one cycle, and prints one JSON line (``{"pid", "port", ...}``). It then obeys
commands on stdin, one per line, each answered by one JSON line on stdout:

* ``reconcile N`` — N more cycles back to back (what the loop does every interval);
* ``trace N`` — the Python heap growth over N cycles, with tracemalloc (after 20 warm-up cycles);
* ``quit`` — stop the server and the watcher, remove the tree, exit.

:class:`AgentProcess` starts and drives it from the benchmark; RSS and CPU time are read from the
outside (psutil), the same way as for the node_exporter baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path
from typing import IO, Any

from benchmarks.synth import FUNCTIONS_PER_PF

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 300.0  # generating a 2,048-function tree and its first cycle, on a loaded machine
COMMAND_TIMEOUT = 1800.0  # one command: up to a few thousand cycles
# Installed here for the tests but not in the image, and picked up by the kubernetes client when present
# (kubernetes.dynamic imports it if it can): hidden from the agent process so its memory is the image's.
TEST_ONLY_PACKAGES = ("kubernetes_validate",)


def hide_test_only_packages() -> None:
    for name in TEST_ONLY_PACKAGES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None in sys.modules: ImportError


def _reply(out: IO[str], data: dict[str, Any]) -> None:
    out.write(json.dumps(data) + "\n")
    out.flush()


def serve(args: argparse.Namespace) -> int:
    from agent.cli import _publish_stages, metrics_exposition  # the production wiring of the publishing stages
    from agent.config import Config
    from agent.loop import Agent
    from agent.model import DesiredMode
    from agent.publish.http import MetricsServer
    from benchmarks.scale import scratch_dir
    from benchmarks.synth import SynthExchange, build_node

    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="rna-agent-", dir=scratch_dir()) as tmp:
        node = build_node(Path(tmp), args.functions, per_pf=args.per_pf)
        exchange = SynthExchange(node.functions)
        kube = args.kubeconfig is not None
        config = Config(
            roots=node.roots,
            netns_mode=DesiredMode(args.netns_mode),
            metrics_bind_address="127.0.0.1:0",
            kubernetes=kube,
            kubeconfig=Path(args.kubeconfig) if kube else None,
            node_name=args.node_name,
            label_publisher="node" if kube else "none",
        )
        wiring = _publish_stages(config)  # (stages, closers, …): only the first two are used here
        stages, closers = wiring[0], wiring[1]
        agent = Agent(config, netlink=exchange.factory, stages=stages)
        limits = {} if args.max_parallel_scrapes is None else {"max_parallel_scrapes": args.max_parallel_scrapes}
        server = MetricsServer(
            config.metrics_bind_address, metrics_exposition(agent), healthy=agent.healthy, ready=agent.ready, **limits
        )
        _, port = server.start()
        try:
            state = agent.run_once()
            gc.collect()
            devices = len(state.snapshot.devices) if state.snapshot else 0
            _reply(
                out,
                {
                    "pid": os.getpid(),
                    "port": port,
                    "devices": devices,
                    "stages": {s.stage: s.success for s in state.stages},
                },
            )
            for line in sys.stdin:
                words = line.split()
                if not words:
                    continue
                if words[0] == "reconcile":
                    for _ in range(int(words[1])):
                        state = agent.run_once()
                    _reply(
                        out,
                        {
                            "cycles": agent.cycles,
                            "stages": {s.stage: s.success for s in state.stages},
                            "problems": sorted({p.code for p in state.problems}),
                        },
                    )
                elif words[0] == "trace":
                    _reply(out, _trace(agent.run_once, int(words[1])))
                elif words[0] == "quit":
                    break
                else:
                    _reply(out, {"error": f"unknown command {words[0]!r}"})
        finally:
            server.stop()
            for close in closers:
                close()
    return 0


def _trace(cycle: Any, count: int) -> dict[str, Any]:
    """Python heap growth over ``count`` cycles (after 20 warm-up cycles), as tracemalloc's total size
    difference, for the whole run and for its second half alone: a one-off growth (a dict resizing
    once) shows in the first, a leak in both."""
    tracemalloc.start(1)  # one frame: grouping is by line, and deeper stacks cost 10× the time

    def snapshot() -> tracemalloc.Snapshot:
        gc.collect()
        return tracemalloc.take_snapshot()

    def growth(a: tracemalloc.Snapshot, b: tracemalloc.Snapshot) -> tuple[int, list[dict[str, Any]]]:
        diff = b.compare_to(a, "lineno")
        top = [
            {"where": str(d.traceback[0]), "size_diff": d.size_diff, "count_diff": d.count_diff}
            for d in sorted(diff, key=lambda d: -d.size_diff)[:5]
        ]
        return sum(d.size_diff for d in diff), top

    try:
        for _ in range(20):
            cycle()
        start = snapshot()
        half = count // 2
        for _ in range(half):
            cycle()
        middle = snapshot()
        for _ in range(count - half):
            cycle()
        end = snapshot()
        total, top = growth(start, end)
        second, second_top = growth(middle, end)
        current, peak = tracemalloc.get_traced_memory()
        return {
            "cycles": count,
            "growth_bytes": total,
            "top": top,
            "second_half_cycles": count - half,
            "second_half_growth_bytes": second,
            "second_half_top": second_top,
            "traced_bytes": current,
            "traced_peak_bytes": peak,
        }
    finally:
        tracemalloc.stop()


class AgentProcess:
    """Start ``benchmarks.agent_process`` and talk to it. Use as a context manager."""

    def __init__(
        self,
        functions: int,
        *,
        per_pf: int = FUNCTIONS_PER_PF,
        kubeconfig: Path | None = None,
        node_name: str | None = None,
        netns_mode: str = "shared",
        max_parallel_scrapes: int | None = None,
        stderr: Path | None = None,
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.agent_process",
            "--functions",
            str(functions),
            "--per-pf",
            str(per_pf),
            "--netns-mode",
            netns_mode,
        ]
        if kubeconfig is not None:
            argv += ["--kubeconfig", str(kubeconfig), "--node-name", node_name or ""]
        if max_parallel_scrapes is not None:
            argv += ["--max-parallel-scrapes", str(max_parallel_scrapes)]
        self._stderr_path = stderr
        self._stderr: IO[bytes] = stderr.open("w+b") if stderr else tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, name="agent-process-stdout", daemon=True).start()
        self.hello = self._read(START_TIMEOUT)
        self.pid: int = self.hello["pid"]
        self.port: int = self.hello["port"]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # end of output

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-3000:]

    def _read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            self.proc.wait()
            tail = self._stderr_tail()
            raise RuntimeError(f"benchmark agent process silent for {timeout:g} s; killed:\n{tail}") from None
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"benchmark agent process exited ({self.proc.returncode}):\n{self._stderr_tail()}")
        data: dict[str, Any] = json.loads(line)
        return data

    def command(self, text: str, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--functions", type=int, required=True, help="PCI functions (RDMA devices) on the node")
    parser.add_argument("--per-pf", type=int, default=FUNCTIONS_PER_PF, help="functions per PF (1: no VFs)")
    parser.add_argument("--netns-mode", default="shared", choices=["shared", "exclusive", "unmanaged"])
    parser.add_argument("--kubeconfig", help="publish labels through this kubeconfig (default: no Kubernetes)")
    parser.add_argument("--node-name")
    parser.add_argument("--max-parallel-scrapes", type=int, help="default: the server's own")
    args = parser.parse_args(argv)
    hide_test_only_packages()
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
