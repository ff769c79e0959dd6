"""Build the one immutable :class:`NodeSnapshot` from every source.

Netlink is the authority for what ``rdma`` shows (indexes, port states, netdevs in this netns, the
live mode); sysfs adds what netlink lacks (link layer, rate, PCI function, char devices) and stands
in when there is no RDMA netlink at all (ib_core not loaded: EPROTONOSUPPORT). Every reader isolates
its own failures and returns them as problems, so one bad source never blanks the report.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from agent.config import HostRoots
from agent.discover import modprobe, procfs, sysfs
from agent.discover.rdma_netlink import RdmaNetlink
from agent.errors import DiscoveryError, NetlinkError
from agent.model import (
    CharDevice,
    NetnsMode,
    NodeSnapshot,
    Problem,
    RdmaDevice,
    RdmaPort,
    SystemInfo,
)

logger = logging.getLogger(__name__)

NetlinkFactory = Callable[[], RdmaNetlink]


def _read_netlink(
    factory: NetlinkFactory,
) -> tuple[bool, str | None, SystemInfo | None, list[RdmaDevice], list[Problem]]:
    """Devices with their ports, and SYS_GET. Per-device port errors are isolated."""
    problems: list[Problem] = []
    try:
        sock = factory()
    except NetlinkError as err:
        if err.errno == errno.EPROTONOSUPPORT:
            logger.debug("no RDMA netlink: %s", err)
            return False, str(err), None, [], []
        return False, str(err), None, [], [Problem(code="netlink_error", message=f"RDMA netlink: {err}")]
    devices: list[RdmaDevice] = []
    system: SystemInfo | None = None
    with sock:
        try:
            listed = sock.devices()
        except DiscoveryError as err:
            problems.append(Problem(code="netlink_error", message=f"listing RDMA devices failed: {err}"))
            return True, str(err), None, [], problems
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
            devices.append(replace(device, ports=ports))
        try:
            system = sock.system()
        except DiscoveryError as err:
            problems.append(Problem(code="netlink_error", message=f"reading the RDMA system mode failed: {err}"))
    return True, None, system, devices, problems


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
    )


def merge_device(nl: RdmaDevice | None, fs: RdmaDevice | None) -> RdmaDevice:
    """One device seen by netlink and/or sysfs. Netlink wins where both speak."""
    if nl is None:
        assert fs is not None
        return fs
    if fs is None:
        return nl
    fs_ports = {p.port: p for p in fs.ports}
    nl_ports = {p.port: p for p in nl.ports}
    ports = tuple(merge_port(nl_ports.get(n), fs_ports.get(n)) for n in sorted(fs_ports.keys() | nl_ports.keys()))
    return replace(
        nl,
        fw_version=nl.fw_version or fs.fw_version,
        node_type=nl.node_type or fs.node_type,
        pci_address=fs.pci_address,
        port_count=max(nl.port_count, fs.port_count),
        ports=ports,
    )


def merge_devices(netlink: Iterable[RdmaDevice], sysfs_devices: Iterable[RdmaDevice]) -> tuple[RdmaDevice, ...]:
    by_nl = {d.name: d for d in netlink}
    by_fs = {d.name: d for d in sysfs_devices}
    merged = [merge_device(by_nl.get(n), by_fs.get(n)) for n in by_nl.keys() | by_fs.keys()]
    return tuple(sorted(merged, key=lambda d: (d.index is None, d.index or 0, d.name)))


def attach_char_devices(devices: Iterable[RdmaDevice], chars: Iterable[CharDevice]) -> tuple[RdmaDevice, ...]:
    owned: dict[str, list[str]] = {}
    for char in chars:
        if char.rdma_device is not None:
            owned.setdefault(char.rdma_device, []).append(char.name)
    return tuple(replace(d, char_devices=tuple(sorted(owned.get(d.name, ())))) for d in devices)


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


def take_snapshot(
    roots: HostRoots,
    *,
    netlink: NetlinkFactory = RdmaNetlink,
    clock: Callable[[], float] = time.time,
) -> NodeSnapshot:
    """Read everything once and freeze it."""
    taken_at = clock()
    available, nl_error, system, nl_devices, problems = _read_netlink(netlink)

    fs_devices, fs_problems = sysfs.read_rdma_devices(roots)
    problems.extend(fs_problems)
    devices = merge_devices(nl_devices, fs_devices)

    pci_functions, pci_problems = sysfs.read_pci_functions(
        roots, extra=[d.pci_address for d in devices if d.pci_address]
    )
    problems.extend(pci_problems)
    char_devices = sysfs.read_char_devices(roots)
    devices = attach_char_devices(devices, char_devices)

    modules = procfs.read_modules(roots)
    kernel = procfs.read_kernel(roots)
    cmdline_option = procfs.parse_cmdline_netns_mode(kernel.cmdline or "")
    persisted, modprobe_problems = modprobe.read_persisted_netns_mode(roots, cmdline_option)
    problems.extend(modprobe_problems)

    mode: NetnsMode | None
    mode_source: str | None
    if system is not None and system.netns_mode is not None:
        mode, mode_source = system.netns_mode, "netlink"
    else:
        mode = sysfs.read_ib_core_netns_mode(roots)
        mode_source = "sysfs" if mode is not None else None

    ib_core_loaded = any(m.name == "ib_core" and m.loaded for m in modules)
    problems.extend(
        derive_problems(
            netlink_available=available,
            ib_core_loaded=ib_core_loaded,
            devices=devices,
            char_devices=char_devices,
        )
    )
    return NodeSnapshot(
        taken_at=taken_at,
        netlink_available=available,
        netlink_error=nl_error,
        netns_mode=mode,
        netns_mode_source=mode_source,
        system=system,
        devices=devices,
        pci_functions=pci_functions,
        char_devices=char_devices,
        modules=modules,
        kernel=kernel,
        persisted=persisted,
        network_namespaces=procfs.count_network_namespaces(roots),
        problems=tuple(problems),
    )
