"""Node labels: Kubernetes label syntax, the desired labels per snapshot, readiness, the owned-key diff
and merge patch (zero writes in steady state), and hysteresis of link-driven labels."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.labelsyntax import validate_label
from agent.model import (
    CharDevice,
    DesiredMode,
    EnforcementState,
    NetnsMode,
    NodeSnapshot,
    PciFunction,
    RdmaDevice,
)
from agent.publish.labels import (
    MAX_ANNOTATION_BYTES,
    MAX_LABELS,
    Hysteresis,
    desired_labels,
    hysteresis_keys,
    label_problems,
    owned_annotation,
    owned_annotation_key,
    owned_keys,
    owned_keys_from_annotation,
    ownership_patch,
    plan_label_patch,
    plan_node_patch,
)
from agent.publish.readiness import node_ready
from agent.settings import load_config
from tests.builders import rdma_port

P = "rdma.spidernet.io/"
T0 = 1_753_000_000.0


def _chars(device: str, n: int) -> tuple[CharDevice, ...]:
    return tuple(
        CharDevice(name=f"{kind}{n}", kind=kind, path=f"/dev/infiniband/{kind}{n}", present=True, rdma_device=device)
        for kind in ("uverbs", "umad", "issm")
    )


RDMA_CM = CharDevice(name="rdma_cm", kind="rdma_cm", path="/dev/infiniband/rdma_cm", present=True)


def _mlx5(address: str, device: str = "1017", **kw: Any) -> PciFunction:
    base = PciFunction(
        address=address, vendor="15b3", device=device, pci_class="020000", driver="mlx5_core", numa_node=0
    )
    return replace(base, **kw)


def mlx5_snapshot(*, up: bool = True, mode: NetnsMode | None = NetnsMode.SHARED) -> NodeSnapshot:
    """A ConnectX-5 dual-port PF pair (15b3:1017, SR-IOV up to 8 VFs) with 4 VFs enabled on port 0
    (15b3:1018; one still on the host with an RDMA device, three handed to pods), an Intel i350
    management NIC without RDMA, and Soft-RoCE rxe0 over it (no PCI RDMA device)."""

    def rdma(name: str, index: int, address: str, netdev: str) -> RdmaDevice:
        return RdmaDevice(
            name=name,
            index=index,
            node_type="ca",
            protocol="roce",
            port_count=1,
            pci_address=address,
            ports=(rdma_port(netdev, up=up),),
            char_devices=(f"issm{index}", f"umad{index}", f"uverbs{index}"),
        )

    rxe0 = RdmaDevice(
        name="rxe0",
        index=3,
        node_type="ca",
        protocol="roce",
        port_count=1,
        pci_address="0000:02:00.0",  # sysfs derives it from the netdev
        ports=(rdma_port("eno1"),),
        char_devices=("uverbs3",),
    )
    vfs = ("0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4", "0000:3b:00.5")
    functions = (
        PciFunction(
            address="0000:02:00.0",
            vendor="8086",
            device="1521",
            pci_class="020000",
            driver="igb",
            netdevs=("eno1",),
        ),
        _mlx5(
            "0000:3b:00.0",
            netdevs=("ens1f0np0",),
            rdma_devices=("mlx5_0",),
            sriov_totalvfs=8,
            sriov_numvfs=4,
            virtfns=vfs,
        ),
        _mlx5("0000:3b:00.1", netdevs=("ens1f1np1",), rdma_devices=("mlx5_1",), sriov_totalvfs=8, sriov_numvfs=0),
        _mlx5("0000:3b:00.2", "1018", netdevs=("ens1f0v0",), rdma_devices=("mlx5_2",), physfn="0000:3b:00.0"),
        # VFs handed to pods: their netdev and RDMA device live in the pods' namespaces.
        *(_mlx5(vf, "1018", physfn="0000:3b:00.0") for vf in vfs[1:]),
    )
    chars = (
        *_chars("mlx5_0", 0),
        *_chars("mlx5_1", 1),
        *_chars("mlx5_2", 2),
        CharDevice(name="uverbs3", kind="uverbs", path="/dev/infiniband/uverbs3", present=True, rdma_device="rxe0"),
        RDMA_CM,
    )
    return NodeSnapshot(
        taken_at=T0,
        netlink_available=True,
        netns_mode=mode,
        netns_mode_source="netlink",
        devices=(
            rdma("mlx5_0", 0, "0000:3b:00.0", "ens1f0np0"),
            rdma("mlx5_1", 1, "0000:3b:00.1", "ens1f1np1"),
            rdma("mlx5_2", 2, "0000:3b:00.2", "ens1f0v0"),
            rxe0,
        ),
        pci_functions=functions,
        char_devices=chars,
    )


def _enforcement(*, compliant: bool = True, reboot: bool = False) -> EnforcementState:
    return EnforcementState(
        desired=DesiredMode.SHARED,
        live=NetnsMode.SHARED if compliant else NetnsMode.EXCLUSIVE,
        persisted=None,
        compliant=compliant,
        reboot_required=reboot,
        reboot_reason="persisted exclusive, live shared" if reboot else None,
    )


# --- label syntax ---------------------------------------------------------------------------------

NAME63 = "a" * 63
SUBDOMAIN253 = ".".join(["a" * 63] * 3 + ["a" * 61])  # 253 bytes


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("rdma.spidernet.io/ready", True),
        ("ready", True),  # the prefix is optional
        ("a", True),
        ("A-b_c.D9", True),  # the name part may hold upper case, '_' and '.'
        (f"x/{NAME63}", True),
        (f"x/{NAME63}a", False),  # name part 64 bytes
        (f"{SUBDOMAIN253}/n", True),
        (f"a{SUBDOMAIN253}/n", False),  # prefix 254 bytes
        ("", False),
        ("/ready", False),  # empty prefix
        ("rdma.spidernet.io/", False),  # empty name
        ("a/b/c", False),
        ("Rdma.spidernet.io/ready", False),  # the prefix is a lowercase DNS subdomain
        ("rdma_io/ready", False),
        ("rdma..io/ready", False),
        ("-rdma.io/ready", False),
        ("x/-ready", False),
        ("x/ready-", False),
        ("x/re ady", False),
        ("x/réady", False),
        ("x/ready\n", False),  # Go's $ does not match before a trailing newline; neither may we
    ],
)
def test_validate_label_key(key: str, valid: bool) -> None:
    assert (validate_label(key, "true") is None) is valid, validate_label(key, "true")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("", True),  # empty is a valid value
        ("true", True),
        ("15b3", True),
        ("A.b-c_D", True),
        (NAME63, True),
        (NAME63 + "a", False),
        ("-x", False),
        ("x.", False),
        ("a b", False),
        ("é", False),
        ("true\n", False),
        ("a/b", False),
    ],
)
def test_validate_label_value(value: str, valid: bool) -> None:
    assert (validate_label(P + "x", value) is None) is valid


def test_validate_label_names_key_and_reason() -> None:
    assert validate_label("x/ready-", "true") == (
        "invalid key 'x/ready-': name part must consist of alphanumeric characters, '-', '_' or '.', "
        "and must start and end with an alphanumeric character"
    )
    assert validate_label(P + "x", "a" * 64) == f"invalid value {'a' * 64!r} for {P}x: must be no more than 63 bytes"


@pytest.mark.parametrize(
    ("prefix", "error"),
    [
        ("rdma.spidernet.io/", None),
        ("example/", None),
        ("feature.node.kubernetes.io/", None),  # NFD's own namespace is allowed
        ("rdma.feature.node.kubernetes.io/", None),
        ("rdma.spidernet.io", "must be a DNS subdomain followed by '/'"),
        ("rdma.spidernet.io//", "must be a DNS subdomain followed by '/'"),
        ("/", "prefix part must be non-empty"),
        ("Rdma.io/", "lowercase RFC 1123 subdomain"),
        (f"a{SUBDOMAIN253}/", "no more than 253 bytes"),
        ("kubernetes.io/", "reserves"),
        ("node.k8s.io/", "reserves"),
        ("node-role.kubernetes.io/", "reserves"),
    ],
)
def test_validate_prefix(prefix: str, error: str | None) -> None:
    # The one rule (agent.labelsyntax.label_prefix_error), as start-up configuration applies it.
    if error is None:
        assert load_config({"label-prefix": prefix}, env={}).label_prefix == prefix
        return
    with pytest.raises(ConfigError) as info:
        load_config({"label-prefix": prefix}, env={})
    assert info.value.setting == "--label-prefix"
    assert error in str(info.value)


# --- readiness ------------------------------------------------------------------------------------


def _without_kind(snapshot: NodeSnapshot, kind: str) -> NodeSnapshot:
    return replace(snapshot, char_devices=tuple(c for c in snapshot.char_devices if c.kind != kind))


@pytest.mark.parametrize(
    ("snapshot", "enforcement", "failing"),
    [
        (mlx5_snapshot(), _enforcement(), []),
        (mlx5_snapshot(), None, []),  # before the enforce stage reports, mode and reboot hold
        (
            replace(mlx5_snapshot(), devices=(), pci_functions=(), char_devices=()),
            None,
            ["rdma_device_present", "port_link_up", "uverbs_present", "rdma_cm_present"],
        ),
        (
            replace(mlx5_snapshot(up=False), devices=mlx5_snapshot(up=False).devices[:3]),
            None,
            ["port_link_up", "uverbs_present"],
        ),
        (_without_kind(mlx5_snapshot(), "uverbs"), None, ["uverbs_present"]),
        (_without_kind(mlx5_snapshot(), "rdma_cm"), None, ["rdma_cm_present"]),
        (mlx5_snapshot(), _enforcement(compliant=False), ["netns_mode_compliant"]),
        (mlx5_snapshot(), _enforcement(reboot=True), ["no_reboot_required"]),
    ],
)
def test_node_ready(snapshot: NodeSnapshot, enforcement: EnforcementState | None, failing: list[str]) -> None:
    assert node_ready(snapshot, enforcement) == (not failing, failing)


def test_uverbs_node_missing_from_dev_is_not_ready() -> None:
    snap = mlx5_snapshot()
    snap = replace(
        snap,
        char_devices=tuple(replace(c, present=False) if c.kind == "uverbs" else c for c in snap.char_devices),
    )
    assert node_ready(snap, None) == (False, ["uverbs_present"])


# --- desired labels -------------------------------------------------------------------------------


def test_desired_labels_mlx5_shared_compliant() -> None:
    assert desired_labels(mlx5_snapshot(), _enforcement(), P) == {
        P + "capable": "true",
        P + "ready": "true",
        P + "device-count": "3",  # mlx5_0, mlx5_1, rxe0: not the VF's mlx5_2
        P + "netns-mode": "shared",
        P + "reboot-required": "false",
        # PFs and VFs of the RDMA vendor; not the Intel NIC rxe0 runs over
        P + "pci-15b3-1017.present": "true",
        P + "pci-15b3-1018.present": "true",
        P + "sriov.capable": "true",
        P + "sriov.totalvfs": "8",
        P + "link-layer.ethernet": "true",
    }


@pytest.mark.parametrize(
    ("snapshot", "enforcement", "expected"),
    [
        (
            NodeSnapshot(taken_at=T0, netlink_available=False),
            None,
            {"capable": "false", "ready": "false", "device-count": "0"},
        ),
        (
            mlx5_snapshot(mode=NetnsMode.EXCLUSIVE),
            replace(_enforcement(compliant=False, reboot=True), desired=DesiredMode.EXCLUSIVE),
            {"netns-mode": "exclusive", "ready": "false", "reboot-required": "true"},
        ),
        (mlx5_snapshot(mode=None), None, {"capable": "true", "ready": "true"}),
    ],
)
def test_desired_labels_cases(
    snapshot: NodeSnapshot, enforcement: EnforcementState | None, expected: dict[str, str]
) -> None:
    labels = desired_labels(snapshot, enforcement, P)
    assert {k.removeprefix(P): v for k, v in labels.items() if k.removeprefix(P) in expected} == expected
    if snapshot.netns_mode is None:
        assert P + "netns-mode" not in labels  # unknown is absent, not a guess
    if enforcement is None:
        assert P + "reboot-required" not in labels


def test_labels_do_not_change_when_a_pod_takes_a_vf() -> None:
    """In exclusive mode the VF's RDMA device moves into the pod's namespace and leaves the host's view."""
    before = mlx5_snapshot(mode=NetnsMode.EXCLUSIVE)
    after = replace(
        before,
        devices=tuple(d for d in before.devices if d.name != "mlx5_2"),
        pci_functions=tuple(replace(f, netdevs=(), rdma_devices=()) if f.physfn else f for f in before.pci_functions),
        char_devices=tuple(c for c in before.char_devices if c.rdma_device != "mlx5_2"),
    )
    assert desired_labels(after, None, P) == desired_labels(before, None, P)


