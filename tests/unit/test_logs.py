"""Log lines and the exit-code policy for scripts: ``log-format`` text or JSON (UTC, one line per
event, structured fields) as flag, environment variable and config key alike; ``status
--fail-on-problems`` exits 3 on problems (any, or the codes named), 0 otherwise."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent import logs
from tests.reliability.harness import build_host

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, cwd=REPO, env=environment, timeout=60
    )


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    build_host(root)
    (root / "etc/modprobe.d/x.conf").write_text("options ib_core netns_mode=bogus\n")  # a problem to log
    return root


@pytest.mark.parametrize("how", ["env", "flag", "file"])
def test_status_with_json_logs_writes_only_json_lines_to_stderr(host: Path, tmp_path: Path, how: str) -> None:
    args = ["status", f"--host-root={host}"]
    env = {"KUBECONFIG": str(tmp_path / "missing")}  # no cluster: the agent logs a warning and goes on
    if how == "env":
        env["RDMA_NODE_AGENT_LOG_FORMAT"] = "json"
    elif how == "flag":
        args.append("--log-format=json")
    else:
        config = tmp_path / "config.yaml"
        config.write_text("log-format: json\n")
        args.append(f"--config={config}")
    result = _run(args, env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines, "expected at least the 'running without Kubernetes' warning"
    for line in lines:
        record = json.loads(line)  # every line, not only most of them
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
        assert {"level", "logger", "message"} <= set(record)
    assert any(json.loads(line)["message"].startswith("running without Kubernetes") for line in lines)


def test_text_logs_are_utc_with_the_logger_name(host: Path, tmp_path: Path) -> None:
    result = _run(["status", f"--host-root={host}"], {"KUBECONFIG": str(tmp_path / "missing")})
    line = result.stderr.splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING agent: running without Kubernetes", line), line


def test_json_lines_carry_structured_fields_and_tracebacks_on_one_line() -> None:
    stream = io.StringIO()
    logs.configure("debug", "json", stream=stream)
    log = logging.getLogger("agent.test")
    log.warning("refused by the kernel", extra={"code": "netns_mode_busy", "errno": 16, "device": "mlx5_0"})
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("it broke")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["level"], first["logger"], first["code"], first["errno"], first["device"]) == (
        "warning",
        "agent.test",
        "netns_mode_busy",
        16,
        "mlx5_0",
    )
    assert second["exception"] == "ValueError: bad\nthing" and "Traceback" in second["traceback"]
    logs.configure("info", "text", stream=io.StringIO())


@pytest.mark.parametrize(
    ("flag", "code"),
    [
        ([], 0),
        (["--fail-on-problems"], 3),
        (["--fail-on-problems=modprobe_invalid_value"], 3),
        (["--fail-on-problems=persist_failed,port_down"], 0),
    ],
)
def test_fail_on_problems_exit_code(host: Path, flag: list[str], code: int) -> None:
    result = _run(["status", "--no-kubernetes", f"--host-root={host}", *flag])
    assert result.returncode == code, result.stderr
    assert "[modprobe_invalid_value]" in result.stdout  # the report is printed either way


def test_fail_on_problems_without_problems_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "host"
    build_host(root)
    result = _run(["status", "--no-kubernetes", f"--host-root={root}", "--fail-on-problems"])
    assert "Problems: none" in result.stdout and result.returncode == 0, result.stdout


def test_the_serving_line_is_logged_once(host: Path) -> None:
    """One line per event: the listener announces itself once (it used to be twice)."""
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    argv = [
        sys.executable,
        "-m",
        "agent",
        "run",
        "--no-kubernetes",
        f"--host-root={host}",
        "--metrics-bind-address=127.0.0.1:0",
        "--health-bind-address=127.0.0.1:0",
        "--interval=1h",
    ]
    agent = subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO, env=environment
    )
    try:
        assert agent.stderr is not None
        seen = []
        for line in agent.stderr:  # blocks on the agent's own output, no sleep
            seen.append(line)
            if "serving /metrics" in line:
                break
        agent.send_signal(signal.SIGTERM)
        rest = agent.communicate(timeout=30)[1]
    finally:
        agent.kill()
    serving = [line for line in [*seen, *rest.splitlines()] if "serving /metrics" in line]
    assert len(serving) == 1, seen + rest.splitlines()
    assert agent.returncode == 0


class _BrokenStream(io.StringIO):
    """stderr in the middle of another write: what a signal handler that logs would meet."""

    def write(self, text: str) -> int:
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")


def test_a_signal_stops_the_agent_even_while_stderr_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SIGTERM handler only sets events; logging is the main thread's. (It used to log first: a
    SIGTERM landing during a write to stderr raised in the handler, the stop event was never set, and
    the agent ran on — 2 runs in 15 of the test above hung.)"""
    from agent.cli import _install_signal_handlers

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    busy = _BrokenStream()
    logs.configure("info", "text", stream=busy)
    monkeypatch.setattr(sys, "stderr", busy)  # logging's own error report goes there: it raises too
    try:
        signals = _install_signal_handlers()
        signal.raise_signal(signal.SIGHUP)
        assert signals.wake.is_set() and not signals.stop.is_set()
        signal.raise_signal(signal.SIGTERM)
        assert signals.stop.is_set() and signals.received == [signal.SIGHUP, signal.SIGTERM]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        logs.configure("info", "text", stream=io.StringIO())
