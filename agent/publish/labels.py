"""Node labels: a pure function of the snapshot, validated, diffed against what the agent owns.

Like node-feature-discovery, labels are computed from the discovered features only
(:func:`desired_labels`), every key and value is checked against Kubernetes' own label syntax
(:func:`agent.labelsyntax.validate_label`, the rules of k8s.io/apimachinery ``IsQualifiedName``/``IsValidLabelValue``)
and an invalid one is dropped with a log line, and the diff against the Node is pure
(:func:`plan_label_patch`, NFD's ``createPatches``): it touches only keys under the agent's prefix,
removes only stale keys the agent recorded as its own, and returns ``None`` when nothing differs,
so a steady node costs zero API writes.

Ownership is recorded on the Node in the annotation ``<prefix>owned-labels`` (for the default
prefix ``rdma.spidernet.io/owned-labels``): the sorted, comma-separated full keys the agent set,
as NFD records its labels in ``nfd.node.kubernetes.io/feature-labels``.

Readiness (:func:`agent.publish.readiness.node_ready`) is shared with the metrics collector.
docs/labels.md lists every label and its rule.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from agent.labelsyntax import qualified_name_error, validate_label
from agent.model import EnforcementState, NodeSnapshot, PciFunction, Problem, RdmaDevice
from agent.publish.readiness import node_ready

logger = logging.getLogger(__name__)


# Label names relative to the prefix. The PCI and link-layer families are templates.
CAPABLE = "capable"
READY = "ready"
NETNS_MODE = "netns-mode"
REBOOT_REQUIRED = "reboot-required"
DEVICE_COUNT = "device-count"
SRIOV_CAPABLE = "sriov.capable"
SRIOV_TOTALVFS = "sriov.totalvfs"
OWNED_ANNOTATION = "owned-labels"  # annotation name (not a label) under the same prefix

# Link-driven labels: they follow port state and are published through :class:`Hysteresis`.
HYSTERESIS_LABELS = (READY,)

# PCI vendors whose network functions are RDMA hardware even when no RDMA device is bound to them
# (mlx5_ib not loaded, a VF whose RDMA device sits in a pod's namespace): Mellanox/NVIDIA. Other
# vendors (Intel, Broadcom, …) also make plain NICs, so their functions are labelled only when they
# carry an RDMA device; labelling every Intel management NIC would be noise.
RDMA_VENDORS = frozenset({"15b3"})

# The admission policy's bounds (manifests/base/validatingadmissionpolicy.yaml): the agent keeps to
# them itself, so that its patches are never denied for size.
MAX_LABELS = 64
MAX_ANNOTATION_BYTES = 8192


def drop_invalid(labels: Mapping[str, str]) -> tuple[dict[str, str], list[Problem]]:
    """Split labels into the valid ones and one ``invalid_label`` Problem per invalid one, then keep
    at most :data:`MAX_LABELS` (and an ownership annotation within :data:`MAX_ANNOTATION_BYTES`):
    the node-wide labels first, then the per-device families in key order; one ``invalid_label``
    Problem names what was left out (pure)."""
    valid: dict[str, str] = {}
    problems: list[Problem] = []
    for key, value in labels.items():
        error = validate_label(key, value)
        if error is None:
            valid[key] = value
        else:
            problems.append(Problem(code="invalid_label", message=f"label not published: {error}", subject=key))
    kept: dict[str, str] = {}
    size = -1  # the annotation joins keys with ','
    for key in sorted(valid, key=lambda k: ("/pci-" in k or "/link-layer." in k, k)):
        size += len(key) + 1
        if len(kept) >= MAX_LABELS or size > MAX_ANNOTATION_BYTES:
            left = sorted(set(valid) - set(kept))
            problems.append(
                Problem(
                    code="invalid_label",
                    subject=left[0],
                    message=(
                        f"{len(left)} labels not published ({', '.join(left[:3])}{', …' if len(left) > 3 else ''}): "
                        f"at most {MAX_LABELS} labels and a {MAX_ANNOTATION_BYTES}-byte ownership annotation per Node"
                    ),
                )
            )
            break
        kept[key] = valid[key]
    return kept, problems


# --- desired labels -------------------------------------------------------------------------------


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _rdma_functions(snapshot: NodeSnapshot) -> list[PciFunction]:
    """PCI functions that carry an RDMA device (``bus/pci/devices/<address>/infiniband``; Soft-RoCE
    over a NIC does not make the NIC RDMA hardware), or belong to a vendor in :data:`RDMA_VENDORS`."""
    return [f for f in snapshot.pci_functions if f.rdma_devices or (f.vendor or "").lower() in RDMA_VENDORS]


def _non_vf_devices(snapshot: NodeSnapshot) -> list[RdmaDevice]:
    """RDMA devices not on an SR-IOV VF. VF devices come and go with the VF count and, in exclusive
    mode, with every pod that takes a VF into its namespace: counting them would churn the label."""
    vfs = {f.address for f in snapshot.pci_functions if f.physfn is not None}
    on_vf = {name for f in snapshot.pci_functions if f.address in vfs for name in f.rdma_devices}
    return [d for d in snapshot.devices if d.name not in on_vf and d.pci_address not in vfs]


def _name_part(text: str) -> str:
    """A free-form sysfs string made safe for a label name (lowercase, other characters → '-')."""
    return re.sub(r"[^a-z0-9_.-]+", "-", text.strip().lower()).strip("-_.")


def label_problems(snapshot: NodeSnapshot, enforcement: EnforcementState | None, prefix: str) -> list[Problem]:
    """The ``invalid_label`` problems :func:`desired_labels` logs for this snapshot (pure)."""
    return drop_invalid(_candidate_labels(snapshot, enforcement, prefix))[1]


def desired_labels(snapshot: NodeSnapshot, enforcement: EnforcementState | None, prefix: str) -> dict[str, str]:
    """Every label the agent wants on its Node, keyed by full key, values validated (pure but for a
    warning per dropped label). See docs/labels.md for the table."""
    return labels_and_problems(snapshot, enforcement, prefix)[0]


def labels_and_problems(
    snapshot: NodeSnapshot, enforcement: EnforcementState | None, prefix: str
) -> tuple[dict[str, str], list[Problem]]:
    """:func:`desired_labels` and :func:`label_problems` at once (the labels stage wants both, and
    each would work out every candidate label again); a warning per dropped label."""
    labels, problems = drop_invalid(_candidate_labels(snapshot, enforcement, prefix))
    for problem in problems:
        logger.warning("%s", problem.message)
    return labels, problems


def _candidate_labels(snapshot: NodeSnapshot, enforcement: EnforcementState | None, prefix: str) -> dict[str, str]:
    out: dict[str, str] = {
        CAPABLE: _bool(bool(snapshot.devices)),
        READY: _bool(node_ready(snapshot, enforcement)[0]),
        DEVICE_COUNT: str(len(_non_vf_devices(snapshot))),
    }
    if snapshot.netns_mode is not None:
        out[NETNS_MODE] = snapshot.netns_mode.value
    if enforcement is not None:
        out[REBOOT_REQUIRED] = _bool(enforcement.reboot_required)

    functions = _rdma_functions(snapshot)
    for function in functions:
        if function.vendor and function.device:
            out[f"pci-{function.vendor.lower()}-{function.device.lower()}.present"] = "true"
    totalvfs = [f.sriov_totalvfs for f in functions if f.sriov_totalvfs and f.physfn is None]
    if totalvfs:
        out[SRIOV_CAPABLE] = "true"
        out[SRIOV_TOTALVFS] = str(max(totalvfs))

    for device in snapshot.devices:
        for port in device.ports:
            if port.link_layer:
                out[f"link-layer.{_name_part(port.link_layer)}"] = "true"
    return {prefix + name: value for name, value in out.items()}


# --- ownership and the patch ----------------------------------------------------------------------


def hysteresis_keys(prefix: str) -> frozenset[str]:
    """Full keys of the link-driven labels, for :class:`Hysteresis`."""
    return frozenset(prefix + name for name in HYSTERESIS_LABELS)


def owned_annotation_key(prefix: str) -> str:
    """The Node annotation that lists the label keys the agent set: ``<prefix>owned-labels``."""
    return prefix + OWNED_ANNOTATION


def owned_keys_from_annotation(value: str | None) -> frozenset[str]:
    """Keys recorded in the ownership annotation; blanks and entries that are no valid key are skipped
    (a hand-edited annotation can never make the agent remove a label it cannot have set)."""
    if not value:
        return frozenset()
    keys = (k.strip() for k in value.split(","))
    return frozenset(k for k in keys if k and qualified_name_error(k) is None)


def owned_keys(annotations: Mapping[str, str], prefix: str) -> frozenset[str]:
    """The keys the Node's ownership annotation records (see :func:`owned_keys_from_annotation`)."""
    return owned_keys_from_annotation(annotations.get(owned_annotation_key(prefix)))


