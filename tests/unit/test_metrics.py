"""The /metrics collector (agent/publish/metrics.py): golden exposition per scenario, promtool lint,
readiness rule, vanishing devices, one state() read per scrape, and docs/metrics.md coverage.

Regenerate the golden files after an intended change with ONE command, then review the diff:

    RNA_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_metrics.py

promtool (Debian package ``prometheus``) lints every golden file when it is on PATH; without it that
test skips with a reason, unless CI=true or RNA_REQUIRE_PROMTOOL=1, which make it fail.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.model import (
    AgentState,
    CharDevice,
    DesiredMode,
    EnforcementState,
    KernelInfo,
    KernelModule,
    ModprobeOption,
    NetnsMode,
    NodeSnapshot,
    PciFunction,
    PersistedNetnsMode,
    Problem,
    RdmaDevice,
    RdmaPort,
    ResourceAmount,
    SelectorMatch,
    StageHealth,
)
from agent.publish.metric_specs import SPECS
from agent.publish.metrics import RdmaCollector, firmware_and_board, parse_rate_bytes_per_second
from agent.publish.ports import PortsStage
from agent.publish.readiness import READY_CONDITIONS, ready_conditions
from tests.builders import rdma_port, render_metrics
from tests.host import required_tool

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO / "tests" / "fixtures" / "metrics"
DOCS = REPO / "docs" / "metrics.md"
VERSION = "1.2.3"  # fixed, so a release bump does not rewrite the golden files
PYTHON = "3.11.2"
T0 = 1_714_000_000.0  # injected "now" for every timestamp in the scenarios

# ---------------------------------------------------------------------------------------------------
# Scenario building blocks: realistic values (ConnectX-5 15b3:1017 dual port, a VF, Soft-RoCE).

# As procfs.WATCHED_MODULES reports them on a ConnectX node.
MODULES = tuple(
    KernelModule(name=n, loaded=n != "rdma_rxe")
    for n in ("ib_core", "ib_uverbs", "ib_umad", "rdma_ucm", "rdma_cm", "mlx5_core", "mlx5_ib", "rdma_rxe")
)


def _char(name: str, kind: str, device: str | None = None, port: int | None = None) -> CharDevice:
    return CharDevice(name=name, kind=kind, path=f"/dev/infiniband/{name}", present=True, rdma_device=device, port=port)


def _mlx5(name: str, index: int, pci: str, port: RdmaPort, chars: tuple[str, ...]) -> RdmaDevice:
    return RdmaDevice(
        name=name,
        index=index,
        node_type="ca",
        protocol="roce",
        fw_version="16.35.2000 (MT_0000000008)",  # mlx5 appends its board id (netlink and sysfs fw_ver alike)
        hca_type="MT4119",  # ConnectX-5 (15b3:1017)
        node_guid=f"b8ce:f603:00a1:b2c{index}",
        sys_image_guid="b8ce:f603:00a1:b2c4",
        port_count=1,
        pci_address=pci,
        ports=(port,),
        char_devices=chars,
    )


def _pci(address: str, **kw: object) -> PciFunction:
    base: dict[str, object] = {
        "vendor": "15b3",
        "device": "1017",
        "subsystem_vendor": "15b3",
        "subsystem_device": "0007",
        "pci_class": "020000",
        "driver": "mlx5_core",
        "numa_node": 0,
    }
    base.update(kw)
    return PciFunction(address=address, **base)  # type: ignore[arg-type]


def _stages(**failed: bool) -> tuple[StageHealth, ...]:
    return tuple(
        StageHealth(
            stage=s,
            success=not failed.get(s, False),
            last_success=T0 - 30.0 if failed.get(s, False) else T0 + 0.25,
            duration_seconds=0.0125,
        )
        for s in ("discover", "enforce", "labels", "allocatable")
    )


def mlx5_snapshot() -> NodeSnapshot:
    devices = (
        _mlx5("mlx5_0", 0, "0000:3b:00.0", rdma_port("ens1f0np0", netdev_index=4), ("issm0", "umad0", "uverbs0")),
        _mlx5(
            "mlx5_1",
            1,
            "0000:3b:00.1",
            rdma_port("ens1f1np1", up=False, netdev_index=5, rate="10 Gb/sec (4X SDR)"),
            ("issm1", "umad1", "uverbs1"),
        ),
        _mlx5("mlx5_2", 2, "0000:3b:00.2", rdma_port("ens1f0v0", netdev_index=9), ("issm2", "umad2", "uverbs2")),
    )
    pci = (
        _pci(
            "0000:3b:00.0",
            netdevs=("ens1f0np0",),
            rdma_devices=("mlx5_0",),
            sriov_totalvfs=8,
            sriov_numvfs=1,
            virtfns=("0000:3b:00.2",),
        ),
        _pci("0000:3b:00.1", netdevs=("ens1f1np1",), rdma_devices=("mlx5_1",), sriov_totalvfs=8, sriov_numvfs=0),
        _pci(
            "0000:3b:00.2",
            device="1018",
            subsystem_device="0080",
            netdevs=("ens1f0v0",),
            rdma_devices=("mlx5_2",),
            physfn="0000:3b:00.0",
        ),
    )
    chars = (
        *(
            _char(f"{kind}{i}", kind, f"mlx5_{i}", 1 if kind != "uverbs" else None)
            for i in range(3)
            for kind in ("issm", "umad", "uverbs")
        ),
        _char("rdma_cm", "rdma_cm"),
    )
    return NodeSnapshot(
        taken_at=T0,
        netlink_available=True,
        netns_mode=NetnsMode.SHARED,
        netns_mode_source="netlink",
        devices=devices,
        pci_functions=pci,
        char_devices=chars,
        modules=MODULES,
        kernel=KernelInfo(release="6.1.0-56-amd64", mofed_version=None, boot_time=T0 - 86400.0),
        network_namespaces=12,
        problems=(Problem(code="port_down", message="mlx5_1/1 is DOWN (DISABLED) on ens1f1np1", subject="mlx5_1/1"),),
    )


def scenario_before_first_cycle() -> AgentState:
    return AgentState()


def scenario_no_rdma() -> AgentState:
    snapshot = NodeSnapshot(
        taken_at=T0,
        netlink_available=False,
        netlink_error="RDMA netlink: EPROTONOSUPPORT (Protocol not supported)",
        modules=tuple(KernelModule(name=m.name, loaded=False) for m in MODULES),
        kernel=KernelInfo(release="6.12.95+deb12-amd64"),
        network_namespaces=0,
        problems=(Problem(code="no_rdma_netlink", message="no RDMA netlink: ib_core is not loaded"),),
    )
    enforcement = EnforcementState(desired=DesiredMode.UNMANAGED, live=None, persisted=None, compliant=True)
    return AgentState(snapshot=snapshot, enforcement=enforcement, stages=_stages())


def scenario_mlx5_shared_compliant() -> AgentState:
    enforcement = EnforcementState(desired=DesiredMode.SHARED, live=NetnsMode.SHARED, persisted=None, compliant=True)
    return AgentState(
        snapshot=mlx5_snapshot(),
        enforcement=enforcement,
        stages=_stages(),
        resources=(
            ResourceAmount(name="spidernet.io/hca_shared_devices", capacity=1000, allocatable=1000),
            ResourceAmount(name="rdma/hca_shared_devices_a", capacity=None, allocatable=0),
        ),
        selectors=(
            SelectorMatch(
                resource="spidernet.io/hca_shared_devices", matched=2, summary="vendors 15b3, deviceIDs 1017"
            ),
        ),
        expected_resources=("spidernet.io/hca_shared_devices",),
    )


def scenario_exclusive_reboot_required() -> AgentState:
    option = ModprobeOption(source="/etc/modprobe.d/ib_core.conf:1", raw="0", value=NetnsMode.EXCLUSIVE)
    stale = ModprobeOption(source="/etc/modprobe.d/zz-local.conf:2", raw="1", value=NetnsMode.SHARED)
    snapshot = replace(
        mlx5_snapshot(),
        persisted=PersistedNetnsMode(
            value=NetnsMode.EXCLUSIVE, source=option.source, conflicts=(stale,), options=(stale, option)
        ),
    )
    reason = "the kernel refused exclusive mode at runtime (EBUSY); the persisted setting applies at the next boot"
    enforcement = EnforcementState(
        desired=DesiredMode.EXCLUSIVE,
        live=NetnsMode.SHARED,
        persisted=NetnsMode.EXCLUSIVE,
        compliant=False,
        reboot_required=True,
        reboot_reason=reason,
        reboot_reason_code="netns_mode_busy",
        runtime_set_attempts=3,
        next_runtime_attempt=T0 + 600.0,
        problems=(
            Problem(
                code="netns_mode_busy",
                message="the kernel refused to switch to exclusive mode at runtime (EBUSY): 12 non-init network "
                "namespaces exist (every pod has one); the persisted setting applies at the next boot",
            ),
        ),
    )
    return AgentState(
        snapshot=snapshot,
        enforcement=enforcement,
        stages=_stages(enforce=True),
        selectors=(
            SelectorMatch(resource="spidernet.io/mellanoxrdma", matched=0, summary="vendors 15b3, deviceIDs 1018"),
        ),
        problems=(
            Problem(code="selector_matches_nothing", message="selects 15b3:1018, node has 15b3:1017"),
            Problem(code="netns_mode_unsuitable", message="the shared device plugin needs shared mode"),
        ),
    )


def scenario_soft_roce() -> AgentState:
    snapshot = NodeSnapshot(
        taken_at=T0,
        netlink_available=True,
        netns_mode=NetnsMode.EXCLUSIVE,
        netns_mode_source="netlink",
        devices=(
            RdmaDevice(
                name="rxe0",
                index=0,
                node_type="ca",
                protocol="roce",
                node_guid="d084:21ff:fe94:9ca6",
                sys_image_guid="d084:21ff:fe94:9ca6",
                port_count=1,
                ports=(
                    RdmaPort(
                        port=1,
                        state="ACTIVE",
                        state_code=4,
                        physical_state="LINK_UP",
                        physical_state_code=5,
                        netdev="d0",
                        netdev_index=2,
                        link_layer="Ethernet",
                        rate="10 Gb/sec (1X QDR)",
                    ),
                ),
                char_devices=("uverbs0",),
            ),
        ),
        char_devices=(_char("uverbs0", "uverbs", "rxe0"), _char("rdma_cm", "rdma_cm")),
        modules=tuple(replace(m, loaded=not m.name.startswith("mlx5")) for m in MODULES),
        kernel=KernelInfo(release="6.12.95+deb12-amd64"),
        persisted=PersistedNetnsMode(
            value=NetnsMode.EXCLUSIVE,
            source="/etc/modprobe.d/ib_core.conf:1",
            options=(ModprobeOption(source="/etc/modprobe.d/ib_core.conf:1", raw="0", value=NetnsMode.EXCLUSIVE),),
        ),
        network_namespaces=1,
    )
    enforcement = EnforcementState(
        desired=DesiredMode.EXCLUSIVE,
        live=NetnsMode.EXCLUSIVE,
        persisted=NetnsMode.EXCLUSIVE,
        compliant=True,
        runtime_set_attempts=1,
    )
    return AgentState(snapshot=snapshot, enforcement=enforcement, stages=_stages())


SCENARIOS: dict[str, Callable[[], AgentState]] = {
    "before_first_cycle": scenario_before_first_cycle,
    "no_rdma": scenario_no_rdma,
    "mlx5_shared_compliant": scenario_mlx5_shared_compliant,
    "exclusive_reboot_required": scenario_exclusive_reboot_required,
    "soft_roce": scenario_soft_roce,
}


def _recorded_scenarios() -> dict[str, Callable[[], AgentState]]:
    """Snapshots recorded on a real kernel (tests/snapshots.py), when that module exists."""
    try:
        snapshots = importlib.import_module("tests.snapshots")
    except ModuleNotFoundError:
        return {}

    def scenario(name: str) -> Callable[[], AgentState]:
        return lambda: AgentState(snapshot=snapshots.fixture_snapshot(name), stages=_stages())

    return {f"recorded_{name}": scenario(name) for name in getattr(snapshots, "SCENARIOS", ())}


SCENARIOS.update(_recorded_scenarios())


def _published(make: Callable[[], AgentState]) -> Callable[[], AgentState]:
    """The state as the loop publishes it: after the ports stage (which ports are meant to be up)."""
    return lambda: PortsStage()(make())


SCENARIOS = {name: _published(make) for name, make in SCENARIOS.items()}


def _samples(state: AgentState) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RdmaCollector(lambda: state, version=VERSION, python_version=PYTHON))
    return registry


# ---------------------------------------------------------------------------------------------------
# Golden files.


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_golden_exposition(scenario: str) -> None:
    text = render_metrics(SCENARIOS[scenario](), VERSION, python_version=PYTHON)
    golden = GOLDEN_DIR / f"{scenario}.prom"
    if os.environ.get("RNA_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(text)
    assert golden.exists(), f"{golden} is missing: run RNA_UPDATE_GOLDEN=1 .venv/bin/pytest {__file__}"
    # Decoded only for pytest's readable diff; read_bytes keeps it byte-for-byte (no newline translation).
    assert text.decode() == golden.read_bytes().decode(), f"{scenario}: /metrics changed, see module docstring"


def test_every_golden_file_has_a_scenario() -> None:
    # A renamed scenario must not leave a stale golden file behind that nobody checks.
    assert {p.stem for p in GOLDEN_DIR.glob("*.prom")} == set(SCENARIOS)


def test_promtool_check_metrics_is_silent_on_golden_files() -> None:
    promtool = required_tool("promtool", env="RNA_REQUIRE_PROMTOOL", install="apt-get install prometheus")
    files = sorted(GOLDEN_DIR.glob("*.prom"))
    assert files
    for path in files:
        result = subprocess.run(
            [promtool, "check", "metrics"], input=path.read_bytes(), capture_output=True, check=False
        )
        output = (result.stdout + result.stderr).decode()
        assert (result.returncode, output) == (0, ""), f"{path.name}: {output}"


@pytest.mark.parametrize(
    ("fw_version", "board_id", "expected"),
    [
        ("16.35.2000 (MT_0000000008)", None, ("16.35.2000", "MT_0000000008")),  # mlx5: "%d.%d.%04d (%.16s)"
        ("16.35.2000 (MT_0000000008)", "MT_0000000012", ("16.35.2000", "MT_0000000012")),  # sysfs board_id wins
        ("1.0.0", None, ("1.0.0", None)),  # rxe
        ("20.31.1014 beta build", None, ("20.31.1014_beta_build", None)),  # any other shape: no spaces
        (None, "MT_0000000008", (None, "MT_0000000008")),
    ],
)
def test_firmware_version_and_board_id_as_node_exporter_names_them(
    fw_version: str | None, board_id: str | None, expected: tuple[str | None, str | None]
) -> None:
    device = RdmaDevice(name="mlx5_0", fw_version=fw_version, board_id=board_id)
    assert firmware_and_board(device) == expected


def test_no_label_value_in_a_golden_file_is_prose() -> None:
    """Label values are codes and identifiers: no space (each rewording would be a new series)."""
    checked = 0
    for path in sorted(GOLDEN_DIR.glob("*.prom")):
        for family in text_string_to_metric_families(path.read_text()):
            for sample in family.samples:
                spaced = {k: v for k, v in sample.labels.items() if " " in v}
                assert not spaced, f"{path.name}: {sample.name}{spaced}"
                checked += len(sample.labels)
    assert checked > 100


# ---------------------------------------------------------------------------------------------------
# Values.

MLX5 = SCENARIOS["mlx5_shared_compliant"]()
REBOOT = SCENARIOS["exclusive_reboot_required"]()


def _spare_port_down() -> AgentState:
    """mlx5_1's port uncabled, its netdev left down: not meant to be up."""
    snapshot = mlx5_snapshot()
    spare = replace(rdma_port("ens1f1np1", up=False), netdev_admin_up=False)
    devices = tuple(replace(d, ports=(spare,)) if d.name == "mlx5_1" else d for d in snapshot.devices)
    return PortsStage()(AgentState(snapshot=replace(snapshot, devices=devices)))


