"""Build the one immutable :class:`NodeSnapshot` from every source.

Netlink is the authority for what ``rdma`` shows (indexes, port states, netdevs in this netns, the
live mode); sysfs adds what netlink lacks (link layer, rate, PCI function, char devices) and stands
in when there is no RDMA netlink at all (ib_core not loaded: EPROTONOSUPPORT). Every reader isolates
its own failures and returns them as problems, so one bad source never blanks the report.

The agent's loop passes a :class:`SnapshotCache`, so that a cycle re-reads only what can change
(:class:`~agent.discover.sysfs.SysfsCache` says what is static and why); a snapshot taken with it
equals one taken without (tests/reliability/test_cache_equivalence.py).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import NamedTuple

from agent.config import HostRoots
from agent.discover import modprobe, procfs
from agent.discover.rdma_netlink import RdmaNetlink
from agent.discover.sysfs import SysfsCache, SysfsReader
from agent.errors import DiscoveryError, NetlinkError
from agent.model import (
    CharDevice,
    KernelInfo,
    KernelModule,
    NetnsMode,
    NodeSnapshot,
    PciFunction,
    PersistedNetnsMode,
    Problem,
    RdmaDevice,
    RdmaPort,
    SystemInfo,
)

logger = logging.getLogger(__name__)

NetlinkFactory = Callable[[], RdmaNetlink]


class NetlinkDevice(NamedTuple):
    """A GET dump entry and its PORT_GET dump."""

    device: RdmaDevice
    ports: tuple[RdmaPort, ...]


class NetlinkRead(NamedTuple):
    """What RDMA netlink said: whether it is there at all (``available``; False without ib_core), why
    not or why the listing failed (``error``), SYS_GET, and the devices with their ports."""

    available: bool
    error: str | None
    system: SystemInfo | None
    devices: list[NetlinkDevice]
    problems: list[Problem]


def _read_netlink(factory: NetlinkFactory) -> NetlinkRead:
    """Devices with their ports, and SYS_GET. Per-device port errors are isolated."""
    problems: list[Problem] = []
    try:
        sock = factory()
    except NetlinkError as err:
        if err.errno == errno.EPROTONOSUPPORT:
            logger.debug("no RDMA netlink: %s", err)
            return NetlinkRead(False, str(err), None, [], [])
        return NetlinkRead(False, str(err), None, [], [Problem(code="netlink_error", message=f"RDMA netlink: {err}")])
    devices: list[NetlinkDevice] = []
    system: SystemInfo | None = None
    with sock:
        try:
            listed = sock.devices()
        except DiscoveryError as err:
            problems.append(Problem(code="netlink_error", message=f"listing RDMA devices failed: {err}"))
            return NetlinkRead(True, str(err), None, [], problems)
        for device in listed:
            try:
                ports = tuple(sock.ports(device.index)) if device.index is not None else ()
            except DiscoveryError as err:
                problems.append(
                    Problem(
                        code="netlink_error",
                        message=f"reading ports of {device.name} failed: {err}",
                        subject=device.name,
                    )
                )
                ports = ()
            devices.append(NetlinkDevice(device, ports))
        try:
            system = sock.system()
        except DiscoveryError as err:
            problems.append(Problem(code="netlink_error", message=f"reading the RDMA system mode failed: {err}"))
    return NetlinkRead(True, None, system, devices, problems)


def merge_port(nl: RdmaPort | None, fs: RdmaPort | None) -> RdmaPort:
    """Netlink's view of a port, completed with what only sysfs has (link layer, rate)."""
    if nl is None:
        assert fs is not None
        return fs
    if fs is None:
        return nl
    return replace(
        nl,
        link_layer=fs.link_layer,
        rate=fs.rate,
        netdev=nl.netdev if nl.netdev is not None else fs.netdev,
        netdev_index=nl.netdev_index if nl.netdev is not None else fs.netdev_index,
        netdev_admin_up=fs.netdev_admin_up,
    )


