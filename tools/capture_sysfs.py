#!/usr/bin/env python3
"""Copy the part of a live sysfs and /dev that agent/discover/sysfs/ reads into a fixture tree.

Usage: capture_sysfs.py [--expected] [--setup SCENARIO] SRC_SYS SRC_DEV DEST
       capture_sysfs.py --vm SCENARIO DEST      (boots tools/vm/vmrun.py; regenerates a fixture)
       capture_sysfs.py --extract DEST OUT      (unpacks DEST/tree.txt into OUT/sys, OUT/dev)

Writes DEST/tree.txt (the copied sys/ and dev/ trees as one text archive, see :func:`write_archive`:
a sysfs tree's symlinks form cycles that pytest and mypy would walk forever) and DEST/CAPTURE.txt
(kernel, files the kernel refused to read). DEST must be empty or absent. Run it on the machine
whose state you want (as root, so every attribute is readable); it is stdlib only so it also runs
inside the QEMU test bed (tools/vm).

What is copied, starting from class/{infiniband,infiniband_verbs,infiniband_mad,net}, class/misc/
rdma_cm, bus/pci/devices and module/<watched module>: every object those symlinks lead to (RDMA
devices, their ports, netdevs, PCI functions and their PF/VFs, virtio devices, uverbs/umad/issm
devices), each with a fixed list of attribute files (:data:`KINDS`). Everything else (power/,
subsystem links, counters, hw_counters, cm_* statistics, most of the GID table) is left out.

- Symlinks are kept as symlinks, re-pointed relative to where they sit inside sys/, so
  ``class/net/eth0 -> ../../devices/...`` resolves within the copy. ``driver`` links are kept but
  their target is not copied: they dangle, and only their basename matters.
- Attribute files are copied byte for byte. A file the kernel refuses to read (EINVAL for unused
  ``gid_attrs/ndevs/N``, EOPNOTSUPP for ``phys_port_name``, ...) is left out of the copy, as it has no
  text, and listed with its errno in CAPTURE.txt.
- Directories are recorded even when empty (git would drop an empty one).
- /dev/infiniband/* device nodes become empty regular files.

With ``--setup SCENARIO`` (as root, in the QEMU test bed only: it loads modules and creates links),
first builds the scenario (:data:`SCENARIOS`): ``rxe-dummy-veth`` (rxe0 on a dummy netdev d0, rxe1
on veth0), ``igb-sriov`` (QEMU igb PF with 2 VFs, rxe0 on the PF, rxe1 on a VF; vmrun --igb) or
``igb-sriov-netns`` (the same, then the other VF's netdev moved into network namespace ``pod1`` and
the first VF's netdev set down).

With ``--vm SCENARIO DEST``, does all of that inside the QEMU test bed (``tools/vm/vmrun.py``, with
``--igb`` for the igb scenarios): the guest captures into its own /tmp and sends that back as a
base64 tar on stdout, unpacked here into DEST. This is how tests/fixtures/sysfs/<scenario>
are (re)made (e.g. ``tools/capture_sysfs.py --vm igb-sriov tests/fixtures/sysfs/igb-sriov``).

With ``--expected``, also runs iproute2 (``rdma -j link show``, ``rdma -j dev show``, ``ip -j link
show``) and lists the virtfn links, into DEST/expected.json, so tests compare the reader against the
kernel's own tools.
"""

from __future__ import annotations

