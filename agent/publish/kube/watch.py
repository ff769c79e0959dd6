"""The agent's view of one named object: one LIST, then one WATCH kept open, in a background thread.

:class:`ObjectWatcher` does LIST (field selector ``metadata.name=<name>``) then WATCH from the list's
resourceVersion, keeping an immutable parsed view of the object current. No polling: a watch the server
ends after ``timeoutSeconds`` is resumed from the last resourceVersion without a list; 410 Gone relists at
once; any other failure backs off (exponential, jittered) and relists. :class:`NodeWatcher` watches the
agent's own Node (:class:`ObservedNode`); :mod:`agent.publish.kube.configmap` one ConfigMap.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Self, TypeVar, cast

from kubernetes.watch import Watch

from agent.publish.kube.api import REQUEST_TIMEOUT, NodeApi, RequestTimeout, read_json
from agent.publish.kube.backoff import Backoff
from agent.publish.kube.failures import TRANSPORT_ERRORS, ApiFailure, describe_failure

# One logger for the whole package, so that log lines keep naming agent.publish.kube.
logger = logging.getLogger(__package__)

# client-go's reflector asks for a random watch timeout in [5m, 10m) so watches of many nodes spread out.
WATCH_TIMEOUT_RANGE: tuple[int, int] = (300, 600)
# A watch connection silent this much longer than its timeoutSeconds is dead (the server would have ended it).
WATCH_READ_MARGIN = 30.0

_EMPTY: Mapping[str, str] = MappingProxyType({})
_NO_CONDITIONS: Mapping[str, Mapping[str, str]] = MappingProxyType({})

# The client's Watch is untyped.
_Watch = cast(Any, Watch)


# --- what we know about the Node ---------------------------------------------------------------------


def frozen_strings(value: Any) -> Mapping[str, str]:
    """A read-only ``str`` → ``str`` copy of an object's map (labels, data, …); empty for anything else."""
    if not isinstance(value, Mapping) or not value:
        return _EMPTY
    return MappingProxyType({str(k): str(v) for k, v in sorted(value.items())})


def _conditions(value: Any) -> Mapping[str, Mapping[str, str]]:
    if not isinstance(value, list) or not value:
        return _NO_CONDITIONS
    out = {
        str(c["type"]): frozen_strings({k: v for k, v in c.items() if v is not None})
        for c in value
        if isinstance(c, Mapping) and c.get("type")
    }
    return MappingProxyType(out)