def merge_device(
    nl: NetlinkDevice | None,
    fs: RdmaDevice | None,
    char_devices: tuple[str, ...] = (),
    *,
    fs_ports_merged: bool = False,
) -> RdmaDevice:
    """One device seen by netlink (its GET entry and ports) and/or sysfs, with the names of its char
    devices. Netlink wins where both speak. ``fs_ports_merged``: sysfs's ports were read with
    netlink's as hints (``read_rdma_devices(netlink=…)``), so a port both have is merged already.
    One object is built per device: snapshots of thousands of devices are taken every cycle."""
    if nl is None:
        assert fs is not None
        return fs if fs.char_devices == char_devices else replace(fs, char_devices=char_devices)
    device, nl_ports = nl.device, nl.ports
    if fs is None:
        return replace(device, ports=nl_ports, char_devices=char_devices)
    by_nl = {p.port: p for p in nl_ports}
    if fs_ports_merged and by_nl.keys() <= {p.port for p in fs.ports}:
        ports = fs.ports
    else:
        by_fs = {p.port: p for p in fs.ports}
        ports = tuple(
            by_fs[n] if fs_ports_merged and n in by_fs and n in by_nl else merge_port(by_nl.get(n), by_fs.get(n))
            for n in sorted(by_fs.keys() | by_nl.keys())
        )
    return replace(
        device,
        fw_version=device.fw_version or fs.fw_version,
        node_type=device.node_type or fs.node_type,
        hca_type=fs.hca_type,
        board_id=fs.board_id,
        pci_address=fs.pci_address,
        port_count=max(device.port_count, fs.port_count),
        ports=ports,
        char_devices=char_devices,
    )


class Merged(NamedTuple):
    """The inputs of one merged device, and the result."""

    netlink: NetlinkDevice | None
    sysfs: RdmaDevice | None
    char_devices: tuple[str, ...]  # the names of its char devices
    device: RdmaDevice


class MergeMemo:
    """What :func:`merge_devices` did last time: each device's inputs and merge, the char devices'
    owners, and the answer."""

    def __init__(self) -> None:
        self.devices: dict[str, Merged] = {}
        self.chars: tuple[CharDevice, ...] | None = None
        self.owned: dict[str, tuple[str, ...]] = {}
        self.answer: tuple[RdmaDevice, ...] = ()


def merge_devices(
    netlink: Iterable[NetlinkDevice],
    sysfs_devices: Iterable[RdmaDevice],
    chars: Iterable[CharDevice] = (),
    *,
    fs_ports_merged: bool = False,
    memo: MergeMemo | None = None,
) -> tuple[RdmaDevice, ...]:
    """Every device either source has, with its char devices, by netlink index then name.

    ``memo``: what the last call did, updated. A device whose netlink view is equal to last time's,
    whose sysfs view is the very same object (the sysfs reader gives unchanged devices again) and
    whose char devices are the same is not merged again; when no device changed, neither does the
    answer."""
    by_nl = {nl.device.name: nl for nl in netlink}
    by_fs = {d.name: d for d in sysfs_devices}
    chars = chars if isinstance(chars, tuple) else tuple(chars)
    if memo is not None and memo.chars is chars:  # the char reader gives an unchanged answer again
        owned = memo.owned
    else:
        names: dict[str, list[str]] = {}
        for char in chars:
            if char.rdma_device is not None:
                names.setdefault(char.rdma_device, []).append(char.name)
        owned = {device: tuple(sorted(found)) for device, found in names.items()}
    last = memo.devices if memo is not None else {}
    done: dict[str, Merged] = {}
    unchanged = True
    for name in by_nl.keys() | by_fs.keys():
        nl, fs, mine = by_nl.get(name), by_fs.get(name), owned.get(name, ())
        was = last.get(name)
        if was is not None and was.sysfs is fs and was.char_devices == mine and was.netlink == nl:
            done[name] = was
        else:
            done[name] = Merged(nl, fs, mine, merge_device(nl, fs, mine, fs_ports_merged=fs_ports_merged))
            unchanged = False
    if memo is not None and unchanged and len(done) == len(last):
        answer = memo.answer
    else:
        answer = tuple(sorted((m.device for m in done.values()), key=lambda d: (d.index is None, d.index or 0, d.name)))
    if memo is not None:
        memo.devices, memo.chars, memo.owned, memo.answer = done, chars, owned, answer
    return answer