def test_infiniband_and_sriov_absent() -> None:
    snap = mlx5_snapshot()
    devices = tuple(replace(d, ports=tuple(replace(p, link_layer="InfiniBand") for p in d.ports)) for d in snap.devices)
    functions = tuple(replace(f, sriov_totalvfs=None) for f in snap.pci_functions)
    labels = desired_labels(replace(snap, devices=devices, pci_functions=functions), None, P)
    assert labels[P + "link-layer.infiniband"] == "true"
    assert P + "link-layer.ethernet" not in labels
    assert P + "sriov.capable" not in labels and P + "sriov.totalvfs" not in labels


def test_prefix_is_applied() -> None:
    labels = desired_labels(mlx5_snapshot(), None, "feature.node.kubernetes.io/")
    assert labels["feature.node.kubernetes.io/capable"] == "true"
    assert all(k.startswith("feature.node.kubernetes.io/") for k in labels)


def test_invalid_label_is_dropped_logged_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    snap = mlx5_snapshot()
    odd = "x" * 70  # a link layer sysfs could print; the label name would exceed 63 bytes
    devices = tuple(replace(d, ports=tuple(replace(p, link_layer=odd) for p in d.ports)) for d in snap.devices)
    snap = replace(snap, devices=devices)
    labels = desired_labels(snap, None, P)
    assert not any("link-layer" in k for k in labels)
    assert labels[P + "capable"] == "true"  # one bad label never blanks the rest
    assert f"link-layer.{odd}" in caplog.text
    problems = label_problems(snap, None, P)
    assert [(p.code, p.subject) for p in problems] == [("invalid_label", f"{P}link-layer.{odd}")]
    assert "no more than 63 bytes" in problems[0].message


