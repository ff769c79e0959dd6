"""manifests/ (kustomize): renders with `kubectl kustomize`, every object valid against the Kubernetes
schemas (1.30 and the newest kubernetes-validate ships), least privilege of the DaemonSet and RBAC,
args/env/config/mounts held to the agent's real settings, and the ValidatingAdmissionPolicy's CEL
evaluated on allowed and denied Node updates.

kubectl (with its built-in kustomize) renders the manifests. Without it these tests skip with a
reason, except under CI=true or RNA_REQUIRE_KUBECTL=1, where they fail.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import celpy
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

import agent
from agent.cli import build_parser, config_from
from agent.config import Config
from agent.discover.procfs import OFED_INFO_SCRIPT
from agent.errors import ConfigError
from agent.settings import ENV_PREFIX, SETTINGS, SETTINGS_BY_KEY, parse_bind_address
from tests.host import required_tool

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
NAMESPACE = "rdma-node-agent"
IMAGE = "ghcr.io/spidernet-io/rdma-node-agent"
CONFIG_ENV = ENV_PREFIX + "CONFIG"  # --config as an environment variable (agent.settings.load_config)
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
COMPONENTS = ("reboot-sentinel", "nfd-features")
MANAGED = ("netns-shared",)  # the mode managed: NET_ADMIN and a writable /etc/modprobe.d
PLAIN = ("monitoring", "metrics-plain-http")  # metrics without kube-rbac-proxy (after monitoring: it patches it)
MONITORING = ("monitoring",)  # the ServiceMonitor and the PrometheusRule
Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------------
# Rendering.


def _kubectl() -> str:
    return required_tool("kubectl", env="RNA_REQUIRE_KUBECTL", install="CI needs it to render manifests/")


def kustomize(directory: Path) -> list[Obj]:
    result = subprocess.run([_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomize_with(tmp: Path, components: tuple[str, ...], resource: str = "manifests") -> list[Obj]:
    """The manifests plus components, as a user's own kustomization would add them. kustomize wants
    paths relative to the kustomization."""
    tmp.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(REPO, tmp))
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(rel / resource)],
                "components": [str(rel / "manifests" / "components" / c) for c in components],
            }
        )
    )
    return kustomize(tmp)


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    return kustomize(MANIFESTS)


POLICY = "rdma-node-agent-own-node-labels"


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    """The object of ``kind`` named ``name`` (default: the agent's own of that kind; a ConfigMap's
    generated name has a hash: any one)."""
    name = name or (POLICY if kind.startswith("ValidatingAdmissionPolicy") else "rdma-node-agent")
    found = [o for o in objects if o["kind"] == kind and (kind == "ConfigMap" or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(objects: list[Obj], name: str = "agent") -> Obj:
    containers = one(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] in (["agent", "kube-rbac-proxy"], ["agent"])
    result: Obj = next(c for c in containers if c["name"] == name)
    return result


# ---------------------------------------------------------------------------------------------------
# What is installed, and schemas.


def test_kustomize_renders_exactly_the_agents_objects(rendered: list[Obj]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in rendered if o["kind"] != "ConfigMap")
    assert kinds == [
        ("ClusterRole", "rdma-node-agent"),
        ("ClusterRole", "rdma-node-agent-metrics-auth"),
        ("ClusterRoleBinding", "rdma-node-agent"),
        ("ClusterRoleBinding", "rdma-node-agent-metrics-auth"),
        ("DaemonSet", "rdma-node-agent"),
        ("Namespace", "rdma-node-agent"),
        ("Service", "rdma-node-agent"),
        ("ServiceAccount", "rdma-node-agent"),
        ("ValidatingAdmissionPolicy", "rdma-node-agent-own-node-labels"),
        ("ValidatingAdmissionPolicyBinding", "rdma-node-agent-own-node-labels"),
    ]
    # configMapGenerator: a name with a content hash, so editing config.yaml rolls the DaemonSet.
    configmap = one(rendered, "ConfigMap")["metadata"]["name"]
    assert configmap.startswith("rdma-node-agent-") and configmap != "rdma-node-agent-"
    volumes = {v["name"]: v for v in one(rendered, "DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                      "ValidatingAdmissionPolicyBinding"}  # fmt: skip
    for obj in rendered:
        assert obj["metadata"].get("namespace") == (None if obj["kind"] in cluster_scoped else NAMESPACE), obj["kind"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "rdma-node-agent", obj["kind"]


def test_image_tag_is_the_agents_version(rendered: list[Obj]) -> None:
    assert container(rendered)["image"] == f"{IMAGE}:{agent.__version__}"


SCHEMA_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def _variants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Obj]]]:
    yield "base", kustomize(MANIFESTS)
    yield "nfd-selected", kustomize(MANIFESTS / "overlays" / "nfd-selected")
    yield "all components", kustomize_with(tmp_path_factory.mktemp("components"), COMPONENTS + MANAGED)
    yield "plain http", kustomize_with(tmp_path_factory.mktemp("plain"), PLAIN)
    yield "monitoring", kustomize_with(tmp_path_factory.mktemp("monitoring"), MONITORING)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_object_is_valid_for_kubernetes(version: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    # strict: an unknown field (a typo, or a field this Kubernetes does not have) is an error.
    # ServiceMonitor and PrometheusRule are prometheus-operator CRDs that kubernetes-validate has no
    # schema for (and the PyPI/npm model packages do not reject unknown fields); the rules are
    # checked by promtool (test_alerts.py) and the ServiceMonitor's wiring below.
    checked = 0
    for variant, objects in _variants(tmp_path_factory):
        for obj in objects:
            if obj["kind"] in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{variant}: {obj['kind']} {obj['metadata']['name']} is invalid for {version}: {err}")
            checked += 1
    assert checked == 4 * 11 + 9  # the plain-http variant has no kube-rbac-proxy role and binding


def test_schema_validation_is_strict() -> None:
    # The check above is only worth something if a misspelt field fails it.
    daemonset = yaml.safe_load((MANIFESTS / "base" / "daemonset.yaml").read_text())
    broken = copy.deepcopy(daemonset)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privilegd"] = False
    with pytest.raises(kubernetes_validate.ValidationError, match="privilegd"):
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


# ---------------------------------------------------------------------------------------------------
# Least privilege.


def test_rbac_is_nodes_get_list_watch_patch_only(rendered: list[Obj]) -> None:
    role = one(rendered, "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]}]
    binding = one(rendered, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "rdma-node-agent",
    }
    pod = one(rendered, "DaemonSet")["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    assert one(rendered, "ServiceAccount")["metadata"]["name"] == pod["serviceAccountName"]


def test_kube_rbac_proxy_may_only_review_tokens_and_access(rendered: list[Obj]) -> None:
    role = one(rendered, "ClusterRole", "rdma-node-agent-metrics-auth")
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ]
    binding = one(rendered, "ClusterRoleBinding", "rdma-node-agent-metrics-auth")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == one(rendered, "ClusterRoleBinding")["subjects"]


def test_metrics_reach_the_network_only_through_kube_rbac_proxy(rendered: list[Obj], tmp_path: Path) -> None:
    proxy = container(rendered, "kube-rbac-proxy")
    args = dict(a.removeprefix("--").split("=", 1) for a in proxy["args"])
    config = agent_config(rendered, tmp_path)
    assert args["upstream"] == f"http://{config.metrics_bind_address}/"
    assert args["secure-listen-address"] == "[$(NODE_IP)]:9435" and args["allow-paths"] == "/metrics"
    assert {"name": "NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in proxy["env"]
    assert [(p["name"], p["containerPort"]) for p in proxy["ports"]] == [("https", 9435)]
    assert proxy["image"] == "quay.io/brancz/kube-rbac-proxy:v0.22.1"
    security = proxy["securityContext"]
    assert security["runAsNonRoot"] is True and security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert "volumeMounts" not in proxy  # nothing of the host


def test_plain_http_is_an_explicit_opt_in(tmp_path: Path) -> None:
    objects = kustomize_with(tmp_path / "k", PLAIN)
    config = agent_config(objects, tmp_path / "mounts")
    assert config.metrics_bind_address == ":9435"
    assert [c["name"] for c in one(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"]] == ["agent"]
    assert not [o for o in objects if o["metadata"]["name"] == "rdma-node-agent-metrics-auth"]
    ports = sorted((p["name"], p["containerPort"]) for p in container(objects)["ports"])
    assert ports == [("health", 9436), ("metrics", 9435)]
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"]) == ("metrics", "http") and "bearerTokenFile" not in endpoint


@pytest.mark.parametrize("mode", ["shared", "exclusive"])
def test_managing_the_mode_adds_exactly_net_admin_and_a_writable_modprobe_d(
    rendered: list[Obj], tmp_path: Path, mode: str
) -> None:
    objects = kustomize_with(tmp_path / "k", (f"netns-{mode}",))
    assert agent_config(objects, tmp_path / "mounts").netns_mode.value == mode
    managed, plain = copy.deepcopy(container(objects)), copy.deepcopy(container(rendered))
    assert managed["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    writable = {m["mountPath"] for m in managed["volumeMounts"] if not m.get("readOnly", False)}
    assert writable == {"/host/etc/modprobe.d"}
    assert all(m.get("readOnly") for m in plain["volumeMounts"])  # unmanaged: nothing of the host writable
    for key in ("securityContext", "volumeMounts", "env"):
        managed.pop(key), plain.pop(key)
    assert managed == plain  # and nothing else differs


def test_nfd_publisher_drops_patch(tmp_path: Path) -> None:
    role = one(kustomize_with(tmp_path, ("nfd-features",)), "ClusterRole")
    assert role["rules"][0]["verbs"] == ["get", "list", "watch"]


def test_daemonset_privileges(rendered: list[Obj]) -> None:
    daemonset = one(rendered, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    agent_container = container(rendered)
    security = agent_container["securityContext"]
    assert pod["hostNetwork"] is True
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}  # observing (unmanaged, the default) needs none
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsUser"] == 0  # root-owned host files; see docs/security.md
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["appArmorProfile"] == {"type": "RuntimeDefault"}
    assert not any("hostPort" in p for p in agent_container["ports"])


def test_daemonset_operations(rendered: list[Obj]) -> None:
    daemonset = one(rendered, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    agent_container = container(rendered)
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert daemonset["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0},
    }
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in agent_container["env"]
    probes = {
        kind: (agent_container[kind]["httpGet"]["path"], agent_container[kind]["httpGet"]["port"])
        for kind in ("livenessProbe", "readinessProbe")
    }
    assert probes == {"livenessProbe": ("/healthz", "health"), "readinessProbe": ("/readyz", "health")}
    resources = agent_container["resources"]
    assert set(resources) == {"requests", "limits"}
    assert resources["requests"]["memory"] and resources["limits"]["memory"]
    assert _mebibytes(resources["requests"]["memory"]) <= _mebibytes(resources["limits"]["memory"])
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()


def _mebibytes(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


# ---------------------------------------------------------------------------------------------------
# The DaemonSet against the agent's real command line, settings and paths.


def _env(agent_container: Obj) -> dict[str, str]:
    """The container's environment as the agent sees it (downward-API values filled in)."""
    env: dict[str, str] = {}
    for item in agent_container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}, item
            env[item["name"]] = "gpu-a"
    return env