class SnapshotCache:
    """What :func:`take_snapshot` keeps from one snapshot to the next; the agent's loop holds one.
    ``sysfs``: the facts sysfs cannot change while a device lives (:class:`SysfsCache` says which,
    and why); ``merged``: last snapshot's merged devices, given again while netlink, sysfs and the
    char devices say the same. A snapshot taken with it equals one taken without."""

    def __init__(self, sysfs_cache: SysfsCache | None = None) -> None:
        self.sysfs = sysfs_cache if sysfs_cache is not None else SysfsCache()
        self.merged = MergeMemo()

    @classmethod
    def for_interval(cls, interval_seconds: float) -> SnapshotCache:
        """For a loop that snapshots every ``interval_seconds`` (see :meth:`SysfsCache.for_interval`)."""
        return cls(SysfsCache.for_interval(interval_seconds))


def derive_problems(
    *,
    netlink_available: bool,
    ib_core_loaded: bool,
    devices: tuple[RdmaDevice, ...],
    char_devices: tuple[CharDevice, ...],
) -> list[Problem]:
    """What an operator must fix for RDMA workloads to run, in plain words (pure)."""
    problems: list[Problem] = []
    if not netlink_available and not ib_core_loaded:
        problems.append(
            Problem(
                code="no_rdma_netlink",
                message="no RDMA netlink: ib_core is not loaded (no RDMA driver on this node)",
            )
        )
    elif not devices:
        problems.append(Problem(code="no_rdma_devices", message="ib_core is loaded but no RDMA device exists"))
    if not devices:
        return problems
    problems.extend(_char_device_problems(char_devices))
    problems.extend(_device_problems(devices))
    return problems


def _char_device_problems(char_devices: tuple[CharDevice, ...]) -> list[Problem]:
    """No rdma_cm at all, and char devices the kernel has whose /dev node is missing."""
    problems: list[Problem] = []
    kinds = {c.kind for c in char_devices}
    if "rdma_cm" not in kinds:
        problems.append(
            Problem(code="missing_rdma_cm", message="no /dev/infiniband/rdma_cm: load rdma_ucm (rdma-core)")
        )
    for char in char_devices:
        if not char.present:
            problems.append(
                Problem(
                    code="char_device_node_missing",
                    message=f"the kernel has {char.name} but {char.path} does not exist (is /dev mounted?)",
                    subject=char.name,
                )
            )
    return problems


def _device_problems(devices: tuple[RdmaDevice, ...]) -> list[Problem]:
    """Devices without uverbs, and their ports that are not up."""
    problems: list[Problem] = []
    for device in devices:
        if not any(c.startswith("uverbs") for c in device.char_devices):
            problems.append(
                Problem(
                    code="missing_uverbs",
                    message=f"{device.name} has no /dev/infiniband/uverbsN: load ib_uverbs (rdma-core)",
                    subject=device.name,
                )
            )
        for port in device.ports:
            if port.state is not None and not port.link_up:
                problems.append(
                    Problem(
                        code="port_down",
                        message=(
                            f"{device.name}/{port.port} is {port.state} ({port.physical_state})"
                            + (f" on {port.netdev}" if port.netdev else "")
                        ),
                        subject=f"{device.name}/{port.port}",
                    )
                )
    return problems


class RdmaRead(NamedTuple):
    """The node's RDMA devices (netlink's merged with sysfs's), char devices and PCI functions."""

    devices: tuple[RdmaDevice, ...]
    char_devices: tuple[CharDevice, ...]
    pci_functions: tuple[PciFunction, ...]


class HostRead(NamedTuple):
    """What procfs and modprobe.d say: the watched modules, the kernel, the persisted netns mode."""

    modules: tuple[KernelModule, ...]
    kernel: KernelInfo
    persisted: PersistedNetnsMode


