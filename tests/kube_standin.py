"""An HTTP stand-in for kube-apiserver, for the Node requests the agent makes.

It speaks the real wire format so the unmodified ``kubernetes`` client can be pointed at it through a
kubeconfig: ``GET /api/v1/nodes/{name}``, ``GET /api/v1/nodes`` (list, ``fieldSelector``), the same
with ``watch=true`` (chunked JSON lines, ``resourceVersion``, ``allowWatchBookmarks``,
``timeoutSeconds``, 410 ``Expired`` as an ERROR event) and ``PATCH /api/v1/nodes/{name}`` with the
three patch content types (RFC 7386 merge, strategic merge for maps, RFC 6902 JSON patch). Like the
real server it validates labels and annotations (apimachinery ``IsQualifiedName`` /
``IsValidLabelValue``, 256 KiB of annotations) and answers 422 ``Invalid`` with ``details.causes``,
honours a ``metadata.resourceVersion`` precondition (409 ``Conflict``), does not write (nor bump the
resourceVersion, nor notify watchers) when a patch changes nothing, and answers errors with
``Status`` objects of the real shape.

Tests read its request log and counters, wait on its condition (``wait_for``), change nodes as other
writers would (``put_node``, ``update_node``, ``delete_node``), and inject faults: the next N requests
of a kind fail with a status or are delayed, open watches are dropped mid-stream or ended cleanly,
the next watch finds its resourceVersion expired, history is compacted.

Deliberately not implemented (400/415 rather than silently wrong): label selectors, field selectors
other than ``metadata.name``, server-side apply, strategic-merge ``$`` directives, namespaces.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# The order kube-apiserver lists them in its 415 message (patchTypes of a built-in resource).
ACCEPTED_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH, STRATEGIC_MERGE_PATCH)

KINDS = ("get", "list", "watch", "patch", "other")

# --- apimachinery validation (k8s.io/apimachinery/pkg/api/validate/content/{kube,dns,errors}.go) -----

_LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_RE = re.compile(f"^{_LABEL_KEY_FMT}$")
_LABEL_VALUE_FMT = f"({_LABEL_KEY_FMT})?"
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE_FMT}$")
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{_DNS1123_SUBDOMAIN_FMT}$")
_LABEL_KEY_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * (1 << 10)


def _regex_error(msg: str, regex: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{regex}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{regex}')"


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} bytes"


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append(_max_len_error(253))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(_regex_error(_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """apimachinery ``IsQualifiedName`` (= ``content.IsLabelKey``): the list of problems, empty if valid."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a valid label key "
            + _regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len_error(63))
    if not _LABEL_KEY_RE.fullmatch(name):
        errs.append("name part " + _regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_valid_label_value(value: str) -> list[str]:
    """apimachinery ``IsValidLabelValue`` (= ``content.IsLabelValue``)."""
    errs = []
    if len(value) > 63:
        errs.append(_max_len_error(63))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(_regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def _go_quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def validate_metadata(meta: Mapping[str, Any]) -> list[JSON]:
    """The causes ``ValidateObjectMeta`` reports for labels and annotations (metav1 validation)."""
    causes: list[JSON] = []

    def invalid(fld: str, value: str, msg: str) -> None:
        causes.append({"reason": "FieldValueInvalid", "message": f"Invalid value: {_go_quote(value)}: {msg}",
                       "field": fld})  # fmt: skip

    labels = meta.get("labels") or {}
    for key in sorted(labels):
        for msg in is_qualified_name(key):
            invalid("metadata.labels", key, msg)
        for msg in is_valid_label_value(labels[key]):
            invalid("metadata.labels", labels[key], msg)
    annotations = meta.get("annotations") or {}
    for key in sorted(annotations):
        # "The rule is QualifiedName except that case doesn't matter" (ValidateAnnotations).
        for msg in is_qualified_name(key.lower()):
            invalid("metadata.annotations", key, msg)
    total = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        causes.append({"reason": "FieldValueTooLong",
                       "message": f"Too long: may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes",
                       "field": "metadata.annotations"})  # fmt: skip
    return causes


# --- Status objects (k8s.io/apimachinery/pkg/api/errors) ---------------------------------------------

REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}  # fmt: skip


def status_object(code: int, message: str, reason: str | None = None, details: JSON | None = None) -> JSON:
    """A ``Status`` exactly as kube-apiserver encodes it (field order included)."""
    obj: JSON = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                 "reason": reason if reason is not None else REASONS.get(code, ""), }  # fmt: skip
    if details is not None:
        obj["details"] = details
    obj["code"] = code
    return obj


