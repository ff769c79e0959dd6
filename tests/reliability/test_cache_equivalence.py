"""Warm snapshots equal cold ones (hypothesis): a generated host laid out as the kernel lays out sysfs
is changed between cycles the ways hosts change — PCI functions unplugged and plugged back under the
same address, sriov_numvfs changed (VFs appear and go), drivers rebound (a VF to vfio-pci and back),
netdevs moved into another netns and back or renamed, RDMA devices renamed, rxe devices added and
deleted, port rate and state changing, /dev nodes removed, files that start and stop failing — and
after every change ``take_snapshot`` with the agent's cache must equal ``take_snapshot`` without one:
the cache may skip reads, never change an answer.

Kernel behaviour the generated host keeps, because the cache relies on it: a re-created sysfs entry
gets a new inode number (kernfs allocates them cyclically; here removed entries are parked in a
graveyard so the filesystem cannot hand the number out again), a moved-away netdev keeps its entry
(renamed back, same inode), and files the kernel never changes in place (PCI ids, GUIDs, link layer)
change only with a new entry."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from agent.config import HostRoots
from agent.discover.rdma_netlink import RdmaNetlink
from agent.discover.snapshot import SnapshotCache, take_snapshot
from agent.discover.sysfs import SysfsCache
from agent.errors import NetlinkError
from agent.model import NetnsMode, NodeSnapshot, RdmaDevice, RdmaPort, SystemInfo, format_guid

EPROTONOSUPPORT = 93
RATES = ("100 Gb/sec (2X HDR)", "25 Gb/sec (1X EDR)", "200 Gb/sec (4X HDR)")
DRIVERS = ("mlx5_core", "vfio-pci")
BREAKABLE = ("rate", "state", "ndevs", "ifindex", "sriov_numvfs", "vendor", "node_guid")
BROKEN_AS = {"state": "state", "rate": "rate", "gid_attrs/ndevs/0": "ndevs"}  # port file → its BREAKABLE name


def scratch_dir() -> str | None:
    """tmpfs when the machine has one: sysfs is in memory too, and it keeps the suite quick."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


# --- the generated host ----------------------------------------------------------------------------


@dataclass
class Function:
    """A PCI function and what its driver made: netdev, RDMA device, uverbs/umad char devices."""

    address: str
    pf: str | None
    group: int  # the PF's number: names derive from it
    member: int  # 0 for the PF, VF index + 1 for a VF
    driver: str | None = "mlx5_core"
    generation: int = 0  # bumped at every plug
    incarnation: int = 0  # a new one at every bind: a re-created device differs in GUID and firmware
    model: str = "0x101d"  # the PF's device id: a swapped card is another model
    netdev: str | None = None
    ifindex: int = 0
    away: bool = False  # the netdev lives in another netns
    rdma: str | None = None
    rdma_index: int = 0  # netlink's DEV_INDEX
    chars: tuple[str, ...] = ()
    state: tuple[int, str, int, str] = (4, "ACTIVE", 5, "LinkUp")
    rate: str = RATES[0]
    numvfs: int = 0
    broken: dict[str, str] = field(default_factory=dict)  # which file is broken → how

    @property
    def guid(self) -> int:
        return 0x0C42A10300000000 | (self.group << 24) | (self.member << 16) | (self.incarnation & 0xFFFF)

    @property
    def firmware(self) -> str:
        return f"22.{36 + self.generation}.{1000 + self.incarnation}"


@dataclass
class Rxe:
    name: str
    netdev: str  # a PF netdev it was created on
    index: int


