"""sysfs: RDMA devices and their ports, the PCI functions behind netdevs and RDMA devices, the
character devices under /dev/infiniband, and ib_core's live netns mode.

Every path comes from :class:`~agent.config.HostRoots` (``roots.sysfs``, ``roots.devfs``), so in the
pod these read the host's trees and tests read fixture trees captured from real kernels
(tools/capture_sysfs.py). Reading and parsing are apart: ``parse_*`` take the text of one attribute
file and return a value, or raise ``ValueError`` on text the kernel never prints; ``read_*`` walk the
tree. A missing optional file is None, not an error. One odd device never blanks the rest: errors are
kept per device (or PCI function) and returned as :class:`~agent.model.Problem` with code
``sysfs_read_error``, while every other device is still reported. A device that vanishes between
listing and reading (``rdma link delete``, a VF being removed) is left out quietly. A class directory
that exists but cannot be listed is one problem about that directory.

The readers run every cycle (30 s by default) on nodes with thousands of PCI functions, so they use
plain ``os`` calls on str paths (``os.scandir``, ``os.open``/``os.read``, ``os.readlink``) and read
less: what cannot change while a sysfs object lives is kept across cycles in a :class:`SysfsCache`
(the agent's loop holds one; ``cache=None`` reads everything, as a first cycle does). See
:class:`SysfsCache` for what is static, what is read every cycle, and why. The netdevs and RDMA
devices of a PCI function come from one listing of ``class/net`` and of ``class/infiniband`` (each
entry's ``device`` link) rather than from listing every function's ``net/`` and ``infiniband/``:
the kernel keeps both views alike, including for a netdev moved into another network namespace,
which leaves both. ``device`` links are resolved with one ``readlink`` (sysfs links are relative and
point straight at the device directory), not with ``realpath``.

Kernel ABI documents: Documentation/ABI/stable/sysfs-class-infiniband (class/infiniband,
infiniband_verbs, infiniband_mad), Documentation/ABI/testing/sysfs-bus-pci (bus/pci/devices, SR-IOV),
Documentation/ABI/testing/sysfs-class-net (class/net), Documentation/ABI/testing/sysfs-module
(module/<name>/parameters). Formats: drivers/infiniband/core/sysfs.c, drivers/pci/pci-sysfs.c,
drivers/pci/iov.c.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final, Generic, TypeVar

from agent.config import HostRoots
from agent.hostio import read_kernel_file
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
_DIGIT_RUNS: Final = re.compile(r"([0-9]+)")


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
    count as numbers: a netdev may be named ``eth0²`` and '²'.isdigit() is true, but int() refuses it.

    Splitting on ASCII digit runs gives text and digits by turns, text first (possibly empty): the
    odd parts are the numbers; empty text is left out."""
    key: list[tuple[int, str]] = []
    digits = False
    for part in _DIGIT_RUNS.split(name):
        if digits:
            key.append((int(part), ""))
        elif part:
            key.append((-1, part))
        digits = not digits
    return tuple(key)


# --- the cross-cycle cache --------------------------------------------------------------------------

Key = tuple[str, int]  # a sysfs object's identity: (entry name, inode number of the entry)
STATIC_MAX_AGE_SECONDS: Final = 600.0  # the longest a fact treated as static goes unread


class _Miss(enum.Enum):
    MISS = 0


MISS: Final = _Miss.MISS


class _Facts(Generic[T]):
    """Facts by identity. What is read at an identity's first sighting is not kept (the kernel may
    still be filling the entry in); from the next snapshot on, a clean read is kept until the identity
    leaves its listing (:meth:`retain`) or the cache is refreshed."""

    __slots__ = ("facts", "first_seen")

    def __init__(self) -> None:
        self.facts: dict[Key, T] = {}
        self.first_seen: dict[Key, int] = {}

    def get(self, key: Key) -> T | _Miss:
        return self.facts.get(key, MISS)

    def put(self, key: Key, value: T, snapshot: int) -> None:
        if self.first_seen.setdefault(key, snapshot) < snapshot:
            self.facts[key] = value

    def retain(self, keys: AbstractSet[Key]) -> None:
        """Forget identities that are no longer listed (gone, or re-created with a new inode)."""
        if len(self.facts) > len(keys) or not keys >= self.facts.keys():
            self.facts = {k: v for k, v in self.facts.items() if k in keys}
        if len(self.first_seen) > len(keys) or not keys >= self.first_seen.keys():
            self.first_seen = {k: v for k, v in self.first_seen.items() if k in keys}


@dataclass(frozen=True, slots=True)
class _RdmaStatic:
    node_type: str | None
    node_guid: str | None
    sys_image_guid: str | None
    fw_version: str | None
    ports: tuple[tuple[int, str | None], ...]  # (port number, link_layer)
    real: str  # the device's directory (devices/…/infiniband/<dev>): dynamic reads skip the class link
    port_dirs: tuple[str, ...]  # real + "/ports/<n>", for each port


