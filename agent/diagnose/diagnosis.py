"""Which consumer a resource has, whether the node suits it, and why its allocatable is zero.

A shared device plugin resource advertises ``rdmaHcaMax`` devices when at least one function is in
its pool (:mod:`agent.diagnose.selection`), else 0; the plugin exits at start when the netns mode is
exclusive.

Which consumer a resource has (:func:`consumer_of`): resources named by the shared plugin's
config, and any resource under ``rdma/`` (the plugin's default prefix), are the shared plugin's;
every other watched resource is taken to be SR-IOV with RDMA CNI — the two kinds Spiderpool
documents. Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from agent.diagnose.plugin_config import (
    DEFAULT_RESOURCE_PREFIX,
    DevicePluginConfig,
    Selectors,
    resource_name_error,
)
from agent.diagnose.selection import PluginDevice, PluginView, select
from agent.model import (
    EnforcementState,
    NetnsMode,
    NodeSnapshot,
    Problem,
    ResourceAmount,
    SelectorMatch,
)

# What loads each char device (rdma-core's modules-load.d/rdma.conf loads them at boot).
CHAR_DEVICE_MODULE = {"rdma_cm": "rdma_ucm", "umad": "ib_umad", "uverbs": "ib_uverbs"}
_SRIOV_DP_SELECTORS = frozenset(
    {"isRdma", "pciAddresses", "rootDevices", "pfNames", "devices", "needVhostNet", "vdpaType", "acpiIndexes"}
)


class Consumer(enum.Enum):
    """What takes a resource's devices, and the netns mode it needs."""

    SHARED_DEVICE_PLUGIN = "rdma-shared-device-plugin"
    SRIOV_RDMA_CNI = "sriov-rdma-cni"

    @property
    def needs(self) -> NetnsMode:
        return NetnsMode.SHARED if self is Consumer.SHARED_DEVICE_PLUGIN else NetnsMode.EXCLUSIVE

    @property
    def title(self) -> str:
        return "the RDMA shared device plugin" if self is Consumer.SHARED_DEVICE_PLUGIN else "SR-IOV with RDMA CNI"


# --- selectors against the node -------------------------------------------------------------------


def _node_side(view: PluginView, selectors: Selectors) -> str:
    """What the node has, in the terms the selector uses: ``15b3:1017 (0000:3b:00.0, 0000:3b:00.1)``."""
    devices = view.devices
    if not devices:
        on_pci = {name for f in view.snapshot.pci_functions for name in f.rdma_devices}
        others = [d.name for d in view.snapshot.devices if d.name not in on_pci]
        tail = f" ({', '.join(others)} {'is' if len(others) == 1 else 'are'} not on PCI)" if others else ""
        return "no PCI network function with an RDMA device" + tail
    groups: dict[str, list[str]] = {}
    for d in devices:
        extra = [
            f"{name} {value or '(none)'}"
            for name, wanted, value in (
                ("driver", selectors.drivers, d.driver),
                ("ifName", selectors.if_names, d.if_name),
                ("linkType", selectors.link_types, d.link_type),
            )
            if wanted
        ]
        groups.setdefault(" ".join([d.ids, *extra]), []).append(d.address)
    return "; ".join(f"{what} ({', '.join(addresses)})" for what, addresses in groups.items())


def _case_hint(view: PluginView, selectors: Selectors) -> str:
    """A hint when the selector would match if the plugin compared ids without case or ``0x``."""

    def norm(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.lower().removeprefix("0x") for v in values)

    relaxed = Selectors(
        vendors=norm(selectors.vendors),
        device_ids=norm(selectors.device_ids),
        drivers=selectors.drivers,
        if_names=selectors.if_names,
        link_types=selectors.link_types,
    )
    if relaxed != selectors and select(view.devices, relaxed):
        return " (ids must be lowercase hex without 0x, as sysfs prints them)"
    return ""


