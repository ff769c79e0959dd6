"""manifests/ (kustomize): renders with `kubectl kustomize`, every object valid against the Kubernetes
schemas (1.30 and the newest kubernetes-validate ships), least privilege of the DaemonSet and RBAC,
and args/env/config/mounts held to the agent's real settings (the admission policy's CEL:
test_admission_policy.py).

kubectl (with its built-in kustomize) renders the manifests. Without it these tests skip with a
reason, except under CI=true or RNA_REQUIRE_KUBECTL=1, where they fail.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

import agent
from agent.errors import ConfigError
from agent.settings import SETTINGS, SETTINGS_BY_KEY
from agent.settingvalues import parse_bind_address
from tests.manifests import (
    COMPONENTS,
    CONFIG_ENV,
    CRD_KINDS,
    IMAGE,
    MANAGED,
    MANIFESTS,
    MONITORING,
    NAMESPACE,
    NFD_NODES,
    PLAIN,
    REPO,
    Obj,
    affinity_selects,
    agent_config,
    check_mounts,
    container,
    kustomize,
    kustomize_with,
    one,
)


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    return kustomize(MANIFESTS)


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
        ("Role", "rdma-node-agent-device-plugin-config"),
        ("Role", "rdma-node-agent-events"),
        ("RoleBinding", "rdma-node-agent-device-plugin-config"),
        ("RoleBinding", "rdma-node-agent-events"),
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
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for obj in rendered:
        # Events about a Node live where the kubelet puts them: the Role for them is in "default";
        # the device plugin's ConfigMap where the plugin keeps it (Spiderpool's: kube-system).
        namespace = {"rdma-node-agent-events": "default", "rdma-node-agent-device-plugin-config": "kube-system"}.get(
            obj["metadata"]["name"], NAMESPACE
        )
        assert obj["metadata"].get("namespace") == (None if obj["kind"] in cluster_scoped else namespace), obj["kind"]
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
    assert checked == 4 * 15 + 13  # the plain-http variant has no kube-rbac-proxy role and binding


def test_schema_validation_is_strict() -> None:
    # The check above is only worth something if a misspelt field fails it.
    daemonset = yaml.safe_load((MANIFESTS / "base" / "daemonset.yaml").read_text())
    broken = copy.deepcopy(daemonset)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privilegd"] = False
    with pytest.raises(kubernetes_validate.ValidationError, match="privilegd"):
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


# ---------------------------------------------------------------------------------------------------
# Least privilege.


def test_rbac_is_its_node_its_node_status_and_events(rendered: list[Obj]) -> None:
    role = one(rendered, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    ]
    events = one(rendered, "Role", "rdma-node-agent-events")
    assert events["metadata"]["namespace"] == "default"  # the kubelet's namespace for Node events
    assert events["rules"] == [{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]
    events_binding = one(rendered, "RoleBinding", "rdma-node-agent-events")
    assert events_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "rdma-node-agent-events",
    }
    assert events_binding["subjects"] == one(rendered, "ClusterRoleBinding")["subjects"]
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


VARIANTS = {
    "base": (),
    "reboot-sentinel": ("reboot-sentinel",),
    "nfd-features": ("nfd-features",),
    "both": COMPONENTS,
    "managed": MANAGED,
    "managed exclusive": ("netns-exclusive",),
    "all": COMPONENTS + MANAGED,
}


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
    assert config.device_plugin_config is None  # no file: the plugin's ConfigMap, through the API
    assert config.device_plugin_configmap == ("kube-system", "spiderpool-rdma-shared-device-plugin")
    assert config.device_plugin_configmap_key == "config.json"
    role = one(rendered, "Role", "rdma-node-agent-device-plugin-config")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["spiderpool-rdma-shared-device-plugin"],
            "verbs": ["get", "list", "watch"],
        }
    ]


def test_a_bad_config_file_is_caught(rendered: list[Obj], tmp_path: Path) -> None:
    # agent_config really loads the file: an unknown key fails as the agent would at start-up.
    broken = copy.deepcopy(rendered)
    one(broken, "ConfigMap")["data"]["config.yaml"] += "netns-mod: shared\n"
    with pytest.raises(ConfigError, match="netns-mod"):
        agent_config(broken, tmp_path)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_mounts_cover_what_the_agent_touches_and_only_writes_are_writable(variant: str, tmp_path: Path) -> None:
    objects = kustomize_with(tmp_path / "k", VARIANTS[variant]) if VARIANTS[variant] else kustomize(MANIFESTS)
    check_mounts(objects, tmp_path / "mounts")


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
        "PrometheusRule",
        "ServiceMonitor",
    ]
    assert [o for o in monitored if not o["apiVersion"].startswith("monitoring.coreos.com/")] == rendered


def test_one_place_for_shared_settings(tmp_path: Path) -> None:
    # base/settings.yaml feeds the agent's prefix, the admission policy's, the alerts' job and
    # runbook links: a user's component patching it changes all of them, and nothing else.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1alpha1",
                "kind": "Component",
                "patches": [
                    {
                        "target": {"kind": "ConfigMap", "name": "rdma-node-agent-settings"},
                        "patch": yaml.safe_dump(
                            [
                                {"op": "replace", "path": "/data/labelPrefix", "value": "rdma.example.com/"},
                                {"op": "replace", "path": "/data/prometheusJob", "value": "monitoring/rdma"},
                                {
                                    "op": "replace",
                                    "path": "/data/runbookBaseUrl",
                                    "value": "https://wiki.example.com/rdma",
                                },
                                {
                                    "op": "replace",
                                    "path": "/data/devicePluginConfigMapNamespace",
                                    "value": "spiderpool",
                                },
                                {"op": "replace", "path": "/data/devicePluginConfigMapName", "value": "rdma-devices"},
                            ]
                        ),
                    }
                ],
            }
        )
    )
    root = tmp_path / "k"
    root.mkdir()
    rel = Path(os.path.relpath(REPO, root))
    (root / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(rel / "manifests")],
                "components": ["../mine", str(rel / "manifests/components/monitoring")],
            }
        )
    )
    objects = kustomize(root)
    assert agent_config(objects, tmp_path / "mounts").label_prefix == "rdma.example.com/"
    prefix = next(v for v in one(objects, "ValidatingAdmissionPolicy")["spec"]["variables"] if v["name"] == "prefix")
    assert prefix["expression"] == "'rdma.example.com/'"
    rules = [r for g in one(objects, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    scrape = {r["alert"]: r["expr"] for r in rules if "up{" in r["expr"]}
    assert scrape == {
        "RdmaNodeAgentDown": 'up{job="monitoring/rdma"} == 0',
        "RdmaNodeAgentAbsent": 'absent(up{job="monitoring/rdma"})',
    }
    assert {r["annotations"]["runbook_url"] for r in rules} == {
        f"https://wiki.example.com/rdma/{r['alert']}.md" for r in rules
    }
    config = agent_config(objects, tmp_path / "mounts2")
    assert config.device_plugin_configmap == ("spiderpool", "rdma-devices")
    role = one(objects, "Role", "rdma-node-agent-device-plugin-config")
    assert role["metadata"]["namespace"] == "spiderpool" and role["rules"][0]["resourceNames"] == ["rdma-devices"]
    assert one(objects, "RoleBinding", "rdma-node-agent-device-plugin-config")["metadata"]["namespace"] == "spiderpool"
    text = yaml.safe_dump_all(objects)
    assert "rdma.spidernet.io/" not in text.replace("rdma.spidernet.io/owned-labels", "")
    assert "spiderpool-rdma-shared-device-plugin" not in text
    assert "rdma-node-agent-settings" not in text  # kustomize's own: never applied


def test_monitoring_takes_kube_prometheus_stacks_release_label_from_an_overlay(tmp_path: Path) -> None:
    # The overlay docs/install.md shows: both objects get the label kube-prometheus-stack selects on.
    root = tmp_path / "k"
    root.mkdir()
    rel = Path(os.path.relpath(REPO, root))
    patch = "- {op: add, path: /metadata/labels/release, value: kps}"
    (root / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(rel / "manifests")],
                "components": [str(rel / "manifests/components/monitoring")],
                "patches": [{"target": {"group": "monitoring.coreos.com"}, "patch": patch}],
            }
        )
    )
    objects = kustomize(root)
    assert [o["metadata"]["labels"].get("release") for o in objects if o["kind"] in CRD_KINDS] == ["kps", "kps"]
    assert all("release" not in o["metadata"]["labels"] for o in objects if o["kind"] not in CRD_KINDS)


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


def test_nfd_overlay_only_adds_the_nfd_affinity(rendered: list[Obj]) -> None:
    overlay = kustomize(MANIFESTS / "overlays" / "nfd-selected")
    pod = one(overlay, "DaemonSet")["spec"]["template"]["spec"]
    affinity = pod.pop("affinity")
    for node, selected in NFD_NODES:
        assert affinity_selects(affinity, node) is selected, node
    assert overlay == rendered


# ---------------------------------------------------------------------------------------------------
