"""The Node condition ``RDMAReady``: what ``kubectl describe node`` shows about RDMA, computed purely.

One condition type, positive like the kubelet's ``Ready``: ``True`` when an RDMA workload scheduled
here can open a device, ``False`` with a CamelCase ``reason`` (from the agent's problem codes) and a
one-line ``message`` naming the failing readiness conditions. It follows the one readiness rule
(:func:`agent.publish.readiness.ready_conditions`) behind the ``ready`` label and ``rdma_node_ready``,
and — like the label — a ready value that changes must hold for ``label-hysteresis`` before it is
published, so a flapping port writes nothing. One type rather than one per concern: the readiness
rule already lists every failing concern in the message, and one line in ``describe node`` is what an
operator reads first (docs/kubernetes.md).

:func:`plan_condition` decides what to write, node-problem-detector style: the whole condition when
its status, reason or message changed, or when the heartbeat is due; ``lastTransitionTime`` moves only
when ``status`` changes; nothing at all otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Final

from agent.model import EnforcementState, NodeCondition, NodeSnapshot, Problem
from agent.publish.readiness import READY_CONDITIONS, node_ready

CONDITION_TYPE: Final = "RDMAReady"
READY_REASON: Final = "RDMAReady"
MAX_MESSAGE: Final = 1024

# Per readiness condition: the problem codes that explain its failure, most specific first; the last
# one names the failure when no problem says more (not every reason is a problem code then).
_REASONS: Final[dict[str, tuple[str, ...]]] = {
    "rdma_device_present": ("no_rdma_netlink", "no_rdma_devices"),
    "port_link_up": ("port_down",),
    "uverbs_present": ("missing_uverbs", "char_device_node_missing"),
    "rdma_cm_present": ("missing_rdma_cm", "char_device_node_missing"),
    "netns_mode_compliant": (
        "netns_mode_busy",
        "netns_mode_eperm",
        "netns_mode_no_netlink",
        "netns_mode_set_failed",
        "exclusive_unsupported",
        "netns_mode_not_compliant",
    ),
    "no_reboot_required": ("netns_mode_busy", "reboot_required"),
}


def camel(code: str) -> str:
    """``port_down`` → ``PortDown``; ``no_rdma_netlink`` → ``NoRdmaNetlink``."""
    return "".join(part[:1].upper() + part[1:] for part in code.split("_"))


def desired_condition(
    snapshot: NodeSnapshot, enforcement: EnforcementState | None, problems: Iterable[Problem]
) -> NodeCondition:
    """The condition for this snapshot, before any hysteresis. The ``True`` message names only facts
    that change rarely (devices, netns mode), so a port flapping on a multi-port node, still ready,
    changes nothing."""
    ready, failing = node_ready(snapshot, enforcement)
    if ready:
        devices = len(snapshot.devices)
        mode = f", netns mode {snapshot.netns_mode.value}" if snapshot.netns_mode is not None else ""
        message = f"RDMA is usable: {devices} RDMA device{'s' * (devices != 1)}{mode}"
        return NodeCondition(type=CONDITION_TYPE, status="True", reason=READY_REASON, message=message)
    codes = {p.code for p in problems}
    candidates = _REASONS[failing[0]]
    reason = camel(next((c for c in candidates if c in codes), candidates[-1]))
    message = "; ".join(f"{name}: {READY_CONDITIONS[name]}" for name in failing)
    return NodeCondition(type=CONDITION_TYPE, status="False", reason=reason, message=message[:MAX_MESSAGE])


def rfc3339(epoch: float) -> str:
    """``metav1.Time`` on the wire: RFC 3339, UTC, whole seconds."""
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 time (``metav1.Time``, NFD's expiry) as epoch seconds; None when absent or not one."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def plan_condition(
    observed: Mapping[str, Any] | None, desired: NodeCondition, now: float, heartbeat: float
) -> dict[str, str] | None:
    """The condition to write (every field, so no stale ``reason``/``message`` survives the merge), or
    None when the Node already says so and the heartbeat is not due.

    ``observed`` is the Node's condition of this type as last seen (None: none yet)."""
    same = observed is not None and all(
        observed.get(key) == value
        for key, value in (("status", desired.status), ("reason", desired.reason), ("message", desired.message))
    )
    beat = parse_time(observed.get("lastHeartbeatTime")) if observed is not None else None
    if same and beat is not None and now - beat < heartbeat:
        return None
    transition = observed.get("lastTransitionTime") if observed is not None else None
    if observed is None or observed.get("status") != desired.status or not transition:
        transition = rfc3339(now)
    return {
        "type": desired.type,
        "status": desired.status,
        "reason": desired.reason,
        "message": desired.message,
        "lastHeartbeatTime": rfc3339(now),
        "lastTransitionTime": str(transition),
    }


def condition_patch(condition: Mapping[str, str]) -> dict[str, Any]:
    """The strategic merge patch for ``nodes/status`` that sets one condition: ``conditions`` is merged
    by ``type`` there (``patchMergeKey``), so the kubelet's conditions stay as they are. (A JSON merge
    patch with the same body would replace the whole list.)"""
    return {"status": {"conditions": [dict(condition)]}}
