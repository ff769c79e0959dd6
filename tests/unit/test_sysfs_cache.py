"""The sysfs cache skips the reads it says it skips and no others: counted system calls per snapshot
on captured trees (igb SR-IOV with rxe on its PF and VF), re-created and renamed devices, the
refresh interval, errors never kept, the first sighting never kept, and netlink's ports not read
again from sysfs."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config, HostRoots
from agent.discover import sysfs
from agent.discover.rdma_netlink import RdmaNetlink
from agent.discover.snapshot import MergeMemo, NetlinkDevice, SnapshotCache, merge_devices, merge_port, take_snapshot
from agent.discover.sysfs import SysfsReader, files
from agent.errors import NetlinkError
from agent.loop import Agent
from agent.model import NodeSnapshot, RdmaDevice, RdmaPort
from tests.netlink_fixtures import rxe_replay
from tests.snapshots import kernel_of
from tests.sysfs_fixtures import load_tree

PF, VF0, VF1 = "0000:01:00.0", "0000:01:10.0", "0000:01:10.2"
STATIC = (
    "vendor",
    "device",
    "subsystem_vendor",
    "subsystem_device",
    "class",
    "numa_node",
    "node_type",
    "node_guid",
    "sys_image_guid",
    "fw_ver",
    "link_layer",
    "ibdev",
    "port",
)


class Io:
    """System calls on paths under sysfs and /dev, by (call, last path component)."""

    def __init__(self, roots: HostRoots) -> None:
        self.under = (str(roots.sysfs) + "/", str(roots.devfs) + "/")
        self.calls: Counter[tuple[str, str]] = Counter()

    def record(self, call: str, path: object) -> None:
        text = os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else ""
        if text.startswith(self.under):
            self.calls[(call, text.rsplit("/", 1)[-1])] += 1

    def count(self, call: str, name: str | None = None) -> int:
        return sum(n for (c, base), n in self.calls.items() if c == call and name in (None, base))

    def opened(self) -> Counter[str]:
        return Counter({base: n for (c, base), n in self.calls.items() if c == "open"})


@pytest.fixture
def tree(tmp_path: Path) -> HostRoots:
    return load_tree("igb-sriov", tmp_path)


@pytest.fixture
def io(tree: HostRoots, monkeypatch: pytest.MonkeyPatch) -> Io:
    """Counts every os.open/readlink/scandir/stat/lstat under the tree (os.path.exists is a stat)."""
    counter = Io(tree)
    for call in ("open", "readlink", "scandir", "stat", "lstat"):
        real: Callable[..., Any] = getattr(os, call)

        def wrapper(path: Any, *args: Any, _real: Callable[..., Any] = real, _call: str = call, **kw: Any) -> Any:
            counter.record(_call, path)
            return _real(path, *args, **kw)

        monkeypatch.setattr(os, call, wrapper)
    return counter


def no_netlink() -> RdmaNetlink:
    raise NetlinkError("open NETLINK_RDMA socket", 93)  # EPROTONOSUPPORT: sysfs is all there is


def snap(roots: HostRoots, cache: SnapshotCache | None) -> NodeSnapshot:
    return take_snapshot(roots, netlink=no_netlink, clock=lambda: 0.0, cache=cache)


def cycles(roots: HostRoots, io: Io, cache: SnapshotCache, n: int) -> list[Counter[str]]:
    """What each of ``n`` warm snapshots opened; each one equals a cold snapshot of the same tree."""
    opened = []
    for _ in range(n):
        io.calls.clear()
        warm = snap(roots, cache)
        opened.append(io.opened())
        assert warm == snap(roots, None)
    return opened


def test_a_settled_snapshot_reads_only_what_can_change(tree: HostRoots, io: Io) -> None:
    cache = SnapshotCache()
    first, second, third = cycles(tree, io, cache, 3)
    # The first two read everything (the second sighting is the one kept), the third only what changes.
    assert first["vendor"] == second["vendor"] == 3 and first["node_guid"] == second["node_guid"] == 2
    assert third == Counter(
        {
            "state": 2,
            "phys_state": 2,
            "0": 2,
            "rate": 2,
            "ifindex": 2,  # the two rxe ports (no netlink)
            "sriov_totalvfs": 1,
            "sriov_numvfs": 1,  # the PF
            "netns_mode": 1,  # ib_core's parameter (no netlink)
        }
    )
    assert all(third[name] == 0 for name in STATIC)
    io.calls.clear()
    snap(tree, cache)
    assert io.count("readlink") == io.count("readlink", "driver") == 3  # no device/virtfn/physfn links again
    assert io.count("open") == sum(third.values()) == 13
    assert sum(first.values()) > 3 * sum(third.values())


def test_netlink_ports_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # rxe-dummy-veth with the netlink replies recorded in the same boot: sysfs reads only the rates.
    roots = load_tree("rxe-dummy-veth", tmp_path)
    replay = rxe_replay(kernel_of("rxe-dummy-veth"))
    with RdmaNetlink(exchange=replay) as sock:
        listed = [NetlinkDevice(d, tuple(sock.ports(d.index))) for d in sock.devices() if d.index is not None]
    hints = {(d.name, p.port): p for d, ports in listed for p in ports}
    opened: Counter[str] = Counter()
    real = files.read_bytes

    def counting(path: str) -> bytes:
        opened[path.rsplit("/", 1)[-1]] += 1
        return real(path)

    monkeypatch.setattr(files, "read_bytes", counting)
    hinted, problems = SysfsReader(roots).rdma_devices(netlink=hints)
    assert problems == ()
    assert {"state", "phys_state", "0", "ifindex"}.isdisjoint(opened) and opened["rate"] == 2
    plain, _ = SysfsReader(roots).rdma_devices()
    # A hinted port is the merge of netlink's port with sysfs's: what the snapshot would have built.
    for device, ports in listed:
        fs = next(d for d in plain if d.name == device.name)
        assert [merge_port(p, q) for p, q in zip(ports, fs.ports, strict=True)] == list(
            next(d for d in hinted if d.name == device.name).ports
        )
    assert merge_devices(listed, hinted, fs_ports_merged=True) == merge_devices(listed, plain)


def park(path: Path, lot: Path) -> Path:
    """Move an entry away for good (its inode stays taken, as kernfs never reuses one soon)."""
    lot.mkdir(exist_ok=True)
    parked = lot / f"{path.name}.{len(list(lot.iterdir()))}"
    path.rename(parked)
    return parked


def test_a_recreated_device_is_read_again(tree: HostRoots, io: Io, tmp_path: Path) -> None:
    cache = SnapshotCache()
    cycles(tree, io, cache, 3)
    # `rdma link delete rxe1; rdma link add rxe1 …` between two cycles: same name, new entries.
    virtual = tree.sysfs / "devices/virtual/infiniband"
    old = park(virtual / "rxe1", tmp_path / "lot")
    link = tree.sysfs / "class/infiniband/rxe1"
    target = link.readlink()
    park(link, tmp_path / "lot")
    shutil.copytree(old, virtual / "rxe1", symlinks=True)
    (virtual / "rxe1/node_guid").write_text("5254:00ff:fe00:beef\n")
    link.symlink_to(target)
    (after,) = cycles(tree, io, cache, 1)
    assert (after["node_guid"], after["node_type"], after["link_layer"]) == (1, 1, 1)  # rxe1's, not rxe0's
    device = snap(tree, cache).device("rxe1")
    assert device is not None and device.node_guid == "5254:00ff:fe00:beef"


def test_a_rebound_driver_and_new_numvfs_are_seen_at_once(tree: HostRoots, io: Io, tmp_path: Path) -> None:
    cache = SnapshotCache()
    cycles(tree, io, cache, 3)
    driver = tree.sysfs / "bus/pci/devices" / VF0 / "driver"
    driver.unlink()
    driver.symlink_to("../../../../bus/pci/drivers/vfio-pci")  # `echo VF0 > …/vfio-pci/bind`
    io.calls.clear()
    function = snap(tree, cache).pci(VF0)
    assert function is not None and function.driver == "vfio-pci"
    assert io.count("readlink", "virtfn0") == io.count("readlink", "virtfn1") == 0  # sriov_numvfs unchanged
    # sriov_numvfs 2 → 1: VF1 and its virtfn link go.
    pf = tree.sysfs / "bus/pci/devices" / PF
    park((pf / "virtfn1").resolve(), tmp_path / "lot")
    park(pf / "virtfn1", tmp_path / "lot")
    park(tree.sysfs / "class/net/eth2", tmp_path / "lot")
    park(tree.sysfs / "bus/pci/devices" / VF1, tmp_path / "lot")
    (pf / "sriov_numvfs").write_text("1\n")
    io.calls.clear()
    function = snap(tree, cache).pci(PF)
    assert function is not None and (function.sriov_numvfs, function.virtfns) == (1, (VF0,))
    assert io.count("readlink", "virtfn0") == 1
    cycles(tree, io, cache, 1)


@pytest.mark.parametrize(
    ("refresh_every", "vendor_reads"),
    [(4, [3, 3, 0, 3, 0, 0, 0, 3, 0]), (1, [3] * 9), (1000, [3, 3] + [0] * 7)],
)
def test_everything_is_read_again_every_refresh_every_snapshots(
    tree: HostRoots, io: Io, refresh_every: int, vendor_reads: list[int]
) -> None:
    cache = SnapshotCache(sysfs.SysfsCache(refresh_every=refresh_every))
    assert [opened["vendor"] for opened in cycles(tree, io, cache, 9)] == vendor_reads


@pytest.mark.parametrize(
    ("interval", "refresh_every"), [(30.0, 20), (7.0, 85), (599.0, 1), (600.0, 1), (3600.0, 1), (0.5, 1200)]
)
def test_the_refresh_interval_bounds_staleness_to_ten_minutes(interval: float, refresh_every: int) -> None:
    cache = sysfs.SysfsCache.for_interval(interval)
    assert cache.refresh_every == refresh_every
    assert cache.refresh_every * interval <= max(sysfs.STATIC_MAX_AGE_SECONDS, interval)


def test_the_agent_keeps_one_cache_across_cycles(tree: HostRoots, io: Io) -> None:
    agent = Agent(Config(roots=tree, interval_seconds=30.0, kubernetes=False), netlink=no_netlink)
    assert agent.discovery.sysfs.refresh_every == 20
    for _ in range(3):
        agent.run_once()
    assert agent.discovery.sysfs.snapshots == 3
    io.calls.clear()
    agent.run_once()
    assert io.count("open", "vendor") == 0 and io.count("open", "rate") == 2


def test_read_errors_are_reported_every_cycle_never_kept(tree: HostRoots, io: Io) -> None:
    vendor = tree.sysfs / "bus/pci/devices" / VF0 / "vendor"
    vendor.unlink()
    vendor.mkdir()  # read() fails with EISDIR
    cache = SnapshotCache()
    opened = cycles(tree, io, cache, 4)
    assert [o["vendor"] for o in opened] == [3, 3, 1, 1]  # VF0's vendor again and again, the others kept
    problems = [p.message for p in snap(tree, cache).problems if p.subject == VF0]
    assert problems == [f"cannot read sysfs for PCI function {VF0}: vendor: EISDIR (Is a directory)"]


def test_what_is_read_at_the_first_sighting_is_not_kept(tree: HostRoots, io: Io, tmp_path: Path) -> None:
    # rxe1 seen mid-registration: ib_register_device() adds ports/ after the class entry exists.
    ports = tree.sysfs / "devices/virtual/infiniband/rxe1/ports"
    ports.rename(tmp_path / "ports")
    cache = SnapshotCache()
    cycles(tree, io, cache, 1)
    device = snap(tree, None).device("rxe1")
    assert device is not None and device.ports == ()
    (tmp_path / "ports").rename(ports)
    cycles(tree, io, cache, 3)
    device = snap(tree, cache).device("rxe1")
    assert device is not None and [p.port for p in device.ports] == [1]


def test_a_renamed_rdma_device_takes_its_char_devices_along(tree: HostRoots, io: Io) -> None:
    cache = SnapshotCache()
    cycles(tree, io, cache, 3)
    # `rdma dev set rxe1 name roce1` (udev's persistent naming does this right after registration):
    # the device and its class entry are renamed, its char devices' ibdev changes in place.
    virtual = tree.sysfs / "devices/virtual"
    (virtual / "infiniband/rxe1").rename(virtual / "infiniband/roce1")
    (tree.sysfs / "class/infiniband/rxe1").unlink()
    (tree.sysfs / "class/infiniband/roce1").symlink_to("../../devices/virtual/infiniband/roce1")
    for char in ("infiniband_verbs/uverbs1", "infiniband_mad/umad1", "infiniband_mad/issm1"):
        (virtual / char / "ibdev").write_text("roce1\n")
    (after,) = cycles(tree, io, cache, 1)
    assert after["ibdev"] == 6  # all char devices read again: any of them may name the renamed device
    device = snap(tree, cache).device("roce1")
    assert device is not None and device.char_devices == ("issm1", "umad1", "uverbs1")


def test_the_merge_memo_follows_netlink() -> None:
    port = RdmaPort(
        port=1,
        state="ACTIVE",
        state_code=4,
        physical_state="LINK_UP",
        physical_state_code=5,
        link_layer="Ethernet",
        rate="100 Gb/sec (2X HDR)",
    )
    fs = RdmaDevice(name="mlx5_0", fw_version="22.36.1010", port_count=1, ports=(port,), pci_address=PF)
    nl = RdmaDevice(name="mlx5_0", index=0, fw_version="22.36.1010", port_count=1)
    memo = MergeMemo()
    first = merge_devices([NetlinkDevice(nl, (port,))], [fs], memo=memo)
    assert merge_devices([NetlinkDevice(nl, (port,))], [fs], memo=memo) is first  # nothing changed: the same answer
    newer = merge_devices([NetlinkDevice(replace(nl, fw_version="22.39.1002"), (port,))], [fs], memo=memo)
    assert newer[0].fw_version == "22.39.1002"  # the same sysfs object, but netlink says something new
    assert newer == merge_devices([NetlinkDevice(replace(nl, fw_version="22.39.1002"), (port,))], [fs])