def default_status(code: int, verb: str, name: str | None) -> JSON:
    """The Status the real server sends for ``code`` on a node request (used by fault injection)."""
    target = f'nodes "{name}"' if name else "nodes"
    details: JSON | None = {"name": name, "kind": "nodes"} if name else {"kind": "nodes"}
    if code == 403:
        user = "system:serviceaccount:kube-system:rdma-node-agent"
        scope = f'cannot {verb} resource "nodes" in API group "" at the cluster scope'
        return status_object(403, f'{target} is forbidden: User "{user}" {scope}', details=details)
    if code == 404:
        return status_object(404, f"{target} not found", details=details)
    if code == 409:
        message = (f"Operation cannot be fulfilled on {target}: the object has been modified; "
                   "please apply your changes to the latest version and try again")  # fmt: skip
        return status_object(409, message, details=details)
    if code == 410:
        return status_object(410, "too old resource version: 1 (2)", "Expired")
    if code == 500:
        cause = "etcdserver: request timed out"
        return status_object(500, f"Internal error occurred: {cause}", details={"causes": [{"message": cause}]})
    if code == 503:
        return status_object(503, "the server is currently unable to handle the request")
    if code == 504:
        message = "Timeout: request did not complete within requested timeout - context deadline exceeded"
        return status_object(504, message)
    return status_object(code, f"injected {code}")


class ApiError(Exception):
    def __init__(self, status: JSON) -> None:
        super().__init__(status["message"])
        self.status = status


