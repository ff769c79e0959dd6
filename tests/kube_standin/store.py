"""The stand-in's objects, their resourceVersions and the history watches follow.

Objects live in collections named like the API path that lists them: ``nodes``,
``namespaces/kube-system/configmaps``, ``namespaces/default/events.events.k8s.io``. Every write
bumps the one resourceVersion counter (as etcd's revision does) and is recorded for watchers; a
write that changes nothing is not a write. All access holds ``cond``, which is notified on every
change so tests and watch streams can wait on it.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.kube_standin.statuses import ApiError, status_object

JSON = dict[str, Any]
CREATED_AT = "2025-01-01T00:00:00Z"


@dataclass(frozen=True)
class Change:
    rv: int
    collection: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: JSON


class Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 100
        self.history: list[Change] = []
        self.compacted_below = 0  # watches from a resourceVersion below this get 410 Expired
        self._collections: dict[str, dict[str, JSON]] = {}

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _record(self, collection: str, type_: str, obj: JSON) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self.history.append(Change(rv=rv, collection=collection, type=type_, obj=copy.deepcopy(obj)))
        self.cond.notify_all()

    def objects(self, collection: str) -> dict[str, JSON]:
        """The live dict of a collection (callers hold ``cond``)."""
        return self._collections.setdefault(collection, {})

    def get(self, collection: str, name: str, not_found: Callable[[], ApiError]) -> JSON:
        with self.cond:
            obj = self.objects(collection).get(name)
            if obj is None:
                raise not_found()
            return copy.deepcopy(obj)

    def create(self, collection: str, obj: JSON, *, exists: Callable[[], ApiError] | None = None) -> JSON:
        """Store a new object (ADDED), or replace one when ``exists`` is None (MODIFIED)."""
        with self.cond:
            meta = obj["metadata"]
            existing = self.objects(collection).get(meta["name"])
            if existing is not None and exists is not None:
                raise exists()
            meta["uid"] = existing["metadata"]["uid"] if existing else str(uuid.uuid4())
            meta["creationTimestamp"] = existing["metadata"]["creationTimestamp"] if existing else CREATED_AT
            meta["resourceVersion"] = self._bump()
            self.objects(collection)[meta["name"]] = copy.deepcopy(obj)
            self._record(collection, "MODIFIED" if existing else "ADDED", obj)
            return copy.deepcopy(obj)

    def replace(self, collection: str, name: str, obj: JSON) -> JSON:
        """Write ``obj`` over the stored one unless equal (then: no write, same resourceVersion)."""
        with self.cond:
            current = self.objects(collection)[name]
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            if obj == current:
                return copy.deepcopy(current)
            obj["metadata"]["resourceVersion"] = self._bump()
            self.objects(collection)[name] = copy.deepcopy(obj)
            self._record(collection, "MODIFIED", obj)
            return copy.deepcopy(obj)

    def delete(self, collection: str, name: str) -> None:
        with self.cond:
            obj = self.objects(collection).pop(name)
            obj["metadata"]["resourceVersion"] = self._bump()
            self._record(collection, "DELETED", obj)

    def list_objects(self, collection: str, kind: str, selector: Callable[[JSON], bool]) -> JSON:
        with self.cond:
            items = []
            for name in sorted(self.objects(collection)):
                obj = copy.deepcopy(self.objects(collection)[name])
                if selector(obj):
                    obj.pop("kind", None)  # items of a typed list carry no kind/apiVersion on the wire
                    obj.pop("apiVersion", None)
                    items.append(obj)
            api_version = "v1" if "." not in collection.rsplit("/", 1)[-1] else collection.split(".", 1)[1] + "/v1"
            return {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self.rv)},
                "items": items,
            }

    def watch_from(
        self, collection: str, rv_param: str, selector: Callable[[JSON], bool]
    ) -> tuple[list[JSON], int, JSON | None]:
        """Initial events, the history index to follow from, and an ERROR Status if the watch can't start."""
        with self.cond:
            if rv_param in ("", "0"):
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for _, o in sorted(self.objects(collection).items())
                    if selector(o)
                ]
                return initial, len(self.history), None
            if not rv_param.isdigit():
                raise ApiError(
                    status_object(
                        400, f'invalid resource version: strconv.ParseUint: parsing "{rv_param}": invalid syntax'
                    )
                )
            since = int(rv_param)
            if since < self.compacted_below:
                return (
                    [],
                    len(self.history),
                    status_object(410, f"too old resource version: {since} ({self.compacted_below})", "Expired"),
                )
            start = next((i for i, e in enumerate(self.history) if e.rv > since), len(self.history))
            return [], start, None

    def changes_since(self, index: int, collection: str, selector: Callable[[JSON], bool]) -> tuple[list[JSON], int]:
        """Watch events after history ``index`` for ``collection`` (callers hold ``cond``), and the new index."""
        pending = [
            {"type": c.type, "object": copy.deepcopy(c.obj)}
            for c in self.history[index:]
            if c.collection == collection and selector(c.obj)
        ]
        return pending, len(self.history)
