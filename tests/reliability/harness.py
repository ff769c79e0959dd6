"""Test bench for the fault-injection and load tests: a generated host tree (sysfs, procfs, /dev, /etc)
for two ConnectX-5 ports, a fake kernel that answers NETLINK_RDMA with real reply bytes (decoded by the
agent's own decoder) and takes injected errnos, an injected clock, the real Agent with a real
MetricsServer in front of it, and a TCP proxy that can take the API server down and bring it back."""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import selectors
import shutil
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent.cli import metrics_exposition
from agent.config import Config, HostRoots
from agent.discover import rdma_netlink as nl
from agent.errors import NetlinkError
from agent.loop import Agent, Stage
from agent.model import (
    AgentState,
    CharDevice,
    DesiredMode,
    NetnsMode,
    NodeSnapshot,
    PciFunction,
    RdmaDevice,
    RdmaPort,
    StageHealth,
    format_guid,
)
from agent.publish.http import MetricsServer

HEADER = struct.Struct("=IHHII")
NLMSG_ERROR, NLMSG_DONE, NLM_F_MULTI = 2, 3, 2
WAIT = 10.0  # bound on anything that happens at once in a healthy run; never a pacing sleep
INTERVAL = 30.0


# --- the host's trees --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Nic:
    """One ConnectX-5 port: PCI function, netdev, RDMA device, uverbs node."""

    index: int  # RDMA device index (netlink)
    name: str  # mlx5_0
    pci: str  # 0000:3b:00.0
    netdev: str  # ens1f0np0
    ifindex: int
    uverbs: str  # uverbs0
    guid: int

    @property
    def guid_text(self) -> str:
        return format_guid(self.guid)


NICS = (
    Nic(
        index=0,
        name="mlx5_0",
        pci="0000:3b:00.0",
        netdev="ens1f0np0",
        ifindex=4,
        uverbs="uverbs0",
        guid=0x0C42A10300AB12CD,
    ),
    Nic(
        index=1,
        name="mlx5_1",
        pci="0000:3b:00.1",
        netdev="ens1f1np1",
        ifindex=5,
        uverbs="uverbs1",
        guid=0x0C42A10300AB12CE,
    ),
)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def plug(root: Path, nic: Nic) -> None:
    """The sysfs and /dev entries of one NIC, laid out as the kernel does (relative symlinks)."""
    sys = root / "sys"
    pci = sys / "bus/pci/devices" / nic.pci
    for name, value in (
        ("vendor", "0x15b3"),
        ("device", "0x1017"),
        ("subsystem_vendor", "0x15b3"),
        ("subsystem_device", "0x0007"),
        ("class", "0x020000"),
        ("numa_node", "0"),
        ("sriov_totalvfs", "8"),
        ("sriov_numvfs", "0"),
    ):
        _write(pci / name, value + "\n")
    _link(pci / "driver", "../../../bus/pci/drivers/mlx5_core")
    (pci / "net" / nic.netdev).mkdir(parents=True)
    (pci / "infiniband" / nic.name).mkdir(parents=True)
    net = sys / "class/net" / nic.netdev
    _write(net / "ifindex", f"{nic.ifindex}\n")
    _link(net / "device", f"../../../bus/pci/devices/{nic.pci}")
    ib = sys / "class/infiniband" / nic.name
    for name, value in (
        ("node_type", "1: CA"),
        ("node_guid", nic.guid_text),
        ("sys_image_guid", nic.guid_text),
        ("fw_ver", "16.35.2000"),
    ):
        _write(ib / name, value + "\n")
    _link(ib / "device", f"../../../bus/pci/devices/{nic.pci}")
    port = ib / "ports/1"
    for name, value in (
        ("state", "4: ACTIVE"),
        ("phys_state", "5: LinkUp"),
        ("link_layer", "Ethernet"),
        ("rate", "100 Gb/sec (4X EDR)"),
        ("gid_attrs/ndevs/0", nic.netdev),
    ):
        _write(port / name, value + "\n")
    _write(sys / "class/infiniband_verbs" / nic.uverbs / "ibdev", nic.name + "\n")
    _write(root / "dev/infiniband" / nic.uverbs, "")


