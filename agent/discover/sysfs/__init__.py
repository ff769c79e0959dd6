"""sysfs: RDMA devices and their ports, the PCI functions behind netdevs and RDMA devices, the
character devices under /dev/infiniband, and ib_core's live netns mode.

Every path comes from :class:`~agent.config.HostRoots` (``roots.sysfs``, ``roots.devfs``), so in the
pod these read the host's trees and tests read fixture trees captured from real kernels
(tools/capture_sysfs.py). Reading and parsing are apart, one parser module and one reader module per
sysfs class, as prometheus/procfs does:

* ``parse``: pure ``parse_*`` helpers take the text of one attribute file and return a value, or
  raise ``ValueError`` on text the kernel never prints;
* ``files``: the low-level, safe reads (attribute files, listings, links) and per-device errors;
* ``cache``: :class:`SysfsCache`, what one snapshot keeps for the next;
* ``rdma``, ``pci``, ``chars``, ``ib_core``: the readers, methods of one :class:`SysfsReader`
  (``base``: what they share).

A missing optional file is None, not an error. One odd device never blanks the rest: errors are
kept per device (or PCI function) and returned as :class:`~agent.model.Problem` with code
``sysfs_read_error``, while every other device is still reported. A device that vanishes between
listing and reading (``rdma link delete``, a VF being removed) is left out quietly. A class directory
that exists but cannot be listed is one problem about that directory.

The readers run every cycle (30 s by default) on nodes with thousands of PCI functions, so they use
plain ``os`` calls on str paths (``os.scandir``, ``os.open``/``os.read``, ``os.readlink``) and read
less: what cannot change while a sysfs object lives is kept across cycles in a :class:`SysfsCache`
(the agent's loop holds one; ``cache=None`` reads everything, as a first cycle does). See
:class:`SysfsCache` for what is static, what is read every cycle, and why.

Kernel ABI documents: Documentation/ABI/stable/sysfs-class-infiniband (class/infiniband,
infiniband_verbs, infiniband_mad), Documentation/ABI/testing/sysfs-bus-pci (bus/pci/devices, SR-IOV),
Documentation/ABI/testing/sysfs-class-net (class/net), Documentation/ABI/testing/sysfs-module
(module/<name>/parameters). Formats: drivers/infiniband/core/sysfs.c, drivers/pci/pci-sysfs.c,
drivers/pci/iov.c.
"""

from agent.discover.sysfs.cache import STATIC_MAX_AGE_SECONDS, SysfsCache
from agent.discover.sysfs.files import READ_ERROR
from agent.discover.sysfs.parse import (
    PCI_ADDRESS,
    natural_key,
    parse_guid,
    parse_hex_id,
    parse_int,
    parse_lid,
    parse_netdev_flags,
    parse_netns_mode,
    parse_node_type,
    parse_numa_node,
    parse_pci_address,
    parse_phys_state,
    parse_port_state,
    parse_text,
)
from agent.discover.sysfs.reader import SysfsReader

__all__ = [
    "PCI_ADDRESS",
    "READ_ERROR",
    "STATIC_MAX_AGE_SECONDS",
    "SysfsCache",
    "SysfsReader",
    "natural_key",
    "parse_guid",
    "parse_hex_id",
    "parse_int",
    "parse_lid",
    "parse_netdev_flags",
    "parse_netns_mode",
    "parse_node_type",
    "parse_numa_node",
    "parse_pci_address",
    "parse_phys_state",
    "parse_port_state",
    "parse_text",
]
