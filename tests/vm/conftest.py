"""Fixtures for the real-kernel tests: ``vm`` boots Debian's kernel under QEMU (tools/vm/vmrun.py).

Where QEMU or the prepared kernel is missing, a VM test is skipped with the reason, unless
``RNA_REQUIRE_VM=1`` (CI sets it): then it fails, so a green CI never hides an untested kernel path.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "vm"))

import vmrun  # noqa: E402

VmRun = Callable[..., tuple[int, str, str]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots a real kernel under QEMU (tools/vm)")


def require_vm() -> bool:
    return os.environ.get("RNA_REQUIRE_VM", "") not in ("", "0")


def unavailable(reason: str) -> None:
    message = f"real-kernel VM unavailable: {reason}"
    if require_vm():
        pytest.fail(f"{message} (RNA_REQUIRE_VM is set)", pytrace=False)
    pytest.skip(message)


REPO = Path(__file__).resolve().parents[2]


GuestJson = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def guest_json(vm: VmRun) -> GuestJson:
    """A callable ``run(script, igb=False, timeout=900) -> dict``: one boot that runs
    ``tests/vm/<script>`` with this interpreter and returns the JSON document it prints; a failing
    guest fails the test with the end of its stderr."""

    def run(script: str, *, igb: bool = False, timeout: float = 900) -> dict[str, Any]:
        command = f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} tests/vm/{script}"
        rc, out, err = vm(command, igb=igb, timeout=timeout)
        assert rc == 0, f"guest failed ({rc}):\n{err[-4000:]}"
        result: dict[str, Any] = json.loads(out)
        return result

    return run


@pytest.fixture(scope="session")
def vm() -> VmRun:
    """A callable ``run(cmd, igb=False, timeout=600) -> (rc, stdout, stderr)``: one boot per call."""
    try:
        vmrun.find_kernel()
        vmrun.find_qemu()
    except vmrun.VmUnavailable as e:
        unavailable(str(e))

    def run(cmd: str, igb: bool = False, timeout: float = vmrun.DEFAULT_TIMEOUT) -> tuple[int, str, str]:
        try:
            result = vmrun.run(cmd, igb=igb, timeout=timeout)
        except vmrun.VmUnavailable as e:
            unavailable(str(e))
            raise  # unreachable: skip/fail raise
        print(f"vm: boot+run+poweroff {result.seconds:.1f}s (igb={igb}) rc={result.returncode}", file=sys.stderr)
        return result.returncode, result.stdout, result.stderr

    return run