# --- patch semantics -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch, for what a Node's metadata maps need: identical to a merge patch there.

    The real server merges some lists by key (``spec.taints``…); this stand-in refuses ``$`` directives
    and replaces lists, which is enough for labels and annotations and never silently wrong on them."""

    def check(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                if key.startswith("$"):
                    raise ApiError(status_object(400, f"stand-in: strategic merge directive {key} at {path} "
                                                      "is not implemented"))  # fmt: skip
                check(sub, f"{path}/{key}")

    check(patch, "")
    return merge_patch(target, patch)


class _JsonPatchError(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _JsonPatchError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise _JsonPatchError(f"doc is missing path: {_go_quote(path)}: missing value")
    return node, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise _JsonPatchError(f"doc is missing path: {_go_quote(path)}: missing value")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise _JsonPatchError(f"unable to add to index {last} at {path}")
        parent.insert(index, value)
    else:
        raise _JsonPatchError(f"doc is missing path: {_go_quote(path)}: missing value")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    _get(doc, path)
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test (errors raise ``_JsonPatchError``)."""
    if not isinstance(ops, list):
        raise ApiError(status_object(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch"))
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise ApiError(status_object(400, "json patch operation must be an object with an 'op'"))
        kind, path = op["op"], op.get("path", "")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _add(_remove(doc, path), path, copy.deepcopy(op.get("value"))) if _pointer(path) else op.get("value")
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise _JsonPatchError(f"testing value {path} failed: test failed")
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, op.get("from", ""))
            doc = _add(doc, path, value)
        else:
            raise ApiError(status_object(400, f"Unexpected kind: {kind}"))
    return doc


# --- the server --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Request:
    """One request as the stand-in saw it."""

    method: str
    kind: str  # get | list | watch | patch | other
    path: str
    query: Mapping[str, str]
    content_type: str | None
    body: Any
    authorization: str | None
    # The HTTP status answered (200 for a watch even if an ERROR event followed); None while the request
    # is still being served (a delayed one, say). Requests are logged when they arrive.
    status: int | None


@dataclass
class _Fault:
    kind: str
    times: int
    status: int | None = None
    delay: float | None = None
    expire: bool = False


@dataclass
class _Event:
    rv: int
    type: str
    obj: JSON


@dataclass
class _Counters:
    events_sent: int = 0  # watch events written to clients, bookmarks included
    watches_open: int = 0
    drop_generation: int = 0
    end_generation: int = 0
    final_bookmark: bool = True
    bookmark_generation: int = 0


def _split_kind(method: str, path: str, query: Mapping[str, str]) -> tuple[str, str | None]:
    if path == "/api/v1/nodes" and method == "GET":
        return ("watch" if query.get("watch") in ("1", "true") else "list"), None
    match = re.fullmatch(r"/api/v1/nodes/([^/]+)", path)
    if match and method == "GET":
        return "get", match.group(1)
    if match and method == "PATCH":
        return "patch", match.group(1)
    return "other", match.group(1) if match else None


class KubeStandIn:
    """A kube-apiserver stand-in for Node objects, on 127.0.0.1 and an ephemeral port.

    Use as a context manager; ``write_kubeconfig(path)`` makes a file ``kubernetes.config`` loads."""

    def __init__(self, *, token: str | None = "standin-token") -> None:  # noqa: S107 - a test credential
        self.token = token
        self._cond = threading.Condition()
        self._nodes: dict[str, JSON] = {}
        self._rv = 100
        self._history: list[_Event] = []
        self._compacted_below = 0  # watches from a resourceVersion below this get 410 Expired
        self._faults: list[_Fault] = []
        self._log: list[Request] = []
        self._counters = _Counters()
        self._stopping = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="kube-standin",
                                        daemon=True)  # fmt: skip

    # --- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> KubeStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
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

    # --- state, as other writers (kubelet, an admin) would change it --------------------------------

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _record(self, type_: str, obj: JSON) -> None:
        self._history.append(_Event(rv=int(obj["metadata"]["resourceVersion"]), type=type_, obj=copy.deepcopy(obj)))
        self._cond.notify_all()

    def put_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        capacity: Mapping[str, str] | None = None,
        allocatable: Mapping[str, str] | None = None,
    ) -> JSON:
        """Create a node (ADDED) — or replace it (MODIFIED) — with the given metadata and status."""
        with self._cond:
            existing = self._nodes.get(name)
            node: JSON = {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": existing["metadata"]["uid"] if existing else str(uuid.uuid4()),
                    "resourceVersion": self._bump(),
                    "creationTimestamp": "2025-01-01T00:00:00Z",
                    "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})},
                    "annotations": dict(annotations or {}),
                },
                "spec": {},
                "status": {
                    "capacity": {"cpu": "64", "memory": "527939456Ki", "pods": "110", **(capacity or {})},
                    "allocatable": {"cpu": "63", "memory": "525842304Ki", "pods": "110", **(allocatable or {})},
                },
            }
            if not node["metadata"]["annotations"]:
                del node["metadata"]["annotations"]
            self._nodes[name] = node
            self._record("MODIFIED" if existing else "ADDED", node)
            return copy.deepcopy(node)

    def update_node(self, name: str, mutate: Callable[[JSON], None]) -> JSON:
        """Change a node in place as another client would (bumps resourceVersion, MODIFIED)."""
        with self._cond:
            node = copy.deepcopy(self._nodes[name])
            mutate(node)
            if node != self._nodes[name]:
                node["metadata"]["resourceVersion"] = self._bump()
                self._nodes[name] = node
                self._record("MODIFIED", node)
            return copy.deepcopy(node)

    def delete_node(self, name: str) -> None:
        with self._cond:
            node = self._nodes.pop(name)
            node["metadata"]["resourceVersion"] = self._bump()
            self._record("DELETED", node)

    def node(self, name: str) -> JSON:
        with self._cond:
            return copy.deepcopy(self._nodes[name])

    def labels(self, name: str) -> dict[str, str]:
        with self._cond:
            return dict(self._nodes[name]["metadata"].get("labels") or {})

    def annotations(self, name: str) -> dict[str, str]:
        with self._cond:
            return dict(self._nodes[name]["metadata"].get("annotations") or {})

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    # --- observation --------------------------------------------------------------------------------

    @property
    def requests(self) -> tuple[Request, ...]:
        with self._cond:
            return tuple(self._log)

    def count(self, kind: str | None = None, *, status: int | None = None) -> int:
        """Requests of ``kind`` (get/list/watch/patch/other; None = all), optionally by status."""
        with self._cond:
            return sum(
                1 for r in self._log if (kind is None or r.kind == kind) and (status is None or r.status == status)
            )

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {k: sum(1 for r in self._log if r.kind == k) for k in KINDS}

    def patches(self) -> list[Request]:
        with self._cond:
            return [r for r in self._log if r.kind == "patch"]

    @property
    def events_sent(self) -> int:
        with self._cond:
            return self._counters.events_sent

    @property
    def watches_open(self) -> int:
        with self._cond:
            return self._counters.watches_open

    def wait_for(self, predicate: Callable[[KubeStandIn], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every state change), or time out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # --- fault injection ----------------------------------------------------------------------------

    def fail_next(self, kind: str, status: int, times: int = 1) -> KubeStandIn:
        """The next ``times`` requests of ``kind`` get ``status`` with the real server's Status body."""
        assert kind in KINDS, kind
        with self._cond:
            self._faults.append(_Fault(kind=kind, times=times, status=status))
        return self

    def delay_next(self, kind: str, seconds: float, times: int = 1) -> KubeStandIn:
        """The next ``times`` requests of ``kind`` are answered only after ``seconds`` (a hung server)."""
        with self._cond:
            self._faults.append(_Fault(kind=kind, times=times, delay=seconds))
        return self

    def expire_next_watch(self, times: int = 1) -> KubeStandIn:
        """The next watch gets an ERROR event with a 410 Expired Status, whatever its resourceVersion."""
        with self._cond:
            self._faults.append(_Fault(kind="watch", times=times, expire=True))
        return self

    def compact(self) -> KubeStandIn:
        """Forget history: a watch from any resourceVersion older than the current one gets 410."""
        with self._cond:
            self._compacted_below = self._rv  # (history is kept: open watches index into it)
        return self

    def drop_watches(self) -> KubeStandIn:
        """Cut every open watch connection mid-stream (no terminating chunk), as a network failure does."""
        with self._cond:
            self._counters.drop_generation += 1
            self._cond.notify_all()
        return self

    def end_watches(self, *, final_bookmark: bool = True) -> KubeStandIn:
        """End every open watch cleanly, as the server does when ``timeoutSeconds`` expires (after a last
        BOOKMARK on watches that allowed them, unless ``final_bookmark`` is False)."""
        with self._cond:
            self._counters.end_generation += 1
            self._counters.final_bookmark = final_bookmark
            self._cond.notify_all()
        return self

    def send_bookmarks(self) -> KubeStandIn:
        """Send a BOOKMARK with the current resourceVersion on watches that allowed bookmarks."""
        with self._cond:
            self._counters.bookmark_generation += 1
            self._cond.notify_all()
        return self

    def _take_fault(self, kind: str) -> _Fault | None:
        for fault in self._faults:
            if fault.kind == kind and fault.times > 0:
                fault.times -= 1
                self._faults = [f for f in self._faults if f.times > 0]
                return fault
        return None

    # --- request handling (called from handler threads) ---------------------------------------------

    def _log_request(self, request: Request) -> int:
        with self._cond:
            self._log.append(request)
            self._cond.notify_all()
            return len(self._log) - 1

    def _log_status(self, index: int, status: int) -> None:
        with self._cond:
            self._log[index] = dataclasses.replace(self._log[index], status=status)
            self._cond.notify_all()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stopping and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)

    def _get(self, name: str) -> JSON:
        with self._cond:
            if name not in self._nodes:
                raise ApiError(default_status(404, "get", name))
            return copy.deepcopy(self._nodes[name])

    def _list(self, selector: Callable[[JSON], bool]) -> JSON:
        with self._cond:
            items = []
            for name in sorted(self._nodes):
                node = copy.deepcopy(self._nodes[name])
                if selector(node):
                    # Items of a typed list carry no kind/apiVersion on the wire.
                    node.pop("kind", None)
                    node.pop("apiVersion", None)
                    items.append(node)
            return {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._rv)},
                    "items": items}  # fmt: skip

    def _patch(self, name: str, content_type: str, raw: bytes) -> JSON:
        base = content_type.split(";", 1)[0].strip()
        if base not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH):
            accepted = ", ".join(ACCEPTED_PATCH_TYPES)
            raise ApiError(status_object(415, "the body of the request was in an unknown format - accepted media "
                                              f"types include: {accepted}"))  # fmt: skip
        try:
            patch = json.loads(raw)
        except ValueError as err:
            raise ApiError(status_object(400, f"error decoding patch: {err}")) from None
        with self._cond:
            if name not in self._nodes:
                raise ApiError(default_status(404, "patch", name))
            current = self._nodes[name]
            try:
                if base == JSON_PATCH:
                    patched = json_patch(current, patch)
                elif base == MERGE_PATCH:
                    if not isinstance(patch, dict):
                        raise ApiError(status_object(400, "invalid JSON document"))
                    patched = merge_patch(current, patch)
                else:
                    if not isinstance(patch, dict):
                        raise ApiError(status_object(400, "invalid JSON document"))
                    patched = strategic_merge_patch(current, patch)
            except _JsonPatchError as err:
                raise ApiError(status_object(422, "the server rejected our request due to an error in our request",
                                             "Invalid", {"causes": [{"reason": "UnexpectedServerResponse",
                                                                     "message": str(err)}]})) from None  # fmt: skip
            meta = patched.get("metadata")
            if not isinstance(meta, dict):
                raise ApiError(status_object(422, "metadata: must be an object", "Invalid"))
            for fld in ("labels", "annotations"):
                value = meta.get(fld)
                if value is not None and (
                    not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())
                ):
                    # The decode of the patched object into a typed Node fails (jsonPatcher.applyPatchToCurrentObject).
                    cause = f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{fld} of type string"
                    raise ApiError(status_object(422, f"patch: Invalid value: ...: {cause}", "Invalid",
                                                 {"causes": [{"reason": "FieldValueInvalid", "message": cause,
                                                              "field": "patch"}]}))  # fmt: skip
                if value == {}:
                    del meta[fld]  # omitempty: an emptied map is not serialized
            if meta.get("name") != name:
                raise ApiError(status_object(400, f"the name of the object ({meta.get('name')}) does not match the "
                                                  f"name on the URL ({name})"))  # fmt: skip
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv not in (None, "") and wanted_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(default_status(409, "patch", name))
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            causes = validate_metadata(meta)
            if causes:
                text = [f"{c['field']}: {c['message']}" for c in causes]
                shown = text[0] if len(text) == 1 else "[" + ", ".join(text) + "]"
                raise ApiError(status_object(422, f'Node "{name}" is invalid: {shown}', "Invalid",
                                             {"name": name, "kind": "Node", "causes": causes}))  # fmt: skip
            if patched == current:
                return copy.deepcopy(current)  # no write: same resourceVersion, no watch event
            meta["resourceVersion"] = self._bump()
            self._nodes[name] = patched
            self._record("MODIFIED", patched)
            return copy.deepcopy(patched)

    def _watch_setup(
        self, query: Mapping[str, str], selector: Callable[[JSON], bool]
    ) -> tuple[list[JSON], int, JSON | None]:
        """Initial events, the history index to follow from, and an ERROR Status if the watch can't start."""
        rv_param = query.get("resourceVersion", "")
        with self._cond:
            if rv_param in ("", "0"):
                initial = [{"type": "ADDED", "object": copy.deepcopy(n)} for _, n in sorted(self._nodes.items())
                           if selector(n)]  # fmt: skip
                return initial, len(self._history), None
            if not rv_param.isdigit():
                raise ApiError(status_object(400, f'invalid resource version: strconv.ParseUint: parsing "{rv_param}": '
                                                  "invalid syntax"))  # fmt: skip
            since = int(rv_param)
            if since < self._compacted_below:
                return [], len(self._history), status_object(
                    410, f"too old resource version: {since} ({self._compacted_below})", "Expired"
                )
            start = next((i for i, e in enumerate(self._history) if e.rv > since), len(self._history))
            return [], start, None


