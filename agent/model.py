"""The node's RDMA state as plain, frozen values.

Discovery builds one :class:`NodeSnapshot`; planning, metrics and labels only read it. Every value
is immutable (frozen, keyword-only dataclasses holding tuples), so the scrape thread can read one
snapshot while the loop builds the next. Fields say where they come from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class NetnsMode(enum.Enum):
    """ib_core's network-namespace mode. Kernel value: 1 = shared (default), 0 = exclusive."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"

    @property
    def kernel_value(self) -> int:
        return 1 if self is NetnsMode.SHARED else 0

    @classmethod
    def from_kernel(cls, value: int) -> NetnsMode | None:
        return {1: cls.SHARED, 0: cls.EXCLUSIVE}.get(value)


# Names as iproute2's ``rdma`` prints them (rdma/dev.c, rdma/link.c); index = kernel value.
NODE_TYPE_NAMES = ("unknown", "ca", "switch", "router", "rnic", "usnic", "usnic_udp", "unspecified")
PORT_STATE_NAMES = ("NOP", "DOWN", "INIT", "ARMED", "ACTIVE", "ACTIVE_DEFER")
PHYS_STATE_NAMES = (
    "NOP",
    "SLEEP",
    "POLLING",
    "DISABLED",
    "ARMED",
    "LINK_UP",
    "LINK_ERROR_RECOVER",
    "PHY_TEST",
    "UNKNOWN",
    "OPA_OFFLINE",
    "UNKNOWN",
    "OPA_TEST",
)


def node_type_name(value: int) -> str:
    return NODE_TYPE_NAMES[value] if 0 <= value < len(NODE_TYPE_NAMES) else "unknown"


def port_state_name(value: int) -> str:
    return PORT_STATE_NAMES[value] if 0 <= value < len(PORT_STATE_NAMES) else "UNKNOWN"


def phys_state_name(value: int) -> str:
    return PHYS_STATE_NAMES[value] if 0 <= value < len(PHYS_STATE_NAMES) else "UNKNOWN"


def format_guid(value: int) -> str:
    """A host-order u64 GUID as iproute2 and sysfs print it: ``xxxx:xxxx:xxxx:xxxx``."""
    return ":".join(f"{(value >> shift) & 0xFFFF:04x}" for shift in (48, 32, 16, 0))


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """Something an operator should know, in plain words. ``code`` is stable (for alerts and tests)."""

    code: str
    message: str
    subject: str | None = None  # device, file or selector the problem is about


def link_is_up(state: str | None, physical_state: str | None) -> bool:
    """A port carries traffic: ACTIVE, with physical state LINK_UP (``RdmaPort.link_up``)."""
    return state == "ACTIVE" and physical_state == "LINK_UP"


@dataclass(frozen=True, kw_only=True, slots=True)
class RdmaPort:
    port: int
    state: str | None = None  # "ACTIVE" — netlink PORT_STATE, else sysfs ports/N/state
    state_code: int | None = None
    physical_state: str | None = None  # "LINK_UP" — netlink PORT_PHYS_STATE, else sysfs phys_state
    physical_state_code: int | None = None
    netdev: str | None = None  # netlink NDEV_NAME, else sysfs gid_attrs/ndevs/0
    netdev_index: int | None = None  # netlink NDEV_INDEX, else sysfs class/net/<netdev>/ifindex
    link_layer: str | None = None  # sysfs ports/N/link_layer ("Ethernet", "InfiniBand")
    rate: str | None = None  # sysfs ports/N/rate ("100 Gb/sec (4X EDR)")
    lid: int | None = None  # netlink LID (IB only)
    sm_lid: int | None = None  # netlink SM_LID (IB only)
    # sysfs class/net/<netdev>/flags & IFF_UP: whether the netdev is administratively up. Read only for
    # a port that is not up (where it decides whether the port is meant to be); None otherwise, and
    # when the netdev is not in the host's namespace.
    netdev_admin_up: bool | None = None

    @property
    def link_up(self) -> bool:
        return link_is_up(self.state, self.physical_state)


