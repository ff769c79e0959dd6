"""What every sysfs reader shares: the trees it reads, the cache it keeps facts in, and the PCI
function behind each ``class/net`` and ``class/infiniband`` entry (their ``device`` links).

The netdevs and RDMA devices of a PCI function come from one listing of ``class/net`` and of
``class/infiniband`` (each entry's ``device`` link) rather than from listing every function's
``net/`` and ``infiniband/``: the kernel keeps both views alike, including for a netdev moved into
another network namespace, which leaves both. ``device`` links are resolved with one ``readlink``
(sysfs links are relative and point straight at the device directory), not with ``realpath``.

Kernel ABI documents: Documentation/ABI/stable/sysfs-class-infiniband (class/infiniband),
Documentation/ABI/testing/sysfs-class-net (class/net).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import Final, TypeVar

from agent.config import HostRoots
from agent.discover.sysfs.cache import Fresh, Kind, SysfsCache
from agent.discover.sysfs.files import Errors, gone, inode, mode, pci_of, real_dir, scan_class
from agent.model import Problem

T = TypeVar("T")

IB_LINKS: Final = Kind[str | None]("ib_links")  # class/infiniband/<dev>/device → PCI function
NET_LINKS: Final = Kind[str | None]("net_links")  # class/net/<netdev>/device → PCI function


def device_pci(entry: str) -> Fresh[str | None]:
    """The PCI function behind a class entry's ``device`` link, as a fact (:func:`pci_of`)."""
    return Fresh(pci_of(entry + "/device"))


def directory_facts(
    path: str, errors: Errors, read: Callable[[str], T], *, not_a_directory: str | None = None
) -> Fresh[T] | None:
    """What ``read`` makes of a sysfs object's directory (given its real path; its reads record into
    ``errors``): None when the entry is gone, or is no directory (an error under ``not_a_directory``
    when given); clean, so that it may be kept, when none of the reads failed and the object is
    still there."""
    try:
        found = mode(path)
    except FileNotFoundError:
        errors.missing = True
        return None
    if not stat.S_ISDIR(found):
        if not_a_directory is not None:
            errors.add(not_a_directory, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
        return None
    before = len(errors.items)
    facts = read(real_dir(path))
    return Fresh(facts, clean=len(errors.items) == before and not (errors.missing and gone(path)))


class ReaderBase:
    """The host's trees (``roots.sysfs``, ``roots.devfs``, from :class:`~agent.config.HostRoots`: in
    the pod the host's, in tests fixture trees) and the cache of what does not change;
    ``cache=None`` reads everything, as a first cycle does."""

    def __init__(self, roots: HostRoots, *, cache: SysfsCache | None = None) -> None:
        self.roots = roots
        self.cache = cache if cache is not None else SysfsCache()
        self.sys = str(roots.sysfs)

    def _class_links(self, base: str, kind: Kind[str | None], problems: list[Problem]) -> dict[str, str | None]:
        """Entry name → the PCI function behind it, for every entry of a class directory (``device``
        links, static per identity)."""
        entries = scan_class(self.roots, base, problems)
        links = self.cache.static_listing(kind, entries, lambda name: device_pci(f"{base}/{name}"))
        self.cache.retain(kind, entries.items())
        return links

    def _netdev_pci(self, netdev: str | None) -> str | None:
        """The PCI function of a netdev: ``class/net/<netdev>/device`` (through virtioN)."""
        if not netdev or "/" in netdev or netdev in (".", ".."):
            return None
        entry = f"{self.sys}/class/net/{netdev}"
        ino = inode(entry)
        if ino is None:  # not in this network namespace
            return None
        return self.cache.static(NET_LINKS, (netdev, ino), device_pci, entry)