def selector_problems(view: PluginView, matches: Sequence[SelectorMatch], config: DevicePluginConfig) -> list[Problem]:
    """``selector_matches_nothing`` for a resource whose selector matches no device while the node has
    RDMA devices, naming both sides; ``invalid_resource_name`` for a name kubelet refuses;
    ``device_plugin_config_ignored_field`` for fields the plugin silently ignores."""
    problems: list[Problem] = []
    matched = {m.resource: m.matched for m in matches}
    if view.snapshot.devices:
        for resource in config.resources:
            if matched.get(resource.full_name, 0) == 0:
                problems.append(
                    Problem(
                        code="selector_matches_nothing",
                        message=(
                            f"{resource.resource_name} selects {resource.selectors.summary()}, "
                            f"node has {_node_side(view, resource.selectors)}"
                            f"{_case_hint(view, resource.selectors)}"
                        ),
                        subject=resource.full_name,
                    )
                )
    for resource in config.resources:
        error = resource_name_error(resource.full_name)
        if error is not None:
            problems.append(
                Problem(
                    code="invalid_resource_name",
                    message=f"{resource.full_name} is not a valid extended resource name ({error}); "
                    "kubelet refuses the plugin's registration",
                    subject=resource.full_name,
                )
            )
    for field in config.ignored_fields:
        name = field.rsplit(".", 1)[-1]
        owner = " (an sriov-network-device-plugin selector)" if name in _SRIOV_DP_SELECTORS else ""
        problems.append(
            Problem(
                code="device_plugin_config_ignored_field",
                message=f"{config.source}: {field} is not a field of the RDMA shared device plugin{owner}; "
                "the plugin ignores it",
                subject=field,
            )
        )
    return problems


# --- consumers and "why zero" ---------------------------------------------------------------------


def consumer_of(resource: str, config: DevicePluginConfig | None) -> Consumer:
    """Shared device plugin for resources in its config or under its default prefix ``rdma/``;
    SR-IOV with RDMA CNI for every other watched resource."""
    if (config is not None and config.resource(resource) is not None) or resource.startswith(
        DEFAULT_RESOURCE_PREFIX + "/"
    ):
        return Consumer.SHARED_DEVICE_PLUGIN
    return Consumer.SRIOV_RDMA_CNI


def _watched(resources: Sequence[ResourceAmount], config: DevicePluginConfig | None) -> list[ResourceAmount]:
    """Resources on the Node plus those the plugin config names but the Node lacks (never registered)."""
    out = list(resources)
    names = {r.name for r in resources}
    for resource in config.resources if config is not None else ():
        if resource.full_name not in names:
            out.append(ResourceAmount(name=resource.full_name))
    return out


def _char_reason(devices: Sequence[PluginDevice]) -> str:
    parts = [
        f"{d.address} ({', '.join(d.rdma_devices)}) lacks "
        + ", ".join(f"{kind} (load {CHAR_DEVICE_MODULE[kind]})" for kind in d.missing)
        for d in devices
    ]
    return "the plugin skips functions without rdma_cm, umad and uverbs char devices: " + "; ".join(parts)


def _shared_reasons(
    view: PluginView, resource: str, matches: Mapping[str, int], config: DevicePluginConfig | None
) -> list[str]:
    reasons: list[str] = []
    if view.snapshot.netns_mode is NetnsMode.EXCLUSIVE:
        reasons.append("the netns mode is exclusive and the RDMA shared device plugin exits unless it is shared")
    rc = config.resource(resource) if config is not None else None
    devices = view.devices
    if rc is not None:
        if resource_name_error(resource) is not None:
            reasons.append("kubelet refuses the name (resourcePrefix must be a lowercase DNS subdomain)")
        if rc.rdma_hca_max == 0:
            reasons.append(f"rdmaHcaMax is 0 in {config.source if config else 'the config'}")
        selected = select(devices, rc.selectors)
        if not matches.get(resource, len(selected)) or not selected:
            reasons.append(
                f"its selector matches nothing: {rc.resource_name} selects {rc.selectors.summary()}, "
                f"node has {_node_side(view, rc.selectors)}"
            )
        elif all(d.missing for d in selected):
            reasons.append(_char_reason(selected))
    elif devices and all(d.missing for d in devices):
        reasons.append(_char_reason(devices))
    return reasons


def _sriov_reasons(snapshot: NodeSnapshot) -> list[str]:
    pfs = [f for f in snapshot.pci_functions if f.physfn is None and f.sriov_totalvfs and f.rdma_devices]
    if not pfs:
        return ["no SR-IOV capable PF with an RDMA device on this node"]
    if not any(f.sriov_numvfs for f in pfs):
        have = ", ".join(f"{f.address} has {f.sriov_numvfs or 0} of {f.sriov_totalvfs}" for f in pfs)
        return [f"no VFs are enabled ({have}); has the SR-IOV operator applied its policy (numVfs)?"]
    vfs = [f for f in snapshot.pci_functions if f.physfn in {p.address for p in pfs}]
    if vfs and not any(f.rdma_devices for f in vfs):
        return [f"the {len(vfs)} VFs have no RDMA device (is the policy's isRdma set, and mlx5_ib loaded?)"]
    return []