@dataclass(frozen=True, kw_only=True, slots=True)
class RdmaDevice:
    name: str
    index: int | None = None  # netlink DEV_INDEX; None when only sysfs was readable
    node_type: str | None = None  # iproute2 spelling: "ca", "rnic", …
    protocol: str | None = None  # netlink DEV_PROTOCOL: "roce", "ib", "iw", "opa", "usnic"
    fw_version: str | None = None  # netlink FW_VERSION, else sysfs fw_ver (mlx5: "16.35.2000 (MT_0000000008)")
    node_guid: str | None = None
    sys_image_guid: str | None = None
    hca_type: str | None = None  # sysfs hca_type, a driver's attribute (mlx5: "MT4119"); None without
    board_id: str | None = None  # sysfs board_id, a driver's attribute (mlx5: "MT_0000000008"); None without
    port_count: int = 0
    pci_address: str | None = None  # from sysfs ``device`` link, else the port's netdev
    ports: tuple[RdmaPort, ...] = ()
    char_devices: tuple[str, ...] = ()  # names under /dev/infiniband that belong to this device


@dataclass(frozen=True, kw_only=True, slots=True)
class PciFunction:
    """A PCI function that carries a netdev or an RDMA device (sysfs bus/pci/devices/<address>)."""

    address: str  # "0000:3b:00.0"
    vendor: str | None = None  # "15b3" (sysfs vendor, without 0x)
    device: str | None = None  # "1017"
    subsystem_vendor: str | None = None
    subsystem_device: str | None = None
    pci_class: str | None = None  # "020000"
    driver: str | None = None  # basename of the driver link
    numa_node: int | None = None  # None when sysfs says -1
    netdevs: tuple[str, ...] = ()
    rdma_devices: tuple[str, ...] = ()
    sriov_totalvfs: int | None = None  # only PFs capable of SR-IOV have it
    sriov_numvfs: int | None = None
    physfn: str | None = None  # a VF's PF address
    virtfns: tuple[str, ...] = ()  # a PF's VF addresses, by virtfn index


@dataclass(frozen=True, kw_only=True, slots=True)
class CharDevice:
    """A node under /dev/infiniband and, from sysfs, what it belongs to."""

    name: str  # "uverbs0", "umad0", "issm0", "rdma_cm"
    kind: str  # "uverbs", "umad", "issm", "rdma_cm"
    path: str  # host path, "/dev/infiniband/uverbs0"
    present: bool  # the device node exists in the host's /dev
    rdma_device: str | None = None
    port: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class KernelModule:
    name: str
    loaded: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class SystemInfo:
    """netlink SYS_GET (``rdma system``). Attributes older kernels lack are None."""

    netns_mode: NetnsMode | None
    copy_on_fork: bool | None = None
    privileged_qkey: bool | None = None
    monitor: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ModprobeOption:
    """One ``netns_mode=`` setting for ib_core found in modprobe configuration or the kernel cmdline."""

    source: str  # "/etc/modprobe.d/ib_core.conf:3" or "/proc/cmdline"
    raw: str  # the value as written ("0", "N", "junk")
    value: NetnsMode | None  # None when the value is not a boolean the kernel accepts


@dataclass(frozen=True, kw_only=True, slots=True)
class PersistedNetnsMode:
    """What ib_core will get at its next load: the effective setting and what disagrees with it."""

    value: NetnsMode | None = None  # None: nothing persisted (kernel default, shared)
    source: str | None = None
    conflicts: tuple[ModprobeOption, ...] = ()
    options: tuple[ModprobeOption, ...] = ()  # every setting seen, in the order they apply
    source_mtime: float | None = None  # mtime of the file the winning setting is in (epoch seconds)


@dataclass(frozen=True, kw_only=True, slots=True)
class KernelInfo:
    release: str | None = None  # /proc/sys/kernel/osrelease
    cmdline: str | None = None  # /proc/cmdline
    mofed_version: str | None = None  # Mellanox OFED, when installed
    boot_time: float | None = None  # epoch seconds, /proc/stat btime


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeSnapshot:
    """Everything the agent knows about the node at one moment. Built by ``take_snapshot`` only."""

    taken_at: float
    netlink_available: bool
    netlink_error: str | None = None
    netns_mode: NetnsMode | None = None  # live mode: netlink SYS_GET, else sysfs module parameter
    netns_mode_source: str | None = None  # "netlink" | "sysfs" | None
    system: SystemInfo | None = None
    devices: tuple[RdmaDevice, ...] = ()
    pci_functions: tuple[PciFunction, ...] = ()
    char_devices: tuple[CharDevice, ...] = ()
    modules: tuple[KernelModule, ...] = ()
    kernel: KernelInfo = field(default_factory=KernelInfo)
    persisted: PersistedNetnsMode = field(default_factory=PersistedNetnsMode)
    network_namespaces: int | None = None  # non-init network namespaces on the host
    problems: tuple[Problem, ...] = ()

    def device(self, name: str) -> RdmaDevice | None:
        return next((d for d in self.devices if d.name == name), None)

    def pci(self, address: str) -> PciFunction | None:
        return next((p for p in self.pci_functions if p.address == address), None)


