"""Real-kernel parity: in a QEMU guest running Debian's kernel with Soft-RoCE on an igb SR-IOV NIC,
``rdma-node-agent status --json`` must equal what ``rdma -j link/dev show``, ``rdma system`` and sysfs
say — names, indexes, states, netdevs, GUIDs, netns mode, PCI IDs, VF counts — at 1, 8 and 64 RDMA
devices, in shared and exclusive mode. One boot runs tests/vm/guest_parity.py; each test checks a part."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
Scenario = dict[str, Any]


@pytest.fixture(scope="module")
def guest(guest_json: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return guest_json("guest_parity.py", igb=True)


@pytest.fixture(scope="module")
def scenarios(guest: dict[str, Any]) -> list[Scenario]:
    found: list[Scenario] = guest["scenarios"]
    return found


def by_name(scenarios: list[Scenario], prefix: str) -> Scenario:
    return next(s for s in scenarios if s["name"].startswith(prefix))


def test_device_counts(scenarios: list[Scenario]) -> None:
    counts = [(s["name"], len(s["agent"]["devices"]), len(s["rdma_dev"])) for s in scenarios]
    assert [(a, b) for _, a, b in counts] == [(1, 1), (8, 8), (64, 64), (64, 64)], counts


@pytest.mark.parametrize("step", range(4))
def test_devices_equal_rdma_dev_show(scenarios: list[Scenario], step: int) -> None:
    s = scenarios[step]
    ours = [(d["index"], d["name"], d["node_type"], d["node_guid"], d["sys_image_guid"]) for d in s["agent"]["devices"]]
    theirs = [(d["ifindex"], d["ifname"], d["node_type"], d["node_guid"], d["sys_image_guid"]) for d in s["rdma_dev"]]
    assert sorted(ours) == sorted(theirs)


@pytest.mark.parametrize("step", range(4))
def test_ports_equal_rdma_link_show(scenarios: list[Scenario], step: int) -> None:
    s = scenarios[step]
    ours = sorted(
        (d["index"], d["name"], p["port"], p["state"], p["physical_state"], p["netdev"], p["netdev_index"])
        for d in s["agent"]["devices"]
        for p in d["ports"]
    )
    theirs = sorted(
        (
            x["ifindex"],
            x["ifname"],
            x["port"],
            x.get("state"),
            x.get("physical_state"),
            x.get("netdev"),
            x.get("netdev_index"),
        )
        for x in s["rdma_link"]
    )
    assert ours == theirs
    assert all(p["link_layer"] == "Ethernet" for d in s["agent"]["devices"] for p in d["ports"])


@pytest.mark.parametrize("step", range(4))
def test_netdev_admin_up_is_read_for_ports_that_are_down(scenarios: list[Scenario], step: int) -> None:
    s = scenarios[step]
    ports = [p for d in s["agent"]["devices"] for p in d["ports"]]
    for port in ports:
        if port["link_up"]:
            assert port["netdev_admin_up"] is None, port  # not read: an up port is meant to be up anyway
        else:
            assert port["netdev_admin_up"] == s["netdev_admin_up"][port["netdev"]], port
    if step == 1:  # d3 set down on purpose: rxe7's port is down and its netdev administratively down
        (rxe7,) = [p for d in s["agent"]["devices"] if d["name"] == "rxe7" for p in d["ports"]]
        assert (rxe7["link_up"], rxe7["netdev"], rxe7["netdev_admin_up"]) == (False, "d3", False)


@pytest.mark.parametrize("step", range(4))
def test_netns_mode_equals_rdma_system(scenarios: list[Scenario], step: int) -> None:
    s = scenarios[step]
    words = s["rdma_system"].split()
    assert words[0] == "netns"
    assert s["agent"]["netns_mode"] == words[1]
    assert s["agent"]["netns_mode_source"] == "netlink"
    assert s["ib_core_param"] == {"shared": "Y", "exclusive": "N"}[words[1]]
    assert s["agent"]["system"]["netns_mode"] == words[1]


def test_modes_seen(scenarios: list[Scenario]) -> None:
    assert [s["agent"]["netns_mode"] for s in scenarios] == ["shared", "shared", "shared", "exclusive"]


@pytest.mark.parametrize("step", range(4))
def test_pci_functions_equal_sysfs(scenarios: list[Scenario], step: int) -> None:
    s = scenarios[step]
    ours = {p["address"]: p for p in s["agent"]["pci_functions"]}
    for address, fact in s["pci"].items():
        assert address in ours, address
        mine = ours[address]
        assert (mine["vendor"], mine["device"], mine["driver"]) == (fact["vendor"], fact["device"], fact["driver"])
        assert (mine["sriov_totalvfs"], mine["sriov_numvfs"]) == (fact["sriov_totalvfs"], fact["sriov_numvfs"])
        assert (mine["physfn"], mine["virtfns"], mine["netdevs"]) == (fact["physfn"], fact["virtfns"], fact["netdevs"])


def test_sriov_pf_and_vfs(guest: dict[str, Any], scenarios: list[Scenario]) -> None:
    s = by_name(scenarios, "8 devices")
    pci = {p["address"]: p for p in s["agent"]["pci_functions"]}
    (pf,) = [p for p in pci.values() if p["device"] == "10c9"]
    assert (pf["vendor"], pf["sriov_totalvfs"], pf["sriov_numvfs"], pf["driver"]) == ("8086", 7, 2, "igb")
    assert [pci[v]["device"] for v in pf["virtfns"]] == ["10ca", "10ca"]
    assert all(pci[v]["physfn"] == pf["address"] and pci[v]["driver"] == "igbvf" for v in pf["virtfns"])
    devices = {d["name"]: d for d in s["agent"]["devices"]}
    # Soft-RoCE devices are virtual: their PCI function comes from the port's netdev
    assert devices["rxe0"]["pci_address"] == pf["address"]
    assert {devices["rxe1"]["pci_address"], devices["rxe2"]["pci_address"]} == set(pf["virtfns"])
    assert devices["rxe3"]["pci_address"] is None  # on a veth: no PCI function
    assert guest["pf"] in pf["netdevs"]


def test_char_devices_map_to_rdma_devices(scenarios: list[Scenario]) -> None:
    s = by_name(scenarios, "8 devices")
    chars = {c["name"]: c for c in s["agent"]["char_devices"]}
    assert set(chars) == set(s["dev_infiniband"])
    assert "rdma_cm" in chars and chars["rdma_cm"]["present"]
    for device in s["agent"]["devices"]:
        kinds = sorted(chars[c]["kind"] for c in device["char_devices"])
        assert kinds == ["issm", "umad", "uverbs"], (device["name"], kinds)
    assert not [p for p in s["agent"]["problems"] if p["code"].startswith("missing_")]


def test_status_is_valid_against_schema(scenarios: list[Scenario]) -> None:
    import jsonschema

    from agent.publish.status import load_schema

    for s in scenarios:
        jsonschema.validate(s["agent"], load_schema())