def _config_files(objects: list[Obj], agent_container: Obj, tmp: Path) -> dict[str, Path]:
    """Mount the ConfigMaps of the pod into ``tmp``: container path → file."""
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    volumes = {v["name"]: v for v in one(objects, "DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    files: dict[str, Path] = {}
    for mount in agent_container["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap")
        if source is None or source["name"] not in configmaps:  # an optional ConfigMap not installed
            continue
        for key, text in configmaps[source["name"]]["data"].items():
            path = tmp / mount["name"] / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            files[f"{mount['mountPath']}/{key}"] = path
    return files


def agent_config(objects: list[Obj], tmp: Path) -> Config:
    """The Config the agent in this pod starts with: its args, env and mounted config file, parsed by
    the agent's own parser and loader (any unknown flag or setting, or a bad value, raises)."""
    agent_container = container(objects)
    args = build_parser().parse_args(["run", *agent_container.get("args", [])])
    env = _env(agent_container)
    files = _config_files(objects, agent_container, tmp)
    config_path = str(args.config) if args.config is not None else env.get(CONFIG_ENV)
    assert config_path in files, f"--config {config_path} is not a mounted ConfigMap key ({sorted(files)})"
    args.config = files[config_path]
    local_env = {k: v for k, v in env.items() if k != CONFIG_ENV}
    return config_from(args, local_env)


VARIANTS = {"base": (), "reboot-sentinel": ("reboot-sentinel",), "nfd-features": ("nfd-features",),
            "both": COMPONENTS, "managed": MANAGED, "managed exclusive": ("netns-exclusive",),
            "all": COMPONENTS + MANAGED}  # fmt: skip


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_args_env_and_config_are_the_agents(variant: str, tmp_path: Path) -> None:
    objects = kustomize_with(tmp_path / "k", VARIANTS[variant]) if VARIANTS[variant] else kustomize(MANIFESTS)
    agent_container = container(objects)
    known_env = {s.env for s in SETTINGS} | {CONFIG_ENV, "NODE_NAME"}
    unknown = [e["name"] for e in agent_container["env"] if e["name"] not in known_env]
    assert not unknown, f"environment variables the agent does not read: {unknown}"
    for arg in agent_container.get("args", []):
        assert arg.startswith("--"), arg
    config = agent_config(objects, tmp_path / "mounts")
    assert config.roots.root == Path("/host")
    assert config.node_name == "gpu-a"  # NODE_NAME from the downward API reaches the agent
    assert config.kubernetes is True
    assert config.metrics_bind_address == "127.0.0.1:9435"  # loopback: the network gets kube-rbac-proxy
    port = parse_bind_address(config.health_bind_address)
    assert [(p["name"], p["containerPort"]) for p in agent_container["ports"]] == [("health", port[1])]
    assert port[0] == ""  # kubelet probes the node's address
    if "reboot-sentinel" in VARIANTS[variant]:
        assert config.reboot_sentinel == Path("/host/run/rdma-node-agent/reboot-required")
    if "nfd-features" in VARIANTS[variant]:
        assert config.label_publisher == "nfd"


def test_config_file_defaults(rendered: list[Obj], tmp_path: Path) -> None:
    data = yaml.safe_load(one(rendered, "ConfigMap")["data"]["config.yaml"])
    assert set(data) <= set(SETTINGS_BY_KEY), set(data) - set(SETTINGS_BY_KEY)
    config = agent_config(rendered, tmp_path)
    assert config.netns_mode.value == "unmanaged"  # installing the agent changes no node
    assert config.dry_run is False and config.label_publisher == "node"
    assert config.label_prefix == "rdma.spidernet.io/"
    assert config.resource_prefixes == ("spidernet.io/", "rdma/")
    assert config.device_plugin_config == Path("/etc/rdma-shared-device-plugin/config.json")


def test_a_bad_config_file_is_caught(rendered: list[Obj], tmp_path: Path) -> None:
    # agent_config really loads the file: an unknown key fails as the agent would at start-up.
    broken = copy.deepcopy(rendered)
    one(broken, "ConfigMap")["data"]["config.yaml"] += "netns-mod: shared\n"
    with pytest.raises(ConfigError, match="netns-mod"):
        agent_config(broken, tmp_path)


@dataclass(frozen=True)
class Mount:
    container_path: PurePosixPath
    writable: bool
    host_path: PurePosixPath | None  # None: not a hostPath volume

    def covers(self, path: PurePosixPath) -> bool:
        return path == self.container_path or self.container_path in path.parents


def mounts(objects: list[Obj]) -> list[Mount]:
    volumes = {v["name"]: v for v in one(objects, "DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    result = []
    for m in container(objects)["volumeMounts"]:
        host = volumes[m["name"]].get("hostPath")
        result.append(
            Mount(
                container_path=PurePosixPath(m["mountPath"]),
                writable=not m.get("readOnly", False),
                host_path=PurePosixPath(host["path"]) if host else None,
            )
        )
    return result


def _paths(config: Config) -> tuple[set[PurePosixPath], set[PurePosixPath]]:
    """(paths the agent reads, directories it writes in), as container paths."""
    roots = config.roots
    reads = {roots.sysfs, roots.procfs, roots.devfs, *roots.modprobe_dirs(), roots.host(OFED_INFO_SCRIPT)}
    if config.device_plugin_config is not None:
        reads.add(config.device_plugin_config)
    # Files are replaced atomically by a rename in their directory, so the directory must be writable.
    writes = set()
    if config.netns_mode.value != "unmanaged":
        writes.add(config.managed_modprobe_file.parent)
    if config.reboot_sentinel is not None:
        writes.add(config.reboot_sentinel.parent)
    if config.label_publisher == "nfd":
        writes.add(config.features_file.parent)
    return {PurePosixPath(p) for p in reads | writes}, {PurePosixPath(p) for p in writes}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_mounts_cover_what_the_agent_touches_and_only_writes_are_writable(variant: str, tmp_path: Path) -> None:
    objects = kustomize_with(tmp_path / "k", VARIANTS[variant]) if VARIANTS[variant] else kustomize(MANIFESTS)
    config = agent_config(objects, tmp_path / "mounts")
    touched, written = _paths(config)
    pod_mounts = mounts(objects)
    host_root = PurePosixPath(config.roots.root)

    def deepest(path: PurePosixPath) -> Mount:
        covering = [m for m in pod_mounts if m.covers(path)]
        assert covering, f"{path}: the agent uses it but no volume is mounted there"
        return max(covering, key=lambda m: len(m.container_path.parts))

    for path in sorted(touched):
        deepest(path)
    for directory in sorted(written):
        assert deepest(directory).writable, f"{directory}: the agent writes here but its mount is read-only"
    for mount in pod_mounts:
        if mount.writable:
            assert any(mount.covers(d) for d in written), f"{mount.container_path}: writable but never written"
        if mount.host_path is not None:
            # A host directory appears at the same place under the host root, or host paths lie.
            assert mount.container_path == host_root / mount.host_path.relative_to("/"), mount
    assert all(m.host_path is None or m.container_path.is_relative_to(host_root) for m in pod_mounts)


def test_read_only_host_mounts_are_recursive_where_they_have_submounts(rendered: list[Obj]) -> None:
    # /sys, /proc and /dev carry submounts (cgroup, binfmt_misc, pts) that a plain read-only bind
    # would leave writable.
    by_path = {m["mountPath"]: m for m in container(rendered)["volumeMounts"]}
    for path in ("/host/sys", "/host/proc", "/host/dev"):
        assert by_path[path]["readOnly"] is True
        assert by_path[path]["recursiveReadOnly"] == "IfPossible"


# ---------------------------------------------------------------------------------------------------
# Scraping.


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return kustomize_with(tmp_path_factory.mktemp("monitored"), MONITORING)


def test_monitoring_objects_only_with_the_component(rendered: list[Obj], monitored: list[Obj]) -> None:
    # Without the prometheus-operator CRDs `kubectl apply` of a ServiceMonitor fails: not by default.
    assert not [o for o in rendered if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert sorted(o["kind"] for o in monitored if o["apiVersion"].startswith("monitoring.coreos.com/")) == [
        "PrometheusRule", "ServiceMonitor"]  # fmt: skip
    assert [o for o in monitored if not o["apiVersion"].startswith("monitoring.coreos.com/")] == rendered


def test_one_place_for_shared_settings(tmp_path: Path) -> None:
    # base/settings.yaml feeds the agent's prefix, the admission policy's, the alerts' job and
    # runbook links: a user's component patching it changes all of them, and nothing else.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
        "patches": [{"target": {"kind": "ConfigMap", "name": "rdma-node-agent-settings"}, "patch": yaml.safe_dump([
            {"op": "replace", "path": "/data/labelPrefix", "value": "rdma.example.com/"},
            {"op": "replace", "path": "/data/prometheusJob", "value": "monitoring/rdma"},
            {"op": "replace", "path": "/data/runbookBaseUrl", "value": "https://wiki.example.com/rdma"},
        ])}],
    }))  # fmt: skip
    root = tmp_path / "k"
    root.mkdir()
    rel = Path(os.path.relpath(REPO, root))
    (root / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [str(rel / "manifests")],
        "components": ["../mine", str(rel / "manifests/components/monitoring")],
    }))  # fmt: skip
    objects = kustomize(root)
    assert agent_config(objects, tmp_path / "mounts").label_prefix == "rdma.example.com/"
    prefix = next(v for v in one(objects, "ValidatingAdmissionPolicy")["spec"]["variables"] if v["name"] == "prefix")
    assert prefix["expression"] == "'rdma.example.com/'"
    rules = [r for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    scrape = {r["alert"]: r["expr"] for r in rules if "up{" in r["expr"]}
    assert scrape == {"RdmaNodeAgentDown": 'up{job="monitoring/rdma"} == 0',
                      "RdmaNodeAgentAbsent": 'absent(up{job="monitoring/rdma"})'}  # fmt: skip
    assert {r["annotations"]["runbook_url"] for r in rules} == {
        f"https://wiki.example.com/rdma/{r['alert']}.md" for r in rules}  # fmt: skip
    text = yaml.safe_dump_all(objects)
    assert "rdma.spidernet.io/" not in text.replace("rdma.spidernet.io/owned-labels", "")
    assert "rdma-node-agent-settings" not in text  # kustomize's own: never applied


def test_service_and_servicemonitor_reach_the_metrics_port(monitored: list[Obj]) -> None:
    rendered = monitored
    service = one(rendered, "Service")
    monitor = one(rendered, "ServiceMonitor")
    pod_labels = one(rendered, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("https", "https")]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "namespaceSelector" not in monitor["spec"]  # its own namespace, whatever that is
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == ("https", "/metrics", "https")
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}  # the proxy's certificate is self-signed
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"} in (
        endpoint["relabelings"]
    )
    # Without a jobLabel, prometheus-operator names the job after the Service: the alerts use it.
    assert "jobLabel" not in monitor["spec"]
    assert 'up{job="rdma-node-agent"}' in yaml.safe_dump(one(rendered, "PrometheusRule")["spec"], width=1000)
    assert service["metadata"]["name"] == "rdma-node-agent"


