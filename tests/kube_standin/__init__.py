"""An HTTP stand-in for kube-apiserver, for the requests the agent makes.

It speaks the real wire format so the unmodified ``kubernetes`` client can be pointed at it through a
kubeconfig:

* Nodes: ``GET /api/v1/nodes/{name}``, list (``fieldSelector``) and watch (chunked JSON lines,
  ``resourceVersion``, ``allowWatchBookmarks``, ``timeoutSeconds``, 410 ``Expired`` as an ERROR
  event); ``PATCH /api/v1/nodes/{name}`` and ``PATCH /api/v1/nodes/{name}/status`` with the three
  patch types — RFC 7386 merge (lists replaced whole), strategic merge (``status.conditions`` merged
  by ``type`` as the real server does, so a merge patch there is visibly wrong) and RFC 6902. A
  patch of the node keeps its status, a patch of its status keeps its spec.
* ConfigMaps: get, list and watch in a namespace.
* events.k8s.io/v1 Events: ``POST`` and ``PATCH`` in a namespace, validated as the real server does
  (``eventTime`` with six fractional digits, qualified ``reportingController``, required and bounded
  ``reportingInstance``/``action``/``reason``, ``note`` ≤ 1 KiB, ``type`` Normal|Warning, a
  cluster-scoped ``regarding`` only in ``default``/``kube-system``, ``series.count`` ≥ 2, nearly
  every field immutable on update).

Like the real server it validates labels and annotations (apimachinery ``IsQualifiedName`` /
``IsValidLabelValue``, 256 KiB of annotations) and answers 422 ``Invalid`` with ``details.causes``,
honours a ``metadata.resourceVersion`` precondition (409 ``Conflict``), does not write (nor bump the
resourceVersion, nor notify watchers) when a patch changes nothing, and answers errors with
``Status`` objects of the real shape.

Tests read its request log and counters, wait on its condition (``wait_for``), change objects as
other writers would (``put_node``, ``update_node``, ``delete_node``, ``put_configmap``), and inject
faults: the next N requests of a kind (and resource) fail with a status or are delayed, open watches
are dropped mid-stream or ended cleanly, the next watch finds its resourceVersion expired, history is
compacted.

Deliberately not implemented (400/405/415 rather than silently wrong): label selectors, field
selectors other than ``metadata.name``, server-side apply, strategic-merge directives other than
``$patch: delete`` in a keyed list, writes of other resources.
"""

from tests.kube_standin.resources import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH
from tests.kube_standin.routes import KINDS
from tests.kube_standin.server import KubeStandIn, Request
from tests.kube_standin.validation import is_qualified_name, is_valid_label_value

__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "KINDS",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "KubeStandIn",
    "Request",
    "is_qualified_name",
    "is_valid_label_value",
]
