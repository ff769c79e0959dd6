"""Captured sysfs trees (tests/fixtures/sysfs/<scenario>/tree.txt), unpacked for tests.

The archive format belongs to tools/capture_sysfs.py (``write_archive``/``extract_archive``); trees
are archived because their symlink cycles would trap pytest and mypy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from agent.config import HostRoots

REPO = Path(__file__).resolve().parents[1]
SYSFS_DIR = REPO / "tests" / "fixtures" / "sysfs"


def _capture_tool() -> object:
    spec = importlib.util.spec_from_file_location("capture_sysfs", REPO / "tools" / "capture_sysfs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("capture_sysfs", module)
    spec.loader.exec_module(module)
    return module


_TOOL = _capture_tool()


def unpack(archive: Path, dest: Path) -> None:
    _TOOL.extract_archive(archive, dest)  # type: ignore[attr-defined]


def load_tree(scenario: str, dest: Path) -> HostRoots:
    """A private copy of a captured tree under ``dest``; roots point at its sys/ and dev/."""
    root = dest / scenario
    unpack(SYSFS_DIR / scenario / "tree.txt", root)
    return HostRoots(root=root, sys=root / "sys", dev=root / "dev")
