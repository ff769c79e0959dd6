"""Runs INSIDE the QEMU guest (as root, real kernel): builds RDMA scenarios step by step and records,
for each, the agent's ``status --json`` next to what the kernel's own tools and sysfs say.

Scenarios, in one boot (the guest is slow: one Python process, few subprocesses):
1 rxe device on the igb PF; 8 (PF, both VFs, dummies, a veth); 64; then 64 in exclusive mode.
Prints one JSON document on stdout; tests/vm/test_parity.py compares its parts.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYS = Path("/sys")


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def batch(tool: str, lines: list[str]) -> None:
    """One process for many commands: `ip -b FILE` / `rdma -b FILE` (iproute2 6.1's rdma reads
    `-batch` as `-b atch`)."""
    if not lines:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    sh(tool, "-b", f.name)


def read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def pci_facts() -> dict[str, dict[str, Any]]:
    """What sysfs itself says about every network PCI function (the referee for PCI fields)."""
    facts: dict[str, dict[str, Any]] = {}
    for dev in sorted((SYS / "bus/pci/devices").iterdir()):
        if (read(dev / "class") or "").startswith("0x02"):
            driver = dev / "driver"
            facts[dev.name] = {
                "vendor": (read(dev / "vendor") or "")[2:],
                "device": (read(dev / "device") or "")[2:],
                "driver": driver.resolve().name if driver.exists() else None,
                "sriov_totalvfs": int(t) if (t := read(dev / "sriov_totalvfs")) is not None else None,
                "sriov_numvfs": int(n) if (n := read(dev / "sriov_numvfs")) is not None else None,
                "physfn": (dev / "physfn").resolve().name if (dev / "physfn").exists() else None,
                "virtfns": [(dev / f"virtfn{i}").resolve().name for i in range(64) if (dev / f"virtfn{i}").exists()],
                "netdevs": sorted(p.name for p in (dev / "net").iterdir()) if (dev / "net").exists() else [],
            }
    return facts


def agent_status() -> tuple[dict[str, Any], float]:
    from agent.cli import main

    out = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out):
        code = main(["status", "--json"], env={})
    elapsed = time.monotonic() - started
    assert code == 0, code
    return json.loads(out.getvalue()), elapsed


def wait_links_up(netdevs: list[str], timeout: float = 60.0) -> None:
    """Links settle asynchronously (igb/igbvf autonegotiation): wait until each is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(read(SYS / f"class/net/{n}/operstate") in ("up", "unknown") for n in netdevs):
            return
        time.sleep(0.2)
    raise AssertionError(f"links not up after {timeout}s: {netdevs}")


def record(name: str) -> dict[str, Any]:
    """The agent's view and the kernel tools' view of one state. The tools run before and after the
    agent; a record counts only when they agree, so a link changing meanwhile cannot fake a diff."""
    for _ in range(5):
        before = (sh("rdma", "-j", "link", "show"), sh("rdma", "-j", "dev", "show"), sh("rdma", "system", "show"))
        status, seconds = agent_status()
        after = (sh("rdma", "-j", "link", "show"), sh("rdma", "-j", "dev", "show"), sh("rdma", "system", "show"))
        if before == after:
            break
    else:
        raise AssertionError(f"{name}: the kernel's state kept changing")
    return {
        "name": name,
        "agent": status,
        "agent_seconds": seconds,
        "rdma_link": json.loads(after[0]),
        "rdma_dev": json.loads(after[1]),
        "rdma_system": after[2].strip(),  # `-j system` prints text anyway
        "ib_core_param": read(SYS / "module/ib_core/parameters/netns_mode"),
        "pci": pci_facts(),
        "dev_infiniband": sorted(p.name for p in Path("/dev/infiniband").iterdir()),
        # IFF_UP of every netdev, read as the agent read it (the referee for netdev_admin_up)
        "netdev_admin_up": {n.name: bool(int(read(n / "flags") or "0", 16) & 1) for n in (SYS / "class/net").iterdir()},
    }


def main() -> int:
    for module in ("igb", "igbvf", "rdma_rxe", "ib_uverbs", "ib_umad", "rdma_ucm"):
        sh("modprobe", module)
    pf = next(
        n.name
        for n in (SYS / "class/net").iterdir()
        if read(n / "device/vendor") == "0x8086" and read(n / "device/device") == "0x10c9"
    )
    sh("ip", "link", "set", pf, "up")
    (SYS / f"class/net/{pf}/device/sriov_numvfs").write_text("2")
    deadline = time.monotonic() + 60
    vfs: list[str] = []
    while time.monotonic() < deadline:  # VF netdevs appear asynchronously after igbvf probes
        vfs = sorted(n.name for n in (SYS / "class/net").iterdir() if read(n / "device/device") == "0x10ca")
        if len(vfs) == 2:
            break
        time.sleep(0.2)
    assert len(vfs) == 2, vfs
    batch("ip", [f"link set {vf} up" for vf in vfs])
    wait_links_up([pf, *vfs])

    scenarios = []
    batch("rdma", [f"link add rxe0 type rxe netdev {pf}"])
    scenarios.append(record("1 device (igb PF)"))

    lines = ["link add veth0 type veth peer name veth1", "link set veth0 up", "link set veth1 up"]
    lines += [cmd for i in range(4) for cmd in (f"link add d{i} type dummy", f"link set d{i} up")]
    batch("ip", lines)
    on_vfs = [f"link add rxe{1 + i} type rxe netdev {vf}" for i, vf in enumerate(vfs)]
    on_dummies = [f"link add rxe{4 + i} type rxe netdev d{i}" for i in range(4)]
    batch("rdma", [*on_vfs, "link add rxe3 type rxe netdev veth0", *on_dummies])
    batch("ip", ["link set d3 down"])  # a port down on purpose: its netdev administratively down
    scenarios.append(record("8 devices (PF, 2 VFs, veth, dummies)"))
    batch("ip", ["link set d3 up"])

    batch("ip", [cmd for i in range(4, 60) for cmd in (f"link add d{i} type dummy", f"link set d{i} up")])
    batch("rdma", [f"link add rxe{4 + i} type rxe netdev d{i}" for i in range(4, 60)])
    scenarios.append(record("64 devices, shared"))

    sh("rdma", "system", "set", "netns", "exclusive")
    scenarios.append(record("64 devices, exclusive"))
    sh("rdma", "system", "set", "netns", "shared")

    json.dump({"kernel": sh("uname", "-r").strip(), "pf": pf, "vfs": vfs, "scenarios": scenarios}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
