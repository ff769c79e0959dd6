"""The agent's only conversation with kube-apiserver: one watch on its own Node, and label patches.

* :func:`load_api_client` — in-cluster config, else a kubeconfig (explicit path, ``$KUBECONFIG`` or
  ``~/.kube/config``); :class:`KubernetesUnavailable` when there is neither, which the loop turns into
  "running without Kubernetes".
* :class:`NodeWatcher` — a background thread doing LIST (field selector ``metadata.name=<node>``) then
  WATCH from the list's resourceVersion, keeping an immutable :class:`ObservedNode` current. No
  polling: a watch the server ends after ``timeoutSeconds`` is resumed from the last resourceVersion
  without a list; 410 Gone relists at once; any other failure backs off (exponential, jittered) and
  relists.
* :class:`NodeLabelPublisher` — ``sync(desired)`` diffs the desired labels against the watched ones
  (``labels.plan_node_patch``) and sends at most ONE JSON merge patch that sets/removes the agent's
  labels and rewrites its ownership annotation together; nothing differs → no request at all.

Every request, the RBAC it needs, and what happens on each error are in docs/kubernetes.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import urllib3
import yaml
from kubernetes import client, config, watch
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from agent import __version__
from agent.config import Config
from agent.errors import ConfigError, PublishError
from agent.hostio import kind_of
from agent.labelsyntax import validate_label
from agent.publish import labels as label_rules

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "rdma-node-agent"
USER_AGENT = f"rdma-node-agent/{__version__}"
# (connect, read) seconds for ordinary requests; the server's own limit for a mutating request is 34s.
REQUEST_TIMEOUT: tuple[float, float] = (10.0, 30.0)
# client-go's reflector asks for a random watch timeout in [5m, 10m) so watches of many nodes spread out.
WATCH_TIMEOUT_RANGE: tuple[int, int] = (300, 600)
# A watch connection silent this much longer than its timeoutSeconds is dead (the server would have ended it).
WATCH_READ_MARGIN = 30.0

_EMPTY: Mapping[str, str] = MappingProxyType({})

# The client's config loaders and Watch are untyped.
_load_kube_config = cast(Any, config.load_kube_config)
_InClusterConfigLoader = cast(Any, InClusterConfigLoader)
_Watch = cast(Any, watch.Watch)


# What loading a kubeconfig raises on a missing, unreadable or malformed file (the loader indexes into
# whatever YAML it got, so a list where a mapping belongs is a TypeError).
KUBECONFIG_ERRORS = (ConfigException, OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError)


class KubernetesUnavailable(PublishError):  # noqa: N818 - a condition the loop handles, not a failure
    """Neither in-cluster configuration nor a kubeconfig was found: run without Kubernetes."""


def node_name(cfg: Config) -> str:
    """This node's name (``NODE_NAME`` from the downward API); required when publishing to Kubernetes."""
    if not cfg.node_name:
        raise ConfigError(
            "--node-name",
            "required when publishing to Kubernetes: set NODE_NAME from the downward API "
            "(env valueFrom fieldRef spec.nodeName) or pass --no-kubernetes",
        )
    return cfg.node_name


def load_api_client(kubeconfig: Path | None = None, *, env: Mapping[str, str] = os.environ) -> Any:
    """A ``kubernetes.client.ApiClient`` for this agent, without touching the client's global default.

    An explicit ``kubeconfig`` wins (an unreadable one is a :class:`ConfigError`); otherwise in-cluster
    configuration (service-account token, refreshed as it rotates); otherwise ``$KUBECONFIG`` or
    ``~/.kube/config``; otherwise :class:`KubernetesUnavailable`. urllib3's own retries are off: the
    watcher and the publisher back off and resync themselves, and each request is counted once."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        _refuse_unless_regular(kubeconfig)
        try:
            _load_kube_config(config_file=str(kubeconfig), client_configuration=configuration, persist_config=False)
        except KUBECONFIG_ERRORS as err:
            raise ConfigError("--kubeconfig", f"cannot use {kubeconfig}: {_one_line(err)}") from err
        source = str(kubeconfig)
    else:
        try:
            loader = _InClusterConfigLoader(SERVICE_TOKEN_FILENAME, SERVICE_CERT_FILENAME, environ=env)
            loader.load_and_set(configuration)
            source = "in-cluster service account"
        except (ConfigException, OSError) as in_cluster:
            default = env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
            try:
                _load_kube_config(config_file=default, client_configuration=configuration, persist_config=False)
            except KUBECONFIG_ERRORS as err:
                raise KubernetesUnavailable(
                    f"no in-cluster config ({_one_line(in_cluster)}) and no usable kubeconfig at {default} "
                    f"({_one_line(err)})"
                ) from err
            source = default
    configuration.retries = False
    api_client = client.ApiClient(configuration=configuration)
    api_client.user_agent = USER_AGENT
    logger.info("Kubernetes API %s (credentials from %s)", configuration.host, source)
    return api_client


def _refuse_unless_regular(path: Path) -> None:
    """The client opens the kubeconfig with a plain open(): a FIFO there would hang the start."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: the loader says so
    if not stat.S_ISREG(mode):
        raise ConfigError("--kubeconfig", f"{path} is {kind_of(mode)}, not a regular file")