@dataclass(frozen=True, slots=True)
class _PciStatic:
    vendor: str | None
    device: str | None
    subsystem_vendor: str | None
    subsystem_device: str | None
    pci_class: str | None
    numa_node: int | None
    physfn: str | None
    sriov: bool  # an SR-IOV PF: sriov_totalvfs/sriov_numvfs exist
    real: str  # the function's directory (devices/pci…/<address>): dynamic reads skip the bus link


VirtfnMemo = tuple[tuple[int, tuple[str, ...]], tuple[str, ...]]  # ((numvfs, virtfnN names), VF addresses)


class SysfsCache:
    """What the sysfs readers keep from one snapshot to the next, so that a warm cycle reads only what
    can change. The agent's loop holds one and passes it to ``take_snapshot(cache=…)``.

    **Identity.** A sysfs object is known by its directory entry: (name, inode number), the inode
    number coming free with the listing (``os.scandir``'s ``DirEntry.inode()``, getdents' d_ino; no
    stat). kernfs numbers its nodes from a cyclic allocator, so a device removed and created again
    under the same name (hot-unplug and re-plug, ``rdma link delete``/``add``, ``sriov_numvfs`` 0 → N,
    a driver reload re-registering its RDMA devices) is a new identity, and so is a renamed netdev or
    RDMA device (new name). Facts about identities that leave their listing are dropped.

    **Static while the identity lives** (read once, then kept): an RDMA device's node_type,
    node_guid, sys_image_guid, fw_ver, port numbers and each port's link_layer (set when ib_core
    registers the device; changing them — new firmware, an mlx4 port type change — re-registers it;
    a live firmware patch that keeps the device shows at the next refresh, and netlink's
    FW_VERSION, read every cycle, wins anyway); the PCI function behind each ``class/infiniband``
    and ``class/net`` entry (its ``device`` link, made by device_add()); where an RDMA device's and a
    PCI function's directories are (dynamic reads skip the class and bus links); a PCI function's
    vendor, device, subsystem ids, class, numa_node, ``physfn`` and whether it is an SR-IOV PF
    (pci_dev fields set at enumeration); a char device's port, and its ibdev while the
    ``class/infiniband`` listing is unchanged (ibdev prints the RDMA device's current name, and
    ``rdma dev set … name`` or udev's persistent naming renames devices after they appear).

    **Read every cycle:** port state, phys_state, lid and sm_lid, and the port's netdev with its
    ifindex — each only when netlink did not give it (netlink wins in the merge anyway), with the
    ``parent`` fallback (rxe and siw print their netdev's current name there); port rate (follows the
    link speed); a PCI function's driver link (rebinding a VF to vfio-pci is common); sriov_totalvfs
    and sriov_numvfs, and a PF's ``virtfnN`` names (their targets are read again when those or
    sriov_numvfs changed, or did not agree); which netdevs and RDMA devices sit on which function
    (from that cycle's listings of class/net and class/infiniband); which char device nodes exist
    (one listing of /dev/infiniband); ib_core's netns mode.

    **Never kept:** a read that failed (its error is reported again next cycle, as without a cache)
    and a read at an identity's first sighting: the kernel makes an entry visible before it is
    complete (device_add() links the class entry before it adds attribute groups,
    ib_register_device() adds ``ports/`` after device_add(), a VF's ``physfn`` link comes after its
    bus entry), so facts are kept from the second snapshot that sees the identity.

    **Refresh:** every ``refresh_every`` snapshots all kept facts are dropped and read again, which
    bounds how stale a fact treated as static can be (:meth:`for_interval`: 10 minutes of cycles).

    Not thread-safe: one cache per loop. ``take_snapshot`` calls :meth:`begin_snapshot`.
    """

    def __init__(self, refresh_every: int = 20) -> None:
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be at least 1, got {refresh_every}")
        self.refresh_every = refresh_every
        self.snapshots = 0
        self.refreshes = 0
        self._rdma: _Facts[_RdmaStatic] = _Facts()
        self._ib_links: _Facts[str | None] = _Facts()  # class/infiniband/<dev>/device → PCI function
        self._net_links: _Facts[str | None] = _Facts()  # class/net/<netdev>/device → PCI function
        self._pci: _Facts[_PciStatic] = _Facts()
        self._chars: _Facts[tuple[str | None, int | None]] = _Facts()  # (ibdev, port)
        self._virtfns: dict[Key, VirtfnMemo] = {}
        # Last cycle's answers, given again while what they were made of is unchanged: fewer objects
        # to build, and objects the snapshot's merge can tell unchanged by identity.
        self._rdma_prev: dict[Key, tuple[_RdmaStatic, RdmaDevice]] = {}
        self._chars_memo: tuple[tuple[object, ...], tuple[CharDevice, ...]] | None = None
        self._chars_rdma_devices: dict[str, int] | None = None  # the class/infiniband the ibdevs were read with

    @classmethod
    def for_interval(cls, interval_seconds: float, max_age_seconds: float = STATIC_MAX_AGE_SECONDS) -> SysfsCache:
        """A cache whose static facts are at most ``max_age_seconds`` old at one snapshot every
        ``interval_seconds`` (30 s → a refresh every 20 snapshots)."""
        if not interval_seconds > 0 or not math.isfinite(interval_seconds):
            return cls(refresh_every=1)
        return cls(refresh_every=max(1, math.floor(max_age_seconds / interval_seconds)))

    def begin_snapshot(self) -> None:
        """A new snapshot starts; every ``refresh_every``-th one reads everything again."""
        self.snapshots += 1
        if self.snapshots % self.refresh_every == 0:
            self.refresh()

    def refresh(self) -> None:
        """Drop every kept fact. Identities already seen stay seen: what is read next is kept."""
        self.refreshes += 1
        for facts in (self._rdma, self._ib_links, self._net_links, self._pci, self._chars):
            facts.facts = {}
        self._virtfns = {}
        self._chars_memo = None