LONG_PREFIX = ".".join(["x" * 60] * 3) + ".example.com/"  # 196 characters, a valid prefix


@pytest.mark.parametrize("prefix", [P, LONG_PREFIX])
def test_labels_stay_within_the_admission_policys_bounds(prefix: str) -> None:
    # 100 kinds of Mellanox functions would be 100 pci-…present labels: the admission policy allows
    # 64 labels and an 8 KiB ownership annotation, so the agent keeps to that and says what it left.
    snap = mlx5_snapshot()
    before = len(desired_labels(snap, _enforcement(), prefix))
    functions = tuple(_mlx5(f"0000:{i + 16:02x}:00.0", device=f"{0x2000 + i:04x}") for i in range(100))
    snap = replace(snap, pci_functions=snap.pci_functions + functions)
    labels = desired_labels(snap, _enforcement(), prefix)
    annotation = len(owned_annotation(labels))
    assert len(labels) == MAX_LABELS or annotation > MAX_ANNOTATION_BYTES - len(prefix) - 30  # full either way
    assert len(labels) <= MAX_LABELS and annotation <= MAX_ANNOTATION_BYTES
    for name in ("capable", "ready", "netns-mode", "device-count", "reboot-required", "sriov.capable"):
        assert prefix + name in labels  # the node-wide labels are kept first
    problems = [p for p in label_problems(snap, _enforcement(), prefix) if "labels not published" in p.message]
    assert len(problems) == 1 and problems[0].message.startswith(f"{before + 100 - len(labels)} labels not published")


