"""The agent's own exceptions. Adapters raise these with ``raise … from err`` and keep the errno,
so callers can branch on EBUSY vs EPERM vs EPROTONOSUPPORT without knowing pyroute2."""

from __future__ import annotations

import errno as _errno
import os


class AgentError(Exception):
    """Base class of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """A configuration value is invalid. ``setting`` names it (flag, env var or file key)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class DiscoveryError(AgentError):
    """Reading host state failed."""


class NetlinkError(DiscoveryError):
    """A NETLINK_RDMA request failed; ``errno`` is the positive errno (EBUSY, EPERM, …)."""

    def __init__(self, op: str, errno: int, detail: str = "") -> None:
        name = _errno.errorcode.get(errno, f"errno {errno}")
        text = f"{op}: {name} ({os.strerror(errno)})"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.op = op
        self.errno = errno


class NetlinkDecodeError(DiscoveryError):
    """A reply could not be decoded (truncated or malformed message)."""


class PublishError(AgentError):
    """Publishing (labels, metrics, files) failed."""


class StageError(PublishError):
    """A loop stage could not do its job; ``state`` is the state it got to, with the problems it
    found, so they are published although the stage is recorded as failed."""

    def __init__(self, message: str, state: object) -> None:
        super().__init__(message)
        self.state = state
