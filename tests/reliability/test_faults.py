"""Fault injection across the whole loop (the real Agent, stages, NodeWatcher/NodeLabelPublisher and
MetricsServer, on an injected clock): the API server refusing (403/409/500), slow, down, its watch
dropped; netlink EPERM/EBUSY/EINTR; sysfs entries vanishing mid-scan (hot-unplug); a full and a
read-only modprobe.d; SIGTERM while the managed file is being written. In every case the agent keeps
answering /healthz and /metrics, leaves no partial file behind, and converges within two intervals
once the fault is gone."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from agent.discover import rdma_netlink as nl
from agent.discover.sysfs import files
from agent.errors import NetlinkError
from agent.hostfiles import TEMP_MARK, WRITE_STEPS
from agent.model import AgentState, DesiredMode, NetnsMode, NodeSnapshot
from agent.publish.kube.backoff import Backoff
from agent.publish.kube.client import load_api_client
from agent.publish.kube.node_labels import NodeLabelPublisher
from agent.publish.kube.watch import NodeWatcher
from agent.publish.labels import desired_labels
from agent.publish.stages import AllocatableStage, LabelsStage
from agent.reconcile.plan import managed_file_content
from tests.host import fill_until_enospc
from tests.kube_standin import KubeStandIn
from tests.reliability.harness import (
    NICS,
    WAIT,
    Bench,
    Clock,
    FakeKernel,
    Nic,
    TcpProxy,
    bench,
    build_host,
    http_get,
    plug,
    tree_digest,
    unplug,
)

REPO = Path(__file__).resolve().parents[2]
NODE = "gpu-node-1"
PREFIX = "rdma.spidernet.io/"
OLD = b"# site settings, kept by the agent\noptions ib_core netns_mode=1\n"
NEW = managed_file_content(OLD.decode(), NetnsMode.EXCLUSIVE).encode()


def health(state: AgentState) -> dict[str, bool]:
    return {s.stage: s.success for s in state.stages}


def codes(state: AgentState) -> set[str]:
    snapshot = state.snapshot
    enforcement = state.enforcement
    return {
        p.code
        for p in (
            *(snapshot.problems if snapshot else ()),
            *(enforcement.problems if enforcement else ()),
            *state.problems,
        )
    }


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if TEMP_MARK in p.name)


# --- Kubernetes: API server faults and a dropped watch ----------------------------------------------


@dataclass
class KubeBench:
    api: KubeStandIn
    proxy: TcpProxy
    watcher: NodeWatcher
    bench: Bench
    etc: Path

    def labels(self) -> dict[str, str]:
        return {k: v for k, v in self.api.labels(NODE).items() if k.startswith(PREFIX)}

    def converged(self, state: AgentState) -> bool:
        assert state.snapshot is not None
        wanted = desired_labels(state.snapshot, state.enforcement, PREFIX)
        stages = health(state)
        return self.labels() == wanted and stages["labels"] and stages["allocatable"]


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeBench]:
    with KubeStandIn() as api:
        api.put_node(
            NODE,
            capacity={"spidernet.io/hca_shared_devices": "8"},
            allocatable={"spidernet.io/hca_shared_devices": "8"},
        )
        proxy = TcpProxy(("127.0.0.1", int(api.url.rsplit(":", 1)[1])))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        data = json.loads(kubeconfig.read_text())
        data["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{proxy.port}"  # through the proxy
        kubeconfig.write_text(json.dumps(data))
        client = load_api_client(kubeconfig)
        backoff = Backoff(initial=0.005, maximum=0.05, rng=random.Random(1))  # noqa: S311 - jitter
        watcher = NodeWatcher(client, NODE, backoff=backoff, watch_timeout=300, request_timeout=(2.0, 2.0))
        publisher = NodeLabelPublisher(client, watcher, prefix=PREFIX, request_timeout=(1.0, 1.0))

        def stages(clock: Clock) -> list[Any]:
            return [
                AllocatableStage(("spidernet.io/", "rdma/"), None, watcher),
                LabelsStage(PREFIX, 60.0, node=publisher, watcher=watcher, timer=clock),
            ]

        watcher.start()
        try:
            assert watcher.wait_synced(WAIT)
            with bench(build_host(tmp_path / "host"), FakeKernel(), stages=stages) as b:
                yield KubeBench(api=api, proxy=proxy, watcher=watcher, bench=b, etc=tmp_path / "host" / "etc")
        finally:
            watcher.stop()
            client.close()
            proxy.close()


Inject = Callable[[KubeBench], object]


def _nothing(_kb: KubeBench) -> None:
    return None


@dataclass(frozen=True)
class KubeFault:
    what: str
    inject: Inject
    recover: Inject = _nothing
    labels_fail: bool = True  # the labels stage surely fails in the faulty cycle
    hangs: bool = False  # the cycle hangs on the API server for a while
    rewatch: bool = False  # the watch had to be re-established

    def __str__(self) -> str:
        return self.what


KUBE_FAULTS = [
    KubeFault("403 Forbidden on the patch", lambda kb: kb.api.fail_next("patch", 403)),
    KubeFault("409 Conflict on the patch", lambda kb: kb.api.fail_next("patch", 409)),
    KubeFault("500 InternalError on the patch", lambda kb: kb.api.fail_next("patch", 500)),
    KubeFault("slow API: the patch outlives its timeout", lambda kb: kb.api.delay_next("patch", 3.0), hangs=True),
    KubeFault("API server down", lambda kb: kb.proxy.down(), lambda kb: kb.proxy.up(), rewatch=True),
    KubeFault("watch dropped mid-stream", lambda kb: kb.api.drop_watches(), labels_fail=False, rewatch=True),
    KubeFault(
        "watch dropped, relists answered 500",
        lambda kb: kb.api.fail_next("list", 500, times=3).drop_watches(),
        labels_fail=False,
        rewatch=True,
    ),
]


@pytest.mark.parametrize("fault", KUBE_FAULTS, ids=str)
def test_api_server_faults(kube: KubeBench, fault: KubeFault) -> None:
    b = kube.bench
    assert b.until(kube.converged) == 1
    before = kube.labels()
    etc = tree_digest(kube.etc)
    b.kernel.mode = NetnsMode.EXCLUSIVE  # someone switched the mode: the netns-mode label must follow
    watches = kube.watcher.stats().watches
    fault.inject(kube)

    # The faulty cycle runs on its own thread; probes and scrapes are answered meanwhile, also while
    # the cycle hangs on a slow API server.
    results: list[AgentState] = []
    cycle = threading.Thread(target=lambda: results.append(b.cycle()))
    cycle.start()
    if fault.hangs:  # probe while the patch is held by the server
        assert kube.api.wait_for(lambda s: any(r.kind == "patch" and r.status is None for r in s.requests), WAIT)
    during = b.serving()
    cycle.join(WAIT)
    assert results, "the cycle did not finish"
    state = results[0]
    assert health(state)["discover"] and health(state)["enforce"]  # a publishing fault stays in publishing
    assert Bench.stage(during, "discover") == 1.0
    if fault.labels_fail:
        assert not health(state)["labels"]
        assert Bench.stage(b.serving(), "labels") == 0.0
        assert kube.labels() == before  # nothing half-published

    fault.recover(kube)
    back = kube.watcher.wait_until(lambda w: w.healthy() and (w.stats().watches > watches or not fault.rewatch), WAIT)
    assert back, kube.watcher.stats()
    assert kube.api.wait_for(lambda s: s.watches_open == 1, WAIT)  # one watch again, none leaked
    assert (kube.watcher.stats().watches > watches) is fault.rewatch
    assert 1 <= b.until(kube.converged) <= 2, (kube.labels(), health(b.agent.state()))
    assert kube.labels()[PREFIX + "netns-mode"] == "exclusive"
    assert Bench.stage(b.serving(), "labels") == 1.0
    patches = kube.api.count("patch")
    b.cycle()
    assert kube.api.count("patch") == patches  # converged means quiet: no request in steady state
    assert tree_digest(kube.etc) == etc  # an observe-only agent wrote nothing on the host


# --- netlink: EPERM, EBUSY, EINTR ---------------------------------------------------------------------

NetlinkFault = Callable[[FakeKernel], object]


def _open_fails(k: FakeKernel) -> None:
    k.open_errno = errno.EPERM


def _open_works(k: FakeKernel) -> None:
    k.open_errno = None


NETLINK_FAULTS: list[tuple[str, DesiredMode, NetlinkFault, NetlinkFault, str]] = [
    # (what, desired mode, inject, recover, the problem code reported meanwhile)
    ("EPERM opening the socket", DesiredMode.UNMANAGED, _open_fails, _open_works, "netlink_error"),
    (
        "EBUSY ending the device dump",
        DesiredMode.UNMANAGED,
        lambda k: k.fail(nl.CMD_GET, errno.EBUSY),
        lambda k: None,
        "netlink_error",
    ),
    (
        "EINTR reading one device's ports",
        DesiredMode.UNMANAGED,
        lambda k: k.fail(nl.CMD_PORT_GET, errno.EINTR, how="oserror", device=1),
        lambda k: None,
        "netlink_error",
    ),
    (
        "EPERM on SYS_GET",
        DesiredMode.UNMANAGED,
        lambda k: k.fail(nl.CMD_SYS_GET, errno.EPERM),
        lambda k: None,
        "netlink_error",
    ),
    (
        "EBUSY on SYS_SET while pods hold namespaces",
        DesiredMode.EXCLUSIVE,
        lambda k: setattr(k, "namespaces", 3),
        lambda k: setattr(k, "namespaces", 0),
        "netns_mode_busy",
    ),
    (
        "EPERM on SYS_SET",
        DesiredMode.EXCLUSIVE,
        lambda k: k.fail(nl.CMD_SYS_SET, errno.EPERM, times=100),
        lambda k: k.faults.clear(),
        "netns_mode_eperm",
    ),
    (
        "EINTR on SYS_SET",
        DesiredMode.EXCLUSIVE,
        lambda k: k.fail(nl.CMD_SYS_SET, errno.EINTR, how="oserror"),
        lambda k: None,
        "netns_mode_set_failed",
    ),
]


@pytest.mark.parametrize(
    ("desired", "inject", "recover", "code"), [f[1:] for f in NETLINK_FAULTS], ids=[f[0] for f in NETLINK_FAULTS]
)
def test_netlink_faults(
    tmp_path: Path, desired: DesiredMode, inject: NetlinkFault, recover: NetlinkFault, code: str
) -> None:
    kernel = FakeKernel()
    roots = build_host(tmp_path)
    managed = tmp_path / "etc/modprobe.d/ib_core.conf"
    with bench(roots, kernel, desired=desired) as b:
        inject(kernel)
        state = b.cycle()
        assert state.snapshot is not None
        assert health(state) == {"discover": True, "enforce": True}  # reported, not failed
        assert code in codes(state)
        assert [d.name for d in state.snapshot.devices] == ["mlx5_0", "mlx5_1"]  # sysfs fills in
        samples = b.serving()
        assert Bench.problems(samples)[code] >= 1
        # On disk: the persisted setting is written whole before the runtime switch is tried, or not at all.
        if desired is DesiredMode.EXCLUSIVE:
            assert managed.read_bytes() == managed_file_content(None, NetnsMode.EXCLUSIVE).encode()
        else:
            assert not managed.exists()
        assert temp_files(managed.parent) == []

        recover(kernel)

        def converged(s: AgentState) -> bool:
            snap, enforcement = s.snapshot, s.enforcement
            assert snap is not None and enforcement is not None
            netlink_whole = snap.netlink_available and all(d.index is not None and d.ports for d in snap.devices)
            return (
                code not in codes(s)
                and netlink_whole
                and snap.netns_mode_source == "netlink"
                and enforcement.compliant
                and not enforcement.reboot_required
            )

        assert 1 <= b.until(converged) <= 2, codes(b.agent.state())
        assert code not in Bench.problems(b.serving())
    if desired is DesiredMode.EXCLUSIVE:
        assert kernel.mode is NetnsMode.EXCLUSIVE and kernel.sys_sets == [NetnsMode.EXCLUSIVE]


# --- sysfs: a device removed while it is being read (hot-unplug) ------------------------------------

UNPLUGS = [
    # (what, the file or link whose first read removes the NIC)
    ("RDMA device while its port rate is read", "sys/class/infiniband/mlx5_1/ports/1/rate"),
    ("RDMA device while its firmware version is read", "sys/class/infiniband/mlx5_1/fw_ver"),
    ("PCI function while its vendor id is read", "sys/bus/pci/devices/0000:3b:00.1/vendor"),
    ("PCI function while its driver link is read", "sys/bus/pci/devices/0000:3b:00.1/driver"),
    ("netdev while its device link is read", "sys/class/net/ens1f1np1/device"),
    ("uverbs node while its owner is read", "sys/class/infiniband_verbs/uverbs1/ibdev"),
]


def _comparable(snapshot: NodeSnapshot | None) -> NodeSnapshot:
    assert snapshot is not None
    return replace(snapshot, taken_at=0.0)


@pytest.mark.parametrize("trigger", [u[1] for u in UNPLUGS], ids=[u[0] for u in UNPLUGS])
def test_hot_unplug_mid_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trigger: str) -> None:
    nic: Nic = NICS[1]
    kernel = FakeKernel()
    with bench(build_host(tmp_path), kernel) as b:
        baseline = b.cycle()
        assert baseline.snapshot is not None and not baseline.snapshot.problems

        # sysfs reads files and links through these two (str paths, os calls).
        real_read_bytes, real_readlink = files.read_bytes, files.readlink
        fired: list[str] = []

        def unplug_on_first(path: str) -> None:
            if path == str(tmp_path / trigger) and not fired:
                fired.append(path)  # the NIC goes away now, after the netlink dump listed it
                unplug(tmp_path, nic)
                kernel.nics.remove(nic)

        def read_bytes(path: str) -> bytes:
            unplug_on_first(path)
            return real_read_bytes(path)

        def readlink(path: str) -> str:
            unplug_on_first(path)
            return real_readlink(path)

        monkeypatch.setattr(files, "read_bytes", read_bytes)
        monkeypatch.setattr(files, "readlink", readlink)
        b.agent.discovery.sysfs.refresh()  # this cycle reads the static facts (fw_ver, vendor, ibdev) too
        state = b.cycle()
        monkeypatch.undo()
        assert fired, f"{trigger} was never read"
        snapshot = state.snapshot
        assert snapshot is not None and health(state)["discover"]
        assert {"sysfs_read_error", "netlink_error"}.isdisjoint(codes(state))  # a vanished device is no error
        assert snapshot.devices[0] == baseline.snapshot.devices[0]  # the other NIC is untouched
        assert snapshot.pci(NICS[0].pci) == baseline.snapshot.pci(NICS[0].pci)
        assert Bench.stage(b.serving(), "discover") == 1.0

        gone = b.cycle()  # the next scan: the NIC is simply not there
        assert gone.snapshot is not None
        assert [d.name for d in gone.snapshot.devices] == ["mlx5_0"]
        assert [f.address for f in gone.snapshot.pci_functions] == [NICS[0].pci]
        assert {"sysfs_read_error", "netlink_error"}.isdisjoint(codes(gone))

        plug(tmp_path, nic)  # plugged back in
        kernel.nics.append(nic)
        assert b.until(lambda s: _comparable(s.snapshot) == _comparable(baseline.snapshot)) == 1
        assert b.serving()[("rdma_devices", frozenset())] == 2.0


def test_an_oddly_named_netdev_does_not_blank_discovery(tmp_path: Path) -> None:
    with bench(build_host(tmp_path), FakeKernel()) as b:
        (tmp_path / "sys/class/net/eth0²").mkdir()  # `ip link set eth0 name eth0²` is valid for the kernel
        state = b.cycle()
        assert health(state)["discover"]
        assert state.snapshot is not None and [d.name for d in state.snapshot.devices] == ["mlx5_0", "mlx5_1"]


# --- the disk: modprobe.d full or read-only -----------------------------------------------------------


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (CI runs as root)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _fill(directory: Path) -> Callable[[], None]:
    filler = directory / "filler"
    fill_until_enospc(filler)
    return lambda: filler.unlink()


def _read_only(directory: Path) -> Callable[[], None]:
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)

    def writable_again() -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(directory)], check=True)

    return writable_again


DISK_FAULTS = [
    ("modprobe.d full", _fill, "No space left on device"),
    ("modprobe.d read-only", _read_only, "Read-only file system"),
]


@pytest.mark.parametrize(("inject", "reason"), [f[1:] for f in DISK_FAULTS], ids=[f[0] for f in DISK_FAULTS])
def test_modprobe_dir_full_or_read_only(
    tmp_path: Path, inject: Callable[[Path], Callable[[], None]], reason: str
) -> None:
    roots = build_host(tmp_path)
    kernel = FakeKernel()
    with tmpfs(tmp_path / "etc/modprobe.d", "size=64k") as directory:
        managed = directory / "ib_core.conf"
        managed.write_bytes(OLD)
        recover = inject(directory)
        with bench(roots, kernel, desired=DesiredMode.EXCLUSIVE) as b:
            state = b.cycle()
            assert state.enforcement is not None and health(state)["enforce"]
            (problem,) = [p for p in state.enforcement.problems if p.code == "persist_failed"]
            assert reason in problem.message and "/etc/modprobe.d/ib_core.conf" in problem.message
            assert managed.read_bytes() == OLD and temp_files(directory) == []  # the old file, whole
            assert kernel.mode is NetnsMode.EXCLUSIVE  # the runtime switch does not wait for the disk
            assert Bench.problems(b.serving())["persist_failed"] == 1

            recover()
            assert b.until(lambda s: managed.read_bytes() == NEW and "persist_failed" not in codes(s)) == 1
            assert "persist_failed" not in Bench.problems(b.serving())
            assert temp_files(directory) == []
            assert state.enforcement.persisted is NetnsMode.SHARED
            assert b.agent.state().enforcement.persisted is NetnsMode.EXCLUSIVE  # type: ignore[union-attr]


# --- SIGTERM while the managed file is written ------------------------------------------------------


class Lines:
    """A child's stream, read on a thread; ``wait_for`` blocks on a condition until a line matches."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # EOF
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return next((m for line in self.lines if (m := regex.search(line))), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None or "" in self.lines, timeout):
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s: {''.join(self.lines)}")
            match = found()
        assert match is not None, f"the child ended without {pattern!r}:\n{''.join(self.lines)}"
        return match


