"""The agent's HTTP listeners: ``/metrics``, ``/healthz`` and ``/readyz`` — transport only.

It faces a network where anyone may connect, so every resource a peer can make it hold is bounded:

* **One thread does all socket I/O** (a ``selectors`` loop): an idle or half-sent connection costs
  a socket and at most :data:`MAX_REQUEST_HEAD_BYTES` of buffer, never a thread.
* **At most** ``max_connections`` **connections are open.** Past the cap a new connection is read
  once: a complete request (probes and scrapes send theirs with the connection) is answered, anything
  else is closed at once — so a flood of idle connections costs an accept, a read and a close each,
  and a probe still gets in.
* **Deadlines, not per-read timeouts:** the request line and headers must arrive whole within
  ``connection_timeout`` seconds however the client trickles them, and an answer that stops moving
  for that long is abandoned.
* **Bounded work:** only GET and HEAD, one request per connection (HTTP/1.0 semantics, which
  Prometheus and kubelet handle), HTTP/0.9 refused, a request head larger than
  :data:`MAX_REQUEST_HEAD_BYTES` refused with 431. At most ``max_parallel_scrapes`` ``/metrics``
  scrapes wait for a render of the node's metrics at once (renders are single-flight, so a hung
  collect piles them up); one more gets 503 at once, as node_exporter's ``--web.max-requests`` does.
  A scrape the cached body answers takes no slot, nor does sending an answer.
  Renders run on a small pool of worker threads; probes are answered on the I/O thread itself, so
  they answer while scrapes are slow.

What ``/metrics`` answers comes from an :class:`~agent.publish.exposition.Exposition` (negotiation
and the render cache). A second listener (``health_bind``) can serve the probes alone, so that the
metrics listener can stay on 127.0.0.1 behind kube-rbac-proxy while kubelet probes the node's port.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

from prometheus_client.registry import Collector

from agent.errors import ConfigError, PublishError
from agent.publish.exposition import Exposition, Representation, negotiate
from agent.publish.httpwire import (
    SETTING,
    BadRequest,
    Request,
    encode_answer,
    head_end,
    listen,
    parse_bind_address,
    parse_request,
    show,
)

logger = logging.getLogger(__name__)

CONNECTION_TIMEOUT_SECONDS: Final = 5.0
MAX_ANSWER_SECONDS: Final = 60.0  # however slowly a client reads, an answer is dropped after this
MAX_REQUEST_HEAD_BYTES: Final = 8192  # request line + headers; Prometheus and kubelet send a few hundred
MAX_CONNECTIONS: Final = 256
MAX_PARALLEL_SCRAPES: Final = 40  # node_exporter's --web.max-requests default
CACHED_WORKERS: Final = 4  # threads for scrapes the cache answers (a live part and a copy each)
STOP_TIMEOUT_SECONDS: Final = 1.0
ACCEPT_BACKOFF_SECONDS: Final = 0.1
_ACCEPTS_PER_WAKEUP: Final = 64
_ACCEPT_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_RECV: Final = 4096
NOT_FOUND: Final = b"not found: try /metrics, /healthz or /readyz\n"
_PROBES: Final = ("/healthz", "/readyz")


# --- connections ---------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Conn:
    sock: socket.socket
    metrics: bool  # accepted on a listener that serves /metrics
    deadline: float
    started: float
    buf: bytearray = field(default_factory=bytearray)
    out: deque[memoryview] = field(default_factory=deque)
    scrape: bool = False  # holds a scrape slot until its render is over


@dataclass(frozen=True, slots=True)
class Limits:
    connection_timeout: float = CONNECTION_TIMEOUT_SECONDS
    max_connections: int = MAX_CONNECTIONS
    max_parallel_scrapes: int = MAX_PARALLEL_SCRAPES


class _Loop:
    """The I/O thread: accepts, reads request heads, answers probes, hands /metrics to the render
    pool and writes every answer. Not thread-safe except :meth:`post` and :meth:`stop`."""

    def __init__(
        self,
        listeners: Sequence[tuple[socket.socket, bool]],
        exposition: Exposition,
        probes: dict[str, Callable[[], bool]],
        limits: Limits,
    ) -> None:
        self._listeners = listeners
        self._exposition = exposition
        self._probes = probes
        self._limits = limits
        self._selector = selectors.DefaultSelector()
        self._reading: dict[int, _Conn] = {}  # by fd, oldest first (their deadlines come in this order)
        self._busy: dict[int, _Conn] = {}  # rendering or writing
        self._scrapes = 0
        # Workers beyond the render slots answer from the cache even while every slot waits on a render.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=limits.max_parallel_scrapes + CACHED_WORKERS, thread_name_prefix="metrics-render"
        )
        self._done: deque[tuple[_Conn, list[bytes]]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._accept_paused_until = 0.0
        self.refused = 0  # connections closed at accept: every slot taken, and no request with them

    # --- any thread -------------------------------------------------------------------------------

    def post(self, conn: _Conn, answer: list[bytes]) -> None:
        self._done.append((conn, answer))
        self._wake()

    def stop(self) -> None:
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake (buffer full: BlockingIOError) or closing
            self._wake_w.send(b"x")

    def open_connections(self) -> int:
        return len(self._reading) + len(self._busy)

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        for sock, metrics in self._listeners:
            self._selector.register(sock, selectors.EVENT_READ, ("listen", metrics))
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        try:
            while not self._stopping:
                for key, events in self._selector.select(self._timeout()):
                    self._dispatch(key, events)
                self._finish_renders()
                self._expire(time.monotonic())
        finally:
            self._close_all()

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        kind, data = key.data
        if kind == "listen":
            self._accept(key.fileobj, data)  # type: ignore[arg-type]
        elif kind == "wake":
            try:
                while self._wake_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        elif events & selectors.EVENT_WRITE:
            self._write(data)
        else:
            self._read(data)

    def _timeout(self) -> float | None:
        deadlines = [c.deadline for c in self._busy.values() if c.out]
        if self._reading:
            deadlines.append(next(iter(self._reading.values())).deadline)
        if self._accept_paused_until:
            deadlines.append(self._accept_paused_until)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _expire(self, now: float) -> None:
        while self._reading:
            conn = next(iter(self._reading.values()))
            if conn.deadline > now:
                break
            logger.debug("closing %s: no complete request within the timeout", _peer(conn))
            self._close(conn)
        for conn in [c for c in self._busy.values() if c.out and c.deadline <= now]:
            logger.debug("closing %s: the answer stopped moving", _peer(conn))
            self._close(conn)
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            for sock, metrics in self._listeners:
                self._selector.register(sock, selectors.EVENT_READ, ("listen", metrics))

    # --- accept and read ----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, metrics: bool) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                sock, _addr = listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in _ACCEPT_EXHAUSTED:
                    self._pause_accepts(err)
                return
            if self.open_connections() >= self._limits.max_connections:
                self._at_capacity(sock, metrics)
                continue
            sock.setblocking(False)
            now = time.monotonic()
            conn = _Conn(sock=sock, metrics=metrics, deadline=now + self._limits.connection_timeout, started=now)
            self._reading[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, ("conn", conn))
            self._read(conn)  # a client that sent its request with the connection is answered now

    def _at_capacity(self, sock: socket.socket, metrics: bool) -> None:
        """Every slot is taken: one read, and a complete request (a probe, a scrape: they send it
        with the connection, and the kernel accepts only once data has arrived) is answered;
        anything else is closed at once. A flood of idle connections thus costs an accept, a read
        and a close each."""
        try:
            data = sock.recv(_RECV, socket.MSG_DONTWAIT)
        except OSError:
            data = b""
        end = head_end(data)
        if end < 0:
            self.refused += 1
            sock.close()
            return
        sock.setblocking(False)
        now = time.monotonic()
        conn = _Conn(
            sock=sock, metrics=metrics, deadline=now + self._limits.connection_timeout, started=now, buf=bytearray(data)
        )
        self._busy[sock.fileno()] = conn
        self._handle(conn, end)

    def _pause_accepts(self, err: OSError) -> None:
        # Out of descriptors or memory: the listening socket stays readable, so without a pause the
        # loop would spin a CPU until the condition clears (Go's accept backoff).
        logger.warning("cannot accept a metrics connection: %s; pausing accepts", err.strerror)
        self._accept_paused_until = time.monotonic() + ACCEPT_BACKOFF_SECONDS
        for sock, _ in self._listeners:
            with contextlib.suppress(KeyError):  # paused already by the other listener's failure
                self._selector.unregister(sock)
        if self._reading:  # free a descriptor: the oldest connection still sending its request
            self._close(next(iter(self._reading.values())))

    def _read(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if not chunk:
            self._close(conn)
            return
        conn.buf += chunk
        end = head_end(conn.buf)
        if end < 0:
            if len(conn.buf) > MAX_REQUEST_HEAD_BYTES:
                too_large = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
                self._respond(conn, encode_answer(too_large, [b"request head too large\n"]))
            elif b"\n" in conn.buf and conn.buf.split(b"\n", 1)[0].rstrip(b"\r").count(b" ") == 1:
                self._respond(conn, encode_answer(HTTPStatus.BAD_REQUEST, [b"HTTP/0.9 is not served\n"]))
            return
        self._handle(conn, end)

    def _handle(self, conn: _Conn, end: int) -> None:
        """A complete request head is in ``conn.buf[:end]``: answer it."""
        try:
            request = parse_request(bytes(conn.buf[:end]))
        except BadRequest as bad:
            self._respond(conn, encode_answer(bad.status, [f"{bad}\n".encode()]))
            return
        self._route(conn, request)

    # --- answers --------------------------------------------------------------------------------------

    def _route(self, conn: _Conn, request: Request) -> None:
        head_only = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            allow = [("Allow", "GET, HEAD")]
            answer = encode_answer(HTTPStatus.METHOD_NOT_ALLOWED, [b"method not allowed\n"], headers=allow)
        elif request.path in _PROBES:
            answer = self._probe(request.path, head_only)
        elif request.path == "/metrics" and conn.metrics:
            self._scrape(conn, request, head_only)
            return
        else:
            answer = encode_answer(HTTPStatus.NOT_FOUND, [NOT_FOUND], head_only=head_only)
        self._respond(conn, answer)

    def _probe(self, path: str, head_only: bool) -> list[bytes]:
        name = path.lstrip("/")
        try:
            ok = bool(self._probes[path]())
        except Exception:
            logger.exception("the %s check raised", name)
            ok = False
        if ok:
            return encode_answer(HTTPStatus.OK, [b"ok\n"], head_only=head_only)
        return encode_answer(HTTPStatus.SERVICE_UNAVAILABLE, [f"{name} failed\n".encode()], head_only=head_only)

    def _scrape(self, conn: _Conn, request: Request, head_only: bool) -> None:
        chosen = negotiate(request.headers.get("accept", ""), request.headers.get("accept-encoding", ""))
        if not self._exposition.fresh(chosen):  # this one may have to wait for (or do) a render
            if self._scrapes >= self._limits.max_parallel_scrapes:
                busy = b"too many concurrent scrapes, retry later\n"
                self._respond(conn, encode_answer(HTTPStatus.SERVICE_UNAVAILABLE, [busy]))
                return
            self._scrapes += 1
            conn.scrape = True
        self._park(conn)
        self._pool.submit(self._render, conn, chosen, head_only)

    def _render(self, conn: _Conn, chosen: Representation, head_only: bool) -> None:
        """On a render thread: the body, or 500 when collecting failed."""
        try:
            parts = self._exposition.parts(chosen)
        except Exception:
            logger.exception("collecting metrics failed")
            self.post(
                conn,
                encode_answer(HTTPStatus.INTERNAL_SERVER_ERROR, [b"collecting metrics failed, see the agent log\n"]),
            )
            return
        headers = [("Vary", "Accept, Accept-Encoding")] + ([("Content-Encoding", "gzip")] if chosen.gzip else [])
        self.post(
            conn,
            encode_answer(HTTPStatus.OK, parts, content_type=chosen.content_type, headers=headers, head_only=head_only),
        )

    def _park(self, conn: _Conn) -> None:
        """Stop reading ``conn``: it waits for its answer."""
        fd = conn.sock.fileno()
        self._reading.pop(fd, None)
        self._busy[fd] = conn
        with contextlib.suppress(KeyError):  # a request answered at capacity was never registered
            self._selector.unregister(conn.sock)

    def _finish_renders(self) -> None:
        while self._done:
            conn, answer = self._done.popleft()
            if conn.scrape:  # the render is over: its slot is free, however slowly the answer is read
                conn.scrape = False
                self._scrapes -= 1
            if conn.sock.fileno() in self._busy:
                self._send_answer(conn, answer)

    def _respond(self, conn: _Conn, answer: list[bytes]) -> None:
        self._park(conn)
        self._send_answer(conn, answer)

    def _send_answer(self, conn: _Conn, answer: list[bytes]) -> None:
        now = time.monotonic()
        conn.out.extend(memoryview(b) for b in answer)
        conn.deadline = min(now + self._limits.connection_timeout, conn.started + MAX_ANSWER_SECONDS)
        self._write(conn)
        if conn.out:
            self._selector.register(conn.sock, selectors.EVENT_WRITE, ("conn", conn))

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.sendmsg(list(conn.out)[:16])
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        now = time.monotonic()
        conn.deadline = min(now + self._limits.connection_timeout, conn.started + MAX_ANSWER_SECONDS)
        while sent and conn.out:
            first = conn.out[0]
            if sent >= len(first):
                sent -= len(first)
                conn.out.popleft()
            else:
                conn.out[0] = first[sent:]
                sent = 0
        if not conn.out:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        self._reading.pop(fd, None)
        self._busy.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()  # (a render still running keeps its slot until it ends: _finish_renders)

    def _close_all(self) -> None:
        for conn in [*self._reading.values(), *self._busy.values()]:
            self._close(conn)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for sock, _ in self._listeners:
            sock.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


def _peer(conn: _Conn) -> str:
    try:
        return str(conn.sock.getpeername())
    except OSError:
        return "a client"


class MetricsServer:
    """``/metrics`` from ``metrics`` (an :class:`Exposition`, or a collector rendered on every scrape),
    ``/healthz`` from ``healthy()``, ``/readyz`` from ``ready()``.

    ``bind`` is ``--metrics-bind-address`` and ``health_bind`` ``--health-bind-address`` (a second
    listener for the probes only; empty: none), validated here so a bad value fails before anything
    starts. ``healthy``/``ready`` are called on every probe from the I/O thread: they must be cheap
    and thread-safe (read a flag or a timestamp). A probe that raises answers 503.
    """

    def __init__(
        self,
        bind: str,
        metrics: Exposition | Collector,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        health_bind: str = "",
        connection_timeout: float = CONNECTION_TIMEOUT_SECONDS,
        max_parallel_scrapes: int = MAX_PARALLEL_SCRAPES,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        parse_bind_address(bind)
        if health_bind:
            parse_bind_address(health_bind, "--health-bind-address")
        if connection_timeout <= 0:
            raise ConfigError("connection_timeout", f"must be > 0, got {connection_timeout}")
        if max_parallel_scrapes < 1:
            raise ConfigError("max_parallel_scrapes", f"must be >= 1, got {max_parallel_scrapes}")
        if max_connections < 1:
            raise ConfigError("max_connections", f"must be >= 1, got {max_connections}")
        self._bind, self._health_bind = bind, health_bind
        self._exposition = metrics if isinstance(metrics, Exposition) else Exposition(live=metrics)
        self._probes = {"/healthz": healthy, "/readyz": ready}
        self._limits = Limits(
            connection_timeout=connection_timeout,
            max_connections=max_connections,
            max_parallel_scrapes=max_parallel_scrapes,
        )
        self._loop: _Loop | None = None
        self._thread: threading.Thread | None = None
        self.health_address: tuple[str, int] | None = None

    @property
    def loop(self) -> _Loop | None:
        """The running I/O loop (tests read its counters)."""
        return self._loop

    def start(self) -> tuple[str, int]:
        """Listen and serve in a daemon thread; returns the metrics listener's bound (host, port)."""
        if self._loop is not None:
            raise RuntimeError("MetricsServer already started")
        metrics = listen(self._bind, SETTING)
        listeners = [(metrics, True)]
        if self._health_bind:
            try:
                health = listen(self._health_bind, "--health-bind-address")
            except PublishError:
                metrics.close()
                raise
            listeners.append((health, False))
            self.health_address = (str(health.getsockname()[0]), int(health.getsockname()[1]))
        self._loop = _Loop(listeners, self._exposition, self._probes, self._limits)
        self._thread = threading.Thread(target=self._loop.run, name="metrics-http", daemon=True)
        self._thread.start()
        host, port = str(metrics.getsockname()[0]), int(metrics.getsockname()[1])
        probes = f"; probes also on http://{show(*self.health_address)}" if self.health_address else ""
        logger.info("serving /metrics, /healthz and /readyz on http://%s%s", show(host, port), probes)
        return host, port

    def stop(self) -> None:
        """Stop accepting, close every connection and the listening sockets. Returns within
        :data:`STOP_TIMEOUT_SECONDS`."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        loop.stop()
        thread.join(timeout=STOP_TIMEOUT_SECONDS)