SPARE = _spare_port_down()


@pytest.mark.parametrize(
    ("state", "name", "labels", "value"),
    [
        (MLX5, "rdma_port_link_up", {"device": "mlx5_0", "port": "1"}, 1.0),
        (MLX5, "rdma_port_link_up", {"device": "mlx5_1", "port": "1"}, 0.0),
        (MLX5, "rdma_port_state_id", {"device": "mlx5_1", "port": "1"}, 1.0),
        (MLX5, "rdma_port_physical_state_id", {"device": "mlx5_0", "port": "1"}, 5.0),
        (MLX5, "rdma_port_rate_bytes_per_second", {"device": "mlx5_0", "port": "1"}, 12.5e9),
        (MLX5, "rdma_pci_sriov_totalvfs", {"pci_address": "0000:3b:00.0"}, 8.0),
        (MLX5, "rdma_pci_sriov_numvfs", {"pci_address": "0000:3b:00.0"}, 1.0),
        (MLX5, "rdma_pci_sriov_totalvfs", {"pci_address": "0000:3b:00.2"}, None),  # a VF has none
        (MLX5, "rdma_devices", {}, 3.0),
        (MLX5, "rdma_device_uverbs_present", {"device": "mlx5_2"}, 1.0),
        (MLX5, "rdma_char_devices", {"kind": "uverbs"}, 3.0),
        (MLX5, "rdma_char_devices", {"kind": "rdma_cm"}, 1.0),
        (MLX5, "rdma_kernel_module_loaded", {"module": "rdma_ucm"}, 1.0),
        (MLX5, "rdma_network_namespaces", {}, 12.0),
        (MLX5, "rdma_netlink_available", {}, 1.0),
        (MLX5, "rdma_netns_mode", {"mode": "shared"}, 1.0),
        (MLX5, "rdma_netns_mode", {"mode": "exclusive"}, 0.0),
        (MLX5, "rdma_netns_mode_persisted", {"mode": "shared"}, 1.0),  # nothing persisted: kernel default
        (MLX5, "rdma_netns_mode_persisted_info", {"source": ""}, None),
        (MLX5, "rdma_netns_mode_desired", {"mode": "shared"}, 1.0),
        (MLX5, "rdma_netns_mode_compliant", {}, 1.0),
        (MLX5, "rdma_reboot_required", {}, 0.0),
        (MLX5, "rdma_node_ready", {}, 1.0),
        (MLX5, "rdma_problems", {"code": "port_down"}, 1.0),
        (MLX5, "rdma_node_resource_capacity", {"resource": "spidernet.io/hca_shared_devices"}, 1000.0),
        (MLX5, "rdma_node_resource_capacity", {"resource": "rdma/hca_shared_devices_a"}, None),
        (MLX5, "rdma_node_resource_allocatable", {"resource": "rdma/hca_shared_devices_a"}, 0.0),
        (MLX5, "rdma_device_plugin_selector_matched_devices", {"resource": "spidernet.io/hca_shared_devices"}, 2.0),
        (MLX5, "rdma_port_expected_up", {"device": "mlx5_0", "port": "1"}, 1.0),
        (SPARE, "rdma_port_expected_up", {"device": "mlx5_1", "port": "1"}, 0.0),
        (SPARE, "rdma_port_link_up", {"device": "mlx5_1", "port": "1"}, 0.0),
        (SPARE, "rdma_port_expected_up", {"device": "mlx5_0", "port": "1"}, 1.0),
        (MLX5, "rdma_node_resource_expected", {"resource": "spidernet.io/hca_shared_devices"}, 1.0),
        (MLX5, "rdma_node_resource_expected", {"resource": "rdma/hca_shared_devices_a"}, None),
        (MLX5, "rdma_agent_stage_success", {"stage": "enforce"}, 1.0),
        (MLX5, "rdma_agent_stage_last_success_timestamp_seconds", {"stage": "labels"}, T0 + 0.25),
        (MLX5, "rdma_agent_stage_duration_seconds", {"stage": "discover"}, 0.0125),
        (MLX5, "rdma_agent_build_info", {"version": VERSION, "python": PYTHON}, 1.0),
        (MLX5, "rdma_snapshot_timestamp_seconds", {}, T0),
        (REBOOT, "rdma_netns_mode_desired", {"mode": "exclusive"}, 1.0),
        (REBOOT, "rdma_netns_mode_desired", {"mode": "unmanaged"}, 0.0),
        (REBOOT, "rdma_netns_mode_persisted", {"mode": "exclusive"}, 1.0),
        (REBOOT, "rdma_netns_mode_persisted_info", {"source": "/etc/modprobe.d/ib_core.conf:1"}, 1.0),
        (REBOOT, "rdma_netns_mode_persisted_conflicts", {}, 1.0),
        (REBOOT, "rdma_netns_mode_compliant", {}, 0.0),
        (REBOOT, "rdma_reboot_required", {}, 1.0),
        (REBOOT, "rdma_reboot_required_info", {"reason": "netns_mode_busy"}, 1.0),  # a code: prose is status's
        (REBOOT, "rdma_netns_runtime_set_attempts_total", {}, 3.0),
        (REBOOT, "rdma_netns_runtime_next_attempt_timestamp_seconds", {}, T0 + 600.0),
        (REBOOT, "rdma_node_ready", {}, 0.0),
        (REBOOT, "rdma_node_ready_condition", {"condition": "no_reboot_required"}, 0.0),
        (REBOOT, "rdma_node_ready_condition", {"condition": "port_link_up"}, 1.0),
        (REBOOT, "rdma_agent_stage_success", {"stage": "enforce"}, 0.0),
        (REBOOT, "rdma_agent_stage_last_success_timestamp_seconds", {"stage": "enforce"}, T0 - 30.0),
        # Problems from the snapshot, the enforcer and the publishers are all counted.
        (REBOOT, "rdma_problems", {"code": "port_down"}, 1.0),
        (REBOOT, "rdma_problems", {"code": "netns_mode_busy"}, 1.0),
        (REBOOT, "rdma_problems", {"code": "selector_matches_nothing"}, 1.0),
    ],
)
def test_sample_values(state: AgentState, name: str, labels: dict[str, str], value: float | None) -> None:
    assert _samples(state).get_sample_value(name, labels) == value


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (
            "mlx5_0",
            {
                "device": "mlx5_0",
                "port": "1",
                "netdev": "ens1f0np0",
                "link_layer": "Ethernet",
                "pci_address": "0000:3b:00.0",
                "vendor": "15b3",
                "device_id": "1017",
                "driver": "mlx5_core",
                "numa_node": "0",
                "function": "pf",
                "pf_pci_address": "0000:3b:00.0",
            },
        ),
        (
            "mlx5_2",
            {
                "device": "mlx5_2",
                "port": "1",
                "netdev": "ens1f0v0",
                "link_layer": "Ethernet",
                "pci_address": "0000:3b:00.2",
                "vendor": "15b3",
                "device_id": "1018",
                "driver": "mlx5_core",
                "numa_node": "0",
                "function": "vf",
                "pf_pci_address": "0000:3b:00.0",
            },
        ),
    ],
)
def test_port_info_maps_device_to_netdev_pci_and_pf(device: str, expected: dict[str, str]) -> None:
    registry = _samples(MLX5)
    assert registry.get_sample_value("rdma_port_info", expected) == 1.0


