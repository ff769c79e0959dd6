"""Diagnosis (agent/diagnose/diagnosis.py): the shared device plugin's selector problems, "why is
allocatable zero?", and netns-mode / char-device mismatches with the consumer of the node's RDMA
devices."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.diagnose.diagnosis import Consumer, consumer_of, consumer_problems, selector_problems, why_zero
from agent.diagnose.plugin_config import DevicePluginConfig, ResourceConfig, Selectors
from agent.diagnose.selection import match_selectors, plugin_view
from agent.model import (
    DesiredMode,
    EnforcementState,
    NetnsMode,
    NodeSnapshot,
    Problem,
    ResourceAmount,
    SelectorMatch,
)
from tests.deviceplugin_fixtures import FIXTURES, HCA, NO_RDMA, SRIOV, config, enforcement, single_pf, without
from tests.unit.test_labels import mlx5_snapshot

# --- selectors against the node ----------------------------------------------------------------------


def _problems(snapshot: NodeSnapshot, fixture: str) -> list[tuple[str, str, str | None]]:
    cfg = config(fixture)
    view = plugin_view(snapshot)
    return [(p.code, p.message, p.subject) for p in selector_problems(view, match_selectors(view, cfg), cfg)]


@pytest.mark.parametrize(
    ("snapshot", "fixture", "problems"),
    [
        (mlx5_snapshot(), "spiderpool-default.json", []),
        (
            single_pf(),
            "spiderpool-1018.json",
            [
                (
                    "selector_matches_nothing",
                    "hca_shared_devices selects 15b3:1018, node has 15b3:1017 (0000:3b:00.0)",
                    HCA,
                )
            ],
        ),
        (
            replace(
                mlx5_snapshot(),
                devices=mlx5_snapshot().devices[:2],
                pci_functions=mlx5_snapshot().pci_functions[:3],
            ),
            "spiderpool-1018.json",
            [
                (
                    "selector_matches_nothing",
                    "hca_shared_devices selects 15b3:1018, node has 15b3:1017 (0000:3b:00.0, 0000:3b:00.1)",
                    HCA,
                )
            ],
        ),
        (
            mlx5_snapshot(),
            "gpu-affinity.json",
            [
                (
                    "selector_matches_nothing",
                    "shared_cx5_gpu3 selects ifNames enp18s0f0np0, node has 15b3:1017 ifName ens1f0np0 "
                    "(0000:3b:00.0); 15b3:1017 ifName ens1f1np1 (0000:3b:00.1); 15b3:1018 ifName ens1f0v0 "
                    "(0000:3b:00.2)",
                    "spidernet.io/shared_cx5_gpu3",
                )
            ],
        ),
        (NO_RDMA, "spiderpool-default.json", []),  # nothing to select: not a selector problem
        (
            replace(
                mlx5_snapshot(),
                devices=mlx5_snapshot().devices[3:],
                pci_functions=mlx5_snapshot().pci_functions[:1],
            ),
            "spiderpool-default.json",
            [
                (
                    "selector_matches_nothing",
                    "hca_shared_devices selects 15b3:1017, node has no PCI network function with an RDMA "
                    "device (rxe0 is not on PCI)",
                    HCA,
                )
            ],
        ),
        (
            mlx5_snapshot(),
            "sriov-selectors.json",
            [
                (
                    "device_plugin_config_ignored_field",
                    f"{FIXTURES}/sriov-selectors.json: configList[0].isRdma is not a field of the RDMA "
                    "shared device plugin (an sriov-network-device-plugin selector); the plugin ignores it",
                    "configList[0].isRdma",
                ),
                (
                    "device_plugin_config_ignored_field",
                    f"{FIXTURES}/sriov-selectors.json: configList[0].selectors.rootDevices is not a field of "
                    "the RDMA shared device plugin (an sriov-network-device-plugin selector); the plugin "
                    "ignores it",
                    "configList[0].selectors.rootDevices",
                ),
                (
                    "device_plugin_config_ignored_field",
                    f"{FIXTURES}/sriov-selectors.json: configList[0].selectors.isRdma is not a field of the "
                    "RDMA shared device plugin (an sriov-network-device-plugin selector); the plugin ignores "
                    "it",
                    "configList[0].selectors.isRdma",
                ),
            ],
        ),
    ],
)
def test_selector_problems(snapshot: NodeSnapshot, fixture: str, problems: list[tuple[str, str, str | None]]) -> None:
    assert _problems(snapshot, fixture) == problems


def test_invalid_resource_name_is_a_problem_not_an_error() -> None:
    """The plugin starts with the README's ``example_prefix`` but kubelet refuses the registration."""
    cfg = config("mellanox-readme.json")
    problems = selector_problems(plugin_view(NO_RDMA), match_selectors(plugin_view(NO_RDMA), cfg), cfg)
    assert [(p.code, p.message) for p in problems] == [
        (
            "invalid_resource_name",
            "example_prefix/hca_shared_devices_a is not a valid extended resource name (prefix part must be "
            "a lowercase RFC 1123 subdomain (e.g. example.com)); kubelet refuses the plugin's registration",
        )
    ]
    (zero, _) = why_zero(plugin_view(single_pf()), None, [], match_selectors(plugin_view(single_pf()), cfg), cfg)
    assert zero.message.startswith(
        "example_prefix/hca_shared_devices_a is missing from the Node while the node has 1 RDMA device: "
        "kubelet refuses the name (resourcePrefix must be a lowercase DNS subdomain); its selector matches "
        "nothing"
    )


