"""Load on the HTTP listener (127.0.0.1 only, bounded: ≤ 200 sockets, a few seconds each): while
20 scrapers pull /metrics of a 128-device node and up to 150 slowloris clients hold connections
(silent, trickling a request line, or never ending their headers), every /healthz is answered 200
within kubelet's default probe timeout of 1 s, every scrape is complete, and the server itself
closes every slow connection before its client would have finished."""

from __future__ import annotations

import http.client
import os
import selectors
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.harness import parse_metrics

DEVICES = 128
SCRAPERS = 10
SLOW_CLIENTS = 150
PROBE_TIMEOUT = 1.0  # kubelet's default timeoutSeconds for /healthz
CONNECTION_TIMEOUT = 2.0  # the server's deadline for a whole request head (5 s by default; shorter here)
TICK = 0.1  # how often a slowloris client sends its next byte: the attack's own rhythm
BOUND = 30.0  # no load phase may last longer than this
REPO = Path(__file__).resolve().parents[2]


# The agent's HTTP server in a process of its own, as in production: the load generators below must
# not share its interpreter lock (Prometheus and kubelet do not).
SERVER = textwrap.dedent(
    f"""
    import sys
    from agent.publish.exposition import Exposition
    from agent.publish.http import MetricsServer
    from agent.publish.metrics import RdmaCollector
    from tests.reliability.harness import synthetic_state
    state = synthetic_state({DEVICES})
    metrics = Exposition(cached=RdmaCollector(lambda: state, version="test"), version=lambda: state)
    server = MetricsServer("127.0.0.1:0", metrics, healthy=lambda: True, ready=lambda: True,
                           connection_timeout={CONNECTION_TIMEOUT})
    print(server.start()[1], flush=True)
    sys.stdin.read()
    server.stop()
    """
)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


# --- the clients ------------------------------------------------------------------------------------


@dataclass
class Slowloris:
    """``count`` connections that send ``opening`` and then one byte of ``trickle`` per tick, forever;
    records which ones the server closed, and when."""

    port: int
    count: int
    opening: bytes
    trickle: bytes
    closed_by_server: dict[int, float] = field(default_factory=dict)
    replies: int = 0  # bytes the server sent back: it must never answer a request head it never got

    def run(self, stop: threading.Event) -> None:
        start = time.monotonic()
        socks = [socket.create_connection(("127.0.0.1", self.port), timeout=5) for _ in range(self.count)]
        with selectors.DefaultSelector() as sel:
            for n, sock in enumerate(socks):
                if self.opening:
                    sock.sendall(self.opening)
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, n)
            sent = 0
            while sel.get_map() and not stop.is_set() and time.monotonic() - start < BOUND:
                for key, _ in sel.select(TICK):  # the server's answer or close, or the next tick
                    conn = key.fileobj
                    assert isinstance(conn, socket.socket)
                    try:
                        data = conn.recv(4096)
                    except OSError:
                        data = b""
                    if data:
                        self.replies += 1
                    else:  # closed by the server
                        self.closed_by_server[key.data] = time.monotonic() - start
                        sel.unregister(conn)
                if self.trickle:
                    byte = self.trickle[sent % len(self.trickle) : sent % len(self.trickle) + 1]
                    sent += 1
                    for key in list(sel.get_map().values()):
                        with suppress(OSError):  # closed by the server; the select above reports it
                            key.fileobj.send(byte)  # type: ignore[union-attr]
        for sock in socks:
            sock.close()


def get(port: int, path: str, timeout: float) -> tuple[int, bytes, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, body, time.monotonic() - started
    finally:
        conn.close()


SLOW_KINDS = [
    # (what, first bytes, then one byte per tick)
    ("silent connections", b"", b""),
    ("a request line trickled byte by byte", b"G", b"ET /metrics HTTP/1.1\r\nHost: node\r\n" * 4),
    ("headers that never end", b"GET /healthz HTTP/1.1\r\n", b"X-Padding: slow\r\n"),
]


@pytest.mark.parametrize(("opening", "trickle"), [k[1:] for k in SLOW_KINDS], ids=[k[0] for k in SLOW_KINDS])
def test_healthz_answers_within_probe_timeout_under_scrapes_and_slowloris(
    server: int, opening: bytes, trickle: bytes
) -> None:
    stop = threading.Event()
    slow = Slowloris(server, SLOW_CLIENTS, opening, trickle)
    attacker = threading.Thread(target=slow.run, args=(stop,))
    attacker.start()

    scrapes: list[tuple[int, bytes]] = []
    scrape_errors: list[BaseException] = []
    lock = threading.Lock()

    def scraper() -> None:
        while not stop.is_set():
            try:
                status, body, _ = get(server, "/metrics", timeout=10.0)
            except Exception as err:  # every failure is a finding
                with lock:
                    scrape_errors.append(err)
                return
            with lock:
                scrapes.append((status, body))

    scrapers = [threading.Thread(target=scraper) for _ in range(SCRAPERS)]
    for t in scrapers:
        t.start()

    probes: list[tuple[int, float]] = []
    probe_errors: list[BaseException] = []
    try:
        # kubelet's view: probe after probe for as long as the slow clients hold their connections.
        while attacker.is_alive():
            try:
                status, _, took = get(server, "/healthz", timeout=PROBE_TIMEOUT)
            except OSError as err:  # a timeout is a failed probe
                probe_errors.append(err)
                continue
            probes.append((status, took))
    finally:
        stop.set()
        attacker.join(BOUND)
        for t in scrapers:
            t.join(BOUND)

    assert not probe_errors, probe_errors[:3]
    assert len(probes) >= 5 and all(status == 200 for status, _ in probes)
    slowest = max(took for _, took in probes)
    assert slowest < PROBE_TIMEOUT, f"slowest /healthz took {slowest:.3f}s"

    assert not scrape_errors, scrape_errors[:3]
    assert len(scrapes) >= SCRAPERS
    first = scrapes[0][1].decode()
    assert parse_metrics(first)[("rdma_devices", frozenset())] == DEVICES
    for status, body in scrapes:  # every scrape complete (or turned away at the parallel limit, at once)
        assert (status, body == scrapes[0][1]) in ((200, True), (503, False))

    # The server, not the client, ended every slow connection — each before the client was done.
    assert len(slow.closed_by_server) == SLOW_CLIENTS
    assert max(slow.closed_by_server.values()) < BOUND
    assert slow.replies == 0
