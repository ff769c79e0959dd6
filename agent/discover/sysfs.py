"""sysfs: RDMA devices and their ports, the PCI functions behind netdevs and RDMA devices, the
character devices under /dev/infiniband, and ib_core's live netns mode.

Every path comes from :class:`~agent.config.HostRoots` (``roots.sysfs``, ``roots.devfs``), so in the
pod these read the host's trees and tests read fixture trees captured from real kernels
(tools/capture_sysfs.py). Reading and parsing are apart: ``parse_*`` take the text of one attribute
file and return a value, or raise ``ValueError`` on text the kernel never prints; ``read_*`` walk the
tree. A missing optional file is None, not an error. One odd device never blanks the rest: errors are
kept per device (or PCI function) and returned as :class:`~agent.model.Problem` with code
``sysfs_read_error``, while every other device is still reported. A device that vanishes between
listing and reading (``rdma link delete``, a VF being removed) is left out quietly.

Kernel ABI documents: Documentation/ABI/stable/sysfs-class-infiniband (class/infiniband,
infiniband_verbs, infiniband_mad), Documentation/ABI/testing/sysfs-bus-pci (bus/pci/devices, SR-IOV),
Documentation/ABI/testing/sysfs-class-net (class/net), Documentation/ABI/testing/sysfs-module
(module/<name>/parameters). Formats: drivers/infiniband/core/sysfs.c, drivers/pci/pci-sysfs.c,
drivers/pci/iov.c.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Final, TypeVar

from agent.config import HostRoots
from agent.model import (
    CharDevice,
    NetnsMode,
    PciFunction,
    Problem,
    RdmaDevice,
    RdmaPort,
    node_type_name,
    phys_state_name,
    port_state_name,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

READ_ERROR: Final = "sysfs_read_error"
# pci_name(): "%04x:%02x:%02x.%d"; the domain can be wider than 4 digits (Intel VMD: 10000:e1:00.0)
PCI_ADDRESS: Final = re.compile(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")

_STATE: Final = re.compile(r"^(-?\d+): ?(.*)$")  # "%d: %s\n" (state, phys_state, node_type)
_HEX_ID: Final = re.compile(r"^(?:0x)?([0-9a-fA-F]+)$")
_GUID: Final = re.compile(r"^[0-9a-fA-F]{4}(?::[0-9a-fA-F]{4}){3}$")
_VIRTIO: Final = re.compile(r"^virtio\d+$")
_VIRTFN: Final = re.compile(r"^virtfn\d+$")
_CHAR_KINDS: Final = {"uverbs": "infiniband_verbs", "umad": "infiniband_mad", "issm": "infiniband_mad"}
_CHAR_NAME: Final = re.compile(r"^(uverbs|umad|issm)(\d+)$")


# --- parsers: text of one attribute file -> value -------------------------------------------------


def _one_line(text: str) -> str:
    return text.rstrip("\n").strip()


def _numbered(text: str, what: str) -> int:
    match = _STATE.match(_one_line(text))
    if match is None:
        raise ValueError(f"{what}: expected 'N: NAME', got {text!r}")
    return int(match.group(1))


def parse_port_state(text: str) -> tuple[int, str]:
    """``ports/N/state`` ("4: ACTIVE\\n") → (4, "ACTIVE"). The name is iproute2's for the number
    (kernel: ``"%d: %s\\n"``, UNKNOWN beyond ACTIVE_DEFER)."""
    code = _numbered(text, "port state")
    return code, port_state_name(code)


def parse_phys_state(text: str) -> tuple[int, str]:
    """``ports/N/phys_state`` ("5: LinkUp\\n") → (5, "LINK_UP"): sysfs spells names in IBTA style
    ("LinkUp", "Phy Test"), netlink users see iproute2's, so the name comes from the number."""
    code = _numbered(text, "physical state")
    return code, phys_state_name(code)


def parse_node_type(text: str) -> str:
    """``node_type`` ("1: CA\\n") → "ca", iproute2's spelling of the number."""
    return node_type_name(_numbered(text, "node type"))


def parse_hex_id(text: str) -> str:
    """PCI ``vendor``/``device``/``subsystem_*``/``class`` ("0x15b3\\n") → "15b3" (lower case)."""
    match = _HEX_ID.match(_one_line(text))
    if match is None:
        raise ValueError(f"expected a hexadecimal id such as 0x15b3, got {text!r}")
    return match.group(1).lower()