def test_selector_problem_hints_at_case() -> None:
    cfg = DevicePluginConfig(
        source="t",
        resources=(
            ResourceConfig(
                resource_name="hca",
                rdma_hca_max=1,
                selectors=Selectors(vendors=("0x15B3",), device_ids=("1017",)),
            ),
        ),
    )
    (problem,) = selector_problems(plugin_view(single_pf()), match_selectors(plugin_view(single_pf()), cfg), cfg)
    assert problem.message == (
        "hca selects 0x15B3:1017, node has 15b3:1017 (0000:3b:00.0) "
        "(ids must be lowercase hex without 0x, as sysfs prints them)"
    )


# --- why zero -----------------------------------------------------------------------------------------


def _why(
    snapshot: NodeSnapshot,
    resources: list[ResourceAmount],
    fixture: str | None = "spiderpool-default.json",
    enforce: EnforcementState | None = None,
) -> list[Problem]:
    cfg = config(fixture) if fixture else None
    matches: tuple[SelectorMatch, ...] = match_selectors(plugin_view(snapshot), cfg) if cfg else ()
    return why_zero(plugin_view(snapshot), enforce, resources, matches, cfg)


ZERO = [ResourceAmount(name=HCA, capacity=500, allocatable=0)]
PREFIX = f"{HCA} has allocatable 0 while the node has "