def ownership_patch(annotations: Mapping[str, str], desired: Mapping[str, str], prefix: str) -> dict[str, str | None]:
    """The merge patch for ``metadata.annotations`` that records ``desired``'s keys as owned: empty when
    the record is already right; removes the annotation when nothing is desired."""
    key = owned_annotation_key(prefix)
    wanted = owned_annotation(desired) if desired else None
    return {} if annotations.get(key) == wanted else {key: wanted}


def owned_annotation(keys: Iterable[str]) -> str:
    """The ownership annotation's value: sorted keys joined by ','."""
    return ",".join(sorted(set(keys)))


def plan_label_patch(
    observed: Mapping[str, str],
    owned: Collection[str],
    desired: Mapping[str, str],
    prefix: str,
) -> dict[str, str | None] | None:
    """The JSON merge patch for ``metadata.labels`` (a value of None removes the key), or None.

    Sets every desired key whose observed value differs (a desired key under our prefix is ours even
    if someone else set it); removes keys that are owned, under the prefix, still on the Node and no
    longer desired. Keys outside the prefix, and keys under it the agent never set, are never
    touched. Returns None when nothing differs: no API call in steady state."""
    foreign = [k for k in desired if not k.startswith(prefix)]
    if foreign:
        raise ValueError(f"desired labels outside the prefix {prefix!r}: {', '.join(sorted(foreign))}")
    patch: dict[str, str | None] = {k: v for k, v in desired.items() if observed.get(k) != v}
    for key in owned:
        if key.startswith(prefix) and key not in desired and key in observed:
            patch[key] = None
    return dict(sorted(patch.items())) or None


