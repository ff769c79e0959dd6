#!/usr/bin/env python3
"""Regenerate every recorded fixture from real kernels — one command:

    python3 tools/regenerate_fixtures.py [--only NAME ...]

- ``rxe``: ONE boot of the QEMU test bed records the raw NETLINK_RDMA exchanges
  (tools/capture_netlink.py → tests/fixtures/netlink/<guest kernel>/) and then, in the same state,
  the sysfs tree (tools/capture_sysfs.py → tests/fixtures/sysfs/rxe-dummy-veth/), so the two agree
  (same GUIDs, ifindexes): tests/snapshots.py builds a whole NodeSnapshot from them.
- ``igb-sriov``, ``igb-sriov-netns``: sysfs trees of the igb SR-IOV scenarios (QEMU with --igb).
- ``host-no-rdma``: this machine's own sysfs (no RDMA).

Each fixture is written to a temporary directory and swapped in only when complete. Needs root and
the test bed (``bash tools/vm/install-deps.sh``).
"""

from __future__ import annotations

import argparse
import base64
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
NAMES = ("rxe", "igb-sriov", "igb-sriov-netns", "host-no-rdma")


def _swap(new: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(new), str(dest))
    print(f"regenerate: wrote {dest.relative_to(REPO)}", file=sys.stderr)


def rxe(work: Path) -> None:
    inner = (
        "set -e; python3 tools/capture_netlink.py /tmp/out/netlink >&2"
        " && python3 tools/capture_sysfs.py --expected /sys /dev /tmp/out/sysfs >&2"
        " && uname -r > /tmp/out/kernel"
        " && tar -C /tmp/out -cf /tmp/out.tar . && base64 -w0 /tmp/out.tar"
    )
    argv = [sys.executable, str(REPO / "tools/vm/vmrun.py"), "--timeout", "600", "--", inner]
    done = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise SystemExit(f"regenerate: the rxe capture failed in the guest ({done.returncode})")
    out = work / "rxe"
    out.mkdir()
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(done.stdout)), mode="r:") as tar:
        tar.extractall(out, filter="tar")
    kernel = (out / "kernel").read_text().strip()
    _swap(out / "netlink", FIXTURES / "netlink" / kernel)
    _swap(out / "sysfs", FIXTURES / "sysfs" / "rxe-dummy-veth")


def sysfs_scenario(name: str, work: Path) -> None:
    dest = work / name
    if name == "host-no-rdma":
        argv = [sys.executable, "tools/capture_sysfs.py", "--expected", "/sys", "/dev", str(dest)]
    else:
        argv = [sys.executable, "tools/capture_sysfs.py", "--vm", name, str(dest)]
    if subprocess.run(argv, cwd=REPO, check=False).returncode != 0:
        raise SystemExit(f"regenerate: capturing {name} failed")
    _swap(dest, FIXTURES / "sysfs" / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rna-fixtures-") as tmp:
        for name in args.only:
            if name == "rxe":
                rxe(Path(tmp))
            else:
                sysfs_scenario(name, Path(tmp))
    print("regenerate: done; review `git diff --stat tests/fixtures` and rerun the tests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
