"""The requests the agent sends to kube-apiserver, exactly as the generated ``CoreV1Api`` would send them.

:class:`NodeApi` offers ``list_node`` and ``list_namespaced_config_map`` (a list, or a watch through
``Watch.stream``), ``patch_node``, ``patch_node_status``, ``create_event`` and ``patch_event``; another
request is one more method that names its path, query parameters and headers and hands them to
the private ``_call``. Also the constants every request shares: field manager, content type, timeouts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from kubernetes import client

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
FIELD_MANAGER = "rdma-node-agent"


class RequestTimeout(NamedTuple):
    """Seconds to connect and to wait for each read: the (connect, read) pair ``_request_timeout`` takes."""

    connect: float
    read: float


# For ordinary requests; the server's own limit for a mutating request is 34s.
REQUEST_TIMEOUT = RequestTimeout(connect=10.0, read=30.0)

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
# The list options the agent passes (Python name → query parameter), in the order the generated list
# methods put them on the wire.
_LIST_QUERY = {
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "field_selector": "fieldSelector",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "watch": "watch",
}
Timeout = float | tuple[float, float] | None


def read_json(response: Any) -> Any:
    """The JSON body of a raw (``_preload_content=False``) response; its connection goes back to the
    pool whatever the body. ValueError when it is not JSON."""
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


class NodeApi:
    """``list_node`` and ``patch_node`` of the generated ``CoreV1Api``, for the arguments the agent
    passes, sending the very same requests (path, query parameters in the same order, headers, body,
    auth, timeouts) through the same ``ApiClient.param_serialize`` and ``call_api``, and answering like
    them with ``_preload_content=False``: the raw urllib3 response, or ``ApiException`` for a non-2xx.

    Not ``CoreV1Api`` itself: its module (kubernetes.client.api.core_v1_api) imports the generated
    models and builds pydantic validators, a large share of the agent's idle memory for two requests
    (docs/benchmarks.md has the figures). Nothing in this package imports it
    (tests/unit/test_kube_memory.py checks)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def list_node(
        self, *, _preload_content: bool, _request_timeout: Timeout = None, **query: bool | str | int | None
    ) -> Any:
        """``GET /api/v1/nodes`` — a list, or with ``watch=True`` (added by ``Watch.stream``) a watch.
        ``query``: the list options of :data:`_LIST_QUERY`."""
        return self._list("/api/v1/nodes", {}, query, _preload_content, _request_timeout)

    def list_namespaced_config_map(
        self,
        namespace: str,
        *,
        _preload_content: bool,
        _request_timeout: Timeout = None,
        **query: bool | str | int | None,
    ) -> Any:
        """``GET /api/v1/namespaces/{namespace}/configmaps`` (``CoreV1Api.list_namespaced_config_map``)."""
        path = "/api/v1/namespaces/{namespace}/configmaps"
        return self._list(path, {"namespace": namespace}, query, _preload_content, _request_timeout)

    def patch_node(
        self,
        name: str,
        body: Mapping[str, Any],
        *,
        field_manager: str | None = None,
        _content_type: str | None = None,
        _preload_content: bool,
        _request_timeout: Timeout = None,
    ) -> Any:
        """``PATCH /api/v1/nodes/{name}`` with ``body`` as ``_content_type`` (default: JSON patch)."""
        return self._patch(
            "/api/v1/nodes/{name}",
            {"name": name},
            body,
            field_manager,
            _content_type,
            _preload_content,
            _request_timeout,
        )

    def patch_node_status(
        self,
        name: str,
        body: Mapping[str, Any],
        *,
        field_manager: str | None = None,
        _content_type: str | None = None,
        _preload_content: bool,
        _request_timeout: Timeout = None,
    ) -> Any:
        """``PATCH /api/v1/nodes/{name}/status`` (``CoreV1Api.patch_node_status``)."""
        return self._patch(
            "/api/v1/nodes/{name}/status",
            {"name": name},
            body,
            field_manager,
            _content_type,
            _preload_content,
            _request_timeout,
        )

    def create_event(
        self,
        namespace: str,
        body: Mapping[str, Any],
        *,
        field_manager: str | None = None,
        _preload_content: bool,
        _request_timeout: Timeout = None,
    ) -> Any:
        """``POST /apis/events.k8s.io/v1/namespaces/{namespace}/events`` (``EventsV1Api.create_namespaced_event``)."""
        return self._call(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/{namespace}/events",
            path_params={"namespace": namespace},
            query={"fieldManager": field_manager},
            accepts=_PATCH_ACCEPTS,
            body=body,  # no Content-Type, as EventsV1Api sends it: the server then reads JSON
            preload_content=_preload_content,
            request_timeout=_request_timeout,
        )

    def patch_event(
        self,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        *,
        field_manager: str | None = None,
        _preload_content: bool,
        _request_timeout: Timeout = None,
    ) -> Any:
        """``PATCH /apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}`` with a merge patch
        (``EventsV1Api.patch_namespaced_event``)."""
        path = "/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}"
        return self._patch(
            path,
            {"namespace": namespace, "name": name},
            body,
            field_manager,
            MERGE_PATCH,
            _preload_content,
            _request_timeout,
        )

    def _list(
        self,
        path: str,
        path_params: Mapping[str, str],
        query: Mapping[str, bool | str | int | None],
        preload_content: bool,
        request_timeout: Timeout,
    ) -> Any:
        unknown = sorted(set(query) - set(_LIST_QUERY))
        if unknown:
            raise TypeError(f"unexpected list options: {', '.join(unknown)}")
        return self._call(
            "GET",
            path,
            path_params=path_params,
            query={wire: query.get(name) for name, wire in _LIST_QUERY.items()},
            accepts=_LIST_ACCEPTS,
            preload_content=preload_content,
            request_timeout=request_timeout,
        )

    def _patch(
        self,
        path: str,
        path_params: Mapping[str, str],
        body: Mapping[str, Any],
        field_manager: str | None,
        content_type: str | None,
        preload_content: bool,
        request_timeout: Timeout,
    ) -> Any:
        return self._call(
            "PATCH",
            path,
            path_params=path_params,
            query={"fieldManager": field_manager},
            accepts=_PATCH_ACCEPTS,
            body=body,
            content_type=content_type,
            content_types=_PATCH_CONTENT_TYPES,
            preload_content=preload_content,
            request_timeout=request_timeout,
        )

    def _call(
        self,
        method: str,
        resource_path: str,
        *,
        path_params: Mapping[str, str] | None = None,
        query: Mapping[str, Any],
        accepts: list[str],
        body: Any = None,
        content_type: str | None = None,
        content_types: list[str] | None = None,
        preload_content: bool,
        request_timeout: Timeout,
    ) -> Any:
        """Send one request as a generated ``CoreV1Api`` method does: query parameters in ``query``'s order,
        those that are None left out; ``Accept`` picked from ``accepts``; when the method takes a body
        (``content_types`` given), ``Content-Type`` is ``content_type`` or else picked from ``content_types``.
        Answers the raw urllib3 response, or raises ``ApiException`` for a non-2xx."""
        if preload_content:
            raise TypeError("NodeApi answers raw responses only: pass _preload_content=False")
        headers = {"Accept": self.api_client.select_header_accept(accepts)}
        if content_types is not None:
            headers["Content-Type"] = content_type or self.api_client.select_header_content_type(content_types)
        request = self.api_client.param_serialize(
            method=method,
            resource_path=resource_path,
            path_params=dict(path_params or {}),
            query_params=[(key, value) for key, value in query.items() if value is not None],
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
