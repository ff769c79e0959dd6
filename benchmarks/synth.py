"""A synthetic RDMA node of any size, for benchmarks that need no kernel.

Two halves that agree with each other:

* netlink: NETLINK_RDMA replies built from messages recorded on a real kernel
  (tests/fixtures/netlink/<kernel>/*.reply.hex, captured by tools/capture_netlink.py). A recorded
  message is split into its attributes, the values that differ per device (index, names, GUIDs,
  netdev index) are replaced, and it is packed again exactly as the kernel packs it (same attribute
  order, same padding, same header flags), so :func:`rebuild` of an unchanged template gives back the
  recorded bytes. :class:`SynthExchange` serves them to ``RdmaNetlink(exchange=…)`` as raw reply
  bytes, decoded by the agent's own decoder, as the socket path does.
* sysfs: a generated tree with the real layout (``class/infiniband/<dev>`` → the PCI function's
  ``infiniband/<dev>``, ``class/net/<if>`` → its ``net/<if>``, ``bus/pci/devices/<addr>`` →
  ``devices/pci0000:00/<addr>``, ``physfn``/``virtfnN``/``driver`` links, char devices and their
  /dev nodes) for N ConnectX-6 Dx functions: PFs with up to 127 VFs each, one RDMA device and one
  netdev per function. :class:`SynthNode.files` lists every attribute file the agent reads, for the
  minimal read-loop baseline.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import HostRoots
from agent.discover.rdma_netlink import (
    CMD_GET,
    CMD_PORT_GET,
    CMD_SYS_GET,
    CMD_SYS_SET,
    RdmaNetlink,
)

REPO = Path(__file__).resolve().parents[1]
NETLINK_FIXTURES = REPO / "tests" / "fixtures" / "netlink"
TEMPLATE_KERNEL = "6.1.0-56-amd64"

# Attribute numbers (include/uapi/rdma/rdma_netlink.h) of the values changed per device.
DEV_INDEX, DEV_NAME, NODE_GUID, SYS_IMAGE_GUID, NDEV_INDEX, NDEV_NAME = 1, 2, 6, 7, 50, 51
_U32 = {DEV_INDEX, NDEV_INDEX}
_U64 = {NODE_GUID, SYS_IMAGE_GUID}
_STR = {DEV_NAME, NDEV_NAME}

FUNCTIONS_PER_PF = 128  # a PF and its 127 VFs (ConnectX sriov_totalvfs maximum)
VENDOR, PF_DEVICE, VF_DEVICE = "15b3", "101d", "101e"  # Mellanox ConnectX-6 Dx and its VF


# --- netlink ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One netlink message split apart: header fields and (type, body) attributes in wire order.
    Control messages (NLMSG_ERROR, NLMSG_DONE: types below 0x10) keep their payload as it is."""

    type: int
    flags: int
    seq: int
    pid: int
    attrs: tuple[tuple[int, bytes], ...] = ()
    payload: bytes | None = None  # control messages only


NLMSG_MIN_TYPE = 0x10  # include/uapi/linux/netlink.h: types below are control messages


def split(raw: bytes) -> Message:
    """Parse one recorded message (nlmsghdr + attributes, no family header)."""
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", raw)
    if length != len(raw):
        raise ValueError(f"message claims {length} bytes, has {len(raw)}")
    if mtype < NLMSG_MIN_TYPE:
        return Message(type=mtype, flags=flags, seq=seq, pid=pid, payload=bytes(raw[16:]))
    attrs: list[tuple[int, bytes]] = []
    offset = 16
    while offset < length:
        if length - offset < 4:
            raise ValueError(f"{length - offset} stray bytes after the last attribute")
        alen, atype = struct.unpack_from("=HH", raw, offset)
        if alen < 4 or offset + alen > length:
            raise ValueError(f"attribute {atype} claims {alen} bytes at offset {offset} of {length}")
        attrs.append((atype, bytes(raw[offset + 4 : offset + alen])))
        offset += (alen + 3) & ~3
    return Message(type=mtype, flags=flags, seq=seq, pid=pid, attrs=tuple(attrs))


