"""Loading the configuration: one table of settings (:data:`SETTINGS`), each with its flag, its
environment variable and its config-file key, the parsers of their values, and :func:`load_config`,
which merges flags > environment > config file > defaults into a validated
:class:`~agent.config.Config`. Any invalid value raises :class:`~agent.errors.ConfigError` naming
where it came from (``--netns-mode``, ``RDMA_NODE_AGENT_NETNS_MODE`` or ``config.yaml: netns-mode``):
the CLI turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from agent.config import (
    DEFAULT_RETRY_SECONDS,
    HEARTBEAT_BOUNDS,
    HYSTERESIS_BOUNDS,
    INTERVAL_BOUNDS,
    LABEL_PUBLISHERS,
    RETRY_BOUNDS,
    Config,
    HostRoots,
)
from agent.errors import ConfigError
from agent.hostio import Refused, decode_text, read_host_file
from agent.logs import FORMATS as LOG_FORMATS
from agent.logs import LEVELS as LOG_LEVELS
from agent.settingvalues import (
    bounded_duration,
    choice,
    format_duration,
    parse_absolute_path,
    parse_bind,
    parse_bool,
    parse_configmap_key,
    parse_configmap_ref,
    parse_desired_mode,
    parse_globs,
    parse_label_prefix,
    parse_node_name,
    parse_optional_bind,
    parse_optional_path,
    parse_prefixes,
)

ENV_PREFIX = "RDMA_NODE_AGENT_"


# Go's time.ParseDuration units (what Kubernetes users type: 1m30s, 500ms); a bare number is seconds.
@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key: ``key`` is the flag name (``--key``) and the config-file key; the
    environment variable is ``RDMA_NODE_AGENT_<KEY>``; ``target`` is the Config field (or roots.*)."""

    key: str
    target: str
    parse: Callable[[str], Any]
    help: str
    host_path: bool = False  # a path on the host: resolved under the host root
    status: bool = True  # a flag of `status` too (False: only `run` has it; the env and file still take it)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace("-", "_")

    @property
    def flag(self) -> str:
        return "--" + self.key