@pytest.mark.parametrize(
    ("snapshot", "resources", "fixture", "message"),
    [
        (
            single_pf(),
            ZERO,
            "spiderpool-1018.json",
            PREFIX + "1 RDMA device: its selector matches nothing: hca_shared_devices selects 15b3:1018, "
            "node has 15b3:1017 (0000:3b:00.0)",
        ),
        (
            replace(single_pf(), netns_mode=NetnsMode.EXCLUSIVE),
            ZERO,
            "spiderpool-default.json",
            PREFIX + "1 RDMA device: the netns mode is exclusive and the RDMA shared device plugin exits unless it "
            "is shared",
        ),
        (
            without(single_pf(), "umad0"),
            ZERO,
            "spiderpool-default.json",
            PREFIX + "1 RDMA device: the plugin skips functions without rdma_cm, umad and uverbs char devices: "
            "0000:3b:00.0 (mlx5_0) lacks umad (load ib_umad)",
        ),
        (
            without(mlx5_snapshot(), "rdma_cm"),
            ZERO,
            "spiderpool-default.json",
            PREFIX + "4 RDMA devices: the plugin skips functions without rdma_cm, umad and uverbs char devices: "
            "0000:3b:00.0 (mlx5_0) lacks rdma_cm (load rdma_ucm); 0000:3b:00.1 (mlx5_1) lacks rdma_cm (load "
            "rdma_ucm)",
        ),
        (
            single_pf(),
            ZERO,
            "spiderpool-default.json",
            PREFIX + "1 RDMA device: capacity is 500: the RDMA shared device plugin reports its devices unhealthy "
            "or is restarting",
        ),
        (
            single_pf(),
            [],
            "spiderpool-default.json",
            f"{HCA} is missing from the Node while the node has 1 RDMA device: the RDMA shared device plugin "
            "has not registered it on this node (is its pod running here?)",
        ),
        (
            without(single_pf(), "uverbs0"),
            [ResourceAmount(name="rdma/hca_shared_devices_a", capacity=None, allocatable=0)],
            None,  # no config: the rdma/ prefix says it is the shared plugin's
            "rdma/hca_shared_devices_a has allocatable 0 while the node has 1 RDMA device: the plugin skips "
            "functions without rdma_cm, umad and uverbs char devices: 0000:3b:00.0 (mlx5_0) lacks uverbs "
            "(load ib_uverbs)",
        ),
        (
            replace(
                mlx5_snapshot(),
                pci_functions=tuple(replace(f, sriov_numvfs=0) for f in mlx5_snapshot().pci_functions),
            ),
            [ResourceAmount(name=SRIOV, capacity=0, allocatable=0)],
            None,
            f"{SRIOV} has allocatable 0 while the node has 4 RDMA devices: no VFs are enabled (0000:3b:00.0 "
            "has 0 of 8, 0000:3b:00.1 has 0 of 8); has the SR-IOV operator applied its policy (numVfs)?",
        ),
        (
            replace(
                mlx5_snapshot(),
                pci_functions=tuple(
                    replace(f, rdma_devices=()) if f.physfn else f for f in mlx5_snapshot().pci_functions
                ),
            ),
            [ResourceAmount(name=SRIOV, capacity=0, allocatable=0)],
            None,
            f"{SRIOV} has allocatable 0 while the node has 4 RDMA devices: the 4 VFs have no RDMA device (is "
            "the policy's isRdma set, and mlx5_ib loaded?)",
        ),
        (
            replace(single_pf(), pci_functions=(replace(single_pf().pci_functions[0], sriov_totalvfs=None),)),
            [ResourceAmount(name=SRIOV, capacity=None, allocatable=None)],
            None,
            f"{SRIOV} is missing from the Node while the node has 1 RDMA device: no SR-IOV capable PF with "
            "an RDMA device on this node",
        ),
    ],
)
def test_why_zero(snapshot: NodeSnapshot, resources: list[ResourceAmount], fixture: str | None, message: str) -> None:
    problems = _why(snapshot, resources, fixture)
    assert [(p.code, p.message) for p in problems] == [("zero_allocatable", message)]
    assert problems[0].subject == message.split(" ", 1)[0]


def test_why_zero_lists_every_reason() -> None:
    cfg = DevicePluginConfig(
        source="config.json",
        resources=(
            ResourceConfig(
                resource_name="hca_shared_devices",
                resource_prefix="spidernet.io",
                rdma_hca_max=0,
                selectors=Selectors(vendors=("15b3",), device_ids=("1018",)),
            ),
        ),
    )
    snap = replace(single_pf(), netns_mode=NetnsMode.EXCLUSIVE)
    enforce = replace(enforcement(DesiredMode.SHARED, reboot=True), live=NetnsMode.EXCLUSIVE)
    (problem,) = why_zero(plugin_view(snap), enforce, ZERO, match_selectors(plugin_view(snap), cfg), cfg)
    assert problem.message == (
        PREFIX + "1 RDMA device: the netns mode is exclusive and the RDMA shared device plugin exits unless it is "
        "shared; rdmaHcaMax is 0 in config.json; its selector matches nothing: hca_shared_devices selects "
        "15b3:1018, node has 15b3:1017 (0000:3b:00.0); netns mode shared takes effect only after the "
        "pending reboot"
    )


