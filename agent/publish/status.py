"""``rdma-node-agent status``: the snapshot as stable JSON (schema: agent/status.schema.json) or as a
table for a person. Pure functions of the snapshot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from agent.model import (
    AgentState,
    CharDevice,
    EnforcementState,
    ModprobeOption,
    NetnsMode,
    NodeCondition,
    NodeSnapshot,
    PciFunction,
    Problem,
    RdmaDevice,
    RdmaPort,
)

SCHEMA_VERSION = 1


def load_schema() -> dict[str, Any]:
    """The JSON Schema ``status --json`` output follows (shipped in the package)."""
    schema: dict[str, Any] = json.loads(resources.files("agent").joinpath("status.schema.json").read_text())
    return schema


def _mode(mode: NetnsMode | None) -> str | None:
    return mode.value if mode is not None else None


def _port(p: RdmaPort) -> dict[str, Any]:
    return {
        "port": p.port,
        "state": p.state,
        "physical_state": p.physical_state,
        "link_up": p.link_up,
        "netdev": p.netdev,
        "netdev_index": p.netdev_index,
        "netdev_admin_up": p.netdev_admin_up,
        "link_layer": p.link_layer,
        "rate": p.rate,
        "lid": p.lid,
        "sm_lid": p.sm_lid,
    }


def _device(d: RdmaDevice) -> dict[str, Any]:
    return {
        "name": d.name,
        "index": d.index,
        "node_type": d.node_type,
        "protocol": d.protocol,
        "node_guid": d.node_guid,
        "sys_image_guid": d.sys_image_guid,
        "fw_version": d.fw_version,
        "hca_type": d.hca_type,
        "board_id": d.board_id,
        "pci_address": d.pci_address,
        "port_count": d.port_count,
        "char_devices": list(d.char_devices),
        "ports": [_port(p) for p in d.ports],
    }


def _pci(p: PciFunction) -> dict[str, Any]:
    return {
        "address": p.address,
        "vendor": p.vendor,
        "device": p.device,
        "subsystem_vendor": p.subsystem_vendor,
        "subsystem_device": p.subsystem_device,
        "class": p.pci_class,
        "driver": p.driver,
        "numa_node": p.numa_node,
        "netdevs": list(p.netdevs),
        "rdma_devices": list(p.rdma_devices),
        "sriov_totalvfs": p.sriov_totalvfs,
        "sriov_numvfs": p.sriov_numvfs,
        "physfn": p.physfn,
        "virtfns": list(p.virtfns),
    }


def _char(c: CharDevice) -> dict[str, Any]:
    return {
        "name": c.name,
        "kind": c.kind,
        "path": c.path,
        "present": c.present,
        "rdma_device": c.rdma_device,
        "port": c.port,
    }


def _option(o: ModprobeOption) -> dict[str, Any]:
    return {"source": o.source, "raw": o.raw, "value": _mode(o.value)}


def _problem(p: Problem) -> dict[str, Any]:
    return {"code": p.code, "message": p.message, "subject": p.subject}


def _enforcement(e: EnforcementState | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "desired": e.desired.value,
        "live": _mode(e.live),
        "persisted": _mode(e.persisted),
        "compliant": e.compliant,
        "reboot_required": e.reboot_required,
        "reboot_reason": e.reboot_reason,
        "persisted_ineffective": e.persisted_ineffective,
        "runtime_set_attempts": e.runtime_set_attempts,
        "next_runtime_attempt": e.next_runtime_attempt,
        "dry_run": e.dry_run,
        "plan": [{"action": a.kind.value, "mode": _mode(a.mode), "reason": a.reason} for a in e.plan],
    }


def _snapshot(state: AgentState) -> NodeSnapshot:
    """The state's snapshot; when discovery never succeeded, an empty one (nothing known, nothing
    available), so that the report still shows the ``discovery_failed`` problem."""
    return state.snapshot if state.snapshot is not None else NodeSnapshot(taken_at=0.0, netlink_available=False)


def status_document(state: AgentState) -> dict[str, Any]:
    """The documented ``status --json`` document: the snapshot, the plan, the Node's RDMA resources
    and the device plugin's selectors; problems of every stage together."""
    return snapshot_to_dict(
        _snapshot(state),
        state.enforcement,
        resources=[{"name": r.name, "capacity": r.capacity, "allocatable": r.allocatable} for r in state.resources],
        selectors=[{"resource": m.resource, "matched": m.matched, "selector": m.summary} for m in state.selectors],
        problems=state.all_problems,
        condition=_condition(state.condition),
        plugin_config=None
        if state.plugin_config is None
        else {
            "source": state.plugin_config.source,
            "ref": state.plugin_config.ref,
            "loaded": state.plugin_config.loaded,
        },
    )