def parse_guid(text: str) -> str:
    """``node_guid``/``sys_image_guid`` ("d421:2dff:fe34:4699\\n", ``%04x:%04x:%04x:%04x``)."""
    value = _one_line(text)
    if _GUID.match(value) is None:
        raise ValueError(f"expected a GUID such as 0c42:a103:00ab:12cd, got {text!r}")
    return value.lower()


def parse_int(text: str) -> int:
    """A decimal attribute ("7\\n"): ``sriov_totalvfs``, ``ifindex``, ``port``."""
    value = _one_line(text)
    if not re.fullmatch(r"-?\d+", value):
        raise ValueError(f"expected a decimal number, got {text!r}")
    return int(value)


def parse_numa_node(text: str) -> int | None:
    """PCI ``numa_node`` ("%d\\n"); -1 (no NUMA information) → None."""
    value = parse_int(text)
    return None if value < 0 else value


def parse_lid(text: str) -> int:
    """``ports/N/lid`` and ``sm_lid`` ("0x%x\\n") → int."""
    value = _one_line(text)
    if not re.fullmatch(r"0x[0-9a-fA-F]+", value):
        raise ValueError(f"expected a LID such as 0x12, got {text!r}")
    return int(value, 16)


def parse_text(text: str) -> str | None:
    """A one-line string attribute (``fw_ver``, ``link_layer``, ``rate``, ``ibdev``, ``parent``);
    an empty line (``fw_ver`` of a driver without firmware, e.g. rxe) → None."""
    value = _one_line(text)
    return value or None


def parse_netns_mode(text: str) -> NetnsMode:
    """``module/ib_core/parameters/netns_mode``: a bool parameter, printed by param_get_bool as
    "Y" (shared) or "N" (exclusive)."""
    value = _one_line(text)
    if value in ("Y", "y", "1"):
        return NetnsMode.SHARED
    if value in ("N", "n", "0"):
        return NetnsMode.EXCLUSIVE
    raise ValueError(f"expected Y or N, got {text!r}")


def parse_pci_address(name: str) -> str | None:
    """A sysfs device directory name that is a PCI function (``DDDD:BB:DD.F``), else None."""
    return name if PCI_ADDRESS.match(name) else None


def natural_key(name: str) -> tuple[tuple[int, str], ...]:
    """Sort key that puts virtfn10 after virtfn9 and uverbs10 after uverbs2. Only ASCII digit runs
    count as numbers: a netdev may be named ``eth0²`` and '²'.isdigit() is true, but int() refuses it."""
    return tuple((int(p), "") if p.isascii() and p.isdecimal() else (-1, p) for p in re.split(r"([0-9]+)", name) if p)


# --- reading helpers --------------------------------------------------------------------------------


class _Errors:
    """Read errors of one device, gathered into one Problem so one bad file costs one line."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, what: str, err: Exception) -> None:
        if isinstance(err, OSError):
            name = errno.errorcode.get(err.errno or 0, "error")
            self.items.append(f"{what}: {name} ({err.strerror})")
        else:
            self.items.append(f"{what}: {err}")

    def problem(self, subject: str, kind: str) -> Problem | None:
        if not self.items:
            return None
        return Problem(
            code=READ_ERROR,
            message=f"cannot read sysfs for {kind} {subject}: " + "; ".join(self.items),
            subject=subject,
        )


def _read(path: Path, errors: _Errors, what: str, *, einval_is_empty: bool = False) -> str | None:
    """Text of one attribute file; None when it does not exist. Other failures are recorded."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    except OSError as err:
        if einval_is_empty and err.errno == errno.EINVAL:
            return None
        errors.add(what, err)
        return None


def _parsed(path: Path, parse: Callable[[str], T], errors: _Errors, what: str) -> T | None:
    text = _read(path, errors, what)
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as err:
        errors.add(what, err)
        return None


def _list(path: Path) -> list[str]:
    """Entry names, naturally sorted; [] when the directory does not exist (not an error)."""
    try:
        return sorted((p.name for p in path.iterdir()), key=natural_key)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _list_class(roots: HostRoots, path: Path, problems: list[Problem]) -> list[str]:
    """A top-level directory's entries (``class/infiniband``, ``class/net``); a directory that exists
    but cannot be listed is a problem about the whole class, not a crash."""
    try:
        return _list(path)
    except OSError as err:
        shown = roots.display(path)
        problems.append(Problem(code=READ_ERROR, message=f"cannot list {shown}: {err.strerror}", subject=shown))
        return []


