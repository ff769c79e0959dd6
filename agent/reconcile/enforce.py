"""Enforce: carry out planned actions. The only module in the agent that changes the host.

Files are replaced atomically — a temporary file in the same directory, fsync, rename, fsync of the
directory — so a crash at any point leaves the old file or the new one, never a partial one. A write
whose content is already right does not happen at all (the mtime stays). Failures become problems
with the errno in words; the old file stays intact.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from agent.config import Config
from agent.discover.rdma_netlink import RdmaNetlink
from agent.errors import NetlinkError
from agent.model import Action, ActionKind, Problem
from agent.reconcile.plan import EnforcerMemory, managed_file_content

logger = logging.getLogger(__name__)

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


def _os_problem(code: str, what: str, path: str, err: OSError) -> Problem:
    reason = os.strerror(err.errno) if err.errno else str(err)
    return Problem(code=code, message=f"could not {what} {path}: {reason}; the old file is intact", subject=path)


class Enforcer:
    """Runs actions against the host: modprobe.d file, RDMA netlink SYS_SET, reboot sentinel."""

    def __init__(
        self,
        config: Config,
        *,
        netlink: Callable[[], RdmaNetlink] = RdmaNetlink,
        write_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._netlink = netlink
        self._write_hook = write_hook
        self.managed_file = config.managed_modprobe_file
        self.managed_display = config.roots.display(self.managed_file)

    def read_managed_file(self) -> str | None:
        return read_text(self.managed_file)

    def initial_memory(self) -> EnforcerMemory:
        sentinel = self.config.reboot_sentinel
        return EnforcerMemory(reboot_signalled=sentinel is not None and sentinel.exists())

    def apply(
        self, actions: Iterable[Action], memory: EnforcerMemory, now: float
    ) -> tuple[EnforcerMemory, list[Problem]]:
        problems: list[Problem] = []
        for action in actions:
            logger.info("enforce: %s (%s)", action.kind.value, action.reason)
            if action.kind is ActionKind.WRITE_PERSISTED and action.mode is not None:
                try:
                    content = managed_file_content(self.read_managed_file(), action.mode)
                    atomic_write(self.managed_file, content.encode(), hook=self._write_hook)
                except OSError as err:
                    problems.append(_os_problem("persist_failed", "write", self.managed_display, err))
            elif action.kind is ActionKind.SET_RUNTIME_MODE and action.mode is not None:
                memory = replace(memory, runtime_attempts=memory.runtime_attempts + 1, last_attempt=now)
                try:
                    with self._netlink() as sock:
                        sock.set_netns_mode(action.mode)
                except NetlinkError as err:
                    logger.warning("runtime netns mode change refused: %s", err)
                    memory = replace(memory, last_errno=err.errno, next_attempt=now + self.config.runtime_retry_seconds)
                else:
                    memory = replace(memory, last_errno=None, next_attempt=None)
            elif action.kind is ActionKind.SIGNAL_REBOOT:
                sentinel = self.config.reboot_sentinel
                if sentinel is not None:
                    try:
                        atomic_write(sentinel, f"rdma-node-agent: {action.reason}\n".encode())
                    except OSError as err:
                        problems.append(
                            _os_problem("sentinel_failed", "write", self.config.roots.display(sentinel), err)
                        )
                        continue
                memory = replace(memory, reboot_signalled=True)
            elif action.kind is ActionKind.CLEAR_REBOOT:
                sentinel = self.config.reboot_sentinel
                if sentinel is not None:
                    try:
                        remove_file(sentinel)
                    except OSError as err:
                        if err.errno != errno.ENOENT:
                            problems.append(
                                _os_problem("sentinel_failed", "remove", self.config.roots.display(sentinel), err)
                            )
                            continue
                memory = replace(memory, reboot_signalled=False)
        return memory, problems
