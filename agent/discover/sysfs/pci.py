"""PCI functions and their SR-IOV VFs: ``bus/pci/devices/<address>``.

Kernel ABI document: Documentation/ABI/testing/sysfs-bus-pci (bus/pci/devices, SR-IOV); formats:
drivers/pci/pci-sysfs.c, drivers/pci/iov.c.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, NamedTuple

from agent.discover.sysfs.base import IB_LINKS, NET_LINKS, ReaderBase, directory_facts
from agent.discover.sysfs.cache import Fresh, Key, Kind
from agent.discover.sysfs.files import Errors, each, exists, inode, link_name, parsed, scan
from agent.discover.sysfs.parse import natural_key, parse_hex_id, parse_int, parse_numa_node, parse_pci_address
from agent.model import PciFunction, Problem

logger = logging.getLogger(__name__)

_VIRTFN: Final = re.compile(r"^virtfn\d+$")


@dataclass(frozen=True, slots=True)
class PciFacts:
    """What does not change while a PCI function lives, and where its directory is."""

    vendor: str | None
    device: str | None
    subsystem_vendor: str | None
    subsystem_device: str | None
    pci_class: str | None
    numa_node: int | None
    physfn: str | None
    sriov: bool  # an SR-IOV PF: sriov_totalvfs/sriov_numvfs exist
    real: str  # the function's directory (devices/pci…/<address>): dynamic reads skip the bus link


class Owners(NamedTuple):
    """PCI address → the netdevs (sorted) and the RDMA devices (natural order) on that function."""

    netdevs: dict[str, tuple[str, ...]]
    rdma: dict[str, tuple[str, ...]]


class VirtfnLinks(NamedTuple):
    """A PF's ``virtfnN`` link names (in listing order) and its sriov_numvfs: while both are
    unchanged, so are the VFs the links name."""

    numvfs: int
    names: tuple[str, ...]


PCI: Final = Kind[PciFacts]("pci")
VIRTFNS: Final = Kind[tuple[str, ...]]("virtfns")  # a PF's VF addresses, by its VirtfnLinks
PCI_FUNCTIONS: Final = Kind[PciFunction]("pci_functions")  # last cycle's function, by what it was made of


class PciReader(ReaderBase):
    """The PCI function reader of :class:`~agent.discover.sysfs.SysfsReader`."""

    def pci_functions(self, extra: Iterable[str] = ()) -> tuple[tuple[PciFunction, ...], tuple[Problem, ...]]:
        """PCI functions in ``bus/pci/devices/<address>`` (Documentation/ABI/testing/sysfs-bus-pci)
        that back a netdev (``class/net/*/device``, through virtio) or an RDMA device
        (``class/infiniband/*/device``), plus ``extra``; then the PF of every VF found and all VFs of
        every PF (``virtfn*``), so VFs whose netdev moved into a pod's namespace are still listed.
        Sorted by address. Addresses that do not exist are skipped. A function's netdevs and RDMA
        devices are the class/net and class/infiniband entries whose ``device`` link names it."""
        problems: list[Problem] = []
        owners = owners_of(
            self._class_links(self.sys + "/class/net", NET_LINKS, problems),
            self._class_links(self.sys + "/class/infiniband", IB_LINKS, problems),
        )
        base = self.sys + "/bus/pci/devices"
        present: dict[str, int] | None
        try:
            present = scan(base)
        except OSError:
            present = None  # cannot list: look each address up
        keys: set[Key] = set()
        agreed: set[Key] = set()  # PFs whose virtfnN links agreed with sriov_numvfs

        def read(address: str, errors: Errors) -> PciFunction | None:
            path = f"{base}/{address}"
            ino = present.get(address) if present is not None else inode(path)
            if ino is None:
                logger.debug("PCI function %s: no %s", address, path)
                return None
            key = (address, ino)
            keys.add(key)
            return self._pci_function(path, key, errors, owners, agreed)

        known = owners.netdevs.keys() | owners.rdma.keys()  # PCI addresses already (pci_of checked them)
        queue = sorted(known | {a for a in extra if a not in known and parse_pci_address(a)})
        seen = set(queue)
        functions: list[PciFunction] = []
        function_problems: list[Problem] = []
        # `queue` grows while it is walked: a VF brings its PF, and a PF all of its VFs (one closure).
        for function in each("PCI function", queue, lambda a: f"{base}/{a}", read, function_problems):
            functions.append(function)
            for found in (function.physfn, *function.virtfns) if function.physfn or function.virtfns else ():
                if found and found not in seen and parse_pci_address(found):
                    seen.add(found)
                    queue.append(found)
        self.cache.retain(PCI, keys)
        self.cache.retain(PCI_FUNCTIONS, keys)
        self.cache.retain(VIRTFNS, agreed)
        problems.extend(sorted(function_problems, key=lambda p: p.subject or ""))
        functions.sort(key=attrgetter("address"))
        return tuple(functions), tuple(problems)

    def _pci_function(
        self, path: str, key: Key, errors: Errors, owners: Owners, agreed: set[Key]
    ) -> PciFunction | None:
        """One ``bus/pci/devices/<address>``: ids (``"0x%04x\\n"``), class, driver, NUMA node, SR-IOV
        (``sriov_totalvfs``/``sriov_numvfs`` exist on capable PFs only; ``physfn``; ``virtfnN``)."""
        address = key[0]
        facts = self.cache.static(PCI, key, _pci_facts, path, errors)
        if facts is None:
            return None
        driver = link_name(facts.real + "/driver", errors)
        totalvfs = numvfs = None
        vfs: tuple[str, ...] = ()
        if facts.sriov:
            totalvfs = parsed(facts.real + "/sriov_totalvfs", parse_int, errors, "sriov_totalvfs")
            numvfs = parsed(facts.real + "/sriov_numvfs", parse_int, errors, "sriov_numvfs")
            vfs = self._virtfns(facts.real, key, numvfs, agreed)
        netdevs, rdma = owners.netdevs.get(address, ()), owners.rdma.get(address, ())
        inputs = (facts, driver, totalvfs, numvfs, vfs, netdevs, rdma)
        last = self.cache.recall(PCI_FUNCTIONS, key, inputs)
        if last is not None:  # nothing in it changed: last cycle's object again (fewer to build)
            return last
        function = PciFunction(
            address=address,
            vendor=facts.vendor,
            device=facts.device,
            subsystem_vendor=facts.subsystem_vendor,
            subsystem_device=facts.subsystem_device,
            pci_class=facts.pci_class,
            driver=driver,
            numa_node=facts.numa_node,
            netdevs=netdevs,
            rdma_devices=rdma,
            sriov_totalvfs=totalvfs,
            sriov_numvfs=numvfs,
            physfn=facts.physfn,
            virtfns=vfs,
        )
        self.cache.remember(PCI_FUNCTIONS, key, inputs, function)
        return function

    def _virtfns(self, path: str, key: Key, numvfs: int | None, agreed: set[Key]) -> tuple[str, ...]:
        """A PF's VF addresses from its ``virtfnN`` links, by N (virtfn10 after virtfn9). The links are
        read again only when their names or sriov_numvfs changed; a listing that does not agree with
        sriov_numvfs (VFs being added or removed right now) is not kept."""
        try:
            with os.scandir(path) as entries:
                names = tuple(e.name for e in entries if e.name.startswith("virtfn") and _VIRTFN.match(e.name))
        except OSError:
            return ()
        if numvfs is None:
            return _vf_addresses(path, names)
        links = VirtfnLinks(numvfs, names)
        vfs = self.cache.recall(VIRTFNS, key, links)
        if vfs is None:
            vfs = _vf_addresses(path, names)
        if len(vfs) == numvfs:
            self.cache.remember(VIRTFNS, key, links, vfs)
            agreed.add(key)
        return vfs


def _vf_addresses(path: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(vf for link in sorted(names, key=natural_key) if (vf := link_name(f"{path}/{link}")))


def _pci_facts(path: str, errors: Errors) -> Fresh[PciFacts] | None:
    """What does not change while a PCI function lives, and where its directory is
    (:func:`directory_facts`)."""

    def read(real: str) -> PciFacts:
        return PciFacts(
            vendor=parsed(real + "/vendor", parse_hex_id, errors, "vendor"),
            device=parsed(real + "/device", parse_hex_id, errors, "device"),
            subsystem_vendor=parsed(real + "/subsystem_vendor", parse_hex_id, errors, "subsystem_vendor"),
            subsystem_device=parsed(real + "/subsystem_device", parse_hex_id, errors, "subsystem_device"),
            pci_class=parsed(real + "/class", parse_hex_id, errors, "class"),
            numa_node=parsed(real + "/numa_node", parse_numa_node, errors, "numa_node"),
            physfn=link_name(real + "/physfn"),
            sriov=exists(real + "/sriov_totalvfs") or exists(real + "/sriov_numvfs"),
            real=real,
        )

    return directory_facts(path, errors, read)


def owners_of(by_netdev: dict[str, str | None], by_rdma: dict[str, str | None]) -> Owners:
    """Which netdevs and RDMA devices sit on which PCI function, from the class listings' ``device``
    links: netdevs sorted, RDMA devices in natural order."""
    return Owners(_grouped(by_netdev), _grouped(by_rdma, natural_key))


def _grouped(links: dict[str, str | None], key: Callable[[str], Any] | None = None) -> dict[str, tuple[str, ...]]:
    """PCI function → the entries whose link names it, sorted (by ``key``). Most functions have one
    of each, and one-name groups are not sorted."""
    groups: dict[str, tuple[str, ...]] = {}
    for name, pci in links.items():
        if pci:
            group = groups.get(pci)
            groups[pci] = (name,) if group is None else (*group, name)
    for pci, names in groups.items():
        if len(names) > 1:
            groups[pci] = tuple(sorted(names, key=key))
    return groups
