"""The sysfs reader: pure parsers over attribute text (valid and malformed), and the readers against
sysfs trees captured from real kernels (tests/fixtures/sysfs/<scenario>, tools/capture_sysfs.py),
checked against what iproute2 said at capture time; plus per-device error isolation."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.config import HostRoots
from agent.discover import sysfs
from agent.discover.sysfs import SysfsReader, files, pci
from agent.discover.sysfs.rdma import PortFacts, RdmaReader
from agent.model import CharDevice, NetnsMode, PciFunction, RdmaDevice
from tests.sysfs_fixtures import load_tree

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sysfs"


def load(scenario: str, tmp_path: Path) -> HostRoots:
    """A private copy of a captured tree, for a test that changes it."""
    return load_tree(scenario, tmp_path)


Captured = Callable[[str], HostRoots]


@pytest.fixture(scope="session")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], HostRoots]:
    """Shared copies of the captured trees for tests that only read them (the others use load())."""
    cache: dict[str, HostRoots] = {}

    def get(scenario: str) -> HostRoots:
        if scenario not in cache:
            cache[scenario] = load(scenario, tmp_path_factory.mktemp("captured"))
        return cache[scenario]

    return get


def expected(scenario: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / scenario / "expected.json").read_text())
    return data


# --- parsers ----------------------------------------------------------------------------------------

PARSER_CASES: list[tuple[Callable[[str], object], str, object]] = [
    (sysfs.parse_port_state, "4: ACTIVE\n", (4, "ACTIVE")),
    (sysfs.parse_port_state, "4: ACTIVE", (4, "ACTIVE")),
    (sysfs.parse_port_state, "1: DOWN\n", (1, "DOWN")),
    (sysfs.parse_port_state, "5: ACTIVE_DEFER\n", (5, "ACTIVE_DEFER")),
    (sysfs.parse_port_state, "9: UNKNOWN\n", (9, "UNKNOWN")),
    (sysfs.parse_port_state, "-1: UNKNOWN\n", (-1, "UNKNOWN")),
    (sysfs.parse_phys_state, "5: LinkUp\n", (5, "LINK_UP")),
    (sysfs.parse_phys_state, "2: Polling\n", (2, "POLLING")),
    (sysfs.parse_phys_state, "3: Disabled\n", (3, "DISABLED")),
    (sysfs.parse_phys_state, "7: Phy Test\n", (7, "PHY_TEST")),
    (sysfs.parse_phys_state, "42: <unknown>\n", (42, "UNKNOWN")),
    (sysfs.parse_node_type, "1: CA\n", "ca"),
    (sysfs.parse_node_type, "4: RNIC\n", "rnic"),
    (sysfs.parse_node_type, "6: usNIC UDP\n", "usnic_udp"),
    (sysfs.parse_node_type, "99: <unknown>\n", "unknown"),
    (sysfs.parse_hex_id, "0x15b3\n", "15b3"),
    (sysfs.parse_hex_id, "0x10CA\n", "10ca"),
    (sysfs.parse_hex_id, "0x020000\n", "020000"),
    (sysfs.parse_hex_id, "10ca\n", "10ca"),  # sriov_vf_device has no 0x
    (sysfs.parse_guid, "d421:2dff:fe34:4699\n", "d421:2dff:fe34:4699"),
    (sysfs.parse_guid, "0C42:A103:00AB:12CD", "0c42:a103:00ab:12cd"),
    (sysfs.parse_numa_node, "-1\n", None),
    (sysfs.parse_numa_node, "0\n", 0),
    (sysfs.parse_numa_node, "1", 1),
    (sysfs.parse_int, "7\n", 7),
    (sysfs.parse_lid, "0x0\n", 0),
    (sysfs.parse_lid, "0x12\n", 0x12),
    (sysfs.parse_text, "\n", None),  # fw_ver of rxe
    (sysfs.parse_text, "", None),
    (sysfs.parse_text, "16.35.2000\n", "16.35.2000"),
    (sysfs.parse_text, "2.5 Gb/sec (1X SDR)\n", "2.5 Gb/sec (1X SDR)"),
    (sysfs.parse_netns_mode, "Y\n", NetnsMode.SHARED),
    (sysfs.parse_netns_mode, "N\n", NetnsMode.EXCLUSIVE),
    (sysfs.parse_netns_mode, "N", NetnsMode.EXCLUSIVE),
    (sysfs.parse_pci_address, "0000:01:10.2", "0000:01:10.2"),
    (sysfs.parse_pci_address, "10000:e1:00.0", "10000:e1:00.0"),  # VMD domain
    (sysfs.parse_pci_address, "virtio2", None),
    (sysfs.parse_pci_address, "mlx5_core.sf.2", None),
    (sysfs.parse_pci_address, "pci0000:00", None),
    (sysfs.parse_netdev_flags, "0x1003\n", 0x1003),  # net-sysfs.c format_flags "%#x": UP|BROADCAST|MULTICAST
    (sysfs.parse_netdev_flags, "0x1002\n", 0x1002),  # the same, administratively down
    (sysfs.parse_netdev_flags, "0\n", 0),  # "%#x" of 0
]


@pytest.mark.parametrize(("parse", "text", "value"), PARSER_CASES)
def test_parsers(parse: Callable[[str], object], text: str, value: object) -> None:
    assert parse(text) == value


MALFORMED: list[tuple[Callable[[str], object], str]] = [
    (parser, text)
    for parser in (sysfs.parse_port_state, sysfs.parse_phys_state, sysfs.parse_node_type)
    for text in ("", "\n", "ACTIVE\n", "four: ACTIVE\n", "4 ACTIVE\n", "\x00\x01")
] + [
    (sysfs.parse_hex_id, ""),
    (sysfs.parse_hex_id, "0x\n"),
    (sysfs.parse_hex_id, "0xzz\n"),
    (sysfs.parse_hex_id, "15b3 1017\n"),
    (sysfs.parse_guid, ""),
    (sysfs.parse_guid, "d421:2dff:fe34\n"),
    (sysfs.parse_guid, "d4212dfffe344699\n"),
    (sysfs.parse_guid, "g421:2dff:fe34:4699\n"),
    (sysfs.parse_numa_node, ""),
    (sysfs.parse_numa_node, "node0\n"),
    (sysfs.parse_int, ""),
    (sysfs.parse_int, "7 VFs\n"),
    (sysfs.parse_int, "0x7\n"),
    (sysfs.parse_lid, ""),
    (sysfs.parse_lid, "12\n"),
    (sysfs.parse_netns_mode, ""),
    (sysfs.parse_netns_mode, "shared\n"),
    (sysfs.parse_netns_mode, "2\n"),
    (sysfs.parse_netdev_flags, ""),
    (sysfs.parse_netdev_flags, "4099\n"),
    (sysfs.parse_netdev_flags, "0x\n"),
]


@pytest.mark.parametrize(("parse", "text"), MALFORMED)
def test_parsers_reject_text_the_kernel_never_prints(parse: Callable[[str], object], text: str) -> None:
    with pytest.raises(ValueError, match=r"expected"):
        parse(text)


def test_natural_order() -> None:
    names = ["virtfn10", "virtfn2", "virtfn1", "virtfn9", "virtfn0"]
    assert sorted(names, key=sysfs.natural_key) == ["virtfn0", "virtfn1", "virtfn2", "virtfn9", "virtfn10"]


# --- this host: real sysfs without RDMA -------------------------------------------------------------


def test_host_without_rdma(captured: Captured) -> None:
    roots = captured("host-no-rdma")
    assert SysfsReader(roots).rdma_devices() == ((), ())
    assert SysfsReader(roots).char_devices() == ()
    assert SysfsReader(roots).ib_core_netns_mode() is None
    # virtio-net: class/net/eth0/device is virtio2, whose parent is the PCI function
    functions, problems = SysfsReader(roots).pci_functions()
    assert problems == ()
    eth = [link for link in expected("host-no-rdma")["ip -j link show"] if link["parentbus"]]
    assert [(link["ifname"], link["parentbus"]) for link in eth] == [("eth0", "virtio")]
    assert functions == (
        PciFunction(
            address="0000:00:03.0",
            vendor="1af4",
            device="1041",
            subsystem_vendor="1af4",
            subsystem_device="1041",
            pci_class="020000",
            driver="virtio-pci",
            numa_node=None,
            netdevs=("eth0",),
        ),
    )


def test_no_sysfs_at_all(tmp_path: Path) -> None:
    roots = HostRoots(root=tmp_path, sys=tmp_path / "nothing", dev=tmp_path / "nodev")
    assert SysfsReader(roots).rdma_devices() == ((), ())
    assert SysfsReader(roots).pci_functions(extra=["0000:3b:00.0"]) == ((), ())
    assert SysfsReader(roots).char_devices() == ()
    assert SysfsReader(roots).ib_core_netns_mode() is None


def test_extra_address_is_read(captured: Captured) -> None:
    roots = captured("host-no-rdma")
    functions, _ = SysfsReader(roots).pci_functions(extra=["0000:00:00.0", "not-an-address", "0000:99:00.0"])
    assert [f.address for f in functions] == ["0000:00:00.0", "0000:00:03.0"]
    assert functions[0].driver is None  # the host bridge has no driver link


# --- Soft-RoCE and igb SR-IOV, captured under QEMU (Debian 6.1) -------------------------------------

RDMA_SCENARIOS = ("rxe-dummy-veth", "igb-sriov", "igb-sriov-netns")


@pytest.mark.parametrize("scenario", RDMA_SCENARIOS)
def test_devices_and_links_match_iproute2(scenario: str, captured: Captured) -> None:
    devices, problems = SysfsReader(captured(scenario)).rdma_devices()
    assert problems == ()
    want = expected(scenario)
    assert [
        {"ifname": d.name, "node_type": d.node_type, "node_guid": d.node_guid, "sys_image_guid": d.sys_image_guid}
        for d in devices
    ] == [{k: v for k, v in dev.items() if k != "ifindex"} for dev in want["rdma -j dev show"]]
    assert [
        {
            "ifname": d.name,
            "port": p.port,
            "state": p.state,
            "physical_state": p.physical_state,
            "netdev": p.netdev,
            "netdev_index": p.netdev_index,
        }
        for d in devices
        for p in d.ports
    ] == [{k: v for k, v in link.items() if k != "ifindex"} for link in want["rdma -j link show"]]
    for device in devices:
        assert (device.index, device.char_devices, device.fw_version, device.port_count) == (None, (), None, 1)
        assert [(p.link_layer, p.lid, p.sm_lid) for p in device.ports] == [("Ethernet", None, None)]


def test_rxe_on_virtual_netdevs(captured: Captured) -> None:
    devices, _ = SysfsReader(captured("rxe-dummy-veth")).rdma_devices()
    rxe0, rxe1 = devices
    # rxe derives rate from the netdev's speed: dummy has none (SDR 1X), veth says 10000 Mb/s
    assert [(d.name, d.pci_address, d.ports[0].rate) for d in devices] == [
        ("rxe0", None, "2.5 Gb/sec (1X SDR)"),
        ("rxe1", None, "10 Gb/sec (1X FDR10)"),
    ]
    assert (rxe0.ports[0].state_code, rxe0.ports[0].physical_state_code) == (4, 5)
    assert rxe1.ports[0].link_up


@pytest.mark.parametrize(
    ("scenario", "rxe1_state"),
    [("igb-sriov", ("ACTIVE", 4, "LINK_UP", 5)), ("igb-sriov-netns", ("DOWN", 1, "DISABLED", 3))],
)
def test_rxe_pci_address_comes_from_its_netdev(
    scenario: str, rxe1_state: tuple[str, int, str, int], captured: Captured
) -> None:
    devices, _ = SysfsReader(captured(scenario)).rdma_devices()
    parent = {link["ifname"]: link["parentdev"] for link in expected(scenario)["ip -j link show"]}
    assert [(d.name, d.pci_address) for d in devices] == [("rxe0", parent["eth0"]), ("rxe1", parent["eth1"])]
    assert [d.pci_address for d in devices] == ["0000:01:00.0", "0000:01:10.0"]  # the PF and its first VF
    port = devices[1].ports[0]
    # igb-sriov-netns set eth1 down: sysfs says "1: DOWN" / "3: Disabled"
    assert (port.state, port.state_code, port.physical_state, port.physical_state_code) == rxe1_state
    assert port.link_up is (rxe1_state[0] == "ACTIVE")


PF, VF0, VF1 = "0000:01:00.0", "0000:01:10.0", "0000:01:10.2"


def test_device_link_to_a_pci_function_wins(tmp_path: Path) -> None:
    # Derived (no RDMA hardware in the test bed): give rxe1 what a PCI driver such as mlx5_ib has, a
    # `device` link to its PCI function (here VF1) and an entry under that function's infiniband/.
    roots = load("igb-sriov", tmp_path)
    rxe1 = (roots.sysfs / "class/infiniband/rxe1").resolve()
    vf1 = (roots.sysfs / "bus/pci/devices" / VF1).resolve()
    (rxe1 / "device").symlink_to(os.path.relpath(vf1, rxe1))
    (vf1 / "infiniband/rxe1").mkdir(parents=True)
    devices, _ = SysfsReader(roots).rdma_devices()
    assert [d.pci_address for d in devices] == [PF, VF1]  # rxe1's netdev eth1 is on VF0
    functions, _ = SysfsReader(roots).pci_functions()
    assert [f.rdma_devices for f in functions] == [(), (), ("rxe1",)]


def igb_functions(vf1_netdevs: tuple[str, ...]) -> tuple[PciFunction, ...]:
    """What QEMU's igb (8086:10c9, VFs 8086:10ca, subsystem 1af4:1100) looks like with 2 VFs."""
    igb = PciFunction(
        address=PF,
        vendor="8086",
        device="10c9",
        subsystem_vendor="1af4",
        subsystem_device="1100",
        pci_class="020000",
        driver="igb",
        numa_node=None,
    )
    vf = replace(igb, device="10ca", driver="igbvf", physfn=PF)
    return (
        replace(igb, netdevs=("eth0",), sriov_totalvfs=7, sriov_numvfs=2, virtfns=(VF0, VF1)),
        replace(vf, address=VF0, netdevs=("eth1",)),
        replace(vf, address=VF1, netdevs=vf1_netdevs),
    )