def test_nfd_overlay_only_adds_the_node_selector(rendered: list[Obj]) -> None:
    overlay = kustomize(MANIFESTS / "overlays" / "nfd-selected")
    pod = one(overlay, "DaemonSet")["spec"]["template"]["spec"]
    assert pod.pop("nodeSelector") == {"feature.node.kubernetes.io/pci-15b3.present": "true"}
    assert overlay == rendered


# ---------------------------------------------------------------------------------------------------
# The admission policy, evaluated.


class Policy:
    """Evaluates a ValidatingAdmissionPolicy as the API server does: matchConditions, then the
    variables in order, then every validation; a request is allowed when all validations hold."""

    def __init__(self, policy: Obj) -> None:
        self.spec = policy["spec"]
        self._env = celpy.Environment()

    def _eval(self, expression: str, activation: Mapping[str, Any]) -> Any:
        program = self._env.program(self._env.compile(expression))
        return program.evaluate({k: json_to_cel(v) for k, v in activation.items()})

    def applies(self, request: Obj) -> bool:
        return all(bool(self._eval(c["expression"], {"request": request})) for c in self.spec["matchConditions"])

    def denials(self, request: Obj, obj: Obj | None, old: Obj | None) -> list[str]:
        """Messages of the validations that fail (an evaluation error also denies: failurePolicy Fail)."""
        assert self.spec["failurePolicy"] == "Fail"
        activation: dict[str, Any] = {"request": request, "object": obj, "oldObject": old}
        variables: dict[str, Any] = {}
        for variable in self.spec["variables"]:
            activation["variables"] = variables
            try:
                variables[variable["name"]] = _plain(self._eval(variable["expression"], activation))
            except CELEvalError:
                variables[variable["name"]] = None
        activation["variables"] = variables
        denied = []
        for validation in self.spec["validations"]:
            try:
                ok = bool(self._eval(validation["expression"], activation))
            except CELEvalError:
                ok = False
            if not ok:
                denied.append(" ".join(validation["message"].split()))
        return denied