def unplug(root: Path, nic: Nic) -> None:
    """What removing the function does to sysfs and /dev (the whole device goes at once)."""
    sys = root / "sys"
    for path in (
        sys / "bus/pci/devices" / nic.pci,
        sys / "class/net" / nic.netdev,
        sys / "class/infiniband" / nic.name,
        sys / "class/infiniband_verbs" / nic.uverbs,
    ):
        shutil.rmtree(path, ignore_errors=True)
    (root / "dev/infiniband" / nic.uverbs).unlink(missing_ok=True)


def build_host(root: Path, nics: Sequence[Nic] = NICS) -> HostRoots:
    """A host with ib_core and mlx5 loaded, rdma_cm present, ib_core in shared mode."""
    for nic in nics:
        plug(root, nic)
    _write(root / "sys/class/misc/rdma_cm/dev", "10:58\n")
    _write(root / "dev/infiniband/rdma_cm", "")
    _write(root / "sys/module/ib_core/parameters/netns_mode", "Y\n")
    modules = ("ib_core", "ib_uverbs", "ib_umad", "rdma_ucm", "rdma_cm", "mlx5_core", "mlx5_ib")
    _write(root / "proc/modules", "".join(f"{m} 16384 0 - Live 0xffffffffc0000000\n" for m in modules))
    _write(root / "proc/sys/kernel/osrelease", "6.1.0-56-amd64\n")
    _write(root / "proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-56-amd64 root=/dev/sda1 ro quiet\n")
    _write(root / "proc/stat", "cpu  1 2 3 4\nbtime 1700000000\nprocesses 4242\n")
    (root / "etc/modprobe.d").mkdir(parents=True)
    return HostRoots(root=root)


def tree_digest(path: Path) -> dict[str, bytes | str]:
    """Every file (content) and symlink (target) under ``path``, to show what changed on disk."""
    out: dict[str, bytes | str] = {}
    for entry in sorted(path.rglob("*")):
        key = str(entry.relative_to(path))
        if entry.is_symlink():
            out[key] = f"-> {entry.readlink()}"
        elif entry.is_file():
            out[key] = entry.read_bytes()
    return out


# --- a kernel that answers NETLINK_RDMA ---------------------------------------------------------------


@dataclass
class Fault:
    cmd: int
    errno: int
    how: str  # "reply": the kernel answers with the errno; "oserror": the socket call itself fails
    times: int = 1
    device: int | None = None  # PORT_GET of this device index only


@dataclass
class FakeKernel:
    """RDMA netlink of a host holding ``nics``: real reply bytes for GET/PORT_GET dumps, SYS_GET and
    SYS_SET, with the kernel's rule that switching mode fails with EBUSY while ``namespaces`` > 0."""

    nics: list[Nic] = field(default_factory=lambda: list(NICS))
    mode: NetnsMode = NetnsMode.SHARED
    namespaces: int = 0
    faults: list[Fault] = field(default_factory=list)
    open_errno: int | None = None  # the socket cannot be opened (EPERM under a seccomp profile…)
    sys_sets: list[NetnsMode] = field(default_factory=list)

    def fail(self, cmd: int, code: int, *, how: str = "reply", times: int = 1, device: int | None = None) -> None:
        self.faults.append(Fault(cmd=cmd, errno=code, how=how, times=times, device=device))

    def factory(self) -> nl.RdmaNetlink:
        if self.open_errno is not None:
            raise NetlinkError("open NETLINK_RDMA socket", self.open_errno)
        return nl.RdmaNetlink(exchange=self.exchange)

    def _fault(self, cmd: int, device: int | None) -> Fault | None:
        for fault in self.faults:
            if fault.cmd == cmd and fault.times > 0 and fault.device in (None, device):
                fault.times -= 1
                self.faults = [f for f in self.faults if f.times > 0]
                return fault
        return None

    def exchange(self, cmd: int, attrs: Sequence[tuple[str, int | str]], flags: int) -> bytes:
        given = dict(attrs)
        device = given.get("DEV_INDEX")
        request = nl.encode_request(cmd, attrs, flags=flags)
        dump = flags & nl.FLAGS_DUMP == nl.FLAGS_DUMP
        fault = self._fault(cmd, device if isinstance(device, int) else None)
        if fault is not None and fault.how == "oserror":
            raise OSError(fault.errno, os.strerror(fault.errno))
        if fault is not None:
            return _done(fault.errno) if dump else _error(fault.errno, request)
        return self._answer(cmd, given, request, dump)

    def _answer(self, cmd: int, given: dict[str, int | str], request: bytes, dump: bool) -> bytes:
        if cmd == nl.CMD_GET:
            return b"".join(_message(nl.CMD_GET, _device_attrs(n)) for n in self.nics) + _done(0)
        if cmd == nl.CMD_PORT_GET:
            nic = next((n for n in self.nics if n.index == given.get("DEV_INDEX")), None)
            if nic is None:
                return _done(errno.ENODEV) if dump else _error(errno.ENODEV, request)
            port = _message(nl.CMD_PORT_GET, _port_attrs(nic))
            return port + _done(0) if dump else port + _error(0, request)
        if cmd == nl.CMD_SYS_GET:
            return _message(nl.CMD_SYS_GET, [("NETNS_MODE", self.mode.kernel_value), ("COPY_ON_FORK", 1)]) + _error(
                0, request
            )
        if cmd == nl.CMD_SYS_SET:
            wanted = NetnsMode.from_kernel(int(given["NETNS_MODE"]))
            assert wanted is not None
            if wanted is not self.mode and self.namespaces > 0:
                return _error(errno.EBUSY, request)
            self.sys_sets.append(wanted)
            self.mode = wanted
            return _error(0, request)
        return _error(errno.EOPNOTSUPP, request)