# --- reading helpers --------------------------------------------------------------------------------


class _Errors:
    """Read errors of one device, gathered into one Problem so one bad file costs one line.
    ``missing``: some read found no file (optional, or the device is going away)."""

    __slots__ = ("items", "missing")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.missing = False

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


# pathlib costs a Path object and several calls per step; these readers take thousands of steps
# per cycle, so they use str paths and os calls (the "noqa: PTH" below), each in one place.


def _exists(path: str) -> bool:
    return os.path.exists(path)  # noqa: PTH110 - str paths in the hot path, see above


def _mode(path: str) -> int:
    return os.stat(path).st_mode  # noqa: PTH116 - str paths in the hot path, see above


def _readlink(path: str) -> str:
    return os.readlink(path)  # noqa: PTH115 - str paths in the hot path, see above


def _read_bytes(path: str) -> bytes:
    """One attribute file: O_NONBLOCK, regular files only, capped (:func:`agent.hostio.read_kernel_file`)."""
    return read_kernel_file(path, one_read=True)


def _read(path: str, errors: _Errors, what: str, *, einval_is_empty: bool = False) -> str | None:
    """Text of one attribute file; None when it does not exist. Other failures are recorded."""
    try:
        data = _read_bytes(path)
    except FileNotFoundError:
        errors.missing = True
        return None
    except OSError as err:
        if einval_is_empty and err.errno == errno.EINVAL:
            return None
        errors.add(what, err)
        return None
    text = data.decode("utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text  # as text mode reads


def _parsed(path: str, parse: Callable[[str], T], errors: _Errors, what: str) -> T | None:
    text = _read(path, errors, what)
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as err:
        errors.add(what, err)
        return None


def _scan(path: str) -> dict[str, int]:
    """Entry names → inode numbers, in listing order; {} when the directory does not exist. The
    inode numbers are getdents' (no stat per entry)."""
    try:
        with os.scandir(path) as entries:
            return {entry.name: entry.inode() for entry in entries}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _list(path: str) -> list[str]:
    """Entry names, naturally sorted; [] when the directory does not exist (not an error)."""
    try:
        with os.scandir(path) as entries:
            return sorted((entry.name for entry in entries), key=natural_key)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _scan_class(roots: HostRoots, path: str, problems: list[Problem]) -> dict[str, int]:
    """A top-level directory's entries (``class/infiniband``, ``class/net``); a directory that exists
    but cannot be listed is a problem about the whole class, not a crash."""
    try:
        return _scan(path)
    except OSError as err:
        shown = roots.display(Path(path))
        problems.append(Problem(code=READ_ERROR, message=f"cannot list {shown}: {err.strerror}", subject=shown))
        return {}


def _link_name(path: str, errors: _Errors | None = None) -> str | None:
    """Basename of a symlink's target (``driver``, ``physfn``), or None when there is no link. A link
    that does not exist marks ``errors`` missing (an unbound driver, or a device going away)."""
    try:
        target = _readlink(path)
    except OSError as err:  # no such file, or not a symlink (EINVAL)
        if errors is not None and isinstance(err, FileNotFoundError):
            errors.missing = True
        return None
    name = target.rstrip("/").rpartition("/")[2]
    return name if name not in ("", ".") else PurePosixPath(target).name


def _pci_of(device_link: str) -> str | None:
    """The PCI function behind a ``device`` link: itself when it points at one, or its parent when it
    points at a virtio device (virtio-net: netdev → virtioN → PCI function). Other buses (USB,
    auxiliary) give None: their nearest PCI ancestor is a controller, not the NIC.

    No realpath: sysfs links are relative and end in the name of the device they point at
    (kernfs_get_target_path() writes ``../../../0000:3b:00.0``), so one readlink answers. A virtio
    target (whose parent is wanted) or a link that does not end in a name (``../..``, as
    tools/capture_sysfs.py shortens them) is worked out with path arithmetic from the real directory
    of the link (:func:`_real_dir`). At most two links are read, so a loop or garbage costs nothing
    and names no PCI function."""
    try:
        target = _readlink(device_link)
    except OSError:  # no such file, or not a symlink (EINVAL)
        return None
    name = posixpath.basename(posixpath.normpath(target))
    if parse_pci_address(name):
        return name
    if name not in ("", ".", "..") and not _VIRTIO.match(name):
        return None
    resolved = posixpath.normpath(posixpath.join(_real_dir(posixpath.dirname(device_link)), target))
    name = posixpath.basename(resolved)
    if parse_pci_address(name):
        return name
    if _VIRTIO.match(name):
        parent = posixpath.basename(posixpath.dirname(resolved))
        return parent if parse_pci_address(parent) else None
    return None


def _real_dir(path: str) -> str:
    """Where a sysfs directory entry really is: ``class/net/eth0`` is a link (one hop, relative) to
    ``devices/…/net/eth0``; a directory that is no link is where it is."""
    try:
        target = _readlink(path)
    except OSError:
        return path
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), target))


