"""The agent's only conversation with kube-apiserver: one watch on its own Node, and label patches.

* :mod:`.client` — ``load_api_client`` (in-cluster config, else a kubeconfig) and the node name.
* :mod:`.api` — ``NodeApi``: the requests, exactly as the generated ``CoreV1Api`` sends them.
* :mod:`.failures` — ``describe_failure``: any client or transport error as an ``ApiFailure``.
* :mod:`.backoff` — ``Backoff``: exponential, jittered.
* :mod:`.watch` — ``NodeWatcher``: LIST then WATCH of our Node, keeping an ``ObservedNode`` current.
* :mod:`.node_labels` — ``NodeLabelPublisher``: at most one merge patch per change of the labels.

Every request, the RBAC it needs, and what happens on each error are in docs/kubernetes.md.
"""

# Until the callers import from the modules above.
from agent.publish.kube.api import FIELD_MANAGER, MERGE_PATCH, REQUEST_TIMEOUT, NodeApi
from agent.publish.kube.backoff import Backoff
from agent.publish.kube.client import KubernetesUnavailable, load_api_client, node_name
from agent.publish.kube.failures import TRANSPORT_ERRORS, ApiFailure, describe_failure
from agent.publish.kube.node_labels import NodeLabelPublisher, SyncResult
from agent.publish.kube.watch import (
    WATCH_READ_MARGIN,
    WATCH_TIMEOUT_RANGE,
    NodeWatcher,
    ObservedNode,
    WatcherStats,
    compare_resource_versions,
)

_NodeApi = NodeApi

__all__ = [
    "FIELD_MANAGER",
    "MERGE_PATCH",
    "REQUEST_TIMEOUT",
    "TRANSPORT_ERRORS",
    "WATCH_READ_MARGIN",
    "WATCH_TIMEOUT_RANGE",
    "ApiFailure",
    "Backoff",
    "KubernetesUnavailable",
    "NodeApi",
    "NodeLabelPublisher",
    "NodeWatcher",
    "ObservedNode",
    "SyncResult",
    "WatcherStats",
    "_NodeApi",
    "compare_resource_versions",
    "describe_failure",
    "load_api_client",
    "node_name",
]