def _device_attrs(nic: Nic) -> list[tuple[str, int | str]]:
    return [
        ("DEV_INDEX", nic.index),
        ("DEV_NAME", nic.name),
        ("PORT_INDEX", 1),
        ("FW_VERSION", "16.35.2000"),
        ("NODE_GUID", nic.guid),
        ("SYS_IMAGE_GUID", nic.guid),
        ("DEV_NODE_TYPE", 1),
        ("DEV_PROTOCOL", "roce"),
    ]


def _port_attrs(nic: Nic) -> list[tuple[str, int | str]]:
    return [
        ("DEV_INDEX", nic.index),
        ("DEV_NAME", nic.name),
        ("PORT_INDEX", 1),
        ("PORT_STATE", 4),
        ("PORT_PHYS_STATE", 5),
        ("NDEV_INDEX", nic.ifindex),
        ("NDEV_NAME", nic.netdev),
    ]


def _message(cmd: int, attrs: list[tuple[str, int | str]]) -> bytes:
    return nl.encode_request(cmd, attrs, flags=NLM_F_MULTI)


def _done(code: int) -> bytes:
    """NLMSG_DONE; a failing dump carries its errno here (the kernel's netlink_dump_done)."""
    return HEADER.pack(20, NLMSG_DONE, NLM_F_MULTI, 1, 0) + struct.pack("=i", -code)


def _error(code: int, request: bytes) -> bytes:
    """NLMSG_ERROR echoing the whole request; code 0 is the ACK of a doit."""
    return HEADER.pack(20 + len(request), NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -code) + request


# --- the agent with its HTTP server, on an injected clock --------------------------------------------


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


def http_get(port: int, path: str, timeout: float = WAIT) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return Reply(response.status, response.read())
    finally:
        conn.close()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Bench:
    """The real Agent, fed by ``kernel`` and ``roots``, behind a real MetricsServer on 127.0.0.1."""

    def __init__(
        self,
        roots: HostRoots,
        kernel: FakeKernel,
        *,
        desired: DesiredMode = DesiredMode.UNMANAGED,
        stages: Callable[[Clock], Sequence[Stage]] = lambda _clock: (),
    ) -> None:
        self.roots, self.kernel, self.clock = roots, kernel, Clock()
        self.config = Config(
            roots=roots, netns_mode=desired, interval_seconds=INTERVAL, runtime_retry_seconds=INTERVAL, kubernetes=False
        )
        self.agent = Agent(
            self.config, netlink=kernel.factory, clock=self.clock, timer=self.clock, stages=stages(self.clock)
        )
        self.server = MetricsServer(
            "127.0.0.1:0", metrics_exposition(self.agent), healthy=self.agent.healthy, ready=self.agent.ready
        )
        _, self.port = self.server.start()

    def close(self) -> None:
        self.server.stop()

    def cycle(self) -> AgentState:
        """One interval passes, then one reconcile."""
        self.clock.now += INTERVAL
        return self.agent.run_once()

    def until(self, converged: Callable[[AgentState], bool], cycles: int = 2) -> int:
        """Run up to ``cycles`` reconciles; the number it took for ``converged`` to hold (0: never)."""
        for n in range(1, cycles + 1):
            if converged(self.cycle()):
                return n
        return 0

    def metrics(self) -> Samples:
        reply = http_get(self.port, "/metrics")
        assert reply.status == 200, reply
        return parse_metrics(reply.body.decode())

    def serving(self) -> Samples:
        """The agent still answers its probes and scrapes; returns the scrape."""
        assert http_get(self.port, "/healthz").status == 200
        return self.metrics()

    @staticmethod
    def stage(samples: Samples, name: str) -> float | None:
        return samples.get(("rdma_agent_stage_success", frozenset({("stage", name)})))

    @staticmethod
    def problems(samples: Samples) -> dict[str, float]:
        return {dict(labels)["code"]: value for (name, labels), value in samples.items() if name == "rdma_problems"}