# --- ownership and patches ------------------------------------------------------------------------

FOREIGN = {"kubernetes.io/hostname": "node-1", "nvidia.com/gpu.present": "true"}


@pytest.mark.parametrize(
    ("observed", "owned", "desired", "patch"),
    [
        # steady state: nothing to do, no API call
        ({**FOREIGN, P + "ready": "true"}, {P + "ready"}, {P + "ready": "true"}, None),
        ({}, set(), {}, None),
        # a new key and a changed value
        (FOREIGN, set(), {P + "ready": "true"}, {P + "ready": "true"}),
        ({P + "ready": "false"}, {P + "ready"}, {P + "ready": "true"}, {P + "ready": "true"}),
        # a stale key we own is removed; one under our prefix we never set is left alone
        (
            {P + "ready": "true", P + "pci-15b3-1017.present": "true", P + "by-hand": "x"},
            {P + "ready", P + "pci-15b3-1017.present"},
            {P + "ready": "true"},
            {P + "pci-15b3-1017.present": None},
        ),
        # owned but already gone: nothing to remove
        ({P + "ready": "true"}, {P + "ready", P + "gone"}, {P + "ready": "true"}, None),
        # "owned" keys outside the prefix (a hand-edited annotation) are never removed
        (FOREIGN, {"kubernetes.io/hostname"}, {}, None),
        # a desired key under our prefix set by someone else is overwritten
        ({P + "ready": "maybe"}, set(), {P + "ready": "false"}, {P + "ready": "false"}),
    ],
)
def test_plan_label_patch(
    observed: dict[str, str], owned: set[str], desired: dict[str, str], patch: dict[str, str | None] | None
) -> None:
    assert plan_label_patch(observed, owned, desired, P) == patch


