"""The stand-in models what the real server does with the writes the agent makes beyond labels:
strategic merge of Node conditions (and how a merge patch differs), the status subresource, and
events.k8s.io/v1 validation. Requests go through the real ``kubernetes`` client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from agent.publish.kube.api import NodeApi
from tests.builders import KUBELET_CONDITIONS as KUBELET
from tests.kube_standin import JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, KubeStandIn

NODE = "gpu-node-1"
OURS = {
    "type": "RDMAReady",
    "status": "True",
    "reason": "RDMAReady",
    "message": "RDMA is usable",
    "lastHeartbeatTime": "2026-01-01T00:00:05Z",
    "lastTransitionTime": "2026-01-01T00:00:05Z",
}


@pytest.fixture
def api() -> Iterator[KubeStandIn]:
    with KubeStandIn() as server:
        server.put_node(NODE, conditions=[dict(c) for c in KUBELET])
        yield server


def patch_status(api_client: Any, body: Any, content_type: str) -> Any:
    v1 = client.CoreV1Api(api_client)
    response: Any = v1.patch_node_status(NODE, body, _content_type=content_type, _preload_content=False)
    return json.loads(response.data)


def failure(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(client.ApiException) as info:
        call()
    assert info.value.body is not None
    body: dict[str, Any] = json.loads(info.value.body)
    assert body["kind"] == "Status" and body["code"] == info.value.status
    return body


# --- Node conditions ---------------------------------------------------------------------------------


def test_strategic_merge_adds_a_condition_and_keeps_the_kubelets(api: KubeStandIn, api_client: Any) -> None:
    answer = patch_status(api_client, {"status": {"conditions": [OURS]}}, STRATEGIC_MERGE_PATCH)
    assert answer["status"]["conditions"] == [*KUBELET, OURS]
    assert api.conditions(NODE) == {c["type"]: c for c in [*KUBELET, OURS]}
    assert api.count("patch", resource="nodes/status") == 1


def test_strategic_merge_merges_a_condition_field_by_field(api: KubeStandIn, api_client: Any) -> None:
    patch_status(api_client, {"status": {"conditions": [OURS]}}, STRATEGIC_MERGE_PATCH)
    patch_status(
        api_client, {"status": {"conditions": [{"type": "RDMAReady", "status": "False"}]}}, STRATEGIC_MERGE_PATCH
    )
    got = api.conditions(NODE)["RDMAReady"]
    assert got == {**OURS, "status": "False"}  # reason and message survive unless sent: send every field
    assert api.conditions(NODE)["Ready"] == KUBELET[1]


def test_a_merge_patch_replaces_the_whole_list(api: KubeStandIn, api_client: Any) -> None:
    """Why the agent must not use a JSON merge patch on conditions: the kubelet's would vanish."""
    patch_status(api_client, {"status": {"conditions": [OURS]}}, MERGE_PATCH)
    assert list(api.conditions(NODE)) == ["RDMAReady"]


def test_delete_directive_removes_only_that_type(api: KubeStandIn, api_client: Any) -> None:
    patch_status(api_client, {"status": {"conditions": [OURS]}}, STRATEGIC_MERGE_PATCH)
    patch_status(
        api_client, {"status": {"conditions": [{"type": "RDMAReady", "$patch": "delete"}]}}, STRATEGIC_MERGE_PATCH
    )
    assert list(api.conditions(NODE)) == ["MemoryPressure", "Ready"]


def test_status_patch_keeps_spec_and_node_patch_keeps_status(api: KubeStandIn, api_client: Any) -> None:
    rv = api.resource_version
    patch_status(api_client, {"spec": {"unschedulable": True}, "status": {"conditions": [OURS]}}, STRATEGIC_MERGE_PATCH)
    assert api.node(NODE)["spec"] == {} and "RDMAReady" in api.conditions(NODE)
    v1 = client.CoreV1Api(api_client)
    v1.patch_node(NODE, {"status": {"conditions": None}, "metadata": {"labels": {"a": "b"}}}, _content_type=MERGE_PATCH)
    assert api.labels(NODE)["a"] == "b" and "RDMAReady" in api.conditions(NODE)
    assert api.resource_version == rv + 2


def test_same_condition_again_is_no_write(api: KubeStandIn, api_client: Any) -> None:
    patch_status(api_client, {"status": {"conditions": [OURS]}}, STRATEGIC_MERGE_PATCH)
    rv, sent = api.resource_version, api.events_sent
    patch_status(api_client, {"status": {"conditions": [OURS]}}, STRATEGIC_MERGE_PATCH)
    assert (api.resource_version, api.events_sent) == (rv, sent)


STATUS_REFUSALS = [
    (
        "item without its merge key",
        {"status": {"conditions": [{"status": "True"}]}},
        STRATEGIC_MERGE_PATCH,
        400,
        "does not contain declared merge key: type",
    ),
    (
        "heartbeat not RFC 3339",
        {"status": {"conditions": [{**OURS, "lastHeartbeatTime": "2026-01-01 00:00:00"}]}},
        STRATEGIC_MERGE_PATCH,
        422,
        "parsing time",
    ),
    (
        "heartbeat without a zone",
        {"status": {"conditions": [{**OURS, "lastHeartbeatTime": "2026-01-01T00:00:00"}]}},
        STRATEGIC_MERGE_PATCH,
        422,
        "parsing time",
    ),
    (
        "unimplemented directive",
        {"status": {"$setElementOrder/conditions": [{"type": "Ready"}]}},
        STRATEGIC_MERGE_PATCH,
        400,
        "not implemented",
    ),
    ("json patch by index", [{"op": "remove", "path": "/status/conditions/5"}], JSON_PATCH, 422, "rejected"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "code", "fragment"), [c[1:] for c in STATUS_REFUSALS], ids=[c[0] for c in STATUS_REFUSALS]
)
def test_status_patch_refusals(
    api: KubeStandIn, api_client: Any, body: Any, content_type: str, code: int, fragment: str
) -> None:
    rv = api.resource_version
    status = failure(lambda: patch_status(api_client, body, content_type))
    assert status["code"] == code and fragment in status["message"]
    assert api.resource_version == rv and api.conditions(NODE) == {c["type"]: c for c in KUBELET}


