"""The node as the RDMA shared device plugin sees it, and its selectors against it, as the plugin
itself does (pkg/resources/device_selectors.go, pci_net_device.go, rdma_device_spec.go):

* Candidates are PCI functions of class 02 (network). A function enters the plugin's pool only
  with an RDMA device whose char devices include ``rdma_cm``, ``umad`` and ``uverbs``; without them
  the plugin logs "missing RDMA device spec" and skips it.
* Selectors are ANDed across fields and ORed within one; an absent or empty field is ignored. Values
  compare exactly (case-sensitive) against ``vendor``/``device`` ids as sysfs prints them without
  ``0x`` (``15b3``, ``1017``), the driver's name, the function's first netdev (``ifNames``) and that
  netdev's link type as netlink names it (``ether``, ``infiniband``; here taken from the RDMA port's
  link layer).

Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.diagnose.plugin_config import DevicePluginConfig, Selectors
from agent.model import NodeSnapshot, PciFunction, SelectorMatch

REQUIRED_CHAR_DEVICES = ("rdma_cm", "umad", "uverbs")  # rdma_device_spec.go requiredRdmaDevices
# Netlink's names (vishvananda/netlink encapTypeToString) for the RDMA port's link layer.
LINK_TYPES = {"ethernet": "ether", "infiniband": "infiniband"}


@dataclass(frozen=True, kw_only=True, slots=True)
class PluginDevice:
    """A PCI network function with an RDMA device, as the plugin's pciNetDevice describes it."""

    address: str
    vendor: str  # "" when unknown
    device_id: str
    driver: str
    if_name: str  # first netdev by name, "" without one
    link_type: str  # "ether" | "infiniband" | ""
    rdma_devices: tuple[str, ...]
    missing: tuple[str, ...]  # of REQUIRED_CHAR_DEVICES: without them the plugin skips the function

    @property
    def ids(self) -> str:
        return f"{self.vendor or '?'}:{self.device_id or '?'}"


def _link_type(snapshot: NodeSnapshot, rdma_devices: Sequence[str], if_name: str) -> str:
    ports = [p for name in rdma_devices if (d := snapshot.device(name)) for p in d.ports]
    chosen = [p for p in ports if if_name and p.netdev == if_name] or ports
    layers = {(p.link_layer or "").lower() for p in chosen}
    if len(layers) != 1:
        return ""
    return LINK_TYPES.get(layers.pop(), "")


def _missing_char_devices(snapshot: NodeSnapshot, rdma_devices: Sequence[str]) -> tuple[str, ...]:
    have = {
        c.kind for c in snapshot.char_devices if c.present and (c.kind == "rdma_cm" or c.rdma_device in rdma_devices)
    }
    for name in rdma_devices:
        device = snapshot.device(name)
        if device is not None:
            have |= {c.kind for c in snapshot.char_devices if c.present and c.name in device.char_devices}
    return tuple(k for k in REQUIRED_CHAR_DEVICES if k not in have)


def _is_network(function: PciFunction) -> bool:
    # The plugin keeps PCI class 0x02 only (Ethernet 0200, InfiniBand 0207). Unknown class: keep.
    return function.pci_class is None or function.pci_class.startswith("02")


def plugin_devices(snapshot: NodeSnapshot) -> tuple[PluginDevice, ...]:
    """The functions the shared plugin could put in a pool: PCI network functions with an RDMA device."""
    out: list[PluginDevice] = []
    for function in snapshot.pci_functions:
        rdma = sorted(function.rdma_devices)  # bus/pci/devices/<address>/infiniband, as rdmamap reads it
        if not rdma or not _is_network(function):
            continue
        if_name = sorted(function.netdevs)[0] if function.netdevs else ""
        out.append(
            PluginDevice(
                address=function.address,
                vendor=function.vendor or "",
                device_id=function.device or "",
                driver=function.driver or "",
                if_name=if_name,
                link_type=_link_type(snapshot, rdma, if_name),
                rdma_devices=tuple(rdma),
                missing=_missing_char_devices(snapshot, rdma),
            )
        )
    return tuple(out)


@dataclass(frozen=True, kw_only=True, slots=True)
class PluginView:
    """One cycle's node as the plugin sees it: the snapshot and its :func:`plugin_devices`.

    Built once per cycle by :func:`plugin_view` (the allocatable stage does) and handed to every check
    that needs the plugin's devices (:func:`match_selectors` and agent.diagnose.diagnosis), so they are
    computed once, from one snapshot."""

    snapshot: NodeSnapshot
    devices: tuple[PluginDevice, ...]


def plugin_view(snapshot: NodeSnapshot) -> PluginView:
    """The plugin's view of ``snapshot``; the one place :func:`plugin_devices` runs in a cycle."""
    return PluginView(snapshot=snapshot, devices=plugin_devices(snapshot))


def select(devices: Sequence[PluginDevice], selectors: Selectors) -> tuple[PluginDevice, ...]:
    """GetFilteredDevices: AND across the non-empty fields, OR within one, exact comparison."""

    def matches(d: PluginDevice) -> bool:
        return all(
            not wanted or value in wanted
            for wanted, value in (
                (selectors.vendors, d.vendor),
                (selectors.device_ids, d.device_id),
                (selectors.drivers, d.driver),
                (selectors.if_names, d.if_name),
                (selectors.link_types, d.link_type),
            )
        )

    return tuple(d for d in devices if matches(d))


def match_selectors(view: PluginView, config: DevicePluginConfig) -> tuple[SelectorMatch, ...]:
    """How many of this node's PCI RDMA functions each configured resource's selector matches, in
    config order. Char devices are not required here (agent.diagnose.diagnosis.why_zero reports them)."""
    return tuple(
        SelectorMatch(
            resource=r.full_name,
            matched=len(select(view.devices, r.selectors)),
            summary=r.selectors.summary(),
        )
        for r in config.resources
    )
