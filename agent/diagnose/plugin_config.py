"""The RDMA shared device plugin's config (its ConfigMap's ``config.json``), parsed and validated as
the plugin itself does (pkg/types/types.go, pkg/resources/resources_manager.go):

* The deprecated ``devices`` list is the ``ifNames`` selector; giving both, or neither, is an error.
  ``resourcePrefix`` defaults to ``rdma``. ``isRdma``, ``pciAddresses``, ``rootDevices``, ``pfNames``
  … are sriov-network-device-plugin selectors: this plugin silently ignores them, and so do we,
  with a problem saying so (:func:`agent.diagnose.diagnosis.selector_problems`).
* Keys map onto fields as Go's encoding/json does (exact, else case-insensitive); what the plugin
  rejects at start is a ConfigError naming the file and field.

Pure except :func:`read_device_plugin_text` and :func:`read_device_plugin_config`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.hostio import Refused, decode_text, read_host_file
from agent.labelsyntax import qualified_name_error

DEFAULT_RESOURCE_PREFIX = "rdma"  # resources_manager.go rdmaHcaResourcePrefix
_RESOURCE_NAME = re.compile(r"[a-zA-Z0-9_]+")  # resources_manager.go validResourceName


@dataclass(frozen=True, kw_only=True, slots=True)
class Selectors:
    """``configList[].selectors`` (types.go Selectors)."""

    vendors: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    if_names: tuple[str, ...] = ()
    link_types: tuple[str, ...] = ()

    def empty(self) -> bool:
        return not (self.vendors or self.device_ids or self.drivers or self.if_names or self.link_types)

    def summary(self) -> str:
        """The selector in words: ``15b3:1017`` when it names one vendor and one device, then the rest."""
        parts: list[str] = []
        if len(self.vendors) == 1 and len(self.device_ids) == 1:
            parts.append(f"{self.vendors[0]}:{self.device_ids[0]}")
        else:
            parts += [f"vendors {','.join(self.vendors)}"] if self.vendors else []
            parts += [f"deviceIDs {','.join(self.device_ids)}"] if self.device_ids else []
        for name, values in (
            ("drivers", self.drivers),
            ("ifNames", self.if_names),
            ("linkTypes", self.link_types),
        ):
            if values:
                parts.append(f"{name} {','.join(values)}")
        return ", ".join(parts) or "everything"


@dataclass(frozen=True, kw_only=True, slots=True)
class ResourceConfig:
    """One ``configList[]`` entry (types.go UserConfig), validated as ValidateConfigs does."""

    resource_name: str
    resource_prefix: str = DEFAULT_RESOURCE_PREFIX
    rdma_hca_max: int
    selectors: Selectors
    from_devices: bool = False  # the selectors came from the deprecated "devices" list

    @property
    def full_name(self) -> str:
        return f"{self.resource_prefix}/{self.resource_name}"


@dataclass(frozen=True, kw_only=True, slots=True)
class DevicePluginConfig:
    """The whole ``config.json`` (types.go UserConfigList)."""

    source: str  # where it was read from, for messages
    resources: tuple[ResourceConfig, ...]
    periodic_update_interval: int | None = None  # seconds; None: the plugin's default (60)
    ignored_fields: tuple[str, ...] = ()  # JSON paths the plugin ignores, e.g. configList[0].selectors.rootDevices

    def resource(self, full_name: str) -> ResourceConfig | None:
        return next((r for r in self.resources if r.full_name == full_name), None)


def _fields(obj: Mapping[str, Any], known: Sequence[str], path: str, ignored: list[str]) -> dict[str, Any]:
    """Map JSON keys onto known field names as Go's encoding/json does: an exact match first, else a
    case-insensitive one; later duplicates win. Unknown keys are recorded in ``ignored``."""
    by_lower = {k.lower(): k for k in known}
    out: dict[str, Any] = {}
    exact: set[str] = set()
    for key, value in obj.items():
        if key in known:
            out[key] = value
            exact.add(key)
        elif (name := by_lower.get(key.lower())) is not None:
            if name not in exact:
                out[name] = value
        else:
            ignored.append(f"{path}{key}")
    return out


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    # Go rejects 1.0, "1" and true for an int field; Python's json gives bool for true.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"must be an integer, got {json.dumps(value)}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(where, f"must be a list of strings, got {json.dumps(value)}")
    return tuple(value)


def parse_device_plugin_config(text: str, source: str) -> DevicePluginConfig:
    """Parse and validate the shared device plugin's ``config.json`` (pure).

    Rejects what makes the plugin exit at start (ReadConfig/ValidateConfigs), with a ConfigError
    whose setting names the file and field (``config.json: configList[1].rdmaHcaMax``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(source, f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except (ValueError, RecursionError) as err:  # a number past Python's digit limit, absurd nesting
        raise ConfigError(source, f"not usable JSON: {str(err).splitlines()[0][:200]}") from None
    if not isinstance(data, dict):
        raise ConfigError(source, f"must be a JSON object, got {type(data).__name__}")
    ignored: list[str] = []
    top = _fields(data, ("periodicUpdateInterval", "configList"), "", ignored)
    interval = _int(top.get("periodicUpdateInterval"), f"{source}: periodicUpdateInterval")
    if interval is not None and interval < 0:
        raise ConfigError(f"{source}: periodicUpdateInterval", f"must be ≥ 0, got {interval}")
    entries = top.get("configList")
    if entries is not None and not isinstance(entries, list):
        raise ConfigError(f"{source}: configList", f"must be a list, got {json.dumps(entries)}")
    if not entries:
        raise ConfigError(f"{source}: configList", "no resources configured (the plugin exits)")
    resources: list[ResourceConfig] = []
    for i, entry in enumerate(entries):
        resources.append(_resource(entry, f"configList[{i}]", source, ignored))
    seen: set[str] = set()
    for i, resource in enumerate(resources):
        if resource.resource_name in seen:  # the plugin checks the name alone, whatever the prefix
            raise ConfigError(f"{source}: configList[{i}].resourceName", f"{resource.resource_name!r} is not unique")
        seen.add(resource.resource_name)
    return DevicePluginConfig(
        source=source,
        resources=tuple(resources),
        periodic_update_interval=interval,
        ignored_fields=tuple(ignored),
    )


def _resource(entry: Any, path: str, source: str, ignored: list[str]) -> ResourceConfig:
    where = f"{source}: {path}"
    if not isinstance(entry, dict):
        raise ConfigError(where, f"must be a JSON object, got {json.dumps(entry)}")
    known = ("resourceName", "resourcePrefix", "rdmaHcaMax", "devices", "selectors")
    fields = _fields(entry, known, f"{path}.", ignored)
    name = fields.get("resourceName")
    if not isinstance(name, str) or not _RESOURCE_NAME.fullmatch(name):
        raise ConfigError(f"{where}.resourceName", f"must be letters, digits and '_', got {json.dumps(name)}")
    prefix = fields.get("resourcePrefix")
    if prefix is not None and not isinstance(prefix, str):
        raise ConfigError(f"{where}.resourcePrefix", f"must be a string, got {json.dumps(prefix)}")
    prefix = prefix or DEFAULT_RESOURCE_PREFIX
    hca_max = _int(fields.get("rdmaHcaMax"), f"{where}.rdmaHcaMax") or 0
    if hca_max < 0:
        raise ConfigError(f"{where}.rdmaHcaMax", f"must be ≥ 0, got {hca_max}")
    devices = _strings(fields.get("devices"), f"{where}.devices")
    raw = fields.get("selectors")
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{where}.selectors", f"must be a JSON object, got {json.dumps(raw)}")
    sel_known = ("vendors", "deviceIDs", "drivers", "ifNames", "linkTypes")
    sel = _fields(raw or {}, sel_known, f"{path}.selectors.", ignored)
    selectors = Selectors(
        vendors=_strings(sel.get("vendors"), f"{where}.selectors.vendors"),
        device_ids=_strings(sel.get("deviceIDs"), f"{where}.selectors.deviceIDs"),
        drivers=_strings(sel.get("drivers"), f"{where}.selectors.drivers"),
        if_names=_strings(sel.get("ifNames"), f"{where}.selectors.ifNames"),
        link_types=_strings(sel.get("linkTypes"), f"{where}.selectors.linkTypes"),
    )
    if selectors.empty() and not devices:
        raise ConfigError(where, "neither selectors nor devices is given (the plugin exits)")
    if not selectors.empty() and devices:
        raise ConfigError(where, "selectors and devices are both given (the plugin exits)")
    return ResourceConfig(
        resource_name=name,
        resource_prefix=prefix,
        rdma_hca_max=hca_max,
        selectors=selectors if devices == () else Selectors(if_names=devices),
        from_devices=bool(devices),
    )


def resource_name_error(full_name: str) -> str | None:
    """Why kubelet refuses a device plugin registering ``full_name``, or None. Kubelet accepts only
    extended resource names: ``requests.<name>`` must be a qualified name (k8s.io/kubernetes
    pkg/apis/core/v1/helper IsExtendedResourceName), so the prefix must be a lowercase DNS subdomain;
    the plugin itself does not check (its README's ``example_prefix`` would be refused)."""
    if "/" not in full_name or full_name.split("/", 1)[0].endswith("kubernetes.io"):
        return "not an extended resource name"
    return qualified_name_error("requests." + full_name)


def read_device_plugin_text(path: Path) -> str:
    """The config file's text; ConfigError (``--device-plugin-config``) when it cannot be read: absent,
    refused (a FIFO, a device, over the size cap), not UTF-8."""
    try:
        return decode_text(read_host_file(str(path)), str(path))
    except Refused as err:
        raise ConfigError("--device-plugin-config", f"{path} {err.strerror}") from err
    except OSError as err:
        raise ConfigError("--device-plugin-config", f"cannot read {path}: {err.strerror}") from err


def read_device_plugin_config(path: Path) -> DevicePluginConfig:
    """Read and parse the config file."""
    return parse_device_plugin_config(read_device_plugin_text(path), str(path))
