"""ib_core's live netns mode: ``module/ib_core/parameters/netns_mode``.

Kernel ABI document: Documentation/ABI/testing/sysfs-module (module/<name>/parameters); format:
kernel/params.c (param_get_bool).
"""

from __future__ import annotations

import logging

from agent.discover.sysfs.base import ReaderBase
from agent.discover.sysfs.files import Errors, parsed
from agent.discover.sysfs.parse import parse_netns_mode
from agent.model import NetnsMode

logger = logging.getLogger(__name__)


class IbCoreReader(ReaderBase):
    """The ib_core parameter reader of :class:`~agent.discover.sysfs.SysfsReader`."""

    def ib_core_netns_mode(self) -> NetnsMode | None:
        """ib_core's live netns mode from ``module/ib_core/parameters/netns_mode``
        (Documentation/ABI/testing/sysfs-module). The parameter's show function (param_get_bool) prints
        the very variable ``rdma system set netns`` changes, so this follows runtime changes too. None
        when ib_core is not loaded or the file is unreadable."""
        errors = Errors()
        mode = parsed(
            f"{self.sys}/module/ib_core/parameters/netns_mode",
            parse_netns_mode,
            errors,
            "module/ib_core/parameters/netns_mode",
        )
        if errors.items:
            logger.warning("ib_core netns_mode: %s", "; ".join(errors.items))
        return mode
