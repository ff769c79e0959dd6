"""The HTTP listener (agent/publish/http.py) over real sockets on 127.0.0.1: bind address parsing,
routes, status codes and content types, gzip, probes following their callables, stop(), many
concurrent scrapers, the scrape limit, and idle, trickling or oversized clients."""

from __future__ import annotations

import errno
import gzip
import os
import selectors
import socket
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.errors import ConfigError, PublishError
from agent.model import AgentState
from agent.publish.exposition import Exposition
from agent.publish.http import (
    ACCEPT_BACKOFF_SECONDS,
    MAX_REQUEST_HEAD_BYTES,
    Limits,
    MetricsServer,
    _Loop,
)
from agent.publish.httpwire import parse_bind_address
from agent.publish.metrics import RdmaCollector
from tests.builders import render_metrics

WAIT = 10.0  # upper bound for events that happen at once in a healthy run; never a pacing sleep

# ---------------------------------------------------------------------------------------------------
# parse_bind_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":9435", ("", 9435)),
        ("0.0.0.0:9435", ("0.0.0.0", 9435)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9435", ("::1", 9435)),
        ("[::]:9435", ("::", 9435)),
        ("localhost:65535", ("localhost", 65535)),
        ("node-1.example.com:80", ("node-1.example.com", 80)),
    ],
)
def test_parse_bind_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind_address(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no port"),
        ("9435", "no port"),
        ("localhost", "no port"),
        (":", "port is not a number"),
        (":http", "port is not a number"),
        (":-1", "port is not a number"),
        (": 9435", "port is not a number"),
        (":\u0669\u0664", "port is not a number"),  # Arabic-Indic digits pass str.isdigit()
        (":65536", "out of range"),
        ("::1:9435", "IPv6 addresses must be in brackets"),
        ("[::1]", "port is not a number"),
        ("[127.0.0.1]:80", "not an IPv6 address"),
        ("[::1:80", "IPv6 addresses must be in brackets"),
        ("999.1.1.1:80", "neither an IPv4 address nor a hostname"),
        ("my host:80", "neither an IPv4 address nor a hostname"),
        ("-bad-.example:80", "neither an IPv4 address nor a hostname"),
    ],
)
def test_parse_bind_address_rejects(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        parse_bind_address(text)
    assert info.value.setting == "--metrics-bind-address"
    assert repr(text) in str(info.value)


def test_bad_bind_address_fails_before_start() -> None:
    with pytest.raises(ConfigError, match="--metrics-bind-address"):
        MetricsServer("nonsense", CollectorRegistry(), healthy=lambda: True, ready=lambda: True)


# ---------------------------------------------------------------------------------------------------
# A running server.


class Flags:
    def __init__(self) -> None:
        self.healthy = True
        self.ready = False


@contextmanager
def serving(
    registry: Collector | Exposition,
    flags: Flags | None = None,
    *,
    bind: str = "127.0.0.1:0",
    healthy: Callable[[], bool] | None = None,
    **kw: float,
) -> Iterator[str]:
    f = flags or Flags()
    server = MetricsServer(
        bind,
        registry,
        healthy=healthy or (lambda: f.healthy),
        ready=lambda: f.ready,
        **kw,  # type: ignore[arg-type]
    )
    host, port = server.start()
    try:
        yield f"http://{'127.0.0.1' if host in ('::', '0.0.0.0') else host}:{port}"
    finally:
        server.stop()


STATE = AgentState()


def agent_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RdmaCollector(lambda: STATE, version="1.2.3", python_version="3.11.2"))
    return registry


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310 - http://127.0.0.1
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        with closing(err):
            return err.code, dict(err.headers), err.read()


EXPECTED_METRICS = render_metrics(STATE, "1.2.3", python_version="3.11.2")


