"""A hostile or broken host against the agent: FIFOs and device nodes where files belong, files that
never end, a cycle stuck in a read, symlinks pointing out of the host root, host-path settings that
climb out of it, and another tool's reboot request. Nothing may hang the agent, grow it without
bound, make it write outside its host root or remove what it did not write. Each case reproduces a
finding of issue #10; the CLI cases run the agent as a process of its own."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.config import Config, HostRoots
from agent.loop import Agent
from agent.model import AgentState, DesiredMode, NetnsMode
from tests.reliability.harness import FakeKernel, build_host, http_get

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
BOUND = 30.0  # far beyond what any of these takes when the agent defends itself; a hang hits it

# Runs the agent's CLI as `rdma-node-agent` would, then reports its peak RSS on the fd HWM_FD names.
DRIVER = textwrap.dedent(
    """
    import os, sys
    from agent.cli import main
    code = main(sys.argv[1:], env={})
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
    os.write(int(os.environ["HWM_FD"]), hwm.encode())
    sys.exit(code)
    """
)


def run_cli(args: Sequence[str], *, memory_limit: int | None = None) -> tuple[int, str, str, int]:
    """(exit code, stdout, stderr, peak RSS in bytes) of the agent's CLI; fails the test on a hang."""
    hwm_r, hwm_w = os.pipe()

    def limits() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    try:
        result = subprocess.run(
            [sys.executable, "-c", DRIVER, *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=BOUND,
            preexec_fn=limits,
            pass_fds=(hwm_w,),
            env={**os.environ, "PYTHONPATH": str(REPO), "HWM_FD": str(hwm_w)},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"rdma-node-agent {' '.join(args)} hung for {BOUND:.0f}s")
    finally:
        os.close(hwm_w)
    with os.fdopen(hwm_r, "rb") as hwm:
        peak = hwm.read()
    return result.returncode, result.stdout, result.stderr, int(peak or 0) * 1024


def status(root: Path, *extra: str, memory_limit: int | None = None) -> tuple[dict[str, str], int]:
    """``status --json`` of ``root``: {problem code: message} and the peak RSS; exit 0 required."""
    code, out, err, peak = run_cli(
        ["status", "--json", "--no-kubernetes", f"--host-root={root}", *extra], memory_limit=memory_limit
    )
    assert code == 0, err
    return {p["code"] + ":" + (p["subject"] or ""): p["message"] for p in json.loads(out)["problems"]}, peak


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    build_host(root)
    return root


def _char_device(path: Path, major: int, minor: int) -> None:
    """A device node, as on a real host (needs root, which CI has)."""
    try:
        os.mknod(path, 0o666 | 0o020000, os.makedev(major, minor))
    except PermissionError:
        if os.environ.get("CI") == "true":
            pytest.fail("mknod needs root (CI runs as root)")
        pytest.skip("mknod needs root")


# --- finding 3: FIFOs and device nodes never hang a cycle ----------------------------------------


def test_a_fifo_in_modprobe_d_is_a_problem_not_a_hang(host: Path) -> None:
    os.mkfifo(host / "etc/modprobe.d/other.conf")
    problems, _ = status(host)
    message = problems["modprobe_unreadable:/etc/modprobe.d/other.conf"]
    assert "is a FIFO, not a regular file" in message


def test_a_fifo_as_the_managed_file_is_a_problem_not_a_hang(host: Path) -> None:
    os.mkfifo(host / "etc/modprobe.d/ib_core.conf")
    problems, _ = status(host, "--netns-mode=exclusive")
    assert "is a FIFO" in problems["persist_failed:/etc/modprobe.d/ib_core.conf"]
    assert (host / "etc/modprobe.d/ib_core.conf").is_fifo()  # and it is left as it is


def test_a_fifo_as_the_nfd_features_file_fails_the_stage_not_the_agent(host: Path) -> None:
    features = host / "etc/kubernetes/node-feature-discovery/features.d/rdma-node-agent"
    features.parent.mkdir(parents=True)
    os.mkfifo(features)
    code, out, err, _ = run_cli(["run", "--once", "--no-kubernetes", f"--host-root={host}", "--label-publisher=nfd"])
    assert code == 0, err
    document = json.loads(out)
    assert [p["code"] for p in document["problems"] if p["code"] == "nfd_features_failed"] == ["nfd_features_failed"]
    assert features.is_fifo()


# --- finding 4: reads are bounded ---------------------------------------------------------------


def test_a_conf_that_is_dev_zero_is_refused(host: Path) -> None:
    _char_device(host / "dev/zero", 1, 5)
    (host / "etc/modprobe.d/zero.conf").symlink_to("/dev/zero")  # absolute: the host's /dev/zero
    problems, peak = status(host, memory_limit=1 << 30)  # before: 8 GiB of zeros, then a crash
    assert "is a character device" in problems["modprobe_unreadable:/etc/modprobe.d/zero.conf"]
    assert peak < 200 * MIB


def test_a_100_mb_modprobe_file_is_refused_cheaply(host: Path) -> None:
    with (host / "etc/modprobe.d/huge.conf").open("wb") as f:
        f.write(b"# padding\n" * (10 * MIB))
    started = time.monotonic()
    problems, peak = status(host)
    assert "is larger than 1 MiB" in problems["modprobe_unreadable:/etc/modprobe.d/huge.conf"]
    assert peak < 200 * MIB and time.monotonic() - started < 10  # before: 426 MB and 12 s


BLOCKED = textwrap.dedent(
    """
    import os, sys
    import agent.loop
    from agent.cli import main
    r, w = os.pipe()
    def snapshot(*args, **kwargs):
        os.read(r, 1)  # a host read that never returns (the kernel restarts it after a signal)
    agent.loop.take_snapshot = snapshot
    agent.loop.CYCLE_DEADLINE_SECONDS = 1.0
    sys.exit(main(sys.argv[1:], env={}))
    """
)


def test_a_cycle_stuck_in_a_read_fails_healthz_and_sigterm_still_ends_the_agent(host: Path) -> None:
    # Finding 3: health counted only from the first finished cycle, and a SIGTERM was retried away.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            BLOCKED,
            "run",
            "--no-kubernetes",
            f"--host-root={host}",
            "--metrics-bind-address=127.0.0.1:0",
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        port = _serving_port(child)
        deadline = time.monotonic() + 10
        statuses: list[int] = []
        while time.monotonic() < deadline and (not statuses or statuses[-1] != 503):
            statuses.append(http_get(port, "/healthz").status)
            time.sleep(0.2)  # polling a probe, as kubelet does: not a synchronisation
        assert statuses[-1] == 503, statuses
        child.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("the agent outlived SIGTERM by 5 s while a cycle was blocked")
        assert time.monotonic() - sent < 2.0
        assert child.returncode == 0
    finally:
        child.kill()
        child.wait(10)


def _serving_port(child: subprocess.Popen[str]) -> int:
    assert child.stderr is not None
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        ready, _, _ = select.select([child.stderr], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = child.stderr.readline()
        found = re.search(r"serving /metrics.* on (?:http://)?127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
        if not line:
            break
    pytest.fail("the agent never said where it serves")


FAILING = textwrap.dedent(
    """
    import sys
    import agent.loop
    from agent.cli import main
    def snapshot(*args, **kwargs):
        raise RuntimeError("sysfs is not what it should be")
    agent.loop.take_snapshot = snapshot
    sys.exit(main(sys.argv[1:], env={}))
    """
)


@pytest.mark.parametrize("as_json", [False, True])
def test_a_failed_first_discovery_is_reported_not_a_crash(host: Path, as_json: bool) -> None:
    args = ["status", "--no-kubernetes", f"--host-root={host}", *(["--json"] if as_json else [])]
    result = subprocess.run(
        [sys.executable, "-c", FAILING, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=BOUND,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    expected = "discovery failed: RuntimeError: sysfs is not what it should be"
    if as_json:
        problems = json.loads(result.stdout)["problems"]
        assert [(p["code"], p["message"]) for p in problems] == [("discovery_failed", expected)]
    else:
        assert f"{expected} [discovery_failed]" in result.stdout


def _agent(root: Path, desired: DesiredMode, kernel: FakeKernel | None = None, **config: object) -> Agent:
    kernel = kernel or FakeKernel(mode=NetnsMode.SHARED)
    return Agent(
        Config(roots=HostRoots(root=root), netns_mode=desired, kubernetes=False, **config),  # type: ignore[arg-type]
        netlink=kernel.factory,
    )


def _codes(state: AgentState) -> dict[str, str]:
    found = (*(state.enforcement.problems if state.enforcement else ()), *state.problems)
    return {p.code: p.message for p in found}


def test_invalid_utf8_in_the_managed_file_is_a_problem_not_a_traceback(host: Path) -> None:
    managed = host / "etc/modprobe.d/ib_core.conf"
    managed.write_bytes(b"options ib_core netns_mode=1 # \xff\xfe\n")
    state = _agent(host, DesiredMode.EXCLUSIVE).run_once()
    assert "is not UTF-8 text (byte 31)" in _codes(state)["persist_failed"]
    assert managed.read_bytes() == b"options ib_core netns_mode=1 # \xff\xfe\n"


# --- finding 5: writes never leave the host root ---------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the host root: nothing may ever be written here."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


def test_a_symlinked_modprobe_d_is_followed_inside_the_host_root(host: Path, outside: Path) -> None:
    (host / "etc/modprobe.d").rmdir()
    (host / "etc/modprobe.d").symlink_to(outside)  # absolute: on the host, that path is under its /
    state = _agent(host, DesiredMode.EXCLUSIVE).run_once()
    assert list(outside.iterdir()) == []
    inside = host / str(outside).lstrip("/") / "ib_core.conf"
    assert inside.read_text().endswith("options ib_core netns_mode=0\n")
    assert state.enforcement is not None and "persist_failed" not in _codes(state)


def test_a_symlinked_etc_climbing_out_stays_inside(host: Path, outside: Path) -> None:
    (host / "etc").rename(host / "real-etc")
    (host / "etc").symlink_to("../../../../../../../../" + str(outside.relative_to("/")))  # .. stops at the root
    _agent(host, DesiredMode.SHARED, kernel=FakeKernel(mode=NetnsMode.EXCLUSIVE)).run_once()
    assert list(outside.iterdir()) == []
    assert (host / str(outside).lstrip("/") / "modprobe.d/ib_core.conf").is_file()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("modprobe-file", "/../../x.conf"),
        ("nfd-features-file", "/../../x"),
        ("reboot-sentinel", "/../x"),
        ("modprobe-file", "/etc/modprobe.d/../../../x.conf"),
    ],
)
def test_host_path_settings_cannot_climb_out(host: Path, flag: str, value: str) -> None:
    code, _, err, _ = run_cli(["run", "--once", "--no-kubernetes", f"--host-root={host}", f"--{flag}={value}"])
    assert code == 2
    assert err == f"rdma-node-agent: --{flag}: a path cannot contain '..', got {value!r}\n"


def test_a_managed_file_that_is_a_symlink_is_not_written_through(host: Path, outside: Path) -> None:
    secret = outside / "secret"
    secret.write_text("options ib_core netns_mode=1\n# the token is hunter2\n")
    secret.chmod(0o600)
    managed = host / "etc/modprobe.d/ib_core.conf"
    managed.symlink_to(secret)
    state = _agent(host, DesiredMode.EXCLUSIVE).run_once()
    assert "is a symlink" in _codes(state)["persist_failed"]
    assert managed.is_symlink() and secret.read_text().endswith("hunter2\n")


# --- finding 6: only remove what it wrote ---------------------------------------------------------

FOREIGN = b"*** System restart required ***\n"  # what unattended-upgrades writes there


@pytest.mark.parametrize(
    ("desired", "kernel"),
    [(DesiredMode.UNMANAGED, FakeKernel()), (DesiredMode.SHARED, FakeKernel(open_errno=errno.EPROTONOSUPPORT))],
    ids=["unmanaged", "shared-without-netlink"],
)
def test_another_tools_reboot_request_is_left_alone(host: Path, desired: DesiredMode, kernel: FakeKernel) -> None:
    sentinel = host / "var/run/reboot-required"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_bytes(FOREIGN)
    agent = _agent(host, desired, kernel, reboot_sentinel=sentinel)
    for _ in range(3):
        agent.run_once()
    assert sentinel.read_bytes() == FOREIGN


def test_the_agents_own_sentinel_is_written_then_removed(host: Path) -> None:
    sentinel = host / "run/rdma-node-agent/reboot-required"
    kernel = FakeKernel(mode=NetnsMode.SHARED, namespaces=3)  # EBUSY: the switch waits for a reboot
    state = _agent(host, DesiredMode.EXCLUSIVE, kernel, reboot_sentinel=sentinel).run_once()
    assert state.enforcement is not None and state.enforcement.reboot_required
    assert sentinel.read_bytes().startswith(b"# rdma-node-agent: reboot required")
    _agent(host, DesiredMode.UNMANAGED, kernel, reboot_sentinel=sentinel).run_once()  # the mode is let go
    assert not sentinel.exists()


def test_a_foreign_sentinel_is_not_overwritten_when_a_reboot_is_needed(host: Path) -> None:
    sentinel = host / "var/run/reboot-required"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_bytes(FOREIGN)
    kernel = FakeKernel(mode=NetnsMode.SHARED, namespaces=3)
    agent = _agent(host, DesiredMode.EXCLUSIVE, kernel, reboot_sentinel=sentinel)
    state = agent.run_once()
    assert state.enforcement is not None and state.enforcement.reboot_required
    kernel.namespaces = 0  # the runtime switch now succeeds: no reboot needed any more
    agent.memory = type(agent.memory)(reboot_signalled=True)
    agent.run_once()
    assert sentinel.read_bytes() == FOREIGN  # a reboot request that was never ours
