"""Where the RDMA shared device plugin's ``config.json`` comes from, read once a cycle.

Two sources, one answer (:class:`PluginConfigRead`): the plugin's ConfigMap through the API
(:class:`ConfigMapSource`, the default: Spiderpool's ``kube-system/spiderpool-rdma-shared-device-plugin``,
watched, so an edit of the plugin's config is seen at once and never copied), or a file
(:class:`FileSource`). A source that is configured but cannot be read — the ConfigMap or its key
missing, the API refusing, the file absent or refused — is the problem ``device_plugin_config_unreadable``
and ``loaded`` false, never silence; an invalid config is ``device_plugin_config_invalid``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

from agent.diagnose.plugin_config import DevicePluginConfig, parse_device_plugin_config, read_device_plugin_text
from agent.errors import ConfigError
from agent.model import PluginConfigState, Problem
from agent.publish.kube.configmap import ConfigMapWatcher


class PluginConfigRead(NamedTuple):
    """The config as read this cycle (None: none, or unusable — ``problems`` says why) and the state
    for metrics and status (None: nothing to say yet)."""

    config: DevicePluginConfig | None
    problems: tuple[Problem, ...]
    state: PluginConfigState | None = None


class PluginConfigSource(Protocol):
    def read(self) -> PluginConfigRead: ...


class NoSource:
    """No device plugin config configured: no selector checks."""

    def read(self) -> PluginConfigRead:
        return PluginConfigRead(None, ())


class FileSource:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> PluginConfigRead:
        path = str(self.path)
        try:
            text = read_device_plugin_text(self.path)
        except ConfigError as err:
            problem = Problem(code="device_plugin_config_unreadable", message=str(err), subject=path)
            return PluginConfigRead(None, (problem,), PluginConfigState(source="file", ref=path, loaded=False))
        return _parsed(text, path, "file", path, subject=path)


class ConfigMapSource:
    """The key of a watched ConfigMap; parsed again only when the ConfigMap changed."""

    def __init__(self, watcher: ConfigMapWatcher, key: str) -> None:
        self.watcher, self.key = watcher, key
        self.ref = f"{watcher.ref}:{key}"
        self._parsed: tuple[str, PluginConfigRead] | None = None  # (resourceVersion, the read)

    def read(self) -> PluginConfigRead:
        got = self.watcher.read(self.key)
        if got.text is None:
            if got.error is None:
                return PluginConfigRead(None, ())  # not listed yet: nothing to say
            problem = Problem(code="device_plugin_config_unreadable", message=got.error, subject=self.watcher.ref)
            return PluginConfigRead(None, (problem,), PluginConfigState(source="configmap", ref=self.ref, loaded=False))
        if self._parsed is not None and self._parsed[0] == got.resource_version and got.resource_version:
            return self._parsed[1]
        read = _parsed(got.text, f"ConfigMap {self.ref}", "configmap", self.ref, subject=self.watcher.ref)
        self._parsed = (got.resource_version, read)
        return read


def _parsed(text: str, where: str, source: str, ref: str, *, subject: str) -> PluginConfigRead:
    """The config in ``text`` (read from ``where``), or a ``device_plugin_config_invalid`` problem
    about ``subject``."""
    try:
        config = parse_device_plugin_config(text, where)
    except ConfigError as err:
        problem = Problem(code="device_plugin_config_invalid", message=str(err), subject=subject)
        return PluginConfigRead(None, (problem,), PluginConfigState(source=source, ref=ref, loaded=False))
    return PluginConfigRead(config, (), PluginConfigState(source=source, ref=ref, loaded=True))