# --- the two requests ---------------------------------------------------------------------------------

# What the generated CoreV1Api.list_node / patch_node (kubernetes 37) offer the ApiClient to pick the
# Accept and Content-Type headers from; the client picks the first JSON one, as it does for them.
_LIST_ACCEPTS = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/cbor",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
    "application/cbor-seq",
]
_PATCH_ACCEPTS = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf", "application/cbor"]
_PATCH_CONTENT_TYPES = [
    "application/json-patch+json",
    MERGE_PATCH,
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "application/apply-patch+cbor",
]
_AUTH_SETTINGS = ("BearerToken",)


class _NodeApi:
    """``list_node`` and ``patch_node`` of the generated ``CoreV1Api``, for the arguments the agent
    passes, sending the very same requests (path, query parameters in the same order, headers, body,
    auth, timeouts) through the same ``ApiClient.param_serialize`` and ``call_api``, and answering like
    them with ``_preload_content=False``: the raw urllib3 response, or ``ApiException`` for a non-2xx.

    Not ``CoreV1Api`` itself: its module (kubernetes.client.api.core_v1_api, 4 MB of source) imports
    some 250 generated models and builds pydantic validators, ~20 MiB of RSS for two requests — a third
    of the agent's idle memory. Nothing here imports it (tests/unit/test_kube_memory.py checks)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def list_node(
        self,
        *,
        allow_watch_bookmarks: bool | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: int | None = None,
        watch: bool | None = None,
        _preload_content: bool,
        _request_timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        """``GET /api/v1/nodes`` — a list, or with ``watch=True`` (added by ``Watch.stream``) a watch."""
        candidates = (
            ("allowWatchBookmarks", allow_watch_bookmarks),
            ("fieldSelector", field_selector),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", timeout_seconds),
            ("watch", watch),
        )
        query = [(key, value) for key, value in candidates if value is not None]
        headers = {"Accept": self.api_client.select_header_accept(_LIST_ACCEPTS)}
        return self._call("GET", "/api/v1/nodes", {}, query, headers, None, _preload_content, _request_timeout)

    def patch_node(
        self,
        name: str,
        body: Mapping[str, Any],
        *,
        field_manager: str | None = None,
        _content_type: str | None = None,
        _preload_content: bool,
        _request_timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        """``PATCH /api/v1/nodes/{name}`` with ``body`` as ``_content_type`` (default: JSON patch)."""
        query = [("fieldManager", field_manager)] if field_manager is not None else []
        headers = {
            "Accept": self.api_client.select_header_accept(_PATCH_ACCEPTS),
            "Content-Type": _content_type or self.api_client.select_header_content_type(_PATCH_CONTENT_TYPES),
        }
        return self._call("PATCH", "/api/v1/nodes/{name}", {"name": name}, query, headers, body, _preload_content,
                          _request_timeout)  # fmt: skip

    def _call(
        self,
        method: str,
        resource_path: str,
        path_params: dict[str, str],
        query: list[tuple[str, Any]],
        headers: dict[str, Any],
        body: Any,
        preload_content: bool,
        request_timeout: float | tuple[float, float] | None,
    ) -> Any:
        if preload_content:
            raise TypeError("_NodeApi answers raw responses only: pass _preload_content=False")
        request = self.api_client.param_serialize(
            method=method,
            resource_path=resource_path,
            path_params=path_params,
            query_params=query,
            header_params=headers,
            body=body,
            post_params=[],
            files={},
            auth_settings=list(_AUTH_SETTINGS),
            collection_formats={},
            _host=None,
            _request_auth=None,
        )
        response = self.api_client.call_api(*request, _request_timeout=request_timeout)
        if not 200 <= response.status <= 299:
            # As the generated methods do with _preload_content=False: read the body into the exception.
            response.read()
            raise client.ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response


# --- what we know about the Node ---------------------------------------------------------------------


def _frozen(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or not value:
        return _EMPTY
    return MappingProxyType({str(k): str(v) for k, v in sorted(value.items())})


@dataclass(frozen=True, kw_only=True, slots=True)
class ObservedNode:
    """The parts of our Node the agent reads, as last seen (read-only mappings)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    capacity: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # quantities as written ("8", "1k")
    allocatable: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    resource_version: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ObservedNode:
        """From a Node as JSON (GET/LIST item/WATCH object/PATCH response)."""
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        return cls(
            name=str(meta.get("name", "")),
            labels=_frozen(meta.get("labels")),
            annotations=_frozen(meta.get("annotations")),
            capacity=_frozen(status.get("capacity")),
            allocatable=_frozen(status.get("allocatable")),
            resource_version=str(meta.get("resourceVersion", "")),
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


# --- errors ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ApiFailure:
    """One failed request, in words: the HTTP status (None for transport errors) and a one-line reason."""

    status: int | None
    reason: str  # the Status reason (Forbidden, Conflict, …) or the transport error's class
    message: str

    def __str__(self) -> str:
        code = f"HTTP {self.status} " if self.status is not None else ""
        return f"{code}{self.reason}: {self.message}"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def describe_failure(err: BaseException) -> ApiFailure:
    """Turn a client/transport exception into an :class:`ApiFailure`, reading the Status body if any."""
    if isinstance(err, client.ApiException):
        reason, message = str(err.reason or ""), ""
        try:
            body = json.loads(err.body) if err.body else {}
        except (TypeError, ValueError):
            body = {}
        if isinstance(body, dict) and body.get("kind") == "Status":
            reason = str(body.get("reason") or reason)
            message = str(body.get("message") or "")
        if not message and ":" in reason:  # watch ERROR events arrive as reason="Expired: too old …"
            reason, message = (part.strip() for part in reason.split(":", 1))
        return ApiFailure(status=err.status or None, reason=reason or "Error", message=message or reason)
    if isinstance(err, urllib3.exceptions.ReadTimeoutError | urllib3.exceptions.ConnectTimeoutError):
        return ApiFailure(status=None, reason="Timeout", message=_one_line(err))
    return ApiFailure(status=None, reason=type(err).__name__, message=_one_line(err))


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    client.ApiException,
    urllib3.exceptions.HTTPError,  # timeouts, refused connections, streams cut mid-chunk
    OSError,
    ValueError,  # a body that is not JSON
)


