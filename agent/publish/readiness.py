"""Node readiness: the one rule behind the ``rdma_node_ready`` gauge and the ``ready`` label, so they
cannot disagree. Pure functions of the snapshot and the enforcement state."""

from __future__ import annotations

from agent.model import EnforcementState, NodeSnapshot

# Condition name → why the node is not ready when it fails; in the order docs/metrics.md lists them.
READY_CONDITIONS: dict[str, str] = {
    "rdma_device_present": "no RDMA device",
    "port_link_up": "no RDMA port is ACTIVE with physical state LINK_UP",
    "uverbs_present": "no device with a port up has its /dev/infiniband/uverbsN node",
    "rdma_cm_present": "no /dev/infiniband/rdma_cm",
    "netns_mode_compliant": "the live netns mode is not the desired one",
    "no_reboot_required": "a reboot is required for the desired netns mode",
}


def devices_with_uverbs(snapshot: NodeSnapshot) -> frozenset[str]:
    """RDMA devices that have a uverbs char device whose node exists under the host's /dev."""
    present = {c.name: c for c in snapshot.char_devices if c.kind == "uverbs" and c.present}
    owners = {c.rdma_device for c in present.values() if c.rdma_device is not None}
    owners.update(d.name for d in snapshot.devices if any(name in present for name in d.char_devices))
    return frozenset(owners)


def ready_conditions(snapshot: NodeSnapshot, enforcement: EnforcementState | None) -> dict[str, bool]:
    """Each condition of :data:`READY_CONDITIONS` and whether it holds.

    Ready means an RDMA workload scheduled here can open a device: at least one RDMA device has a
    port that is ACTIVE/LINK_UP *and* a uverbs node; ``/dev/infiniband/rdma_cm`` exists; and the
    netns mode is the desired one without waiting for a reboot. Before the enforce stage has
    reported (``enforcement is None``) the last two conditions hold vacuously.
    """
    usable = {d.name for d in snapshot.devices if any(p.link_up for p in d.ports)}
    return {
        "rdma_device_present": bool(snapshot.devices),
        "port_link_up": bool(usable),
        "uverbs_present": bool(usable & devices_with_uverbs(snapshot)),
        "rdma_cm_present": any(c.kind == "rdma_cm" and c.present for c in snapshot.char_devices),
        "netns_mode_compliant": enforcement is None or enforcement.compliant,
        "no_reboot_required": enforcement is None or not enforcement.reboot_required,
    }


def node_ready(snapshot: NodeSnapshot, enforcement: EnforcementState | None) -> tuple[bool, list[str]]:
    """(ready, the names of the conditions that fail, in :data:`READY_CONDITIONS` order)."""
    conditions = ready_conditions(snapshot, enforcement)
    failing = [name for name in READY_CONDITIONS if not conditions[name]]
    return not failing, failing