def _link_name(path: Path) -> str | None:
    """Basename of a symlink's target (``driver``, ``physfn``), or None when there is no link."""
    try:
        return path.readlink().name
    except OSError:  # no such file, or not a symlink (EINVAL)
        return None


def _pci_of(device_link: Path) -> str | None:
    """The PCI function behind a ``device`` link: itself when it resolves to one, or its parent when
    it resolves to a virtio device (virtio-net: netdev → virtioN → PCI function). Other buses (USB,
    auxiliary) give None: their nearest PCI ancestor is a controller, not the NIC."""
    if not device_link.is_symlink():
        return None
    try:
        target = device_link.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    if parse_pci_address(target.name):
        return target.name
    if _VIRTIO.match(target.name) and parse_pci_address(target.parent.name):
        return target.parent.name
    return None


def _gone(path: Path) -> bool:
    return not path.exists()


# --- RDMA devices -----------------------------------------------------------------------------------


def read_rdma_devices(roots: HostRoots) -> tuple[tuple[RdmaDevice, ...], tuple[Problem, ...]]:
    """Every RDMA device in ``class/infiniband/<dev>`` (Documentation/ABI/stable/
    sysfs-class-infiniband): node type and GUIDs, firmware, ports, and the PCI function behind it.

    ``index`` is left None (only netlink knows it) and ``char_devices`` empty (the snapshot joins
    :func:`read_char_devices`). No class/infiniband at all (ib_core not loaded) gives no devices
    and no problem."""
    base = roots.sysfs / "class" / "infiniband"
    if not base.is_dir():
        logger.debug("%s: no such directory, no RDMA devices", base)
        return (), ()
    devices: list[RdmaDevice] = []
    problems: list[Problem] = []
    for name in _list_class(roots, base, problems):
        path = base / name
        errors = _Errors()
        try:
            device = _read_rdma_device(roots, path, name, errors)
        except OSError as err:
            errors.add(name, err)
            device = None
        if _gone(path):  # deleted after the listing (rdma link delete): not a problem
            logger.debug("RDMA device %s vanished while it was read", name)
            continue
        problem = errors.problem(name, "RDMA device")
        if problem is not None:
            problems.append(problem)
        if device is not None:
            devices.append(device)
    return tuple(devices), tuple(problems)


