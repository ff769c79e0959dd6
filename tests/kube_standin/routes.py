"""Which resource and verb a request is for, from its method and path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

KINDS = ("get", "list", "watch", "patch", "create", "other")
EVENTS_GROUP = "events.k8s.io"


@dataclass(frozen=True, kw_only=True)
class Route:
    kind: str  # the verb: one of KINDS
    resource: str  # nodes | nodes/status | configmaps | events | "" (unknown path)
    collection: str = ""  # the store's collection ("" for an unknown path)
    name: str | None = None
    namespace: str = ""
    object_kind: str = ""  # Node | ConfigMap | Event
    group: str = ""

    @property
    def plural(self) -> str:
        """The resource as Status messages name it (``nodes``, ``events.events.k8s.io``)."""
        base = self.resource.split("/", 1)[0]
        return f"{base}.{self.group}" if self.group else base


_PATTERNS: tuple[tuple[re.Pattern[str], str, str, str], ...] = (
    (re.compile(r"/api/v1/nodes(?:/(?P<name>[^/]+)(?P<status>/status)?)?"), "nodes", "Node", ""),
    (re.compile(r"/api/v1/namespaces/(?P<ns>[^/]+)/configmaps(?:/(?P<name>[^/]+))?"), "configmaps", "ConfigMap", ""),
    (
        re.compile(r"/apis/events\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/events(?:/(?P<name>[^/]+))?"),
        "events",
        "Event",
        EVENTS_GROUP,
    ),
)


def _verb(method: str, named: bool, query: Mapping[str, str]) -> str:
    if method == "GET":
        return "get" if named else ("watch" if query.get("watch") in ("1", "true") else "list")
    if method == "PATCH" and named:
        return "patch"
    if method == "POST" and not named:
        return "create"
    return "other"


def route(method: str, path: str, query: Mapping[str, str]) -> Route:
    for pattern, resource, object_kind, group in _PATTERNS:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        parts = match.groupdict()
        name, namespace = parts.get("name"), parts.get("ns") or ""
        collection = f"namespaces/{namespace}/{resource}" if namespace else resource
        if group:
            collection += f".{group}"
        return Route(
            kind=_verb(method, name is not None, query),
            resource=resource + ("/status" if parts.get("status") else ""),
            collection=collection,
            name=name,
            namespace=namespace,
            object_kind=object_kind,
            group=group,
        )
    return Route(kind="other", resource="")