class LiveMode(NamedTuple):
    """ib_core's live netns mode and where it came from (``"netlink"``, ``"sysfs"``; None: unknown)."""

    mode: NetnsMode | None
    source: str | None


def _read_rdma(fs: SysfsReader, nl: NetlinkRead, memo: MergeMemo | None, problems: list[Problem]) -> RdmaRead:
    """sysfs's RDMA devices, read with netlink's ports as hints (what netlink said is not read again),
    merged with netlink's and joined with their char devices; then the PCI functions behind them."""
    nl_ports = {(d.device.name, port.port): port for d in nl.devices for port in d.ports}
    fs_devices, fs_problems = fs.rdma_devices(netlink=nl_ports)
    problems.extend(fs_problems)
    char_devices = fs.char_devices()
    devices = merge_devices(nl.devices, fs_devices, char_devices, fs_ports_merged=True, memo=memo)
    pci_functions, pci_problems = fs.pci_functions(extra=[d.pci_address for d in devices if d.pci_address])
    problems.extend(pci_problems)
    return RdmaRead(devices, char_devices, pci_functions)


def _read_host(roots: HostRoots, problems: list[Problem]) -> HostRead:
    """Modules and kernel from procfs, and the netns mode ib_core gets at its next load (modprobe.d,
    with the kernel command line's ``ib_core.netns_mode=``)."""
    modules = procfs.read_modules(roots, problems)
    kernel = procfs.read_kernel(roots, problems)
    cmdline_option = procfs.parse_cmdline_netns_mode(kernel.cmdline or "")
    persisted, modprobe_problems = modprobe.read_persisted_netns_mode(roots, cmdline_option)
    problems.extend(modprobe_problems)
    return HostRead(modules, kernel, persisted)


def _live_mode(system: SystemInfo | None, fs: SysfsReader) -> LiveMode:
    """Netlink's SYS_GET when it names the mode, else ib_core's module parameter in sysfs."""
    if system is not None and system.netns_mode is not None:
        return LiveMode(system.netns_mode, "netlink")
    mode = fs.ib_core_netns_mode()
    return LiveMode(mode, "sysfs" if mode is not None else None)


def take_snapshot(
    roots: HostRoots,
    *,
    netlink: NetlinkFactory = RdmaNetlink,
    clock: Callable[[], float] = time.time,
    cache: SnapshotCache | None = None,
) -> NodeSnapshot:
    """Read everything once and freeze it.

    ``cache``: what earlier snapshots learnt that cannot have changed (:class:`SnapshotCache`; the
    agent's loop passes its own); None reads everything. Either way the snapshot is the same.
    Netlink's ports are handed to the sysfs reader, which then skips what netlink already said."""
    taken_at = clock()
    if cache is not None:
        cache.sysfs.begin_snapshot()
    fs = SysfsReader(roots, cache=cache.sysfs if cache is not None else None)
    nl = _read_netlink(netlink)
    problems = list(nl.problems)
    rdma = _read_rdma(fs, nl, cache.merged if cache is not None else None, problems)
    host = _read_host(roots, problems)
    live = _live_mode(nl.system, fs)
    namespaces = procfs.count_network_namespaces(roots, problems)
    problems.extend(
        derive_problems(
            netlink_available=nl.available,
            ib_core_loaded=any(m.name == "ib_core" and m.loaded for m in host.modules),
            devices=rdma.devices,
            char_devices=rdma.char_devices,
        )
    )
    return NodeSnapshot(
        taken_at=taken_at,
        netlink_available=nl.available,
        netlink_error=nl.error,
        netns_mode=live.mode,
        netns_mode_source=live.source,
        system=nl.system,
        devices=rdma.devices,
        pci_functions=rdma.pci_functions,
        char_devices=rdma.char_devices,
        modules=host.modules,
        kernel=host.kernel,
        persisted=host.persisted,
        network_namespaces=namespaces,
        problems=tuple(problems),
    )