def _field_selector(text: str) -> Callable[[JSON], bool]:
    requirements: list[tuple[str, bool, str]] = []
    for part in filter(None, text.split(",")):
        match = re.fullmatch(r"([^=!]+)(==|=|!=)(.*)", part)
        if not match:
            raise ApiError(status_object(400, f"invalid selector: '{text}'; can't understand '{part}'"))
        fld, op, value = match.groups()
        if fld != "metadata.name":
            raise ApiError(status_object(400, f'"{fld}" is not a known field selector: only "metadata.name" is '
                                              "implemented by the stand-in"))  # fmt: skip
        requirements.append((fld, op != "!=", value))
    return lambda node: all((node["metadata"]["name"] == value) == eq for _, eq, value in requirements)


def _make_handler(api: KubeStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kube-standin"
        sys_version = ""

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

        # --- plumbing -------------------------------------------------------------------------------

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
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            kind, name = _split_kind(method, split.path, query)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            content_type = self.headers.get("Content-Type")
            authorization = self.headers.get("Authorization")

            index = api._log_request(Request(method=method, kind=kind, path=split.path, query=query,
                                             content_type=content_type, body=body, authorization=authorization,
                                             status=None))  # fmt: skip

            def log(status: int) -> None:
                api._log_status(index, status)

            with api._cond:
                fault = api._take_fault(kind)
            if fault is not None and fault.delay is not None:
                api._sleep(fault.delay)
            try:
                if api.token is not None and authorization != f"Bearer {api.token}":
                    raise ApiError(status_object(401, "Unauthorized"))
                if fault is not None and fault.status is not None:
                    verb = {"get": "get", "list": "list", "watch": "watch", "patch": "patch"}.get(kind, "get")
                    raise ApiError(default_status(fault.status, verb, name))
                if kind == "get":
                    assert name is not None
                    obj = api._get(name)
                elif kind == "list":
                    obj = api._list(_field_selector(query.get("fieldSelector", "")))
                    if query.get("labelSelector"):
                        raise ApiError(status_object(400, "stand-in: labelSelector is not implemented"))
                elif kind == "patch":
                    assert name is not None
                    obj = api._patch(name, content_type or "", raw)
                elif kind == "watch":
                    self._watch(query, expire=fault is not None and fault.expire, log=log)
                    return
                else:
                    raise ApiError(status_object(404, "the server could not find the requested resource"))
            except ApiError as err:
                log(err.status["code"])
                self._send_json(err.status["code"], err.status)
                return
            log(200)
            self._send_json(200, obj)

        def _watch(self, query: Mapping[str, str], *, expire: bool, log: Callable[[int], None]) -> None:
            selector = _field_selector(query.get("fieldSelector", ""))
            if query.get("labelSelector"):
                raise ApiError(status_object(400, "stand-in: labelSelector is not implemented"))
            initial, index, error = api._watch_setup(query, selector)
            if expire:
                error = status_object(410, f"too old resource version: {query.get('resourceVersion', '')} "
                                           f"({api.resource_version})", "Expired")  # fmt: skip
            bookmarks = query.get("allowWatchBookmarks") in ("1", "true")
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
            deadline = time.monotonic() + timeout if timeout is not None else None
            log(200)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-cache, private")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with api._cond:
                api._counters.watches_open += 1
                drop_at = api._counters.drop_generation
                end_at = api._counters.end_generation
                bookmark_at = api._counters.bookmark_generation
                api._cond.notify_all()
            try:
                for event in self._events(initial, index, error, selector, bookmarks, deadline,
                                          (drop_at, end_at, bookmark_at)):  # fmt: skip
                    self._chunk(event)
                    with api._cond:
                        api._counters.events_sent += 1
                        api._cond.notify_all()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except _DroppedError:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                self.close_connection = True
            finally:
                with api._cond:
                    api._counters.watches_open -= 1
                    api._cond.notify_all()

        def _events(
            self,
            initial: list[JSON],
            index: int,
            error: JSON | None,
            selector: Callable[[JSON], bool],
            bookmarks: bool,
            deadline: float | None,
            generations: tuple[int, int, int],
        ) -> Iterator[JSON]:
            if error is not None:
                yield {"type": "ERROR", "object": error}
                return
            yield from initial
            drop_at, end_at, bookmark_at = generations
            while True:
                with api._cond:
                    while True:
                        if api._counters.drop_generation != drop_at:
                            raise _DroppedError
                        ended = (api._stopping or api._counters.end_generation != end_at
                                 or (deadline is not None and time.monotonic() >= deadline))  # fmt: skip
                        pending = [{"type": e.type, "object": copy.deepcopy(e.obj)}
                                   for e in api._history[index:] if selector(e.obj)]  # fmt: skip
                        index = len(api._history)
                        if api._counters.bookmark_generation != bookmark_at:
                            bookmark_at = api._counters.bookmark_generation
                            if bookmarks:
                                pending.append(_bookmark(api._rv))
                        if ended and bookmarks and api._counters.final_bookmark:
                            pending.append(_bookmark(api._rv))  # as the server does before a timeout ends a watch
                        if pending or ended:
                            break
                        # Wake now and then to notice a client that went away (the real server's request
                        # context is cancelled when the connection closes).
                        remaining = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
                        if not api._cond.wait(remaining) and self._peer_closed():
                            raise _DroppedError
                yield from pending
                if ended:
                    return

        def _peer_closed(self) -> bool:
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

    return Handler


class _DroppedError(Exception):
    pass


def _bookmark(rv: int) -> JSON:
    return {"type": "BOOKMARK", "object": {"kind": "Node", "apiVersion": "v1",
                                           "metadata": {"resourceVersion": str(rv)}}}  # fmt: skip