# --- events.k8s.io/v1 --------------------------------------------------------------------------------

EVENT_NAME = f"{NODE}.1879a2b3c4d5e6f7"
EVENT = {
    "apiVersion": "events.k8s.io/v1",
    "kind": "Event",
    "metadata": {"name": EVENT_NAME, "namespace": "default"},
    "eventTime": "2026-01-01T00:00:00.123456Z",
    "reportingController": "rdma-node-agent",
    "reportingInstance": f"rdma-node-agent-{NODE}",
    "action": "CheckReadiness",
    "reason": "RDMANotReady",
    "type": "Warning",
    "note": "PortDown: port_link_up: no RDMA port is ACTIVE",
    "regarding": {"kind": "Node", "apiVersion": "v1", "name": NODE, "uid": NODE},
}


# The agent's NodeApi sends these as EventsV1Api would, minus the client-side model validation, which
# would stop the malformed bodies below before they reach the server.


def create(api_client: Any, body: Any, namespace: str = "default") -> dict[str, Any]:
    response = NodeApi(api_client).create_event(namespace, body, _preload_content=False)
    assert response.status == 201
    return json.loads(response.data)  # type: ignore[no-any-return]


def patch_event(api_client: Any, body: Any) -> dict[str, Any]:
    response = NodeApi(api_client).patch_event("default", EVENT_NAME, body, _preload_content=False)
    return json.loads(response.data)  # type: ignore[no-any-return]


def test_a_valid_event_is_created_then_its_series_patched(api: KubeStandIn, api_client: Any) -> None:
    answer = create(api_client, EVENT)
    assert answer["metadata"]["uid"] and answer["metadata"]["resourceVersion"]
    series = {"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}}
    assert patch_event(api_client, series)["series"] == series["series"]
    assert api.events() == [{**EVENT, **series, "metadata": api.events()[0]["metadata"]}]
    assert api.count("create", resource="events") == 1 and api.count("patch", resource="events") == 1


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in EVENT.items() if k != key}


EVENT_REFUSALS: list[tuple[str, Any, str, int, str]] = [
    (
        "eventTime with 3 fractional digits",
        {**EVENT, "eventTime": "2026-01-01T00:00:00.123Z"},
        "default",
        400,
        "parsing time",
    ),
    ("no eventTime", _without("eventTime"), "default", 422, "eventTime: Required value"),
    (
        "controller not a qualified name",
        {**EVENT, "reportingController": "rdma node agent"},
        "default",
        422,
        "reportingController: Invalid value",
    ),
    ("no action", _without("action"), "default", 422, "action: Required value"),
    ("reason over 128", {**EVENT, "reason": "R" * 129}, "default", 422, "can have at most 128 characters"),
    ("note over 1 KiB", {**EVENT, "note": "n" * 1025}, "default", 422, "can have at most 1024 characters"),
    ("type Info", {**EVENT, "type": "Info"}, "default", 422, "type: Invalid value"),
    (
        "series of one",
        {**EVENT, "series": {"count": 1, "lastObservedTime": EVENT["eventTime"]}},
        "default",
        422,
        "should be at least 2",
    ),
    ("deprecated count set", {**EVENT, "deprecatedCount": 3}, "default", 422, "needs to be unset"),
    (
        "a Node's event outside default/kube-system",
        {**EVENT, "metadata": {"name": "e.1"}},
        "monitoring",
        422,
        "does not match event.namespace",
    ),
    ("namespace differs from the URL", EVENT, "kube-system", 400, "does not match the namespace"),
    ("name not a DNS subdomain", {**EVENT, "metadata": {"name": "Gpu_Node.1"}}, "default", 422, "metadata.name"),
]


@pytest.mark.parametrize(
    ("body", "namespace", "code", "fragment"), [c[1:] for c in EVENT_REFUSALS], ids=[c[0] for c in EVENT_REFUSALS]
)
def test_event_create_refusals(
    api: KubeStandIn, api_client: Any, body: Any, namespace: str, code: int, fragment: str
) -> None:
    status = failure(lambda: create(api_client, body, namespace))
    assert status["code"] == code and fragment in status["message"], status
    assert api.events(namespace) == []


def test_event_name_taken_is_a_conflict(api: KubeStandIn, api_client: Any) -> None:
    create(api_client, EVENT)
    status = failure(lambda: create(api_client, EVENT))
    assert (status["code"], status["reason"]) == (409, "AlreadyExists")


@pytest.mark.parametrize(
    "change",
    [{"reason": "Other"}, {"note": "changed"}, {"type": "Normal"}, {"regarding": {"kind": "Node", "name": "x"}}],
)
def test_an_event_is_immutable_but_for_its_series(api: KubeStandIn, api_client: Any, change: dict[str, Any]) -> None:
    create(api_client, EVENT)
    status = failure(lambda: patch_event(api_client, change))
    assert status["code"] == 422 and "field is immutable" in status["message"]
    assert api.events()[0]["reason"] == EVENT["reason"] and api.events()[0]["note"] == EVENT["note"]