def _condition(c: NodeCondition | None) -> dict[str, str] | None:
    return None if c is None else {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}


def snapshot_to_dict(
    s: NodeSnapshot,
    enforcement: EnforcementState | None = None,
    *,
    resources: list[dict[str, Any]] | None = None,
    selectors: list[dict[str, Any]] | None = None,
    problems: tuple[Problem, ...] = (),
    condition: dict[str, str] | None = None,
    plugin_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "taken_at": s.taken_at,
        "netlink_available": s.netlink_available,
        "netlink_error": s.netlink_error,
        "netns_mode": _mode(s.netns_mode),
        "netns_mode_source": s.netns_mode_source,
        "system": None
        if s.system is None
        else {
            "netns_mode": _mode(s.system.netns_mode),
            "copy_on_fork": s.system.copy_on_fork,
            "privileged_qkey": s.system.privileged_qkey,
            "monitor": s.system.monitor,
        },
        "persisted_netns_mode": {
            "value": _mode(s.persisted.value),
            "source": s.persisted.source,
            "conflicts": [_option(o) for o in s.persisted.conflicts],
        },
        "network_namespaces": s.network_namespaces,
        "kernel": {
            "release": s.kernel.release,
            "mofed_version": s.kernel.mofed_version,
            "boot_time": s.kernel.boot_time,
        },
        "modules": [{"name": m.name, "loaded": m.loaded} for m in s.modules],
        "devices": [_device(d) for d in s.devices],
        "pci_functions": [_pci(p) for p in s.pci_functions],
        "char_devices": [_char(c) for c in s.char_devices],
        "enforcement": _enforcement(enforcement),
        "resources": resources,
        "selectors": selectors or [],
        "device_plugin_config": plugin_config,
        "condition": condition,
        "problems": [_problem(p) for p in problems],
    }