def test_igb_pf_and_vfs(captured: Captured) -> None:
    functions, problems = SysfsReader(captured("igb-sriov")).pci_functions()
    assert (functions, problems) == (igb_functions(("eth2",)), ())
    want = expected("igb-sriov")
    assert {link["ifname"]: link["parentdev"] for link in want["ip -j link show"] if link["parentdev"]} == {
        n: f.address for f in functions for n in f.netdevs
    }
    links = want["virtfn/physfn links"]
    assert [Path(t).name for t in links[PF].values()] == list(functions[0].virtfns)
    assert {a: Path(links[a]["physfn"]).name for a in (VF0, VF1)} == {VF0: PF, VF1: PF}


def test_vf_whose_netdev_is_in_a_pod_is_still_listed(captured: Captured) -> None:
    roots = captured("igb-sriov-netns")
    assert "eth2" not in {link["ifname"] for link in expected("igb-sriov-netns")["ip -j link show"]}
    assert not (roots.sysfs / "class/net/eth2").exists()
    functions, problems = SysfsReader(roots).pci_functions()
    assert (functions, problems) == (igb_functions(()), ())


def test_one_vf_brings_its_pf_and_siblings(tmp_path: Path) -> None:
    roots = load("igb-sriov", tmp_path)
    for link in (roots.sysfs / "class/net").iterdir():
        link.unlink()
    assert SysfsReader(roots).pci_functions() == ((), ())
    functions, _ = SysfsReader(roots).pci_functions(extra=[VF1])
    assert [(f.address, f.physfn, f.virtfns) for f in functions] == [
        (PF, None, (VF0, VF1)),
        (VF0, PF, ()),
        (VF1, PF, ()),
    ]


