"""Benchmark 5: Kubernetes API requests per hour in steady state.

The agent's own watcher and writers (``NodeWatcher``; ``NodeLabelPublisher`` through ``LabelsStage``,
``ConditionPublisher`` through ``ConditionStage``, ``EventRecorder`` through ``EventsStage``, with
``AllocatableStage`` reading the watched Node) run against the kube-apiserver stand-in
(tests/kube_standin/), in this process, with a synthetic 8-NIC node. Time is compressed by
a factor C: the reconcile interval (30 s) and the watch timeout (production: uniform in [300, 600) s,
mean 450 s) are both divided by C, so N cycles simulate N × 30 s. Every 5 simulated minutes the
Node's status changes, as kubelet's status updates do. Requests are counted by the stand-in after
the first cycle has converged (its LIST, WATCH and one label PATCH are start-up, not steady state)
and extrapolated to an hour. The baseline, measured against the same stand-in over the same cycles,
is a naive agent: GET the Node every cycle, PATCH its labels and its condition every cycle and
record an event every cycle. A port flapping is measured apart (benchmarks/kube_flapping.py).
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.loop import Agent, Stage
from agent.publish.kube.client import load_api_client
from agent.publish.kube.events import EventRecorder, micro_time
from agent.publish.kube.node_labels import NodeLabelPublisher
from agent.publish.kube.node_status import ConditionPublisher
from agent.publish.kube.watch import NodeWatcher
from agent.publish.stages import AllocatableStage, ConditionStage, EventsStage, LabelsStage
from benchmarks import kube_flapping
from benchmarks.report import Results, Row
from benchmarks.scale import scratch_dir
from benchmarks.synth import SynthExchange, build_node
from tests.kube_standin import KubeStandIn

NAME = "Kubernetes API requests (vs naive poller)"
NODE = "gpu-node-1"
INTERVAL = 30.0
WATCH_MEAN = 450.0  # kube.watch.WATCH_TIMEOUT_RANGE = [300, 600) s
KUBELET_STATUS_EVERY = 300.0  # kubelet's nodeStatusReportFrequency default (5 min)


class SimClock:
    """Simulated monotonic time for the label hysteresis (advanced 30 s per cycle)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _kubelet_update(node: dict[str, Any]) -> None:
    """The kubelet's status update: its Ready condition's heartbeat moves (others' conditions stay)."""
    conditions = node["status"].setdefault("conditions", [])
    ready = next((c for c in conditions if c["type"] == "Ready"), None)
    if ready is None:
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": ""}
        conditions.insert(0, ready)
    beats = int(ready.get("message", "0"))
    ready["message"] = str(beats + 1)
    ready["lastHeartbeatTime"] = f"2026-01-01T{beats // 60 % 24:02d}:{beats % 60:02d}:00Z"


def _send(url: str, headers: dict[str, str], body: Any = None, method: str = "GET", content_type: str = "") -> None:
    data = json.dumps(body).encode() if body is not None else None
    if content_type:
        headers = {**headers, "Content-Type": content_type}
    # S310: the URL is the stand-in's, http://127.0.0.1:<port>.
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
        r.read()


