"""Host files: the one place that creates, replaces or removes files on the host.

Files are replaced atomically — a temporary file in the same directory, fsync, rename, fsync of the
directory — so a crash at any point leaves the old file or the new one, never a partial one. A write
whose content is already right does not happen at all (the mtime stays). Used by the enforcer (the
modprobe.d file, the reboot sentinel) and the NFD publisher (its features.d file).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TEMP_MARK = ".rna-tmp-"
# Step names passed to the test hook of atomic_write, in order.
WRITE_STEPS = ("temp_written", "temp_fsynced", "renamed", "dir_fsynced")


def read_text(path: Path) -> str | None:
    """A file's text, or None when it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, hook: Callable[[str], None] | None = None) -> bool:
    """Replace ``path`` with ``data`` atomically; return False (and touch nothing) if it already holds it.

    ``hook`` is called after each step in :data:`WRITE_STEPS` (crash-safety tests stop there)."""
    step = hook or (lambda _name: None)
    try:
        if path.read_bytes() == data:
            return False
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        pass
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f".{path.name}{TEMP_MARK}*"):  # left by a write that was killed
        stale.unlink(missing_ok=True)
    temp = directory / f".{path.name}{TEMP_MARK}{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            step("temp_written")
            os.fsync(fd)
            step("temp_fsynced")
        finally:
            os.close(fd)
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    step("renamed")
    _fsync_dir(directory)
    step("dir_fsynced")
    return True


def remove_file(path: Path) -> bool:
    """Remove ``path`` durably; False if it was not there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True
