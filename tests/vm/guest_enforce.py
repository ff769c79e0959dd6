"""Runs INSIDE the QEMU guest (root, real kernel): the agent's reconcile loop enforcing the netns mode
against the real ib_core, with an injected clock so backoff windows pass instantly. Every SYS_SET the
agent sends is counted at the socket. Prints one JSON document of observations on stdout; the
assertions live in tests/vm/test_enforce_vm.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

from agent.config import Config
from agent.discover.rdma_netlink import RdmaNetlink
from agent.loop import Agent
from agent.model import DesiredMode, NetnsMode

MODPROBE = Path("/etc/modprobe.d/ib_core.conf")  # the guest's overlay: the host's file is untouched
SENTINEL = Path("/run/rdma-node-agent/reboot-required")
RETRY = 600.0


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def live_mode() -> str:
    return sh("rdma", "system", "show").split()[1]


class Counting(RdmaNetlink):
    sys_sets: ClassVar[list[str]] = []

    def set_netns_mode(self, mode: NetnsMode) -> None:
        Counting.sys_sets.append(mode.value)
        super().set_netns_mode(mode)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def observe(agent: Agent, label: str) -> dict[str, Any]:
    state = agent.run_once()
    assert state.enforcement is not None and state.snapshot is not None
    text = MODPROBE.read_text() if MODPROBE.exists() else None
    return {
        "label": label,
        "live_rdma_system": live_mode(),
        "agent_live": state.enforcement.live.value if state.enforcement.live else None,
        "compliant": state.enforcement.compliant,
        "reboot_required": state.enforcement.reboot_required,
        "reboot_reason": state.enforcement.reboot_reason,
        "problems": [p.code for p in state.enforcement.problems],
        "namespaces": state.snapshot.network_namespaces,
        "option_lines": [line for line in (text or "").splitlines() if line.startswith("options")],
        "file_mtime_ns": MODPROBE.stat().st_mtime_ns if MODPROBE.exists() else None,
        "sentinel": SENTINEL.exists(),
        "sys_sets": len(Counting.sys_sets),
        "attempts_reported": state.enforcement.runtime_set_attempts,
    }


def converge_after_netns_removed(agent: Agent, clock: Clock, label: str, log: list[dict[str, Any]]) -> None:
    """Namespace teardown is asynchronous in the kernel: retry once per window until it converges."""
    for window in range(1, 6):
        clock.now += RETRY
        log.append(observe(agent, f"{label}, window {window}"))
        if log[-1]["compliant"]:
            return


def scenario(desired: DesiredMode, start: str, log: list[dict[str, Any]]) -> None:
    clock = Clock()
    config = Config(netns_mode=desired, interval_seconds=30, runtime_retry_seconds=RETRY, reboot_sentinel=SENTINEL)
    agent = Agent(config, netlink=Counting, clock=clock)
    name = f"{start}->{desired.value}"
    sh("ip", "netns", "add", "x")
    log.append(observe(agent, f"{name}: netns x present, first cycle"))
    for _ in range(5):  # five more cycles inside the same backoff window
        clock.now += 100
        log.append(observe(agent, f"{name}: inside the window"))
    clock.now += RETRY - 500
    log.append(observe(agent, f"{name}: next window"))
    sh("ip", "netns", "del", "x")
    converge_after_netns_removed(agent, clock, f"{name}: netns x deleted", log)
    clock.now += 30
    log.append(observe(agent, f"{name}: steady"))


def main() -> int:
    for module in ("rdma_rxe", "ib_uverbs", "ib_umad", "rdma_ucm"):
        sh("modprobe", module)
    sh("ip", "link", "add", "d0", "type", "dummy")
    sh("ip", "link", "set", "d0", "up")
    sh("rdma", "link", "add", "rxe0", "type", "rxe", "netdev", "d0")
    log: list[dict[str, Any]] = []

    # 1. no extra netns: the runtime switch just works
    agent = Agent(Config(netns_mode=DesiredMode.EXCLUSIVE, reboot_sentinel=SENTINEL), netlink=Counting)
    log.append(observe(agent, "no netns: first cycle"))
    log.append(observe(agent, "no netns: second cycle"))
    sh("rdma", "system", "set", "netns", "shared")
    MODPROBE.unlink()
    Counting.sys_sets.clear()

    # 2. with a netns present: EBUSY, persisted, reboot required, one SYS_SET per window; then converge
    scenario(DesiredMode.EXCLUSIVE, "shared", log)
    sys_sets_exclusive = list(Counting.sys_sets)
    Counting.sys_sets.clear()
    # 3. the same back to shared
    scenario(DesiredMode.SHARED, "exclusive", log)
    json.dump({"log": log, "sys_sets_exclusive": sys_sets_exclusive, "sys_sets_shared": Counting.sys_sets}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