def test_soft_roce_port_has_empty_pci_labels() -> None:
    labels = {
        "device": "rxe0",
        "port": "1",
        "netdev": "d0",
        "link_layer": "Ethernet",
        "pci_address": "",
        "vendor": "",
        "device_id": "",
        "driver": "",
        "numa_node": "",
        "function": "",
        "pf_pci_address": "",
    }
    assert _samples(scenario_soft_roce()).get_sample_value("rdma_port_info", labels) == 1.0


def test_live_mode_unreadable_sets_both_modes_to_zero() -> None:
    state = replace(MLX5, snapshot=replace(mlx5_snapshot(), netns_mode=None))
    registry = _samples(state)
    assert [registry.get_sample_value("rdma_netns_mode", {"mode": m.value}) for m in NetnsMode] == [0.0, 0.0]


def _names(state: AgentState) -> set[str]:
    return {s.name for family in _samples(state).collect() for s in family.samples}


def test_before_first_cycle_only_agent_metrics() -> None:
    state = replace(scenario_before_first_cycle(), stages=_stages(discover=True))
    assert _names(state) == {
        "rdma_agent_build_info",
        "rdma_agent_stage_success",
        "rdma_agent_stage_last_success_timestamp_seconds",
        "rdma_agent_stage_duration_seconds",
    }


