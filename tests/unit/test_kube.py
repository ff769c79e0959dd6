"""The Kubernetes side (agent/publish/kube/) driven through the real ``kubernetes`` client against the
kube-apiserver stand-in (tests/kube_standin.py): the stand-in's wire format and validation, client
configuration, the Node watch (sync, events, resume, 410, every injected fault, prompt stop), and the
label publisher (convergence, ownership, zero writes in steady state, one patch per change, faults).
"""

from __future__ import annotations

import copy
import json
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from agent.config import Config
from agent.errors import ConfigError
from agent.labelsyntax import validate_label
from agent.publish import labels as label_rules
from agent.publish.kube.api import FIELD_MANAGER, MERGE_PATCH, NodeApi
from agent.publish.kube.backoff import Backoff
from agent.publish.kube.client import KubernetesUnavailable, load_api_client, node_name
from agent.publish.kube.failures import describe_failure
from agent.publish.kube.node_labels import NodeLabelPublisher
from agent.publish.kube.watch import WATCH_READ_MARGIN, NodeWatcher, ObservedNode, compare_resource_versions
from tests.kube_standin import (
    JSON_PATCH,
    STRATEGIC_MERGE_PATCH,
    KubeStandIn,
    is_qualified_name,
    is_valid_label_value,
)

NODE = "gpu-node-1"
PREFIX = "rdma.spidernet.io/"
FOREIGN = {
    "kubernetes.io/hostname": NODE,
    "nvidia.com/gpu.present": "true",
    "feature.node.kubernetes.io/pci-15b3.present": "true",
    PREFIX + "set-by-admin": "keep-me",  # under our prefix but not recorded as ours: never touched
}
DESIRED = {PREFIX + "capable": "true", PREFIX + "netns-mode": "shared", PREFIX + "pci-15b3-1017": "true"}
WAIT = 10.0  # bound on every wait; the tests never sleep to synchronise
FAST = {"initial": 0.005, "maximum": 0.05}


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[KubeStandIn]:
    with KubeStandIn() as server:
        server.put_node(
            NODE,
            labels=FOREIGN,
            capacity={"spidernet.io/hca_shared_devices": "8"},
            allocatable={"spidernet.io/hca_shared_devices": "8"},
        )
        server.put_node("other-node", labels={PREFIX + "capable": "false"})
        yield server


def make_watcher(api_client: Any, **kwargs: Any) -> NodeWatcher:
    rng = random.Random(1)  # noqa: S311 - jitter
    options: dict[str, Any] = {"backoff": Backoff(**FAST, rng=rng), "watch_timeout": 300, "request_timeout": (2.0, 2.0)}
    options.update(kwargs)
    return NodeWatcher(api_client, NODE, **options)


@pytest.fixture
def watcher(api_client: Any, api: KubeStandIn) -> Iterator[NodeWatcher]:
    w = make_watcher(api_client).start()
    assert w.wait_synced(WAIT)
    assert api.wait_for(lambda s: s.watches_open == 1, WAIT)
    yield w
    w.stop()


@pytest.fixture
def publisher(api_client: Any, watcher: NodeWatcher) -> NodeLabelPublisher:
    return NodeLabelPublisher(api_client, watcher, prefix=PREFIX, request_timeout=(2.0, 2.0))


def caught_up(watcher: NodeWatcher, api: KubeStandIn) -> None:
    """Wait until the watch has delivered the server's current version of the node."""
    want = api.node(NODE)["metadata"]["resourceVersion"]
    assert watcher.wait_until(lambda w: (o := w.observed()) is not None and o.resource_version == want, WAIT), (
        f"watch did not deliver resourceVersion {want}: {watcher.stats()}"
    )


def ours(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith(PREFIX) and k != PREFIX + "set-by-admin"}


def foreign(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k in FOREIGN}


# --- the stand-in speaks the real API ---------------------------------------------------------------


def raw_patch(v1: Any, body: Any, content_type: str, name: str = NODE) -> Any:
    return v1.patch_node(name, body, _content_type=content_type, _preload_content=False)


