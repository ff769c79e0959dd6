"""The one sysfs reader: RDMA devices, PCI functions, char devices and ib_core's netns mode."""

from __future__ import annotations

from agent.discover.sysfs.chars import CharReader
from agent.discover.sysfs.ib_core import IbCoreReader
from agent.discover.sysfs.pci import PciReader
from agent.discover.sysfs.rdma import RdmaReader


class SysfsReader(RdmaReader, PciReader, CharReader, IbCoreReader):
    """Reads the host's sysfs (and /dev/infiniband) into the model, keeping what cannot change in
    ``cache`` (:class:`~agent.discover.sysfs.SysfsCache`; None: a fresh one, so everything is read).

    ``SysfsReader(roots, cache=…)`` is cheap: ``take_snapshot`` makes one per snapshot around the
    loop's cache. Its readers, one module each: :meth:`rdma_devices` (rdma.py), :meth:`pci_functions`
    (pci.py), :meth:`char_devices` (chars.py), :meth:`ib_core_netns_mode` (ib_core.py)."""