@dataclass(frozen=True, kw_only=True, slots=True)
class ObservedNode:
    """The parts of our Node the agent reads, as last seen (read-only mappings)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    capacity: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # quantities as written ("8", "1k")
    allocatable: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    resource_version: str = ""
    # status.conditions by type, each as written ({"status": "True", "reason": …, "lastHeartbeatTime": …}).
    conditions: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: _NO_CONDITIONS)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ObservedNode:
        """From a Node as JSON (GET/LIST item/WATCH object/PATCH response)."""
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        return cls(
            name=str(meta.get("name", "")),
            labels=frozen_strings(meta.get("labels")),
            annotations=frozen_strings(meta.get("annotations")),
            capacity=frozen_strings(status.get("capacity")),
            allocatable=frozen_strings(status.get("allocatable")),
            resource_version=str(meta.get("resourceVersion", "")),
            conditions=_conditions(status.get("conditions")),
        )


def compare_resource_versions(a: str, b: str) -> int | None:
    """-1/0/1 like apimachinery ``CompareResourceVersion`` (KEP-5504, GA in 1.35), or None when either
    is not a positive decimal without leading zeros — then only equality means anything."""

    def valid(rv: str) -> bool:
        return rv.isascii() and rv.isdigit() and not rv.startswith("0")

    if not (valid(a) and valid(b)):
        return None
    key_a, key_b = (len(a), a), (len(b), b)
    return (key_a > key_b) - (key_a < key_b)


# --- the watch ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class WatcherStats:
    """Counters since start (monotonic), for metrics, logs and tests."""

    lists: int = 0  # LIST requests sent
    watches: int = 0  # WATCH requests sent
    events: int = 0  # watch events received, bookmarks included
    expired: int = 0  # 410 Gone answers (each followed by a relist)
    failures: int = 0  # failures followed by a backoff
    last_error: str | None = None


T = TypeVar("T")


class ObjectWatcher(Generic[T]):
    """One LIST+WATCH of one named object in a background thread; ``observed()`` is always the latest
    view. Subclasses say what to list (:meth:`_list_call`) and how to read an object (:meth:`_parse`).

    ``wait`` (default: an interruptible wait on the stop event, so ``stop()`` is prompt) sleeps the
    backoff delays and returns True when the watcher is being stopped; tests inject their own."""

    kind = "object"  # for logs and the thread's name

    def __init__(
        self,
        api_client: Any,
        name: str,
        *,
        backoff: Backoff | None = None,
        watch_timeout: int | None = None,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
        rng: random.Random | None = None,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.name = name
        self._core = NodeApi(api_client)
        self._selector = f"metadata.name={name}"
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._backoff = backoff or Backoff(rng=self._rng)
        self._watch_timeout = watch_timeout
        self._request_timeout = RequestTimeout(*request_timeout)
        self._stopping = threading.Event()
        self._wait = wait or self._stopping.wait
        self._cond = threading.Condition(threading.RLock())
        self._observed: T | None = None
        self._synced = False
        self._healthy = False
        self._failing = False  # the last request failed and none has succeeded since
        self._stats = WatcherStats()
        self._response: Any = None  # the open watch response, for stop() to cut
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-watch-{name}", daemon=True)

    # --- what to watch (subclasses) -------------------------------------------------------------------

    def _list_call(self, **kwargs: Any) -> Any:
        """The list request (a watch when ``Watch.stream`` adds ``watch=True``)."""
        raise NotImplementedError

    def _parse(self, obj: Mapping[str, Any]) -> T:
        raise NotImplementedError

    # --- read side (any thread) ---------------------------------------------------------------------

    def observed(self) -> T | None:
        """The object as last listed or watched; None before the first list or while it does not exist."""
        return self._observed

    def synced(self) -> bool:
        """The first LIST has succeeded (the object may not exist: then ``observed()`` is None)."""
        return self._synced

    def healthy(self) -> bool:
        """The last list succeeded, found the object, and no request has failed since."""
        return self._healthy

    def failing(self) -> bool:
        """The last request failed (``stats().last_error`` says how) and none has succeeded since."""
        return self._failing

    def stats(self) -> WatcherStats:
        return self._stats

    def wait_synced(self, timeout: float) -> bool:
        """Wait until the first LIST has succeeded (True) or ``timeout`` seconds passed (False)."""
        return self.wait_until(lambda _: self._synced, timeout)

    def wait_until(self, predicate: Callable[[Self], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds, re-checked after each list, event and failure."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop promptly: interrupts a backoff wait and shuts the open watch connection down."""
        self._stopping.set()
        with self._cond:
            response = self._response
        if response is not None:
            _shutdown(response)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the thread ---------------------------------------------------------------------------------

    def _update(self, **changes: Any) -> None:
        with self._cond:
            for key, value in changes.items():
                setattr(self, key, value)
            self._cond.notify_all()

    def _count(self, **increments: int) -> WatcherStats:
        with self._cond:
            values = {k: getattr(self._stats, k) + v for k, v in increments.items()}
            self._stats = WatcherStats(**{**_stats_dict(self._stats), **values})
            self._cond.notify_all()
            return self._stats

    def _run(self) -> None:
        expired_at: int | None = None  # the event count at the last 410, until a watch makes progress
        while not self._stopping.is_set():
            try:
                resource_version = self._list()
                while not self._stopping.is_set():
                    resource_version = self._watch_once(resource_version)
                    expired_at = None
            except TRANSPORT_ERRORS as err:
                if self._stopping.is_set():
                    break
                failure = describe_failure(err)
                if failure.status == 410 and (expired_at is None or self._stats.events > expired_at):
                    # Our resourceVersion fell out of the server's window: relist now. A second 410 with
                    # no event in between is not progress, and backs off like any failure.
                    self._count(expired=1)
                    expired_at = self._stats.events
                    logger.info("watch of %s %s expired (%s); relisting", self.kind, self.name, failure.message)
                    continue
                expired_at = None
                delay = self._backoff.next_delay()
                with self._cond:
                    self._healthy = False
                    self._failing = True
                    self._stats = WatcherStats(
                        **{**_stats_dict(self._stats), "failures": self._stats.failures + 1, "last_error": str(failure)}
                    )
                    self._cond.notify_all()
                logger.warning("watching %s %s failed: %s; resyncing in %.1fs", self.kind, self.name, failure, delay)
                if self._wait(delay):
                    break
            except Exception:
                # A bug, not the API: keep the loop alive but say so loudly.
                logger.exception("%s watcher for %s crashed; resyncing", self.kind, self.name)
                self._update(_healthy=False)
                if self._wait(self._backoff.next_delay()):
                    break
        self._update(_healthy=False)

    def _list(self) -> str:
        self._count(lists=1)
        response = self._list_call(
            field_selector=self._selector, _preload_content=False, _request_timeout=self._request_timeout
        )
        data = read_json(response)
        items = [i for i in data.get("items") or () if (i.get("metadata") or {}).get("name") == self.name]
        resource_version = str((data.get("metadata") or {}).get("resourceVersion", ""))
        observed = self._parse(items[0]) if items else None
        if observed is None:
            logger.warning("%s %s not found; waiting for it to appear", self.kind, self.name)
        self._update(_observed=observed, _synced=True, _healthy=observed is not None, _failing=False)
        return resource_version

    def _watch_once(self, resource_version: str) -> str:
        """One WATCH request from ``resource_version``; returns the resourceVersion to resume from when
        the server ends it cleanly. Raises on failure (410 included)."""
        timeout = self._watch_timeout or self._rng.randrange(*WATCH_TIMEOUT_RANGE)
        stream = _Watch(return_type="object")  # events stay plain JSON: no model round trip

        def open_watch(**kwargs: Any) -> Any:
            # Runs inside stream(): publish the response so stop() can cut it; if stop() came first
            # (it could not see the response yet), cut it here. Either way no read blocks past stop().
            response = self._list_call(**kwargs)
            with self._cond:
                self._response = response
                stopping = self._stopping.is_set()
            if stopping:
                _shutdown(response)
            return response

        self._count(watches=1)
        try:
            for event in stream.stream(
                open_watch,
                field_selector=self._selector,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _request_timeout=RequestTimeout(self._request_timeout.connect, timeout + WATCH_READ_MARGIN),
            ):
                resource_version = self._apply(event, resource_version)
                if self._stopping.is_set():
                    break
        finally:
            with self._cond:
                self._response = None
        self._backoff.reset()  # a watch that ran to its end: the connection is fine
        return resource_version

    def _apply(self, event: Mapping[str, Any], resource_version: str) -> str:
        kind = event.get("type")
        obj = event.get("raw_object") or {}
        meta = obj.get("metadata") or {}
        resource_version = str(meta.get("resourceVersion") or resource_version)
        self._backoff.reset()
        if kind in ("ADDED", "MODIFIED") and meta.get("name") == self.name:
            self._update(_observed=self._parse(obj), _healthy=True)
        elif kind == "DELETED" and meta.get("name") == self.name:
            logger.warning("%s %s was deleted", self.kind, self.name)
            self._update(_observed=None, _healthy=False)
        self._count(events=1)
        return resource_version


