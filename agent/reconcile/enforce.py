"""Enforce: carry out planned actions — the modprobe.d file, the runtime mode over RDMA netlink, the
reboot sentinel. The only module that acts on the host's RDMA state; files go through
:mod:`agent.hostfiles` (atomic, no write when unchanged). Failures become problems with the errno in
words; the old file stays intact.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import replace

from agent.config import Config
from agent.discover.rdma_netlink import RdmaNetlink
from agent.errors import NetlinkError
from agent.hostfiles import atomic_write, read_file, remove_file
from agent.hostio import Refused, decode_text
from agent.model import Action, ActionKind, NetnsMode, Problem
from agent.reconcile.plan import EnforcerMemory, managed_file_content

logger = logging.getLogger(__name__)

# The reboot sentinel's first line. The agent removes a sentinel only when it starts with this: the
# same path may be another tool's (kured's default /var/run/reboot-required is unattended-upgrades').
SENTINEL_MARK = b"# rdma-node-agent: reboot required for the RDMA netns mode\n"


def is_our_sentinel(data: bytes) -> bool:
    return data.startswith(SENTINEL_MARK)


def sentinel_content(reason: str) -> bytes:
    return SENTINEL_MARK + f"# {' '.join(reason.split())}\n".encode()


def _os_problem(code: str, what: str, path: str, err: OSError) -> Problem:
    if isinstance(err, Refused):
        return Problem(code=code, message=f"will not {what} {path}: it {err.strerror}", subject=path)
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

    def read_managed_file(self) -> tuple[str | None, str | None]:
        """(the managed file's text or None when absent, why it cannot be used or None). The file
        is read as it would be written (inside the host root, never through a symlink, regular
        files only, at most 1 MiB, UTF-8): one the agent cannot read is one it must not rewrite."""
        try:
            data = read_file(self.config.roots.root, self.managed_file)
            return (decode_text(data, self.managed_display) if data is not None else None), None
        except Refused as err:
            return None, f"{self.managed_display} {err.strerror}"
        except OSError as err:
            return None, f"cannot read {self.managed_display}: {err.strerror or err}"

    def _sentinel(self) -> bytes | None:
        sentinel = self.config.reboot_sentinel
        return read_file(self.config.roots.root, sentinel) if sentinel is not None else None

    def initial_memory(self) -> EnforcerMemory:
        """A reboot was signalled when the agent's own sentinel is there (a restart keeps it)."""
        try:
            data = self._sentinel()
        except OSError as err:
            logger.warning("cannot read the reboot sentinel: %s", err)
            data = None
        return EnforcerMemory(reboot_signalled=data is not None and is_our_sentinel(data))

    def apply(
        self, actions: Iterable[Action], memory: EnforcerMemory, now: float
    ) -> tuple[EnforcerMemory, list[Problem]]:
        """Carry out ``actions`` in order; the memory after them and the problems they met."""
        problems: list[Problem] = []
        for action in actions:
            logger.info("enforce: %s (%s)", action.kind.value, action.reason)
            if action.kind is ActionKind.SET_RUNTIME_MODE and action.mode is not None:
                memory = self._set_runtime(action.mode, memory, now)
                continue
            if action.kind is ActionKind.WRITE_PERSISTED and action.mode is not None:
                problem = self._persist(action.mode)
            elif action.kind in (ActionKind.SIGNAL_REBOOT, ActionKind.CLEAR_REBOOT):
                signal = action.kind is ActionKind.SIGNAL_REBOOT
                problem = self._signal(action.reason) if signal else self._clear()
                if problem is None:
                    memory = replace(memory, reboot_signalled=signal)
            else:
                continue
            if problem is not None:
                problems.append(problem)
        return memory, problems

    def _persist(self, mode: NetnsMode) -> Problem | None:
        """Rewrite the managed file for ``mode`` (atomic; nothing when it already says so)."""
        current, error = self.read_managed_file()
        if error is not None:  # changed since it was planned: the next plan reports it
            return Problem(code="persist_failed", message=error, subject=self.managed_display)
        try:
            content = managed_file_content(current, mode)
            atomic_write(self.config.roots.root, self.managed_file, content.encode(), hook=self._write_hook)
        except OSError as err:
            return _os_problem("persist_failed", "write", self.managed_display, err)
        return None

    def _set_runtime(self, mode: NetnsMode, memory: EnforcerMemory, now: float) -> EnforcerMemory:
        """One SYS_SET; a refusal is remembered (errno, and no retry before the backoff ends)."""
        memory = replace(memory, runtime_attempts=memory.runtime_attempts + 1, last_attempt=now)
        try:
            with self._netlink() as sock:
                sock.set_netns_mode(mode)
        except NetlinkError as err:
            logger.warning("runtime netns mode change refused: %s", err)
            return replace(memory, last_errno=err.errno, next_attempt=now + self.config.runtime_retry_seconds)
        return replace(memory, last_errno=None, next_attempt=None)

    def _signal(self, reason: str) -> Problem | None:
        """Write the sentinel, unless another tool's reboot request is already at that path (then a
        reboot is asked for already, and that file is not the agent's to rewrite or remove)."""
        sentinel = self.config.reboot_sentinel
        if sentinel is None:
            return None
        shown = self.config.roots.display(sentinel)
        try:
            current = self._sentinel()
            if current is not None and not is_our_sentinel(current):
                logger.info("%s exists and is not the agent's: a reboot is already requested; leaving it", shown)
                return None
            atomic_write(self.config.roots.root, sentinel, sentinel_content(reason))
        except OSError as err:
            return _os_problem("sentinel_failed", "write", shown, err)
        return None

    def _clear(self) -> Problem | None:
        """Remove the sentinel if it is the agent's own; another tool's file is left alone."""
        sentinel = self.config.reboot_sentinel
        if sentinel is None:
            return None
        try:
            if not remove_file(self.config.roots.root, sentinel, ours=is_our_sentinel):
                logger.debug("no reboot sentinel of the agent's at %s", sentinel)
        except OSError as err:
            if err.errno != errno.ENOENT:
                return _os_problem("sentinel_failed", "remove", self.config.roots.display(sentinel), err)
        return None