def test_vanished_device_vanishes() -> None:
    current = [MLX5]
    registry = CollectorRegistry()
    registry.register(RdmaCollector(lambda: current[0], version=VERSION))
    labels = {"device": "mlx5_1", "port": "1"}
    assert registry.get_sample_value("rdma_port_link_up", labels) == 0.0
    snapshot = mlx5_snapshot()
    current[0] = replace(MLX5, snapshot=replace(snapshot, devices=snapshot.devices[:1]))
    assert registry.get_sample_value("rdma_port_link_up", labels) is None
    assert registry.get_sample_value("rdma_device_uverbs_present", {"device": "mlx5_1"}) is None
    assert registry.get_sample_value("rdma_devices") == 1.0


def test_state_is_read_once_per_scrape_and_not_at_registration() -> None:
    calls: list[int] = []

    def state() -> AgentState:
        calls.append(1)
        return MLX5

    registry = CollectorRegistry()
    registry.register(RdmaCollector(state, version=VERSION))
    assert calls == []
    generate_latest(registry)
    assert calls == [1]
    generate_latest(registry)
    assert calls == [1, 1]


def test_describe_lets_the_registry_catch_a_second_registration() -> None:
    registry = CollectorRegistry()
    registry.register(RdmaCollector(AgentState, version=VERSION))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(RdmaCollector(AgentState, version=VERSION))