class NodeWatcher(ObjectWatcher[ObservedNode]):
    """The agent's own Node."""

    kind = "node"

    def _list_call(self, **kwargs: Any) -> Any:
        return self._core.list_node(**kwargs)

    def _parse(self, obj: Mapping[str, Any]) -> ObservedNode:
        return ObservedNode.from_object(obj)


def _shutdown(response: Any) -> None:
    """Unblock a thread reading ``response`` (an urllib3 response) by shutting its socket down."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _stats_dict(stats: WatcherStats) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in WatcherStats.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class _Pending:
    """A successful write of ours, until the watch has delivered it (or something newer)."""

    before: str  # the watched resourceVersion the write was computed from
    node: ObservedNode  # the server's answer to the write


class FreshView:
    """The freshest view of the Node for a writer: the watch's, or the answer to the writer's own last
    patch while the watch has not delivered it yet (so the next cycle does not write the same again).
    Not thread-safe: each writer holds its own and serializes its calls."""

    def __init__(self, watcher: NodeWatcher) -> None:
        self.watcher = watcher
        self._pending: _Pending | None = None

    def current(self) -> ObservedNode | None:
        watched = self.watcher.observed()
        pending = self._pending
        if pending is None or watched is None:
            return watched
        order = compare_resource_versions(watched.resource_version, pending.node.resource_version)
        caught_up = order >= 0 if order is not None else watched.resource_version != pending.before
        if caught_up:
            self._pending = None
            return watched
        return pending.node

    def wrote(self, before: ObservedNode, answer: Mapping[str, Any]) -> None:
        """Our patch computed from ``before`` succeeded and the server answered ``answer``."""
        self._pending = _Pending(before=before.resource_version, node=ObservedNode.from_object(answer))

    def forget(self) -> None:
        """A write failed: whatever happened, trust only the watch from now on."""
        self._pending = None

    def patch(self, before: ObservedNode, request: Callable[[], Any]) -> ApiFailure | None:
        """Send a patch computed from ``before`` (``request`` makes it, unread): on success its answer
        is the view until the watch catches up (:meth:`wrote`), on failure only the watch is trusted
        (:meth:`forget`). The failure, described; None when it succeeded."""
        try:
            answer = read_json(request())
        except TRANSPORT_ERRORS as err:
            self.forget()
            return describe_failure(err)
        self.wrote(before, answer)
        return None
