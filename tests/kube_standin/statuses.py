"""``Status`` objects as kube-apiserver encodes them (``k8s.io/apimachinery/pkg/api/errors``)."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

USER = "system:serviceaccount:kube-system:rdma-node-agent"


class ApiError(Exception):
    """Answer the request with this Status."""

    def __init__(self, status: JSON) -> None:
        super().__init__(status["message"])
        self.status = status


def status_object(code: int, message: str, reason: str | None = None, details: JSON | None = None) -> JSON:
    """A ``Status`` exactly as kube-apiserver encodes it (field order included)."""
    obj: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else REASONS.get(code, ""),
    }
    if details is not None:
        obj["details"] = details
    obj["code"] = code
    return obj


def invalid(kind: str, group: str, name: str, causes: list[JSON]) -> ApiError:
    """422 ``Invalid`` (``errors.NewInvalid``) for ``causes`` of a ``kind`` object named ``name``."""
    text = [f"{c['field']}: {c['message']}" for c in causes]
    shown = text[0] if len(text) == 1 else "[" + ", ".join(text) + "]"
    qualified = f"{kind}.{group}" if group else kind
    details = (
        {"name": name, "group": group, "kind": kind, "causes": causes}
        if group
        else {"name": name, "kind": kind, "causes": causes}
    )
    return ApiError(status_object(422, f'{qualified} "{name}" is invalid: {shown}', "Invalid", details))


def default_status(code: int, verb: str, name: str | None, resource: str = "nodes", scope: str = "") -> JSON:
    """The Status the real server sends for ``code`` on a request (used by fault injection).

    ``resource`` is the plural (``nodes``, ``events.events.k8s.io``…); ``scope`` the namespace or ''."""
    target = f'{resource} "{name}"' if name else resource
    kind = resource.split(".", 1)[0]
    details: JSON = {"name": name, "kind": kind} if name else {"kind": kind}
    if code == 403:
        where = f'in the namespace "{scope}"' if scope else "at the cluster scope"
        group = resource.split(".", 1)[1] if "." in resource else ""
        text = f'cannot {verb} resource "{kind}" in API group "{group}" {where}'
        return status_object(403, f'{target} is forbidden: User "{USER}" {text}', details=details)
    if code == 404:
        return status_object(404, f"{target} not found", details=details)
    if code == 409:
        message = (
            f"Operation cannot be fulfilled on {target}: the object has been modified; "
            "please apply your changes to the latest version and try again"
        )
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


def not_found_path() -> ApiError:
    return ApiError(status_object(404, "the server could not find the requested resource"))