# --- backoff -----------------------------------------------------------------------------------------


@dataclass
class Backoff:
    """Exponential backoff with jitter: ``initial·factor^n`` capped at ``maximum``, each delay randomly
    shortened by up to ``jitter`` of itself so that a fleet of agents does not reconnect in lockstep."""

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    _base: float = field(default=0.0, init=False, repr=False)

    def next_delay(self) -> float:
        self._base = self.initial if self._base == 0.0 else min(self.maximum, self._base * self.factor)
        return self._base * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self._base = 0.0


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


class NodeWatcher:
    """One LIST+WATCH of our own Node in a background thread; ``observed()`` is always the latest view.

    ``wait`` (default: an interruptible wait on the stop event, so ``stop()`` is prompt) sleeps the
    backoff delays and returns True when the watcher is being stopped; tests inject their own."""

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
        self._core = _NodeApi(api_client)
        self._selector = f"metadata.name={name}"
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._backoff = backoff or Backoff(rng=self._rng)
        self._watch_timeout = watch_timeout
        self._request_timeout = request_timeout
        self._stopping = threading.Event()
        self._wait = wait or self._stopping.wait
        self._cond = threading.Condition(threading.RLock())
        self._observed: ObservedNode | None = None
        self._synced = False
        self._healthy = False
        self._stats = WatcherStats()
        self._response: Any = None  # the open watch response, for stop() to cut
        self._thread = threading.Thread(target=self._run, name=f"node-watch-{name}", daemon=True)

    # --- read side (any thread) ---------------------------------------------------------------------

    def observed(self) -> ObservedNode | None:
        """Our Node as last listed or watched; None before the first list or while it does not exist."""
        return self._observed

    def healthy(self) -> bool:
        """The last list succeeded, found the node, and no request has failed since."""
        return self._healthy

    def stats(self) -> WatcherStats:
        return self._stats

    def wait_synced(self, timeout: float) -> bool:
        """Wait until the first LIST has succeeded (True) or ``timeout`` seconds passed (False)."""
        return self.wait_until(lambda w: w._synced, timeout)

    def wait_until(self, predicate: Callable[[NodeWatcher], bool], timeout: float) -> bool:
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

    def start(self) -> NodeWatcher:
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

    def __enter__(self) -> NodeWatcher:
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
                    logger.info("watch of node %s expired (%s); relisting", self.name, failure.message)
                    continue
                expired_at = None
                delay = self._backoff.next_delay()
                with self._cond:
                    self._healthy = False
                    self._stats = WatcherStats(**{**_stats_dict(self._stats), "failures": self._stats.failures + 1,
                                                  "last_error": str(failure)})  # fmt: skip
                    self._cond.notify_all()
                logger.warning("watching node %s failed: %s; resyncing in %.1fs", self.name, failure, delay)
                if self._wait(delay):
                    break
            except Exception:
                # A bug, not the API: keep the loop alive but say so loudly.
                logger.exception("node watcher for %s crashed; resyncing", self.name)
                self._update(_healthy=False)
                if self._wait(self._backoff.next_delay()):
                    break
        self._update(_healthy=False)

    def _list(self) -> str:
        self._count(lists=1)
        response = self._core.list_node(
            field_selector=self._selector, _preload_content=False, _request_timeout=self._request_timeout
        )
        try:
            data = json.loads(response.data)
        finally:
            response.release_conn()
        items = [i for i in data.get("items") or () if (i.get("metadata") or {}).get("name") == self.name]
        resource_version = str((data.get("metadata") or {}).get("resourceVersion", ""))
        observed = ObservedNode.from_object(items[0]) if items else None
        if observed is None:
            logger.warning("node %s not found; waiting for it to appear", self.name)
        self._update(_observed=observed, _synced=True, _healthy=observed is not None)
        return resource_version

    def _watch_once(self, resource_version: str) -> str:
        """One WATCH request from ``resource_version``; returns the resourceVersion to resume from when
        the server ends it cleanly. Raises on failure (410 included)."""
        timeout = self._watch_timeout or self._rng.randrange(*WATCH_TIMEOUT_RANGE)
        stream = _Watch(return_type="object")  # events stay plain JSON: no model round trip

        def open_watch(**kwargs: Any) -> Any:
            # Runs inside stream(): publish the response so stop() can cut it; if stop() came first
            # (it could not see the response yet), cut it here. Either way no read blocks past stop().
            response = self._core.list_node(**kwargs)
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
                _request_timeout=(self._request_timeout[0], timeout + WATCH_READ_MARGIN),
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
            self._update(_observed=ObservedNode.from_object(obj), _healthy=True)
        elif kind == "DELETED" and meta.get("name") == self.name:
            logger.warning("node %s was deleted", self.name)
            self._update(_observed=None, _healthy=False)
        self._count(events=1)
        return resource_version


