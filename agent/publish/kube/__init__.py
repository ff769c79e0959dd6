"""The agent's only conversation with kube-apiserver: one watch on its own Node, and label patches.

* :mod:`.client` — ``load_api_client`` (in-cluster config, else a kubeconfig) and the node name.
* :mod:`.api` — ``NodeApi``: the requests, exactly as the generated ``CoreV1Api`` sends them.
* :mod:`.failures` — ``describe_failure``: any client or transport error as an ``ApiFailure``.
* :mod:`.backoff` — ``Backoff``: exponential, jittered.
* :mod:`.watch` — ``NodeWatcher``: LIST then WATCH of our Node, keeping an ``ObservedNode`` current.
* :mod:`.node_labels` — ``NodeLabelPublisher``: at most one merge patch per change of the labels.

Import from those modules; this package re-exports nothing, so importing it loads no ``kubernetes``.
Every request, the RBAC it needs, and what happens on each error are in docs/kubernetes.md.
"""