import argparse
import base64
import errno
import fnmatch
import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PCI_ADDRESS = re.compile(r"^[0-9a-fA-F]{4,}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
MAX_FILE_BYTES = 64 * 1024
GID_ENTRIES = 4  # gids/, gid_attrs/{ndevs,types}/ and pkeys/ entries kept (of up to thousands)
WATCHED_MODULES = (
    "ib_core",
    "ib_uverbs",
    "ib_umad",
    "rdma_ucm",
    "rdma_cm",
    "mlx5_core",
    "mlx5_ib",
    "rdma_rxe",
)


@dataclass(frozen=True)
class Kind:
    """What to copy of one kind of sysfs object (a directory).

    ``files``: attribute-file patterns to copy. ``links``: symlink patterns to keep, mapped to the
    kind their target is copied as (None: keep the link, copy nothing behind it). ``dirs``:
    subdirectory patterns mapped to the kind they are copied as. ``limit``: only the first N files
    (natural order) are tried. Anything not matched is left out."""

    files: tuple[str, ...] = ()
    links: tuple[tuple[str, str | None], ...] = ()
    dirs: tuple[tuple[str, str], ...] = ()
    limit: int | None = None


KINDS: dict[str, Kind] = {
    # class directories: symlinks to the objects
    "class_infiniband": Kind(links=(("*", "ibdev"),)),
    "class_chardev": Kind(
        files=("abi_version",), links=(("uverbs*", "chardev"), ("umad*", "chardev"), ("issm*", "chardev"))
    ),
    "class_net": Kind(links=(("*", "netdev"),)),
    "class_misc": Kind(links=(("rdma_cm", "chardev"),)),
    "bus_pci_devices": Kind(links=(("*", "pci"),)),
    # RDMA devices: class/infiniband/<dev>
    "ibdev": Kind(
        files=(
            "node_type",
            "node_guid",
            "sys_image_guid",
            "fw_ver",
            "node_desc",
            "parent",
            "hca_type",
            "hw_rev",
            "board_id",
            "uevent",
        ),
        links=(("device", "parent"),),
        dirs=(("ports", "ports"),),
    ),
    "ports": Kind(dirs=(("*", "port"),)),
    "port": Kind(
        files=("state", "phys_state", "link_layer", "rate", "lid", "sm_lid", "lid_mask_count", "sm_sl", "cap_mask"),
        dirs=(("gids", "table"), ("pkeys", "table"), ("gid_attrs", "gid_attrs")),
    ),
    "gid_attrs": Kind(dirs=(("ndevs", "table"), ("types", "table"))),
    "table": Kind(files=("*",), limit=GID_ENTRIES),
    # uverbsN, umadN, issmN, rdma_cm
    "chardev": Kind(files=("ibdev", "port", "abi_version", "dev", "uevent"), links=(("device", "parent"),)),
    # netdevs: class/net/<if>
    "netdev": Kind(
        files=(
            "ifindex",
            "iflink",
            "address",
            "type",
            "operstate",
            "flags",
            "dev_id",
            "dev_port",
            "mtu",
            "addr_assign_type",
            "name_assign_type",
            "phys_port_name",
            "phys_switch_id",
            "uevent",
        ),
        links=(("device", "parent"),),
    ),
    # PCI functions: bus/pci/devices/<address>
    "pci": Kind(
        files=(
            "vendor",
            "device",
            "subsystem_vendor",
            "subsystem_device",
            "class",
            "revision",
            "numa_node",
            "sriov_*",
            "uevent",
        ),
        links=(("driver", None), ("physfn", "pci"), ("virtfn*", "pci")),
        dirs=(
            ("net", "netdevs"),
            ("infiniband", "ibdevs"),
            ("infiniband_verbs", "chardevs"),
            ("infiniband_mad", "chardevs"),
            ("virtio*", "busdev"),
        ),
    ),
    # a non-PCI bus device between a netdev and its PCI function (virtioN, auxiliary devices)
    "busdev": Kind(
        files=("vendor", "device", "modalias", "uevent"),
        links=(("driver", None),),
        dirs=(("net", "netdevs"), ("infiniband", "ibdevs")),
    ),
    "netdevs": Kind(dirs=(("*", "netdev"),)),
    "ibdevs": Kind(dirs=(("*", "ibdev"),)),
    "chardevs": Kind(dirs=(("*", "chardev"),)),
    "module": Kind(files=("initstate",), dirs=(("parameters", "module_parameters"),)),
    "module_parameters": Kind(files=("netns_mode",)),
}

STARTS: tuple[tuple[str, str], ...] = (
    ("class/infiniband", "class_infiniband"),
    ("class/infiniband_verbs", "class_chardev"),
    ("class/infiniband_mad", "class_chardev"),
    ("class/net", "class_net"),
    ("class/misc", "class_misc"),
    ("bus/pci/devices", "bus_pci_devices"),
    *((f"module/{name}", "module") for name in WATCHED_MODULES),
)


def natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def first_match(name: str, table: tuple[tuple[str, Any], ...]) -> tuple[bool, Any]:
    for pattern, value in table:
        if fnmatch.fnmatchcase(name, pattern):
            return True, value
    return False, None


class Capture:
    def __init__(self, src_sys: Path, dest_sys: Path) -> None:
        self.src = src_sys.resolve()
        self.dest = dest_sys
        self.seen: set[tuple[Path, str]] = set()
        self.unreadable: set[tuple[str, str]] = set()
        self.work: list[tuple[Path, str]] = []

    def rel(self, real: Path) -> Path | None:
        """``real`` relative to the source sysfs, or None when it points outside it."""
        try:
            return real.relative_to(self.src)
        except ValueError:
            return None

    def run(self) -> None:
        for rel, kind in STARTS:
            if (self.src / rel).is_dir():
                self.work.append(((self.src / rel).resolve(), kind))
        while self.work:
            real, kind = self.work.pop()
            if kind == "parent":  # a netdev's or RDMA device's `device`: a PCI function or a bus device
                kind = "pci" if PCI_ADDRESS.match(real.name) else "busdev"
            if (real, kind) in self.seen:
                continue
            self.seen.add((real, kind))
            self.copy_dir(real, kind)

    def copy_dir(self, real: Path, kind: str) -> None:
        rel = self.rel(real)
        if rel is None:
            return
        if kind == "busdev" and PCI_ADDRESS.match(real.parent.name):
            self.work.append((real.parent, "pci"))  # virtioN's parent is the PCI function
        spec = KINDS[kind]
        (self.dest / rel).mkdir(parents=True, exist_ok=True)
        try:
            entries = sorted(real.iterdir(), key=lambda p: natural_key(p.name))
        except OSError as err:
            self.unreadable.add((f"{rel}/", errno.errorcode.get(err.errno or 0, str(err))))
            return
        tried_files = 0  # for ``limit``: entries tried, readable or not (gid_attrs/ndevs/N: EINVAL)
        for src in entries:
            name = src.name
            if src.is_symlink():
                found, target_kind = first_match(name, spec.links)
                if found:
                    self.copy_link(src, rel, target_kind)
            elif src.is_dir():
                found, sub_kind = first_match(name, spec.dirs)
                if found:
                    self.work.append((src, sub_kind))
            elif matches(name, spec.files):
                if spec.limit is not None and tried_files >= spec.limit:
                    continue
                tried_files += 1
                self.copy_file(src, rel / name)

    def copy_link(self, src: Path, rel_dir: Path, target_kind: str | None) -> None:
        target_real = src.resolve()
        target_rel = self.rel(target_real)
        if target_rel is None:
            return
        link = self.dest / rel_dir / src.name
        # relative to where the link sits in the copy: the same text sysfs itself uses
        text = os.path.relpath(self.dest / target_rel, self.dest / rel_dir)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(text)
        if target_kind is not None and target_real.is_dir():
            self.work.append((target_real, target_kind))

    def copy_file(self, src: Path, rel: Path) -> None:
        try:
            with src.open("rb") as f:
                data = f.read(MAX_FILE_BYTES)
        except OSError as err:
            self.unreadable.add((str(rel), errno.errorcode.get(err.errno or 0, str(err))))
            return
        (self.dest / rel).write_bytes(data)


def copy_dev(src_dev: Path, dest_dev: Path) -> list[str]:
    """/dev/infiniband/* as empty regular files (only their names matter)."""
    dest_dev.mkdir(parents=True, exist_ok=True)
    src = src_dev / "infiniband"
    if not src.is_dir():
        return []
    (dest_dev / "infiniband").mkdir()
    names = sorted((p.name for p in src.iterdir()), key=natural_key)
    for name in names:
        (dest_dev / "infiniband" / name).touch()
    return names


ARCHIVE = "tree.txt"
ARCHIVE_HEADER = (
    "# A sysfs + /dev fixture tree captured by tools/capture_sysfs.py from a live kernel; do not edit.\n"
    "# One entry per line: 'dir<TAB>path', 'link<TAB>path<TAB>target', or 'file<TAB>path<TAB>size'\n"
    "# followed by exactly size bytes of content and one newline. Unpack: capture_sysfs.py --extract.\n"
)


def write_archive(root: Path, out: Path) -> None:
    """The tree under ``root`` as one text file: a tree of sysfs symlinks has cycles
    (net/eth0/device/net/eth0/...) that recursive tools (pytest, mypy, grep -R) would follow forever."""
    chunks: list[bytes] = [ARCHIVE_HEADER.encode()]

    def walk(directory: Path) -> None:
        for path in sorted(directory.iterdir()):
            rel = path.relative_to(root)
            if path.is_symlink():
                chunks.append(f"link\t{rel}\t{path.readlink()}\n".encode())
            elif path.is_dir():
                chunks.append(f"dir\t{rel}\n".encode())
                walk(path)
            else:
                data = path.read_bytes()
                chunks.append(f"file\t{rel}\t{len(data)}\n".encode() + data + b"\n")

    walk(root)
    out.write_bytes(b"".join(chunks))


def extract_archive(archive: Path, dest: Path) -> None:
    """Recreate the tree of :func:`write_archive` (symlinks, empty directories) under ``dest``."""
    data = archive.read_bytes()
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line, pos = data[pos:end].decode(), end + 1
        if not line or line.startswith("#"):
            continue
        kind, rel, *rest = line.split("\t")
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"{archive}: entry outside the tree: {rel!r}")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            target.mkdir(exist_ok=True)
        elif kind == "link":
            target.symlink_to(rest[0])
        elif kind == "file":
            size = int(rest[0])
            target.write_bytes(data[pos : pos + size])
            pos += size + 1
        else:
            raise ValueError(f"{archive}: unknown entry {line!r}")