def test_virtfns_are_ordered_by_index_not_by_name(tmp_path: Path) -> None:
    # Derived from the capture: igb has at most 7 VFs, so renumber the PF's two links to 9 and 10.
    roots = load("igb-sriov", tmp_path)
    pf = roots.sysfs / "bus/pci/devices" / PF
    (pf / "virtfn0").rename(pf / "virtfn10")
    (pf / "virtfn1").rename(pf / "virtfn9")
    functions, _ = SysfsReader(roots).pci_functions()
    assert functions[0].virtfns == (VF1, VF0)


@pytest.mark.parametrize("scenario", RDMA_SCENARIOS)
def test_char_devices_map_to_their_rdma_device(scenario: str, captured: Captured) -> None:
    roots = captured(scenario)
    found = SysfsReader(roots).char_devices()
    assert [d.name for d in found] == list(expected(scenario)["ls -l /dev/infiniband"])
    assert found == (
        CharDevice(name="issm0", kind="issm", path="/dev/infiniband/issm0", present=True, rdma_device="rxe0", port=1),
        CharDevice(name="issm1", kind="issm", path="/dev/infiniband/issm1", present=True, rdma_device="rxe1", port=1),
        CharDevice(name="rdma_cm", kind="rdma_cm", path="/dev/infiniband/rdma_cm", present=True),
        CharDevice(name="umad0", kind="umad", path="/dev/infiniband/umad0", present=True, rdma_device="rxe0", port=1),
        CharDevice(name="umad1", kind="umad", path="/dev/infiniband/umad1", present=True, rdma_device="rxe1", port=1),
        CharDevice(name="uverbs0", kind="uverbs", path="/dev/infiniband/uverbs0", present=True, rdma_device="rxe0"),
        CharDevice(name="uverbs1", kind="uverbs", path="/dev/infiniband/uverbs1", present=True, rdma_device="rxe1"),
    )


