"""A hostile network against the HTTP listener (127.0.0.1, the server in a process of its own as in
production): client-chosen Accept headers cannot grow the render cache, a flood of 3,000 idle
half-sent requests holds neither threads nor memory and never starves /healthz, ``gzip;q=0`` is
honoured, HTTP/0.9 is refused. Each case reproduces a finding of issue #10."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.reliability.harness import http_get

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
DAEMONSET_MEMORY_LIMIT = 192 * MIB  # manifests/base/daemonset.yaml
PROBE_TIMEOUT = 1.0  # kubelet's default timeoutSeconds

SERVER = textwrap.dedent(
    """
    import sys
    from agent.publish.exposition import Exposition
    from agent.publish.http import MetricsServer
    from agent.publish.metrics import RdmaCollector
    from tests.reliability.harness import synthetic_state
    state = synthetic_state(int(sys.argv[1]))
    metrics = Exposition(cached=RdmaCollector(lambda: state, version="test"), version=lambda: state)
    server = MetricsServer("127.0.0.1:0", metrics, healthy=lambda: True, ready=lambda: True)
    print(server.start()[1], flush=True)
    sys.stdin.read()
    server.stop()
    """
)


@dataclass
class Server:
    port: int
    process: psutil.Process

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def peak_rss(self) -> int:
        """VmHWM: the highest RSS the process ever had (Documentation/filesystems/proc.rst)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    devices = getattr(request, "param", 8)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(devices)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        yield Server(port=int(child.stdout.readline()), process=psutil.Process(child.pid))
    finally:
        child.kill()
        child.wait(10)


def _get(port: int, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    with closing(socket.create_connection(("127.0.0.1", port), timeout=30)) as sock:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), fields, body


@pytest.mark.parametrize("server", [200], indirect=True)
def test_distinct_accept_headers_do_not_grow_the_render_cache(server: Server) -> None:
    # Finding 1: the cache was keyed by the negotiated content type, which copied the client's
    # OpenMetrics version=; 300 distinct headers kept 300 renders (62 → 140+ MiB at 2,000 devices).
    for accept in ("", "application/openmetrics-text"):
        for encoding in ("", "gzip"):
            assert _get(server.port, {"Accept": accept, "Accept-Encoding": encoding})[0] == 200
    before = server.rss()
    types = set()
    for n in range(1, 301):
        status, headers, _ = _get(
            server.port, {"Accept": f"application/openmetrics-text; version=1.0.{n}", "Accept-Encoding": "gzip"}
        )
        assert status == 200
        types.add(headers["Content-Type"])
    grown = server.rss() - before
    assert grown <= 4 * MIB, f"RSS grew by {grown / MIB:.1f} MiB over 300 distinct Accept headers"
    assert types == {"application/openmetrics-text; version=1.0.0; charset=utf-8"}  # nothing of the client's


def test_a_flood_of_idle_connections_holds_no_threads_and_never_starves_healthz(server: Server) -> None:
    # Finding 2: one thread per connection, no cap: 3,000 idle half-sent requests → peak RSS 214 MiB,
    # over the DaemonSet's 192 MiB limit.
    baseline_threads = server.process.num_threads()
    probes: list[float] = []
    with ExitStack() as stack:
        for i in range(3000):
            sock = stack.enter_context(closing(socket.create_connection(("127.0.0.1", server.port), timeout=10)))
            with suppress(OSError):  # the server already closed it to make room: that is the defence
                sock.sendall(b"GET /metrics HTTP/1.0\r\n")  # never finished
            if i % 300 == 299:
                started = time.monotonic()
                assert http_get(server.port, "/healthz", timeout=PROBE_TIMEOUT).status == 200
                probes.append(time.monotonic() - started)
        threads = server.process.num_threads()
        peak = server.peak_rss()
    assert len(probes) == 10 and max(probes) < PROBE_TIMEOUT
    assert threads <= baseline_threads + 2, f"{threads} threads with 3,000 idle connections"
    assert peak <= DAEMONSET_MEMORY_LIMIT, f"peak RSS {peak / MIB:.0f} MiB"


def test_gzip_with_q_0_is_refused_and_gets_plain_text(server: Server) -> None:
    status, headers, body = _get(server.port, {"Accept-Encoding": "gzip;q=0, identity"})
    assert (status, headers.get("Content-Encoding")) == (200, None)
    assert body.startswith(b"# HELP ")
    status, headers, _ = _get(server.port, {"Accept-Encoding": "identity, gzip;q=0.5"})
    assert (status, headers.get("Content-Encoding")) == (200, "gzip")


def test_http_0_9_is_refused(server: Server) -> None:
    with closing(socket.create_connection(("127.0.0.1", server.port), timeout=10)) as sock:
        sock.sendall(b"GET /metrics\r\n")  # an HTTP/0.9 request: no version, no headers
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 400 "), reply[:80]
