"""Where the host is, and what the operator asked for.

This is the only module that spells host paths such as ``/sys`` or ``/etc``: everything else asks a
:class:`HostRoots` for them, so the agent reads the right tree whether it runs on the host (root
``/``) or in a pod with the host mounted at ``/host``, and tests can point it at a fixture tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigError
from agent.labelsyntax import DEFAULT_LABEL_PREFIX
from agent.model import DesiredMode

# modprobe(8)/modprobe.d(5) configuration directories, in kmod's precedence order: a file name in an
# earlier directory hides the same name in later ones (kmod libkmod.c ``default_config_paths``).
MODPROBE_DIRS: tuple[str, ...] = (
    "etc/modprobe.d",
    "run/modprobe.d",
    "usr/local/lib/modprobe.d",
    "usr/lib/modprobe.d",
    "lib/modprobe.d",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class HostRoots:
    """Mount points of the host's trees. ``root`` is the host's ``/``; each tree can be overridden."""

    root: Path = Path("/")
    sys: Path | None = None
    proc: Path | None = None
    dev: Path | None = None

    def __post_init__(self) -> None:
        for name in ("root", "sys", "proc", "dev"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_absolute():
                raise ConfigError(f"--{name.replace('root', 'host-root')}", f"must be an absolute path, got {value!s}")

    @property
    def sysfs(self) -> Path:
        return self.sys if self.sys is not None else self.root / "sys"

    @property
    def procfs(self) -> Path:
        return self.proc if self.proc is not None else self.root / "proc"

    @property
    def devfs(self) -> Path:
        return self.dev if self.dev is not None else self.root / "dev"

    def host(self, relative: str) -> Path:
        """A path on the host given relative to its ``/`` (e.g. ``etc/modprobe.d``)."""
        return self.root / relative.lstrip("/")

    def modprobe_dirs(self) -> tuple[Path, ...]:
        return tuple(self.host(d) for d in MODPROBE_DIRS)

    def display(self, path: Path) -> str:
        """How a path looks from the host's point of view, for reports (``/host/etc/x`` → ``/etc/x``)."""
        for base, shown in (
            (self.sysfs, "/sys"),
            (self.procfs, "/proc"),
            (self.devfs, "/dev"),
            (self.root, "/"),
        ):
            try:
                rel = path.relative_to(base)
            except ValueError:
                continue
            return str(Path(shown) / rel)
        return str(path)


LABEL_PUBLISHERS = ("node", "nfd", "none")
# Loopback by default: metrics reach the network through kube-rbac-proxy (docs/security.md), or
# through an explicit ':9435'.
DEFAULT_METRICS_BIND_ADDRESS = "127.0.0.1:9435"
DAY = 86400.0
INTERVAL_BOUNDS = (1.0, DAY)
RETRY_BOUNDS = (1.0, 7 * DAY)  # and at least the interval: load_config checks
DEFAULT_RETRY_SECONDS = 600.0
HYSTERESIS_BOUNDS = (0.0, DAY)
HEARTBEAT_BOUNDS = (60.0, DAY)


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """The agent's whole configuration, validated. Built by :func:`agent.settings.load_config` from
    flags > environment (``RDMA_NODE_AGENT_*``) > config file > these defaults (the table of
    settings and their parsers is :mod:`agent.settings`)."""

    roots: HostRoots = field(default_factory=HostRoots)
    netns_mode: DesiredMode = DesiredMode.UNMANAGED
    dry_run: bool = False
    interval_seconds: float = 30.0
    runtime_retry_seconds: float = DEFAULT_RETRY_SECONDS  # backoff between SYS_SET retries after EBUSY
    modprobe_file: Path | None = None  # default: <host root>/etc/modprobe.d/ib_core.conf
    reboot_sentinel: Path | None = None  # off by default; a path for kured's --reboot-sentinel
    metrics_bind_address: str = DEFAULT_METRICS_BIND_ADDRESS
    health_bind_address: str = ""  # a second listener for probes only; "" = none
    kubernetes: bool = True
    kubeconfig: Path | None = None
    node_name: str | None = None  # NODE_NAME from the downward API
    label_publisher: str = "node"  # node | nfd | none
    label_prefix: str = DEFAULT_LABEL_PREFIX
    label_hysteresis_seconds: float = 60.0
    nfd_features_file: Path | None = (
        None  # default: <host root>/etc/kubernetes/node-feature-discovery/features.d/rdma-node-agent
    )
    resource_prefixes: tuple[str, ...] = ("spidernet.io/", "rdma/")
    device_plugin_config: Path | None = None  # the RDMA shared device plugin's config.json, as a file
    # ... or its ConfigMap (namespace, name), watched through the API; the file wins when both are set.
    device_plugin_configmap: tuple[str, str] | None = ("kube-system", "spiderpool-rdma-shared-device-plugin")
    device_plugin_configmap_key: str = "config.json"
    node_condition: bool = True  # publish the RDMAReady Node condition
    events: bool = True  # record Events about the Node
    node_condition_heartbeat_seconds: float = 3600.0  # rewrite the unchanged condition this often
    link_down_ignore: tuple[str, ...] = ()  # globs on "device/port" or a netdev: ports never meant to be up
    log_level: str = "info"  # debug | info | warning | error
    log_format: str = "text"  # text | json

    @property
    def managed_modprobe_file(self) -> Path:
        return self.modprobe_file or self.roots.host("etc/modprobe.d/ib_core.conf")

    @property
    def features_file(self) -> Path:
        return self.nfd_features_file or self.roots.host(
            "etc/kubernetes/node-feature-discovery/features.d/rdma-node-agent"
        )
