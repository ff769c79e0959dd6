"""The ValidatingAdmissionPolicy of manifests/, evaluated as the API server does (cel-python) on the
requests the agent's service account could make: Node label and annotation updates, and patches of
the status subresource (only its own RDMAReady condition, nothing else in status or metadata)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import celpy
import pytest
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from tests.builders import KUBELET_CONDITIONS as KUBELET
from tests.manifests import MANIFESTS, Obj, agent_config, kustomize, one


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    return kustomize(MANIFESTS)


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
    (
        "first labels on a Node without any",
        _request(),
        _node(edits={"metadata.labels": {"rdma.spidernet.io/ready": "true"}}),
        _node(edits={"metadata.labels": None}),
        set(),
    ),
    ("ownership annotation", _request(), _node(edits={"metadata.annotations": OWNED_AB}), _node(), set()),
    ("another node", _request(node="gpu-b"), _node(labels={"rdma.spidernet.io/ready": "false"}), _node(), {OWN}),
    ("a token without the node (static token)", _request(node=None), _node(), _node(), {OWN}),
    (
        "change a label outside the prefix",
        _request(),
        _node(labels={"kubernetes.io/hostname": "evil"}),
        _node(),
        {LABELS},
    ),
    (
        "add a label outside the prefix",
        _request(),
        _node(labels={"node-role.kubernetes.io/control-plane": ""}),
        _node(),
        {LABELS},
    ),
    (
        "remove a label outside the prefix",
        _request(),
        _node(labels={"feature.node.kubernetes.io/pci-15b3.present": None}),
        _node(),
        {LABELS},
    ),
    (
        "a key that only starts like the prefix",
        _request(),
        _node(labels={"rdma.spidernet.io.evil.com/x": "1"}),
        _node(),
        {LABELS},
    ),
    (
        "change an annotation outside the prefix",
        _request(),
        _node(edits={"metadata.annotations": TTL_30}),
        _node(),
        {ANNOTATIONS},
    ),
    ("remove a taint", _request(), _node(edits={"spec.taints": None}), _node(), {SPEC}),
    ("cordon", _request(), _node(edits={"spec.unschedulable": True}), _node(), {SPEC}),
    ("add a finalizer", _request(), _node(edits={"metadata.finalizers": ["example.com/keep"]}), _node(), {SPEC}),
    ("delete the Node", _request("DELETE"), None, _node(), {VERB}),
    ("create a Node", _request("CREATE"), _node(), None, {VERB}),
    ("another subresource", _request(subResource="proxy"), _node(), _node(), {VERB}),
    ("64 labels under the prefix", _request(), _node(labels=_many(63)), _node(), set()),
    ("65 labels under the prefix", _request(), _node(labels=_many(64)), _node(), {COUNT}),
    (
        "an 8,192-byte ownership annotation",
        _request(),
        _node(edits={"metadata.annotations": _owned(8192)}),
        _node(),
        set(),
    ),
    (
        "an 8,193-byte ownership annotation",
        _request(),
        _node(edits={"metadata.annotations": _owned(8193)}),
        _node(),
        {SIZE},
    ),
]


# --- nodes/status ------------------------------------------------------------------------------------

RDMA_READY = {
    "type": "RDMAReady",
    "status": "True",
    "reason": "RDMAReady",
    "message": "RDMA is usable",
    "lastHeartbeatTime": "2026-11-01T00:00:05Z",
    "lastTransitionTime": "2026-11-01T00:00:05Z",
}
RDMA_DOWN = {**RDMA_READY, "status": "False", "reason": "PortDown", "message": "port_link_up: no RDMA port is ACTIVE"}


def _with_status(conditions: list[Obj] | None = None, **fields: Any) -> Obj:
    """A Node with a status as the kubelet keeps it: capacity, allocatable, addresses, conditions."""
    node = _node()
    node["status"] = {
        "capacity": {"cpu": "64", "spidernet.io/hca_shared_devices": "8"},
        "allocatable": {"cpu": "63", "spidernet.io/hca_shared_devices": "8"},
        "addresses": [{"type": "InternalIP", "address": "10.0.0.11"}, {"type": "Hostname", "address": "gpu-a"}],
        "conditions": [dict(c) for c in (KUBELET if conditions is None else conditions)],
        **fields,
    }
    return node


STATUS = _request(subResource="status")
CONDITION = "its own Node condition type RDMAReady"
BOUNDED = "one RDMAReady condition"
OTHER_STATUS = "any Node status field but its condition"
STATUS_META = "labels or annotations through nodes/status"
STATUS_CASES: list[tuple[str, Obj, Obj | None, Obj | None, set[str]]] = [
    ("add RDMAReady", STATUS, _with_status([*KUBELET, RDMA_READY]), _with_status(), set()),
    ("change RDMAReady", STATUS, _with_status([*KUBELET, RDMA_DOWN]), _with_status([*KUBELET, RDMA_READY]), set()),
    ("RDMAReady on a Node without conditions", STATUS, _with_status([RDMA_READY]), _with_status([]), set()),
    ("RDMAReady on a Node without status", STATUS, _with_status([RDMA_READY]), _node(), {OTHER_STATUS}),
    (
        "heartbeat only",
        STATUS,
        _with_status([*KUBELET, {**RDMA_READY, "lastHeartbeatTime": "2026-11-01T01:00:05Z"}]),
        _with_status([*KUBELET, RDMA_READY]),
        set(),
    ),
    (
        "another node's status",
        _request(subResource="status", node="gpu-b"),
        _with_status([*KUBELET, RDMA_READY]),
        _with_status(),
        {OWN},
    ),
    (
        "set the kubelet's Ready to False",
        STATUS,
        _with_status([KUBELET[0], {**KUBELET[1], "status": "False"}, RDMA_READY]),
        _with_status(),
        {CONDITION},
    ),
    (
        "remove the kubelet's MemoryPressure",
        STATUS,
        _with_status([KUBELET[1], RDMA_READY]),
        _with_status(),
        {CONDITION},
    ),
    (
        "a condition type it does not own",
        STATUS,
        _with_status([*KUBELET, {**RDMA_READY, "type": "GPUReady"}]),
        _with_status(),
        {CONDITION},
    ),
    ("two RDMAReady entries", STATUS, _with_status([*KUBELET, RDMA_READY, RDMA_DOWN]), _with_status(), {BOUNDED}),
    (
        "a 1,025-character message",
        STATUS,
        _with_status([*KUBELET, {**RDMA_READY, "message": "m" * 1025}]),
        _with_status(),
        {BOUNDED},
    ),
    (
        "change allocatable",
        STATUS,
        _with_status([*KUBELET, RDMA_READY], allocatable={"cpu": "63", "spidernet.io/hca_shared_devices": "0"}),
        _with_status(),
        {OTHER_STATUS},
    ),
    (
        "add a status field",
        STATUS,
        _with_status([*KUBELET, RDMA_READY], phase="Terminated"),
        _with_status(),
        {OTHER_STATUS},
    ),
    (
        "remove addresses",
        STATUS,
        {**_with_status(), "status": {k: v for k, v in _with_status()["status"].items() if k != "addresses"}},
        _with_status(),
        {OTHER_STATUS},
    ),
    (
        "a label through status",
        STATUS,
        {**_with_status([*KUBELET, RDMA_READY]), "metadata": _node(labels={"rdma.spidernet.io/x": "1"})["metadata"]},
        _with_status(),
        {STATUS_META},
    ),
    (
        "an annotation through status",
        STATUS,
        {**_with_status(), "metadata": _node(edits={"metadata.annotations": TTL_30})["metadata"]},
        _with_status(),
        {STATUS_META},
    ),
    (
        "a taint through status (the server resets spec anyway)",
        STATUS,
        {**_with_status(), "spec": {"podCIDR": "10.244.1.0/24"}},
        _with_status(),
        {SPEC},
    ),
]


@pytest.fixture(scope="module")
def policy(rendered: list[Obj]) -> Policy:
    return Policy(one(rendered, "ValidatingAdmissionPolicy"))


@pytest.mark.parametrize(
    ("case", "request_", "obj", "old", "expected"), CASES + STATUS_CASES, ids=[c[0] for c in CASES + STATUS_CASES]
)
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