def test_char_device_missing_from_dev(tmp_path: Path) -> None:
    # e.g. the agent's /dev is not the host's: sysfs knows uverbs1, /dev has no node for it
    roots = load("rxe-dummy-veth", tmp_path)
    (roots.devfs / "infiniband/uverbs1").unlink()
    (roots.devfs / "infiniband/rdma_cm").unlink()
    by_name = {d.name: d for d in SysfsReader(roots).char_devices()}
    assert (by_name["uverbs1"].present, by_name["uverbs1"].rdma_device) == (False, "rxe1")
    assert (by_name["rdma_cm"].present, by_name["rdma_cm"].path) == (False, "/dev/infiniband/rdma_cm")
    (roots.sysfs / "class/misc/rdma_cm").unlink()
    assert "rdma_cm" not in {d.name for d in SysfsReader(roots).char_devices()}


def test_rdma_cm_node_alone_counts(tmp_path: Path) -> None:
    roots = load("rxe-dummy-veth", tmp_path)
    (roots.sysfs / "class/misc/rdma_cm").unlink()
    rdma_cm = [d for d in SysfsReader(roots).char_devices() if d.kind == "rdma_cm"]
    assert rdma_cm == [CharDevice(name="rdma_cm", kind="rdma_cm", path="/dev/infiniband/rdma_cm", present=True)]