# ---------------------------------------------------------------------------------------------------
# Readiness rule: each condition alone makes the node not ready.


def _without_rdma_cm(s: NodeSnapshot) -> NodeSnapshot:
    return replace(s, char_devices=tuple(c for c in s.char_devices if c.kind != "rdma_cm"))


def _uverbs_nodes_missing(s: NodeSnapshot) -> NodeSnapshot:
    return replace(
        s, char_devices=tuple(replace(c, present=False) if c.kind == "uverbs" else c for c in s.char_devices)
    )


def _all_ports_down(s: NodeSnapshot) -> NodeSnapshot:
    return replace(
        s,
        devices=tuple(
            replace(d, ports=tuple(replace(p, state="DOWN", state_code=1) for p in d.ports)) for d in s.devices
        ),
    )


def _only_the_down_port_has_uverbs(s: NodeSnapshot) -> NodeSnapshot:
    # Link up on mlx5_0/mlx5_2 but their uverbs nodes are missing; mlx5_1 has uverbs but is down.
    gone = {"uverbs0", "uverbs2"}
    return replace(s, char_devices=tuple(replace(c, present=False) if c.name in gone else c for c in s.char_devices))


COMPLIANT = scenario_mlx5_shared_compliant().enforcement
assert COMPLIANT is not None


