"""The agent's only conversation with kube-apiserver: watches of its own Node and of the device
plugin's ConfigMap; patches of the Node's labels and of its ``RDMAReady`` condition; Events.

* :mod:`.client` — ``load_api_client`` (in-cluster config, else a kubeconfig) and the node name.
* :mod:`.api` — ``NodeApi``: the requests, exactly as the generated ``CoreV1Api``/``EventsV1Api`` send them.
* :mod:`.failures` — ``describe_failure``: any client or transport error as an ``ApiFailure``.
* :mod:`.backoff` — ``Backoff``: exponential, jittered.
* :mod:`.watch` — ``ObjectWatcher``: LIST then WATCH of one named object; ``NodeWatcher`` keeps an
  ``ObservedNode`` current; ``FreshView``: a writer's own last answer until the watch has it.
* :mod:`.configmap` — ``ConfigMapWatcher``: one ConfigMap, read by key.
* :mod:`.node_labels` — ``NodeLabelPublisher``: at most one merge patch per change of the labels.
* :mod:`.node_status` — ``ConditionPublisher``: one strategic merge patch of ``nodes/status`` per
  change of the condition, and an hourly heartbeat.
* :mod:`.events` — ``EventRecorder``: series and spam filter as client-go's, one sender thread.

Import from those modules; this package re-exports nothing, so importing it loads no ``kubernetes``.
Every request, the RBAC it needs, and what happens on each error are in docs/kubernetes.md.
"""