ARGS = [
    "run",
    "--netns-mode",
    "exclusive",
    "--no-kubernetes",
    "--metrics-bind-address",
    "127.0.0.1:0",
    "--interval",
    "1s",
]
SERVING = r"serving /metrics, /healthz and /readyz on http://127\.0\.0\.1:(\d+)"

# The agent's own entry point, with the fake kernel and a write hook that parks the write at one step
# until the test closes the child's stdin.
PARKED_CHILD = textwrap.dedent(
    """
    import functools, sys
    import agent.cli
    from tests.reliability.harness import FakeKernel
    step = sys.argv[1]
    def hook(name):
        if name == step:
            print("parked", name, flush=True)
            sys.stdin.read()
    kernel = FakeKernel(namespaces=2)  # pods exist: the runtime switch is refused, the file is what counts
    agent.cli.Agent = functools.partial(agent.cli.Agent, netlink=kernel.factory, write_hook=hook)
    sys.exit(agent.cli.main(sys.argv[2:]))
    """
)


@contextmanager
def child(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _sigterm(process: subprocess.Popen[str]) -> int:
    """SIGTERM, then the exit status, which must come within 2 s (kubelet's SIGKILL comes later, but
    an agent must not linger)."""
    process.send_signal(signal.SIGTERM)
    if process.stdin is not None:
        process.stdin.close()  # a parked write or start may go on
    try:
        return process.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        pytest.fail("the agent did not exit within 2 s of SIGTERM")


@pytest.mark.parametrize("step", WRITE_STEPS)
def test_sigterm_while_a_write_is_parked_at_each_step(tmp_path: Path, step: str) -> None:
    build_host(tmp_path)
    managed = tmp_path / "etc/modprobe.d/ib_core.conf"
    managed.write_bytes(OLD)
    with child([sys.executable, "-c", PARKED_CHILD, step, *ARGS, "--host-root", str(tmp_path)]) as process:
        assert process.stdout is not None
        err = Lines(process.stderr)
        port = int(err.wait_for(SERVING).group(1))
        out = Lines(process.stdout)
        out.wait_for(f"^parked {step}$")
        assert http_get(port, "/healthz").status == 200  # serving while the loop is inside the write
        assert _sigterm(process) == 0
    assert managed.read_bytes() == NEW  # the write in progress was completed, never abandoned halfway
    assert temp_files(managed.parent) == []


def _no_rdma_netlink() -> None:
    try:
        nl.RdmaNetlink().close()
    except NetlinkError as err:
        if err.errno == errno.EPROTONOSUPPORT:
            return
    pytest.skip("this host has RDMA netlink: the plain `python -m agent run` test would change its netns mode")


MOMENTS = [
    # (what, a stderr line to wait for before SIGTERM, or None: as soon as it serves)
    ("as soon as it serves", None),
    ("right after the write began", r"enforce: write_persisted"),
    ("idle between cycles", r"runtime netns mode change refused"),
]


@pytest.mark.parametrize("wait_for", [m[1] for m in MOMENTS], ids=[m[0] for m in MOMENTS])
def test_sigterm_to_python_m_agent(tmp_path: Path, wait_for: str | None) -> None:
    _no_rdma_netlink()  # the child talks to this machine's kernel: it must have no RDMA at all
    build_host(tmp_path)
    managed = tmp_path / "etc/modprobe.d/ib_core.conf"
    managed.write_bytes(OLD)
    with child([sys.executable, "-m", "agent", *ARGS, "--host-root", str(tmp_path)]) as process:
        err = Lines(process.stderr)
        port = int(err.wait_for(SERVING).group(1))
        if wait_for is not None:
            err.wait_for(wait_for)
        if wait_for is not None and "refused" in wait_for:
            assert http_get(port, "/healthz").status == 200
            assert managed.read_bytes() == NEW
        code = _sigterm(process)
    assert code == 0  # the handlers are installed before anything slow starts: always a clean exit
    assert managed.read_bytes() in (OLD, NEW)  # old or complete, never partial
    assert temp_files(managed.parent) == []


STARTING_CHILD = textwrap.dedent(
    """
    import functools, sys
    import agent.cli
    from agent.publish.http import MetricsServer
    from tests.reliability.harness import FakeKernel
    class ParkedServer(MetricsServer):
        def start(self):
            print("starting", flush=True)
            sys.stdin.read()
            return super().start()
    agent.cli.MetricsServer = ParkedServer
    agent.cli.Agent = functools.partial(agent.cli.Agent, netlink=FakeKernel().factory)
    sys.exit(agent.cli.main(sys.argv[1:]))
    """
)


def test_sigterm_while_the_server_starts_is_a_clean_exit(tmp_path: Path) -> None:
    build_host(tmp_path)
    with child([sys.executable, "-c", STARTING_CHILD, *ARGS, "--host-root", str(tmp_path)]) as process:
        Lines(process.stdout).wait_for("^starting$")
        assert _sigterm(process) == 0
    assert not (tmp_path / "etc/modprobe.d/ib_core.conf").exists()  # no cycle ran