def test_plan_label_patch_refuses_desired_outside_prefix() -> None:
    with pytest.raises(ValueError, match="outside the prefix"):
        plan_label_patch({}, set(), {"other.io/x": "1"}, P)


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        (None, set()),
        ("", set()),
        (f"{P}ready,{P}capable", {P + "ready", P + "capable"}),
        (f" {P}ready , ,{P}ready,", {P + "ready"}),
        (f"{P}ready,not a key,a/b/c", {P + "ready"}),
    ],
)
def test_owned_keys_from_annotation(value: str | None, keys: set[str]) -> None:
    assert owned_keys_from_annotation(value) == keys


def test_owned_annotation_round_trip() -> None:
    keys = {P + "ready", P + "capable", P + "pci-15b3-1017.present"}
    text = owned_annotation(keys)
    assert text == f"{P}capable,{P}pci-15b3-1017.present,{P}ready"
    assert owned_keys_from_annotation(text) == keys
    assert owned_annotation_key(P) == "rdma.spidernet.io/owned-labels"
    assert validate_label(owned_annotation_key(P), "") is None  # a valid annotation key


def test_owned_keys_and_ownership_patch() -> None:
    key = owned_annotation_key(P)
    annotations = {key: f"{P}ready", "other.io/x": "y"}
    assert owned_keys(annotations, P) == {P + "ready"}
    assert owned_keys({}, P) == frozenset()
    assert ownership_patch(annotations, {P + "ready": "false"}, P) == {}  # same keys: no write
    assert ownership_patch(annotations, {P + "ready": "true", P + "capable": "true"}, P) == {
        key: f"{P}capable,{P}ready"
    }
    assert ownership_patch(annotations, {}, P) == {key: None}
    assert ownership_patch({}, {}, P) == {}


def test_plan_node_patch_lifecycle() -> None:
    key = owned_annotation_key(P)
    desired = {P + "ready": "true", P + "capable": "true"}
    # First run: labels and the ownership record in one patch.
    assert plan_node_patch(FOREIGN, {}, desired, P) == {
        "metadata": {
            "labels": {P + "capable": "true", P + "ready": "true"},
            "annotations": {key: f"{P}capable,{P}ready"},
        }
    }
    labels = {**FOREIGN, **desired}
    annotations = {key: f"{P}capable,{P}ready", "other": "x"}
    assert plan_node_patch(labels, annotations, desired, P) is None  # steady
    # A value change touches labels only; the owned key set is unchanged.
    assert plan_node_patch(labels, annotations, {**desired, P + "ready": "false"}, P) == {
        "metadata": {"labels": {P + "ready": "false"}}
    }
    # A key goes away: removed, and the record shrinks.
    assert plan_node_patch(labels, annotations, {P + "capable": "true"}, P) == {
        "metadata": {"labels": {P + "ready": None}, "annotations": {key: f"{P}capable"}}
    }
    # Labels already right but the record was lost: only the record is written.
    assert plan_node_patch(labels, {}, desired, P) == {"metadata": {"annotations": {key: f"{P}capable,{P}ready"}}}
    # Nothing desired any more (e.g. publisher switched off): our labels and the record go.
    assert plan_node_patch(labels, annotations, {}, P) == {
        "metadata": {"labels": {P + "capable": None, P + "ready": None}, "annotations": {key: None}}
    }