# ---------------------------------------------------------------------------------------------------
# Enforcement (plan → act) and the agent's own state, as published.


class DesiredMode(enum.Enum):
    """What the operator asked for. ``unmanaged`` (the default) only observes."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"
    UNMANAGED = "unmanaged"

    @property
    def netns_mode(self) -> NetnsMode | None:
        return None if self is DesiredMode.UNMANAGED else NetnsMode(self.value)


class ActionKind(enum.Enum):
    SET_RUNTIME_MODE = "set_runtime_mode"  # netlink SYS_SET
    WRITE_PERSISTED = "write_persisted"  # the managed modprobe.d file
    SIGNAL_REBOOT = "signal_reboot"  # status field + optional sentinel file
    CLEAR_REBOOT = "clear_reboot"  # remove the sentinel once live mode = desired


@dataclass(frozen=True, kw_only=True, slots=True)
class Action:
    kind: ActionKind
    mode: NetnsMode | None = None
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class EnforcementState:
    """The outcome of the last reconcile, for status, metrics and labels."""

    desired: DesiredMode
    live: NetnsMode | None
    persisted: NetnsMode | None
    compliant: bool  # live == desired (always True when unmanaged)
    reboot_required: bool = False
    reboot_reason: str | None = None  # in words, for status and the sentinel
    reboot_reason_code: str | None = None  # stable, for the metric: netns_mode_busy | netns_mode_busy_predicted
    persisted_ineffective: bool = False  # persisted ≠ live though the file predates this boot
    runtime_set_attempts: int = 0  # SYS_SET requests sent so far (a counter)
    next_runtime_attempt: float | None = None  # epoch seconds; None when no retry is pending
    dry_run: bool = False
    plan: tuple[Action, ...] = ()
    applied: tuple[Action, ...] = ()  # the actions carried out this cycle (none in a dry run)
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class StageHealth:
    """One stage of the loop (discover, enforce, labels, allocatable): did its last run succeed?"""

    stage: str
    success: bool
    last_success: float | None = None  # epoch seconds
    duration_seconds: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ResourceAmount:
    """An extended resource on the Node object (e.g. ``spidernet.io/hca_shared_devices``)."""

    name: str
    capacity: int | None = None
    allocatable: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SelectorMatch:
    """How many of this node's RDMA devices one device-plugin selector matches."""

    resource: str  # full resource name, prefix/name
    matched: int
    summary: str  # the selector in words, e.g. "vendors 15b3, deviceIDs 1017"


@dataclass(frozen=True, kw_only=True, slots=True)
class PluginConfigState:
    """Where the device plugin's config.json was read from this cycle, and whether it was
    (agent.publish.plugin_source)."""

    source: str  # "configmap" | "file"
    ref: str  # NAMESPACE/NAME[:KEY] of the ConfigMap, or the file's path
    loaded: bool  # read and parsed; False: a problem says why


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeCondition:
    """The Node condition the agent publishes (agent.publish.condition), without its timestamps."""

    type: str
    status: str  # "True" | "False"
    reason: str  # CamelCase
    message: str  # one line


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentState:
    """Everything the publishers need, replaced atomically by the loop after each cycle."""

    snapshot: NodeSnapshot | None = None
    enforcement: EnforcementState | None = None
    stages: tuple[StageHealth, ...] = ()
    resources: tuple[ResourceAmount, ...] = ()
    selectors: tuple[SelectorMatch, ...] = ()
    # Resources this node should offer (agent.diagnose.expected_resources): allocatable 0 or absent
    # for one of them is what RdmaAllocatableZero is about. Empty until the Node has been seen.
    expected_resources: tuple[str, ...] = ()
    # Ports meant to be up, as "device/port" (agent.publish.ports): a port down among them is a real
    # link loss (RdmaPortLinkDown); an uncabled spare port is not among them.
    ports_expected_up: frozenset[str] = frozenset()
    condition: NodeCondition | None = None  # RDMAReady as published (or, in status, as it would be)
    # The device plugin's config source (agent.publish.plugin_source); None: none configured, or the
    # ConfigMap not listed yet.
    plugin_config: PluginConfigState | None = None
    problems: tuple[Problem, ...] = ()  # publish-side problems (selectors, allocatable, consumers)

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """Every problem the state reports: discovery's, enforcement's and the publishing stages'."""
        return (
            *(self.snapshot.problems if self.snapshot is not None else ()),
            *(self.enforcement.problems if self.enforcement is not None else ()),
            *self.problems,
        )