def _gone(path: str) -> bool:
    return not _exists(path)


def _each(
    kind: str,
    subjects: Iterable[str],
    path_of: Callable[[str], str],
    read: Callable[[str, _Errors], T | None],
    problems: list[Problem],
) -> Iterator[T]:
    """Read each item on its own: its errors become one Problem about it and never stop the others.
    An item that vanished while it was read (``rdma link delete``, VFs removed) is left out quietly;
    whether it vanished is asked only when one of its reads failed or found a file missing."""
    for subject in subjects:
        errors = _Errors()
        try:
            value = read(subject, errors)
        except OSError as err:
            errors.add(subject, err)
            value = None
        if (errors.items or errors.missing) and _gone(path_of(subject)):
            logger.debug("%s %s vanished while it was read", kind, subject)
            continue
        problem = errors.problem(subject, kind)
        if problem is not None:
            problems.append(problem)
        if value is not None:
            yield value


def _class_links(
    cache: SysfsCache, roots: HostRoots, base: str, facts: _Facts[str | None], problems: list[Problem]
) -> dict[str, str | None]:
    """Entry name → the PCI function behind it, for every entry of a class directory (``device``
    links, static per identity)."""
    entries = _scan_class(roots, base, problems)
    out: dict[str, str | None] = {}
    for name, ino in entries.items():
        key = (name, ino)
        pci = facts.get(key)
        if pci is MISS:
            pci = _pci_of(f"{base}/{name}/device")
            facts.put(key, pci, cache.snapshots)
        out[name] = pci
    facts.retain(entries.items())
    return out


# --- RDMA devices -----------------------------------------------------------------------------------


def read_rdma_devices(
    roots: HostRoots,
    *,
    cache: SysfsCache | None = None,
    netlink: Mapping[tuple[str, int], RdmaPort] | None = None,
) -> tuple[tuple[RdmaDevice, ...], tuple[Problem, ...]]:
    """Every RDMA device in ``class/infiniband/<dev>`` (Documentation/ABI/stable/
    sysfs-class-infiniband): node type and GUIDs, firmware, ports, and the PCI function behind it.

    ``index`` is left None (only netlink knows it) and ``char_devices`` empty (the snapshot joins
    :func:`read_char_devices`). No class/infiniband at all (ib_core not loaded) gives no devices
    and no problem.

    ``netlink``: the ports netlink reported, by (device name, port number). Such a port is returned
    as the snapshot merges it: netlink's port with sysfs's link_layer and rate, and with sysfs's
    netdev and ifindex only when netlink named no netdev; what netlink gave is not read."""
    cache = cache if cache is not None else SysfsCache()
    sys_ = str(roots.sysfs)
    base = sys_ + "/class/infiniband"
    problems: list[Problem] = []
    entries = _scan_class(roots, base, problems)
    if not entries:
        logger.debug("%s: no RDMA devices", base)
    hints = netlink if netlink is not None else {}
    previous, cache._rdma_prev = cache._rdma_prev, {}

    def read(name: str, errors: _Errors) -> RdmaDevice | None:
        return _read_rdma_device(cache, sys_, base, (name, entries[name]), hints, previous, errors)

    devices = tuple(_each("RDMA device", sorted(entries, key=natural_key), lambda n: f"{base}/{n}", read, problems))
    cache._rdma.retain(entries.items())
    cache._ib_links.retain(entries.items())
    return devices, tuple(problems)