def why_zero(
    view: PluginView,
    enforcement: EnforcementState | None,
    resources: Sequence[ResourceAmount],
    matches: Sequence[SelectorMatch],
    config: DevicePluginConfig | None,
) -> list[Problem]:
    """One ``zero_allocatable`` Problem per watched resource whose allocatable is 0 or missing while
    the node has RDMA devices, listing every reason found (pure).

    Watched: ``resources`` (from agent.diagnose.quantity.resources_from_node) plus the resources the plugin config
    names. Shared-plugin reasons: exclusive netns mode (the plugin exits), ``rdmaHcaMax`` 0, a
    selector that matches nothing, matched functions lacking ``rdma_cm``/``umad``/``uverbs``. SR-IOV
    reasons: no capable PF, no VFs enabled, VFs without RDMA devices. When nothing on the node explains
    it, the message says where to look next (the plugin is not registered, or reports devices
    unhealthy). ``enforcement`` adds a note when the mode the consumer needs awaits a reboot.
    Call it only once the Node has been observed: before that every configured resource looks
    missing."""
    snapshot = view.snapshot
    if not snapshot.devices:
        return []
    matched = {m.resource: m.matched for m in matches}
    problems: list[Problem] = []
    for amount in _watched(resources, config):
        if amount.allocatable:
            continue
        consumer = consumer_of(amount.name, config)
        if consumer is Consumer.SHARED_DEVICE_PLUGIN:
            reasons = _shared_reasons(view, amount.name, matched, config)
            who = "the RDMA shared device plugin"
        else:
            reasons = _sriov_reasons(snapshot)
            who = "the SR-IOV network device plugin"
        if (
            enforcement is not None
            and enforcement.reboot_required
            and enforcement.desired.netns_mode is consumer.needs
            and snapshot.netns_mode is not consumer.needs
        ):
            reasons.append(f"netns mode {consumer.needs.value} takes effect only after the pending reboot")
        if not reasons:
            if amount.capacity is None:
                reasons.append(f"{who} has not registered it on this node (is its pod running here?)")
            else:
                reasons.append(f"capacity is {amount.capacity}: {who} reports its devices unhealthy or is restarting")
        state = "is missing from the Node" if amount.allocatable is None else "has allocatable 0"
        count = len(snapshot.devices)
        problems.append(
            Problem(
                code="zero_allocatable",
                message=f"{amount.name} {state} while the node has {count} RDMA device{'s' * (count != 1)}: "
                + "; ".join(reasons),
                subject=amount.name,
            )
        )
    return problems


def consumer_problems(
    view: PluginView,
    enforcement: EnforcementState | None,
    resources: Sequence[ResourceAmount],
    config: DevicePluginConfig | None,
) -> list[Problem]:
    """Mismatches between the node and the consumers of its RDMA devices (pure).

    A consumer is in use when the plugin config names its resource, or the Node advertises it
    (capacity > 0). ``consumer_mode_mismatch``: the live netns mode is not the one it needs;
    ``consumer_mode_conflict``: the agent is told to enforce a mode it cannot work with;
    ``missing_umad``: an RDMA device lacks its umad node, which the shared plugin requires (missing
    uverbs and rdma_cm are reported by discovery already)."""
    snapshot = view.snapshot
    problems: list[Problem] = []
    desired = enforcement.desired.netns_mode if enforcement is not None else None
    in_use = [
        a.name
        for a in _watched(resources, config)
        if (config is not None and config.resource(a.name) is not None) or (a.capacity or 0) > 0
    ]
    for name in in_use:
        consumer = consumer_of(name, config)
        if snapshot.netns_mode is not None and snapshot.netns_mode is not consumer.needs:
            problems.append(
                Problem(
                    code="consumer_mode_mismatch",
                    message=f"{name} is used by {consumer.title}, which needs netns mode "
                    f"{consumer.needs.value}; the live mode is {snapshot.netns_mode.value}",
                    subject=name,
                )
            )
        if desired is not None and desired is not consumer.needs:
            problems.append(
                Problem(
                    code="consumer_mode_conflict",
                    message=f"--netns-mode {desired.value} conflicts with {name}: {consumer.title} "
                    f"needs {consumer.needs.value}",
                    subject=name,
                )
            )
    if any(consumer_of(n, config) is Consumer.SHARED_DEVICE_PLUGIN for n in in_use):
        for device in view.devices:
            if "umad" in device.missing:
                problems.append(
                    Problem(
                        code="missing_umad",
                        message=f"{', '.join(device.rdma_devices)} ({device.address}) has no "
                        "/dev/infiniband/umadN: load ib_umad (rdma-core); the RDMA shared device plugin "
                        "skips it",
                        subject=device.address,
                    )
                )
    return problems
