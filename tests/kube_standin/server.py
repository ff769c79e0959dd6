"""The stand-in itself: lifecycle, the state tests set up and read, the request log, fault injection."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kube_standin.handler import Server
from tests.kube_standin.routes import EVENTS_GROUP, KINDS, Route
from tests.kube_standin.store import Store

JSON = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Request:
    """One request as the stand-in saw it."""

    method: str
    kind: str  # get | list | watch | patch | create | other
    resource: str  # nodes | nodes/status | configmaps | events | "" (a path the stand-in does not serve)
    path: str
    query: Mapping[str, str]
    content_type: str | None
    body: Any
    authorization: str | None
    # The HTTP status answered (200 for a watch even if an ERROR event followed); None while the request
    # is still being served (a delayed one, say). Requests are logged when they arrive.
    status: int | None


@dataclass
class Fault:
    kind: str
    times: int
    resource: str | None = None  # None: any resource
    status: int | None = None
    delay: float | None = None
    expire: bool = False


@dataclass
class Counters:
    events_sent: int = 0  # watch events written to clients, bookmarks included
    watches_open: int = 0
    drop_generation: int = 0
    end_generation: int = 0
    final_bookmark: bool = True
    bookmark_generation: int = 0


def _node(
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    capacity: Mapping[str, str],
    allocatable: Mapping[str, str],
) -> JSON:
    meta: JSON = {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **labels}}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": {},
        "status": {
            "capacity": {"cpu": "64", "memory": "527939456Ki", "pods": "110", **capacity},
            "allocatable": {"cpu": "63", "memory": "525842304Ki", "pods": "110", **allocatable},
        },
    }


class KubeStandIn:
    """A kube-apiserver stand-in on 127.0.0.1 and an ephemeral port.

    Use as a context manager; ``write_kubeconfig(path)`` makes a file ``kubernetes.config`` loads."""

    def __init__(self, *, token: str | None = "standin-token") -> None:  # noqa: S107 - a test credential
        self.token = token
        self.store = Store()
        self.counters = Counters()
        self.stopping = False
        self._faults: list[Fault] = []
        self._log: list[Request] = []
        self._server = Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="kube-standin", daemon=True
        )

    # --- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> KubeStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        with self.store.cond:
            self.stopping = True
            self.store.cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig whose current context points at this stand-in (bearer token auth)."""
        user: JSON = {"token": self.token} if self.token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "rdma-node-agent", "user": user}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "rdma-node-agent"}}],
            "current-context": "standin",
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    # --- state, as other writers (kubelet, an admin) would change it -------------------------------------

    def put_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        capacity: Mapping[str, str] | None = None,
        allocatable: Mapping[str, str] | None = None,
        conditions: list[JSON] | None = None,
    ) -> JSON:
        """Create a node (ADDED) — or replace it (MODIFIED) — with the given metadata and status."""
        node = _node(name, labels or {}, annotations or {}, capacity or {}, allocatable or {})
        if conditions is not None:
            node["status"]["conditions"] = conditions
        return self.store.create("nodes", node)

    def update_node(self, name: str, mutate: Callable[[JSON], None]) -> JSON:
        """Change a node in place as another client would (bumps resourceVersion, MODIFIED)."""
        with self.store.cond:
            node = self.node(name)
            mutate(node)
            return self.store.replace("nodes", name, node)

    def delete_node(self, name: str) -> None:
        self.store.delete("nodes", name)

    def node(self, name: str) -> JSON:
        with self.store.cond:
            return json.loads(json.dumps(self.store.objects("nodes")[name]))  # type: ignore[no-any-return]

    def labels(self, name: str) -> dict[str, str]:
        return dict(self.node(name)["metadata"].get("labels") or {})

    def annotations(self, name: str) -> dict[str, str]:
        return dict(self.node(name)["metadata"].get("annotations") or {})

    def conditions(self, name: str) -> dict[str, JSON]:
        """The node's ``status.conditions`` by type."""
        return {c["type"]: c for c in self.node(name)["status"].get("conditions") or []}

    def put_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> JSON:
        """Create or replace a ConfigMap."""
        obj = {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace},
            "data": dict(data),
        }
        return self.store.create(f"namespaces/{namespace}/configmaps", obj)

    def delete_configmap(self, namespace: str, name: str) -> None:
        self.store.delete(f"namespaces/{namespace}/configmaps", name)

    def events(self, namespace: str = "default") -> list[JSON]:
        """The events.k8s.io/v1 Events stored in ``namespace``, oldest first."""
        with self.store.cond:
            stored = self.store.objects(f"namespaces/{namespace}/events.{EVENTS_GROUP}").values()
            events = [json.loads(json.dumps(e)) for e in stored]
        return sorted(events, key=lambda e: (e["eventTime"], e["metadata"]["name"]))

    @property
    def resource_version(self) -> int:
        with self.store.cond:
            return self.store.rv

    # --- observation -------------------------------------------------------------------------------------

    @property
    def requests(self) -> tuple[Request, ...]:
        with self.store.cond:
            return tuple(self._log)

    def count(self, kind: str | None = None, *, resource: str | None = None, status: int | None = None) -> int:
        """Requests of ``kind`` (get/list/watch/patch/create/other; None = all), optionally only those
        for ``resource`` (nodes, nodes/status, events, configmaps) or answered ``status``."""
        with self.store.cond:
            return sum(
                1
                for r in self._log
                if (kind is None or r.kind == kind)
                and (resource is None or r.resource == resource)
                and (status is None or r.status == status)
            )

    def counts(self, resource: str | None = None) -> dict[str, int]:
        return {k: self.count(k, resource=resource) for k in KINDS}

    def patches(self, resource: str = "nodes") -> list[Request]:
        """The PATCH requests for ``resource`` (by default the Node itself: labels and annotations)."""
        with self.store.cond:
            return [r for r in self._log if r.kind == "patch" and r.resource == resource]

    @property
    def events_sent(self) -> int:
        with self.store.cond:
            return self.counters.events_sent

    @property
    def watches_open(self) -> int:
        with self.store.cond:
            return self.counters.watches_open

    def wait_for(self, predicate: Callable[[KubeStandIn], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every state change), or time out."""
        deadline = time.monotonic() + timeout
        with self.store.cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.store.cond.wait(remaining)
            return True

    # --- fault injection ---------------------------------------------------------------------------------

    def fail_next(self, kind: str, status: int, times: int = 1, *, resource: str | None = None) -> KubeStandIn:
        """The next ``times`` requests of ``kind`` (for ``resource``; None: any) get ``status`` with the
        real server's Status body."""
        assert kind in KINDS, kind
        with self.store.cond:
            self._faults.append(Fault(kind=kind, times=times, resource=resource, status=status))
        return self

    def delay_next(self, kind: str, seconds: float, times: int = 1, *, resource: str | None = None) -> KubeStandIn:
        """The next ``times`` requests of ``kind`` are answered only after ``seconds`` (a hung server)."""
        with self.store.cond:
            self._faults.append(Fault(kind=kind, times=times, resource=resource, delay=seconds))
        return self

    def expire_next_watch(self, times: int = 1) -> KubeStandIn:
        """The next watch gets an ERROR event with a 410 Expired Status, whatever its resourceVersion."""
        with self.store.cond:
            self._faults.append(Fault(kind="watch", times=times, expire=True))
        return self

    def compact(self) -> KubeStandIn:
        """Forget history: a watch from any resourceVersion older than the current one gets 410."""
        with self.store.cond:
            self.store.compacted_below = self.store.rv  # (history is kept: open watches index into it)
        return self

    def drop_watches(self) -> KubeStandIn:
        """Cut every open watch connection mid-stream (no terminating chunk), as a network failure does."""
        with self.store.cond:
            self.counters.drop_generation += 1
            self.store.cond.notify_all()
        return self

    def end_watches(self, *, final_bookmark: bool = True) -> KubeStandIn:
        """End every open watch cleanly, as the server does when ``timeoutSeconds`` expires (after a last
        BOOKMARK on watches that allowed them, unless ``final_bookmark`` is False)."""
        with self.store.cond:
            self.counters.end_generation += 1
            self.counters.final_bookmark = final_bookmark
            self.store.cond.notify_all()
        return self

    def send_bookmarks(self) -> KubeStandIn:
        """Send a BOOKMARK with the current resourceVersion on watches that allowed bookmarks."""
        with self.store.cond:
            self.counters.bookmark_generation += 1
            self.store.cond.notify_all()
        return self

    # --- called from handler threads ---------------------------------------------------------------------

    def take_fault(self, where: Route) -> Fault | None:
        with self.store.cond:
            for fault in self._faults:
                if fault.kind == where.kind and fault.resource in (None, where.resource) and fault.times > 0:
                    fault.times -= 1
                    self._faults = [f for f in self._faults if f.times > 0]
                    return fault
            return None

    def log_request(
        self,
        method: str,
        where: Route,
        path: str,
        query: Mapping[str, str],
        content_type: str | None,
        raw: bytes,
        authorization: str | None,
    ) -> int:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        request = Request(
            method=method,
            kind=where.kind,
            resource=where.resource,
            path=path,
            query=query,
            content_type=content_type,
            body=body,
            authorization=authorization,
            status=None,
        )
        with self.store.cond:
            self._log.append(request)
            self.store.cond.notify_all()
            return len(self._log) - 1

    def log_status(self, index: int, status: int) -> None:
        with self.store.cond:
            self._log[index] = dataclasses.replace(self._log[index], status=status)
            self.store.cond.notify_all()

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self.store.cond:
            while not self.stopping and (remaining := deadline - time.monotonic()) > 0:
                self.store.cond.wait(remaining)

    def watch_opened(self) -> tuple[int, int, int]:
        """Count an open watch; the drop, end and bookmark generations it starts from."""
        with self.store.cond:
            self.counters.watches_open += 1
            self.store.cond.notify_all()
            return (self.counters.drop_generation, self.counters.end_generation, self.counters.bookmark_generation)

    def watch_closed(self) -> None:
        with self.store.cond:
            self.counters.watches_open -= 1
            self.store.cond.notify_all()

    def event_sent(self) -> None:
        with self.store.cond:
            self.counters.events_sent += 1
            self.store.cond.notify_all()
