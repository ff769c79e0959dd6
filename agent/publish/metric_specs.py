"""Every metric family the agent can expose (:data:`SPECS`), in exposition order: name, type, help,
labels. ``describe()``, docs/metrics.md and tests/unit/test_docs.py follow this table. Names are a
public interface: alerts and dashboards depend on them; change one only with a CHANGELOG.md entry.
"""

from __future__ import annotations

from dataclasses import dataclass

# Char device kinds always reported (0 when none is present), so "rdma_cm missing" is a value, not an
# absent series. Other kinds the snapshot contains are reported too.
CHAR_DEVICE_KINDS = ("issm", "rdma_cm", "umad", "uverbs")


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricSpec:
    name: str  # as exposed; counters include the ``_total`` suffix
    type: str  # "gauge" | "counter"
    help: str
    labels: tuple[str, ...] = ()


def _g(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name=name, type="gauge", help=text, labels=labels)


def _c(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name=name, type="counter", help=text, labels=labels)


# Every family this collector can expose, in exposition order. Names are a public interface: alerts
# and dashboards depend on them. Change one only with a note in docs/metrics.md.
SPECS: tuple[MetricSpec, ...] = (
    # The agent itself (always exposed).
    _g("rdma_agent_build_info", "Build of the running agent; value is always 1.", "version", "python"),
    _g(
        "rdma_agent_stage_success",
        "Whether the last run of a loop stage succeeded (1) or failed (0).",
        "stage",
    ),
    _g(
        "rdma_agent_stage_last_success_timestamp_seconds",
        "Unix time of the last successful run of a loop stage.",
        "stage",
    ),
    _g("rdma_agent_stage_duration_seconds", "Duration of the last run of a loop stage.", "stage"),
    # The snapshot.
    _g("rdma_snapshot_timestamp_seconds", "Unix time the node snapshot behind these metrics was taken."),
    _g("rdma_netlink_available", "Whether the kernel's RDMA netlink (NETLINK_RDMA) answered (1) or not (0)."),
    _g(
        "rdma_node_ready",
        "Whether this node can run RDMA workloads: 1 when every rdma_node_ready_condition is 1.",
    ),
    _g(
        "rdma_node_ready_condition",
        "One condition of rdma_node_ready: 1 when it holds, 0 when it does not.",
        "condition",
    ),
    _g("rdma_devices", "Number of RDMA devices on the node."),
    _g(
        "rdma_device_info",
        "An RDMA device and its facts; value is always 1. firmware_version, board_id and hca_type as "
        "node_exporter's infiniband collector names them.",
        "device",
        "node_type",
        "protocol",
        "firmware_version",
        "board_id",
        "hca_type",
        "node_guid",
        "sys_image_guid",
        "pci_address",
    ),
    _g(
        "rdma_device_uverbs_present",
        "Whether the device's /dev/infiniband/uverbsN node exists (1) or not (0).",
        "device",
    ),
    _g(
        "rdma_port_info",
        "An RDMA port and where it lives: netdev, PCI function, driver, NUMA node; value is always 1.",
        "device",
        "port",
        "netdev",
        "link_layer",
        "pci_address",
        "vendor",
        "device_id",
        "driver",
        "numa_node",
        "function",
        "pf_pci_address",
    ),
    _g(
        "rdma_port_state_id",
        "Logical port state as the kernel numbers it (1 DOWN, 2 INIT, 3 ARMED, 4 ACTIVE, 5 ACTIVE_DEFER).",
        "device",
        "port",
    ),
    _g(
        "rdma_port_physical_state_id",
        "Physical port state as the kernel numbers it (2 POLLING, 3 DISABLED, 5 LINK_UP, 6 LINK_ERROR_RECOVER).",
        "device",
        "port",
    ),
    _g(
        "rdma_port_link_up",
        "Whether the port is ACTIVE with physical state LINK_UP (1) or not (0).",
        "device",
        "port",
    ),
    _g(
        "rdma_port_expected_up",
        "Whether the port is meant to be up (1): not ignored, and up now, its netdev administratively up, or — "
        "without a netdev — up since the agent started. RdmaPortLinkDown fires only for these.",
        "device",
        "port",
    ),
    _g("rdma_port_rate_bytes_per_second", "Port signalling rate from sysfs ports/N/rate.", "device", "port"),
    _g(
        "rdma_pci_function_info",
        "A PCI function carrying an RDMA device or netdev; value is always 1.",
        "pci_address",
        "vendor",
        "device_id",
        "subsystem_vendor",
        "subsystem_device",
        "driver",
        "numa_node",
        "function",
        "pf_pci_address",
    ),
    _g("rdma_pci_sriov_totalvfs", "Virtual functions the PF supports (sysfs sriov_totalvfs).", "pci_address"),
    _g(
        "rdma_pci_sriov_numvfs",
        "Virtual functions currently enabled on the PF (sysfs sriov_numvfs).",
        "pci_address",
    ),
    _g(
        "rdma_char_devices",
        "Device nodes present under /dev/infiniband, by kind (uverbs, umad, issm, rdma_cm).",
        "kind",
    ),
    _g(
        "rdma_kernel_module_loaded",
        "Whether a kernel module the agent checks is loaded (1) or not (0).",
        "module",
    ),
    _g(
        "rdma_kernel_info",
        "Running kernel and Mellanox OFED versions; value is always 1.",
        "release",
        "mofed_version",
    ),
    _g("rdma_network_namespaces", "Network namespaces on the host other than the initial one."),
    _g(
        "rdma_netns_mode",
        "Live ib_core netns mode: 1 for the current mode, 0 for the other (both 0 when unreadable).",
        "mode",
    ),
    _g(
        "rdma_netns_mode_persisted",
        "netns mode ib_core gets at its next load (kernel default shared when nothing is persisted): 1 or 0.",
        "mode",
    ),
    _g(
        "rdma_netns_mode_persisted_info",
        "The setting that decides the persisted netns mode, when one does; value is always 1.",
        "source",
    ),
    _g(
        "rdma_netns_mode_persisted_conflicts",
        "Persisted netns_mode settings that disagree with the effective one.",
    ),
    _g(
        "rdma_netns_mode_desired",
        "netns mode the agent is configured to enforce: 1 for the configured one.",
        "mode",
    ),
    _g(
        "rdma_netns_mode_compliant",
        "Whether the live netns mode is the desired one (1; always 1 when unmanaged).",
    ),
    _g(
        "rdma_reboot_required",
        "Whether a reboot is needed for the desired netns mode to take effect (1) or not (0).",
    ),
    _g(
        "rdma_reboot_required_info",
        "Why a reboot is required, as a code (netns_mode_busy, netns_mode_busy_predicted); exposed only while one "
        "is; value is always 1.",
        "reason",
    ),
    _g(
        "rdma_netns_persisted_ineffective",
        "Whether the persisted netns mode differs from the live one though it predates this boot (1 or 0).",
    ),
    _c(
        "rdma_netns_runtime_set_attempts_total",
        "Requests sent to change the netns mode at runtime (netlink SYS_SET).",
    ),
    _g(
        "rdma_netns_runtime_next_attempt_timestamp_seconds",
        "Unix time of the next runtime netns mode change attempt, while a retry is pending.",
    ),
    _g("rdma_problems", "Problems the agent currently reports, by stable code (absent means 0).", "code"),
    _g("rdma_node_resource_capacity", "Capacity of an extended resource on the Node object.", "resource"),
    _g(
        "rdma_node_resource_allocatable",
        "Allocatable amount of an extended resource on the Node object.",
        "resource",
    ),
    _g(
        "rdma_node_resource_expected",
        "An RDMA resource this node should offer: its plugin config selects devices here, or the Node offered "
        "it since the agent started; value is always 1.",
        "resource",
    ),
    _g(
        "rdma_device_plugin_selector_matched_devices",
        "RDMA devices of this node the device plugin's selector for a resource matches (status shows the selector).",
        "resource",
    ),
    _g(
        "rdma_device_plugin_config_loaded",
        "Whether the device plugin's config was read and parsed this cycle (1) or not (0: see rdma_problems); "
        "absent when no source is configured or the ConfigMap was not listed yet.",
        "source",
    ),
)