def _read_rdma_device(
    cache: SysfsCache,
    sys_: str,
    base: str,
    key: Key,
    hints: Mapping[tuple[str, int], RdmaPort],
    previous: dict[Key, tuple[_RdmaStatic, RdmaDevice]],
    errors: _Errors,
) -> RdmaDevice | None:
    """One ``class/infiniband/<dev>``; None when the directory is gone. Last cycle's objects are
    given again when nothing in them changed."""
    name = key[0]
    path = f"{base}/{name}"
    cached = cache._rdma.get(key)
    if isinstance(cached, _RdmaStatic):
        static = cached
    else:
        before = len(errors.items)
        read = _read_rdma_static(path, name, errors)
        if read is None:
            return None
        static = read
        if len(errors.items) == before and not (errors.missing and _gone(path)):
            cache._rdma.put(key, static, cache.snapshots)
    pci = cache._ib_links.get(key)
    if pci is MISS:
        pci = _pci_of(path + "/device")
        cache._ib_links.put(key, pci, cache.snapshots)
    last = previous.get(key)
    old = last[1] if last is not None and last[0] is static else None
    parent = static.real + "/parent" if len(static.ports) == 1 else None  # rxe/siw on 6.x: the netdev
    old_ports = old.ports if old is not None else (None,) * len(static.ports)
    ports = tuple([
        _read_port(sys_, port_dir, number, link_layer, parent, hints.get((name, number)), errors, was)
        for (number, link_layer), port_dir, was in zip(static.ports, static.port_dirs, old_ports, strict=True)
    ])  # fmt: skip
    if pci is None:
        pci = next((a for a in (_netdev_pci(cache, sys_, p.netdev) for p in ports) if a), None)
    if old is not None and old.pci_address == pci and ports == old.ports:  # the same port objects, mostly
        device = old
    else:
        device = RdmaDevice(
            name=name,
            node_type=static.node_type,
            node_guid=static.node_guid,
            sys_image_guid=static.sys_image_guid,
            fw_version=static.fw_version,
            port_count=len(ports),
            ports=ports,
            pci_address=pci,
        )
    cache._rdma_prev[key] = (static, device)
    return device


