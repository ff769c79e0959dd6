"""charts/rdma-node-agent, rendered and linted by Helm's own engine (helm-python-sdk): lint --strict,
every object valid for Kubernetes 1.30 and the newest schema, the values that matter each doing what
they say, the settings reaching the agent, and the default render equal to the kustomize base in
every security-relevant field (capabilities, mounts, host namespaces, RBAC, admission policy).

Like the manifest tests these skip without kubectl (the kustomize side), except under CI."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

import agent
from tests.chart import CHART, NAMESPACE, chart_file, helm, lint, render
from tests.manifests import (
    CRD_KINDS,
    MANIFESTS,
    NFD_NODES,
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

SCHEMA_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KPS = {"release": "kps"}
DIGEST = "sha256:" + "ab" * 32

MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "monitoring on, kube-prometheus-stack labels": {
        "serviceMonitor": {"enabled": True, "labels": KPS},
        "prometheusRule": {"enabled": True, "labels": KPS},
        "dashboard": {"enabled": True},
    },
    "NFD preset": {"nfdPreset": {"enabled": True}},
    "netns shared": {"agent": {"netnsMode": "shared"}},
    "netns exclusive": {"agent": {"netnsMode": "exclusive"}},
    "reboot sentinel": {"rebootSentinel": {"enabled": True}},
    "NFD features file": {"agent": {"labelPublisher": "nfd"}},
    "admission policy off": {"admissionPolicy": {"enabled": False}},
    "image digest and registry override": {
        "image": {"digest": DIGEST},
        "global": {"imageRegistryOverride": "mirror.example.com"},
    },
    "plain HTTP metrics": {"metrics": {"kubeRbacProxy": {"enabled": False}}, "serviceMonitor": {"enabled": True}},
    "no condition, no events, no plugin config": {
        "agent": {"nodeCondition": False, "events": False},
        "devicePluginConfig": {"configMap": {"name": ""}},
    },
}


def kinds(objects: list[Obj]) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in objects)


@pytest.fixture(scope="module")
def chart() -> list[Obj]:
    return render()


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return kustomize(MANIFESTS)


# --- lint and schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(MATRIX))
def test_lint_strict_is_clean(variant: str) -> None:
    report = lint(MATRIX[variant])
    assert report["total_charts_linted"] == 1 and report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] > 1] == []  # not even a warning


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("variant", sorted(MATRIX))
def test_every_object_is_valid_for_kubernetes(variant: str, version: str) -> None:
    objects = render(MATRIX[variant], kube_version=f"v{version}")
    assert objects
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{variant}: {obj['kind']} {obj['metadata']['name']} is invalid for {version}: {err}")


@pytest.mark.parametrize("variant", sorted(MATRIX))
def test_the_agent_accepts_its_configuration_and_its_mounts_fit(variant: str, tmp_path: Path) -> None:
    objects = render(MATRIX[variant])
    config = agent_config(objects, tmp_path / "config")  # the agent's own parser: an invalid value raises
    check_mounts(objects, tmp_path / "mounts")
    assert config.netns_mode.value == MATRIX[variant].get("agent", {}).get("netnsMode", "unmanaged")


@pytest.mark.parametrize(
    ("values", "pointer"),
    [
        ({"agent": {"netnsMode": "shard"}}, "/agent/netnsMode"),
        ({"agent": {"labelPrefix": "rdma.example.com"}}, "/agent/labelPrefix"),
        ({"agent": {"interval": "30 seconds"}}, "/agent/interval"),
        ({"image": {"digest": "sha256:short"}}, "/image/digest"),
        ({"agent": {"modprobeFile": "/etc/../root/.bashrc"}}, "/agent/modprobeFile"),
        ({"devicePluginConfig": {"configMap": {"namespace": "Kube_System"}}}, "/devicePluginConfig/configMap"),
        ({"serviceMonitor": {"enabeld": True}}, "/serviceMonitor"),
    ],
)
def test_the_values_schema_refuses_bad_values(values: dict[str, Any], pointer: str) -> None:
    h = helm()
    with pytest.raises(h.HelmError, match=pointer):
        render(values)


# --- what the values do ----------------------------------------------------------------------------


def test_defaults_render_the_agents_objects_and_no_monitoring(chart: list[Obj]) -> None:
    assert kinds(chart) == [
        ("ClusterRole", "rdma-node-agent"),
        ("ClusterRole", "rdma-node-agent-metrics-auth"),
        ("ClusterRoleBinding", "rdma-node-agent"),
        ("ClusterRoleBinding", "rdma-node-agent-metrics-auth"),
        ("ConfigMap", "rdma-node-agent"),
        ("DaemonSet", "rdma-node-agent"),
        ("Role", "rdma-node-agent-device-plugin-config"),
        ("Role", "rdma-node-agent-events"),
        ("RoleBinding", "rdma-node-agent-device-plugin-config"),
        ("RoleBinding", "rdma-node-agent-events"),
        ("Service", "rdma-node-agent"),
        ("ServiceAccount", "rdma-node-agent"),
        ("ValidatingAdmissionPolicy", "rdma-node-agent-own-node-labels"),
        ("ValidatingAdmissionPolicyBinding", "rdma-node-agent-own-node-labels"),
    ]
    assert not [o for o in chart if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert container(chart)["image"] == f"ghcr.io/spidernet-io/rdma-node-agent:{agent.__version__}"


def test_monitoring_objects_carry_the_release_label() -> None:
    objects = render(MATRIX["monitoring on, kube-prometheus-stack labels"])
    for kind in ("ServiceMonitor", "PrometheusRule"):
        obj = one(objects, kind)
        assert obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["metadata"]["labels"]["release"] == "kps"
    dashboard = one(objects, "ConfigMap", "rdma-node-agent-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (REPO / "dashboards" / "rdma-node-agent.json").read_text()
    assert json.loads(dashboard["data"]["rdma-node-agent.json"]) == json.loads(shipped)
    off = render({"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}})
    assert not [o for o in off if o["apiVersion"].startswith("monitoring.coreos.com/")]


def test_the_rules_are_the_kustomize_rules_with_this_job_and_runbooks(tmp_path: Path) -> None:
    kustomized = one(kustomize_with(tmp_path, ("monitoring",)), "PrometheusRule")["spec"]
    assert one(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")["spec"] == kustomized
    values = {"enabled": True, "job": "monitoring/rdma", "runbookBaseUrl": "https://wiki.example.com/rdma/"}
    mine = one(render({"prometheusRule": values}), "PrometheusRule")
    rules = [r for g in mine["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"]: r["expr"] for r in rules if "up{" in r["expr"]} == {
        "RdmaNodeAgentDown": 'up{job="monitoring/rdma"} == 0',
        "RdmaNodeAgentAbsent": 'absent(up{job="monitoring/rdma"})',
    }
    links = {r["annotations"]["runbook_url"] for r in rules}
    assert links == {f"https://wiki.example.com/rdma/{r['alert']}.md" for r in rules}


def test_the_nfd_preset_selects_the_nodes_nfd_labels_rdma_capable() -> None:
    pod = one(render(MATRIX["NFD preset"]), "DaemonSet")["spec"]["template"]["spec"]
    for labels, selected in NFD_NODES:
        assert affinity_selects(pod["affinity"], {**labels, "kubernetes.io/os": "linux"}) is selected, labels
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}


@pytest.mark.parametrize("mode", ["shared", "exclusive"])
def test_managing_the_mode_adds_exactly_net_admin_and_a_writable_modprobe_d(chart: list[Obj], mode: str) -> None:
    managed = copy.deepcopy(container(render({"agent": {"netnsMode": mode}})))
    plain = copy.deepcopy(container(chart))
    assert managed["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert {m["mountPath"] for m in managed["volumeMounts"] if not m.get("readOnly")} == {"/host/etc/modprobe.d"}
    assert all(m.get("readOnly") for m in plain["volumeMounts"])
    for key in ("securityContext", "volumeMounts"):
        managed.pop(key), plain.pop(key)
    assert managed == plain


def test_nfd_publisher_drops_node_patch_and_adds_one_writable_directory(chart: list[Obj], tmp_path: Path) -> None:
    objects = render({"agent": {"labelPublisher": "nfd"}})
    assert one(objects, "ClusterRole")["rules"][0]["verbs"] == ["get", "list", "watch"]
    config = agent_config(objects, tmp_path)
    assert str(config.features_file) == "/host/etc/kubernetes/node-feature-discovery/features.d/rdma-node-agent"
    writable = [m["mountPath"] for m in container(objects)["volumeMounts"] if not m.get("readOnly")]
    assert writable == ["/host/etc/kubernetes/node-feature-discovery/features.d"]


def test_image_digest_and_registry_override() -> None:
    objects = render(MATRIX["image digest and registry override"])
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    images = {c["name"]: c["image"] for c in pod["containers"]}
    assert images == {
        "agent": f"mirror.example.com/spidernet-io/rdma-node-agent@{DIGEST}",
        "kube-rbac-proxy": "mirror.example.com/brancz/kube-rbac-proxy:v0.22.1",
    }


def test_switching_writers_off_removes_their_privileges() -> None:
    objects = render(MATRIX["no condition, no events, no plugin config"])
    assert one(objects, "ClusterRole")["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]}
    ]
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]


def test_admission_policy_off_and_prefix_set_once(tmp_path: Path) -> None:
    assert not [o for o in render({"admissionPolicy": {"enabled": False}}) if "AdmissionPolicy" in o["kind"]]
    objects = render({"agent": {"labelPrefix": "rdma.example.com/"}})
    prefix = next(v for v in one(objects, "ValidatingAdmissionPolicy")["spec"]["variables"] if v["name"] == "prefix")
    assert prefix["expression"] == "'rdma.example.com/'"
    assert agent_config(objects, tmp_path).label_prefix == "rdma.example.com/"


def test_spiderpool_namespace_and_release_namespace(tmp_path: Path) -> None:
    objects = render({"devicePluginConfig": {"configMap": {"namespace": "spiderpool"}}}, namespace="kube-system")
    config = agent_config(objects, tmp_path)
    assert config.device_plugin_configmap == ("spiderpool", "spiderpool-rdma-shared-device-plugin")
    role = one(objects, "Role", "rdma-node-agent-device-plugin-config")
    assert role["metadata"]["namespace"] == "spiderpool"
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rdma-node-agent", "namespace": "kube-system"}]
    assert one(objects, "DaemonSet")["metadata"]["namespace"] == "kube-system"


# --- the same install as kustomize -----------------------------------------------------------------

PARITY = [
    ("defaults", {}, ()),
    ("netns shared", {"agent": {"netnsMode": "shared"}}, ("netns-shared",)),
    ("netns exclusive", {"agent": {"netnsMode": "exclusive"}}, ("netns-exclusive",)),
    ("NFD features file", {"agent": {"labelPublisher": "nfd"}}, ("nfd-features",)),
    (
        "plain HTTP",
        {"metrics": {"kubeRbacProxy": {"enabled": False}}, "serviceMonitor": {"enabled": True}},
        ("monitoring", "metrics-plain-http"),
    ),
]


def security(objects: list[Obj]) -> dict[str, Any]:
    """What decides what the agent can do: host namespaces and pod security, each container's security
    context, mounts and volumes, RBAC rules and subjects, the admission policy."""
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    hostpaths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    pod_fields = (
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "securityContext",
        "serviceAccountName",
        "automountServiceAccountToken",
        "tolerations",
        "priorityClassName",
    )

    def mounts(c: Obj) -> list[tuple[str, bool, str | None]]:
        found = c.get("volumeMounts", [])
        return sorted((m["mountPath"], bool(m.get("readOnly")), hostpaths.get(m["name"])) for m in found)

    rbac = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    return {
        "pod": {k: pod.get(k) for k in pod_fields},
        "containers": {
            c["name"]: {"securityContext": c["securityContext"], "args": c.get("args"), "mounts": mounts(c)}
            for c in pod["containers"]
        },
        "rbac": {
            (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): (
                o.get("rules"),
                o.get("roleRef"),
                o.get("subjects"),
            )
            for o in objects
            if o["kind"] in rbac
        },
        # CEL ignores line breaks: kustomize keeps a folded scalar's breaks before more-indented lines
        # doubled, Helm's YAML does not.
        "admission": [_squeezed(o["spec"]) for o in objects if "AdmissionPolicy" in o["kind"]],
    }


def _squeezed(value: Any) -> Any:
    """``value`` with every run of whitespace in its strings made one space."""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, dict):
        return {k: _squeezed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_squeezed(v) for v in value]
    return value


@pytest.mark.parametrize(("values", "components"), [c[1:] for c in PARITY], ids=[c[0] for c in PARITY])
def test_the_chart_installs_what_kustomize_installs(
    values: dict[str, Any], components: tuple[str, ...], tmp_path: Path
) -> None:
    kustomized = kustomize_with(tmp_path / "k", components) if components else kustomize(MANIFESTS)
    charted = render(values)
    assert security(charted) == security(kustomized)
    configs = [agent_config(objects, tmp_path / str(i)) for i, objects in enumerate((charted, kustomized))]
    # (modprobe-file and nfd-features-file unset mean their defaults: the chart writes them out)
    assert [(c.managed_modprobe_file, c.features_file) for c in configs] == [
        (configs[1].managed_modprobe_file, configs[1].features_file)
    ] * 2
    same = [replace(c, modprobe_file=None, nfd_features_file=None) for c in configs]
    assert same[0] == same[1]


def test_the_chart_copies_of_shared_files_are_identical() -> None:
    """The chart cannot read outside its directory: its policy, rules and dashboard are copies."""
    pairs = {
        "files/validatingadmissionpolicy.yaml": MANIFESTS / "base" / "validatingadmissionpolicy.yaml",
        "files/prometheusrule.yaml": MANIFESTS / "components" / "monitoring" / "prometheusrule.yaml",
        "files/dashboard.json": REPO / "dashboards" / "rdma-node-agent.json",
    }
    for copy_in_chart, original in pairs.items():
        assert chart_file(copy_in_chart).read_bytes() == original.read_bytes(), (
            f"cp {original.relative_to(REPO)} {chart_file(copy_in_chart).relative_to(REPO)}"
        )


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["appVersion"] == agent.__version__
    assert meta["kubeVersion"] == ">=1.30.0-0"  # admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy
    assert NAMESPACE == "rdma-node-agent"