def render_json(state: AgentState) -> str:
    return json.dumps(status_document(state), indent=2, sort_keys=False) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(h) for h in header]] + [["-" if v is None or v == "" else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def render_text(state: AgentState, *, kubernetes: bool = True) -> str:
    """A report for a person: what RDMA this node has and what is wrong, in plain words.
    ``kubernetes``: whether the Node could be read (else allocatable is shown as unknown)."""
    s, enforcement = _snapshot(state), state.enforcement
    problems = state.all_problems
    sections = (
        _header(s, enforcement),
        _devices(s),
        _functions(s),
        _resources(state, kubernetes),
        _condition_lines(state.condition),
        _problems(problems),
    )
    return "\n".join(line for section in sections for line in section) + "\n"


def _header(s: NodeSnapshot, enforcement: EnforcementState | None) -> list[str]:
    """Kernel, netlink, the netns mode (desired, live, persisted), the plan, modules."""
    release = s.kernel.release or "unknown"
    mofed = f", MOFED {s.kernel.mofed_version}" if s.kernel.mofed_version else ""
    lines = [f"kernel {release}{mofed}"]
    if s.netlink_available:
        lines.append("RDMA netlink: available")
    else:
        lines.append(f"RDMA netlink: unavailable ({s.netlink_error or 'unknown reason'})")
    live = f"{_mode(s.netns_mode) or 'unknown'}" + (f" (from {s.netns_mode_source})" if s.netns_mode_source else "")
    persisted = (
        f"{s.persisted.value.value} ({s.persisted.source})"
        if s.persisted.value is not None
        else "not set (kernel default: shared)"
    )
    desired = f"desired {enforcement.desired.value}; " if enforcement else ""
    lines.append(f"netns mode: {desired}live {live}; persisted {persisted}")
    if s.persisted.conflicts:
        lines.append("  conflicting settings: " + "; ".join(f"{o.source} = {o.raw}" for o in s.persisted.conflicts))
    if enforcement is not None:
        if enforcement.reboot_required:
            lines.append(f"REBOOT REQUIRED: {enforcement.reboot_reason}")
        verb = "would" if enforcement.dry_run else "will"
        lines.extend(f"  plan: {verb} {a.kind.value.replace('_', ' ')}: {a.reason}" for a in enforcement.plan)
    if s.network_namespaces is not None:
        lines.append(f"non-init network namespaces: {s.network_namespaces}")
    loaded = [m.name for m in s.modules if m.loaded]
    lines.append("modules loaded: " + (", ".join(loaded) if loaded else "none of the RDMA modules"))
    return [*lines, ""]


DEVICE_HEADER = (
    "DEVICE",
    "INDEX",
    "TYPE",
    "PROTOCOL",
    "PORT",
    "STATE",
    "PHYSICAL",
    "NETDEV",
    "LINK",
    "PCI",
    "VENDOR:DEVICE",
    "CHAR DEVICES",
)  # the table's columns, one line
FUNCTION_HEADER = ("ADDRESS", "VENDOR:DEVICE", "DRIVER", "NUMA", "NETDEVS", "RDMA", "VFS", "PF")


def _devices(s: NodeSnapshot) -> list[str]:
    """One row per RDMA port (a device without ports gets one row)."""
    pci = {p.address: p for p in s.pci_functions}
    rows: list[list[object]] = []
    for d in s.devices:
        fn = pci.get(d.pci_address or "")
        ids = f"{fn.vendor}:{fn.device}" if fn and fn.vendor else None
        for p in d.ports or (RdmaPort(port=0),):
            rows.append(
                [
                    d.name,
                    d.index,
                    d.node_type,
                    d.protocol,
                    p.port or None,
                    p.state,
                    p.physical_state,
                    p.netdev,
                    p.link_layer,
                    d.pci_address,
                    ids,
                    " ".join(d.char_devices),
                ]
            )
    if not rows:
        return ["RDMA devices: none", ""]
    return ["RDMA devices", *("  " + line for line in _table(DEVICE_HEADER, rows)), ""]


def _functions(s: NodeSnapshot) -> list[str]:
    rows = [
        [
            p.address,
            f"{p.vendor}:{p.device}",
            p.driver,
            p.numa_node,
            ",".join(p.netdevs),
            ",".join(p.rdma_devices),
            f"{p.sriov_numvfs}/{p.sriov_totalvfs}" if p.sriov_totalvfs is not None else None,
            p.physfn,
        ]
        for p in s.pci_functions
    ]
    if not rows:
        return []
    return ["PCI functions", *("  " + line for line in _table(FUNCTION_HEADER, rows)), ""]


def _resources(state: AgentState, kubernetes: bool) -> list[str]:
    """The Node's RDMA resources and the device plugin's selectors."""
    lines: list[str] = []
    if state.resources:
        lines.append("RDMA resources on the Node")
        rows: list[list[object]] = [[r.name, r.capacity, r.allocatable] for r in state.resources]
        lines.extend("  " + line for line in _table(("RESOURCE", "CAPACITY", "ALLOCATABLE"), rows))
    elif kubernetes:
        lines.append("RDMA resources on the Node: none advertised")
    else:
        lines.append("RDMA resources on the Node: unknown (no Kubernetes access)")
    if state.plugin_config is not None:
        source = state.plugin_config
        what = "ConfigMap" if source.source == "configmap" else "file"
        read = "read" if source.loaded else "NOT read: see problems"
        lines.append(f"Device plugin config: {what} {source.ref} ({read})")
    if state.selectors:
        lines.append("Device plugin selectors")
        selectors: list[list[object]] = [[m.resource, m.summary, m.matched] for m in state.selectors]
        lines.extend("  " + line for line in _table(("RESOURCE", "SELECTOR", "MATCHED DEVICES"), selectors))
    return [*lines, ""]


def _condition_lines(c: NodeCondition | None) -> list[str]:
    """The RDMAReady condition as ``kubectl describe node`` would show it."""
    if c is None:
        return []
    return [f"Node condition {c.type}: {c.status} ({c.reason})", f"  {c.message}", ""]


def _problems(problems: Sequence[Problem]) -> list[str]:
    if not problems:
        return ["Problems: none"]
    return ["Problems", *(f"  - {p.message} [{p.code}]" for p in problems)]