def test_netns_mode_follows_the_module_parameter(tmp_path: Path) -> None:
    roots = load("rxe-dummy-veth", tmp_path)
    assert expected("rxe-dummy-veth")["rdma -j system show"] == ["netns shared copy-on-fork on"]
    assert SysfsReader(roots).ib_core_netns_mode() is NetnsMode.SHARED
    param = roots.sysfs / "module/ib_core/parameters/netns_mode"
    param.write_text("N\n")
    assert SysfsReader(roots).ib_core_netns_mode() is NetnsMode.EXCLUSIVE
    param.write_text("maybe\n")
    assert SysfsReader(roots).ib_core_netns_mode() is None


# --- optional files, EINVAL, and fallbacks ----------------------------------------------------------


def rxe_port(roots: HostRoots, device: str) -> Path:
    return roots.sysfs / "class/infiniband" / device / "ports/1"


def test_missing_optional_files_are_none_not_problems(tmp_path: Path) -> None:
    roots = load("rxe-dummy-veth", tmp_path)
    (roots.sysfs / "class/infiniband/rxe0/fw_ver").unlink()
    (rxe_port(roots, "rxe0") / "rate").unlink()
    devices, problems = SysfsReader(roots).rdma_devices()
    assert problems == ()
    assert (devices[0].fw_version, devices[0].ports[0].rate, devices[0].ports[0].state) == (None, None, "ACTIVE")


