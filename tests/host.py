"""Test helpers that touch this machine: external tools the tests need, and a full disk.

A tool the tests need but the machine lacks skips the test with the reason, except under CI=true or
the tool's own ``RNA_REQUIRE_*=1``, where it fails: a green CI never means "not checked"."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest


def required_tool(name: str, *, env: str, install: str, path: str | None = None) -> str:
    """The executable ``name`` (looked up in ``path``, default $PATH); when it is missing, fail under
    CI=true or ``env``=1, else skip. ``install`` says how to get it."""
    found = shutil.which(name, path=path)
    if found is None:
        if os.environ.get("CI") == "true" or os.environ.get(env) == "1":
            pytest.fail(f"{name} is not on PATH ({install})")
        pytest.skip(f"{name} not on PATH ({install}); set {env}=1 to fail instead")
    return found


def fill_until_enospc(path: Path) -> None:
    """Write ``path`` until its filesystem is full (ENOSPC); any other error fails the test."""
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