def _read_rdma_device(roots: HostRoots, path: Path, name: str, errors: _Errors) -> RdmaDevice | None:
    """One ``class/infiniband/<dev>``; None when the directory is gone."""
    if not path.is_dir():
        if path.exists():  # a file where the device directory should be
            errors.add(name, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
        return None
    parent = _parsed(path / "parent", parse_text, errors, "parent")  # rxe/siw on 6.x: the netdev
    port_names = [p for p in _list(path / "ports") if p.isdigit()]
    ports = tuple(
        _read_port(roots, path / "ports" / p, int(p), parent if len(port_names) == 1 else None, errors)
        for p in port_names
    )
    pci = _pci_of(path / "device")
    if pci is None:
        pci = next((a for a in (_netdev_pci(roots, p.netdev) for p in ports) if a), None)
    return RdmaDevice(
        name=name,
        node_type=_parsed(path / "node_type", parse_node_type, errors, "node_type"),
        node_guid=_parsed(path / "node_guid", parse_guid, errors, "node_guid"),
        sys_image_guid=_parsed(path / "sys_image_guid", parse_guid, errors, "sys_image_guid"),
        fw_version=_parsed(path / "fw_ver", parse_text, errors, "fw_ver"),
        port_count=len(ports),
        ports=ports,
        pci_address=pci,
    )


def _read_port(roots: HostRoots, path: Path, number: int, parent: str | None, errors: _Errors) -> RdmaPort:
    """``class/infiniband/<dev>/ports/<n>/``: state, phys_state, link_layer, rate, lid and sm_lid
    (InfiniBand only), and the netdev of GID 0 (``gid_attrs/ndevs/0``, which fails with EINVAL
    while the entry is unused; then the device's ``parent`` for single-port soft devices)."""
    where = f"ports/{number}"
    state = _parsed(path / "state", parse_port_state, errors, f"{where}/state")
    phys = _parsed(path / "phys_state", parse_phys_state, errors, f"{where}/phys_state")
    link_layer = _parsed(path / "link_layer", parse_text, errors, f"{where}/link_layer")
    infiniband = link_layer == "InfiniBand"
    ndev_text = _read(path / "gid_attrs" / "ndevs" / "0", errors, f"{where}/gid_attrs/ndevs/0",
                      einval_is_empty=True)  # fmt: skip
    netdev = (parse_text(ndev_text) if ndev_text is not None else None) or parent
    return RdmaPort(
        port=number,
        state=state[1] if state else None,
        state_code=state[0] if state else None,
        physical_state=phys[1] if phys else None,
        physical_state_code=phys[0] if phys else None,
        link_layer=link_layer,
        rate=_parsed(path / "rate", parse_text, errors, f"{where}/rate"),
        lid=_parsed(path / "lid", parse_lid, errors, f"{where}/lid") if infiniband else None,
        sm_lid=_parsed(path / "sm_lid", parse_lid, errors, f"{where}/sm_lid") if infiniband else None,
        netdev=netdev,
        netdev_index=_netdev_index(roots, netdev, errors, where) if netdev else None,
    )


def _netdev_index(roots: HostRoots, netdev: str, errors: _Errors, where: str) -> int | None:
    """``class/net/<netdev>/ifindex`` (Documentation/ABI/testing/sysfs-class-net); None when the
    netdev is not in this network namespace (moved into a pod in exclusive mode)."""
    return _parsed(roots.sysfs / "class" / "net" / netdev / "ifindex", parse_int, errors,
                   f"{where}: class/net/{netdev}/ifindex")  # fmt: skip


def _netdev_pci(roots: HostRoots, netdev: str | None) -> str | None:
    """The PCI function of a netdev: ``class/net/<netdev>/device`` (through virtioN)."""
    if not netdev or "/" in netdev or netdev in (".", ".."):
        return None
    return _pci_of(roots.sysfs / "class" / "net" / netdev / "device")


# --- PCI functions ----------------------------------------------------------------------------------


def read_pci_functions(
    roots: HostRoots, extra: Iterable[str] = ()
) -> tuple[tuple[PciFunction, ...], tuple[Problem, ...]]:
    """PCI functions in ``bus/pci/devices/<address>`` (Documentation/ABI/testing/sysfs-bus-pci) that
    back a netdev (``class/net/*/device``, through virtio) or an RDMA device
    (``class/infiniband/*/device``), plus ``extra``; then the PF of every VF found and all VFs of
    every PF (``virtfn*``), so VFs whose netdev moved into a pod's namespace are still listed.
    Sorted by address. Addresses that do not exist are skipped."""
    devices = roots.sysfs / "bus" / "pci" / "devices"
    problems: list[Problem] = []
    wanted: set[str] = {a for a in extra if parse_pci_address(a)}
    for cls in ("net", "infiniband"):
        for name in _list_class(roots, roots.sysfs / "class" / cls, problems):
            address = _pci_of(roots.sysfs / "class" / cls / name / "device")
            if address:
                wanted.add(address)
    # One round is a closure: a VF adds its PF, and every PF adds all of its VFs.
    wanted |= {pf for a in wanted if (pf := _link_name(devices / a / "physfn")) and parse_pci_address(pf)}
    for address in sorted(wanted):
        wanted.update(_virtfns(devices / address))
    functions: list[PciFunction] = []
    for address in sorted(wanted):
        path = devices / address
        if not path.exists():
            logger.debug("PCI function %s: no %s", address, path)
            continue
        errors = _Errors()
        try:
            function = _read_pci_function(path, address, errors)
        except OSError as err:
            errors.add(address, err)
            function = None
        if _gone(path):  # a VF removed (sriov_numvfs=0) while it was read
            continue
        problem = errors.problem(address, "PCI function")
        if problem is not None:
            problems.append(problem)
        if function is not None:
            functions.append(function)
    return tuple(functions), tuple(problems)


def _read_pci_function(path: Path, address: str, errors: _Errors) -> PciFunction | None:
    """One ``bus/pci/devices/<address>``: ids (``"0x%04x\\n"``), class, driver, NUMA node, netdevs
    (``net/*`` and, for virtio-net, ``virtioN/net/*``), RDMA devices (``infiniband/*``), SR-IOV
    (``sriov_totalvfs``/``sriov_numvfs`` exist on capable PFs only; ``physfn``; ``virtfnN``)."""
    if not path.is_dir():
        return None
    names = _list(path)
    netdevs = list(_list(path / "net"))
    for child in names:
        if _VIRTIO.match(child):
            netdevs.extend(_list(path / child / "net"))
    return PciFunction(
        address=address,
        vendor=_parsed(path / "vendor", parse_hex_id, errors, "vendor"),
        device=_parsed(path / "device", parse_hex_id, errors, "device"),
        subsystem_vendor=_parsed(path / "subsystem_vendor", parse_hex_id, errors, "subsystem_vendor"),
        subsystem_device=_parsed(path / "subsystem_device", parse_hex_id, errors, "subsystem_device"),
        pci_class=_parsed(path / "class", parse_hex_id, errors, "class"),
        driver=_link_name(path / "driver"),
        numa_node=_parsed(path / "numa_node", parse_numa_node, errors, "numa_node"),
        netdevs=tuple(sorted(netdevs)),
        rdma_devices=tuple(_list(path / "infiniband")),
        sriov_totalvfs=_parsed(path / "sriov_totalvfs", parse_int, errors, "sriov_totalvfs"),
        sriov_numvfs=_parsed(path / "sriov_numvfs", parse_int, errors, "sriov_numvfs"),
        physfn=_link_name(path / "physfn"),
        virtfns=_virtfns(path),
    )


def _virtfns(path: Path) -> tuple[str, ...]:
    """A PF's VF addresses from its ``virtfnN`` links, by N (virtfn10 after virtfn9)."""
    try:
        names = _list(path)
    except OSError:
        return ()
    return tuple(vf for link in names if _VIRTFN.match(link) and (vf := _link_name(path / link)))


# --- character devices ------------------------------------------------------------------------------


def read_char_devices(roots: HostRoots) -> tuple[CharDevice, ...]:
    """The /dev/infiniband nodes sysfs knows of: ``class/infiniband_verbs/uverbsN/ibdev`` and
    ``class/infiniband_mad/{umadN,issmN}/{ibdev,port}`` (Documentation/ABI/stable/
    sysfs-class-infiniband), and ``rdma_cm`` when ``class/misc/rdma_cm`` or the node exists.
    ``present``: the node exists under the host's /dev. Unreadable attributes are None (logged)."""
    found: list[CharDevice] = []
    for cls in ("infiniband_verbs", "infiniband_mad"):
        base = roots.sysfs / "class" / cls
        problems: list[Problem] = []
        names = _list_class(roots, base, problems)
        for problem in problems:
            logger.warning("%s", problem.message)
        for name in names:
            match = _CHAR_NAME.match(name)
            if match is None or _CHAR_KINDS[match.group(1)] != cls:
                continue  # abi_version
            errors = _Errors()
            port = None
            if cls == "infiniband_mad":
                port = _parsed(base / name / "port", parse_int, errors, "port")
            rdma_device = _parsed(base / name / "ibdev", parse_text, errors, "ibdev")
            found.append(replace(_char_device(roots, name, match.group(1)), rdma_device=rdma_device, port=port))
            if errors.items:
                logger.warning("%s: %s", name, "; ".join(errors.items))
    if (roots.sysfs / "class" / "misc" / "rdma_cm").exists() or (roots.devfs / "infiniband" / "rdma_cm").exists():
        found.append(_char_device(roots, "rdma_cm", "rdma_cm"))
    return tuple(sorted(found, key=lambda d: natural_key(d.name)))


def _char_device(roots: HostRoots, name: str, kind: str) -> CharDevice:
    node = roots.devfs / "infiniband" / name
    return CharDevice(name=name, kind=kind, path=roots.display(node), present=node.exists())


# --- ib_core ----------------------------------------------------------------------------------------


def read_ib_core_netns_mode(roots: HostRoots) -> NetnsMode | None:
    """ib_core's live netns mode from ``module/ib_core/parameters/netns_mode``
    (Documentation/ABI/testing/sysfs-module). The parameter's show function (param_get_bool) prints
    the very variable ``rdma system set netns`` changes, so this follows runtime changes too. None
    when ib_core is not loaded or the file is unreadable."""
    errors = _Errors()
    mode = _parsed(roots.sysfs / "module" / "ib_core" / "parameters" / "netns_mode", parse_netns_mode,
                   errors, "module/ib_core/parameters/netns_mode")  # fmt: skip
    if errors.items:
        logger.warning("ib_core netns_mode: %s", "; ".join(errors.items))
    return mode