def run_tool(argv: list[str]) -> Any:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"error": str(err)}
    if out.returncode != 0:
        return {"error": out.stderr.strip(), "rc": out.returncode}
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return out.stdout.splitlines()


def dev_nodes(src_dev: Path) -> dict[str, str]:
    """``ls -l /dev/infiniband``: each node's major:minor (char devices) or file type."""
    nodes: dict[str, str] = {}
    base = src_dev / "infiniband"
    for path in sorted(base.iterdir(), key=lambda p: natural_key(p.name)) if base.is_dir() else []:
        st = path.lstat()
        kind = "c" if stat.S_ISCHR(st.st_mode) else "-"
        nodes[path.name] = f"{kind} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if kind == "c" else kind
    return nodes


def expected(src_sys: Path, src_dev: Path) -> dict[str, Any]:
    virtfns: dict[str, dict[str, str]] = {}
    devices = src_sys / "bus/pci/devices"
    for pci in sorted(devices.iterdir()) if devices.is_dir() else []:
        links = {p.name: str(p.readlink()) for p in pci.iterdir() if p.name.startswith("virtfn") or p.name == "physfn"}
        if links:
            virtfns[pci.name] = dict(sorted(links.items(), key=lambda kv: natural_key(kv[0])))
    return {
        "kernel": os.uname().release,
        "rdma -j link show": run_tool(["rdma", "-j", "link", "show"]),
        "rdma -j dev show": run_tool(["rdma", "-j", "dev", "show"]),
        "rdma -j system show": run_tool(["rdma", "-j", "system", "show"]),
        "ip -j link show": [
            {k: link.get(k) for k in ("ifindex", "ifname", "operstate", "address", "parentbus", "parentdev")}
            for link in (run_tool(["ip", "-d", "-j", "link", "show"]) or [])
            if isinstance(link, dict)
        ],
        "virtfn/physfn links": virtfns,
        "ls -l /dev/infiniband": dev_nodes(src_dev),
    }