def plan_node_patch(
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    desired: Mapping[str, str],
    prefix: str,
) -> dict[str, Any] | None:
    """The whole merge patch body for the Node (labels and the ownership annotation), or None.

    ``labels``/``annotations`` are what the watch last observed. The ownership annotation is
    rewritten only when the set of desired keys changes, and removed when nothing is desired; both
    go in one PATCH so ownership and labels cannot drift apart."""
    metadata: dict[str, Any] = {}
    label_patch = plan_label_patch(labels, owned_keys(annotations, prefix), desired, prefix)
    if label_patch is not None:
        metadata["labels"] = label_patch
    annotation_patch = ownership_patch(annotations, desired, prefix)
    if annotation_patch:
        metadata["annotations"] = annotation_patch
    return {"metadata": metadata} if metadata else None


# --- hysteresis -----------------------------------------------------------------------------------


class Hysteresis:
    """Holds back changes of link-driven labels until the new value has held for ``hold_seconds``.

    ``update(now, candidate)`` returns the labels to publish. Keys in ``keys`` keep their published
    value until the candidate's value (absence counts as a value) has been the same for
    ``hold_seconds``; other keys pass through. The first observation of a key is published at once.
    A value that flaps back before the hold ends resets the hold, so a flapping port publishes
    nothing. ``now`` comes from the caller (use a monotonic clock); a clock that steps back restarts
    the hold. Not thread-safe: one loop owns it.
    """

    def __init__(self, hold_seconds: float, keys: Collection[str]) -> None:
        if not math.isfinite(hold_seconds) or hold_seconds < 0:
            raise ValueError(f"hold_seconds must be a finite number ≥ 0, got {hold_seconds!r}")
        self.hold_seconds = hold_seconds
        self.keys = frozenset(keys)
        self._published: dict[str, str | None] = {}
        self._pending: dict[str, tuple[str | None, float]] = {}

    def pending(self) -> dict[str, tuple[str | None, float]]:
        """Changes being held: key → (candidate value, since when)."""
        return dict(self._pending)

    def update(self, now: float, candidate: Mapping[str, str]) -> dict[str, str]:
        out = {k: v for k, v in candidate.items() if k not in self.keys}
        for key in sorted(self.keys):
            value = candidate.get(key)
            if key not in self._published:
                self._published[key] = value
            elif value == self._published[key]:
                self._pending.pop(key, None)
            else:
                pending = self._pending.get(key)
                if pending is None or pending[0] != value or now < pending[1]:
                    self._pending[key] = pending = (value, now)
                if now - pending[1] >= self.hold_seconds:
                    logger.info("label %s: %s → %s (held %.0fs)", key, self._published[key], value, now - pending[1])
                    self._published[key] = value
                    del self._pending[key]
            published = self._published[key]
            if published is not None:
                out[key] = published
        return out
