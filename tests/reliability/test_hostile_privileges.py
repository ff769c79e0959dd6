"""Least privilege of the default install, reproducing finding 8 of issue #10: ``unmanaged`` (the
default) runs without NET_ADMIN and with /etc/modprobe.d read-only; metrics are not served in clear
to the network (the agent listens on loopback, kube-rbac-proxy answers with TLS and authorization);
the admission policy bounds the labels under the prefix and the ownership annotation's size. The
rendering is tests/manifests.py's, the CEL evaluation tests/unit/test_admission_policy.py's."""

from __future__ import annotations

from pathlib import Path

from agent.settingvalues import parse_bind_address
from tests.manifests import MANIFESTS, agent_config, container, kustomize, kustomize_with, one
from tests.unit.test_admission_policy import Policy, _node, _request


def test_the_default_install_has_no_capability_and_no_writable_host_path(tmp_path: Path) -> None:
    objects = kustomize(MANIFESTS)
    agent = container(objects)
    assert agent_config(objects, tmp_path).netns_mode.value == "unmanaged"
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert [m["mountPath"] for m in agent["volumeMounts"] if not m.get("readOnly", False)] == []


def test_the_default_install_serves_no_metrics_in_clear(tmp_path: Path) -> None:
    monitored = kustomize_with(tmp_path / "k", ("monitoring",))
    (endpoint,) = one(monitored, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    objects = kustomize(MANIFESTS)
    config = agent_config(objects, tmp_path)
    host, _ = parse_bind_address(config.metrics_bind_address)
    assert host == "127.0.0.1"
    assert [p["name"] for p in container(objects)["ports"]] == ["health"]  # /healthz and /readyz only
    proxy = container(objects, "kube-rbac-proxy")
    assert any(a.startswith("--secure-listen-address=") for a in proxy["args"])


def test_the_admission_policy_bounds_labels_and_the_annotation() -> None:
    policy = Policy(one(kustomize(MANIFESTS), "ValidatingAdmissionPolicy"))
    many = {f"rdma.spidernet.io/pci-15b3-{i:04x}.present": "true" for i in range(200)}
    denials = policy.denials(_request(), _node(labels=many), _node())
    assert any("at most 64 labels" in d for d in denials)
    huge = {"rdma.spidernet.io/owned-labels": "x" * 100_000}
    denials = policy.denials(_request(), _node(edits={"metadata.annotations": huge}), _node())
    assert any("at most 8192 bytes" in d for d in denials)
