"""procfs readers: watched kernel modules, kernel facts (release, cmdline, btime, OFED version), the command
line's ib_core option as kmod splits it, and counting non-initial network namespaces (fake and real /proc)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from agent.config import HostRoots
from agent.discover import procfs
from agent.model import KernelInfo, ModprobeOption, NetnsMode

FIXTURES = Path(__file__).parent.parent / "fixtures" / "procfs"
REAL_CMDLINE = (FIXTURES / "cmdline").read_text()
INIT_NS, OTHER_NS, NETNS_ADD = 4026531840, 4026532500, 4026532177  # NETNS_ADD: in mountinfo_netns


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- modules -------------------------------------------------------------------------------------------


def test_parse_modules_takes_the_first_field_of_each_line() -> None:
    names = procfs.parse_modules((FIXTURES / "modules").read_text())
    assert len(names) == 16
    assert {"ib_core", "ib_uverbs", "rdma_ucm", "rdma_cm", "mlx5_core", "mlx5_ib", "mlx_compat", "bonding"} <= names
    assert not {"rdma_rxe", "ib_umad", "Live", "(OE)", "0x0000000000000000"} & names
    assert procfs.parse_modules("") == frozenset()


WATCHED_FROM_FIXTURE = {"ib_core", "ib_uverbs", "rdma_ucm", "rdma_cm", "mlx5_core", "mlx5_ib"}


@pytest.mark.parametrize(
    ("modules_file", "sysfs_modules", "loaded"),
    [
        ("modules", [], WATCHED_FROM_FIXTURE),
        # built-in ib_core (has parameters, so /sys/module/ib_core) and a kernel without /proc/modules
        (None, ["ib_core", "rdma_rxe", "kernel"], {"ib_core", "rdma_rxe"}),
        ("modules", ["rdma_rxe"], WATCHED_FROM_FIXTURE | {"rdma_rxe"}),
        (None, [], set()),
    ],
)
def test_read_modules(tmp_path: Path, modules_file: str | None, sysfs_modules: list[str], loaded: set[str]) -> None:
    if modules_file:
        write(tmp_path / "proc/modules", (FIXTURES / modules_file).read_text())
    for name in sysfs_modules:
        (tmp_path / "sys/module" / name / "parameters").mkdir(parents=True)
    modules = procfs.read_modules(HostRoots(root=tmp_path))
    assert [m.name for m in modules] == list(procfs.WATCHED_MODULES)
    assert {m.name for m in modules if m.loaded} == loaded


# --- kernel facts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ((FIXTURES / "stat").read_text(), 1795640572.0),
        ("cpu 1 2 3\nbtime 42\n", 42.0),
        ("cpu 1 2 3\n", None),
        ("btime\nbtime x\n", None),
        ("", None),
    ],
)
def test_parse_btime(text: str, expected: float | None) -> None:
    assert procfs.parse_btime(text) == expected


OFED_S_ONLY = 'if [ "X$1" == "X-s" ]; then echo MLNX_OFED_LINUX-4.9-7.1.0.0:; exit; fi\n'
DOCA = 'if [ "X$1" == "X-s" ]; then echo OFED-internal-24.01-0.3.3:; exit 0; fi\nif [ "X$1" == "X-n" ]; then echo 24.01-0.3.3; exit 0; fi\n'  # noqa: E501


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ((FIXTURES / "ofed_info").read_text(), "5.8-1.0.1.1"),
        (DOCA, "24.01-0.3.3"),
        (OFED_S_ONLY, "4.9-7.1.0.0"),
        ("#!/bin/bash\ncat << EOF\nMLNX_OFED_LINUX-5.4-3.6.8.1:\n\nlibibverbs:\nEOF\n", "5.4-3.6.8.1"),
        ("#!/bin/sh\necho hello\n", None),
        ("", None),
    ],
)
def test_parse_ofed_info(script: str, expected: str | None) -> None:
    assert procfs.parse_ofed_info(script) == expected


@pytest.mark.parametrize(
    ("files", "dirs", "expected"),
    [
        ({"usr/bin/ofed_info": (FIXTURES / "ofed_info").read_text()}, [], "5.8-1.0.1.1"),
        ({"sys/module/mlx5_core/version": "25.10-1.7.1\n"}, ["sys/module/mlx_compat"], "25.10-1.7.1"),
        ({"sys/module/mlx5_core/version": "5.0-0\n"}, [], None),  # old inbox mlx5_core had a version too
        (
            {"usr/bin/ofed_info": "#!/bin/sh\n", "sys/module/mlx5_core/version": "5.8-1.0.1\n"},
            ["sys/module/mlx_compat"],
            "5.8-1.0.1",
        ),
        ({}, [], None),
    ],
)
def test_read_mofed_version(tmp_path: Path, files: dict[str, str], dirs: list[str], expected: str | None) -> None:
    for relative, text in files.items():
        write(tmp_path / relative, text)
    for relative in dirs:
        (tmp_path / relative).mkdir(parents=True)
    assert procfs.read_mofed_version(HostRoots(root=tmp_path)) == expected


def test_read_kernel_from_captured_files(tmp_path: Path) -> None:
    write(tmp_path / "proc/cmdline", REAL_CMDLINE)
    write(tmp_path / "proc/stat", (FIXTURES / "stat").read_text())
    write(tmp_path / "proc/sys/kernel/osrelease", (FIXTURES / "osrelease").read_text())
    write(tmp_path / "usr/bin/ofed_info", (FIXTURES / "ofed_info").read_text())
    kernel = procfs.read_kernel(HostRoots(root=tmp_path))
    assert kernel == KernelInfo(
        release="6.18.44-fc-v669",
        cmdline=REAL_CMDLINE.rstrip("\n"),
        mofed_version="5.8-1.0.1.1",
        boot_time=1795640572.0,
    )
    assert kernel.cmdline is not None and kernel.cmdline.endswith("--auth-required")


def test_read_kernel_with_nothing_there(tmp_path: Path) -> None:
    assert procfs.read_kernel(HostRoots(root=tmp_path)) == KernelInfo()


def test_read_kernel_of_this_machine() -> None:
    kernel = procfs.read_kernel(HostRoots())
    assert kernel.release == os.uname().release
    assert kernel.boot_time is not None and 0 < kernel.boot_time <= time.time()
    assert kernel.cmdline == Path("/proc/cmdline").read_text().rstrip("\n")


# --- the kernel command line ---------------------------------------------------------------------------


def test_kcmdline_module_options_of_a_real_cmdline() -> None:
    # what kmod takes from it: module.option words only; "0.0.0.0:2024" has a second '.', so no.
    assert procfs.kcmdline_module_options(REAL_CMDLINE) == [
        ("random", "trust_cpu=1"),
        ("nvproxy", "enable=1"),
        ("page_reporting", "page_reporting_order=11"),
        ("rcupdate", "rcu_cpu_stall_cputime=1"),
        ("cpuidle_haltpoll", "force=1"),
        ("haltpoll", "guest_halt_poll_ns=0"),
    ]


@pytest.mark.parametrize(
    ("cmdline", "raw", "value"),
    [
        (REAL_CMDLINE, None, None),
        ("quiet ib_core.netns_mode=0", "0", NetnsMode.EXCLUSIVE),
        ("ib-core.netns-mode=N splash", "N", NetnsMode.EXCLUSIVE),
        ("ib_core.netns_mode=0 ib_core.netns_mode=1", "1", NetnsMode.SHARED),  # last one wins
        ("ib_core.netns_mode", "", NetnsMode.SHARED),  # bare bool parameter: Y
        ('"ib_core.netns_mode=0"', "0", NetnsMode.EXCLUSIVE),
        ('ib_core.netns_mode="off"', "off", NetnsMode.EXCLUSIVE),
        ("ib_core.netns_mode=junk", "junk", None),
        ("ib_core.log_level=1 ib_core.netns_mode=y\n", "y", NetnsMode.SHARED),
        (REAL_CMDLINE.rstrip() + " ib_core.netns_mode=0", "0", NetnsMode.EXCLUSIVE),  # kmod ignores '--'
        ("xib_core.netns_mode=0 mlx5_core.netns_mode=0", None, None),
        ("ib_core.x.netns_mode=0 netns_mode=0 ib_core=netns_mode=0", None, None),
        ("", None, None),
    ],
)
def test_parse_cmdline_netns_mode(cmdline: str, raw: str | None, value: NetnsMode | None) -> None:
    expected = None if raw is None else ModprobeOption(source="/proc/cmdline", raw=raw, value=value)
    assert procfs.parse_cmdline_netns_mode(cmdline) == expected


# --- network namespaces --------------------------------------------------------------------------------


def test_parse_nsfs_mounts_of_a_real_mountinfo() -> None:
    assert procfs.parse_nsfs_mounts((FIXTURES / "mountinfo_netns").read_text()) == {NETNS_ADD}


def test_parse_nsfs_mounts_skips_other_namespace_kinds() -> None:
    text = (
        "50 42 0:4 mnt:[4026532999] /run/x rw - nsfs nsfs rw\n"
        "51 42 0:4 net:[17] /run/netns/a rw shared:2 - nsfs nsfs rw\n"
        "52 42 0:4 net:[17] /var/run/netns/a rw shared:2 - nsfs nsfs rw\n"
        "garbage\n"
    )
    assert procfs.parse_nsfs_mounts(text) == {17}


def fake_proc(root: Path, pids: dict[str, int | None], mountinfo: str | None = None) -> HostRoots:
    """A /proc with ``<pid>/ns/net -> net:[inode]`` links (None: a process that vanished)."""
    proc = root / "proc"
    for pid, inode in pids.items():
        (proc / pid).mkdir(parents=True)
        if inode is not None:
            (proc / pid / "ns").mkdir()
            (proc / pid / "ns" / "net").symlink_to(f"net:[{inode}]")  # the target need not exist
    for name in ("self", "sys", "net"):
        (proc / name).mkdir(parents=True, exist_ok=True)
    if mountinfo is not None:
        write(proc / "1" / "mountinfo", mountinfo)
    return HostRoots(root=root)


MOUNTINFO = (FIXTURES / "mountinfo_netns").read_text()


@pytest.mark.parametrize(
    ("pids", "mountinfo", "expected"),
    [
        ({"1": INIT_NS, "2": INIT_NS, "300": INIT_NS}, None, 0),
        ({"1": INIT_NS, "2": INIT_NS}, MOUNTINFO, 1),  # ip netns add, no process inside
        ({"1": INIT_NS, "100": OTHER_NS, "101": OTHER_NS}, None, 1),  # two processes, one namespace
        ({"1": INIT_NS, "100": OTHER_NS, "200": NETNS_ADD}, MOUNTINFO, 2),  # mounted and entered: once
        ({"1": INIT_NS, "100": OTHER_NS, "4242": None}, MOUNTINFO, 2),  # 4242 vanished mid-scan
    ],
)
def test_count_network_namespaces(
    tmp_path: Path, pids: dict[str, int | None], mountinfo: str | None, expected: int
) -> None:
    assert procfs.count_network_namespaces(fake_proc(tmp_path, pids, mountinfo)) == expected


def test_count_falls_back_to_kthreadd_when_pid1_hides_its_links(tmp_path: Path) -> None:
    roots = fake_proc(tmp_path, {"1": None, "2": INIT_NS, "100": OTHER_NS})
    write(tmp_path / "proc/2/comm", "kthreadd\n")
    assert procfs.count_network_namespaces(roots) == 1
    write(tmp_path / "proc/2/comm", "bash\n")  # in a pod's own pid namespace pid 2 is no kernel thread
    assert procfs.count_network_namespaces(roots) is None


def test_count_without_ptrace_uses_own_namespace_and_nsfs_mounts(tmp_path: Path) -> None:
    # In the DaemonSet (hostNetwork, no CAP_SYS_PTRACE) only the agent's own ns link is readable.
    roots = fake_proc(tmp_path, {"1": None, "2": None, "100": None}, MOUNTINFO)
    (tmp_path / "proc/self/ns").mkdir()
    (tmp_path / "proc/self/ns/net").symlink_to(f"net:[{INIT_NS}]")
    assert procfs.count_network_namespaces(roots) == 1  # the pinned netns from mountinfo
    (tmp_path / "proc/self/ns/net").unlink()
    assert procfs.count_network_namespaces(roots) is None


def test_count_without_proc_is_unknown(tmp_path: Path) -> None:
    assert procfs.count_network_namespaces(HostRoots(root=tmp_path)) is None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 to add a netns")
def test_count_on_this_machine_sees_ip_netns_add() -> None:
    roots = HostRoots()
    before = procfs.count_network_namespaces(roots)
    if before is None:
        pytest.skip("this machine's /proc does not show the initial network namespace")
    name = f"rna-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        during = procfs.count_network_namespaces(roots)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    assert during == before + 1
    assert procfs.count_network_namespaces(roots) == before