def test_steady_state_makes_no_writes_over_100_cycles() -> None:
    """The loop as kube.py runs it: hysteresis, then the patch, applied to a fake Node."""
    labels: dict[str, str] = dict(FOREIGN)
    annotations: dict[str, str] = {}
    hysteresis = Hysteresis(60, hysteresis_keys(P))
    writes = 0
    for cycle in range(100):
        desired = hysteresis.update(T0 + 30 * cycle, desired_labels(mlx5_snapshot(), _enforcement(), P))
        patch = plan_node_patch(labels, annotations, desired, P)
        if patch is not None:
            writes += 1
            for k, v in patch["metadata"].get("labels", {}).items():
                labels.pop(k) if v is None else labels.__setitem__(k, v)
            for k, v in patch["metadata"].get("annotations", {}).items():
                annotations.pop(k) if v is None else annotations.__setitem__(k, v)
    assert writes == 1
    assert {k: v for k, v in labels.items() if k in FOREIGN} == FOREIGN
    assert labels[P + "ready"] == "true"


# --- hysteresis -----------------------------------------------------------------------------------

READY = P + "ready"


def test_hysteresis_first_observation_is_immediate() -> None:
    h = Hysteresis(60, {READY})
    assert h.update(T0, {READY: "false", P + "capable": "true"}) == {READY: "false", P + "capable": "true"}


def test_hysteresis_flapping_port_does_not_churn() -> None:
    h = Hysteresis(60, {READY})
    published = [h.update(T0, {READY: "true"})[READY]]
    # The port flaps every 10 s for 10 minutes: each new value resets the hold.
    for i in range(1, 61):
        published.append(h.update(T0 + 10 * i, {READY: "false" if i % 2 else "true"})[READY])
    assert set(published) == {"true"}


def test_hysteresis_stable_change_goes_through_once_after_hold() -> None:
    h = Hysteresis(60, {READY})
    h.update(T0, {READY: "true"})
    seen = [(t, h.update(T0 + t, {READY: "false"})[READY]) for t in range(5, 200, 5)]
    changes = [t for (t, v), (_, prev) in zip(seen[1:], seen, strict=False) if v != prev]
    assert [v for t, v in seen if t < 65] == ["true"] * 12  # held from t=5 (first seen) until t=65
    assert seen[12] == (65, "false")
    assert changes == [65]  # exactly one transition
    assert h.pending() == {}


def test_hysteresis_passes_other_keys_and_handles_absence() -> None:
    h = Hysteresis(30, {READY})
    assert h.update(T0, {P + "capable": "true"}) == {P + "capable": "true"}  # first: absent, published
    assert h.update(T0 + 1, {READY: "true", P + "capable": "false"}) == {P + "capable": "false"}
    assert h.pending() == {READY: ("true", T0 + 1)}
    assert h.update(T0 + 31, {READY: "true"}) == {READY: "true"}
    # Disappearing is a change too, held like any other.
    assert h.update(T0 + 40, {}) == {READY: "true"}
    assert h.update(T0 + 70, {}) == {}


def test_hysteresis_zero_hold_and_clock_step_back() -> None:
    h = Hysteresis(0, {READY})
    h.update(T0, {READY: "true"})
    assert h.update(T0 + 1, {READY: "false"}) == {READY: "false"}
    h = Hysteresis(60, {READY})
    h.update(T0, {READY: "true"})
    h.update(T0 + 100, {READY: "false"})
    assert h.update(T0 + 50, {READY: "false"}) == {READY: "true"}  # clock stepped back: hold restarts
    assert h.update(T0 + 109, {READY: "false"}) == {READY: "true"}
    assert h.update(T0 + 110, {READY: "false"}) == {READY: "false"}


@pytest.mark.parametrize("hold", [-1.0, float("nan"), float("inf")])
def test_hysteresis_rejects_bad_hold(hold: float) -> None:
    with pytest.raises(ValueError, match="hold_seconds"):
        Hysteresis(hold, {READY})


def test_hysteresis_keys_are_link_driven_only() -> None:
    assert hysteresis_keys(P) == {READY}
