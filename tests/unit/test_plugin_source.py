"""The device plugin's config read where the plugin keeps it: its ConfigMap, watched through the API
(agent/publish/kube/configmap.py, agent/publish/plugin_source.py) — Spiderpool's by default — through
the real client against the API stand-in; and what happens when it cannot be read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.cli import main
from agent.diagnose import plugin_config
from agent.discover.rdma_netlink import RdmaNetlink
from agent.errors import NetlinkError
from agent.model import PluginConfigState
from agent.publish.kube.configmap import ConfigMapWatcher
from agent.publish.plugin_source import ConfigMapSource
from agent.publish.status import load_schema
from tests.kube_standin import KubeStandIn
from tests.sysfs_fixtures import load_tree

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deviceplugin"
NAMESPACE, NAME = "kube-system", "spiderpool-rdma-shared-device-plugin"  # Spiderpool's chart, default values
REF = f"{NAMESPACE}/{NAME}"
WAIT = 10.0
SPIDERPOOL = (FIXTURES / "spiderpool-default.json").read_text()  # selects 15b3:1017
RESOURCE = "spidernet.io/hca_shared_devices"


@pytest.fixture
def api() -> Iterator[KubeStandIn]:
    with KubeStandIn() as server:
        yield server


def watched(api_client: Any) -> Iterator[ConfigMapWatcher]:
    watcher = ConfigMapWatcher(api_client, NAMESPACE, NAME, request_timeout=(2.0, 2.0)).start()
    try:
        assert watcher.wait_synced(WAIT)
        yield watcher
    finally:
        watcher.stop()


@pytest.fixture
def watcher(api: KubeStandIn, api_client: Any) -> Iterator[ConfigMapWatcher]:
    api.put_configmap(NAMESPACE, NAME, {"config.json": SPIDERPOOL})
    yield from watched(api_client)


def test_the_config_is_read_from_the_configmap_with_one_list_and_one_watch(
    api: KubeStandIn, watcher: ConfigMapWatcher
) -> None:
    read = ConfigMapSource(watcher, "config.json").read()
    assert read.problems == ()
    assert read.config is not None and [r.full_name for r in read.config.resources] == [RESOURCE]
    assert read.state == PluginConfigState(source="configmap", ref=f"{REF}:config.json", loaded=True)
    assert api.wait_for(lambda s: s.watches_open == 1, WAIT)
    (listed,) = [r for r in api.requests if r.kind == "list"]
    # One named object: RBAC can grant it by resourceNames (list/watch with this field selector).
    assert listed.path == f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    assert listed.query["fieldSelector"] == f"metadata.name={NAME}"
    assert api.counts("configmaps") == {"get": 0, "list": 1, "watch": 1, "patch": 0, "create": 0, "other": 0}


def test_an_edit_is_seen_without_a_request_and_parsed_once(
    api: KubeStandIn, watcher: ConfigMapWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = ConfigMapSource(watcher, "config.json")
    parsed: list[str] = []
    real = plugin_config.parse_device_plugin_config

    def counting(text: str, where: str) -> plugin_config.DevicePluginConfig:
        parsed.append(where)
        return real(text, where)

    monkeypatch.setattr("agent.publish.plugin_source.parse_device_plugin_config", counting)
    for _ in range(5):
        source.read()
    assert len(parsed) == 1  # unchanged ConfigMap: parsed once
    edited = json.loads(SPIDERPOOL)
    edited["configList"][0]["selectors"]["deviceIDs"] = ["1018"]
    assert api.wait_for(lambda s: s.watches_open == 1, WAIT)
    requests = len(api.requests)
    api.put_configmap(NAMESPACE, NAME, {"config.json": json.dumps(edited)})  # as kubectl edit would
    assert watcher.wait_until(lambda w: "1018" in (((o := w.observed()) and o.data["config.json"]) or ""), WAIT)
    read = source.read()
    assert read.config is not None and read.config.resources[0].selectors.device_ids == ("1018",)
    assert len(parsed) == 2 and len(api.requests) == requests  # the open watch delivered it: no request


UNREADABLE = [
    ("no such ConfigMap", None, "does not exist"),
    ("no such key", {"other.json": SPIDERPOOL}, "has no key config.json (keys: other.json)"),
]


@pytest.mark.parametrize(("data", "says"), [c[1:] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE])
def test_a_missing_configmap_or_key_is_a_problem(
    api: KubeStandIn, api_client: Any, data: dict[str, str] | None, says: str
) -> None:
    if data is not None:
        api.put_configmap(NAMESPACE, NAME, data)
    for watcher in watched(api_client):
        read = ConfigMapSource(watcher, "config.json").read()
        (problem,) = read.problems
        assert (problem.code, problem.subject) == ("device_plugin_config_unreadable", REF)
        assert says in problem.message and REF in problem.message
        assert read.state == PluginConfigState(source="configmap", ref=f"{REF}:config.json", loaded=False)


def test_a_forbidden_configmap_is_a_problem_naming_rbac(api: KubeStandIn, api_client: Any) -> None:
    api.put_configmap(NAMESPACE, NAME, {"config.json": SPIDERPOOL})
    api.fail_next("list", 403, times=100, resource="configmaps")
    watcher = ConfigMapWatcher(api_client, NAMESPACE, NAME, request_timeout=(2.0, 2.0)).start()
    try:
        assert watcher.wait_until(lambda w: w.failing(), WAIT)
        (problem,) = ConfigMapSource(watcher, "config.json").read().problems
        assert problem.code == "device_plugin_config_unreadable"
        assert "cannot be read" in problem.message and "403 Forbidden" in problem.message
        assert 'cannot list resource "configmaps"' in problem.message
    finally:
        watcher.stop()


def test_an_invalid_config_is_invalid_not_unreadable(api: KubeStandIn, api_client: Any) -> None:
    api.put_configmap(NAMESPACE, NAME, {"config.json": '{"configList": []}'})
    for watcher in watched(api_client):
        read = ConfigMapSource(watcher, "config.json").read()
        assert [p.code for p in read.problems] == ["device_plugin_config_invalid"]
        assert read.config is None and read.state is not None and not read.state.loaded


def test_nothing_is_said_before_the_first_list(api_client: Any) -> None:
    watcher = ConfigMapWatcher(api_client, NAMESPACE, NAME, request_timeout=(2.0, 2.0))  # not started
    assert ConfigMapSource(watcher, "config.json").read() == ((None, (), None))


def test_status_reports_a_selector_problem_from_the_configmap(
    api: KubeStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status with the defaults (no --device-plugin-config): the config comes from Spiderpool's
    ConfigMap served by the stand-in; the recorded Soft-RoCE node has no 15b3:1017 device."""
    try:
        RdmaNetlink().close()
        pytest.skip("this kernel has RDMA netlink; the recorded tree stands for the node here")
    except NetlinkError:
        pass
    roots = load_tree("rxe-dummy-veth", tmp_path)
    api.put_node("gpu-1", capacity={RESOURCE: "0"}, allocatable={RESOURCE: "0"})
    api.put_configmap(NAMESPACE, NAME, {"config.json": SPIDERPOOL})
    argv = [
        "status",
        "--json",
        "--host-root",
        str(roots.root),
        "--sys-root",
        str(roots.sysfs),
        "--dev-root",
        str(roots.devfs),
        "--proc-root",
        str(tmp_path / "no-proc"),
        "--kubeconfig",
        str(api.write_kubeconfig(tmp_path / "kubeconfig")),
        "--node-name",
        "gpu-1",
    ]
    assert main(argv, env={}) == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, load_schema())
    assert doc["device_plugin_config"] == {"source": "configmap", "ref": f"{REF}:config.json", "loaded": True}
    assert [(s["resource"], s["matched"]) for s in doc["selectors"]] == [(RESOURCE, 0)]
    problems = {p["code"]: p for p in doc["problems"]}
    assert "1017" in problems["selector_matches_nothing"]["message"]
    assert api.count("patch") == 0 and api.count("create") == 0  # status never writes