def pack(message: Message) -> bytes:
    """The wire bytes of ``message``: attributes padded to 4 bytes (NLA_ALIGN), the last one too."""
    if message.payload is not None:
        body = message.payload
    else:
        body = b"".join(
            struct.pack("=HH", 4 + len(value), atype) + value + b"\0" * (-len(value) % 4)
            for atype, value in message.attrs
        )
    return struct.pack("=IHHII", 16 + len(body), message.type, message.flags, message.seq, message.pid) + body


def _encode(atype: int, value: int | str) -> bytes:
    if atype in _U32:
        return struct.pack("=I", int(value))
    if atype in _U64:
        return struct.pack("=Q", int(value))
    if atype in _STR:
        return str(value).encode() + b"\0"
    raise ValueError(f"attribute {atype} is not one the synthesizer changes")


def rebuild(template: Message, values: dict[int, int | str]) -> bytes:
    """``template`` with the attributes in ``values`` replaced (by attribute number), packed."""
    if template.payload is not None:
        raise ValueError(f"message type {template.type:#x} is a control message, not an NLDEV message")
    attrs = tuple((atype, _encode(atype, values[atype]) if atype in values else body) for atype, body in template.attrs)
    unknown = set(values) - {atype for atype, _ in template.attrs}
    if unknown:
        raise ValueError(f"template has no attribute {sorted(unknown)}")
    return pack(Message(type=template.type, flags=template.flags, seq=template.seq, pid=template.pid, attrs=attrs))


def recorded(case: str, kernel: str = TEMPLATE_KERNEL) -> list[bytes]:
    """The messages of one recorded reply, in arrival order."""
    text = (NETLINK_FIXTURES / kernel / f"{case}.reply.hex").read_text()
    return [bytes.fromhex(line) for line in text.split()]


@dataclass(frozen=True, slots=True)
class Templates:
    device: Message  # a GET dump entry (rxe0)
    port: Message  # a PORT_GET dump entry (rxe0 port 1)
    done: bytes  # NLMSG_DONE ending a dump
    port_done: bytes
    system: bytes  # the SYS_GET doit reply and its ACK
    set_ok: bytes  # the SYS_SET ACK

    @classmethod
    def load(cls, kernel: str = TEMPLATE_KERNEL) -> Templates:
        dev = recorded("dev_get_dump", kernel)
        port = recorded("port_get_dump_rxe0", kernel)
        return cls(
            device=split(dev[0]),
            port=split(port[0]),
            done=dev[-1],
            port_done=port[-1],
            system=b"".join(recorded("sys_get_doit", kernel)),
            set_ok=b"".join(recorded("sys_set_shared_ok", kernel)),
        )


# --- the node -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Function:
    """One PCI function with its RDMA device and netdev."""

    index: int  # RDMA device index (netlink DEV_INDEX) and position
    address: str
    pf: str | None  # the PF's address for a VF
    rdma: str
    netdev: str
    ifindex: int
    guid: int

    @property
    def is_pf(self) -> bool:
        return self.pf is None


def layout(count: int, per_pf: int = FUNCTIONS_PER_PF) -> list[Function]:
    """``count`` functions: PF 0000:BB:00.0 then its VFs 0000:BB:DD.F (routing ids 2…), per bus."""
    if count < 1:
        raise ValueError(f"a node needs at least one function, got {count}")
    if not 1 <= per_pf <= 256:
        raise ValueError(f"functions per PF must be 1..256, got {per_pf}")
    functions: list[Function] = []
    for i in range(count):
        group, member = divmod(i, per_pf)
        bus = 0x3B + group
        if member == 0:
            address, pf, netdev = f"0000:{bus:02x}:00.0", None, f"ens{group + 1}f0np0"
        else:
            rid = member + 1  # VFs start at routing id 2 on ConnectX (first VF offset)
            address = f"0000:{bus:02x}:{rid >> 3:02x}.{rid & 7}"
            pf, netdev = f"0000:{bus:02x}:00.0", f"ens{group + 1}f0v{member - 1}"
        guid = 0x0C42A10300000000 | (bus << 16) | member
        functions.append(
            Function(index=i, address=address, pf=pf, rdma=f"mlx5_{i}", netdev=netdev, ifindex=4 + i, guid=guid)
        )
    return functions


