"""Real-kernel enforcement: the agent's loop against ib_core in a QEMU guest (tests/vm/guest_enforce.py).
Desired exclusive with no extra netns converges at runtime; with `ip netns add x` the kernel says EBUSY:
live mode unchanged, the option persisted, reboot required, a sentinel written, at most one SYS_SET per
backoff window (counted at the socket); after `ip netns del x` the next retry converges and the sentinel
goes; the same back to shared."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(guest_json: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return guest_json("guest_enforce.py")


def entries(run: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [e for e in run["log"] if e["label"].startswith(prefix)]


def test_no_extra_netns_switches_at_runtime_and_persists_once(run: dict[str, Any]) -> None:
    first, second = entries(run, "no netns")
    assert first["live_rdma_system"] == "exclusive" and first["compliant"] and not first["reboot_required"]
    assert first["option_lines"] == ["options ib_core netns_mode=0"]
    assert first["sys_sets"] == 1 and second["sys_sets"] == 1
    assert second["file_mtime_ns"] == first["file_mtime_ns"]  # steady state: no rewrite


@pytest.mark.parametrize(("target", "start", "value"), [("exclusive", "shared", 0), ("shared", "exclusive", 1)])
def test_ebusy_persists_signals_reboot_and_backs_off(run: dict[str, Any], target: str, start: str, value: int) -> None:
    log = entries(run, f"{start}->{target}")
    first, inside, nxt = log[0], log[1:6], log[6]
    assert first["namespaces"] >= 1
    assert first["live_rdma_system"] == start and first["agent_live"] == start  # the kernel refused
    assert first["option_lines"] == [f"options ib_core netns_mode={value}"]
    assert first["reboot_required"] and first["sentinel"] and "netns_mode_busy" in first["problems"]
    assert first["reboot_reason"] and "next boot" in first["reboot_reason"]
    assert first["sys_sets"] == 1
    assert [e["sys_sets"] for e in inside] == [1] * 5  # no retry inside the backoff window
    assert all(e["live_rdma_system"] == start and e["reboot_required"] for e in inside)
    assert nxt["sys_sets"] == 2  # exactly one more in the next window
    assert len({e["file_mtime_ns"] for e in log[:7]}) == 1  # persisted once


@pytest.mark.parametrize(("target", "start"), [("exclusive", "shared"), ("shared", "exclusive")])
def test_converges_after_netns_deleted_and_clears_sentinel(run: dict[str, Any], target: str, start: str) -> None:
    log = entries(run, f"{start}->{target}")
    after = [e for e in log if "deleted" in e["label"]]
    converged = after[-1]
    assert converged["compliant"] and converged["live_rdma_system"] == target
    assert not converged["reboot_required"] and not converged["sentinel"]
    assert converged["sys_sets"] == 2 + len(after)  # one SYS_SET per window, never more
    steady = log[-1]
    assert steady["label"].endswith("steady") and steady["sys_sets"] == converged["sys_sets"]
    assert run[f"sys_sets_{target}"] == [target] * converged["sys_sets"]