def test_driver_attributes_and_the_netdev_flags_of_a_port_that_is_down(tmp_path: Path) -> None:
    """hca_type and board_id where the driver has them (mlx5; rxe has not: None); the netdev's IFF_UP
    read only for a port that is down, None when the netdev is not in this namespace."""
    roots = load("rxe-dummy-veth", tmp_path)
    device = roots.sysfs / "class/infiniband/rxe0"
    (device / "hca_type").write_text("MT4119\n")  # as mlx5_ib prints them
    (device / "board_id").write_text("MT_0000000008\n")
    devices, _ = SysfsReader(roots).rdma_devices()
    netdevs = [d.ports[0].netdev for d in devices]
    assert (devices[0].hca_type, devices[0].board_id) == ("MT4119", "MT_0000000008")
    assert (devices[1].hca_type, devices[1].board_id) == (None, None)
    assert [d.ports[0].netdev_admin_up for d in devices] == [None, None]  # up: not read
    for name in ("rxe0", "rxe1"):
        (rxe_port(roots, name) / "state").write_text("1: DOWN\n")
        (rxe_port(roots, name) / "phys_state").write_text("3: Disabled\n")
    (roots.sysfs / "class/net" / str(netdevs[0]) / "flags").write_text("0x1002\n")
    (roots.sysfs / "class/net" / str(netdevs[1]) / "flags").unlink(missing_ok=True)
    devices, problems = SysfsReader(roots).rdma_devices()
    assert problems == ()
    assert [d.ports[0].netdev_admin_up for d in devices] == [False, None]


def test_unused_gid_entry_falls_back_to_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roots = load("rxe-dummy-veth", tmp_path)
    real_read_bytes = files.read_bytes

    def read_bytes(path: str) -> bytes:
        if path.endswith("/rxe0/ports/1/gid_attrs/ndevs/0"):  # what the kernel does for an unused GID entry
            raise OSError(22, "Invalid argument", path)
        return real_read_bytes(path)

    monkeypatch.setattr(files, "read_bytes", read_bytes)
    devices, problems = SysfsReader(roots).rdma_devices()
    assert problems == ()
    assert (devices[0].ports[0].netdev, devices[0].ports[0].netdev_index) == ("d0", 2)  # from rxe0/parent
    (roots.sysfs / "class/infiniband/rxe0/parent").unlink()
    devices, problems = SysfsReader(roots).rdma_devices()
    assert (problems, devices[0].ports[0].netdev, devices[0].ports[0].netdev_index) == ((), None, None)