@dataclass(slots=True)
class SynthNode:
    """A generated host root: ``root/sys``, ``root/dev``, ``root/etc``; ``/proc`` is the real one."""

    root: Path
    functions: list[Function]
    files: list[Path] = field(default_factory=list)  # attribute files the agent reads
    dirs: list[Path] = field(default_factory=list)  # directories the agent lists
    links: list[Path] = field(default_factory=list)  # symlinks the agent reads

    @property
    def roots(self) -> HostRoots:
        return HostRoots(root=self.root, proc=Path("/proc"))


def _write(path: Path, text: str, files: list[Path] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if files is not None:
        files.append(path)


def _link(path: Path, target: Path, links: list[Path] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(target, path.parent))  # relative, as sysfs links are
    if links is not None:
        links.append(path)


def build_node(root: Path, count: int, *, per_pf: int = FUNCTIONS_PER_PF) -> SynthNode:
    """Generate the sysfs and /dev trees of a node with ``count`` functions under ``root``."""
    functions = layout(count, per_pf)
    node = SynthNode(root=root, functions=functions)
    sys_ = root / "sys"
    files, links = node.files, node.links
    pci_root = sys_ / "devices" / "pci0000:00"
    driver = sys_ / "bus" / "pci" / "drivers" / "mlx5_core"
    driver.mkdir(parents=True)
    vfs_of: dict[str, list[Function]] = {}
    for f in functions:
        if f.pf is not None:
            vfs_of.setdefault(f.pf, []).append(f)
    node.dirs += [
        sys_ / "class" / "infiniband",
        sys_ / "class" / "net",
        sys_ / "class" / "infiniband_verbs",
        sys_ / "class" / "infiniband_mad",
    ]
    for f in functions:
        pci = pci_root / f.address
        bus_link = sys_ / "bus" / "pci" / "devices" / f.address
        _link(bus_link, pci, None)
        # The PCI function (bus/pci/devices/<addr>), read through the bus link as the agent does.
        attrs = {
            "vendor": f"0x{VENDOR}",
            "device": f"0x{PF_DEVICE if f.is_pf else VF_DEVICE}",
            "subsystem_vendor": f"0x{VENDOR}",
            "subsystem_device": "0x0016",
            "class": "0x020000",
            "numa_node": str(f.index % 2),
        }
        if f.is_pf:
            vfs = vfs_of.get(f.address, [])
            attrs |= {"sriov_totalvfs": "127", "sriov_numvfs": str(len(vfs))}
        for name, value in attrs.items():
            _write(pci / name, value + "\n", None)
            files.append(bus_link / name)
        _link(pci / "driver", driver, None)
        links.append(bus_link / "driver")
        if f.pf is not None:
            _link(pci / "physfn", pci_root / f.pf, None)
            links.append(bus_link / "physfn")
        else:
            for n, vf in enumerate(vfs_of.get(f.address, [])):
                _link(pci / f"virtfn{n}", pci_root / vf.address, None)
                links.append(bus_link / f"virtfn{n}")
        node.dirs += [bus_link, bus_link / "net", bus_link / "infiniband"]
        # The netdev (class/net/<if> → <addr>/net/<if>).
        netdir = pci / "net" / f.netdev
        _write(netdir / "ifindex", f"{f.ifindex}\n", None)
        _link(netdir / "device", pci, None)
        _link(sys_ / "class" / "net" / f.netdev, netdir, None)
        files.append(sys_ / "class" / "net" / f.netdev / "ifindex")
        links.append(sys_ / "class" / "net" / f.netdev / "device")
        # The RDMA device (class/infiniband/<dev> → <addr>/infiniband/<dev>).
        ibdir = pci / "infiniband" / f.rdma
        cls = sys_ / "class" / "infiniband" / f.rdma
        guid = ":".join(f"{(f.guid >> s) & 0xFFFF:04x}" for s in (48, 32, 16, 0))
        port = {
            "state": "4: ACTIVE",
            "phys_state": "5: LinkUp",
            "link_layer": "Ethernet",
            "rate": "100 Gb/sec (2X HDR)",
            "gid_attrs/ndevs/0": f.netdev,
        }
        dev_attrs = {
            "node_type": "1: CA",
            "node_guid": guid,
            "sys_image_guid": guid,
            "fw_ver": "22.36.1010",
            "hca_type": "MT4123",  # mlx5's driver attributes (ConnectX-6)
            "board_id": "MT_0000000223",
        }
        for name, value in dev_attrs.items():
            _write(ibdir / name, value + "\n", None)
            files.append(cls / name)
        for name, value in port.items():
            _write(ibdir / "ports" / "1" / name, value + "\n", None)
            files.append(cls / "ports" / "1" / name)
        _link(ibdir / "device", pci, None)
        _link(cls, ibdir, None)
        links.append(cls / "device")
        node.dirs += [cls / "ports"]
        # Char devices: uverbsN and umadN with their /dev nodes.
        for kind, cls_name, extra in (("uverbs", "infiniband_verbs", {}), ("umad", "infiniband_mad", {"port": "1"})):
            char = sys_ / "class" / cls_name / f"{kind}{f.index}"
            for name, value in {"ibdev": f.rdma, **extra}.items():
                _write(char / name, value + "\n", files)
            _write(root / "dev" / "infiniband" / f"{kind}{f.index}", "", None)
    (sys_ / "class" / "misc" / "rdma_cm").mkdir(parents=True)
    _write(root / "dev" / "infiniband" / "rdma_cm", "", None)
    _write(sys_ / "module" / "ib_core" / "parameters" / "netns_mode", "Y\n", files)
    for module in ("mlx5_core", "mlx5_ib", "ib_uverbs", "ib_umad", "rdma_ucm"):
        (sys_ / "module" / module).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "modprobe.d").mkdir(parents=True)
    return node