def _shutdown(response: Any) -> None:
    """Unblock a thread reading ``response`` (an urllib3 response) by shutting its socket down."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _stats_dict(stats: WatcherStats) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in WatcherStats.__dataclass_fields__}


# --- publishing labels -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncResult:
    """What one ``sync`` did. ``patch`` is the ``metadata`` merge patch sent (None: no request made)."""

    patch: Mapping[str, Any] | None = None
    error: ApiFailure | None = None
    skipped: tuple[tuple[str, str], ...] = ()  # (key, why) of desired labels not published

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def patched(self) -> bool:
        return self.patch is not None and self.error is None


@dataclass(frozen=True, slots=True)
class _Pending:
    """Our last successful patch, until the watch has delivered it (or something newer)."""

    before: str  # the watched resourceVersion the patch was computed from
    node: ObservedNode  # the server's answer to the patch


class NodeLabelPublisher:
    """Keeps the agent's labels on its Node equal to the desired ones, one merge patch per change."""

    def __init__(
        self,
        api_client: Any,
        watcher: NodeWatcher,
        *,
        prefix: str,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self._core = _NodeApi(api_client)
        self._watcher = watcher
        self._prefix = prefix
        self._request_timeout = request_timeout
        self._pending: _Pending | None = None
        self._lock = threading.Lock()

    def current(self) -> ObservedNode | None:
        """The freshest view of the Node: the watch's, or our own patch's answer while the watch lags."""
        with self._lock:
            return self._current()

    def _current(self) -> ObservedNode | None:
        watched = self._watcher.observed()
        pending = self._pending
        if pending is None or watched is None:
            return watched
        order = compare_resource_versions(watched.resource_version, pending.node.resource_version)
        caught_up = order >= 0 if order is not None else watched.resource_version != pending.before
        if caught_up:
            self._pending = None
            return watched
        return pending.node

    def sync(self, desired: Mapping[str, str]) -> SyncResult:
        """Make the Node's labels under our prefix equal ``desired``: zero requests when they already are,
        otherwise ONE merge patch. Never raises for API or network failures: they come back in the result."""
        with self._lock:
            return self._sync(desired)

    def _sync(self, desired: Mapping[str, str]) -> SyncResult:
        valid, skipped = _publishable(desired, self._prefix)
        for key, reason in skipped:
            logger.warning("not publishing label %s: %s", key, reason)
        node = self._current()
        if node is None:
            failure = ApiFailure(status=None, reason="NotObserved",
                                 message=f"node {self._watcher.name} is not known yet (watch not synced)")  # fmt: skip
            return SyncResult(error=failure, skipped=skipped)
        # Labels and the ownership annotation in one body, so they cannot drift apart.
        body = label_rules.plan_node_patch(node.labels, node.annotations, valid, self._prefix)
        if body is None:
            return SyncResult(skipped=skipped)
        try:
            response = self._core.patch_node(
                self._watcher.name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._request_timeout,
            )
            try:
                answer = json.loads(response.data)
            finally:
                response.release_conn()
        except TRANSPORT_ERRORS as err:
            failure = describe_failure(err)
            self._pending = None  # whatever happened, trust only the watch from now on
            log = logger.error if failure.status == 422 else logger.warning
            log("patching labels of node %s failed: %s%s", self._watcher.name, failure, _advice(failure))
            return SyncResult(patch=body, error=failure, skipped=skipped)
        self._pending = _Pending(before=node.resource_version, node=ObservedNode.from_object(answer))
        logger.info("labels of node %s patched: %s", self._watcher.name, json.dumps(body, sort_keys=True))
        return SyncResult(patch=body, skipped=skipped)


def _publishable(
    desired: Mapping[str, str], prefix: str
) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """The desired labels the API server will accept and that are ours to set; the rest, explained.

    ``labels.desired_labels`` already drops invalid labels; this is the last check before the wire,
    so that nothing the API server would refuse with 422 is ever sent, whatever the caller passes."""
    valid: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    for key, value in sorted(desired.items()):
        problem = validate_label(key, value)
        if problem is None and not key.startswith(prefix):
            problem = f"not under the agent's prefix {prefix}"
        if problem is None:
            valid[key] = value
        else:
            skipped.append((key, problem))
    return valid, tuple(skipped)


def _advice(failure: ApiFailure) -> str:
    if failure.status == 403:
        return (" (RBAC must grant list, watch and patch on nodes, and the admission policy allows only this"
                " node and the agent's prefix: see docs/kubernetes.md)")  # fmt: skip
    if failure.status == 409:
        return " (the watch will deliver the current Node; retrying next cycle)"
    if failure.status == 422:
        return " (a bug: labels are validated before they are sent)"
    return "; retrying next cycle"