class Host:
    """A host root (``sys``, ``dev``, ``proc``, ``etc``) and the model it was made from. Every change
    goes through the model and is written as the kernel would write it."""

    def __init__(self, root: Path, *, pfs: int, vfs: int, kernel_links: bool) -> None:
        self.root = root
        self.sys = root / "sys"
        self.pci = self.sys / "devices" / "pci0000:00"
        self.kernel_links = kernel_links
        self.functions: dict[str, Function] = {}
        self.rxes: dict[str, Rxe] = {}
        self.grave = itertools.count()
        self.indexes = itertools.count()
        self.incarnations = itertools.count(1)
        self.ifindexes = itertools.count(10)
        self.hidden = root / "other-netns"
        for path in (
            self.sys / "bus/pci/drivers/mlx5_core",
            self.sys / "bus/pci/drivers/vfio-pci",
            self.hidden,
            self.sys / "class/net",
            self.sys / "class/infiniband",
            self.sys / "class/infiniband_verbs",
            self.sys / "class/infiniband_mad",
            root / "dev/infiniband",
            root / "graveyard",
            root / "etc/modprobe.d",
            root / "proc/sys/kernel",
        ):
            path.mkdir(parents=True, exist_ok=True)
        (root / "proc/modules").write_text("ib_core 16384 0 - Live 0x0\nmlx5_ib 16384 0 - Live 0x0\n")
        (root / "proc/sys/kernel/osrelease").write_text("6.1.0-56-amd64\n")
        (root / "proc/cmdline").write_text("ro quiet\n")
        self.write(self.sys / "module/ib_core/parameters/netns_mode", "Y\n")
        self.rdma_cm(True)
        for group in range(pfs):
            self.plug(Function(address=f"0000:{0x3B + group:02x}:00.0", pf=None, group=group, member=0))
            self.set_numvfs(self.pf(group), vfs)

    @property
    def roots(self) -> HostRoots:
        return HostRoots(root=self.root)

    # --- writing the tree ----------------------------------------------------------------------------

    @staticmethod
    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def link(self, path: Path, target: Path) -> None:
        """A relative symlink as kernfs_get_target_path() writes it (``../../../0000:3b:00.0``), or
        shortened as tools/capture_sysfs.py writes them (``../..``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.kernel_links:
            base, ups = path.parent, 0
            while not (target.parent == base or base in target.parent.parents):
                base, ups = base.parent, ups + 1
            text = "../" * ups + str(target.relative_to(base))
        else:
            text = os.path.relpath(target, path.parent)
        path.symlink_to(text)

    def bury(self, path: Path) -> None:
        """Remove an entry for good; parked, so its inode number is never handed out again."""
        if path.is_symlink() or path.exists():
            path.rename(self.root / "graveyard" / str(next(self.grave)))

    def free_name(self, prefix: str, taken: set[str]) -> str:
        """The lowest free number, as the kernel names RDMA devices and char devices (ida)."""
        return next(f"{prefix}{n}" for n in itertools.count() if f"{prefix}{n}" not in taken)

    # --- the model -----------------------------------------------------------------------------------

    def pf(self, group: int) -> Function:
        return self.functions[f"0000:{0x3B + group:02x}:00.0"]

    def vfs(self, pf: Function) -> list[Function]:
        return sorted((f for f in self.functions.values() if f.pf == pf.address), key=lambda f: f.member)

    def pick(self, n: int, *, where: str = "any") -> Function | None:
        candidates = sorted(self.functions.values(), key=lambda f: f.address)
        if where == "pf":
            candidates = [f for f in candidates if f.pf is None]
        elif where == "netdev":
            candidates = [f for f in candidates if f.netdev is not None]
        elif where == "rdma":
            candidates = [f for f in candidates if f.rdma is not None]
        return candidates[n % len(candidates)] if candidates else None

    def rdma_names(self) -> set[str]:
        return {f.rdma for f in self.functions.values() if f.rdma} | set(self.rxes)

    def char_names(self) -> set[str]:
        return {c for f in self.functions.values() for c in f.chars}

    # --- host changes --------------------------------------------------------------------------------

    def plug(self, fn: Function) -> None:
        """A PCI function appears (probe, hot-plug, a VF being created) and its driver binds."""
        fn.generation += 1
        self.functions[fn.address] = fn
        path = self.pci / fn.address
        ids = {
            "vendor": "0x15b3",
            "device": fn.model if fn.pf is None else "0x101e",
            "subsystem_vendor": "0x15b3",
            "subsystem_device": "0x0016",
            "class": "0x020000",
            "numa_node": str(fn.group % 2),
        }
        if fn.pf is None:
            ids |= {"sriov_totalvfs": "8", "sriov_numvfs": "0"}
        for name, value in ids.items():
            self.write(path / name, value + "\n")
        if fn.pf is not None:
            self.link(path / "physfn", self.pci / fn.pf)
        self.link(self.sys / "bus/pci/devices" / fn.address, path)
        self.bind(fn, fn.driver)
        for name, how in list(fn.broken.items()):  # a device that comes up with a broken static file
            self.apply_break(fn, name, how)

    def unplug(self, fn: Function) -> None:
        if fn.pf is None:
            self.set_numvfs(fn, 0)
        self.unbind(fn)
        self.bury(self.sys / "bus/pci/devices" / fn.address)
        self.bury(self.pci / fn.address)
        if fn.pf is not None:  # only through sriov_numvfs, which also drops the virtfn link
            for link in (self.pci / fn.pf).glob("virtfn*"):
                if link.readlink().name == fn.address:
                    self.bury(link)
        del self.functions[fn.address]

    def bind(self, fn: Function, driver: str | None) -> None:
        fn.driver = driver
        if driver is None:
            return
        path = self.pci / fn.address
        self.link(path / "driver", self.sys / "bus/pci/drivers" / driver)
        if driver != "mlx5_core":
            return
        prefix = f"ens{fn.group}f0" + ("np0" if fn.pf is None else f"v{fn.member - 1}")
        fn.netdev, fn.ifindex, fn.away = prefix, next(self.ifindexes), False
        self.write(path / "net" / fn.netdev / "ifindex", f"{fn.ifindex}\n")
        self.link(path / "net" / fn.netdev / "device", path)
        self.link(self.sys / "class/net" / fn.netdev, path / "net" / fn.netdev)
        fn.rdma, fn.rdma_index = self.free_name("mlx5_", self.rdma_names()), next(self.indexes)
        fn.incarnation = next(self.incarnations)
        ib = path / "infiniband" / fn.rdma
        guid = format_guid(fn.guid)
        for name, value in (
            ("node_type", "1: CA"),
            ("node_guid", guid),
            ("sys_image_guid", guid),
            ("fw_ver", fn.firmware),
        ):
            self.write(ib / name, value + "\n")
        self.link(ib / "device", path)
        self.write_port(fn)
        self.write(ib / "ports/1/link_layer", "Ethernet\n")
        self.link(self.sys / "class/infiniband" / fn.rdma, ib)
        chars: list[str] = []
        for kind, cls in (("uverbs", "infiniband_verbs"), ("umad", "infiniband_mad")):
            name = self.free_name(kind, self.char_names() | set(chars))
            chars.append(name)
            self.write(path / cls / name / "ibdev", fn.rdma + "\n")
            if kind == "umad":
                self.write(path / cls / name / "port", "1\n")
            self.link(self.sys / "class" / cls / name, path / cls / name)
            self.write(self.root / "dev/infiniband" / name, "")
        fn.chars = tuple(chars)

    def write_port(self, fn: Function) -> None:
        assert fn.rdma is not None
        port = self.pci / fn.address / "infiniband" / fn.rdma / "ports/1"
        code, name, phys_code, phys = fn.state
        for file, value in (
            ("state", f"{code}: {name}"),
            ("phys_state", f"{phys_code}: {phys}"),
            ("rate", fn.rate),
            ("gid_attrs/ndevs/0", fn.netdev or ""),
        ):
            if BROKEN_AS.get(file) not in fn.broken:  # a broken file stays broken until fixed
                self.write(port / file, value + "\n")

    def unbind(self, fn: Function) -> None:
        path = self.pci / fn.address
        if fn.netdev is not None:
            self.bury(self.sys / "class/net" / fn.netdev)
            self.bury(path / "net" / fn.netdev)
            self.bury(self.hidden / fn.netdev)
            self.bury(self.hidden / f"{fn.netdev}.link")
        if fn.rdma is not None:
            self.bury(self.sys / "class/infiniband" / fn.rdma)
            self.bury(path / "infiniband" / fn.rdma)
        for name in fn.chars:
            cls = "infiniband_verbs" if name.startswith("uverbs") else "infiniband_mad"
            self.bury(self.sys / "class" / cls / name)
            self.bury(path / cls / name)
            self.bury(self.root / "dev/infiniband" / name)
        for rxe in [r for r in self.rxes.values() if r.netdev == fn.netdev]:
            self.delete_rxe(rxe)
        self.bury(path / "driver")
        fn.netdev, fn.rdma, fn.chars, fn.away, fn.driver = None, None, (), False, None
        fn.broken = {k: v for k, v in fn.broken.items() if k in ("vendor", "sriov_numvfs")}

    def set_numvfs(self, pf: Function, count: int) -> None:
        """``echo N > sriov_numvfs``: the kernel removes every VF first, then adds N."""
        for vf in self.vfs(pf):
            self.unplug(vf)
        if "sriov_numvfs" not in pf.broken:
            self.write(self.pci / pf.address / "sriov_numvfs", "0\n")
        for member in range(1, count + 1):
            rid = member + 1
            address = f"0000:{0x3B + pf.group:02x}:{rid >> 3:02x}.{rid & 7}"
            self.plug(Function(address=address, pf=pf.address, group=pf.group, member=member))
            self.link(self.pci / pf.address / f"virtfn{member - 1}", self.pci / address)
        pf.numvfs = count
        if "sriov_numvfs" not in pf.broken:
            self.write(self.pci / pf.address / "sriov_numvfs", f"{count}\n")

    def move_away(self, fn: Function) -> None:
        """``ip link set dev X netns pod``: gone from this netns's class/net and from net/ alike."""
        if fn.netdev is None or fn.away:
            return
        (self.sys / "class/net" / fn.netdev).rename(self.hidden / f"{fn.netdev}.link")
        (self.pci / fn.address / "net" / fn.netdev).rename(self.hidden / fn.netdev)
        fn.away = True

    def move_back(self, fn: Function, new_ifindex: bool) -> None:
        if fn.netdev is None or not fn.away:
            return
        (self.hidden / fn.netdev).rename(self.pci / fn.address / "net" / fn.netdev)
        (self.hidden / f"{fn.netdev}.link").rename(self.sys / "class/net" / fn.netdev)
        fn.away = False
        if new_ifindex:  # the ifindex was taken in this netns meanwhile
            fn.ifindex = next(self.ifindexes)
            if "ifindex" not in fn.broken:
                self.write(self.pci / fn.address / "net" / fn.netdev / "ifindex", f"{fn.ifindex}\n")

    def rename_netdev(self, fn: Function) -> None:
        """``ip link set X name Y``: kernfs renames the entries in place; the GID table follows."""
        if fn.netdev is None or fn.away:
            return
        old, new = fn.netdev, fn.netdev + "r"
        net = self.pci / fn.address / "net"
        (net / old).rename(net / new)
        self.bury(self.sys / "class/net" / old)
        self.link(self.sys / "class/net" / new, net / new)
        fn.netdev = new
        for rxe in self.rxes.values():
            if rxe.netdev == old:
                rxe.netdev = new
                self.write_rxe(rxe)
        if fn.rdma is not None:
            self.write_port(fn)

    def rename_rdma(self, fn: Function) -> None:
        """``rdma dev set mlx5_0 name rocep59s0f0``: the device and its class entry are renamed, and
        its char devices' ibdev (which prints the device's current name) changes in place."""
        if fn.rdma is None:
            return
        old, new = fn.rdma, f"rocep{0x3B + fn.group}s{fn.member}f0g{fn.generation}"
        if new in self.rdma_names():
            return
        ib = self.pci / fn.address / "infiniband"
        (ib / old).rename(ib / new)
        self.bury(self.sys / "class/infiniband" / old)
        self.link(self.sys / "class/infiniband" / new, ib / new)
        fn.rdma = new
        for name in fn.chars:
            cls = "infiniband_verbs" if name.startswith("uverbs") else "infiniband_mad"
            (self.pci / fn.address / cls / name / "ibdev").write_text(new + "\n")

    def add_rxe(self, fn: Function) -> None:
        """``rdma link add rxeN type rxe netdev X``: a device under devices/virtual, no device link."""
        if fn.netdev is None or fn.away:
            return
        rxe = Rxe(name=self.free_name("rxe", set(self.rxes)), netdev=fn.netdev, index=next(self.indexes))
        self.rxes[rxe.name] = rxe
        path = self.sys / "devices/virtual/infiniband" / rxe.name
        for name, value in (
            ("node_type", "1: CA"),
            ("node_guid", "5254:00ff:fe12:3456"),
            ("sys_image_guid", "5254:00ff:fe12:3456"),
            ("fw_ver", ""),
            ("ports/1/state", "4: ACTIVE"),
            ("ports/1/phys_state", "5: LinkUp"),
            ("ports/1/link_layer", "Ethernet"),
            ("ports/1/rate", "10 Gb/sec (1X QDR)"),
        ):
            self.write(path / name, value + "\n")
        self.write_rxe(rxe)
        self.link(self.sys / "class/infiniband" / rxe.name, path)

    def write_rxe(self, rxe: Rxe) -> None:
        path = self.sys / "devices/virtual/infiniband" / rxe.name
        self.write(path / "parent", rxe.netdev + "\n")
        self.write(path / "ports/1/gid_attrs/ndevs/0", rxe.netdev + "\n")

    def delete_rxe(self, rxe: Rxe) -> None:
        self.bury(self.sys / "class/infiniband" / rxe.name)
        self.bury(self.sys / "devices/virtual/infiniband" / rxe.name)
        del self.rxes[rxe.name]

    def rdma_cm(self, loaded: bool) -> None:
        if loaded:
            self.write(self.sys / "devices/virtual/misc/rdma_cm/dev", "10:58\n")
            if not (self.sys / "class/misc/rdma_cm").is_symlink():
                self.link(self.sys / "class/misc/rdma_cm", self.sys / "devices/virtual/misc/rdma_cm")
            self.write(self.root / "dev/infiniband/rdma_cm", "")
        else:
            self.bury(self.sys / "class/misc/rdma_cm")
            self.bury(self.sys / "devices/virtual/misc/rdma_cm")
            self.bury(self.root / "dev/infiniband/rdma_cm")

    def breakable(self, fn: Function, name: str) -> Path | None:
        """Where ``name`` lives for ``fn``, if it has one."""
        path = self.pci / fn.address
        ib = path / "infiniband" / fn.rdma / "ports/1" if fn.rdma else None
        return {
            "rate": ib / "rate" if ib else None,
            "state": ib / "state" if ib else None,
            "ndevs": ib / "gid_attrs/ndevs/0" if ib else None,
            "ifindex": path / "net" / fn.netdev / "ifindex" if fn.netdev and not fn.away else None,
            "sriov_numvfs": path / "sriov_numvfs" if fn.pf is None else None,
            "vendor": path / "vendor",
            "node_guid": path / "infiniband" / fn.rdma / "node_guid" if fn.rdma else None,
        }[name]

    def apply_break(self, fn: Function, name: str, how: str) -> None:
        path = self.breakable(fn, name)
        if path is None:
            return
        self.bury(path)
        if how == "directory":  # reads fail with EISDIR
            path.mkdir(parents=True)
        elif how == "loop":  # reads fail with ELOOP
            path.symlink_to(path.name)
        else:  # text the kernel never prints
            self.write(path, "garbage\n")
        fn.broken[name] = how

    def fix(self, fn: Function) -> None:
        """The broken files of ``fn`` read well again (a dynamic file; or a static one that never
        read well, so never was kept)."""
        for name in list(fn.broken):
            path = self.breakable(fn, name)
            del fn.broken[name]
            if path is None:
                continue
            self.bury(path)
        if fn.rdma is not None:
            self.write_port(fn)
            if "node_guid" not in fn.broken:
                self.write(self.pci / fn.address / "infiniband" / fn.rdma / "node_guid", format_guid(fn.guid) + "\n")
        self.write(self.pci / fn.address / "vendor", "0x15b3\n")
        if fn.netdev and not fn.away:
            self.write(self.pci / fn.address / "net" / fn.netdev / "ifindex", f"{fn.ifindex}\n")
        if fn.pf is None:
            self.write(self.pci / fn.address / "sriov_numvfs", f"{fn.numvfs}\n")

    # --- what netlink says about the model -----------------------------------------------------------

    def netlink(self) -> RdmaNetlink:
        return cast(RdmaNetlink, ModelNetlink(self))


