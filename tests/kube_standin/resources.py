"""What the stand-in does for each request once routed: read, list, patch and create objects with the
real server's semantics for the ones the agent writes.

Nodes: ``PATCH nodes/{name}`` keeps the stored ``status`` and ``PATCH nodes/{name}/status`` keeps the
stored ``spec`` (``nodeStrategy`` / ``nodeStatusStrategy.PrepareForUpdate``); metadata may change
through either, and is validated. Events: created and patched under events.k8s.io/v1 validation.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

from tests.kube_standin.patching import JsonPatchError, json_patch, merge_patch, strategic_merge_patch
from tests.kube_standin.routes import Route
from tests.kube_standin.statuses import ApiError, default_status, invalid, status_object
from tests.kube_standin.store import Store
from tests.kube_standin.validation import (
    decode_errors_node_status,
    event_decode_errors,
    validate_event_create,
    validate_event_update,
    validate_metadata,
)

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# The order kube-apiserver lists them in its 415 message (patchTypes of a built-in resource).
ACCEPTED_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH, STRATEGIC_MERGE_PATCH)
# Custom resources and a few built-ins (none the agent patches) refuse strategic merge; events do not.


def _not_found(route: Route, verb: str) -> Callable[[], ApiError]:
    return lambda: ApiError(default_status(404, verb, route.name, route.plural, route.namespace))


def get(store: Store, route: Route) -> JSON:
    assert route.name is not None
    return store.get(route.collection, route.name, _not_found(route, "get"))


def field_selector(text: str) -> Callable[[JSON], bool]:
    requirements: list[tuple[str, bool, str]] = []
    for part in filter(None, text.split(",")):
        match = re.fullmatch(r"([^=!]+)(==|=|!=)(.*)", part)
        if not match:
            raise ApiError(status_object(400, f"invalid selector: '{text}'; can't understand '{part}'"))
        fld, op, value = match.groups()
        if fld != "metadata.name":
            raise ApiError(
                status_object(
                    400, f'"{fld}" is not a known field selector: only "metadata.name" is implemented by the stand-in'
                )
            )
        requirements.append((fld, op != "!=", value))
    return lambda obj: all((obj["metadata"]["name"] == value) == eq for _, eq, value in requirements)


def selector(query: dict[str, str]) -> Callable[[JSON], bool]:
    if query.get("labelSelector"):
        raise ApiError(status_object(400, "stand-in: labelSelector is not implemented"))
    return field_selector(query.get("fieldSelector", ""))


def list_(store: Store, route: Route, query: dict[str, str]) -> JSON:
    return store.list_objects(route.collection, route.object_kind, selector(query))


# --- PATCH -----------------------------------------------------------------------------------------------


def _decode_patch(content_type: str, raw: bytes) -> tuple[str, Any]:
    base = content_type.split(";", 1)[0].strip()
    if base not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH):
        accepted = ", ".join(ACCEPTED_PATCH_TYPES)
        raise ApiError(
            status_object(
                415, f"the body of the request was in an unknown format - accepted media types include: {accepted}"
            )
        )
    try:
        patch = json.loads(raw)
    except ValueError as err:
        raise ApiError(status_object(400, f"error decoding patch: {err}")) from None
    if base != JSON_PATCH and not isinstance(patch, dict):
        raise ApiError(status_object(400, "invalid JSON document"))
    return base, patch


def _apply(base: str, current: JSON, patch: Any) -> JSON:
    try:
        if base == JSON_PATCH:
            patched = json_patch(current, patch)
        elif base == MERGE_PATCH:
            patched = merge_patch(current, patch)
        else:
            patched = strategic_merge_patch(current, patch)
    except JsonPatchError as err:
        raise ApiError(
            status_object(
                422,
                "the server rejected our request due to an error in our request",
                "Invalid",
                {"causes": [{"reason": "UnexpectedServerResponse", "message": str(err)}]},
            )
        ) from None
    if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
        raise ApiError(status_object(422, "metadata: must be an object", "Invalid"))
    return patched


def _undecodable(cause: str) -> ApiError:
    """The patched object does not decode into its Go type (``jsonPatcher.applyPatchToCurrentObject``)."""
    return ApiError(
        status_object(
            422,
            f"patch: Invalid value: ...: {cause}",
            "Invalid",
            {"causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "patch"}]},
        )
    )


def _check_metadata(patched: JSON, current: JSON, route: Route) -> None:
    meta = patched["metadata"]
    for fld in ("labels", "annotations"):
        value = meta.get(fld)
        if value is not None and (not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())):
            raise _undecodable(f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{fld} of type string")
        if value == {}:
            del meta[fld]  # omitempty: an emptied map is not serialized
    if meta.get("name") != route.name:
        raise ApiError(
            status_object(
                400, f"the name of the object ({meta.get('name')}) does not match the name on the URL ({route.name})"
            )
        )
    wanted_rv = meta.get("resourceVersion")
    if wanted_rv not in (None, "") and wanted_rv != current["metadata"]["resourceVersion"]:
        raise ApiError(default_status(409, "patch", route.name, route.plural, route.namespace))


def patch(store: Store, route: Route, content_type: str, raw: bytes) -> JSON:
    """``PATCH`` of a node, a node's status or an event."""
    assert route.name is not None
    base, body = _decode_patch(content_type, raw)
    with store.cond:
        current = store.get(route.collection, route.name, _not_found(route, "patch"))
        patched = _apply(base, current, body)
        _check_metadata(patched, current, route)
        if route.object_kind == "Node":
            _node_strategy(patched, current, route)
        elif route.object_kind == "Event":
            _event_update(patched, current, route)
        else:
            raise ApiError(status_object(405, f"stand-in: PATCH of {route.resource} is not implemented"))
        return store.replace(route.collection, route.name, patched)


