"""A failed request to kube-apiserver, in words: :func:`describe_failure` turns whatever the client or the
transport raised (:data:`TRANSPORT_ERRORS`) into an :class:`ApiFailure` for logs, results and metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass

import urllib3
from kubernetes import client


@dataclass(frozen=True, kw_only=True, slots=True)
class ApiFailure:
    """One failed request, in words: the HTTP status (None for transport errors) and a one-line reason."""

    status: int | None
    reason: str  # the Status reason (Forbidden, Conflict, …) or the transport error's class
    message: str

    def __str__(self) -> str:
        code = f"HTTP {self.status} " if self.status is not None else ""
        return f"{code}{self.reason}: {self.message}"


def one_line(err: BaseException) -> str:
    """``err`` as one line of text (whitespace runs collapsed); its class name when it says nothing."""
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
        return ApiFailure(status=None, reason="Timeout", message=one_line(err))
    return ApiFailure(status=None, reason=type(err).__name__, message=one_line(err))


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    client.ApiException,
    urllib3.exceptions.HTTPError,  # timeouts, refused connections, streams cut mid-chunk
    OSError,
    ValueError,  # a body that is not JSON
)


def not_observed(node: str) -> ApiFailure:
    """Nothing can be written before the watch has listed the Node: there is nothing to compare with."""
    return ApiFailure(status=None, reason="NotObserved", message=f"node {node} is not known yet (watch not synced)")