@pytest.mark.parametrize(
    ("snapshot", "enforcement", "failing"),
    [
        (mlx5_snapshot(), COMPLIANT, set()),
        (mlx5_snapshot(), None, set()),  # enforce has not reported yet: not held against the node
        (replace(mlx5_snapshot(), devices=()), COMPLIANT, {"rdma_device_present", "port_link_up", "uverbs_present"}),
        (_all_ports_down(mlx5_snapshot()), COMPLIANT, {"port_link_up", "uverbs_present"}),
        (_uverbs_nodes_missing(mlx5_snapshot()), COMPLIANT, {"uverbs_present"}),
        (_only_the_down_port_has_uverbs(mlx5_snapshot()), COMPLIANT, {"uverbs_present"}),
        (_without_rdma_cm(mlx5_snapshot()), COMPLIANT, {"rdma_cm_present"}),
        (mlx5_snapshot(), replace(COMPLIANT, compliant=False), {"netns_mode_compliant"}),
        (mlx5_snapshot(), replace(COMPLIANT, reboot_required=True), {"no_reboot_required"}),
    ],
)
def test_ready_conditions(snapshot: NodeSnapshot, enforcement: EnforcementState | None, failing: set[str]) -> None:
    conditions = ready_conditions(snapshot, enforcement)
    assert list(conditions) == list(READY_CONDITIONS)
    assert {name for name, ok in conditions.items() if not ok} == failing
    state = AgentState(snapshot=snapshot, enforcement=enforcement)
    assert _samples(state).get_sample_value("rdma_node_ready") == (0.0 if failing else 1.0)


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("100 Gb/sec (4X EDR)", 12.5e9),
        ("2.5 Gb/sec (1X SDR)", 312.5e6),
        ("200 Gb/sec (2X HDR)", 25e9),
        ("", None),
        (None, None),
        ("fast", None),
    ],
)
def test_parse_rate(rate: str | None, expected: float | None) -> None:
    assert parse_rate_bytes_per_second(rate) == expected


# ---------------------------------------------------------------------------------------------------
# Naming rules and the reference table.


def test_names_follow_prometheus_conventions() -> None:
    for spec in SPECS:
        assert re.fullmatch(r"rdma_[a-z0-9_]+", spec.name), spec.name
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        assert not {"cluster", "env", "environment", "instance", "job", "node"} & set(spec.labels), spec.name
    assert len({s.name for s in SPECS}) == len(SPECS)


def _documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in DOCS.read_text().splitlines():
        match = re.match(r"^\| `(rdma_[a-z0-9_]+)` \| (gauge|counter) \|([^|]*)\|", line)
        if match:
            labels = tuple(re.findall(r"`([a-z_]+)`", match.group(3)))
            rows[match.group(1)] = (match.group(2), labels)
    return rows


def test_docs_table_lists_every_metric_with_its_type_and_labels() -> None:
    assert _documented() == {s.name: (s.type, s.labels) for s in SPECS}