def sh(command: str) -> None:
    print(f"$ {command}", file=sys.stderr)
    subprocess.run(["sh", "-c", command], check=True)


def netdev_with_driver(src_sys: Path, driver: str) -> str:
    for netdev in sorted((src_sys / "class/net").iterdir()):
        link = netdev / "device/driver"
        if link.is_symlink() and link.readlink().name == driver:
            return netdev.name
    raise SystemExit(f"no netdev is driven by {driver}")


def setup_rxe_dummy_veth(src_sys: Path) -> None:
    sh("modprobe rdma_rxe && modprobe ib_uverbs && modprobe ib_umad && modprobe rdma_ucm")
    sh("ip link add d0 type dummy && ip link set d0 up")
    sh("ip link add veth0 type veth peer name veth1 && ip link set veth0 up && ip link set veth1 up")
    sh("rdma link add rxe0 type rxe netdev d0 && rdma link add rxe1 type rxe netdev veth0")


def setup_igb_sriov(src_sys: Path) -> None:
    sh(
        "modprobe igb && modprobe igbvf && modprobe rdma_rxe && modprobe ib_uverbs && modprobe ib_umad"
        " && modprobe rdma_ucm"
    )
    sh("sleep 1")
    pf = netdev_with_driver(src_sys, "igb")
    sh(f"ip link set {pf} up && echo 2 > /sys/class/net/{pf}/device/sriov_numvfs && sleep 2")
    vf = netdev_with_driver(src_sys, "igbvf")
    sh(f"ip link set {vf} up")
    wait_for(lambda: (src_sys / "class/net" / vf / "operstate").read_text().strip() == "up", f"{vf} up")
    sh(f"rdma link add rxe0 type rxe netdev {pf} && rdma link add rxe1 type rxe netdev {vf}")


