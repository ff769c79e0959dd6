"""The HTTP side: one handler thread per request, answers and watch streams in the real wire format."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.kube_standin import resources
from tests.kube_standin.routes import Route, route
from tests.kube_standin.statuses import ApiError, default_status, not_found_path, status_object

if TYPE_CHECKING:
    from tests.kube_standin.server import Fault, KubeStandIn

JSON = dict[str, Any]


class DroppedError(Exception):
    """The watch connection is to be cut (a test dropped it, or the peer went away)."""


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: KubeStandIn) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.api = api


@dataclass(frozen=True)
class _Watch:
    route: Route
    selector: Callable[[JSON], bool]
    bookmarks: bool
    deadline: float | None


def _bookmark(kind: str, api_version: str, rv: int) -> JSON:
    return {
        "type": "BOOKMARK",
        "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(rv)}},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-standin"
    sys_version = ""
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # --- plumbing ----------------------------------------------------------------------------------------

    def _send_json(self, code: int, obj: JSON) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-cache, private")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (its read timeout fired during an injected delay)
            self.close_connection = True

    def _chunk(self, obj: JSON) -> None:
        line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.flush()

    def _handle(self, method: str) -> None:
        api = self.server.api
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        where = route(method, split.path, query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        authorization = self.headers.get("Authorization")
        index = api.log_request(method, where, split.path, query, self.headers.get("Content-Type"), raw, authorization)
        fault = api.take_fault(where)
        if fault is not None and fault.delay is not None:
            api.sleep(fault.delay)
        try:
            if api.token is not None and authorization != f"Bearer {api.token}":
                raise ApiError(status_object(401, "Unauthorized"))
            if fault is not None and fault.status is not None:
                verb = where.kind if where.kind != "other" else "get"
                raise ApiError(default_status(fault.status, verb, where.name, where.plural or "nodes", where.namespace))
            if where.kind == "watch":
                self._watch(where, query, fault, lambda status: api.log_status(index, status))
                return
            obj = self._answer(where, query, content_type, raw)
        except ApiError as err:
            api.log_status(index, err.status["code"])
            self._send_json(err.status["code"], err.status)
            return
        code = 201 if where.kind == "create" else 200
        api.log_status(index, code)
        self._send_json(code, obj)

    def _answer(self, where: Route, query: dict[str, str], content_type: str, raw: bytes) -> JSON:
        store = self.server.api.store
        if where.kind == "get":
            return resources.get(store, where)
        if where.kind == "list":
            return resources.list_(store, where, query)
        if where.kind == "patch":
            return resources.patch(store, where, content_type, raw)
        if where.kind == "create":
            return resources.create(store, where, content_type, raw)
        raise not_found_path()

    # --- watch -------------------------------------------------------------------------------------------

    def _watch(self, where: Route, query: Mapping[str, str], fault: Fault | None, log: Callable[[int], None]) -> None:
        api = self.server.api
        selector = resources.selector(dict(query))
        initial, index, error = api.store.watch_from(where.collection, query.get("resourceVersion", ""), selector)
        if fault is not None and fault.expire:
            error = status_object(
                410, f"too old resource version: {query.get('resourceVersion', '')} ({api.resource_version})", "Expired"
            )
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        spec = _Watch(
            route=where,
            selector=selector,
            bookmarks=query.get("allowWatchBookmarks") in ("1", "true"),
            deadline=time.monotonic() + timeout if timeout is not None else None,
        )
        log(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        generations = api.watch_opened()
        try:
            events: Iterable[JSON] = (
                [{"type": "ERROR", "object": error}]
                if error is not None
                else self._events(initial, index, spec, generations)
            )
            for event in events:
                self._chunk(event)
                api.event_sent()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except DroppedError:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            self.close_connection = True
        finally:
            api.watch_closed()

    def _events(
        self, initial: list[JSON], index: int, spec: _Watch, generations: tuple[int, int, int]
    ) -> Iterator[JSON]:
        yield from initial
        while True:
            pending, index, bookmark_at, ended = self._next_batch(index, spec, generations)
            generations = (generations[0], generations[1], bookmark_at)
            yield from pending
            if ended:
                return

    def _next_batch(
        self, index: int, spec: _Watch, generations: tuple[int, int, int]
    ) -> tuple[list[JSON], int, int, bool]:
        """The next events (waiting for some), the history index and bookmark generation reached, and
        whether the watch ends after them."""
        api = self.server.api
        counters = api.counters
        drop_at, end_at, bookmark_at = generations
        kind, api_version = spec.route.object_kind, "events.k8s.io/v1" if spec.route.group else "v1"
        with api.store.cond:
            while True:
                if counters.drop_generation != drop_at:
                    raise DroppedError
                ended = (
                    api.stopping
                    or counters.end_generation != end_at
                    or (spec.deadline is not None and time.monotonic() >= spec.deadline)
                )
                pending, index = api.store.changes_since(index, spec.route.collection, spec.selector)
                if counters.bookmark_generation != bookmark_at:
                    bookmark_at = counters.bookmark_generation
                    if spec.bookmarks:
                        pending.append(_bookmark(kind, api_version, api.store.rv))
                if ended and spec.bookmarks and counters.final_bookmark:
                    pending.append(_bookmark(kind, api_version, api.store.rv))  # as the server does before a timeout
                if pending or ended:
                    return pending, index, bookmark_at, ended
                # Wake now and then to notice a client that went away (the real server's request context is
                # cancelled when the connection closes).
                remaining = 0.05 if spec.deadline is None else min(0.05, max(0.0, spec.deadline - time.monotonic()))
                if not api.store.cond.wait(remaining) and self._peer_closed():
                    raise DroppedError

    def _peer_closed(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