@contextlib.contextmanager
def bench(roots: HostRoots, kernel: FakeKernel, **kwargs: Any) -> Iterator[Bench]:
    b = Bench(roots, kernel, **kwargs)
    try:
        yield b
    finally:
        b.close()


def synthetic_state(count: int) -> AgentState:
    """A node with ``count`` ConnectX-6 ports (PF, netdev, uverbs each) as the published state."""
    devices, functions, chars = [], [], []
    for i in range(count):
        address = f"0000:{0x3B + i // 8:02x}:00.{i % 8}"
        netdev = f"ens{i}f0np0"
        devices.append(
            RdmaDevice(
                name=f"mlx5_{i}",
                index=i,
                node_type="ca",
                protocol="roce",
                fw_version="28.39.1002",
                node_guid=f"0c42:a103:00ab:{i:04x}",
                sys_image_guid=f"0c42:a103:00ab:{i:04x}",
                port_count=1,
                pci_address=address,
                char_devices=(f"uverbs{i}",),
                ports=(
                    RdmaPort(
                        port=1,
                        state="ACTIVE",
                        state_code=4,
                        physical_state="LINK_UP",
                        physical_state_code=5,
                        netdev=netdev,
                        netdev_index=10 + i,
                        link_layer="Ethernet",
                        rate="200 Gb/sec (4X HDR)",
                    ),
                ),
            )
        )
        functions.append(
            PciFunction(
                address=address,
                vendor="15b3",
                device="101b",
                pci_class="020000",
                driver="mlx5_core",
                numa_node=i % 2,
                netdevs=(netdev,),
                rdma_devices=(f"mlx5_{i}",),
                sriov_totalvfs=8,
                sriov_numvfs=0,
            )
        )
        chars.append(
            CharDevice(
                name=f"uverbs{i}",
                kind="uverbs",
                path=f"/dev/infiniband/uverbs{i}",
                present=True,
                rdma_device=f"mlx5_{i}",
            )
        )
    chars.append(CharDevice(name="rdma_cm", kind="rdma_cm", path="/dev/infiniband/rdma_cm", present=True))
    snapshot = NodeSnapshot(
        taken_at=1_800_000_000.0,
        netlink_available=True,
        netns_mode=NetnsMode.SHARED,
        netns_mode_source="netlink",
        devices=tuple(devices),
        pci_functions=tuple(functions),
        char_devices=tuple(chars),
    )
    stages = tuple(
        StageHealth(stage=s, success=True, last_success=1_800_000_000.0, duration_seconds=0.01)
        for s in ("discover", "enforce")
    )
    return AgentState(snapshot=snapshot, stages=stages)


# --- an API server that can go away ------------------------------------------------------------------


class TcpProxy:
    """127.0.0.1 forwarder to ``target``. ``down()`` closes the listener and cuts every connection
    (clients see ECONNREFUSED/ECONNRESET, as with a dead API server); ``up()`` listens again on the
    same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self._thread: threading.Thread | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener, self._wake_r), daemon=True)
        self._thread.start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._wake_w.send(b"x")
        assert self._thread is not None
        self._thread.join(WAIT)
        listener.close()
        self._wake_r.close()
        self._wake_w.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                # close() alone would wait for the pump thread blocked in recv() on this socket.
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    close = down

    def _accept(self, listener: socket.socket, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            sel.register(wake, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is wake:
                        return
                    client, _ = listener.accept()
                    try:
                        upstream = socket.create_connection(self.target, timeout=WAIT)
                    except OSError:
                        client.close()
                        continue
                    upstream.settimeout(None)
                    with self._lock:
                        self._conns += [client, upstream]
                    for a, b in ((client, upstream), (upstream, client)):
                        threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
