"""RDMA devices and their ports: ``class/infiniband/<dev>``.

Kernel ABI document: Documentation/ABI/stable/sysfs-class-infiniband (class/infiniband); formats:
drivers/infiniband/core/sysfs.c. The netdev's ifindex comes from ``class/net/<netdev>/ifindex``
(Documentation/ABI/testing/sysfs-class-net).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

from agent.discover.sysfs.base import IB_LINKS, ReaderBase, device_pci, directory_facts
from agent.discover.sysfs.cache import Fresh, Key, Kind
from agent.discover.sysfs.files import (
    Errors,
    each,
    listing,
    parsed,
    read_attr,
    scan_class,
)
from agent.discover.sysfs.parse import (
    natural_key,
    parse_guid,
    parse_int,
    parse_lid,
    parse_netdev_flags,
    parse_node_type,
    parse_phys_state,
    parse_port_state,
    parse_text,
)
from agent.model import Problem, RdmaDevice, RdmaPort, link_is_up

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PortFacts(NamedTuple):
    """What does not change while a port lives: its number and link layer, and its directory."""

    number: int
    link_layer: str | None
    path: str  # <the device's real directory>/ports/<number>


@dataclass(frozen=True, slots=True)
class RdmaFacts:
    """What does not change while an RDMA device lives, and where its directory is."""

    node_type: str | None
    node_guid: str | None
    sys_image_guid: str | None
    fw_version: str | None
    hca_type: str | None  # driver attributes (mlx5 has them, rxe not): None where absent
    board_id: str | None
    ports: tuple[PortFacts, ...]
    real: str  # the device's directory (devices/…/infiniband/<dev>): dynamic reads skip the class link


IFF_UP: Final = 0x1  # include/uapi/linux/if.h
RDMA: Final = Kind[RdmaFacts]("rdma")
RDMA_DEVICES: Final = Kind[RdmaDevice]("rdma_devices")  # last cycle's device, by the facts it was made of


class RdmaReader(ReaderBase):
    """The RDMA device reader of :class:`~agent.discover.sysfs.SysfsReader`."""

    def rdma_devices(
        self, netlink: Mapping[tuple[str, int], RdmaPort] | None = None
    ) -> tuple[tuple[RdmaDevice, ...], tuple[Problem, ...]]:
        """Every RDMA device in ``class/infiniband/<dev>`` (Documentation/ABI/stable/
        sysfs-class-infiniband): node type and GUIDs, firmware, ports, and the PCI function behind it.

        ``index`` is left None (only netlink knows it) and ``char_devices`` empty (the snapshot joins
        :meth:`~agent.discover.sysfs.SysfsReader.char_devices`). No class/infiniband at all (ib_core
        not loaded) gives no devices and no problem.

        ``netlink``: the ports netlink reported, by (device name, port number). Such a port is returned
        as the snapshot merges it: netlink's port with sysfs's link_layer and rate, and with sysfs's
        netdev and ifindex only when netlink named no netdev; what netlink gave is not read."""
        base = self.sys + "/class/infiniband"
        problems: list[Problem] = []
        entries = scan_class(self.roots, base, problems)
        if not entries:
            logger.debug("%s: no RDMA devices", base)
        hints = netlink if netlink is not None else {}

        def read(name: str, errors: Errors) -> RdmaDevice | None:
            return self._rdma_device(f"{base}/{name}", (name, entries[name]), hints, errors)

        devices = tuple(each("RDMA device", sorted(entries, key=natural_key), lambda n: f"{base}/{n}", read, problems))
        for kind in (RDMA, IB_LINKS, RDMA_DEVICES):
            self.cache.retain(kind, entries.items())
        return devices, tuple(problems)

    def _rdma_device(
        self, path: str, key: Key, hints: Mapping[tuple[str, int], RdmaPort], errors: Errors
    ) -> RdmaDevice | None:
        """One ``class/infiniband/<dev>``; None when the directory is gone. Last cycle's objects are
        given again when nothing in them changed."""
        name = key[0]
        facts = self.cache.static(RDMA, key, self._rdma_facts, path, name, errors)
        if facts is None:
            return None
        pci = self.cache.static(IB_LINKS, key, device_pci, path)
        last = self.cache.recall(RDMA_DEVICES, key, facts)
        parent = facts.real + "/parent" if len(facts.ports) == 1 else None  # rxe/siw on 6.x: the netdev
        olds = last.ports if last is not None else (None,) * len(facts.ports)
        ports = tuple(
            [
                self._port(port, parent, hints.get((name, port.number)), errors, old)
                for port, old in zip(facts.ports, olds, strict=True)
            ]
        )
        if pci is None:
            pci = next((a for a in (self._netdev_pci(p.netdev) for p in ports) if a), None)
        if last is not None and last.pci_address == pci and ports == last.ports:  # the same port objects, mostly
            return last
        device = RdmaDevice(
            name=name,
            node_type=facts.node_type,
            node_guid=facts.node_guid,
            sys_image_guid=facts.sys_image_guid,
            fw_version=facts.fw_version,
            hca_type=facts.hca_type,
            board_id=facts.board_id,
            port_count=len(ports),
            ports=ports,
            pci_address=pci,
        )
        self.cache.remember(RDMA_DEVICES, key, facts, device)
        return device

    def _rdma_facts(self, path: str, name: str, errors: Errors) -> Fresh[RdmaFacts] | None:
        """What does not change while an RDMA device lives: node_type, GUIDs, fw_ver, hca_type,
        board_id, ``ports/<n>/link_layer``, and where its directory is (:func:`directory_facts`; a
        file where the device directory should be is an error)."""

        def read(real: str) -> RdmaFacts:
            ports = tuple(
                PortFacts(
                    int(p),
                    parsed(f"{real}/ports/{p}/link_layer", parse_text, errors, f"ports/{p}/link_layer"),
                    f"{real}/ports/{int(p)}",  # by number, as the port is known (ports/01 is port 1)
                )
                for p in listing(real + "/ports")
                if p.isascii() and p.isdigit()
            )
            return RdmaFacts(
                node_type=parsed(real + "/node_type", parse_node_type, errors, "node_type"),
                node_guid=parsed(real + "/node_guid", parse_guid, errors, "node_guid"),
                sys_image_guid=parsed(real + "/sys_image_guid", parse_guid, errors, "sys_image_guid"),
                fw_version=parsed(real + "/fw_ver", parse_text, errors, "fw_ver"),
                hca_type=parsed(real + "/hca_type", parse_text, errors, "hca_type", optional=True),
                board_id=parsed(real + "/board_id", parse_text, errors, "board_id", optional=True),
                ports=ports,
                real=real,
            )

        return directory_facts(path, errors, read, not_a_directory=name)

    def _port(
        self, port: PortFacts, parent: str | None, netlink: RdmaPort | None, errors: Errors, old: RdmaPort | None
    ) -> RdmaPort:
        """``class/infiniband/<dev>/ports/<n>/``: state, phys_state, rate, lid and sm_lid (InfiniBand
        only), and the netdev of GID 0 (``gid_attrs/ndevs/0``, which fails with EINVAL while the entry
        is unused; then the device's ``parent`` file, given for single-port devices: rxe/siw on 6.x
        print their netdev's current name there) — what netlink already gave is not read again.
        The link layer is the device's static fact; ``old`` is last cycle's port, given back when
        nothing changed."""
        path, where = port.path, f"ports/{port.number}"
        if netlink is None:
            state = parsed(path + "/state", parse_port_state, errors, f"{where}/state")
            phys = parsed(path + "/phys_state", parse_phys_state, errors, f"{where}/phys_state")
            state_code, state_name = state if state else (None, None)
            phys_code, phys_name = phys if phys else (None, None)
        else:
            state_code, state_name = netlink.state_code, netlink.state
            phys_code, phys_name = netlink.physical_state_code, netlink.physical_state
        if netlink is None or netlink.netdev is None:
            ndev = f"{where}/gid_attrs/ndevs/0"
            ndev_text = read_attr(path + "/gid_attrs/ndevs/0", errors, ndev, einval_is_empty=True)
            netdev = parse_text(ndev_text) if ndev_text is not None else None
            if not netdev and parent is not None:
                netdev = parsed(parent, parse_text, errors, "parent")
            netdev_index = None  # read below, after the port's own files
        else:
            netdev, netdev_index = netlink.netdev, netlink.netdev_index
        rate = parsed(path + "/rate", parse_text, errors, f"{where}/rate")
        if netlink is None:
            infiniband = port.link_layer == "InfiniBand"
            lid = parsed(path + "/lid", parse_lid, errors, f"{where}/lid") if infiniband else None
            sm_lid = parsed(path + "/sm_lid", parse_lid, errors, f"{where}/sm_lid") if infiniband else None
        else:
            lid, sm_lid = netlink.lid, netlink.sm_lid
        if (netlink is None or netlink.netdev is None) and netdev:
            netdev_index = self._netdev_index(netdev, errors, where)
        admin_up = None
        if netdev and not link_is_up(state_name, phys_name):  # then it decides if the port is meant to be up
            admin_up = self._netdev_admin_up(netdev, errors, where)
        if old is not None and (
            old.port,
            old.state,
            old.state_code,
            old.physical_state,
            old.physical_state_code,
            old.link_layer,
            old.rate,
            old.lid,
            old.sm_lid,
            old.netdev,
            old.netdev_index,
            old.netdev_admin_up,
        ) == (
            port.number,
            state_name,
            state_code,
            phys_name,
            phys_code,
            port.link_layer,
            rate,
            lid,
            sm_lid,
            netdev,
            netdev_index,
            admin_up,
        ):
            return old
        return RdmaPort(
            port=port.number,
            state=state_name,
            state_code=state_code,
            physical_state=phys_name,
            physical_state_code=phys_code,
            link_layer=port.link_layer,
            rate=rate,
            lid=lid,
            sm_lid=sm_lid,
            netdev=netdev,
            netdev_index=netdev_index,
            netdev_admin_up=admin_up,
        )

    def _netdev_admin_up(self, netdev: str, errors: Errors, where: str) -> bool | None:
        """``class/net/<netdev>/flags`` & IFF_UP: the netdev is administratively up (someone configured
        it, so a link is expected); None when the netdev is not in this network namespace."""
        flags = self._netdev_attr(netdev, "flags", parse_netdev_flags, errors, where)
        return None if flags is None else bool(flags & IFF_UP)

    def _netdev_index(self, netdev: str, errors: Errors, where: str) -> int | None:
        """``class/net/<netdev>/ifindex``; None when the netdev is not in this network namespace (moved
        into a pod in exclusive mode)."""
        return self._netdev_attr(netdev, "ifindex", parse_int, errors, where)

    def _netdev_attr(self, netdev: str, name: str, parse: Callable[[str], T], errors: Errors, where: str) -> T | None:
        """One ``class/net/<netdev>/<name>`` attribute (Documentation/ABI/testing/sysfs-class-net), for
        the port at ``where``."""
        return parsed(f"{self.sys}/class/net/{netdev}/{name}", parse, errors, f"{where}: class/net/{netdev}/{name}")
