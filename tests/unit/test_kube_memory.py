"""The agent's Kubernetes wiring stays out of the generated client's heavy modules.

kubernetes 37 imports its generated APIs and models lazily. ``CoreV1Api`` alone (a module that imports
the generated models and builds pydantic validators) costs a large share of the agent's idle memory
budget (docs/benchmarks.md has the figures), so the agent sends its two Node requests through its own
``NodeApi`` (agent/publish/kube/api.py; tests/unit/test_kube.py proves the wire is the same). This
checks, in a fresh interpreter wired as ``agent.cli`` wires it and after a real list, watch and patch
against the stand-in, that none of them was ever imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.kube_standin import KubeStandIn

NODE = "gpu-node-1"
LABEL = "rdma.spidernet.io/capable"
REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: argv = kubeconfig, node name, label key. Prints the kubernetes modules
# loaded once the watch has delivered the agent's own patch.
CHILD = """
import json, sys
from pathlib import Path

from agent.cli import _publish_stages
from agent.config import Config
from agent.publish.stages import LabelsStage

kubeconfig, node, label = sys.argv[1:4]
stages, closers, watcher, *_ = _publish_stages(Config(kubeconfig=Path(kubeconfig), node_name=node))
try:
    assert watcher is not None and watcher.wait_synced(10), "the Node was not listed"
    (labels,) = [stage for stage in stages if isinstance(stage, LabelsStage)]
    assert labels.node is not None, "no Node label publisher"
    result = labels.node.sync({label: "true"})
    assert result.patched, result
    assert watcher.wait_until(lambda w: (o := w.observed()) is not None and o.labels.get(label) == "true", 10), (
        "the watch did not deliver the patch"
    )
finally:
    for close in closers:
        close()
print(json.dumps(sorted(name for name in sys.modules if name.startswith("kubernetes"))))
"""


def test_kube_wiring_never_imports_core_v1_api_or_models(tmp_path: Path) -> None:
    with KubeStandIn() as api:
        api.put_node(NODE, labels={"kubernetes.io/hostname": NODE})
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(kubeconfig), NODE, LABEL],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert child.returncode == 0, child.stderr
        assert (api.count("list", resource="nodes"), api.count("patch", resource="nodes")) == (1, 1), api.counts()
        assert api.count("watch", resource="nodes") >= 1, api.counts()
        assert api.labels(NODE)[LABEL] == "true"
    modules = json.loads(child.stdout.splitlines()[-1])
    assert "kubernetes.client.api_client" in modules  # the check sees the client the agent used
    assert "kubernetes.client.api.core_v1_api" not in modules
    generated = [m for m in modules if m.startswith(("kubernetes.client.api.", "kubernetes.client.models."))]
    assert generated == [], f"generated API/model modules imported (see docs/benchmarks.md for their RSS): {generated}"