SETTINGS: tuple[Setting, ...] = (
    Setting("host-root", "roots.root", parse_absolute_path, "where the host's / is mounted (in the pod: /host)"),
    Setting("sys-root", "roots.sys", parse_absolute_path, "host sysfs (default: HOST_ROOT/sys)"),
    Setting("proc-root", "roots.proc", parse_absolute_path, "host procfs (default: HOST_ROOT/proc)"),
    Setting("dev-root", "roots.dev", parse_absolute_path, "host /dev (default: HOST_ROOT/dev)"),
    Setting("netns-mode", "netns_mode", parse_desired_mode, "desired RDMA netns mode: shared, exclusive or unmanaged"),
    Setting("dry-run", "dry_run", parse_bool, "plan and report, never change the host", status=False),
    Setting(
        "interval",
        "interval_seconds",
        bounded_duration(*INTERVAL_BOUNDS),
        "time between reconciles, 1s to 24h (default 30s; Go form: 90s, 1m30s)",
        status=False,
    ),
    Setting(
        "runtime-retry-interval",
        "runtime_retry_seconds",
        bounded_duration(*RETRY_BOUNDS),
        "backoff between runtime mode changes the kernel refused with EBUSY, at least the interval (default 10m)",
        status=False,
    ),
    Setting(
        "modprobe-file",
        "modprobe_file",
        parse_absolute_path,
        "host path of the managed modprobe.d file (default /etc/modprobe.d/ib_core.conf)",
        host_path=True,
    ),
    Setting(
        "reboot-sentinel",
        "reboot_sentinel",
        parse_optional_path,
        "host path of a file created while a reboot is required (for kured); empty: off",
        host_path=True,
        status=False,
    ),
    Setting(
        "metrics-bind-address",
        "metrics_bind_address",
        parse_bind,
        "HOST:PORT for /metrics, /healthz, /readyz (default 127.0.0.1:9435; ':9435' serves every address)",
        status=False,
    ),
    Setting(
        "health-bind-address",
        "health_bind_address",
        parse_optional_bind,
        "HOST:PORT of a second listener serving only /healthz and /readyz (for kubelet probes); empty: none",
        status=False,
    ),
    Setting("kubernetes", "kubernetes", parse_bool, "publish to Kubernetes (false: --no-kubernetes)"),
    Setting("kubeconfig", "kubeconfig", parse_absolute_path, "kubeconfig file (default: in-cluster config)"),
    Setting("node-name", "node_name", parse_node_name, "this node's name (the NODE_NAME downward-API variable)"),
    Setting(
        "label-publisher",
        "label_publisher",
        choice(*LABEL_PUBLISHERS),
        "where labels go: node (patch the Node), nfd (a features.d file) or none",
        status=False,
    ),
    Setting("label-prefix", "label_prefix", parse_label_prefix, "prefix of every label the agent owns", status=False),
    Setting(
        "label-hysteresis",
        "label_hysteresis_seconds",
        bounded_duration(*HYSTERESIS_BOUNDS),
        "how long a link-driven label value must hold before it is published (default 60s)",
        status=False,
    ),
    Setting(
        "nfd-features-file",
        "nfd_features_file",
        parse_absolute_path,
        "host path of the NFD features.d file (label-publisher nfd)",
        host_path=True,
        status=False,
    ),
    Setting(
        "resource-prefixes",
        "resource_prefixes",
        parse_prefixes,
        "extended resources to watch, by prefix (default spidernet.io/,rdma/)",
    ),
    Setting(
        "device-plugin-configmap",
        "device_plugin_configmap",
        parse_configmap_ref,
        "NAMESPACE/NAME of the RDMA shared device plugin's ConfigMap, read through the API "
        "(default kube-system/spiderpool-rdma-shared-device-plugin, Spiderpool's); empty: none",
    ),
    Setting(
        "device-plugin-configmap-key",
        "device_plugin_configmap_key",
        parse_configmap_key,
        "the key of its config.json in that ConfigMap (default config.json)",
    ),
    Setting(
        "device-plugin-config",
        "device_plugin_config",
        parse_absolute_path,
        "a file with the plugin's config.json instead of the ConfigMap (e.g. mounted)",
    ),
    Setting(
        "node-condition",
        "node_condition",
        parse_bool,
        "publish the RDMAReady Node condition (nodes/status), default true",
        status=False,
    ),
    Setting("events", "events", parse_bool, "record Events about the Node (events.k8s.io), default true", status=False),
    Setting(
        "node-condition-heartbeat",
        "node_condition_heartbeat_seconds",
        bounded_duration(*HEARTBEAT_BOUNDS),
        "how often the unchanged condition's lastHeartbeatTime is refreshed, 1m to 24h (default 1h)",
        status=False,
    ),
    Setting(
        "link-down-ignore",
        "link_down_ignore",
        parse_globs,
        "ports never meant to be up (no RdmaPortLinkDown): comma-separated globs on device/port or the netdev, "
        "e.g. mlx5_1/1,ens1f1*",
        status=False,
    ),
    Setting("log-level", "log_level", choice(*LOG_LEVELS), "debug, info (default), warning or error"),
    Setting(
        "log-format",
        "log_format",
        choice(*LOG_FORMATS),
        "text (default; UTC timestamps) or json (one object per line, for a log pipeline)",
    ),
)  # one setting a line, its flag, parser and help side by side
SETTINGS_BY_KEY = {s.key: s for s in SETTINGS}


CONFIG_FILE_MAX_BYTES = 64 * 1024  # two dozen settings fit in 2 KiB