def wait_for(ready: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Poll until ``ready()``; go on anyway after ``seconds`` (the capture records what it finds)."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            print(f"capture_sysfs: still waiting for {what} after {seconds:.0f}s; going on", file=sys.stderr)
            return
        time.sleep(0.5)


def setup_igb_sriov_netns(src_sys: Path) -> None:
    """igb-sriov, then the second VF's netdev moved into another network namespace, as a CNI does
    when it hands a VF to a pod, and the first VF's netdev set down (so rxe1's port is DOWN)."""
    setup_igb_sriov(src_sys)
    vfs = [n for n in sorted((src_sys / "class/net").iterdir()) if (n / "device/physfn").is_symlink()]
    sh(f"ip netns add pod1 && ip link set {vfs[-1].name} netns pod1")
    # and the first VF's link administratively down: rxe1 on it goes DOWN
    sh(f"ip link set {vfs[0].name} down")
    state = src_sys / "class/infiniband/rxe1/ports/1/state"
    wait_for(lambda: state.read_text().strip() == "1: DOWN", "rxe1 DOWN")


SCENARIOS = {
    "rxe-dummy-veth": setup_rxe_dummy_veth,
    "igb-sriov": setup_igb_sriov,
    "igb-sriov-netns": setup_igb_sriov_netns,
}
VM_FLAGS = {"rxe-dummy-veth": [], "igb-sriov": ["--igb"], "igb-sriov-netns": ["--igb"]}


def capture_in_vm(scenario: str, dest: Path) -> int:
    """Run this tool inside the test bed and unpack what it captured into ``dest``."""
    repo = Path(__file__).resolve().parent.parent
    inner = (
        f"python3 tools/capture_sysfs.py --setup {scenario} --expected /sys /dev /tmp/capture >&2"
        " && tar -C /tmp/capture -cf /tmp/capture.tar . && base64 -w0 /tmp/capture.tar"
    )
    argv = [sys.executable, str(repo / "tools/vm/vmrun.py"), "--timeout", "300", *VM_FLAGS[scenario], "--", inner]
    out = subprocess.run(argv, cwd=repo, stdout=subprocess.PIPE, check=False)
    if out.returncode != 0:
        print(f"capture_sysfs: vmrun failed with {out.returncode}", file=sys.stderr)
        return out.returncode or 1
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(out.stdout)), mode="r:") as tar:
        tar.extractall(dest, filter="tar")  # keeps symlinks; refuses members that leave dest
    print(f"capture_sysfs: {scenario} captured into {dest}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--extract"]:
        ex = argparse.ArgumentParser(prog="capture_sysfs.py --extract")
        ex.add_argument("fixture", type=Path, help=f"a capture directory (holding {ARCHIVE})")
        ex.add_argument("dest", type=Path)
        ex_args = ex.parse_args(argv[1:])
        extract_archive(ex_args.fixture / ARCHIVE, ex_args.dest)
        return 0
    if argv[:1] == ["--vm"]:
        vm = argparse.ArgumentParser(prog="capture_sysfs.py --vm")
        vm.add_argument("scenario", choices=sorted(SCENARIOS))
        vm.add_argument("dest", type=Path)
        vm_args = vm.parse_args(argv[1:])
        if vm_args.dest.exists() and any(vm_args.dest.iterdir()):
            vm.error(f"{vm_args.dest} is not empty")
        return capture_in_vm(vm_args.scenario, vm_args.dest)
    parser.add_argument("src_sys", type=Path)
    parser.add_argument("src_dev", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--expected", action="store_true", help="also record iproute2's view in expected.json")
    parser.add_argument("--setup", choices=sorted(SCENARIOS), help="build this scenario first (test bed only)")
    args = parser.parse_args(argv)
    dest: Path = args.dest
    if dest.exists() and any(dest.iterdir()):
        parser.error(f"{dest} is not empty")
    if args.setup:
        SCENARIOS[args.setup](args.src_sys)
    before = expected(args.src_sys, args.src_dev) if args.expected else None
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="capture_sysfs-") as tmp:
        capture = Capture(args.src_sys, Path(tmp) / "sys")
        capture.run()
        dev_names = copy_dev(args.src_dev, Path(tmp) / "dev")
        write_archive(Path(tmp), dest / ARCHIVE)
    lines = [
        "# Captured by tools/capture_sysfs.py from a live kernel; do not edit by hand.",
        f"kernel {os.uname().release}",
        *(f"dev {name}" for name in dev_names),
        *(f"unreadable sys/{rel} {code}" for rel, code in sorted(capture.unreadable)),
    ]
    (dest / "CAPTURE.txt").write_text("\n".join(lines) + "\n")
    if before is not None:
        # The tools ran before and after the copy: if they disagree, the state moved while sysfs was
        # copied (a link coming up), and the tree would not match what expected.json says.
        after = expected(args.src_sys, args.src_dev)
        if after != before:
            print(f"capture_sysfs: state changed during the capture:\n{before}\n{after}", file=sys.stderr)
            return 3
        (dest / "expected.json").write_text(json.dumps(after, indent=1, sort_keys=True) + "\n")
    print(f"captured into {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