# --- serving netlink ---------------------------------------------------------------------------------


class SynthExchange:
    """An ``Exchange`` answering GET/PORT_GET dumps, SYS_GET and SYS_SET for the node's functions.

    Replies are built once; each call returns the reply bytes (as the socket would), which
    ``RdmaNetlink`` then decodes, so decoding cost is measured, the kernel's work is not."""

    def __init__(self, functions: Sequence[Function], templates: Templates | None = None) -> None:
        t = templates or Templates.load()
        devices = [
            rebuild(t.device, {DEV_INDEX: f.index, DEV_NAME: f.rdma, NODE_GUID: f.guid, SYS_IMAGE_GUID: f.guid})
            for f in functions
        ]
        self.dev_dump = b"".join(devices) + t.done
        ports: dict[int, dict[int, int | str]] = {
            f.index: {DEV_INDEX: f.index, DEV_NAME: f.rdma, NDEV_INDEX: f.ifindex, NDEV_NAME: f.netdev}
            for f in functions
        }
        self.port_dumps = {index: rebuild(t.port, values) + t.port_done for index, values in ports.items()}
        self.system = t.system
        self.set_ok = t.set_ok
        self.calls = 0

    def reply(self, cmd: int, attrs: Sequence[tuple[str, int | str]]) -> bytes:
        given = dict(attrs)
        if cmd == CMD_GET:
            return self.dev_dump
        if cmd == CMD_PORT_GET:
            index = given.get("DEV_INDEX")
            if not isinstance(index, int) or index not in self.port_dumps:
                raise ValueError(f"PORT_GET for unknown device index {index!r}")
            return self.port_dumps[index]
        if cmd == CMD_SYS_GET:
            return self.system
        if cmd == CMD_SYS_SET:
            return self.set_ok
        raise ValueError(f"no synthesized reply for command {cmd}")

    def __call__(self, cmd: int, attrs: Sequence[tuple[str, int | str]], flags: int) -> bytes:
        self.calls += 1
        return self.reply(cmd, attrs)

    def factory(self) -> RdmaNetlink:
        """A ``netlink=`` factory for ``take_snapshot``/``Agent``: a fresh adapter per use, as the agent opens one."""
        return RdmaNetlink(exchange=self)


def read_all(node: SynthNode) -> int:
    """The baseline: list every directory and read every file and link the agent reads, nothing else.
    Returns the bytes read (so the loop cannot be optimised away)."""
    # Plain os calls on purpose, no pathlib: this is the floor any reader pays.
    total = 0
    for directory in node.dirs:
        with contextlib.suppress(FileNotFoundError):
            total += len(os.listdir(directory))  # noqa: PTH208
    for path in node.files:
        with open(path, "rb") as fh:  # noqa: PTH123
            total += len(fh.read())
    for link in node.links:
        total += len(os.readlink(link))  # noqa: PTH115
    return total
