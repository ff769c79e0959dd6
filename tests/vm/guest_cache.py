"""Runs INSIDE the QEMU guest (as root, real kernel, igb SR-IOV NIC, Soft-RoCE): what the kernel does
that the sysfs cache (agent/discover/sysfs/, SysfsCache) relies on — link text, inode numbers of
re-created entries, getdents' d_ino — and warm snapshots next to cold ones while the host changes
(rxe devices re-created and renamed, a VF unbound and bound again, sriov_numvfs changed, a VF netdev
moved into another netns and back, a netdev renamed). Prints one JSON document on stdout;
tests/vm/test_cache_vm.py checks it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

SYS = Path("/sys")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.config import HostRoots  # noqa: E402
from agent.discover.snapshot import SnapshotCache, take_snapshot  # noqa: E402
from agent.model import NodeSnapshot  # noqa: E402


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def inode(path: Path) -> int:
    return path.lstat().st_ino


def wait_for(what: str, probe: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def vf_netdevs(count: int) -> list[str]:
    """The igbvf netdevs, once ``count`` exist (they appear after igbvf probes each VF)."""

    def probe() -> list[str]:
        found = sorted(n.name for n in (SYS / "class/net").iterdir() if read(n / "device/device") == "0x10ca")
        return found if len(found) == count else []

    return list(wait_for(f"{count} VF netdevs", probe)) if count else []


def comparable(snapshot: NodeSnapshot) -> NodeSnapshot:
    # the namespace count follows every process on the host, not sysfs
    return replace(snapshot, taken_at=0.0, network_namespaces=None)


class Checker:
    """Cold and warm snapshots of the same moment, after each change. Links and GID tables settle
    asynchronously, so a difference counts only if it survives the host standing still."""

    def __init__(self) -> None:
        self.cache = SnapshotCache()
        self.results: list[dict[str, Any]] = []

    def check(self, label: str) -> None:
        attempts = 0
        while attempts < 6:
            attempts += 1
            cold = comparable(take_snapshot(HostRoots()))
            warm = [comparable(take_snapshot(HostRoots(), cache=self.cache)) for _ in range(2)]
            if all(w == cold for w in warm):
                break
            time.sleep(0.5)
        self.results.append(
            {
                "label": label,
                "equal": all(w == cold for w in warm),
                "attempts": attempts,
                "devices": sorted(d.name for d in cold.devices),
                "functions": {f.address: [f.driver, list(f.netdevs), list(f.virtfns)] for f in cold.pci_functions},
                "diff": None if all(w == cold for w in warm) else [repr(cold), repr(warm[-1])],
            }
        )


def main() -> int:
    for module in ("igb", "igbvf", "rdma_rxe", "ib_uverbs", "ib_umad", "rdma_ucm"):
        sh("modprobe", module)
    pf = next(
        n.name
        for n in (SYS / "class/net").iterdir()
        if read(n / "device/vendor") == "0x8086" and read(n / "device/device") == "0x10c9"
    )
    pf_address = (SYS / f"class/net/{pf}/device").resolve().name
    pf_dir = SYS / "bus/pci/devices" / pf_address
    sh("ip", "link", "set", pf, "up")
    (pf_dir / "sriov_numvfs").write_text("2")
    vfs = vf_netdevs(2)
    for vf in vfs:
        sh("ip", "link", "set", vf, "up")
    sh("rdma", "link", "add", "rxe0", "type", "rxe", "netdev", pf)
    sh("rdma", "link", "add", "rxe1", "type", "rxe", "netdev", vfs[0])
    facts: dict[str, Any] = {"pf": pf, "pf_address": pf_address}
    checker = Checker()
    checker.check("PF with 2 VFs, rxe0 on the PF, rxe1 on VF0")

    # How sysfs writes links, and whether getdents' d_ino is the inode number lstat gives.
    facts["netdev_device_link"] = str((SYS / f"class/net/{pf}/device").readlink())
    facts["class_link"] = str((SYS / "class/infiniband/rxe0").readlink())
    facts["virtfn_link"] = str((pf_dir / "virtfn0").readlink())
    facts["d_ino_is_st_ino"] = {
        d: all(e.inode() == os.lstat(e.path).st_ino for e in os.scandir(SYS / d))
        for d in ("class/net", "class/infiniband", "class/infiniband_verbs", "bus/pci/devices")
    }

    # An RDMA device deleted and added under the same name is a new entry.
    before = inode(SYS / "class/infiniband/rxe0")
    sh("rdma", "link", "delete", "rxe0")
    sh("rdma", "link", "add", "rxe0", "type", "rxe", "netdev", pf)
    facts["rxe0_inodes"] = [before, inode(SYS / "class/infiniband/rxe0")]
    checker.check("rxe0 deleted and added again")

    # A rename changes the char device's ibdev in place: why ibdev is not kept across a rename.
    uverbs = next(u for u in (SYS / "class/infiniband_verbs").iterdir() if read(u / "ibdev") == "rxe1")
    before = inode(uverbs)
    sh("rdma", "dev", "set", "rxe1", "name", "rxe7")
    facts["renamed_uverbs"] = [uverbs.name, before, inode(uverbs), read(uverbs / "ibdev")]
    checker.check("rxe1 renamed rxe7")

    # A VF unbound from its driver and bound again (as when it is handed to vfio-pci and back).
    vf0 = (SYS / f"class/net/{vfs[0]}/device").resolve().name
    (SYS / "bus/pci/drivers/igbvf/unbind").write_text(vf0)
    wait_for(
        "VF0's netdev to go",
        lambda: (
            not (SYS / "bus/pci/devices" / vf0 / "net").exists()
            or not any((SYS / "bus/pci/devices" / vf0 / "net").iterdir())
        ),
    )
    facts["unbound_driver_link"] = (SYS / "bus/pci/devices" / vf0 / "driver").exists()
    checker.check("VF0 unbound")
    (SYS / "bus/pci/drivers/igbvf/bind").write_text(vf0)
    vfs = vf_netdevs(2)
    checker.check("VF0 bound again")

    # sriov_numvfs 2 → 0 → 1: the VF is a new PCI device at the same address.
    before = inode(SYS / "bus/pci/devices" / vf0)
    (pf_dir / "sriov_numvfs").write_text("0")
    checker.check("sriov_numvfs 0")
    (pf_dir / "sriov_numvfs").write_text("1")
    vfs = vf_netdevs(1)
    facts["vf0_inodes"] = [before, inode(SYS / "bus/pci/devices" / vf0)]
    checker.check("sriov_numvfs 1")

    # A VF netdev moved into another netns and back.
    sh("ip", "netns", "add", "x")
    before = inode(SYS / f"class/net/{vfs[0]}")
    sh("ip", "link", "set", vfs[0], "netns", "x")
    facts["moved_away_listed"] = (SYS / f"class/net/{vfs[0]}").exists()
    checker.check("VF0's netdev in netns x")
    sh("ip", "-n", "x", "link", "set", vfs[0], "netns", "1")
    facts["moved_back_inodes"] = [before, inode(SYS / f"class/net/{vfs[0]}")]
    checker.check("VF0's netdev back")
    sh("ip", "netns", "del", "x")

    # A netdev renamed: rxe's parent prints its netdev's current name (why parent is read each cycle).
    sh("ip", "link", "set", pf, "down")
    sh("ip", "link", "set", pf, "name", "pfren")
    sh("ip", "link", "set", "pfren", "up")
    facts["rxe0_parent_after_rename"] = read(SYS / "class/infiniband/rxe0/parent")
    checker.check("PF netdev renamed")

    json.dump({"kernel": sh("uname", "-r").strip(), "facts": facts, "checks": checker.results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