def _read_rdma_static(path: str, name: str, errors: _Errors) -> _RdmaStatic | None:
    """What does not change while an RDMA device lives: node_type, GUIDs, fw_ver,
    ``ports/<n>/link_layer``, and where its directory is. None when it is gone or no directory."""
    try:
        mode = _mode(path)
    except FileNotFoundError:
        errors.missing = True
        return None
    if not stat.S_ISDIR(mode):  # a file where the device directory should be
        errors.add(name, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
        return None
    real = _real_dir(path)
    ports = tuple(
        (int(p), _parsed(f"{real}/ports/{p}/link_layer", parse_text, errors, f"ports/{p}/link_layer"))
        for p in _list(real + "/ports")
        if p.isascii() and p.isdigit()
    )
    return _RdmaStatic(
        node_type=_parsed(real + "/node_type", parse_node_type, errors, "node_type"),
        node_guid=_parsed(real + "/node_guid", parse_guid, errors, "node_guid"),
        sys_image_guid=_parsed(real + "/sys_image_guid", parse_guid, errors, "sys_image_guid"),
        fw_version=_parsed(real + "/fw_ver", parse_text, errors, "fw_ver"),
        ports=ports,
        real=real,
        port_dirs=tuple(f"{real}/ports/{number}" for number, _ in ports),
    )


def _read_port(
    sys_: str,
    path: str,
    number: int,
    link_layer: str | None,
    parent: str | None,
    netlink: RdmaPort | None,
    errors: _Errors,
    old: RdmaPort | None = None,
) -> RdmaPort:
    """``class/infiniband/<dev>/ports/<n>/``: state, phys_state, rate, lid and sm_lid (InfiniBand
    only), and the netdev of GID 0 (``gid_attrs/ndevs/0``, which fails with EINVAL while the entry is
    unused; then the device's ``parent`` file, given for single-port devices: rxe/siw on 6.x print
    their netdev's current name there) — what netlink already gave is not read again.
    ``link_layer`` is the device's static fact; ``old`` is last cycle's port, given back when nothing
    changed."""
    where = f"ports/{number}"
    if netlink is None:
        state = _parsed(path + "/state", parse_port_state, errors, f"{where}/state")
        phys = _parsed(path + "/phys_state", parse_phys_state, errors, f"{where}/phys_state")
        state_code, state_name = state if state else (None, None)
        phys_code, phys_name = phys if phys else (None, None)
    else:
        state_code, state_name = netlink.state_code, netlink.state
        phys_code, phys_name = netlink.physical_state_code, netlink.physical_state
    if netlink is None or netlink.netdev is None:
        ndev_text = _read(path + "/gid_attrs/ndevs/0", errors, f"{where}/gid_attrs/ndevs/0", einval_is_empty=True)
        netdev = parse_text(ndev_text) if ndev_text is not None else None
        if not netdev and parent is not None:
            netdev = _parsed(parent, parse_text, errors, "parent")
        netdev_index = None  # read below, after the port's own files
    else:
        netdev, netdev_index = netlink.netdev, netlink.netdev_index
    rate = _parsed(path + "/rate", parse_text, errors, f"{where}/rate")
    if netlink is None:
        infiniband = link_layer == "InfiniBand"
        lid = _parsed(path + "/lid", parse_lid, errors, f"{where}/lid") if infiniband else None
        sm_lid = _parsed(path + "/sm_lid", parse_lid, errors, f"{where}/sm_lid") if infiniband else None
    else:
        lid, sm_lid = netlink.lid, netlink.sm_lid
    if (netlink is None or netlink.netdev is None) and netdev:
        netdev_index = _netdev_index(sys_, netdev, errors, where)
    if old is not None and (
        old.port, old.state, old.state_code, old.physical_state, old.physical_state_code, old.link_layer,
        old.rate, old.lid, old.sm_lid, old.netdev, old.netdev_index,
    ) == (number, state_name, state_code, phys_name, phys_code, link_layer, rate, lid, sm_lid, netdev,
          netdev_index):  # fmt: skip
        return old
    return RdmaPort(
        port=number,
        state=state_name,
        state_code=state_code,
        physical_state=phys_name,
        physical_state_code=phys_code,
        link_layer=link_layer,
        rate=rate,
        lid=lid,
        sm_lid=sm_lid,
        netdev=netdev,
        netdev_index=netdev_index,
    )


def _netdev_index(sys_: str, netdev: str, errors: _Errors, where: str) -> int | None:
    """``class/net/<netdev>/ifindex`` (Documentation/ABI/testing/sysfs-class-net); None when the
    netdev is not in this network namespace (moved into a pod in exclusive mode)."""
    return _parsed(f"{sys_}/class/net/{netdev}/ifindex", parse_int, errors, f"{where}: class/net/{netdev}/ifindex")


def _netdev_pci(cache: SysfsCache, sys_: str, netdev: str | None) -> str | None:
    """The PCI function of a netdev: ``class/net/<netdev>/device`` (through virtioN)."""
    if not netdev or "/" in netdev or netdev in (".", ".."):
        return None
    entry = f"{sys_}/class/net/{netdev}"
    try:
        key = (netdev, os.lstat(entry).st_ino)
    except OSError:  # not in this network namespace
        return None
    pci = cache._net_links.get(key)
    if pci is MISS:
        pci = _pci_of(entry + "/device")
        cache._net_links.put(key, pci, cache.snapshots)
    return pci


# --- PCI functions ----------------------------------------------------------------------------------


def read_pci_functions(
    roots: HostRoots, extra: Iterable[str] = (), *, cache: SysfsCache | None = None
) -> tuple[tuple[PciFunction, ...], tuple[Problem, ...]]:
    """PCI functions in ``bus/pci/devices/<address>`` (Documentation/ABI/testing/sysfs-bus-pci) that
    back a netdev (``class/net/*/device``, through virtio) or an RDMA device
    (``class/infiniband/*/device``), plus ``extra``; then the PF of every VF found and all VFs of
    every PF (``virtfn*``), so VFs whose netdev moved into a pod's namespace are still listed.
    Sorted by address. Addresses that do not exist are skipped. A function's netdevs and RDMA
    devices are the class/net and class/infiniband entries whose ``device`` link names it."""
    cache = cache if cache is not None else SysfsCache()
    sys_ = str(roots.sysfs)
    problems: list[Problem] = []
    by_netdev = _class_links(cache, roots, sys_ + "/class/net", cache._net_links, problems)
    by_rdma = _class_links(cache, roots, sys_ + "/class/infiniband", cache._ib_links, problems)
    netdevs_of, rdma_of = _on_functions(by_netdev, by_rdma)
    base = sys_ + "/bus/pci/devices"
    present: dict[str, int] | None
    try:
        present = _scan(base)
    except OSError:
        present = None  # cannot list: look each address up
    keys: set[Key] = set()
    virtfns, cache._virtfns = cache._virtfns, {}

    def read(address: str, errors: _Errors) -> PciFunction | None:
        path = f"{base}/{address}"
        ino = present.get(address) if present is not None else _inode(path)
        if ino is None:
            logger.debug("PCI function %s: no %s", address, path)
            return None
        key = (address, ino)
        keys.add(key)
        return _read_pci_function(cache, path, key, errors, netdevs_of, rdma_of, virtfns)

    queue = sorted({a for a in extra if parse_pci_address(a)} | netdevs_of.keys() | rdma_of.keys())
    seen = set(queue)
    functions: list[PciFunction] = []
    function_problems: list[Problem] = []
    # `queue` grows while it is walked: a VF brings its PF, and a PF all of its VFs (one closure).
    for function in _each("PCI function", queue, lambda a: f"{base}/{a}", read, function_problems):
        functions.append(function)
        for found in (function.physfn, *function.virtfns) if function.physfn or function.virtfns else ():
            if found and found not in seen and parse_pci_address(found):
                seen.add(found)
                queue.append(found)
    cache._pci.retain(keys)
    problems.extend(sorted(function_problems, key=lambda p: p.subject or ""))
    functions.sort(key=lambda f: f.address)
    return tuple(functions), tuple(problems)


def _on_functions(
    by_netdev: dict[str, str | None], by_rdma: dict[str, str | None]
) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """PCI address → its netdevs (sorted) and its RDMA devices (natural order), from the class
    listings' ``device`` links. Grouped in listing order, then each group sorted (stable, so equal
    keys keep their listing order, as when the whole listing is sorted first): most functions have
    one of each."""
    netdevs: dict[str, list[str]] = {}
    for name, pci in by_netdev.items():
        if pci:
            netdevs.setdefault(pci, []).append(name)
    rdma: dict[str, list[str]] = {}
    for name, pci in by_rdma.items():
        if pci:
            rdma.setdefault(pci, []).append(name)
    netdevs_of = {pci: tuple(sorted(names)) for pci, names in netdevs.items()}
    rdma_of = {pci: tuple(sorted(names, key=natural_key)) if len(names) > 1 else tuple(names)
               for pci, names in rdma.items()}  # fmt: skip
    return netdevs_of, rdma_of


def _inode(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def _read_pci_function(
    cache: SysfsCache,
    path: str,
    key: Key,
    errors: _Errors,
    netdevs_of: dict[str, tuple[str, ...]],
    rdma_of: dict[str, tuple[str, ...]],
    virtfns: dict[Key, VirtfnMemo],
) -> PciFunction | None:
    """One ``bus/pci/devices/<address>``: ids (``"0x%04x\\n"``), class, driver, NUMA node, SR-IOV
    (``sriov_totalvfs``/``sriov_numvfs`` exist on capable PFs only; ``physfn``; ``virtfnN``)."""
    address = key[0]
    cached = cache._pci.get(key)
    if isinstance(cached, _PciStatic):
        static = cached
    else:
        before = len(errors.items)
        read = _read_pci_static(path, errors)
        if read is None:
            return None
        static = read
        if len(errors.items) == before and not (errors.missing and _gone(path)):
            cache._pci.put(key, static, cache.snapshots)
    driver = _link_name(static.real + "/driver", errors)
    totalvfs = numvfs = None
    vfs: tuple[str, ...] = ()
    if static.sriov:
        totalvfs = _parsed(static.real + "/sriov_totalvfs", parse_int, errors, "sriov_totalvfs")
        numvfs = _parsed(static.real + "/sriov_numvfs", parse_int, errors, "sriov_numvfs")
        vfs = _virtfns(static.real, key, numvfs, virtfns, cache._virtfns)
    return PciFunction(
        address=address,
        vendor=static.vendor,
        device=static.device,
        subsystem_vendor=static.subsystem_vendor,
        subsystem_device=static.subsystem_device,
        pci_class=static.pci_class,
        driver=driver,
        numa_node=static.numa_node,
        netdevs=netdevs_of.get(address, ()),
        rdma_devices=rdma_of.get(address, ()),
        sriov_totalvfs=totalvfs,
        sriov_numvfs=numvfs,
        physfn=static.physfn,
        virtfns=vfs,
    )


def _read_pci_static(path: str, errors: _Errors) -> _PciStatic | None:
    """What does not change while a PCI function lives, and where its directory is; None when it
    is gone or not a directory."""
    try:
        mode = _mode(path)
    except FileNotFoundError:
        errors.missing = True
        return None
    if not stat.S_ISDIR(mode):
        return None
    real = _real_dir(path)
    return _PciStatic(
        vendor=_parsed(real + "/vendor", parse_hex_id, errors, "vendor"),
        device=_parsed(real + "/device", parse_hex_id, errors, "device"),
        subsystem_vendor=_parsed(real + "/subsystem_vendor", parse_hex_id, errors, "subsystem_vendor"),
        subsystem_device=_parsed(real + "/subsystem_device", parse_hex_id, errors, "subsystem_device"),
        pci_class=_parsed(real + "/class", parse_hex_id, errors, "class"),
        numa_node=_parsed(real + "/numa_node", parse_numa_node, errors, "numa_node"),
        physfn=_link_name(real + "/physfn"),
        sriov=_exists(real + "/sriov_totalvfs") or _exists(real + "/sriov_numvfs"),
        real=real,
    )


def _virtfns(
    path: str, key: Key, numvfs: int | None, memo: dict[Key, VirtfnMemo], kept: dict[Key, VirtfnMemo]
) -> tuple[str, ...]:
    """A PF's VF addresses from its ``virtfnN`` links, by N (virtfn10 after virtfn9). The links are
    read again only when their names or sriov_numvfs changed; a listing that does not agree with
    sriov_numvfs (VFs being added or removed right now) is not kept."""
    try:
        with os.scandir(path) as entries:
            names = tuple(e.name for e in entries if e.name.startswith("virtfn") and _VIRTFN.match(e.name))
    except OSError:
        return ()
    seen = memo.get(key)
    if seen is not None and numvfs is not None and seen[0] == (numvfs, names):
        vfs = seen[1]
    else:
        vfs = tuple(vf for link in sorted(names, key=natural_key) if (vf := _link_name(f"{path}/{link}")))
    if numvfs is not None and len(vfs) == numvfs:
        kept[key] = ((numvfs, names), vfs)
    return vfs


# --- character devices ------------------------------------------------------------------------------


def read_char_devices(roots: HostRoots, *, cache: SysfsCache | None = None) -> tuple[CharDevice, ...]:
    """The /dev/infiniband nodes sysfs knows of: ``class/infiniband_verbs/uverbsN/ibdev`` and
    ``class/infiniband_mad/{umadN,issmN}/{ibdev,port}`` (Documentation/ABI/stable/
    sysfs-class-infiniband), and ``rdma_cm`` when ``class/misc/rdma_cm`` or the node exists.
    ``present``: the node exists under the host's /dev (one listing of /dev/infiniband). Unreadable
    attributes are None (logged). When neither the listings nor the nodes changed and every fact is
    kept, last cycle's answer is given again."""
    cache = cache if cache is not None else SysfsCache()
    sys_ = str(roots.sysfs)
    dev_dir = str(roots.devfs / "infiniband")
    nodes = _nodes(dev_dir)
    listings: list[tuple[str, str, dict[str, int]]] = []
    for cls in ("infiniband_verbs", "infiniband_mad"):
        base = f"{sys_}/class/{cls}"
        problems: list[Problem] = []
        listings.append((cls, base, _scan_class(roots, base, problems)))
        for problem in problems:
            logger.warning("%s", problem.message)
    rdma_cm = _exists(f"{sys_}/class/misc/rdma_cm")
    try:
        rdma_devices: dict[str, int] | None = _scan(f"{sys_}/class/infiniband")
    except OSError:
        rdma_devices = None
    if rdma_devices is None or rdma_devices != cache._chars_rdma_devices:
        cache._chars.facts = {}  # an RDMA device came, went or was renamed: ibdev may name another
        cache._chars_rdma_devices = rdma_devices
    state = (listings[0][2], listings[1][2], nodes, rdma_cm, rdma_devices)
    memo = cache._chars_memo
    if memo is not None and memo[0] == state:
        return memo[1]

    def present(name: str) -> bool:
        return name in nodes if nodes is not None else _exists(f"{dev_dir}/{name}")

    shown_dir = roots.display(roots.devfs / "infiniband")
    found: dict[str, CharDevice] = {}
    keys: set[Key] = set()
    clean = True
    for cls, base, entries in listings:
        for name in sorted(entries, key=natural_key):
            match = _CHAR_NAME.match(name)
            if match is None or _CHAR_KINDS[match.group(1)] != cls:
                continue  # abi_version
            key = (f"{cls}/{name}", entries[name])
            keys.add(key)
            facts = cache._chars.get(key)
            if facts is MISS:
                errors = _Errors()
                port = _parsed(f"{base}/{name}/port", parse_int, errors, "port") if cls == "infiniband_mad" else None
                facts = (_parsed(f"{base}/{name}/ibdev", parse_text, errors, "ibdev"), port)
                if errors.items:
                    clean = False
                    logger.warning("%s: %s", name, "; ".join(errors.items))
                else:
                    cache._chars.put(key, facts, cache.snapshots)
            found[name] = CharDevice(name=name, kind=match.group(1), path=f"{shown_dir}/{name}", present=present(name),
                                     rdma_device=facts[0], port=facts[1])  # fmt: skip
    cache._chars.retain(keys)
    if rdma_cm or present("rdma_cm"):
        found["rdma_cm"] = CharDevice(name="rdma_cm", kind="rdma_cm", path=f"{shown_dir}/rdma_cm",
                                      present=present("rdma_cm"))  # fmt: skip
    result = tuple(found[name] for name in sorted(found, key=natural_key))
    if clean and nodes is not None and rdma_devices is not None and cache._chars.facts.keys() >= keys:
        cache._chars_memo = (state, result)
    return result


def _nodes(path: str) -> set[str] | None:
    """The names under /dev/infiniband that exist (a dangling symlink does not); None when the
    directory exists but cannot be listed."""
    try:
        with os.scandir(path) as entries:
            return {e.name for e in entries if not e.is_symlink() or _exists(e.path)}
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except OSError:
        return None


# --- ib_core ----------------------------------------------------------------------------------------


def read_ib_core_netns_mode(roots: HostRoots) -> NetnsMode | None:
    """ib_core's live netns mode from ``module/ib_core/parameters/netns_mode``
    (Documentation/ABI/testing/sysfs-module). The parameter's show function (param_get_bool) prints
    the very variable ``rdma system set netns`` changes, so this follows runtime changes too. None
    when ib_core is not loaded or the file is unreadable."""
    errors = _Errors()
    mode = _parsed(f"{roots.sysfs}/module/ib_core/parameters/netns_mode", parse_netns_mode, errors,
                   "module/ib_core/parameters/netns_mode")  # fmt: skip
    if errors.items:
        logger.warning("ib_core netns_mode: %s", "; ".join(errors.items))
    return mode
