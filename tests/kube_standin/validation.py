"""What kube-apiserver validates on the objects the agent writes, with the real messages.

Labels and annotations (``k8s.io/apimachinery/pkg/api/validate/content``, ``ValidateObjectMeta``),
the times of Node conditions (``metav1.Time`` decodes RFC 3339 only), and events.k8s.io/v1 Events
(``pkg/apis/core/validation/events.go``: ``ValidateEventCreate`` / ``ValidateEventUpdate``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

JSON = dict[str, Any]


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
        causes.append(
            {"reason": "FieldValueInvalid", "message": f"Invalid value: {_go_quote(value)}: {msg}", "field": fld}
        )

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
        causes.append(
            {
                "reason": "FieldValueTooLong",
                "message": f"Too long: may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes",
                "field": "metadata.annotations",
            }
        )
    return causes


# --- Node status ---------------------------------------------------------------------------------------

# metav1.Time.UnmarshalJSON: time.Parse(time.RFC3339, …) — fractional seconds allowed, an offset required.
_RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
# metav1.MicroTime.UnmarshalJSON: time.Parse(RFC3339Micro, …) with RFC3339Micro = "2006-01-02T15:04:05.000000Z07:00".
_MICRO_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})")
_CONDITION_TIMES = ("lastHeartbeatTime", "lastTransitionTime")


def decode_errors_node_status(status: Any) -> list[str]:
    """Why the patched ``status`` would not decode into a typed ``NodeStatus`` (empty: it would)."""
    if not isinstance(status, dict):
        return ["json: cannot unmarshal into Go struct field Node.status of type v1.NodeStatus"]
    conditions = status.get("conditions", [])
    if not isinstance(conditions, list):
        return ["json: cannot unmarshal into Go struct field NodeStatus.status.conditions of type []v1.NodeCondition"]
    errs: list[str] = []
    for condition in conditions:
        if not isinstance(condition, dict):
            errs.append(
                "json: cannot unmarshal into Go struct field NodeStatus.status.conditions of type v1.NodeCondition"
            )
            continue
        for key, value in condition.items():
            if (
                key in _CONDITION_TIMES
                and value is not None
                and not (isinstance(value, str) and _RFC3339_RE.fullmatch(value))
            ):
                errs.append(f'parsing time {_go_quote(str(value))} as "2006-01-02T15:04:05Z07:00": cannot parse')
            elif key not in _CONDITION_TIMES and not isinstance(value, str):
                errs.append(
                    f"json: cannot unmarshal into Go struct field NodeCondition.status.conditions.{key} of type string"
                )
    return errs


# --- events.k8s.io/v1 Event ------------------------------------------------------------------------------

REPORTING_INSTANCE_LENGTH_LIMIT = 128
ACTION_LENGTH_LIMIT = 128
REASON_LENGTH_LIMIT = 128
NOTE_LENGTH_LIMIT = 1024
_DEPRECATED = ("deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount", "deprecatedSource")
_IMMUTABLE = (
    "regarding",
    "reason",
    "note",
    "deprecatedSource",
    "deprecatedFirstTimestamp",
    "deprecatedLastTimestamp",
    "deprecatedCount",
    "type",
    "eventTime",
    "action",
    "related",
    "reportingController",
    "reportingInstance",
)
# The internal field names the server's messages use for the v1 names.
_INTERNAL = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingController",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}


def _required(fld: str) -> JSON:
    return {"reason": "FieldValueRequired", "message": "Required value", "field": fld}


def _invalid(fld: str, value: Any, msg: str) -> JSON:
    shown = _go_quote(value) if isinstance(value, str) else json.dumps(value)
    return {"reason": "FieldValueInvalid", "message": f"Invalid value: {shown}: {msg}", "field": fld}


def event_decode_errors(event: Mapping[str, Any]) -> list[str]:
    """Why the body would not decode into a typed ``events/v1.Event`` (bad times, wrong types)."""
    errs = []
    for fld in ("eventTime",):
        value = event.get(fld)
        if value is not None and not (isinstance(value, str) and _MICRO_TIME_RE.fullmatch(value)):
            errs.append(f'parsing time {_go_quote(str(value))} as "2006-01-02T15:04:05.000000Z07:00": cannot parse')
    series = event.get("series")
    if series is not None:
        if not isinstance(series, dict):
            errs.append("json: cannot unmarshal into Go struct field Event.series of type v1.EventSeries")
        else:
            observed = series.get("lastObservedTime")
            if observed is not None and not (isinstance(observed, str) and _MICRO_TIME_RE.fullmatch(observed)):
                errs.append(
                    f'parsing time {_go_quote(str(observed))} as "2006-01-02T15:04:05.000000Z07:00": cannot parse'
                )
            if "count" in series and not isinstance(series["count"], int):
                errs.append("json: cannot unmarshal into Go struct field EventSeries.series.count of type int32")
    for fld in ("reportingController", "reportingInstance", "action", "reason", "note", "type"):
        if fld in event and not isinstance(event[fld], str):
            errs.append(f"json: cannot unmarshal into Go struct field Event.{fld} of type string")
    for fld in ("regarding", "related"):
        if event.get(fld) is not None and not isinstance(event[fld], dict):
            errs.append(f"json: cannot unmarshal into Go struct field Event.{fld} of type v1.ObjectReference")
    return errs


def _series_causes(event: Mapping[str, Any]) -> list[JSON]:
    series = event.get("series")
    if series is None:
        return []
    causes = []
    if int(series.get("count") or 0) < 2:
        causes.append(_invalid("series.count", "", "should be at least 2"))
    if not series.get("lastObservedTime"):
        causes.append(_required("series.lastObservedTime"))
    return causes


def _legacy_causes(event: Mapping[str, Any], namespace: str) -> list[JSON]:
    """``legacyValidateEvent`` for an event with ``eventTime`` set."""
    causes: list[JSON] = []
    regarding = event.get("regarding") or {}
    if not regarding.get("namespace") and namespace not in ("default", "kube-system"):
        causes.append(
            _invalid("involvedObject.namespace", regarding.get("namespace", ""), "does not match event.namespace")
        )
    controller = event.get("reportingController") or ""
    if not controller:
        causes.append(_required("reportingController"))
    causes += [_invalid("reportingController", controller, m) for m in is_qualified_name(controller)]
    for fld, limit in (
        ("reportingInstance", REPORTING_INSTANCE_LENGTH_LIMIT),
        ("action", ACTION_LENGTH_LIMIT),
        ("reason", REASON_LENGTH_LIMIT),
    ):
        value = event.get(fld) or ""
        if not value:
            causes.append(_required(fld))
        if len(value) > limit:
            causes.append(_invalid(fld, "", f"can have at most {limit} characters"))
    if len(event.get("note") or "") > NOTE_LENGTH_LIMIT:
        causes.append(_invalid("message", "", f"can have at most {NOTE_LENGTH_LIMIT} characters"))
    return causes


def validate_event_create(event: Mapping[str, Any], namespace: str) -> list[JSON]:
    """``ValidateEventCreate`` for a request to events.k8s.io/v1 (the strict branch)."""
    causes: list[JSON] = []
    if event.get("eventTime"):
        causes += _legacy_causes(event, namespace)
    causes += [_invalid("namespace", namespace, m) for m in is_dns1123_subdomain(namespace)]
    meta = event.get("metadata") or {}
    name = meta.get("name") or ""
    if not name:
        causes.append(
            {
                "reason": "FieldValueRequired",
                "message": "Required value: name or generateName is required",
                "field": "metadata.name",
            }
        )
    causes += [_invalid("metadata.name", name, m) for m in is_dns1123_subdomain(name)] if name else []
    causes += validate_metadata(meta)
    causes += _series_causes(event)
    if not event.get("eventTime"):
        causes.append(_required("eventTime"))
    if event.get("type") not in ("Normal", "Warning"):
        causes.append(_invalid("type", "", f"has invalid value: {event.get('type') or ''}"))
    for fld in _DEPRECATED:
        if event.get(fld):
            causes.append(_invalid(_INTERNAL[fld], "", "needs to be unset"))
    return causes


def validate_event_update(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[JSON]:
    """``ValidateEventUpdate`` for events.k8s.io/v1: the series may change, nearly nothing else."""
    causes = validate_metadata(new.get("metadata") or {})
    if new.get("series") != old.get("series"):
        causes += _series_causes(new)
    for fld in _IMMUTABLE:
        if new.get(fld) != old.get(fld):
            causes.append(_invalid(_INTERNAL.get(fld, fld), new.get(fld), "field is immutable"))
    return causes
