"""Rendering manifests/ with kustomize and reading what a pod of it would run with: shared by the
manifest, admission-policy and Helm chart tests."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from agent.cli import build_parser, config_from
from agent.config import Config
from agent.discover.procfs import OFED_INFO_SCRIPT
from agent.settings import ENV_PREFIX
from tests.host import required_tool

REPO = Path(__file__).resolve().parents[1]
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


def kubectl() -> str:
    return required_tool("kubectl", env="RNA_REQUIRE_KUBECTL", install="CI needs it to render manifests/")


def kustomize(directory: Path) -> list[Obj]:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False)
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


POLICY = "rdma-node-agent-own-node-labels"


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    """The object of ``kind`` named ``name`` (default: the agent's own of that kind; its config
    ConfigMap's name may carry kustomize's content hash)."""
    name = name or (POLICY if kind.startswith("ValidatingAdmissionPolicy") else "rdma-node-agent")
    pattern = re.escape(name) + (r"(-[a-z0-9]{10})?" if kind == "ConfigMap" else "")
    found = [o for o in objects if o["kind"] == kind and re.fullmatch(pattern, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(objects: list[Obj], name: str = "agent") -> Obj:
    containers = one(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] in (["agent", "kube-rbac-proxy"], ["agent"])
    result: Obj = next(c for c in containers if c["name"] == name)
    return result


def container_env(agent_container: Obj) -> dict[str, str]:
    """The container's environment as the agent sees it (downward-API values filled in)."""
    env: dict[str, str] = {}
    for item in agent_container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}, item
            env[item["name"]] = "gpu-a"
    return env


def config_files(objects: list[Obj], agent_container: Obj, tmp: Path) -> dict[str, Path]:
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
    env = container_env(agent_container)
    files = config_files(objects, agent_container, tmp)
    config_path = str(args.config) if args.config is not None else env.get(CONFIG_ENV)
    assert config_path in files, f"--config {config_path} is not a mounted ConfigMap key ({sorted(files)})"
    args.config = files[config_path]
    local_env = {k: v for k, v in env.items() if k != CONFIG_ENV}
    return config_from(args, local_env)


# Labels node-feature-discovery's default configuration gives nodes (source/custom/static_features.go,
# source/pci: by default only classes 03, 0b40 and 12 get pci-<class>_<vendor> labels), and whether
# the agent belongs there: a ConnectX node with NFD >= 0.14, the same with an older NFD (or NFD's
# sample NodeFeatureRule), a GPU-only node, a Soft-RoCE-only node.
_NFD_COMMON = {
    "feature.node.kubernetes.io/kernel-version.major": "6",
    "feature.node.kubernetes.io/cpu-model.vendor_id": "AMD",
}
NFD_NODES: list[tuple[dict[str, str], bool]] = [
    (
        {
            **_NFD_COMMON,
            "feature.node.kubernetes.io/rdma.capable": "true",
            "feature.node.kubernetes.io/rdma.available": "true",
            "feature.node.kubernetes.io/pci-0300_10de.present": "true",
        },
        True,
    ),
    ({**_NFD_COMMON, "feature.node.kubernetes.io/custom-rdma.capable": "true"}, True),
    ({**_NFD_COMMON, "feature.node.kubernetes.io/pci-0300_10de.present": "true"}, False),
    ({**_NFD_COMMON, "feature.node.kubernetes.io/rdma.available": "true"}, False),  # rdma_rxe, no 15b3 device
]


def _requirement(expression: Obj, labels: dict[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise AssertionError(f"operator {operator} not modelled")


def affinity_selects(affinity: Obj, labels: dict[str, str]) -> bool:
    """Whether a pod with this ``affinity`` may be scheduled on a node with ``labels`` (required
    node affinity: the terms are ORed, the expressions of a term ANDed)."""
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return any(all(_requirement(e, labels) for e in term["matchExpressions"]) for term in terms)


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


def check_mounts(objects: list[Obj], tmp: Path) -> None:
    """The pod's volumes cover every path the agent in it reads and writes; only the directories it
    writes in are writable; a host directory appears at the same place under the host root."""
    config = agent_config(objects, tmp)
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
