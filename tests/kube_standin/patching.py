"""The three patch types kube-apiserver applies, for the objects the agent patches.

* RFC 7386 JSON merge patch: objects merge, ``null`` deletes, lists are replaced whole.
* Strategic merge patch: the same, except lists the Go types tag ``patchStrategy:"merge"`` are merged
  item by item on their ``patchMergeKey`` (``apimachinery/pkg/util/strategicpatch``): for a Node,
  ``status.conditions`` and ``status.addresses`` by ``type``. An item without the key is a 400, an
  item with ``$patch: delete`` removes the matching entries, other directives are refused (400) as not
  implemented here rather than applied wrongly.
* RFC 6902 JSON patch.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from tests.kube_standin.statuses import ApiError, status_object

# Lists merged by key, as (path from the object's root, merge key). Every other list is replaced.
MERGE_KEYS: Mapping[tuple[str, ...], str] = {
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
}


class JsonPatchError(Exception):
    pass


def _go_quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


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


def _bad(message: str) -> ApiError:
    return ApiError(status_object(400, message))


def _merge_list(original: Any, patch: list[Any], key: str, path: tuple[str, ...]) -> list[Any]:
    merged = [copy.deepcopy(item) for item in original] if isinstance(original, list) else []
    for item in patch:
        if not isinstance(item, dict):
            raise _bad(f"stand-in: a list item of {'.'.join(path)} must be an object")
        if key not in item:
            raise _bad(f"map: {item} does not contain declared merge key: {key}")
        directive = item.get("$patch")
        if directive == "delete":
            merged = [m for m in merged if not (isinstance(m, dict) and m.get(key) == item[key])]
            continue
        if directive is not None:
            raise _bad(f"stand-in: strategic merge directive $patch: {directive} in a list is not implemented")
        index = next((i for i, m in enumerate(merged) if isinstance(m, dict) and m.get(key) == item[key]), None)
        if index is None:
            merged.append(_strategic(None, item, path))
        else:
            merged[index] = _strategic(merged[index], item, path)
    return merged


def _strategic(target: Any, patch: Any, path: tuple[str, ...]) -> Any:
    if not isinstance(patch, dict):
        if isinstance(patch, list) and path in MERGE_KEYS:
            return _merge_list(target, patch, MERGE_KEYS[path], path)
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            raise _bad(f"stand-in: strategic merge directive {key} at /{'/'.join(path)} is not implemented")
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _strategic(result.get(key), value, (*path, key))
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch of a Node (see the module docstring for what is merged by key)."""
    return _strategic(target, patch, ())


# --- RFC 6902 ------------------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise JsonPatchError(f"doc is missing path: {_go_quote(path)}: missing value")
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
    raise JsonPatchError(f"doc is missing path: {_go_quote(path)}: missing value")


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
            raise JsonPatchError(f"unable to add to index {last} at {path}")
        parent.insert(index, value)
    else:
        raise JsonPatchError(f"doc is missing path: {_go_quote(path)}: missing value")
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
    """RFC 6902: add, remove, replace, move, copy, test (errors raise ``JsonPatchError``)."""
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
                raise JsonPatchError(f"testing value {path} failed: test failed")
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, op.get("from", ""))
            doc = _add(doc, path, value)
        else:
            raise ApiError(status_object(400, f"Unexpected kind: {kind}"))
    return doc