@pytest.mark.parametrize(
    ("method", "path", "status", "content_type", "body"),
    [
        ("GET", "/metrics", 200, CONTENT_TYPE_PLAIN_0_0_4, EXPECTED_METRICS),
        ("GET", "/metrics?name[]=x", 200, CONTENT_TYPE_PLAIN_0_0_4, EXPECTED_METRICS),
        ("HEAD", "/metrics", 200, CONTENT_TYPE_PLAIN_0_0_4, b""),
        ("GET", "/healthz", 200, "text/plain; charset=utf-8", b"ok\n"),
        ("GET", "/readyz", 503, "text/plain; charset=utf-8", b"readyz failed\n"),
        ("GET", "/", 404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n"),
        ("GET", "/metrics/", 404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n"),
        ("POST", "/metrics", 405, "text/plain; charset=utf-8", b"method not allowed\n"),
        ("DELETE", "/healthz", 405, "text/plain; charset=utf-8", b"method not allowed\n"),
    ],
)
def test_routes(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    with serving(agent_registry()) as base:
        got_status, headers, got_body = fetch(base + path, method)
    assert (got_status, headers["Content-Type"], got_body) == (status, content_type, body)
    if method == "HEAD":
        assert int(headers["Content-Length"]) == len(EXPECTED_METRICS)
    if status == 405:
        assert headers["Allow"] == "GET, HEAD"
    assert headers["Server"] == "rdma-node-agent"  # no Python version advertised


def test_openmetrics_when_asked() -> None:
    with serving(agent_registry()) as base:
        status, headers, body = fetch(base + "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b'rdma_agent_build_info{python="3.11.2",version="1.2.3"} 1.0' in body


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"), [("gzip", True), ("deflate, gzip;q=0.5", True), ("identity", False), ("", False)]
)
def test_gzip_when_accepted(accept_encoding: str, gzipped: bool) -> None:
    with serving(agent_registry()) as base:
        status, headers, body = fetch(base + "/metrics", headers={"Accept-Encoding": accept_encoding})
    assert status == 200
    assert headers.get("Content-Encoding") == ("gzip" if gzipped else None)
    assert (gzip.decompress(body) if gzipped else body) == EXPECTED_METRICS


def test_probes_follow_their_callables() -> None:
    flags = Flags()
    with serving(agent_registry(), flags) as base:
        seen = []
        for healthy, ready in [(True, False), (False, False), (True, True), (False, True), (True, True)]:
            flags.healthy, flags.ready = healthy, ready
            seen.append((fetch(base + "/healthz")[0], fetch(base + "/readyz")[0]))
    assert seen == [(200, 503), (503, 503), (200, 200), (503, 200), (200, 200)]


def test_a_probe_that_raises_answers_503() -> None:
    def broken() -> bool:
        raise RuntimeError("loop state unavailable")

    with serving(agent_registry(), healthy=broken) as base:
        assert fetch(base + "/healthz")[:3:2] == (503, b"healthz failed\n")
        assert fetch(base + "/metrics")[0] == 200


class Broken:
    def collect(self) -> Iterable[Metric]:
        raise RuntimeError("snapshot corrupt")


def test_a_failing_collector_answers_500_and_keeps_serving() -> None:
    registry = CollectorRegistry()
    registry.register(Broken())
    with serving(registry) as base:
        assert fetch(base + "/metrics")[0] == 500
        assert fetch(base + "/healthz")[0] == 200
        assert fetch(base + "/metrics")[0] == 500  # the scrape slot was released


def test_stop_closes_the_port_and_is_idempotent() -> None:
    server = MetricsServer("127.0.0.1:0", agent_registry(), healthy=lambda: True, ready=lambda: True)
    host, port = server.start()
    assert fetch(f"http://{host}:{port}/healthz")[0] == 200
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=WAIT).close()
    server.stop()


def test_start_twice_is_an_error_and_a_busy_port_is_a_publish_error() -> None:
    first = MetricsServer("127.0.0.1:0", agent_registry(), healthy=lambda: True, ready=lambda: True)
    _, port = first.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            first.start()
        second = MetricsServer(f"127.0.0.1:{port}", agent_registry(), healthy=lambda: True, ready=lambda: True)
        with pytest.raises(PublishError, match=rf"--metrics-bind-address: cannot listen on 127.0.0.1:{port}"):
            second.start()
    finally:
        first.stop()


def test_empty_host_listens_on_every_address() -> None:
    with serving(agent_registry(), bind=":0") as base:
        assert fetch(base + "/healthz")[0] == 200


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    server = MetricsServer("[::1]:0", agent_registry(), healthy=lambda: True, ready=lambda: True)
    try:
        host, port = server.start()
    except PublishError as err:
        pytest.skip(f"no IPv6 loopback on this host: {err}")
    try:
        assert host == "::1"
        assert fetch(f"http://[::1]:{port}/healthz")[0] == 200
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------
# Load and hostile clients.


def test_many_concurrent_scrapers_all_get_complete_bodies() -> None:
    clients, rounds = 32, 5
    start = threading.Barrier(clients)
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def scrape(base: str) -> None:
        start.wait(WAIT)
        for _ in range(rounds):
            status, _, body = fetch(base + "/metrics")
            with lock:
                results.append((status, body))

    with serving(agent_registry()) as base:
        threads = [threading.Thread(target=scrape, args=(base,)) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
    assert len(results) == clients * rounds
    assert all(r == (200, EXPECTED_METRICS) for r in results)


class Gate(Collector):
    """A collector that holds every scrape inside collect() until released."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def collect(self) -> Iterable[Metric]:
        self.entered.release()
        assert self.release.wait(WAIT)
        return [GaugeMetricFamily("rdma_test_gate", "Test gate.", value=1)]


def _scrape_into(results: list[int], base: str) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(fetch(base + "/metrics")[0]))
    thread.start()
    return thread


def test_healthz_answers_while_scrapes_are_stuck_in_collect() -> None:
    gate = Gate()
    registry = CollectorRegistry()
    registry.register(gate)
    results: list[int] = []
    with serving(registry, max_parallel_scrapes=8) as base:
        threads = [_scrape_into(results, base) for _ in range(8)]
        for _ in threads:
            assert gate.entered.acquire(timeout=WAIT)
        assert fetch(base + "/healthz")[:3:2] == (200, b"ok\n")
        assert results == []  # the scrapes were still waiting when the probe was answered
        gate.release.set()
        for t in threads:
            t.join(WAIT)
    assert results == [200] * 8


def test_scrapes_beyond_the_limit_get_503_at_once() -> None:
    gate = Gate()
    registry = CollectorRegistry()
    registry.register(gate)
    results: list[int] = []
    with serving(registry, max_parallel_scrapes=1) as base:
        first = _scrape_into(results, base)
        assert gate.entered.acquire(timeout=WAIT)
        status, _, body = fetch(base + "/metrics")
        assert (status, body) == (503, b"too many concurrent scrapes, retry later\n")
        gate.release.set()
        first.join(WAIT)
        assert fetch(base + "/metrics")[0] == 200
    assert results == [200]


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=WAIT)


@pytest.mark.parametrize("sent", [b"", b"GET /metr", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"])
def test_idle_half_open_connection_does_not_block_probes(sent: bytes) -> None:
    with serving(agent_registry()) as base, closing(_connect(base)) as idle:
        idle.sendall(sent)
        assert fetch(base + "/healthz")[0] == 200
        assert fetch(base + "/metrics")[0] == 200


def _closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_idle_connection_is_closed_after_the_connection_timeout() -> None:
    with serving(agent_registry(), connection_timeout=0.2) as base, closing(_connect(base)) as idle:
        idle.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert _closed_by_server(idle) == b""  # recv() would raise TimeoutError after WAIT if not


def test_trickling_client_is_cut_off_by_the_deadline_not_per_read() -> None:
    # A slowloris client sends a byte more often than the timeout. A per-recv timeout would keep its
    # thread forever; the whole head has one deadline. The trickle is paced by waiting for the server
    # to close (select-style recv timeout), not by sleeping.
    with serving(agent_registry(), connection_timeout=0.3) as base, closing(_connect(base)) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        slow.settimeout(0.05)
        closed = False
        for _ in range(int(WAIT / 0.05)):
            try:
                slow.sendall(b"X")
                closed = slow.recv(1) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            if closed:
                break
        assert closed


def test_oversized_request_head_gets_431() -> None:
    # Exactly one byte too many and no terminator: the server has read everything when it answers,
    # so its close cannot turn into a reset that would hide the reply.
    start = b"GET /metrics HTTP/1.1\r\nX-Pad: "
    head = start + b"a" * (MAX_REQUEST_HEAD_BYTES + 1 - len(start))
    with serving(agent_registry()) as base, closing(_connect(base)) as client:
        client.sendall(head)
        reply = _closed_by_server(client)
    assert reply.startswith(b"HTTP/1.0 431 ")
    assert reply.endswith(b"request head too large\n")


class _ExhaustedSocket:
    def __init__(self, code: int) -> None:
        self.code = code

    def accept(self) -> tuple[socket.socket, object]:
        raise OSError(self.code, os.strerror(self.code))


@pytest.mark.parametrize(("code", "pauses"), [(errno.EMFILE, True), (errno.ENFILE, True), (errno.ECONNABORTED, False)])
def test_accept_pauses_when_out_of_descriptors(code: int, pauses: bool) -> None:
    # With no fd left the listening socket stays readable; without a pause the accept loop would spin.
    listener = socket.socket()
    loop = _Loop([(listener, True)], Exposition(live=agent_registry()), {}, Limits())
    try:
        loop._selector.register(listener, selectors.EVENT_READ, ("listen", True))
        before = time.monotonic()
        loop._accept(_ExhaustedSocket(code), True)  # type: ignore[arg-type]
        paused = loop._accept_paused_until
        registered = listener in {key.fileobj for key in loop._selector.get_map().values()}
    finally:
        loop._close_all()
    if pauses:
        assert before + ACCEPT_BACKOFF_SECONDS <= paused <= time.monotonic() + ACCEPT_BACKOFF_SECONDS
        assert not registered  # accepts resume when the pause is over (_expire)
    else:
        assert (paused, registered) == (0.0, True)


# ---------------------------------------------------------------------------------------------------
# Exposition: the node's part rendered once per state, the live part on every scrape.


class Counting:
    """A collector whose only sample counts how often it was collected."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def collect(self) -> Iterable[Metric]:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(WAIT)
        yield GaugeMetricFamily(self.name, f"{self.name} help", value=self.calls)


OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def test_exposition_renders_the_cached_part_once_per_version() -> None:
    node, live = Counting("node_part"), Counting("live_part")
    version = [object()]
    exposition = Exposition(cached=node, version=lambda: version[0], live=live)
    bodies = [exposition.render("", "")[0] for _ in range(3)]
    assert node.calls == 1 and exposition.renders == 1
    assert live.calls == 3  # the live part is fresh on every scrape
    assert [b"node_part 1.0" in b and f"live_part {i}.0".encode() in b for i, b in enumerate(bodies, 1)] == [True] * 3
    version[0] = object()  # the loop published a new state
    body, content_type, gzipped = exposition.render("", "")
    assert node.calls == 2 and b"node_part 2.0" in body and b"live_part 4.0" in body
    assert (content_type, gzipped) == (CONTENT_TYPE_PLAIN_0_0_4, False)


class Fixed:
    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("live_part", "live part help", value=7)


LIVE = b"# HELP live_part live part help\n# TYPE live_part gauge\nlive_part 7.0\n"


def test_exposition_body_equals_a_fresh_render_in_every_format() -> None:
    exposition = Exposition(cached=agent_registry(), version=lambda: STATE, live=Fixed())
    text, _, _ = exposition.render("", "")
    assert text == EXPECTED_METRICS + LIVE
    om, content_type, _ = exposition.render(OPENMETRICS, "")
    assert content_type.startswith("application/openmetrics-text")
    assert om.count(b"# EOF\n") == 1 and om.endswith(b"live_part 7.0\n# EOF\n")
    assert b'rdma_agent_build_info{python="3.11.2",version="1.2.3"} 1.0\n' in om
    for accept, plain in (("", text), (OPENMETRICS, om)):
        for _ in range(2):  # the first gzip answer builds the stream, the second copies it
            zipped, _, gzipped = exposition.render(accept, "gzip")
            stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
            assert gzipped and stream.decompress(zipped) == plain
            assert stream.eof and stream.unused_data == b""  # exactly one complete gzip member
    assert exposition.renders == 2  # text and OpenMetrics, each once


def test_exposition_without_a_live_part_and_openmetrics_ends_with_one_eof() -> None:
    exposition = Exposition(cached=agent_registry(), version=lambda: STATE)
    om, _, _ = exposition.render(OPENMETRICS, "")
    zipped, _, _ = exposition.render(OPENMETRICS, "gzip")
    assert om.endswith(b"} 1.0\n# EOF\n") and om.count(b"# EOF") == 1
    assert gzip.decompress(zipped) == om
    assert exposition.render("", "")[0] == EXPECTED_METRICS
    assert exposition.renders == 2  # one per content type


def test_concurrent_scrapes_share_one_render() -> None:
    node = Counting("node_part")
    node.release.clear()
    exposition = Exposition(cached=node, version=lambda: STATE)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(exposition.render("", "gzip")[0])) for _ in range(10)]
    for t in threads:
        t.start()
    assert node.entered.wait(WAIT)
    node.release.set()
    for t in threads:
        t.join(WAIT)
    assert node.calls == 1 and exposition.renders == 1
    expected = b"# HELP node_part node_part help\n# TYPE node_part gauge\nnode_part 1.0\n"
    assert {gzip.decompress(r) for r in results} == {expected}


def test_a_failed_render_is_not_cached() -> None:
    class FailsOnce:
        calls = 0

        def collect(self) -> Iterable[Metric]:
            FailsOnce.calls += 1
            if FailsOnce.calls == 1:
                raise RuntimeError("snapshot corrupt")
            yield GaugeMetricFamily("ok_part", "help", value=1)

    with serving(Exposition(cached=FailsOnce(), version=lambda: STATE)) as base:
        assert fetch(base + "/metrics")[0] == 500
        status, _, body = fetch(base + "/metrics", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and gzip.decompress(body).endswith(b"ok_part 1.0\n")


def test_the_server_serves_the_exposition_with_gzip() -> None:
    node = Counting("node_part")
    with serving(Exposition(cached=node, version=lambda: STATE)) as base:
        answers = [fetch(base + "/metrics", headers={"Accept-Encoding": enc}) for enc in ("gzip", "", "gzip")]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert [a[1].get("Content-Encoding") for a in answers] == ["gzip", None, "gzip"]
    assert gzip.decompress(answers[0][2]) == answers[1][2] == gzip.decompress(answers[2][2])
    assert node.calls == 1


class _Big(Collector):
    """A /metrics body of a few MiB: larger than the socket buffers, so a client that reads nothing
    keeps its answer in progress."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("big", "padding", labels=["i"])
        for i in range(100_000):
            family.add_metric([f"{i:032d}"], float(i))
        yield family


def test_a_client_that_does_not_read_holds_no_scrape_slot() -> None:
    registry = CollectorRegistry()
    registry.register(_Big())
    with serving(registry, max_parallel_scrapes=1) as base, closing(_connect(base)) as stalled:
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stalled.recv(16).startswith(b"HTTP/1.0 200")  # answered, and then never read further
        status, _, body = fetch(base + "/metrics")  # the one slot is free again
        assert status == 200 and len(body) > 4_000_000


def test_a_scrape_the_cache_answers_takes_no_slot() -> None:
    """With the one slot held by a scrape waiting on a render (OpenMetrics, not rendered yet), a text
    scrape of the same state is answered from the cache at once instead of getting 503."""
    gate = Gate()
    version = [object()]
    exposition = Exposition(cached=gate, version=lambda: version[0])
    results: list[int] = []
    with serving(exposition, max_parallel_scrapes=1) as base:
        warm = _scrape_into(results, base)  # renders the text format for this state
        assert gate.entered.acquire(timeout=WAIT)
        gate.release.set()
        warm.join(WAIT)
        gate.release.clear()
        asks_openmetrics = {"Accept": OPENMETRICS}
        openmetrics = threading.Thread(
            target=lambda: results.append(fetch(base + "/metrics", headers=asks_openmetrics)[0])
        )
        openmetrics.start()
        assert gate.entered.acquire(timeout=WAIT)  # waiting in its render, holding the slot
        assert fetch(base + "/metrics")[0] == 200  # cached text: no slot needed
        gate.release.set()
        openmetrics.join(WAIT)
    assert results == [200, 200]
