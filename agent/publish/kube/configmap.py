"""One ConfigMap, watched: where the RDMA shared device plugin keeps its ``config.json``.

:class:`ConfigMapWatcher` keeps the ConfigMap's data current with one LIST and one WATCH (field selector
``metadata.name``, so RBAC can grant it by ``resourceNames``), as the Node is watched. Reading it is
:meth:`ConfigMapWatcher.read`: the text under one key, or why there is none — never a request per
cycle, never a copy on disk that goes stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from agent.publish.kube.watch import ObjectWatcher, frozen_strings


@dataclass(frozen=True, kw_only=True, slots=True)
class ObservedConfigMap:
    name: str
    data: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    resource_version: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ObservedConfigMap:
        meta = obj.get("metadata") or {}
        return cls(
            name=str(meta.get("name", "")),
            data=frozen_strings(obj.get("data")),
            resource_version=str(meta.get("resourceVersion", "")),
        )


class ConfigMapRead(NamedTuple):
    """The text under the key (None: not available) and, when None, why (None: not read yet)."""

    text: str | None
    error: str | None
    resource_version: str = ""


class ConfigMapWatcher(ObjectWatcher[ObservedConfigMap]):
    """One ConfigMap ``namespace/name``."""

    kind = "configmap"

    def __init__(self, api_client: Any, namespace: str, name: str, **kwargs: Any) -> None:
        self.namespace = namespace
        super().__init__(api_client, name, **kwargs)

    def _list_call(self, **kwargs: Any) -> Any:
        return self._core.list_namespaced_config_map(self.namespace, **kwargs)

    def _parse(self, obj: Mapping[str, Any]) -> ObservedConfigMap:
        return ObservedConfigMap.from_object(obj)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def read(self, key: str) -> ConfigMapRead:
        """``data[key]``, or why it cannot be had: not listed yet, the list failing, no such ConfigMap,
        no such key."""
        observed = self.observed()
        if observed is not None:
            if key in observed.data:
                return ConfigMapRead(observed.data[key], None, observed.resource_version)
            keys = ", ".join(sorted(observed.data)) or "none"
            return ConfigMapRead(None, f"ConfigMap {self.ref} has no key {key} (keys: {keys})")
        if self.failing():
            return ConfigMapRead(None, f"ConfigMap {self.ref} cannot be read: {self.stats().last_error}")
        if not self.synced():
            return ConfigMapRead(None, None)  # not listed yet: nothing to say
        return ConfigMapRead(None, f"ConfigMap {self.ref} does not exist")
