"""Configuration the agent cannot run is refused at start: exit 2, one line naming the setting, within a
second — a spinning interval, one that overflows, a YAML alias bomb. The Go duration form Kubernetes
users type (``1m30s``) is accepted. Each case reproduces a finding of issue #10 (7); the agent runs
as a process of its own, as an operator would start it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOUND = 30.0  # a refusal takes well under a second; before, the alias bomb ran past 30 s
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
)  # 9^10 list items from ~400 bytes


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    started = time.monotonic()
    try:
        environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **(env or {})}
        result = subprocess.run(
            [sys.executable, "-m", "agent", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=BOUND,
            env=environment,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"rdma-node-agent {' '.join(args)} ran past {BOUND:.0f}s")
    return result.returncode, result.stdout, result.stderr, time.monotonic() - started


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval=0.001ms"], "--interval: must be between 1s and 24h0m0s, got '0.001ms'"),
        (["--interval=99999999999999999999h"], "--interval: must be between 1s and 24h0m0s"),
        (["--interval=1h30"], "--interval: expected a duration like 30s, 1m30s or 1h, got '1h30'"),
        (["--interval=1m", "--runtime-retry-interval=30s"], "--runtime-retry-interval: must be at least the interval"),
        (["--label-hysteresis=48h"], "--label-hysteresis: must be between"),
    ],
)
def test_a_duration_the_agent_cannot_run_with_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    # Before: 0.001ms spun a core at 96 %, 99999999999999999999h crashed after the first cycle.
    code, _, err, took = cli("run", "--once", "--no-kubernetes", f"--host-root={tmp_path}", *args)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"rdma-node-agent: {message}"), err
    assert took < BOUND


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 500
    code, _, err, took = cli("status", "--no-kubernetes", f"--config={config}", f"--host-root={tmp_path}")
    assert (code, err) == (
        2,
        f"rdma-node-agent: --config: {config} uses a YAML anchor or alias (&/*): a configuration may not\n",
    )
    assert took < 10


def test_an_anchor_is_refused_even_when_harmless(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("interval: &i 30s\nruntime-retry-interval: *i\n")
    code, _, err, _ = cli("status", "--no-kubernetes", f"--config={config}", f"--host-root={tmp_path}")
    assert code == 2 and "anchor or alias" in err


def test_a_config_file_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    os.mkfifo(config)
    code, _, err, _ = cli("status", "--no-kubernetes", f"--config={config}", f"--host-root={tmp_path}")
    assert (code, err) == (2, f"rdma-node-agent: --config: {config} is a FIFO, not a regular file: not read\n")


def test_a_kubeconfig_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    os.mkfifo(kubeconfig)
    code, _, err, _ = cli("run", "--once", f"--kubeconfig={kubeconfig}", "--node-name=gpu-a", f"--host-root={tmp_path}")
    assert (code, err) == (2, f"rdma-node-agent: --kubeconfig: {kubeconfig} is a FIFO, not a regular file\n")


@pytest.mark.parametrize(("text", "seconds"), [("1m30s", 90.0), ("90s", 90.0), ("1h", 3600.0), ("2m0.5s", 120.5)])
def test_go_durations_are_accepted(tmp_path: Path, text: str, seconds: float) -> None:
    env = {"RDMA_NODE_AGENT_INTERVAL": text, "RDMA_NODE_AGENT_LABEL_HYSTERESIS": text}
    code, out, err, _ = cli("status", "--no-kubernetes", f"--host-root={tmp_path}", env=env)
    assert code == 0, err
    assert "Problems" in out
    from agent.settings import load_config

    assert load_config({"interval": text}, env={}).interval_seconds == seconds