class ModelNetlink:
    """RDMA netlink of the model host, as the kernel's GET/PORT_GET/SYS_GET would answer. Netdevs in
    another netns are not named (nldev fills NDEV only for netdevs in the caller's netns)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def __enter__(self) -> ModelNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _devices(self) -> list[tuple[RdmaDevice, RdmaPort]]:
        out = []
        for fn in self.host.functions.values():
            if fn.rdma is None:
                continue
            code, name, phys_code, _ = fn.state
            phys = {5: "LINK_UP", 3: "DISABLED"}[phys_code]
            device = RdmaDevice(
                name=fn.rdma,
                index=fn.rdma_index,
                node_type="ca",
                protocol="roce",
                fw_version=fn.firmware,
                node_guid=format_guid(fn.guid),
                sys_image_guid=format_guid(fn.guid),
                port_count=1,
            )
            shown = fn.netdev if fn.netdev and not fn.away else None
            port = RdmaPort(
                port=1,
                state=name,
                state_code=code,
                physical_state=phys,
                physical_state_code=phys_code,
                netdev=shown,
                netdev_index=fn.ifindex if shown else None,
            )
            out.append((device, port))
        for rxe in self.host.rxes.values():
            guid = "5254:00ff:fe12:3456"
            device = RdmaDevice(
                name=rxe.name,
                index=rxe.index,
                node_type="ca",
                protocol="roce",
                node_guid=guid,
                sys_image_guid=guid,
                port_count=1,
            )
            owner = next((f for f in self.host.functions.values() if f.netdev == rxe.netdev), None)
            shown = rxe.netdev if owner is not None and not owner.away else None
            port = RdmaPort(
                port=1,
                state="ACTIVE",
                state_code=4,
                physical_state="LINK_UP",
                physical_state_code=5,
                netdev=shown,
                netdev_index=owner.ifindex if shown and owner else None,
            )
            out.append((device, port))
        return sorted(out, key=lambda d: d[0].index or 0)

    def devices(self) -> list[RdmaDevice]:
        return [device for device, _ in self._devices()]

    def ports(self, device_index: int) -> list[RdmaPort]:
        return [port for device, port in self._devices() if device.index == device_index]

    def system(self) -> SystemInfo:
        return SystemInfo(netns_mode=NetnsMode.SHARED, copy_on_fork=True)


def no_netlink() -> RdmaNetlink:
    raise NetlinkError("open NETLINK_RDMA socket", EPROTONOSUPPORT)


# --- changes between cycles ------------------------------------------------------------------------

KINDS = (
    "idle",
    "unplug",
    "replug",
    "swap",
    "numvfs",
    "rebind",
    "away",
    "back",
    "rename_netdev",
    "rename_rdma",
    "port",
    "node",
    "break",
    "fix",
    "rxe_add",
    "rxe_del",
    "rdma_cm",
)


@dataclass(frozen=True)
class Change:
    kind: str
    target: int  # which function (modulo how many fit)
    amount: int  # VFs, rate, which driver, …
    what: str  # which file breaks
    how: str  # how it breaks


CHANGES = st.builds(
    Change,
    kind=st.sampled_from(KINDS),
    target=st.integers(0, 63),
    amount=st.integers(0, 5),
    what=st.sampled_from(BREAKABLE),
    how=st.sampled_from(("directory", "loop", "garbage")),
)


TARGETS = {
    "unplug": "pf",
    "swap": "pf",
    "numvfs": "pf",
    "away": "netdev",
    "back": "netdev",
    "rename_netdev": "netdev",
    "rxe_add": "netdev",
    "rename_rdma": "rdma",
    "port": "rdma",
}


def apply(host: Host, change: Change) -> None:
    kind, n = change.kind, change.target
    fn = host.pick(n, where=TARGETS.get(kind, "any"))
    if kind == "replug":
        gone = [g for g in range(3) if f"0000:{0x3B + g:02x}:00.0" not in host.functions]
        if gone:
            group = gone[n % len(gone)]
            new = Function(
                address=f"0000:{0x3B + group:02x}:00.0", pf=None, group=group, member=0, generation=change.amount
            )
            if change.amount % 3 == 1:  # comes up with a static file the kernel cannot print
                new.broken[change.what if change.what in ("vendor", "node_guid") else "node_guid"] = change.how
            host.plug(new)
            host.set_numvfs(new, change.amount % 3)
    elif kind == "node":
        names = sorted(host.char_names() | {"rdma_cm"})
        node = host.root / "dev/infiniband" / names[n % len(names)]
        if node.exists():
            host.bury(node)
        else:
            host.write(node, "")
    elif kind == "rxe_del" and host.rxes:
        host.delete_rxe(host.rxes[sorted(host.rxes)[n % len(host.rxes)]])
    elif kind == "rdma_cm":
        host.rdma_cm(not (host.sys / "class/misc/rdma_cm").is_symlink())
    elif fn is not None:
        apply_to(host, fn, change)


def apply_to(host: Host, fn: Function, change: Change) -> None:
    kind = change.kind
    if kind == "unplug":
        host.unplug(fn)
    elif kind == "swap":  # another card in the same slot, between two cycles: same address, new entry
        vfs = fn.numvfs
        host.unplug(fn)
        new = Function(
            address=fn.address,
            pf=None,
            group=fn.group,
            member=0,
            generation=fn.generation,
            model="0x1021" if fn.model == "0x101d" else "0x101d",
        )
        host.plug(new)
        host.set_numvfs(new, vfs)
    elif kind == "numvfs":
        host.set_numvfs(fn, change.amount % 4)
    elif kind == "rebind":
        host.unbind(fn)
        host.bind(fn, (*DRIVERS, None)[change.amount % 3])
    elif kind == "away":
        host.move_away(fn)
    elif kind == "back":
        host.move_back(fn, new_ifindex=change.amount % 2 == 1)
    elif kind == "rename_netdev":
        host.rename_netdev(fn)
    elif kind == "rename_rdma":
        host.rename_rdma(fn)
    elif kind == "port":
        fn.rate = RATES[change.amount % len(RATES)]
        fn.state = (4, "ACTIVE", 5, "LinkUp") if change.amount % 2 == 0 else (1, "DOWN", 3, "Disabled")
        host.write_port(fn)
    elif kind == "break" and change.what not in ("vendor", "node_guid"):
        host.apply_break(fn, change.what, change.how)  # dynamic files only: static ones never change in place
    elif kind == "fix":
        host.fix(fn)
    elif kind == "rxe_add":
        host.add_rxe(fn)


# --- the property ----------------------------------------------------------------------------------


@contextmanager
def generated_host(pfs: int, vfs: int, *, kernel_links: bool) -> Iterator[Host]:
    with tempfile.TemporaryDirectory(prefix="rna-cache-", dir=scratch_dir()) as tmp:
        yield Host(Path(tmp), pfs=pfs, vfs=vfs, kernel_links=kernel_links)


def zero() -> float:
    return 0.0


def check(host: Host, cache: SnapshotCache, netlink: bool) -> NodeSnapshot:
    factory = host.netlink if netlink else no_netlink
    cold = take_snapshot(host.roots, netlink=factory, clock=zero)
    for _ in range(2):  # the first sighting of an identity is read; the second is kept; then it is used
        warm = take_snapshot(host.roots, netlink=factory, clock=zero, cache=cache)
        assert warm == cold
    return cold


def reachable(host: Host) -> set[str]:
    """The functions the agent lists: those behind a netdev in this netns or an RDMA device, the PFs of
    those, and all VFs of those PFs."""
    found = {f.address for f in host.functions.values() if (f.netdev and not f.away) or f.rdma}
    found |= {f.pf for f in host.functions.values() if f.address in found and f.pf}
    return found | {f.address for f in host.functions.values() if f.pf in found}


def agrees_with_model(host: Host, snapshot: NodeSnapshot) -> None:
    """The cold snapshot saw what the host is (so the changes did what they say)."""
    functions = {f.address: f for f in snapshot.pci_functions}
    assert set(functions) == reachable(host)
    for address, fn in host.functions.items():
        if address not in functions:
            continue
        assert functions[address].driver == fn.driver
        assert functions[address].netdevs == ((fn.netdev,) if fn.netdev and not fn.away else ())
        assert functions[address].rdma_devices == ((fn.rdma,) if fn.rdma else ())
    assert {d.name for d in snapshot.devices} == host.rdma_names()


@given(
    pfs=st.integers(1, 2),
    vfs=st.integers(0, 3),
    kernel_links=st.booleans(),
    netlink=st.booleans(),
    refresh_every=st.sampled_from((1, 4, 1000)),
    changes=st.lists(CHANGES, max_size=8),
)
def test_warm_snapshot_equals_cold(
    pfs: int, vfs: int, kernel_links: bool, netlink: bool, refresh_every: int, changes: list[Change]
) -> None:
    cache = SnapshotCache(SysfsCache(refresh_every=refresh_every))
    with generated_host(pfs, vfs, kernel_links=kernel_links) as host:
        agrees_with_model(host, check(host, cache, netlink))
        for change in changes:
            apply(host, change)
            agrees_with_model(host, check(host, cache, netlink))


def test_the_generated_host_is_read_as_the_kernel_would_show_it() -> None:
    # The model is the referee of the property above: make sure it means what it says.
    with generated_host(2, 2, kernel_links=True) as host:
        snapshot = check(host, SnapshotCache(), netlink=True)
        assert snapshot.problems == ()
        assert [(f.address, f.physfn, f.virtfns, f.netdevs, f.driver) for f in snapshot.pci_functions][:3] == [
            ("0000:3b:00.0", None, ("0000:3b:00.2", "0000:3b:00.3"), ("ens0f0np0",), "mlx5_core"),
            ("0000:3b:00.2", "0000:3b:00.0", (), ("ens0f0v0",), "mlx5_core"),
            ("0000:3b:00.3", "0000:3b:00.0", (), ("ens0f0v1",), "mlx5_core"),
        ]
        assert str((host.sys / "class/net/ens0f0np0/device").readlink()) == "../../../0000:3b:00.0"
        device = snapshot.device("mlx5_0")
        assert device is not None and device.pci_address == "0000:3b:00.0"
        assert device.char_devices == ("umad0", "uverbs0")
        assert (device.ports[0].rate, device.ports[0].link_layer, device.ports[0].netdev) == (
            RATES[0],
            "Ethernet",
            "ens0f0np0",
        )
        host.add_rxe(host.pf(0))
        host.move_away(host.pf(1))
        host.apply_break(host.pf(0), "rate", "directory")
        snapshot = check(host, SnapshotCache(), netlink=False)
        rxe = snapshot.device("rxe0")
        assert rxe is not None and (rxe.pci_address, rxe.ports[0].netdev) == ("0000:3b:00.0", "ens0f0np0")
        assert [(p.code, p.subject) for p in snapshot.problems if p.code == "sysfs_read_error"] == [
            ("sysfs_read_error", "mlx5_0")
        ]
        away = snapshot.pci("0000:3c:00.0")
        assert away is not None and away.netdevs == () and away.rdma_devices == ("mlx5_3",)