def _plain(value: Any) -> Any:
    """A CEL value back to JSON-like Python, for the next activation."""
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    return value


AGENT = "system:serviceaccount:rdma-node-agent:rdma-node-agent"
NODE_EXTRA = "authentication.kubernetes.io/node-name"


def _request(operation: str = "UPDATE", user: str = AGENT, node: str | None = "gpu-a", **extra: Any) -> Obj:
    user_info: Obj = {"username": user, "groups": ["system:serviceaccounts", "system:authenticated"]}
    if node is not None:
        user_info["extra"] = {NODE_EXTRA: [node], "authentication.kubernetes.io/pod-name": ["rdma-node-agent-x7k2p"]}
    return {"operation": operation, "userInfo": user_info, **extra}


def _node(*, labels: Mapping[str, str | None] | None = None, edits: Mapping[str, Any] | None = None) -> Obj:
    """A Node as the API server holds it, with labels and annotations the agent must not touch;
    ``labels`` adds, changes or (None) removes labels, ``edits`` sets (None: removes) dotted paths."""
    node: Obj = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "gpu-a",
            "labels": {
                "kubernetes.io/hostname": "gpu-a",
                "feature.node.kubernetes.io/pci-15b3.present": "true",
                "rdma.spidernet.io/ready": "true",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "rdma.spidernet.io/owned-labels": "rdma.spidernet.io/ready",
            },
        },
        "spec": {"podCIDR": "10.244.1.0/24", "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
    }
    for key, value in (labels or {}).items():
        if value is None:
            del node["metadata"]["labels"][key]
        else:
            node["metadata"]["labels"][key] = value
    for path, value in (edits or {}).items():
        *parents, leaf = path.split(".")
        target = node
        for part in parents:
            target = target[part]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return node


