"""The agent's one HTTP listener: ``/metrics``, ``/healthz`` and ``/readyz``.

Built on the standard library's ``ThreadingHTTPServer`` (one daemon thread per connection) so a slow
scrape never delays a probe. It is meant to face a cluster network, so it is defensive in the boring
ways: the request line and headers must arrive whole within ``connection_timeout`` seconds and fit
in :data:`MAX_REQUEST_HEAD_BYTES` (an idle or slowloris client loses its thread after that, however
it trickles bytes); only GET and HEAD are served; one request per connection (HTTP/1.0 semantics,
which Prometheus and kubelet handle); at most ``max_parallel_scrapes`` renders of ``/metrics`` run at
once and the rest get 503 at once, as node_exporter's ``--web.max-requests`` does. ``/metrics`` honours
``Accept`` (text 0.0.4 or OpenMetrics, via prometheus_client) and ``Accept-Encoding: gzip``.

What ``/metrics`` answers is an :class:`Exposition`: the node's metrics change once per reconcile cycle,
so they are rendered (and gzipped) once per published state and every scrape until the next cycle
copies those bytes; only a small live part (the process collector) is rendered per scrape. At 2,000
devices a render takes ~170 ms, so rendering per scrape let 50 concurrent scrapers queue for seconds.
"""

from __future__ import annotations

import errno
import gzip
import io
import logging
import selectors
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector, CollectorRegistry

from agent.config import parse_bind_address as config_parse_bind_address
from agent.errors import ConfigError, PublishError

logger = logging.getLogger(__name__)

SETTING = "--metrics-bind-address"
DEFAULT_BIND_ADDRESS = ":9435"
CONNECTION_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_HEAD_BYTES = 8192  # request line + headers; Prometheus and kubelet send a few hundred
MAX_PARALLEL_SCRAPES = 40  # node_exporter's --web.max-requests default
STOP_TIMEOUT_SECONDS = 2.0
ACCEPT_BACKOFF_SECONDS = 0.1
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
TEXT = "text/plain; charset=utf-8"
GZIP_LEVEL = 6
OPENMETRICS_EOF = b"# EOF\n"