def _naive(api: KubeStandIn, token: str | None, labels: dict[str, str], condition: dict[str, str], i: int) -> None:
    """One cycle of a naive agent: GET the Node, PATCH its labels and its condition, record an event."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{api.url}/api/v1/nodes/{NODE}"
    _send(url, headers)
    _send(url, headers, {"metadata": {"labels": labels}}, "PATCH", "application/merge-patch+json")
    beat = {**condition, "lastHeartbeatTime": f"2026-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"}
    _send(
        url + "/status", headers, {"status": {"conditions": [beat]}}, "PATCH", "application/strategic-merge-patch+json"
    )
    event = {
        "metadata": {"name": f"{NODE}.naive{i:x}"},
        "eventTime": micro_time(1.8e9 + i),
        "reportingController": "naive",
        "reportingInstance": "naive",
        "action": "Check",
        "reason": "RDMAReady",
        "type": "Normal",
        "note": "RDMA is usable",
        "regarding": {"kind": "Node", "name": NODE},
    }
    _send(f"{api.url}/apis/events.k8s.io/v1/namespaces/default/events", headers, event, "POST", "application/json")


def run(*, cycles: int, watch_timeout: int, results: Results) -> None:
    compression = WATCH_MEAN / watch_timeout
    pace = INTERVAL / compression  # wall seconds per simulated cycle
    simulated = cycles * INTERVAL
    with tempfile.TemporaryDirectory(prefix="rna-bench-", dir=scratch_dir()) as tmp, KubeStandIn() as api:
        api.put_node(NODE)
        node = build_node(Path(tmp) / "root", 8, per_pf=1)
        exchange = SynthExchange(node.functions)
        config = Config(roots=node.roots, kubernetes=True, node_name=NODE)
        client = load_api_client(api.write_kubeconfig(Path(tmp) / "kubeconfig"))
        watcher = NodeWatcher(client, NODE, watch_timeout=watch_timeout).start()
        try:
            if not watcher.wait_synced(10):
                raise RuntimeError("the node watcher did not sync with the stand-in")
            clock = SimClock()
            epoch = SimClock()
            epoch.now = time.time()
            publisher = NodeLabelPublisher(client, watcher, prefix=config.label_prefix)
            recorder = EventRecorder(client, NODE, clock=epoch)
            stages: list[Stage] = [
                AllocatableStage(config.resource_prefixes, None, watcher),
                LabelsStage(
                    config.label_prefix, config.label_hysteresis_seconds, node=publisher, watcher=watcher, timer=clock
                ),
                ConditionStage(
                    config.label_hysteresis_seconds, ConditionPublisher(client, watcher), timer=clock, clock=epoch
                ),
                EventsStage(recorder),
            ]
            agent = Agent(config, netlink=exchange.factory, stages=stages)
            agent.run_once()  # start-up: labels and the condition are patched once
            prefix = config.label_prefix
            if not watcher.wait_until(lambda w: _has_labels(w, prefix), 10):
                raise RuntimeError("the label patch never came back through the watch")
            before, before_writes = api.counts(), _writes(api, {})
            events_before = api.events_sent
            started = time.monotonic()
            failed = 0
            for i in range(cycles):
                clock.now += INTERVAL
                epoch.now += INTERVAL
                if i and (i * INTERVAL) % KUBELET_STATUS_EVERY == 0:
                    api.update_node(NODE, _kubelet_update)
                state = agent.run_once()
                failed += sum(1 for s in state.stages if not s.success)
                delay = started + (i + 1) * pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the simulated clock, not synchronisation
            recorder.flush()
            after = api.counts()
            writes = _writes(api, before_writes)
            events = api.events_sent - events_before
            wall = time.monotonic() - started
        finally:
            recorder.stop()
            watcher.stop()
        labels = {k: v for k, v in api.labels(NODE).items() if k.startswith(prefix)}
        condition = {k: v for k, v in api.conditions(NODE)["RDMAReady"].items() if k != "lastHeartbeatTime"}
        # The naive baseline, same stand-in, same number of cycles (no pacing needed: it keeps no state).
        naive_before, naive_writes_before = api.counts(), _writes(api, {})
        for i in range(cycles):
            _naive(api, api.token, labels, condition, i)
        naive_after, naive_writes = api.counts(), _writes(api, naive_writes_before)
    per_hour = 3600 / simulated
    ours = {k: (after[k] - before[k]) * per_hour for k in after}
    naive = {k: (naive_after[k] - naive_before[k]) * per_hour for k in naive_after}
    polls, naive_polls = ours["get"] + ours["list"], naive["get"] + naive["list"]
    total, naive_total = sum(ours.values()), sum(naive.values())
    size = f"{cycles} cycles = {simulated / 3600:.3g} h simulated"
    rows = (
        ("label patches/h", "nodes"),
        ("status patches/h (between heartbeats)", "nodes/status"),
        ("events/h (create + patch)", "events"),
    )
    results.rows += [
        Row(
            benchmark=NAME,
            size=f"{what}, {size}",
            unit="/h",
            ours=writes[resource] * per_hour,
            baseline=naive_writes[resource] * per_hour,
            target="0",
            met=writes[resource] == 0,
        )
        for what, resource in rows
    ]
    results.rows += [
        Row(
            benchmark=NAME,
            size=f"polls (GET/LIST)/h, {size}",
            unit="/h",
            ours=polls,
            baseline=naive_polls,
            target="0",
            met=polls == 0,
        ),
        Row(benchmark=NAME, size=f"all requests/h, {size}", unit="/h", ours=total, baseline=naive_total),
    ]
    results.notes.append(
        f"Kubernetes: time compressed {compression:g}× (watch timeout {watch_timeout} s standing for the "
        f"production mean of {WATCH_MEAN:.0f} s, a cycle every {pace * 1000:.0f} ms standing for {INTERVAL:.0f} s; "
        f"{wall:.1f} s of wall time). Steady-state requests by kind: {after_minus(after, before)}; per hour: "
        f"{ {k: round(v, 1) for k, v in ours.items()} } — the watches are the long-lived connection being "
        f"resumed from its resourceVersion when the server ends it, not polls. {events} watch events "
        f"(kubelet-style status updates every {KUBELET_STATUS_EVERY / 60:.0f} simulated min, bookmarks) caused no "
        f"request; failed stages: {failed}."
    )
    results.details["kube"] = {
        "ours_per_hour": ours,
        "naive_per_hour": naive,
        "compression": compression,
        "wall_s": wall,
        "events": events,
        "writes": writes,
    }
    kube_flapping.run(results)


def _writes(api: KubeStandIn, before: dict[str, int]) -> dict[str, int]:
    """Writes by resource since ``before``: node patches, status patches, event creates and patches."""
    now = {
        "nodes": api.count("patch", resource="nodes"),
        "nodes/status": api.count("patch", resource="nodes/status"),
        "events": api.count("patch", resource="events") + api.count("create", resource="events"),
    }
    return {k: v - before.get(k, 0) for k, v in now.items()}


def _has_labels(watcher: NodeWatcher, prefix: str) -> bool:
    node = watcher.observed()
    return node is not None and any(k.startswith(prefix) for k in node.labels)


def after_minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}
