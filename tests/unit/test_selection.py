"""The node as the RDMA shared device plugin sees it, and its selectors against it
(agent/diagnose/selection.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.diagnose.plugin_config import DevicePluginConfig, ResourceConfig, Selectors
from agent.diagnose.selection import PluginDevice, match_selectors, plugin_devices, plugin_view
from agent.model import CharDevice, NodeSnapshot, PciFunction
from tests.deviceplugin_fixtures import NO_RDMA, config, single_pf, without
from tests.unit.test_labels import mlx5_snapshot


def test_plugin_devices() -> None:
    """PCI network functions with an RDMA device in sysfs: not the Intel NIC Soft-RoCE runs over, not the
    VFs whose RDMA devices sit in pods."""
    assert plugin_devices(mlx5_snapshot()) == (
        PluginDevice(
            address="0000:3b:00.0",
            vendor="15b3",
            device_id="1017",
            driver="mlx5_core",
            if_name="ens1f0np0",
            link_type="ether",
            rdma_devices=("mlx5_0",),
            missing=(),
        ),
        PluginDevice(
            address="0000:3b:00.1",
            vendor="15b3",
            device_id="1017",
            driver="mlx5_core",
            if_name="ens1f1np1",
            link_type="ether",
            rdma_devices=("mlx5_1",),
            missing=(),
        ),
        PluginDevice(
            address="0000:3b:00.2",
            vendor="15b3",
            device_id="1018",
            driver="mlx5_core",
            if_name="ens1f0v0",
            link_type="ether",
            rdma_devices=("mlx5_2",),
            missing=(),
        ),
    )


def test_plugin_devices_infiniband_missing_chars_and_class() -> None:
    snap = single_pf()
    ib = tuple(replace(d, ports=tuple(replace(p, link_layer="InfiniBand") for p in d.ports)) for d in snap.devices)
    snap = without(replace(snap, devices=ib), "umad0", "rdma_cm")
    (device,) = plugin_devices(snap)
    assert (device.link_type, device.missing) == ("infiniband", ("rdma_cm", "umad"))
    # Not a network-class function (e.g. a BlueField in DPU mode's management function): the plugin skips it.
    snap = replace(snap, pci_functions=(replace(snap.pci_functions[0], pci_class="120000"),))
    assert plugin_devices(snap) == ()


@pytest.mark.parametrize(
    ("snapshot", "fixture_or_selectors", "matched"),
    [
        (mlx5_snapshot(), "spiderpool-default.json", [2]),  # the seed's 15b3:1017: both PFs
        (mlx5_snapshot(), "spiderpool-1018.json", [1]),  # the VF still on the host
        (single_pf(), "spiderpool-1018.json", [0]),
        (mlx5_snapshot(), "gpu-affinity.json", [1, 1, 0]),
        (mlx5_snapshot(), "all-selectors.json", [1]),
        (mlx5_snapshot(), "mellanox-readme.json", [0, 0]),
        (NO_RDMA, "spiderpool-default.json", [0]),
        (mlx5_snapshot(), Selectors(drivers=("mlx5_core",)), [3]),
        (mlx5_snapshot(), Selectors(link_types=("infiniband",)), [0]),
        (mlx5_snapshot(), Selectors(vendors=("15b3", "8086"), device_ids=("1018", "1521")), [1]),  # OR within
        (mlx5_snapshot(), Selectors(vendors=("15B3",)), [0]),  # exact comparison, as the plugin does
        (mlx5_snapshot(), Selectors(vendors=("0x15b3",)), [0]),
    ],
)
def test_match_selectors(snapshot: NodeSnapshot, fixture_or_selectors: str | Selectors, matched: list[int]) -> None:
    if isinstance(fixture_or_selectors, str):
        cfg = config(fixture_or_selectors)
    else:
        cfg = DevicePluginConfig(
            source="t",
            resources=(ResourceConfig(resource_name="r", rdma_hca_max=1, selectors=fixture_or_selectors),),
        )
    matches = match_selectors(plugin_view(snapshot), cfg)
    assert [m.matched for m in matches] == matched
    assert [m.resource for m in matches] == [r.full_name for r in cfg.resources]


def test_selector_summary() -> None:
    assert [m.summary for m in match_selectors(plugin_view(mlx5_snapshot()), config("spiderpool-default.json"))] == [
        "15b3:1017"
    ]
    assert [m.summary for m in match_selectors(plugin_view(mlx5_snapshot()), config("all-selectors.json"))] == [
        "15b3:1017, drivers mlx5_core, ifNames ens1f0np0, linkTypes ether"
    ]
    assert Selectors(vendors=("15b3",), device_ids=("1017", "1018")).summary() == "vendors 15b3, deviceIDs 1017,1018"


def test_char_device_node_absent_from_dev_counts_as_missing() -> None:
    snap = single_pf()
    snap = replace(
        snap,
        char_devices=tuple(replace(c, present=False) if c.kind == "umad" else c for c in snap.char_devices),
    )
    assert plugin_devices(snap)[0].missing == ("umad",)
    assert isinstance(snap.char_devices[0], CharDevice)
    assert isinstance(snap.pci_functions[0], PciFunction)
