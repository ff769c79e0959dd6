"""Loading the configuration: one table of settings (:data:`SETTINGS`), each with its flag, its
environment variable and its config-file key, the parsers of their values, and :func:`load_config`,
which merges flags > environment > config file > defaults into a validated
:class:`~agent.config.Config`. Any invalid value raises :class:`~agent.errors.ConfigError` naming
where it came from (``--netns-mode``, ``RDMA_NODE_AGENT_NETNS_MODE`` or ``config.yaml: netns-mode``):
the CLI turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
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
from agent.labelsyntax import label_prefix_error
from agent.logs import FORMATS as LOG_FORMATS
from agent.logs import LEVELS as LOG_LEVELS
from agent.model import DesiredMode

ENV_PREFIX = "RDMA_NODE_AGENT_"
# Go's time.ParseDuration units (what Kubernetes users type: 1m30s, 500ms); a bare number is seconds.
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_BARE_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{0,9})?")
MAX_DURATION_TEXT = 64  # "1h2m3s500ms" is 11; nothing legitimate is longer


def parse_duration(text: str) -> float:
    """A positive duration in Go's form (``1m30s``, ``90s``, ``500ms``, ``1.5h``) or a bare number of
    seconds (``30``) → seconds. Raises ValueError on anything else, zero included."""
    value = text.strip()
    if len(value) > MAX_DURATION_TEXT:
        raise ValueError(f"expected a duration like 30s, 1m30s or 1h, got {len(value)} characters")
    if _BARE_SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(f"expected a duration like 30s, 1m30s or 1h, got {text!r}")
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"expected a positive duration like 30s, 1m30s or 1h, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as Go prints a duration, for messages: 90 → ``1m30s``, 86400 → ``24h0m0s``, 0.5 → ``500ms``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(round(seconds, 3), 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + f"{secs:g}s"


def _bounded_duration(low: float, high: float) -> Callable[[str], float]:
    """A duration parser that also refuses values outside [low, high] seconds."""

    def parse(text: str) -> float:
        seconds = parse_duration(text)
        if not low <= seconds <= high:
            raise ValueError(
                f"must be between {format_duration(low)} and {format_duration(high)}, got {text.strip()!r}"
            )
        return seconds

    return parse


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_BIND_FORMS = "expected HOST:PORT such as ':9435', '0.0.0.0:9435', '[::1]:9435'"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def parse_bind_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``; an empty host (``":9435"``) means every address.

    IPv6 literals go in brackets (``[::1]:9435``), as in Go's ``net.Listen``. Port 0 picks a free
    port (tests). Raises ValueError on anything else.
    """

    def bad(why: str) -> ValueError:
        return ValueError(f"{why}: {text!r} ({_BIND_FORMS})")

    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise bad("no port")
    if not port_text.isascii() or not port_text.isdigit():
        raise bad("port is not a number")
    port = int(port_text)
    if port > 65535:
        raise bad("port is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad("not an IPv6 address inside the brackets") from None
        return host, port
    if ":" in host or "[" in host or "]" in host:
        raise bad("IPv6 addresses must be in brackets")
    if host and not _is_host(host):
        raise bad("host is neither an IPv4 address nor a hostname")
    return host, port


def _is_host(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return True
    if all(c.isdigit() or c == "." for c in host):  # "999.1.1.1" is a bad address, not a hostname
        return False
    return len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None


def _desired_mode(text: str) -> DesiredMode:
    try:
        return DesiredMode(text.strip().lower())
    except ValueError:
        raise ValueError(f"expected shared, exclusive or unmanaged, got {text!r}") from None


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def _absolute_path(text: str) -> Path:
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute path, got {text!r}")
    if "\0" in text:  # the kernel cannot open it; every later use would fail with a bare ValueError
        raise ValueError(f"a path cannot contain a NUL byte, got {text!r}")
    if ".." in text.split("/"):  # a host path must not climb out of the host root; no path needs it
        raise ValueError(f"a path cannot contain '..', got {text!r}")
    return Path(text)


def _optional_path(text: str) -> Path | None:
    return None if text.strip() == "" else _absolute_path(text)


def _prefixes(text: str) -> tuple[str, ...]:
    items = tuple(p.strip() for p in text.split(",") if p.strip())
    if not items:
        raise ValueError("expected a comma-separated list of resource name prefixes")
    return items


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"


def _configmap_ref(text: str) -> tuple[str, str] | None:
    """``NAMESPACE/NAME`` of a ConfigMap (a DNS label and a DNS subdomain, as the API server requires);
    empty: none."""
    if text.strip() == "":
        return None
    namespace, _, name = text.strip().partition("/")
    if not re.fullmatch(_DNS_LABEL, namespace) or len(name) > 253 or not re.fullmatch(_DNS_SUBDOMAIN, name):
        raise ValueError(f"expected NAMESPACE/NAME of a ConfigMap (lowercase DNS names), got {text!r}")
    return namespace, name


def _configmap_key(text: str) -> str:
    if not re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", text):  # apimachinery IsConfigMapKey
        raise ValueError(f"expected a ConfigMap key (letters, digits, '-', '_', '.'), got {text!r}")
    return text


def _globs(text: str) -> tuple[str, ...]:
    items = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in items if not re.fullmatch(r"[A-Za-z0-9_.:/*?\[\]!-]{1,64}", p)]
    if bad:
        raise ValueError(f"expected globs on device/port or a netdev name, got {bad[0]!r}")
    return items


def _label_prefix(text: str) -> str:
    error = label_prefix_error(text)  # the publishers' own rule: syntax and reserved namespaces
    if error is not None:
        raise ValueError(error)
    return text


def _node_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", text) or len(text) > 253:
        raise ValueError(f"expected a Kubernetes node name, got {text!r}")
    return text


def _bind(text: str) -> str:
    parse_bind_address(text)
    return text


def _optional_bind(text: str) -> str:
    return "" if text.strip() == "" else _bind(text)


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
    Setting("host-root", "roots.root", _absolute_path, "where the host's / is mounted (in the pod: /host)"),
    Setting("sys-root", "roots.sys", _absolute_path, "host sysfs (default: HOST_ROOT/sys)"),
    Setting("proc-root", "roots.proc", _absolute_path, "host procfs (default: HOST_ROOT/proc)"),
    Setting("dev-root", "roots.dev", _absolute_path, "host /dev (default: HOST_ROOT/dev)"),
    Setting("netns-mode", "netns_mode", _desired_mode, "desired RDMA netns mode: shared, exclusive or unmanaged"),
    Setting("dry-run", "dry_run", parse_bool, "plan and report, never change the host", status=False),
    Setting("interval", "interval_seconds", _bounded_duration(*INTERVAL_BOUNDS),
            "time between reconciles, 1s to 24h (default 30s; Go form: 90s, 1m30s)", status=False),
    Setting("runtime-retry-interval", "runtime_retry_seconds", _bounded_duration(*RETRY_BOUNDS),
            "backoff between runtime mode changes the kernel refused with EBUSY, at least the interval (default 10m)",
            status=False),
    Setting("modprobe-file", "modprobe_file", _absolute_path,
            "host path of the managed modprobe.d file (default /etc/modprobe.d/ib_core.conf)", host_path=True),
    Setting("reboot-sentinel", "reboot_sentinel", _optional_path,
            "host path of a file created while a reboot is required (for kured); empty: off", host_path=True,
            status=False),
    Setting("metrics-bind-address", "metrics_bind_address", _bind,
            "HOST:PORT for /metrics, /healthz, /readyz (default 127.0.0.1:9435; ':9435' serves every address)",
            status=False),
    Setting("health-bind-address", "health_bind_address", _optional_bind,
            "HOST:PORT of a second listener serving only /healthz and /readyz (for kubelet probes); empty: none",
            status=False),
    Setting("kubernetes", "kubernetes", parse_bool, "publish to Kubernetes (false: --no-kubernetes)"),
    Setting("kubeconfig", "kubeconfig", _absolute_path, "kubeconfig file (default: in-cluster config)"),
    Setting("node-name", "node_name", _node_name, "this node's name (the NODE_NAME downward-API variable)"),
    Setting("label-publisher", "label_publisher", _choice(*LABEL_PUBLISHERS),
            "where labels go: node (patch the Node), nfd (a features.d file) or none", status=False),
    Setting("label-prefix", "label_prefix", _label_prefix, "prefix of every label the agent owns", status=False),
    Setting("label-hysteresis", "label_hysteresis_seconds", _bounded_duration(*HYSTERESIS_BOUNDS),
            "how long a link-driven label value must hold before it is published (default 60s)", status=False),
    Setting("nfd-features-file", "nfd_features_file", _absolute_path,
            "host path of the NFD features.d file (label-publisher nfd)", host_path=True, status=False),
    Setting("resource-prefixes", "resource_prefixes", _prefixes,
            "extended resources to watch, by prefix (default spidernet.io/,rdma/)"),
    Setting("device-plugin-configmap", "device_plugin_configmap", _configmap_ref,
            "NAMESPACE/NAME of the RDMA shared device plugin's ConfigMap, read through the API "
            "(default kube-system/spiderpool-rdma-shared-device-plugin, Spiderpool's); empty: none"),
    Setting("device-plugin-configmap-key", "device_plugin_configmap_key", _configmap_key,
            "the key of its config.json in that ConfigMap (default config.json)"),
    Setting("device-plugin-config", "device_plugin_config", _absolute_path,
            "a file with the plugin's config.json instead of the ConfigMap (e.g. mounted)"),
    Setting("node-condition", "node_condition", parse_bool,
            "publish the RDMAReady Node condition (nodes/status), default true", status=False),
    Setting("events", "events", parse_bool, "record Events about the Node (events.k8s.io), default true", status=False),
    Setting("node-condition-heartbeat", "node_condition_heartbeat_seconds", _bounded_duration(*HEARTBEAT_BOUNDS),
            "how often the unchanged condition's lastHeartbeatTime is refreshed, 1m to 24h (default 1h)",
            status=False),
    Setting("link-down-ignore", "link_down_ignore", _globs,
            "ports never meant to be up (no RdmaPortLinkDown): comma-separated globs on device/port or the netdev, "
            "e.g. mlx5_1/1,ens1f1*", status=False),
    Setting("log-level", "log_level", _choice(*LOG_LEVELS), "debug, info (default), warning or error"),
    Setting("log-format", "log_format", _choice(*LOG_FORMATS),
            "text (default; UTC timestamps) or json (one object per line, for a log pipeline)"),
)  # fmt: skip  # one setting a line, its flag, parser and help side by side
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
            config_file = _absolute_path(env[ENV_PREFIX + "CONFIG"])
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
