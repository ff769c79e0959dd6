"""The RDMA shared device plugin's configs (tests/fixtures/deviceplugin), and the small nodes the
tests of agent/diagnose run them against."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from agent.diagnose.plugin_config import DevicePluginConfig, read_device_plugin_config
from agent.model import DesiredMode, EnforcementState, NetnsMode, NodeSnapshot
from tests.unit.test_labels import T0, mlx5_snapshot  # TODO: move to tests/snapshots.py when it lands

FIXTURES = Path(__file__).parent / "fixtures" / "deviceplugin"
HCA = "spidernet.io/hca_shared_devices"
SRIOV = "spidernet.io/mellanoxrdma"


def config(name: str) -> DevicePluginConfig:
    return read_device_plugin_config(FIXTURES / name)


def single_pf() -> NodeSnapshot:
    """The seed guide's node, reduced to one port: mlx5_0 on 0000:3b:00.0 (15b3:1017), no VFs."""
    snap = mlx5_snapshot()
    pf = replace(snap.pci_functions[1], sriov_numvfs=0, virtfns=())
    return replace(
        snap,
        devices=snap.devices[:1],
        pci_functions=(pf,),
        char_devices=tuple(c for c in snap.char_devices if c.rdma_device in ("mlx5_0", None)),
    )


def without(snap: NodeSnapshot, *names: str) -> NodeSnapshot:
    return replace(snap, char_devices=tuple(c for c in snap.char_devices if c.name not in names))


def enforcement(desired: DesiredMode = DesiredMode.UNMANAGED, *, reboot: bool = False) -> EnforcementState:
    return EnforcementState(
        desired=desired, live=NetnsMode.SHARED, persisted=None, compliant=not reboot, reboot_required=reboot
    )


NO_RDMA = NodeSnapshot(taken_at=T0, netlink_available=False)
