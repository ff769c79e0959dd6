"""Smoke tests of the real-kernel test bed itself: Soft-RoCE on a dummy netdev, and an igb SR-IOV PF."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

pytestmark = pytest.mark.vm

VmRun = Callable[..., tuple[int, str, str]]


def sections(out: str) -> dict[str, str]:
    """Split guest output on lines ``=== name``."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("=== "):
            current = found.setdefault(line[4:].strip(), [])
        else:
            current.append(line)
    return {k: "\n".join(v).strip() for k, v in found.items()}


RXE_ON_DUMMY = """
set -e
modprobe -a rdma_rxe ib_uverbs ib_umad rdma_ucm
ip link add d0 type dummy
ip link set d0 up
rdma link add rxe0 type rxe netdev d0
echo '=== link'; rdma -j link show
echo '=== system'; rdma system
echo '=== devices'; ls /dev/infiniband
echo '=== netns_mode'; cat /sys/module/ib_core/parameters/netns_mode
"""


def test_rxe_on_dummy(vm: VmRun) -> None:
    rc, out, err = vm(RXE_ON_DUMMY)
    assert rc == 0, f"guest command failed ({rc}):\n{err}"
    s = sections(out)
    links = json.loads(s["link"])
    assert [(x["ifname"], x["port"], x["state"], x["physical_state"], x["netdev"]) for x in links] == [
        ("rxe0", 1, "ACTIVE", "LINK_UP", "d0")
    ]
    assert s["system"].split()[:2] == ["netns", "shared"]
    devices = s["devices"].split()
    assert {"uverbs0", "umad0", "issm0", "rdma_cm"} <= set(devices), devices
    assert s["netns_mode"] == "Y"


IGB_SRIOV = """
set -e
modprobe -a igb igbvf rdma_rxe
pf=$(basename "$(ls -d /sys/bus/pci/drivers/igb/0000:*/net/* | head -1)")
dev=/sys/class/net/$pf/device
ip link set "$pf" up
echo 2 > "$dev/sriov_numvfs"
i=0  # the emulated PHY takes a moment to report link; rxe copies the netdev's state when added
until [ "$(cat "/sys/class/net/$pf/operstate")" = up ] || [ $i -ge 300 ]; do sleep 0.1; i=$((i + 1)); done
echo "=== operstate"; cat "/sys/class/net/$pf/operstate"
echo "=== pf"; echo "$pf"
for f in vendor device sriov_totalvfs sriov_numvfs; do echo "=== $f"; cat "$dev/$f"; done
echo "=== virtfns"; for v in "$dev"/virtfn*; do echo "$(basename "$v") $(cat "$v/vendor") $(cat "$v/device")"; done
rdma link add rxe0 type rxe netdev "$pf"
echo "=== link"; rdma -j link show
"""


def test_igb_sriov_pf_and_rxe(vm: VmRun) -> None:
    rc, out, err = vm(IGB_SRIOV, igb=True)
    assert rc == 0, f"guest command failed ({rc}):\n{err}"
    s = sections(out)
    pf = s["pf"]
    assert s["operstate"] == "up"
    assert (s["vendor"], s["device"], s["sriov_totalvfs"], s["sriov_numvfs"]) == ("0x8086", "0x10c9", "7", "2")
    assert s["virtfns"].splitlines() == ["virtfn0 0x8086 0x10ca", "virtfn1 0x8086 0x10ca"]
    links = json.loads(s["link"])
    assert [(x["ifname"], x["state"], x["netdev"]) for x in links] == [("rxe0", "ACTIVE", pf)]