def test_lid_only_for_infiniband(tmp_path: Path) -> None:
    # Derived: the captured rxe port relabelled InfiniBand; its lid/sm_lid files are the kernel's 0x0.
    roots = load("rxe-dummy-veth", tmp_path)
    (rxe_port(roots, "rxe0") / "link_layer").write_text("InfiniBand\n")
    devices, _ = SysfsReader(roots).rdma_devices()
    assert [(d.ports[0].lid, d.ports[0].sm_lid) for d in devices] == [(0, 0), (None, None)]


def test_netdev_moved_away_has_no_index(tmp_path: Path) -> None:
    roots = load("rxe-dummy-veth", tmp_path)
    (roots.sysfs / "class/net/veth0").unlink()  # as seen from the init netns after a move
    devices, problems = SysfsReader(roots).rdma_devices()
    assert problems == ()
    assert [(d.ports[0].netdev, d.ports[0].netdev_index) for d in devices] == [("d0", 2), ("veth0", None)]


# --- error isolation ------------------------------------------------------------------------------


def as_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def as_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


@pytest.mark.parametrize(
    ("breakage", "relative", "mentions"),
    [
        (as_directory, "ports/1/state", "ports/1/state: EISDIR"),
        (as_loop, "node_guid", "node_guid: ELOOP"),
        (lambda p: p.write_text("garbage\n"), "node_type", "node_type: node type: expected 'N: NAME'"),
        (lambda p: p.write_text("5 LinkUp\n"), "ports/1/phys_state", "ports/1/phys_state: physical state: expected"),
    ],
)
def test_one_broken_device_does_not_blank_the_other(
    breakage: Callable[[Path], None], relative: str, mentions: str, tmp_path: Path, captured: Captured
) -> None:
    good, _ = SysfsReader(captured("rxe-dummy-veth")).rdma_devices()
    broken_roots = load("rxe-dummy-veth", tmp_path)
    breakage(broken_roots.sysfs / "class/infiniband/rxe1" / relative)
    devices, problems = SysfsReader(broken_roots).rdma_devices()
    assert devices[0] == good[0]  # rxe0 untouched
    assert [d.name for d in devices] == ["rxe0", "rxe1"]  # rxe1 still reported, with what was readable
    assert devices[1].ports[0].netdev == "veth0"
    assert [(p.code, p.subject) for p in problems] == [("sysfs_read_error", "rxe1")]
    assert mentions in problems[0].message


def test_device_entry_that_is_not_a_directory(tmp_path: Path) -> None:
    roots = load("rxe-dummy-veth", tmp_path)
    link = roots.sysfs / "class/infiniband/rxe0"
    link.unlink()
    link.write_text("")
    devices, problems = SysfsReader(roots).rdma_devices()
    assert [d.name for d in devices] == ["rxe1"]
    assert [(p.code, p.subject) for p in problems] == [("sysfs_read_error", "rxe0")]


def test_one_broken_pci_function_does_not_blank_the_others(tmp_path: Path) -> None:
    roots = load("igb-sriov", tmp_path)
    as_directory(roots.sysfs / "bus/pci/devices" / VF0 / "vendor")
    functions, problems = SysfsReader(roots).pci_functions()
    assert [f.address for f in functions] == [PF, VF0, VF1]
    assert functions[0] == igb_functions(("eth2",))[0]
    assert (functions[1].vendor, functions[1].device, functions[1].driver) == (None, "10ca", "igbvf")
    assert [(p.code, p.subject) for p in problems] == [("sysfs_read_error", VF0)]
    assert "vendor: EISDIR" in problems[0].message


# --- devices that vanish mid-scan -----------------------------------------------------------------


