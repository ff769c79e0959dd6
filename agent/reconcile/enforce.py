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
from agent.hostfiles import atomic_write, read_text, remove_file
from agent.model import Action, ActionKind, Problem
from agent.reconcile.plan import EnforcerMemory, managed_file_content

logger = logging.getLogger(__name__)

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