def _many(count: int) -> dict[str, str | None]:
    """``count`` labels under the prefix besides the Node's ``rdma.spidernet.io/ready``."""
    return {f"rdma.spidernet.io/pci-15b3-{i:04x}.present": "true" for i in range(count)}


def _owned(size: int) -> dict[str, str]:
    value = ",".join(f"rdma.spidernet.io/k{i:05d}" for i in range(size // 24 + 1))[:size]
    return {"node.alpha.kubernetes.io/ttl": "0", "rdma.spidernet.io/owned-labels": value}


OWN = "Node its pod runs on"
COUNT = "at most 64 labels"
SIZE = "at most 8192 bytes"
LABELS = "labels under its prefix"
ANNOTATIONS = "annotations under its prefix"
SPEC = "spec"
VERB = "only update"
TTL_30 = {"node.alpha.kubernetes.io/ttl": "30", "rdma.spidernet.io/owned-labels": "rdma.spidernet.io/ready"}
OWNED_AB = {
    "node.alpha.kubernetes.io/ttl": "0",
    "rdma.spidernet.io/owned-labels": "rdma.spidernet.io/a,rdma.spidernet.io/b",
}

# (case, request, new object, old object, denials expected: substrings of the failing messages)
CASES: list[tuple[str, Obj, Obj | None, Obj | None, set[str]]] = [
    ("no change", _request(), _node(), _node(), set()),
    ("add a label under the prefix", _request(), _node(labels={"rdma.spidernet.io/mode": "shared"}), _node(), set()),
    ("change a label under the prefix", _request(), _node(labels={"rdma.spidernet.io/ready": "false"}), _node(), set()),
    ("remove a label under the prefix", _request(), _node(labels={"rdma.spidernet.io/ready": None}), _node(), set()),
    ("first labels on a Node without any", _request(),
     _node(edits={"metadata.labels": {"rdma.spidernet.io/ready": "true"}}), _node(edits={"metadata.labels": None}),
     set()),
    ("ownership annotation", _request(), _node(edits={"metadata.annotations": OWNED_AB}), _node(), set()),
    ("another node", _request(node="gpu-b"), _node(labels={"rdma.spidernet.io/ready": "false"}), _node(), {OWN}),
    ("a token without the node (static token)", _request(node=None), _node(), _node(), {OWN}),
    ("change a label outside the prefix", _request(), _node(labels={"kubernetes.io/hostname": "evil"}), _node(),
     {LABELS}),
    ("add a label outside the prefix", _request(), _node(labels={"node-role.kubernetes.io/control-plane": ""}),
     _node(), {LABELS}),
    ("remove a label outside the prefix", _request(),
     _node(labels={"feature.node.kubernetes.io/pci-15b3.present": None}), _node(), {LABELS}),
    ("a key that only starts like the prefix", _request(), _node(labels={"rdma.spidernet.io.evil.com/x": "1"}),
     _node(), {LABELS}),
    ("change an annotation outside the prefix", _request(), _node(edits={"metadata.annotations": TTL_30}), _node(),
     {ANNOTATIONS}),
    ("remove a taint", _request(), _node(edits={"spec.taints": None}), _node(), {SPEC}),
    ("cordon", _request(), _node(edits={"spec.unschedulable": True}), _node(), {SPEC}),
    ("add a finalizer", _request(), _node(edits={"metadata.finalizers": ["example.com/keep"]}), _node(), {SPEC}),
    ("delete the Node", _request("DELETE"), None, _node(), {VERB}),
    ("create a Node", _request("CREATE"), _node(), None, {VERB}),
    ("update the status subresource", _request(subResource="status"), _node(), _node(), {VERB}),
    ("64 labels under the prefix", _request(), _node(labels=_many(63)), _node(), set()),
    ("65 labels under the prefix", _request(), _node(labels=_many(64)), _node(), {COUNT}),
    ("an 8,192-byte ownership annotation", _request(), _node(edits={"metadata.annotations": _owned(8192)}), _node(),
     set()),
    ("an 8,193-byte ownership annotation", _request(), _node(edits={"metadata.annotations": _owned(8193)}), _node(),
     {SIZE}),
]  # fmt: skip


@pytest.fixture(scope="module")
def policy(rendered: list[Obj]) -> Policy:
    return Policy(one(rendered, "ValidatingAdmissionPolicy"))


@pytest.mark.parametrize(("case", "request_", "obj", "old", "expected"), CASES, ids=[c[0] for c in CASES])
def test_admission_policy(
    policy: Policy, case: str, request_: Obj, obj: Obj | None, old: Obj | None, expected: set[str]
) -> None:
    assert policy.applies(request_)
    denials = policy.denials(request_, obj, old)
    assert {e for e in expected if any(e in d for d in denials)} == expected, denials
    if not expected:
        assert denials == [], case
    else:
        assert len(denials) == len(expected), denials  # denied for that reason, not by accident


@pytest.mark.parametrize(
    ("user", "applies"),
    [
        (AGENT, True),
        ("system:serviceaccount:rdma-system:rdma-node-agent", True),  # installed in another namespace
        ("system:serviceaccount:kube-system:rdma-node-agent-other", False),
        ("system:node:gpu-a", False),  # kubelet: the Node authorizer's business, not ours
        ("kubernetes-admin", False),
    ],
)
def test_admission_policy_matches_only_the_agent(policy: Policy, user: str, applies: bool) -> None:
    assert policy.applies(_request(user=user)) is applies


def test_admission_policy_binding_and_prefix(rendered: list[Obj], tmp_path: Path) -> None:
    policy = one(rendered, "ValidatingAdmissionPolicy")
    binding = one(rendered, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert "Deny" in binding["spec"]["validationActions"]
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    prefix = next(v["expression"] for v in policy["spec"]["variables"] if v["name"] == "prefix")
    assert prefix == repr(agent_config(rendered, tmp_path).label_prefix)  # the CEL string literal
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["*"], "resources": ["nodes", "nodes/*"]}
    ]
