"""Prometheus metrics built from the latest :class:`~agent.model.AgentState`.

:class:`RdmaCollector` reads ``state()`` once per collect and builds every family fresh, so a device
that vanished from the snapshot vanishes from ``/metrics`` and concurrent scrapes share nothing
mutable. No module-level Gauges hold device state. Every family is declared once in ``SPECS``
(:mod:`agent.publish.metric_specs`); ``describe()`` and docs/metrics.md follow that table, and a family with
no samples is not exposed (as the Go client does). Label values that are unknown are ``""``, which
Prometheus treats as an absent label.

The server renders this collector once per published state (``Exposition`` in
:mod:`agent.publish.http`) and serves the bytes to every scrape until the next cycle.

Before the first cycle (``state().snapshot is None``) only the agent's own ``rdma_agent_*`` families
are exposed: nothing is said about the node until something was read from it.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.model import (
    AgentState,
    DesiredMode,
    EnforcementState,
    NetnsMode,
    NodeSnapshot,
    PciFunction,
    Problem,
    RdmaDevice,
    RdmaPort,
)
from agent.publish.metric_specs import CHAR_DEVICE_KINDS, SPECS, MetricSpec
from agent.publish.ports import port_key
from agent.publish.readiness import READY_CONDITIONS, devices_with_uverbs, ready_conditions

_SPEC_BY_NAME = {s.name: s for s in SPECS}


def _label(value: object) -> str:
    return "" if value is None else str(value)


def _bool(value: bool) -> float:
    return 1.0 if value else 0.0


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*Gb/sec\b")


_FIRMWARE = re.compile(r"(\S+)(?: \((\S+)\))?")  # mlx5: "16.35.2000 (MT_0000000008)", "%d.%d.%04d (%.16s)"


def firmware_and_board(device: RdmaDevice) -> tuple[str | None, str | None]:
    """The firmware version alone and the board id: the mlx5 driver appends its board id to the
    version ("16.35.2000 (MT_0000000008)"); sysfs ``board_id`` wins when present. A version of some
    other shape keeps its text with every space made ``_`` (label values carry no prose)."""
    firmware = device.fw_version
    board = device.board_id
    if firmware is None:
        return None, board
    match = _FIRMWARE.fullmatch(firmware.strip())
    if match is None:
        return "_".join(firmware.split()), board
    return match.group(1), board or match.group(2)


def parse_rate_bytes_per_second(rate: str | None) -> float | None:
    """sysfs ``ports/N/rate`` (``"100 Gb/sec (4X EDR)"``) in bytes per second; None if unparsable.

    The kernel prints the signalling rate in decimal gigabits (drivers/infiniband/core/sysfs.c
    ``rate_show``), as node_exporter's procfs ``parseRate`` reads it.
    """
    match = _RATE.match(rate or "")
    return float(match.group(1)) * 1e9 / 8 if match else None


# ---------------------------------------------------------------------------------------------------
# Building families.


class _Families:
    """Samples keyed by family name; emitted in :data:`SPECS` order, families without samples skipped."""

    def __init__(self) -> None:
        self._samples: dict[str, list[tuple[tuple[str, ...], float]]] = {}

    def add(self, name: str, value: float, *labels: object) -> None:
        spec = _SPEC_BY_NAME[name]
        if len(labels) != len(spec.labels):
            raise ValueError(f"{name}: expected labels {spec.labels}, got {len(labels)} values")
        self._samples.setdefault(name, []).append((tuple(_label(v) for v in labels), value))

    def families(self) -> Iterator[Metric]:
        for spec in SPECS:
            samples = self._samples.get(spec.name)
            if not samples:
                continue
            family = _family(spec)
            for labels, value in samples:
                family.add_metric(labels, value)
            yield family


def _family(spec: MetricSpec) -> GaugeMetricFamily | CounterMetricFamily:
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def _agent(out: _Families, state: AgentState, version: str, python_version: str) -> None:
    out.add("rdma_agent_build_info", 1, version, python_version)
    for stage in state.stages:
        out.add("rdma_agent_stage_success", _bool(stage.success), stage.stage)
        if stage.last_success is not None:
            out.add("rdma_agent_stage_last_success_timestamp_seconds", stage.last_success, stage.stage)
        if stage.duration_seconds is not None:
            out.add("rdma_agent_stage_duration_seconds", stage.duration_seconds, stage.stage)


def _function_labels(pci: PciFunction | None) -> tuple[str, str]:
    """(``pf``/``vf``/``""``, the PF's address): a function without ``physfn`` is a physical function."""
    if pci is None:
        return "", ""
    if pci.physfn is not None:
        return "vf", pci.physfn
    return "pf", pci.address


def _port(out: _Families, device: RdmaDevice, port: RdmaPort, pci: PciFunction | None) -> None:
    keys = (device.name, port.port)
    function, pf_address = _function_labels(pci)
    out.add(
        "rdma_port_info",
        1,
        *keys,
        port.netdev,
        port.link_layer,
        device.pci_address,
        pci.vendor if pci else None,
        pci.device if pci else None,
        pci.driver if pci else None,
        pci.numa_node if pci else None,
        function,
        pf_address,
    )
    if port.state_code is not None:
        out.add("rdma_port_state_id", port.state_code, *keys)
    if port.physical_state_code is not None:
        out.add("rdma_port_physical_state_id", port.physical_state_code, *keys)
    out.add("rdma_port_link_up", _bool(port.link_up), *keys)
    rate = parse_rate_bytes_per_second(port.rate)
    if rate is not None:
        out.add("rdma_port_rate_bytes_per_second", rate, *keys)


def _pci(out: _Families, pci: PciFunction) -> None:
    function, pf_address = _function_labels(pci)
    out.add(
        "rdma_pci_function_info",
        1,
        pci.address,
        pci.vendor,
        pci.device,
        pci.subsystem_vendor,
        pci.subsystem_device,
        pci.driver,
        pci.numa_node,
        function,
        pf_address,
    )
    if pci.sriov_totalvfs is not None:
        out.add("rdma_pci_sriov_totalvfs", pci.sriov_totalvfs, pci.address)
    if pci.sriov_numvfs is not None:
        out.add("rdma_pci_sriov_numvfs", pci.sriov_numvfs, pci.address)


def _expected_up(out: _Families, snap: NodeSnapshot, expected: frozenset[str]) -> None:
    for device in snap.devices:
        for port in device.ports:
            out.add("rdma_port_expected_up", _bool(port_key(device, port) in expected), device.name, port.port)


def _snapshot(out: _Families, snap: NodeSnapshot, enforcement: EnforcementState | None) -> None:
    out.add("rdma_snapshot_timestamp_seconds", snap.taken_at)
    out.add("rdma_netlink_available", _bool(snap.netlink_available))
    conditions = ready_conditions(snap, enforcement)
    out.add("rdma_node_ready", _bool(all(conditions.values())))
    for condition in READY_CONDITIONS:
        out.add("rdma_node_ready_condition", _bool(conditions[condition]), condition)
    _devices(out, snap)
    _host(out, snap)
    _netns(out, snap)


def _devices(out: _Families, snap: NodeSnapshot) -> None:
    """Devices, their ports and the PCI functions behind them."""
    out.add("rdma_devices", len(snap.devices))
    with_uverbs = devices_with_uverbs(snap)
    pci_by_address = {p.address: p for p in snap.pci_functions}
    for device in snap.devices:
        firmware, board = firmware_and_board(device)
        out.add(
            "rdma_device_info",
            1,
            device.name,
            device.node_type,
            device.protocol,
            firmware,
            board,
            device.hca_type,
            device.node_guid,
            device.sys_image_guid,
            device.pci_address,
        )
        out.add("rdma_device_uverbs_present", _bool(device.name in with_uverbs), device.name)
        pci = pci_by_address.get(device.pci_address) if device.pci_address else None
        for port in device.ports:
            _port(out, device, port, pci)
    for function in snap.pci_functions:
        _pci(out, function)


def _host(out: _Families, snap: NodeSnapshot) -> None:
    """Char devices, modules, the kernel and its network namespaces."""
    kinds = dict.fromkeys(CHAR_DEVICE_KINDS, 0)
    for char in snap.char_devices:
        kinds[char.kind] = kinds.get(char.kind, 0) + (1 if char.present else 0)
    for kind in sorted(kinds):
        out.add("rdma_char_devices", kinds[kind], kind)
    for module in snap.modules:
        out.add("rdma_kernel_module_loaded", _bool(module.loaded), module.name)
    if snap.kernel.release is not None or snap.kernel.mofed_version is not None:
        out.add("rdma_kernel_info", 1, snap.kernel.release, snap.kernel.mofed_version)
    if snap.network_namespaces is not None:
        out.add("rdma_network_namespaces", snap.network_namespaces)


def _netns(out: _Families, snap: NodeSnapshot) -> None:
    """The live and persisted netns mode."""
    for mode in NetnsMode:
        out.add("rdma_netns_mode", _bool(snap.netns_mode is mode), mode.value)
    persisted = snap.persisted
    effective = persisted.value or NetnsMode.SHARED  # ib_core's default when nothing sets it
    for mode in NetnsMode:
        out.add("rdma_netns_mode_persisted", _bool(effective is mode), mode.value)
    if persisted.value is not None:
        out.add("rdma_netns_mode_persisted_info", 1, persisted.source)
    out.add("rdma_netns_mode_persisted_conflicts", len(persisted.conflicts))


def _enforcement(out: _Families, enf: EnforcementState) -> None:
    for desired in DesiredMode:
        out.add("rdma_netns_mode_desired", _bool(enf.desired is desired), desired.value)
    out.add("rdma_netns_mode_compliant", _bool(enf.compliant))
    out.add("rdma_reboot_required", _bool(enf.reboot_required))
    if enf.reboot_required:
        out.add("rdma_reboot_required_info", 1, enf.reboot_reason_code or "")
    out.add("rdma_netns_persisted_ineffective", _bool(enf.persisted_ineffective))
    out.add("rdma_netns_runtime_set_attempts_total", enf.runtime_set_attempts)
    if enf.next_runtime_attempt is not None:
        out.add("rdma_netns_runtime_next_attempt_timestamp_seconds", enf.next_runtime_attempt)


def _problems(out: _Families, problems: Iterable[Problem]) -> None:
    counts: dict[str, int] = {}
    for problem in problems:
        counts[problem.code] = counts.get(problem.code, 0) + 1
    for code in sorted(counts):
        out.add("rdma_problems", counts[code], code)


def build_families(state: AgentState, *, version: str, python_version: str) -> list[Metric]:
    """Every metric family for one state (pure: same state, same families)."""
    out = _Families()
    _agent(out, state, version, python_version)
    snap = state.snapshot
    if snap is not None:
        _snapshot(out, snap, state.enforcement)
        _expected_up(out, snap, state.ports_expected_up)
        if state.enforcement is not None:
            _enforcement(out, state.enforcement)
        for resource in state.resources:
            if resource.capacity is not None:
                out.add("rdma_node_resource_capacity", resource.capacity, resource.name)
            if resource.allocatable is not None:
                out.add("rdma_node_resource_allocatable", resource.allocatable, resource.name)
        for selector in state.selectors:
            out.add("rdma_device_plugin_selector_matched_devices", selector.matched, selector.resource)
        for resource_name in state.expected_resources:
            out.add("rdma_node_resource_expected", 1, resource_name)
        if state.plugin_config is not None:
            out.add("rdma_device_plugin_config_loaded", _bool(state.plugin_config.loaded), state.plugin_config.source)
    _problems(out, state.all_problems)
    return list(out.families())


class RdmaCollector(Collector):
    """A prometheus_client collector over the agent's latest state.

    ``state`` returns the current :class:`AgentState` (the loop replaces it atomically); it is called
    exactly once per scrape. ``python_version`` defaults to the running interpreter's and is
    injectable so golden files do not depend on it.
    """

    def __init__(self, state: Callable[[], AgentState], *, version: str, python_version: str | None = None) -> None:
        self._state = state
        self._version = version
        self._python_version = python_version if python_version is not None else platform.python_version()

    def collect(self) -> Iterable[Metric]:
        return build_families(self._state(), version=self._version, python_version=self._python_version)

    def describe(self) -> Iterable[Metric]:
        """Sample-less families, so registering checks name clashes without calling ``state()``."""
        return [_family(spec) for spec in SPECS]