def status_of(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(client.ApiException) as info:
        call()
    assert info.value.body is not None
    body: dict[str, Any] = json.loads(info.value.body)
    assert info.value.status == body["code"]
    assert list(body)[:6] == ["kind", "apiVersion", "metadata", "status", "message", "reason"]
    assert (body["kind"], body["apiVersion"], body["metadata"], body["status"]) == ("Status", "v1", {}, "Failure")
    return body


STATUS_CASES = [
    # (what, request, code, reason, a fragment of the message)
    ("get a missing node", lambda v1: v1.read_node("nope"), 404, "NotFound", 'nodes "nope" not found'),
    (
        "patch a missing node",
        lambda v1: raw_patch(v1, {"metadata": {"labels": {"a": "b"}}}, MERGE_PATCH, "nope"),
        404,
        "NotFound",
        'nodes "nope" not found',
    ),
    (
        "apply is not served",
        lambda v1: raw_patch(v1, {}, "application/apply-patch+yaml"),
        415,
        "UnsupportedMediaType",
        "accepted media types include: application/json-patch+json",
    ),
    (
        "invalid label value",
        lambda v1: raw_patch(v1, {"metadata": {"labels": {PREFIX + "x": "a b"}}}, MERGE_PATCH),
        422,
        "Invalid",
        'Node "gpu-node-1" is invalid: metadata.labels: Invalid value: "a b": a valid label must',
    ),
    (
        "invalid label key",
        lambda v1: raw_patch(v1, {"metadata": {"labels": {"Bad_Prefix/x": "1"}}}, MERGE_PATCH),
        422,
        "Invalid",
        "prefix part a lowercase RFC 1123 subdomain",
    ),
    (
        "label value not a string",
        lambda v1: raw_patch(v1, {"metadata": {"labels": {"a": 1}}}, MERGE_PATCH),
        422,
        "Invalid",
        "cannot unmarshal",
    ),
    (
        "annotations over 256 KiB",
        lambda v1: raw_patch(v1, {"metadata": {"annotations": {"a": "x" * 262144}}}, MERGE_PATCH),
        422,
        "Invalid",
        "Too long",
    ),
    (
        "stale resourceVersion precondition",
        lambda v1: raw_patch(v1, {"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}}, MERGE_PATCH),
        409,
        "Conflict",
        "the object has been modified",
    ),
    (
        "json patch test fails",
        lambda v1: raw_patch(v1, [{"op": "test", "path": "/metadata/labels/nope", "value": "x"}], JSON_PATCH),
        422,
        "Invalid",
        "rejected our request",
    ),
    (
        "json patch removes a missing label",
        lambda v1: raw_patch(v1, [{"op": "remove", "path": "/metadata/labels/nope"}], JSON_PATCH),
        422,
        "Invalid",
        "rejected",
    ),
]


@pytest.mark.parametrize(
    ("request_", "code", "reason", "fragment"), [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES]
)
def test_standin_errors_are_real_status_objects(
    api: KubeStandIn, api_client: Any, request_: Callable[[Any], Any], code: int, reason: str, fragment: str
) -> None:
    rv_before = api.resource_version
    body = status_of(lambda: request_(client.CoreV1Api(api_client)))
    assert (body["code"], body["reason"]) == (code, reason)
    assert fragment in body["message"]
    if code == 422 and "is invalid" in body["message"]:
        assert body["details"]["kind"] == "Node" and body["details"]["causes"][0]["field"].startswith("metadata.")
    assert api.resource_version == rv_before  # a refused request changes nothing


def test_standin_rejects_missing_credentials(api: KubeStandIn) -> None:
    configuration = client.Configuration(host=api.url)
    body = status_of(lambda: client.CoreV1Api(client.ApiClient(configuration)).read_node(NODE))
    assert (body["code"], body["reason"]) == (401, "Unauthorized")


PATCH_CASES = [
    # (what, content type, body, labels afterwards (ours/test keys only))
    (
        "merge patch sets and null deletes",
        MERGE_PATCH,
        {"metadata": {"labels": {"t/a": "1", "t/b": None}}},
        {"t/a": "1", "t/c": "3"},
    ),
    (
        "strategic merge patch on the labels map",
        STRATEGIC_MERGE_PATCH,
        {"metadata": {"labels": {"t/a": "1", "t/c": None}}},
        {"t/a": "1", "t/b": "2"},
    ),
    (
        "json patch add/replace/remove/test",
        JSON_PATCH,
        [
            {"op": "test", "path": "/metadata/labels/t~1b", "value": "2"},
            {"op": "add", "path": "/metadata/labels/t~1a", "value": "1"},
            {"op": "replace", "path": "/metadata/labels/t~1c", "value": "30"},
            {"op": "remove", "path": "/metadata/labels/t~1b"},
        ],
        {"t/a": "1", "t/c": "30"},
    ),
]


@pytest.mark.parametrize(
    ("content_type", "body", "expected"), [c[1:] for c in PATCH_CASES], ids=[c[0] for c in PATCH_CASES]
)
def test_standin_patch_semantics(
    api: KubeStandIn, api_client: Any, content_type: str, body: Any, expected: dict[str, str]
) -> None:
    api.update_node(NODE, lambda n: n["metadata"]["labels"].update({"t/b": "2", "t/c": "3"}))
    rv_before = api.resource_version
    response = raw_patch(client.CoreV1Api(api_client), body, content_type)
    answer = json.loads(response.data)
    labels = {k: v for k, v in api.labels(NODE).items() if k.startswith("t/")}
    assert labels == expected
    assert answer["metadata"]["labels"] == api.labels(NODE)
    assert answer["metadata"]["resourceVersion"] == str(rv_before + 1)
    assert api.patches()[-1].content_type == content_type


def test_standin_noop_patch_writes_nothing(api: KubeStandIn, api_client: Any) -> None:
    rv_before, events_before = api.resource_version, api.events_sent
    node_rv = api.node(NODE)["metadata"]["resourceVersion"]
    answer = json.loads(raw_patch(client.CoreV1Api(api_client), {"metadata": {"labels": FOREIGN}}, MERGE_PATCH).data)
    assert answer["metadata"]["resourceVersion"] == node_rv
    assert api.resource_version == rv_before and api.events_sent == events_before


LABEL_SYNTAX = [
    # (key, value, valid) — cases from apimachinery's validation tests
    ("rdma.spidernet.io/capable", "true", True),
    ("rdma.spidernet.io/pci-15b3-1017", "", True),
    ("simple", "MyValue", True),
    ("rdma.spidernet.io/" + "a" * 63, "v", True),
    ("rdma.spidernet.io/" + "a" * 64, "v", False),
    ("rdma.spidernet.io/x", "a" * 63, True),
    ("rdma.spidernet.io/x", "a" * 64, False),
    ("rdma.spidernet.io/x", "has space", False),
    ("rdma.spidernet.io/x", "-leading", False),
    ("rdma.spidernet.io/x", "trailing.", False),
    ("rdma.spidernet.io/x", "under_score.dot-dash", True),
    ("RDMA.io/x", "v", False),
    ("/x", "v", False),
    ("a/b/c", "v", False),
    ("rdma.spidernet.io/", "v", False),
    ("rdma.spidernet.io/x", "ünï", False),
]


@pytest.mark.parametrize(("key", "value", "valid"), LABEL_SYNTAX)
def test_label_validation_agrees_with_the_server(key: str, value: str, valid: bool) -> None:
    server_ok = not is_qualified_name(key) and not is_valid_label_value(value)
    assert server_ok == valid
    assert (validate_label(key, value) is None) == valid  # what the agent checks before sending


# --- the agent's requests are CoreV1Api's ----------------------------------------------------------
# The agent sends its Node requests through a small NodeApi (agent/publish/kube/api.py) instead of the
# generated CoreV1Api (whose module is costly in memory: tests/unit/test_kube_memory.py). What goes on
# the wire, and what comes back, must be exactly what CoreV1Api.list_node / patch_node would have produced.

SELECTOR = f"metadata.name={NODE}"


def record_requests(api_client: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every request ``api_client`` sends from now on, as handed to its REST layer (method, URL with the
    query string as sent, headers in order, body, form parameters, timeout); sent unchanged."""
    sent: list[tuple[Any, ...]] = []
    real = api_client.rest_client.request

    def request(
        method: str,
        url: str,
        headers: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        sent.append((method, url, list((headers or {}).items()), copy.deepcopy(body), post_params, _request_timeout))
        return real(method, url, headers=headers, body=body, post_params=post_params, _request_timeout=_request_timeout)

    monkeypatch.setattr(api_client.rest_client, "request", request)
    return sent


def test_the_agents_requests_are_those_of_core_v1_api(
    api: KubeStandIn, api_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = record_requests(api_client, monkeypatch)
    w = make_watcher(api_client).start()
    try:
        assert w.wait_synced(WAIT)
        assert api.wait_for(lambda s: s.watches_open == 1, WAIT)
        assert NodeLabelPublisher(api_client, w, prefix=PREFIX, request_timeout=(2.0, 2.0)).sync(DESIRED).patched
        caught_up(w, api)
    finally:
        w.stop()
    assert [(r[0], urlsplit(r[1]).path) for r in sent] == [
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/nodes"),
        ("PATCH", f"/api/v1/nodes/{NODE}"),
    ]
    ours_sent = list(sent)
    resource_version = parse_qs(urlsplit(ours_sent[1][1]).query)["resourceVersion"][0]

    # The same three requests as the agent made them with CoreV1Api (the watch as Watch.stream calls it).
    sent.clear()
    v1 = client.CoreV1Api(api_client)
    read(v1.list_node(field_selector=SELECTOR, _preload_content=False, _request_timeout=(2.0, 2.0)))
    watch: Any = v1.list_node(
        field_selector=SELECTOR,
        resource_version=resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=300,
        _request_timeout=(2.0, 300 + WATCH_READ_MARGIN),
        watch=True,
        _preload_content=False,
    )
    watch.close()
    read(
        v1.patch_node(
            NODE,
            ours_sent[2][3],
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=(2.0, 2.0),
        )
    )
    assert sent == ours_sent


def read(response: Any) -> Any:
    """The JSON body of a raw response, its connection back in the pool."""
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


NodeCall = Callable[[Any], Any]
ANSWER_CASES: list[tuple[str, Callable[[KubeStandIn], object] | None, NodeCall]] = [
    ("list", None, lambda v1: v1.list_node(field_selector=SELECTOR, _preload_content=False)),
    (
        "list 403",
        lambda s: s.fail_next("list", 403),
        lambda v1: v1.list_node(field_selector=SELECTOR, _preload_content=False),
    ),
    (
        "list 500",
        lambda s: s.fail_next("list", 500),
        lambda v1: v1.list_node(field_selector=SELECTOR, _preload_content=False),
    ),
    (
        "watch 403",
        lambda s: s.fail_next("watch", 403),
        lambda v1: v1.list_node(field_selector=SELECTOR, resource_version="1", watch=True, _preload_content=False),
    ),
    (
        "patch",
        None,
        lambda v1: v1.patch_node(
            NODE,
            {"metadata": {"labels": {PREFIX + "x": "1"}}},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            _preload_content=False,
        ),
    ),
    (
        "patch 422",
        None,
        lambda v1: v1.patch_node(
            NODE,
            {"metadata": {"labels": {PREFIX + "x": "a b"}}},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            _preload_content=False,
        ),
    ),
    (
        "patch 404",
        None,
        lambda v1: v1.patch_node(
            "nope",
            {"metadata": {"labels": {PREFIX + "x": "1"}}},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            _preload_content=False,
        ),
    ),
    (
        "patch 409",
        lambda s: s.fail_next("patch", 409),
        lambda v1: v1.patch_node(
            NODE,
            {"metadata": {"labels": {PREFIX + "x": "1"}}},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            _preload_content=False,
        ),
    ),
    (
        "patch, default content type",
        None,
        lambda v1: v1.patch_node(
            NODE, [{"op": "add", "path": "/metadata/labels/t~1a", "value": "1"}], _preload_content=False
        ),
    ),
]


def answer_of(call: NodeCall, v1: Any) -> tuple[Any, ...]:
    """What a caller gets: the raw response (type, status, JSON body) or the exception (with its Status)."""
    try:
        response = call(v1)
    except client.ApiException as err:
        return (type(err), err.status, err.reason, err.body, describe_failure(err))
    return (type(response), response.status, read(response))


@pytest.mark.parametrize(("inject", "call"), [c[1:] for c in ANSWER_CASES], ids=[c[0] for c in ANSWER_CASES])
def test_node_api_answers_like_core_v1_api(
    api: KubeStandIn,
    api_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    inject: Callable[[KubeStandIn], object] | None,
    call: NodeCall,
) -> None:
    sent = record_requests(api_client, monkeypatch)
    answers = []
    for v1 in (client.CoreV1Api(api_client), NodeApi(api_client)):
        if inject is not None:
            inject(api)
        answers.append(answer_of(call, v1))
    # Equal for a write too: the repeated patch changes nothing, so the server answers the same Node.
    assert answers[1] == answers[0]
    assert len(sent) == 2 and sent[1] == sent[0]


# --- configuration -----------------------------------------------------------------------------------


def test_client_from_explicit_kubeconfig(api: KubeStandIn, api_client: Any) -> None:
    node = client.CoreV1Api(api_client).read_node(NODE)  # typed models work too: the stand-in speaks v1
    assert node.metadata is not None and node.metadata.labels is not None
    assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
    assert api.requests[-1].authorization == f"Bearer {api.token}"
    assert api_client.configuration.retries is False  # our backoff, not urllib3's, and exact request counts


def test_client_from_kubeconfig_env(api: KubeStandIn, tmp_path: Path) -> None:
    path = api.write_kubeconfig(tmp_path / "from-env")
    api_client = load_api_client(env={"KUBECONFIG": str(path)})
    node = client.CoreV1Api(api_client).read_node(NODE)
    assert node.metadata is not None and node.metadata.name == NODE


CONFIG_FAILURES = [
    ("explicit kubeconfig missing", "explicit", ConfigError, "--kubeconfig: cannot use"),
    ("explicit kubeconfig not YAML", "garbage", ConfigError, "--kubeconfig: cannot use"),
    ("explicit kubeconfig a YAML list", "list", ConfigError, "--kubeconfig: cannot use"),
    ("explicit kubeconfig without contexts", "empty", ConfigError, "--kubeconfig: cannot use"),
    ("neither in-cluster nor kubeconfig", "none", KubernetesUnavailable, "no in-cluster config (Service host/port"),
]


@pytest.mark.parametrize(
    ("case", "error", "message"), [c[1:] for c in CONFIG_FAILURES], ids=[c[0] for c in CONFIG_FAILURES]
)
def test_client_configuration_failures(tmp_path: Path, case: str, error: type[Exception], message: str) -> None:
    files = {"garbage": "just: [a, list\n", "list": "[1, 2]\n", "empty": "apiVersion: v1\nkind: Config\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(error) as info:
        if case == "none":
            load_api_client(env={"KUBECONFIG": str(tmp_path / "missing")})
        else:
            load_api_client(tmp_path / ("missing" if case == "explicit" else case), env={})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_node_name_is_required_with_kubernetes() -> None:
    assert node_name(Config(node_name="gpu-node-1")) == "gpu-node-1"
    with pytest.raises(ConfigError, match="--node-name: required when publishing to Kubernetes"):
        node_name(Config())


# --- pure pieces -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("10", "9", 1),
        ("9", "10", -1),
        ("123", "123", 0),
        ("99999999999999999999", "100000000000000000000", -1),
        ("0", "1", None),
        ("012", "12", None),
        ("abc", "1", None),
        ("", "1", None),
    ],
)
def test_compare_resource_versions(a: str, b: str, expected: int | None) -> None:
    assert compare_resource_versions(a, b) == expected


def test_backoff_grows_caps_jitters_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.5, rng=random.Random(7))  # noqa: S311
    bases = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    delays = [backoff.next_delay() for _ in bases]
    for base, delay in zip(bases, delays, strict=True):
        assert base * 0.5 <= delay <= base
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_observed_node_from_object() -> None:
    node = ObservedNode.from_object(
        {
            "metadata": {"name": "n", "resourceVersion": "7", "labels": {"b": "2", "a": "1"}},
            "status": {"allocatable": {"rdma/hca": "4"}},
        }
    )
    assert (node.name, node.resource_version, dict(node.labels)) == ("n", "7", {"a": "1", "b": "2"})
    assert dict(node.allocatable) == {"rdma/hca": "4"} and dict(node.annotations) == {} and dict(node.capacity) == {}
    with pytest.raises(TypeError):
        node.labels["c"] = "3"  # type: ignore[index]


def test_describe_failure_reads_the_status_body() -> None:
    message = 'nodes "n" is forbidden: User "x" cannot patch resource "nodes"'
    body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "Forbidden",
            "code": 403,
        }
    )
    failure = describe_failure(client.ApiException(status=403, reason="Forbidden", body=body))
    assert (failure.status, failure.reason, failure.message) == (403, "Forbidden", message)
    expired = describe_failure(client.ApiException(status=410, reason="Expired: too old resource version: 5 (9)"))
    assert (expired.status, expired.reason, expired.message) == (410, "Expired", "too old resource version: 5 (9)")


# --- the watch ---------------------------------------------------------------------------------------


def test_watch_syncs_with_one_list_and_one_watch(api: KubeStandIn, watcher: NodeWatcher) -> None:
    observed = watcher.observed()
    assert observed is not None and watcher.healthy()
    assert observed.name == NODE and dict(observed.labels) == api.labels(NODE)
    assert dict(observed.capacity)["spidernet.io/hca_shared_devices"] == "8"
    assert observed.resource_version == api.node(NODE)["metadata"]["resourceVersion"]
    assert api.counts() == {"get": 0, "list": 1, "watch": 1, "patch": 0, "create": 0, "other": 0}
    list_request, watch_request = api.requests
    assert list_request.query["fieldSelector"] == f"metadata.name={NODE}"
    assert watch_request.query["fieldSelector"] == f"metadata.name={NODE}"
    assert watch_request.query["watch"] == "true" and watch_request.query["allowWatchBookmarks"] == "true"
    assert watch_request.query["resourceVersion"] == str(api.resource_version)  # from the list, not "0"
    assert watch_request.query["timeoutSeconds"] == "300"


def test_watch_delivers_changes_of_our_node_only(api: KubeStandIn, watcher: NodeWatcher) -> None:
    api.update_node(NODE, lambda n: n["status"]["allocatable"].update({"spidernet.io/hca_shared_devices": "0"}))
    caught_up(watcher, api)
    observed = watcher.observed()
    assert observed is not None and observed.allocatable["spidernet.io/hca_shared_devices"] == "0"
    events = watcher.stats().events
    api.update_node("other-node", lambda n: n["metadata"]["labels"].update({"x": "y"}))
    api.update_node(NODE, lambda n: n["metadata"]["labels"].update({"x": "y"}))
    caught_up(watcher, api)
    assert watcher.stats().events == events + 1  # the other node's change never reached us
    api.delete_node(NODE)
    assert watcher.wait_until(lambda w: w.observed() is None and not w.healthy(), WAIT)
    api.put_node(NODE, labels={"back": "again"})
    assert watcher.wait_until(lambda w: (o := w.observed()) is not None and o.labels.get("back") == "again", WAIT)
    assert watcher.healthy()
    assert api.count("list") == 1 and api.count("get") == 0


def test_watch_resumes_after_a_clean_end_without_listing(api: KubeStandIn, watcher: NodeWatcher) -> None:
    api.update_node(NODE, lambda n: n["metadata"]["labels"].update({"x": "1"}))
    caught_up(watcher, api)
    for watches in (1, 2, 3):
        api.send_bookmarks()
        assert api.wait_for(lambda s: s.count("watch") == watches, WAIT)  # noqa: B023 - used at once
        api.end_watches()  # as the server does after timeoutSeconds
        assert api.wait_for(lambda s: s.count("watch") == watches + 1 and s.watches_open == 1, WAIT)  # noqa: B023
    assert api.counts() == {"get": 0, "list": 1, "watch": 4, "patch": 0, "create": 0, "other": 0}
    resumed_from = [r.query["resourceVersion"] for r in api.requests if r.kind == "watch"]
    assert resumed_from[1:] == [str(api.resource_version)] * 3
    assert watcher.healthy() and watcher.stats().failures == 0


def test_watch_relists_after_410_gone(api: KubeStandIn, watcher: NodeWatcher) -> None:
    # Other nodes change, ours does not: our resourceVersion ages, and the server compacts past it.
    api.update_node("other-node", lambda n: n["metadata"]["labels"].update({"x": "1"}))
    api.compact()
    api.end_watches(final_bookmark=False)  # without a last bookmark, the watcher resumes from its old version
    assert api.wait_for(lambda s: s.count("list") == 2 and s.watches_open == 1, WAIT)
    api.update_node(NODE, lambda n: n["metadata"]["labels"].update({"x": "2"}))
    caught_up(watcher, api)
    stats = watcher.stats()
    assert (stats.lists, stats.expired, stats.failures) == (2, 1, 0)
    assert watcher.healthy()


Fault = Callable[[KubeStandIn], object]
WATCH_FAULTS: list[tuple[str, Fault, tuple[int, int], tuple[int, int]]] = [
    # (what, inject, (failures, expired) reported, (LISTs, WATCHes) sent in all)
    ("403 on the relist", lambda s: s.fail_next("list", 403).drop_watches(), (2, 0), (3, 2)),
    ("404 on the relist", lambda s: s.fail_next("list", 404).drop_watches(), (2, 0), (3, 2)),
    ("500 twice on the relist", lambda s: s.fail_next("list", 500, times=2).drop_watches(), (3, 0), (4, 2)),
    ("relist times out", lambda s: s.delay_next("list", 5.0).drop_watches(), (2, 0), (3, 2)),
    ("403 on the rewatch", lambda s: s.fail_next("watch", 403).end_watches(), (1, 0), (2, 3)),
    ("500 on the rewatch", lambda s: s.fail_next("watch", 500).end_watches(), (1, 0), (2, 3)),
    ("watch dropped mid-stream", lambda s: s.drop_watches(), (1, 0), (2, 2)),
    ("410 on the rewatch", lambda s: s.expire_next_watch().end_watches(), (0, 1), (2, 3)),
    ("410 twice in a row", lambda s: s.expire_next_watch(times=2).end_watches(), (1, 1), (3, 4)),
]


@pytest.mark.parametrize(
    ("inject", "reported", "sent"), [f[1:] for f in WATCH_FAULTS], ids=[f[0] for f in WATCH_FAULTS]
)
def test_watch_recovers_from_faults(
    api: KubeStandIn,
    watcher: NodeWatcher,
    publisher: NodeLabelPublisher,
    inject: Fault,
    reported: tuple[int, int],
    sent: tuple[int, int],
) -> None:
    inject(api)
    assert watcher.wait_until(lambda w: (w.stats().failures, w.stats().expired) == reported, WAIT), watcher.stats()
    assert api.wait_for(lambda s: (s.count("list"), s.count("watch")) == sent and s.watches_open == 1, WAIT), (
        api.counts()
    )
    # Recovered: a change made now is delivered by the new watch, and labels still converge.
    api.update_node(NODE, lambda n: n["metadata"]["labels"].update({"after": "fault"}))
    caught_up(watcher, api)
    assert watcher.healthy()
    assert publisher.sync(DESIRED).patched
    caught_up(watcher, api)
    observed = watcher.observed()
    assert observed is not None and ours(observed.labels) == DESIRED == ours(api.labels(NODE))
    stats = watcher.stats()
    assert (stats.failures, stats.expired) == reported  # nothing more went wrong
    assert (stats.failures == 0) == (stats.last_error is None)
    # Never a tight loop or a poll: exactly one LIST and/or WATCH per reconnect, no GETs.
    assert (api.count("list"), api.count("watch"), api.count("get")) == (*sent, 0)
    assert (stats.lists, stats.watches) == sent


def test_failures_back_off_exponentially_between_resyncs(api: KubeStandIn, api_client: Any) -> None:
    delays: list[float] = []

    def record(delay: float) -> bool:  # the watcher's sleep: note the delay, do not wait
        delays.append(delay)
        return False

    api.fail_next("list", 500, times=4)
    w = make_watcher(api_client, backoff=Backoff(initial=1.0, maximum=4.0, jitter=0.0), wait=record).start()
    try:
        assert api.wait_for(lambda s: s.count("watch") == 1 and s.watches_open == 1, WAIT)
        assert delays == [1.0, 2.0, 4.0, 4.0]
        assert api.count("list") == 5
        # A watch that delivers an event (the server's periodic bookmark) proves the connection
        # works: the backoff starts over. A reconnect that fails again before any event does not.
        api.send_bookmarks()
        assert w.wait_until(lambda x: x.stats().events == 1, WAIT)
        api.drop_watches()
        assert api.wait_for(lambda s: s.count("watch") == 2 and s.watches_open == 1, WAIT)
        api.drop_watches()
        assert api.wait_for(lambda s: s.count("watch") == 3 and s.watches_open == 1, WAIT)
        assert delays == [1.0, 2.0, 4.0, 4.0, 1.0, 2.0]
    finally:
        w.stop()


def test_stop_interrupts_a_long_backoff(api: KubeStandIn, api_client: Any) -> None:
    api.fail_next("list", 500)
    w = make_watcher(api_client, backoff=Backoff(initial=3600.0, maximum=3600.0)).start()
    assert w.wait_until(lambda x: x.stats().failures == 1, WAIT)
    stopped = threading.Event()

    def stop() -> None:
        w.stop(timeout=WAIT)
        stopped.set()

    threading.Thread(target=stop).start()
    assert stopped.wait(WAIT)
    assert not w._thread.is_alive()
    assert api.count("list") == 1  # no retry happened


def test_stop_closes_an_open_watch(api: KubeStandIn, api_client: Any) -> None:
    w = make_watcher(api_client).start()
    assert api.wait_for(lambda s: s.watches_open == 1, WAIT)
    w.stop(timeout=WAIT)
    assert not w._thread.is_alive()
    assert api.wait_for(lambda s: s.watches_open == 0, WAIT)
    assert api.count("list") == 1 and api.count("watch") == 1


def test_missing_node_is_unhealthy_until_it_appears(api: KubeStandIn, api_client: Any) -> None:
    api.delete_node(NODE)
    w = make_watcher(api_client).start()
    try:
        assert w.wait_synced(WAIT)
        assert w.observed() is None and not w.healthy()
        api.put_node(NODE)
        assert w.wait_until(lambda x: x.observed() is not None and x.healthy(), WAIT)
        assert api.count("list") == 1  # the watch brought it, no polling
    finally:
        w.stop()


# --- the label publisher -----------------------------------------------------------------------------


def owned_annotation(api: KubeStandIn) -> frozenset[str]:
    return label_rules.owned_keys_from_annotation(api.annotations(NODE).get(label_rules.owned_annotation_key(PREFIX)))


def test_labels_converge_from_empty_with_one_merge_patch(
    api: KubeStandIn, watcher: NodeWatcher, publisher: NodeLabelPublisher
) -> None:
    result = publisher.sync(DESIRED)
    assert result.ok and result.patched
    assert ours(api.labels(NODE)) == DESIRED
    assert foreign(api.labels(NODE)) == FOREIGN
    assert owned_annotation(api) == set(DESIRED)
    (patch,) = api.patches()
    assert patch.content_type == MERGE_PATCH and patch.query.get("fieldManager") == "rdma-node-agent"
    assert set(patch.body) == {"metadata"} and set(patch.body["metadata"]) == {"labels", "annotations"}
    assert patch.body["metadata"]["labels"] == DESIRED  # only our keys are ever in the patch
    assert "resourceVersion" not in patch.body["metadata"]  # no precondition: the patch names only our keys


def test_zero_requests_in_steady_state(api: KubeStandIn, watcher: NodeWatcher, publisher: NodeLabelPublisher) -> None:
    assert publisher.sync(DESIRED).patched
    caught_up(watcher, api)
    before = api.counts()
    for _ in range(100):
        result = publisher.sync(DESIRED)
        assert result.ok and not result.patched and result.patch is None
    assert api.counts() == before  # no PATCH, and no GET/LIST either: nothing polls
    assert before == {"get": 0, "list": 1, "watch": 1, "patch": 1, "create": 0, "other": 0}


def test_no_second_patch_while_the_watch_lags(api: KubeStandIn, watcher: NodeWatcher, api_client: Any) -> None:
    watcher.stop()  # the watch delivers nothing more: the publisher must trust its own patch's answer
    publisher = NodeLabelPublisher(api_client, watcher, prefix=PREFIX)
    assert publisher.sync(DESIRED).patched
    assert not publisher.sync(DESIRED).patched
    assert api.count("patch") == 1
    changed = {**DESIRED, PREFIX + "netns-mode": "exclusive"}
    assert publisher.sync(changed).patched
    assert not publisher.sync(changed).patched
    assert api.count("patch") == 2 and ours(api.labels(NODE)) == changed


CHANGES = [
    # (what, desired labels) applied in sequence; each must cost exactly one PATCH
    ("first publish", DESIRED),
    ("a value changes", {**DESIRED, PREFIX + "netns-mode": "exclusive"}),
    ("a label appears", {**DESIRED, PREFIX + "netns-mode": "exclusive", PREFIX + "sriov-totalvfs": "8"}),
    ("a label goes stale", {PREFIX + "capable": "true", PREFIX + "sriov-totalvfs": "8"}),
    ("everything goes", {}),
    ("and comes back", DESIRED),
]


def test_one_patch_per_change(api: KubeStandIn, watcher: NodeWatcher, publisher: NodeLabelPublisher) -> None:
    for count, (what, desired) in enumerate(CHANGES, start=1):
        assert publisher.sync(desired).patched, what
        caught_up(watcher, api)
        for _ in range(3):
            assert not publisher.sync(desired).patched, what
        assert api.count("patch") == count, what
        assert ours(api.labels(NODE)) == desired, what
        assert foreign(api.labels(NODE)) == FOREIGN, what
        assert owned_annotation(api) == set(desired), what
        removed = {k for k, v in api.patches()[-1].body["metadata"].get("labels", {}).items() if v is None}
        assert removed <= {k for _, d in CHANGES[: count - 1] for k in d}, what  # only keys we once set


def test_stale_owned_labels_removed_unowned_untouched(
    api: KubeStandIn, watcher: NodeWatcher, publisher: NodeLabelPublisher
) -> None:
    # A previous agent version left "old-label" and recorded it as ours; an admin set "set-by-admin".
    previous = {PREFIX + "capable": "true", PREFIX + "old-label": "x"}
    assert publisher.sync(previous).patched
    caught_up(watcher, api)
    assert publisher.sync(DESIRED).patched
    caught_up(watcher, api)
    labels = api.labels(NODE)
    assert PREFIX + "old-label" not in labels
    assert labels[PREFIX + "set-by-admin"] == "keep-me"
    assert foreign(labels) == FOREIGN and ours(labels) == DESIRED
    assert api.patches()[-1].body["metadata"]["labels"] == {
        PREFIX + "old-label": None,
        PREFIX + "netns-mode": "shared",
        PREFIX + "pci-15b3-1017": "true",
    }


def test_a_label_removed_by_someone_else_comes_back(
    api: KubeStandIn, watcher: NodeWatcher, publisher: NodeLabelPublisher
) -> None:
    assert publisher.sync(DESIRED).patched
    caught_up(watcher, api)
    api.update_node(NODE, lambda n: n["metadata"]["labels"].pop(PREFIX + "capable"))
    caught_up(watcher, api)
    assert publisher.sync(DESIRED).patched
    assert api.patches()[-1].body["metadata"] == {"labels": {PREFIX + "capable": "true"}}
    assert ours(api.labels(NODE)) == DESIRED


def test_invalid_labels_are_never_sent(api: KubeStandIn, watcher: NodeWatcher, publisher: NodeLabelPublisher) -> None:
    bad = {PREFIX + "firmware": "16.35.2000 (MT_0000000012)", PREFIX + "x" * 64: "true", "no-prefix": "1"}
    result = publisher.sync({**DESIRED, **bad})
    assert result.patched and {key for key, _ in result.skipped} == set(bad)
    assert all(reason for _, reason in result.skipped)
    assert api.count("patch", status=422) == 0
    assert ours(api.labels(NODE)) == DESIRED
    sent = json.dumps([r.body for r in api.patches()])
    assert not any(key in sent for key in bad)


PATCH_FAULTS: list[tuple[str, Fault, int | None, str]] = [
    ("403 Forbidden", lambda s: s.fail_next("patch", 403), 403, "Forbidden"),
    ("404 node gone", lambda s: s.fail_next("patch", 404), 404, "NotFound"),
    ("409 Conflict", lambda s: s.fail_next("patch", 409), 409, "Conflict"),
    ("500 InternalError", lambda s: s.fail_next("patch", 500), 500, "InternalError"),
    ("503 unavailable", lambda s: s.fail_next("patch", 503), 503, "ServiceUnavailable"),
    ("timeout", lambda s: s.delay_next("patch", 5.0), None, "Timeout"),
]


@pytest.mark.parametrize(
    ("inject", "status", "reason"), [f[1:] for f in PATCH_FAULTS], ids=[f[0] for f in PATCH_FAULTS]
)
def test_patch_failures_are_reported_then_retried(
    api: KubeStandIn,
    watcher: NodeWatcher,
    publisher: NodeLabelPublisher,
    inject: Fault,
    status: int | None,
    reason: str,
) -> None:
    inject(api)
    failed = publisher.sync(DESIRED)
    assert not failed.ok and failed.error is not None
    assert (failed.error.status, failed.error.reason) == (status, reason)
    assert "\n" not in str(failed.error)
    assert api.count("patch") == 1
    retried = publisher.sync(DESIRED)  # the next cycle
    assert retried.ok and retried.patched
    assert api.count("patch") == 2 and ours(api.labels(NODE)) == DESIRED
    caught_up(watcher, api)
    assert not publisher.sync(DESIRED).patched and api.count("patch") == 2


def test_nothing_is_sent_before_the_node_is_observed(api: KubeStandIn, api_client: Any) -> None:
    unsynced = make_watcher(api_client)  # never started
    result = NodeLabelPublisher(api_client, unsynced, prefix=PREFIX).sync(DESIRED)
    assert result.error is not None and result.error.reason == "NotObserved"
    assert api.count() == 0


# --- the status and event requests are those of CoreV1Api / EventsV1Api ------------------------------


def test_status_patch_is_that_of_core_v1_api(
    api: KubeStandIn, api_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = record_requests(api_client, monkeypatch)
    body = {
        "status": {
            "conditions": [
                {
                    "type": "RDMAReady",
                    "status": "True",
                    "reason": "RDMAReady",
                    "message": "m",
                    "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        }
    }
    options: dict[str, Any] = {
        "field_manager": FIELD_MANAGER,
        "_content_type": STRATEGIC_MERGE_PATCH,
        "_preload_content": False,
        "_request_timeout": (2.0, 2.0),
    }
    answers = [read(impl(api_client).patch_node_status(NODE, body, **options)) for impl in (client.CoreV1Api, NodeApi)]
    assert answers[0] == answers[1] and answers[0]["status"]["conditions"][-1]["type"] == "RDMAReady"
    assert len(sent) == 2 and sent[0] == sent[1]
    assert urlsplit(sent[0][1]).path == f"/api/v1/nodes/{NODE}/status"


def test_event_requests_are_those_of_events_v1_api(
    api: KubeStandIn, api_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = record_requests(api_client, monkeypatch)
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "", "namespace": "default"},
        "eventTime": "2026-01-01T00:00:00.000001Z",
        "reportingController": "rdma-node-agent",
        "reportingInstance": f"rdma-node-agent-{NODE}",
        "action": "CheckReadiness",
        "reason": "RDMAReady",
        "type": "Normal",
        "note": "n",
        "regarding": {"kind": "Node", "apiVersion": "v1", "name": NODE, "uid": NODE},
    }
    series = {"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000001Z"}}
    events_v1: Any = client.EventsV1Api(api_client)  # (typed for its model; it takes a dict as well)
    ours = NodeApi(api_client)
    options: dict[str, Any] = {"field_manager": FIELD_MANAGER, "_preload_content": False}
    read(
        events_v1.create_namespaced_event(
            "default", {**event, "metadata": {"name": "a.1", "namespace": "default"}}, **options
        )
    )
    read(ours.create_event("default", {**event, "metadata": {"name": "a.2", "namespace": "default"}}, **options))
    read(events_v1.patch_namespaced_event("a.1", "default", series, _content_type=MERGE_PATCH, **options))
    read(ours.patch_event("default", "a.2", series, **options))
    # Same method, URL shape, query and headers (the generated client re-encodes eventTime from its model).
    shapes = [(r[0], urlsplit(r[1]).path.rsplit(".", 1)[0], urlsplit(r[1]).query, r[2]) for r in sent]
    assert shapes[0] == shapes[1] and shapes[2] == shapes[3], shapes
    assert ("Content-Type", MERGE_PATCH) in shapes[2][3] and not any(h == "Content-Type" for h, _ in shapes[0][3])
    assert [e["series"]["count"] for e in api.events() if "series" in e] == [2, 2]