@pytest.mark.parametrize(
    ("snapshot", "resources", "fixture"),
    [
        (
            mlx5_snapshot(),
            [ResourceAmount(name=HCA, capacity=500, allocatable=500)],
            "spiderpool-default.json",
        ),
        (NO_RDMA, ZERO, "spiderpool-default.json"),  # no RDMA device: zero is expected
        (mlx5_snapshot(), [ResourceAmount(name=SRIOV, capacity=8, allocatable=8)], None),
        (mlx5_snapshot(), [], None),
    ],
)
def test_why_zero_silent(snapshot: NodeSnapshot, resources: list[ResourceAmount], fixture: str | None) -> None:
    assert _why(snapshot, resources, fixture) == []


# --- consumers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "fixture", "consumer"),
    [
        (HCA, "spiderpool-default.json", Consumer.SHARED_DEVICE_PLUGIN),
        (HCA, None, Consumer.SRIOV_RDMA_CNI),  # without the config nothing says it is the shared plugin's
        ("rdma/hca_shared_devices_a", None, Consumer.SHARED_DEVICE_PLUGIN),  # the plugin's default prefix
        (SRIOV, "spiderpool-default.json", Consumer.SRIOV_RDMA_CNI),
        ("example_prefix/hca_shared_devices_a", "mellanox-readme.json", Consumer.SHARED_DEVICE_PLUGIN),
    ],
)
def test_consumer_of(resource: str, fixture: str | None, consumer: Consumer) -> None:
    assert consumer_of(resource, config(fixture) if fixture else None) is consumer
    assert consumer.needs is (NetnsMode.SHARED if consumer is Consumer.SHARED_DEVICE_PLUGIN else NetnsMode.EXCLUSIVE)


@pytest.mark.parametrize(
    ("snapshot", "enforce", "resources", "fixture", "problems"),
    [
        (
            mlx5_snapshot(),
            None,
            [ResourceAmount(name=HCA, capacity=500, allocatable=500)],
            "spiderpool-default.json",
            [],
        ),
        (
            mlx5_snapshot(mode=NetnsMode.EXCLUSIVE),
            None,
            [],
            "spiderpool-default.json",
            [
                (
                    "consumer_mode_mismatch",
                    f"{HCA} is used by the RDMA shared device plugin, which needs netns mode shared; the "
                    "live mode is exclusive",
                )
            ],
        ),
        (
            mlx5_snapshot(),
            None,
            [ResourceAmount(name=SRIOV, capacity=8, allocatable=8)],
            None,
            [
                (
                    "consumer_mode_mismatch",
                    f"{SRIOV} is used by SR-IOV with RDMA CNI, which needs netns mode exclusive; the live "
                    "mode is shared",
                )
            ],
        ),
        # Advertised by nothing (capacity 0): not in use, no mismatch.
        (mlx5_snapshot(), None, [ResourceAmount(name=SRIOV, capacity=0, allocatable=0)], None, []),
        (
            mlx5_snapshot(),
            enforcement(DesiredMode.EXCLUSIVE),
            [],
            "spiderpool-default.json",
            [
                (
                    "consumer_mode_conflict",
                    f"--netns-mode exclusive conflicts with {HCA}: the RDMA shared device plugin needs shared",
                )
            ],
        ),
        (mlx5_snapshot(), enforcement(DesiredMode.SHARED), [], "spiderpool-default.json", []),
        (
            without(mlx5_snapshot(), "umad1"),
            None,
            [],
            "spiderpool-default.json",
            [
                (
                    "missing_umad",
                    "mlx5_1 (0000:3b:00.1) has no /dev/infiniband/umadN: load ib_umad (rdma-core); the RDMA "
                    "shared device plugin skips it",
                )
            ],
        ),
        # umad matters to the shared plugin only.
        (without(mlx5_snapshot(mode=NetnsMode.EXCLUSIVE), "umad1"), None, [], None, []),
    ],
)
def test_consumer_problems(
    snapshot: NodeSnapshot,
    enforce: EnforcementState | None,
    resources: list[ResourceAmount],
    fixture: str | None,
    problems: list[tuple[str, str]],
) -> None:
    found = consumer_problems(plugin_view(snapshot), enforce, resources, config(fixture) if fixture else None)
    assert [(p.code, p.message) for p in found] == problems