def test_device_deleted_after_listing(tmp_path: Path) -> None:
    roots = load("rxe-dummy-veth", tmp_path)
    shutil.rmtree(roots.sysfs / "devices/virtual/infiniband/rxe1")  # class/infiniband/rxe1 now dangles
    devices, problems = SysfsReader(roots).rdma_devices()
    assert ([d.name for d in devices], problems) == (["rxe0"], ())


def test_device_deleted_while_its_ports_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roots = load("rxe-dummy-veth", tmp_path)
    real_read_port = RdmaReader._port

    def read_port_then_vanish(reader: RdmaReader, port: PortFacts, *args: Any) -> Any:
        if "rxe0" in port.path.split("/"):  # `rdma link delete rxe0` lands right now
            shutil.rmtree(roots.sysfs / "devices/virtual/infiniband/rxe0", ignore_errors=True)
        return real_read_port(reader, port, *args)

    monkeypatch.setattr(RdmaReader, "_port", read_port_then_vanish)
    devices, problems = SysfsReader(roots).rdma_devices()
    assert ([d.name for d in devices], problems) == (["rxe1"], ())


def test_vf_removed_while_functions_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roots = load("igb-sriov", tmp_path)
    real = files.link_name  # what pci.link_name is, until replaced below

    def vanish_then_link_name(path: str, *args: Any) -> str | None:
        if path.endswith(f"/{VF1}/driver"):  # sriov_numvfs=0 lands mid-read
            shutil.rmtree(Path(path).parent.resolve(), ignore_errors=True)
        return real(path, *args)

    monkeypatch.setattr(pci, "link_name", vanish_then_link_name)
    functions, problems = SysfsReader(roots).pci_functions()
    assert ([f.address for f in functions], problems) == ([PF, VF0], ())


def test_rdma_device_type_is_frozen_output(captured: Captured) -> None:
    devices, _ = SysfsReader(captured("rxe-dummy-veth")).rdma_devices()
    assert all(isinstance(d, RdmaDevice) and isinstance(d.ports, tuple) for d in devices)


def test_an_absent_driver_attribute_does_not_ask_whether_the_device_is_gone(
    captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rxe has no ``hca_type`` or ``board_id`` (mlx5 has): their absence is no sign of a vanishing
    device, so it costs no stat of the device's directory (one per device per cold cycle)."""
    asked: list[str] = []

    def gone(path: str) -> bool:
        asked.append(path)
        return False

    monkeypatch.setattr(files, "gone", gone)
    monkeypatch.setattr("agent.discover.sysfs.base.gone", gone)
    devices, problems = SysfsReader(captured("rxe-dummy-veth")).rdma_devices()
    assert [(d.name, d.hca_type, d.board_id) for d in devices] == [("rxe0", None, None), ("rxe1", None, None)]
    assert (problems, asked) == ((), [])


def test_attribute_text_is_read_as_text_mode_reads_it(tmp_path: Path) -> None:
    """One rule for sysfs and procfs text (agent.hostio.kernel_text): line ends as in text mode,
    bytes that are no UTF-8 as U+FFFD."""
    path = tmp_path / "fw_ver"
    path.write_bytes(b"16.35\r\n2000\rx\xff\n")
    errors = files.Errors()
    assert files.read_attr(str(path), errors, "fw_ver") == "16.35\n2000\nx\ufffd\n"
    assert not errors.items


def test_a_file_where_a_device_directory_should_be_is_a_problem_about_it(tmp_path: Path) -> None:
    roots = load("rxe-dummy-veth", tmp_path)
    entry = roots.sysfs / "class/infiniband/rxe0"
    entry.unlink()
    entry.write_text("not a directory\n")
    devices, problems = SysfsReader(roots).rdma_devices()
    assert [d.name for d in devices] == ["rxe1"]
    assert [(p.code, p.subject) for p in problems] == [("sysfs_read_error", "rxe0")]
    assert "Not a directory" in problems[0].message
