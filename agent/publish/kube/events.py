"""Events about the agent's Node (events.k8s.io/v1), aggregated and rate-limited like client-go's.

:class:`EventRecorder` takes :class:`~agent.publish.events.EventSpec` values from the loop and never
blocks it: requests go to a bounded queue drained by one sender thread (full: dropped, counted). The
rules are client-go's (``tools/events`` for series, ``tools/record`` for the spam filter):

* **Series.** Events with the same type, reason and action about the Node are one series. The first
  is created; a repeat within :data:`FINISH_SECONDS` of the last raises the series count — the second
  occurrence is patched at once (``series: {count: 2, lastObservedTime}``), later ones only when
  :data:`HEARTBEAT_SECONDS` passed since the last patch or when the series ends (no repeat for
  ``FINISH_SECONDS``: a final patch with the count). A repeat after that starts a new event.
* **Spam filter.** Every request (create or patch) takes a token from a bucket per event type:
  :data:`SPAM_BURST` at once, one more every :data:`SPAM_REFILL_SECONDS`; without a token the request
  is dropped. A port flapping for hours thus costs a bounded number of requests.

Events regard the Node as the kubelet's do (``regarding: {kind: Node, name, uid: <name>}``) and live
in the namespace the kubelet uses for them, ``default``; ``reportingController`` is
``rdma-node-agent``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from agent.publish.events import EventSpec
from agent.publish.kube.api import FIELD_MANAGER, REQUEST_TIMEOUT, NodeApi, RequestTimeout, read_json
from agent.publish.kube.failures import TRANSPORT_ERRORS, describe_failure

logger = logging.getLogger(__package__)

NAMESPACE: Final = "default"  # where the kubelet records Node events
CONTROLLER: Final = "rdma-node-agent"
FINISH_SECONDS: Final = 6 * 60.0  # client-go tools/events finishTime
HEARTBEAT_SECONDS: Final = 30 * 60.0  # client-go tools/events refreshTime
SPAM_BURST: Final = 25  # client-go tools/record defaultSpamBurst
SPAM_REFILL_SECONDS: Final = 300.0  # client-go tools/record defaultSpamQPS = 1/300
QUEUE_SIZE: Final = 100


def micro_time(epoch: float) -> str:
    """``metav1.MicroTime`` on the wire: RFC 3339 with six fractional digits, UTC."""
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_name(node: str, now: float) -> str:
    """``<node>.<unix nanoseconds in hex>`` as client-go names events; a node name long enough to push
    it past 253 characters (a DNS subdomain's limit) gets a random name instead, as client-go does."""
    name = f"{node}.{int(now * 1e9):x}"
    return name if len(name) <= 253 else f"{CONTROLLER}.{uuid.uuid4().hex}"


@dataclass(slots=True)
class _Series:
    name: str
    count: int
    last_observed: float
    last_sent: float
    sent_count: int


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """One request for the sender: a new event, or a series patch of an existing one."""

    create: Mapping[str, Any] | None = None
    patch: Mapping[str, Any] | None = None
    name: str = ""


@dataclass(slots=True)
class RecorderStats:
    created: int = 0
    patched: int = 0
    queue_dropped: int = 0  # requests dropped because the queue was full
    failed: int = 0  # requests the API server refused or that could not be sent
    by_reason: dict[str, int] = field(default_factory=dict)  # events observed, by reason


class Correlator:
    """Series and the spam filter, on an injected clock (pure but for its own state)."""

    def __init__(self, node: str, clock: Callable[[], float]) -> None:
        self.node = node
        self.clock = clock
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._buckets: dict[str, _Bucket] = {}
        self.spam_dropped = 0

    def _take(self, kind: str, now: float) -> bool:
        bucket = self._buckets.setdefault(kind, _Bucket(tokens=float(SPAM_BURST), at=now))
        bucket.tokens = min(float(SPAM_BURST), bucket.tokens + (now - bucket.at) / SPAM_REFILL_SECONDS)
        bucket.at = now
        if bucket.tokens < 1.0:
            self.spam_dropped += 1
            return False
        bucket.tokens -= 1.0
        return True

    def observe(self, spec: EventSpec) -> Request | None:
        """The request this occurrence needs now (None: counted in its series, or dropped)."""
        now = self.clock()
        key = (spec.type, spec.reason, spec.action)
        series = self._series.get(key)
        if series is None or now - series.last_observed > FINISH_SECONDS:
            if not self._take(spec.type, now):
                return None
            name = event_name(self.node, now)
            self._series[key] = _Series(name=name, count=1, last_observed=now, last_sent=now, sent_count=1)
            return Request(create=self._event(name, spec, now), name=name)
        series.count += 1
        series.last_observed = now
        if series.count == 2 or now - series.last_sent >= HEARTBEAT_SECONDS:
            return self._series_patch(key, series, now)
        return None

    def tick(self) -> list[Request]:
        """Final patches of series that ended with counts not sent yet; ended series are forgotten."""
        now = self.clock()
        out: list[Request] = []
        for key, series in list(self._series.items()):
            if now - series.last_observed > FINISH_SECONDS:
                if series.count > series.sent_count:
                    request = self._series_patch(key, series, now)
                    if request is not None:
                        out.append(request)
                del self._series[key]
        return out

    def _series_patch(self, key: tuple[str, str, str], series: _Series, now: float) -> Request | None:
        if not self._take(key[0], now):
            return None
        series.last_sent, series.sent_count = now, series.count
        body = {"series": {"count": series.count, "lastObservedTime": micro_time(series.last_observed)}}
        return Request(patch=body, name=series.name)

    def _event(self, name: str, spec: EventSpec, now: float) -> dict[str, Any]:
        return {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "eventTime": micro_time(now),
            "reportingController": CONTROLLER,
            "reportingInstance": f"{CONTROLLER}-{self.node}"[:128],
            "action": spec.action,
            "reason": spec.reason,
            "type": spec.type,
            "note": spec.note,
            "regarding": {"kind": "Node", "apiVersion": "v1", "name": self.node, "uid": self.node},
        }


class EventRecorder:
    """Records events about ``node``: :meth:`record` never blocks; one thread sends."""

    def __init__(
        self,
        api_client: Any,
        node: str,
        *,
        clock: Callable[[], float] = time.time,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._api = NodeApi(api_client)
        self._correlator = Correlator(node, clock)
        self._timeout = RequestTimeout(*request_timeout)
        self._queue: queue.Queue[Request | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self.stats = RecorderStats()
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def record(self, spec: EventSpec) -> None:
        with self._lock:
            self.stats.by_reason[spec.reason] = self.stats.by_reason.get(spec.reason, 0) + 1
            request = self._correlator.observe(spec)
        if request is not None:
            self._enqueue(request)

    def tick(self) -> None:
        """Once a cycle: send the final counts of series that ended."""
        with self._lock:
            requests = self._correlator.tick()
        for request in requests:
            self._enqueue(request)

    def _enqueue(self, request: Request) -> None:
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            with self._lock:
                self.stats.queue_dropped += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued request was sent (tests, and a clean stop)."""
        deadline = time.monotonic() + timeout
        done = self._queue.all_tasks_done  # the queue's own condition, notified by task_done()
        with done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    def stop(self, timeout: float = 1.0) -> None:
        with contextlib.suppress(queue.Full):  # the sender is a daemon: the process may end without it
            self._queue.put_nowait(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            request = self._queue.get()
            try:
                if request is None:
                    return
                self._send(request)
            finally:
                self._queue.task_done()

    def _send(self, request: Request) -> None:
        try:
            if request.create is not None:
                response = self._api.create_event(
                    NAMESPACE,
                    request.create,
                    field_manager=FIELD_MANAGER,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
                kind = "created"
            else:
                assert request.patch is not None
                response = self._api.patch_event(
                    NAMESPACE,
                    request.name,
                    request.patch,
                    field_manager=FIELD_MANAGER,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
                kind = "patched"
            read_json(response)
        except TRANSPORT_ERRORS as err:
            failure = describe_failure(err)
            with self._lock:
                self.stats.failed += 1
            logger.warning("recording event %s failed: %s", request.name, failure, extra={"code": failure.reason})
            return
        with self._lock:
            if kind == "created":
                self.stats.created += 1
            else:
                self.stats.patched += 1