def parse_bind_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)`` (see :func:`agent.config.parse_bind_address`), raising
    :class:`ConfigError` naming ``--metrics-bind-address``."""
    try:
        return config_parse_bind_address(text)
    except ValueError as err:
        raise ConfigError(SETTING, str(err)) from None


def _listen_address(host: str, port: int) -> tuple[socket.AddressFamily, str, bool]:
    """(family, host to bind, dual-stack?) for a parsed bind address."""
    if host == "":
        if socket.has_dualstack_ipv6():
            return socket.AF_INET6, "::", True
        return socket.AF_INET, "0.0.0.0", False  # noqa: S104 - ":PORT" asks for every address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ConfigError(SETTING, f"cannot resolve {host!r}: {err.strerror}") from err
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0]), False


def _registry(collector: Collector) -> CollectorRegistry:
    if isinstance(collector, CollectorRegistry):
        return collector
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


@dataclass(frozen=True, slots=True)
class _Rendered:
    """The cached part for one content type, as rendered for one ``version``."""

    version: object
    text: bytes  # OpenMetrics without its "# EOF" line: the live part (or the EOF alone) follows
    gzip_prefix: bytes | None = None  # ``text`` deflated in a gzip member, sync-flushed: not yet closed
    compressor: Any = None  # the zlib stream right after ``gzip_prefix``, copied to finish each answer


class Exposition:
    """The ``/metrics`` body: ``cached`` rendered once per ``version()``, then ``live`` rendered fresh.

    ``version`` returns a token that changes (by identity) whenever ``cached`` may render differently —
    the agent passes its ``state`` callable, whose AgentState the loop replaces once per cycle. The first
    scrape after a change renders; scrapes arriving meanwhile wait for that render instead of starting
    their own. A gzip answer is one standard gzip member: the cached part's deflate stream is kept
    open (sync-flushed, with its compressor state) and each answer copies the state to deflate the live
    part and close the member, so no scrape re-compresses the cached bytes.
    """

    def __init__(
        self,
        *,
        cached: Collector | None = None,
        version: Callable[[], object] | None = None,
        live: Collector | None = None,
    ) -> None:
        if (cached is None) != (version is None):
            raise ValueError("Exposition: cached and version go together")
        self._cached = _registry(cached) if cached is not None else None
        self._version = version
        self._live = _registry(live) if live is not None else None
        self._lock = threading.Lock()
        self._rendered: dict[str, _Rendered] = {}  # by content type
        self.renders = 0  # renders of the cached part (tests and benchmarks read it)

    def render(self, accept: str, accept_encoding: str) -> tuple[bytes, str, bool]:
        """(body, content type, gzipped?) for one scrape's ``Accept`` and ``Accept-Encoding``."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        gz = gzip_accepted(accept_encoding)
        live = encoder(self._live) if self._live is not None else b""
        if openmetrics and self._live is not None:
            if not live.endswith(OPENMETRICS_EOF):
                raise PublishError("OpenMetrics output does not end with # EOF")
        elif openmetrics:
            live = OPENMETRICS_EOF
        if self._cached is None:
            return (gzip.compress(live, compresslevel=GZIP_LEVEL) if gz else live), content_type, gz
        part = self._part(encoder, content_type, openmetrics, gz)
        if not gz:
            return part.text + live, content_type, False
        assert part.gzip_prefix is not None and part.compressor is not None
        stream = part.compressor.copy()
        return part.gzip_prefix + stream.compress(live) + stream.flush(), content_type, True

    def _part(self, encoder: Callable[[CollectorRegistry], bytes], content_type: str, openmetrics: bool,
              gz: bool) -> _Rendered:  # fmt: skip
        assert self._cached is not None and self._version is not None
        version = self._version()
        with self._lock:
            part = self._rendered.get(content_type)
            if part is None or part.version is not version:
                text = encoder(self._cached)
                self.renders += 1
                if openmetrics:
                    if not text.endswith(OPENMETRICS_EOF):
                        raise PublishError("OpenMetrics output does not end with # EOF")
                    text = text[: -len(OPENMETRICS_EOF)]
                part = _Rendered(version=version, text=text)
                self._rendered[content_type] = part
            if gz and part.compressor is None:
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # a gzip member
                prefix = compressor.compress(part.text) + compressor.flush(zlib.Z_SYNC_FLUSH)
                part = _Rendered(version=version, text=part.text, gzip_prefix=prefix, compressor=compressor)
                self._rendered[content_type] = part
            return part


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for in-flight connections (each ends by its timeout)
    # listen() backlog; the kernel caps it at net.core.somaxconn (Go's net.Listen asks for somaxconn).
    # A short queue overflows when a burst of connections (a scrape storm, slowloris) outpaces
    # accept(): the kernel then drops SYNs, and a probe's connection waits for the client's 1 s SYN
    # retransmit, failing kubelet's 1 s probe timeout (tests/reliability/test_load.py).
    request_queue_size = 4096

    def __init__(
        self,
        family: socket.AddressFamily,
        address: tuple[str, int],
        *,
        dual_stack: bool,
        exposition: Exposition,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        connection_timeout: float,
        max_parallel_scrapes: int,
    ) -> None:
        self.address_family = family
        self.dual_stack = dual_stack
        self.exposition = exposition
        self.healthy = healthy
        self.ready = ready
        self.connection_timeout = connection_timeout
        self.scrape_slots = threading.BoundedSemaphore(max_parallel_scrapes)
        self.timeout = 0  # handle_request() only runs once select() has seen a connection waiting
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()  # before super(): a failed bind calls server_close()
        super().__init__(address, _Handler)

    def serve_until_stopped(self) -> None:
        """Accept until :meth:`stop_serving`. Blocks in select() with no timeout: an idle agent
        does not wake up (serve_forever() would poll every ``poll_interval``)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    self.handle_request()

    def stop_serving(self) -> None:
        self._stopping.set()
        self._wake_w.send(b"x")

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as err:
            # Out of file descriptors or memory: the listening socket stays readable, so without a
            # pause the accept loop would spin a CPU until the condition clears (Go's accept backoff).
            if err.errno in _ACCEPT_EXHAUSTED:
                logger.warning("cannot accept a metrics connection: %s; pausing accepts", err.strerror)
                self._stopping.wait(ACCEPT_BACKOFF_SECONDS)
            raise  # handle_request() drops it

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        if self.dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup we neither need nor trust.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError):  # peer went away, timed out mid-response: routine on a network
            logger.debug("connection from %s: %s", client_address, err)
        else:
            logger.error("handling a request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection
    server_version = "rdma-node-agent"  # Server header; no Python version advertised

    def version_string(self) -> str:
        return self.server_version

    @property
    def _srv(self) -> _Server:
        return cast(_Server, self.server)

    def handle(self) -> None:
        self.close_connection = True
        self.command, self.request_version, self.requestline = "", "", ""
        head = self._read_head()
        if head is None:
            return
        self.rfile = io.BytesIO(head)
        self.raw_requestline = self.rfile.readline()
        if not self.parse_request():  # it has sent 400/505 itself
            return
        if self.command in ("GET", "HEAD"):
            self._route()
        else:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])

    def _read_head(self) -> bytes | None:
        """The request line and headers, read within one deadline; None when the client gave up or
        ran out of time (the connection is just closed), or sent too much (431 first)."""
        deadline = time.monotonic() + self._srv.connection_timeout
        buf = bytearray()
        while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
            if len(buf) > MAX_REQUEST_HEAD_BYTES:
                self.connection.settimeout(self._srv.connection_timeout)
                self._send(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request head too large\n")
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.debug("closing %s: no complete request within the timeout", self.client_address)
                return None
            self.connection.settimeout(remaining)
            try:
                chunk = self.connection.recv(4096)
            except TimeoutError:
                logger.debug("closing %s: no complete request within the timeout", self.client_address)
                return None
            if not chunk:
                return None
            buf += chunk
        self.connection.settimeout(self._srv.connection_timeout)  # bounds sendall() of the reply
        return bytes(buf)

    def _route(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._probe(self._srv.healthy, "healthz")
        elif path == "/readyz":
            self._probe(self._srv.ready, "readyz")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz or /readyz\n")

    def _probe(self, check: Callable[[], bool], name: str) -> None:
        try:
            ok = bool(check())
        except Exception:
            logger.exception("the %s check raised", name)
            ok = False
        if ok:
            self._send(HTTPStatus.OK, b"ok\n")
        else:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"{name} failed\n".encode())

    def _metrics(self) -> None:
        slots = self._srv.scrape_slots
        if not slots.acquire(blocking=False):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many concurrent scrapes, retry later\n")
            return
        try:
            body, content_type, gzipped = self._srv.exposition.render(
                self.headers.get("Accept", ""), self.headers.get("Accept-Encoding", "")
            )
        except Exception:
            logger.exception("collecting metrics failed")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"collecting metrics failed, see the agent log\n")
            return
        finally:
            slots.release()
        headers = [("Vary", "Accept, Accept-Encoding")]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        self._send(HTTPStatus.OK, body, content_type=content_type, headers=headers)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        *,
        content_type: str = TEXT,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class MetricsServer:
    """``/metrics`` from ``metrics`` (an :class:`Exposition`, or a collector rendered on every scrape),
    ``/healthz`` from ``healthy()``, ``/readyz`` from ``ready()``.

    ``bind`` is ``--metrics-bind-address`` (validated here, so a bad value fails before anything
    starts). ``healthy``/``ready`` are called on every probe from the connection's thread: they must
    be cheap and thread-safe (read a flag or a timestamp). A probe that raises answers 503.
    """

    def __init__(
        self,
        bind: str,
        metrics: Exposition | Collector,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        connection_timeout: float = CONNECTION_TIMEOUT_SECONDS,
        max_parallel_scrapes: int = MAX_PARALLEL_SCRAPES,
    ) -> None:
        self._host, self._port = parse_bind_address(bind)
        if connection_timeout <= 0:
            raise ConfigError("connection_timeout", f"must be > 0, got {connection_timeout}")
        if max_parallel_scrapes < 1:
            raise ConfigError("max_parallel_scrapes", f"must be >= 1, got {max_parallel_scrapes}")
        self._exposition = metrics if isinstance(metrics, Exposition) else Exposition(live=metrics)
        self._healthy = healthy
        self._ready = ready
        self._connection_timeout = connection_timeout
        self._max_parallel_scrapes = max_parallel_scrapes
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Listen and serve in a daemon thread; returns the bound (host, port)."""
        if self._server is not None:
            raise RuntimeError("MetricsServer already started")
        family, host, dual_stack = _listen_address(self._host, self._port)
        try:
            server = _Server(
                family,
                (host, self._port),
                dual_stack=dual_stack,
                exposition=self._exposition,
                healthy=self._healthy,
                ready=self._ready,
                connection_timeout=self._connection_timeout,
                max_parallel_scrapes=self._max_parallel_scrapes,
            )
        except OSError as err:
            raise PublishError(f"{SETTING}: cannot listen on {_show(host, self._port)}: {err.strerror}") from err
        self._server = server
        self._thread = threading.Thread(target=server.serve_until_stopped, name="metrics-http", daemon=True)
        self._thread.start()
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        logger.info("serving /metrics, /healthz and /readyz on http://%s", _show(bound_host, bound_port))
        return bound_host, bound_port

    def stop(self) -> None:
        """Stop accepting and close the listening socket; in-flight replies finish on their own
        (bounded by the connection timeout). Returns within :data:`STOP_TIMEOUT_SECONDS`."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.stop_serving()
        thread.join(timeout=STOP_TIMEOUT_SECONDS)  # the accept loop exits at once; a handler never runs on it
        server.server_close()


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