def _load_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load`` without anchors and aliases: a configuration never needs them, and a few
    hundred bytes of nested aliases expand to gigabytes (the "billion laughs")."""
    import yaml  # PyYAML: a dependency of the kubernetes client, declared in pyproject too

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise ConfigError("--config", f"{path} uses a YAML anchor or alias (&/*): a configuration may not")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliases)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError("--config", f"{path} is not valid YAML: {str(err).splitlines()[0]}") from err
    except RecursionError as err:
        raise ConfigError("--config", f"{path} is nested too deeply to be a configuration") from err


def _read_config_file(path: Path) -> dict[str, str]:
    try:
        text = decode_text(read_host_file(str(path), limit=CONFIG_FILE_MAX_BYTES), str(path))
    except Refused as err:
        raise ConfigError("--config", f"{path} {err.strerror}") from err
    except OSError as err:
        raise ConfigError("--config", f"cannot read {path}: {err.strerror}") from err
    data = _load_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of settings, got {type(data).__name__}")
    values: dict[str, str] = {}
    for key, value in data.items():
        if key not in SETTINGS_BY_KEY:
            shown = key if isinstance(key, str) and key.isprintable() else repr(key)  # one line, always
            raise ConfigError(f"{path}: {shown}", f"unknown setting (known: {', '.join(SETTINGS_BY_KEY)})")
        if isinstance(value, bool):
            values[key] = "true" if value else "false"
        elif isinstance(value, list):
            values[key] = ",".join(str(v) for v in value)
        elif value is None:
            values[key] = ""
        else:
            values[key] = str(value)
    return values


def load_config(
    flags: Mapping[str, str],
    env: Mapping[str, str] = os.environ,
    config_file: Path | None = None,
) -> Config:
    """Merge flags > environment > config file > defaults into a validated :class:`Config`.

    ``flags`` maps setting keys to the text given on the command line. Any invalid value raises
    :class:`ConfigError` whose ``setting`` names where it came from (``--netns-mode``,
    ``RDMA_NODE_AGENT_NETNS_MODE`` or ``config.yaml: netns-mode``)."""
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        try:
            config_file = parse_absolute_path(env[ENV_PREFIX + "CONFIG"])
        except ValueError as err:
            raise ConfigError(ENV_PREFIX + "CONFIG", str(err)) from None
    file_values = _read_config_file(config_file) if config_file is not None else {}
    parsed: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for setting, raw, origin in _given(flags, env, file_values, config_file):
        try:
            parsed[setting.target] = setting.parse(raw)
        except ValueError as err:
            raise ConfigError(origin, str(err)) from None
        origins[setting.target] = origin
    return _build(parsed, origins)


def _given(
    flags: Mapping[str, str], env: Mapping[str, str], file_values: Mapping[str, str], config_file: Path | None
) -> Iterator[tuple[Setting, str, str]]:
    """(setting, raw text, where it came from) for every setting given, by precedence. ``NODE_NAME``
    (the downward API) stands in for ``RDMA_NODE_AGENT_NODE_NAME`` and is named as such."""
    node_env = SETTINGS_BY_KEY["node-name"].env
    downward_api = "node-name" not in flags and not env.get(node_env) and bool(env.get("NODE_NAME"))
    for setting in SETTINGS:
        if setting.key in flags:
            yield setting, flags[setting.key], setting.flag
        elif downward_api and setting.key == "node-name":
            yield setting, env["NODE_NAME"], "NODE_NAME"  # name the variable the operator set
        elif setting.env in env:
            yield setting, env[setting.env], setting.env
        elif setting.key in file_values:
            yield setting, file_values[setting.key], f"{config_file}: {setting.key}"


def _build(parsed: Mapping[str, Any], origins: Mapping[str, str]) -> Config:
    """The Config from parsed values (by target), with host paths under the host root and the
    checks that span settings."""
    roots = HostRoots(**{k.split(".", 1)[1]: v for k, v in parsed.items() if k.startswith("roots.")})
    kwargs = {k: v for k, v in parsed.items() if not k.startswith("roots.")}
    for setting in SETTINGS:
        if setting.host_path and kwargs.get(setting.target) is not None:
            kwargs[setting.target] = roots.host(str(kwargs[setting.target]))
    known = {f.name for f in fields(Config)}
    assert set(kwargs) <= known, set(kwargs) - known
    if "runtime_retry_seconds" not in kwargs and "interval_seconds" in kwargs:  # the default follows a long interval
        kwargs["runtime_retry_seconds"] = max(DEFAULT_RETRY_SECONDS, kwargs["interval_seconds"])
    config = Config(roots=roots, **kwargs)
    if config.runtime_retry_seconds < config.interval_seconds:
        raise ConfigError(
            origins.get("runtime_retry_seconds", "--runtime-retry-interval"),
            f"must be at least the interval ({format_duration(config.interval_seconds)}), "
            f"got {format_duration(config.runtime_retry_seconds)}",
        )
    return config