def _node_strategy(patched: JSON, current: JSON, route: Route) -> None:
    errors = decode_errors_node_status(patched.get("status", {}))
    if errors:
        raise _undecodable(errors[0])
    if route.resource == "nodes/status":
        patched["spec"] = copy.deepcopy(current.get("spec", {}))  # nodeStatusStrategy.PrepareForUpdate
    else:
        patched["status"] = copy.deepcopy(current.get("status", {}))  # nodeStrategy.PrepareForUpdate
    causes = validate_metadata(patched["metadata"])
    if causes:
        raise invalid("Node", "", str(route.name), causes)


def _event_update(patched: JSON, current: JSON, route: Route) -> None:
    errors = event_decode_errors(patched)
    if errors:
        raise _undecodable(errors[0])
    causes = validate_event_update(patched, current)
    if causes:
        raise invalid("Event", route.group, str(route.name), causes)


# --- POST ------------------------------------------------------------------------------------------------


def create(store: Store, route: Route, content_type: str, raw: bytes) -> JSON:
    """``POST`` of an event (the only object the agent creates)."""
    if route.object_kind != "Event":
        raise ApiError(status_object(405, f"stand-in: POST of {route.resource} is not implemented"))
    # No Content-Type means the first media type the server supports (NegotiateInputSerializerForMediaType).
    if content_type.split(";", 1)[0].strip() not in ("", "application/json"):
        accepted = "application/json, application/yaml, application/vnd.kubernetes.protobuf, application/cbor"
        raise ApiError(
            status_object(
                415, f"the body of the request was in an unknown format - accepted media types include: {accepted}"
            )
        )
    try:
        event = json.loads(raw)
    except ValueError as err:
        raise ApiError(status_object(400, f"error decoding body: {err}")) from None
    errors = ([] if isinstance(event, dict) else ["not an object"]) or event_decode_errors(event)
    if errors or event.get("kind") not in (None, "Event") or event.get("apiVersion") not in (None, "events.k8s.io/v1"):
        why = errors[0] if errors else f"kind {event.get('kind')!r}, apiVersion {event.get('apiVersion')!r}"
        raise ApiError(status_object(400, f'Event in version "v1" cannot be handled as a Event: {why}'))
    meta = event.setdefault("metadata", {})
    if meta.get("namespace") not in (None, "", route.namespace):
        raise ApiError(
            status_object(400, "the namespace of the provided object does not match the namespace sent on the request")
        )
    meta["namespace"] = route.namespace
    causes = validate_event_create(event, route.namespace)
    if causes:
        raise invalid("Event", route.group, str(meta.get("name") or ""), causes)
    event["kind"], event["apiVersion"] = "Event", "events.k8s.io/v1"
    name = meta["name"]

    def exists() -> ApiError:
        return ApiError(
            status_object(
                409,
                f'{route.plural} "{name}" already exists',
                "AlreadyExists",
                {"name": name, "group": route.group, "kind": "events"},
            )
        )

    return store.create(route.collection, event, exists=exists)
