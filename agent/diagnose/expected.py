"""Which RDMA resources this node should offer: the ones ``RdmaAllocatableZero`` watches even when the
Node does not list them at all (the device plugin never registered: its pod is not scheduled here,
it crash-loops, or its selector matched nothing from the start).

A resource is expected when

* the RDMA shared device plugin's config names it and its selector matches at least one of this
  node's devices — the plugin would then advertise it here; a selector that matches nothing is
  ``RdmaDevicePluginSelectorMatchesNothing``'s business, not a missing resource (one cluster-wide
  config serves nodes with different NICs); or
* this Node offered it (capacity above 0) at some point since the agent started — a resource that
  disappears, or falls to 0, after it was there is a loss, whoever advertises it (SR-IOV's
  resources included).

Pure functions; the memory of what was offered is kept by the caller (the allocatable stage).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent.diagnose.plugin_config import DevicePluginConfig
from agent.model import ResourceAmount, SelectorMatch


def remember_offered(seen: frozenset[str], resources: Iterable[ResourceAmount]) -> frozenset[str]:
    """``seen`` plus every resource the Node now offers (capacity above 0)."""
    offered = {r.name for r in resources if (r.capacity or 0) > 0}
    return seen if offered <= seen else seen | offered


def expected_resources(
    config: DevicePluginConfig | None, matches: Sequence[SelectorMatch], seen: Iterable[str]
) -> tuple[str, ...]:
    """The resources this node should offer (see the module docstring), sorted."""
    matched = {m.resource for m in matches if m.matched > 0}
    configured = {r.full_name for r in config.resources} if config is not None else set()
    return tuple(sorted((configured & matched) | set(seen)))
