"""The host writer: atomic replace of the managed modprobe.d file under a real SIGKILL at every step,
ENOSPC and read-only directories (real tmpfs mounts when root), no write when nothing changes,
and the runtime SYS_SET with backoff over 1,000 reconciles."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.config import Config, HostRoots
from agent.discover.rdma_netlink import RdmaNetlink
from agent.errors import NetlinkError
from agent.hostfiles import WRITE_STEPS, atomic_write
from agent.model import Action, ActionKind, DesiredMode, KernelInfo, NetnsMode, NodeSnapshot
from agent.reconcile.enforce import Enforcer
from agent.reconcile.plan import EnforcerMemory, PlanInput, managed_file_content, plan
from tests.host import fill_until_enospc

OLD = b"options ib_core netns_mode=1\n" * 200  # big enough that a torn write would show
NEW = managed_file_content(OLD.decode(), NetnsMode.EXCLUSIVE).encode()

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.hostfiles import atomic_write
    def hook(step):
        if step == sys.argv[2]:
            print(step, flush=True)
            sys.stdin.read()  # block until killed
    target = Path(sys.argv[1])
    atomic_write(target.parent, target, Path(sys.argv[3]).read_bytes(), hook=hook)
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("step", WRITE_STEPS)
def test_sigkill_at_each_step_leaves_old_or_new_file(tmp_path: Path, step: str) -> None:
    target = tmp_path / "ib_core.conf"
    target.write_bytes(OLD)
    payload = tmp_path / "payload"
    payload.write_bytes(NEW)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target), step, str(payload)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == step  # the child is now parked right after `step`
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    content = target.read_bytes()
    assert content == (OLD if step in ("temp_written", "temp_fsynced") else NEW)
    # the next write cleans up the temp file a killed writer left behind, and then succeeds
    assert atomic_write(target.parent, target, NEW) is (content != NEW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ib_core.conf", "payload"]


def test_exception_at_each_step_before_rename_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    for step in WRITE_STEPS[:2]:
        target.write_bytes(OLD)

        def boom(name: str, step: str = step) -> None:
            if name == step:
                raise OSError(errno.EIO, "injected")

        with pytest.raises(OSError):
            atomic_write(target.parent, target, NEW, hook=boom)
        assert target.read_bytes() == OLD
        assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_unchanged_content_is_not_written(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert atomic_write(target.parent, target, NEW) is True
    os.utime(target, (1_000_000, 1_000_000))
    assert atomic_write(target.parent, target, NEW) is False
    assert target.stat().st_mtime == 1_000_000


def test_mode_of_existing_file_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(OLD)
    target.chmod(0o600)
    atomic_write(target.parent, target, NEW)
    assert target.stat().st_mode & 0o777 == 0o600


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode:
        pytest.skip("needs root to mount a tmpfs (CI runs as root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _enforcer(directory: Path) -> Enforcer:
    return Enforcer(Config(roots=HostRoots(root=directory), modprobe_file=directory / "ib_core.conf"))


def test_enospc_keeps_old_file_and_reports(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=64k") as d:
        (d / "ib_core.conf").write_bytes(b"options ib_core netns_mode=1\n")
        fill_until_enospc(d / "filler")
        enforcer = _enforcer(d)
        _, problems = enforcer.apply(
            [Action(kind=ActionKind.WRITE_PERSISTED, mode=NetnsMode.EXCLUSIVE)], EnforcerMemory(), 0.0
        )
        assert (d / "ib_core.conf").read_bytes() == b"options ib_core netns_mode=1\n"
        (problem,) = problems
        assert problem.code == "persist_failed" and "No space left on device" in problem.message
        assert "old file is intact" in problem.message
        assert sorted(p.name for p in d.iterdir()) == ["filler", "ib_core.conf"]


def test_read_only_directory_keeps_old_file_and_reports(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=64k") as d:
        (d / "ib_core.conf").write_bytes(b"# mine\n")
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        _, problems = _enforcer(d).apply(
            [Action(kind=ActionKind.WRITE_PERSISTED, mode=NetnsMode.EXCLUSIVE)], EnforcerMemory(), 0.0
        )
        assert (d / "ib_core.conf").read_bytes() == b"# mine\n"
        assert [p.code for p in problems] == ["persist_failed"]
        assert "Read-only file system" in problems[0].message


class FakeKernel:
    """SYS_SET as the kernel answers it: EBUSY while another netns exists and the mode differs."""

    def __init__(self, mode: NetnsMode, namespaces: int) -> None:
        self.mode, self.namespaces, self.sys_sets = mode, namespaces, 0

    def socket(self) -> RdmaNetlink:
        kernel = self

        class Sock:
            def __enter__(self) -> Sock:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def set_netns_mode(self, mode: NetnsMode) -> None:
                kernel.sys_sets += 1
                if mode != kernel.mode and kernel.namespaces:
                    raise NetlinkError("SYS_SET", errno.EBUSY)
                kernel.mode = mode

        return Sock()  # type: ignore[return-value]


def test_thousand_reconciles_one_write_one_line_and_sys_set_once_per_window(tmp_path: Path) -> None:
    kernel = FakeKernel(NetnsMode.SHARED, namespaces=1)
    writes: list[str] = []
    config = Config(
        roots=HostRoots(root=tmp_path),
        modprobe_file=tmp_path / "ib_core.conf",
        netns_mode=DesiredMode.EXCLUSIVE,
        runtime_retry_seconds=600,
    )
    enforcer = Enforcer(
        config, netlink=kernel.socket, write_hook=lambda s: writes.append(s) if s == "renamed" else None
    )
    memory = enforcer.initial_memory()
    for cycle in range(1000):
        now = 1000.0 + cycle * 30  # a 30 s interval: 30,000 s in all → 50 backoff windows
        if cycle == 900:
            kernel.namespaces = 0  # the last pod went away
        snapshot = NodeSnapshot(
            taken_at=now,
            netlink_available=True,
            netns_mode=kernel.mode,
            kernel=KernelInfo(release="6.1.0"),
            network_namespaces=kernel.namespaces,
        )
        text = enforcer.read_managed_file()[0]
        given = PlanInput(
            snapshot=snapshot,
            desired=config.netns_mode,
            managed_file_text=text,
            managed_file_display="/etc/modprobe.d/ib_core.conf",
            memory=memory,
            now=now,
        )
        state = plan(given)
        memory, problems = enforcer.apply(state.plan, memory, now)
        assert problems == []
    assert writes == ["renamed"]
    text = (tmp_path / "ib_core.conf").read_text()
    assert [line for line in text.splitlines() if line.startswith("options")] == ["options ib_core netns_mode=0"]
    # refused once per 600 s window while the netns existed (t = 0, 600, …, 26,400: 45 tries), then the
    # try due at t = 27,000 (cycle 900, netns gone) succeeds: 46 SYS_SETs over 1,000 cycles, not 1,000
    assert kernel.sys_sets == 27_000 // 600 + 1
    assert kernel.mode is NetnsMode.EXCLUSIVE and memory.last_errno is None
