"""The allocatable stage (agent/publish/stages.py): the shared device plugin's view of the node is
computed once per cycle and shared by every check (selectors, selector problems, consumers, why zero)."""

from __future__ import annotations

import functools
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.diagnose import selection
from agent.model import AgentState, PluginConfigState
from agent.publish.kube.watch import NodeWatcher, ObservedNode
from agent.publish.plugin_source import FileSource
from agent.publish.stages import AllocatableStage
from tests.deviceplugin_fixtures import HCA, SRIOV, without
from tests.unit.test_labels import mlx5_snapshot

# Matches nothing (ids as the plugin never sees them), so every check runs: the selector count, the
# selector problem with both sides and the case hint, why zero with its reasons.
CONFIG = {
    "configList": [
        {
            "resourceName": "hca_shared_devices",
            "resourcePrefix": "spidernet.io",
            "rdmaHcaMax": 500,
            "selectors": {"vendors": ["0x15B3"], "deviceIDs": ["1017"]},
        }
    ]
}
RDMA = "rdma/hca_shared_devices_a"  # the shared plugin's even without its config
NODE = ObservedNode(
    name="gpu-1", capacity={HCA: "500", RDMA: "1", SRIOV: "8"}, allocatable={HCA: "0", RDMA: "0", SRIOV: "0"}
)


class _SeenNode(NodeWatcher):
    """A watcher that has seen ``node`` (never started: no API client)."""

    def __init__(self, node: ObservedNode | None) -> None:
        self.node = node

    def observed(self) -> ObservedNode | None:
        return self.node


def _count_calls(monkeypatch: pytest.MonkeyPatch, *functions: Callable[..., Any]) -> Counter[str]:
    """Count calls of each function through every name an ``agent`` module holds it by, so a module
    that imports it anew is counted too."""
    calls: Counter[str] = Counter()
    for original in functions:

        @functools.wraps(original)
        def counting(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            calls[_original.__name__] += 1
            return _original(*args, **kwargs)

        patched = [
            (module, attr)
            for name, module in list(sys.modules.items())
            if name == "agent" or name.startswith("agent.")
            for attr, value in list(vars(module).items())
            if value is original
        ]
        assert patched, f"{original.__name__} is bound nowhere in agent"
        for module, attr in patched:
            monkeypatch.setattr(module, attr, counting)
    return calls


SELECTOR = ("selector_matches_nothing", HCA)
UMAD = ("missing_umad", "0000:3b:00.1")
ZERO = [("zero_allocatable", RDMA), ("zero_allocatable", HCA), ("zero_allocatable", SRIOV)]


@pytest.mark.parametrize(
    ("with_config", "node", "problems"),
    [
        (True, NODE, [SELECTOR, ("consumer_mode_mismatch", SRIOV), UMAD, *ZERO]),
        (True, None, [SELECTOR, UMAD]),  # the Node not seen yet: no why zero
        # Without the config HCA is taken for SR-IOV; RDMA (rdma/) stays the shared plugin's.
        (False, NODE, [("consumer_mode_mismatch", HCA), ("consumer_mode_mismatch", SRIOV), UMAD, *ZERO]),
    ],
)
def test_plugin_view_is_computed_once_per_cycle(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    with_config: bool,
    node: ObservedNode | None,
    problems: list[tuple[str, str]],
) -> None:
    """Every check that needs the plugin's devices runs here (each scenario would compute them 2 to 7
    times if each check computed its own), yet they are computed once."""
    config = tmp_path / "config.json"
    if with_config:
        config.write_text(json.dumps(CONFIG))
    source = FileSource(config) if with_config else None
    stage = AllocatableStage(("spidernet.io/", "rdma/"), source, _SeenNode(node))
    state = AgentState(snapshot=without(mlx5_snapshot(), "umad1"))
    calls = _count_calls(monkeypatch, selection.plugin_devices, selection.plugin_view)

    out = stage(state)

    assert [(p.code, p.subject) for p in out.problems] == problems
    if with_config:
        (problem, *_) = out.problems
        assert problem.message.endswith("(ids must be lowercase hex without 0x, as sysfs prints them)")
    assert calls == {"plugin_devices": 1, "plugin_view": 1}


def test_an_invalid_config_is_a_problem_and_the_rest_still_runs(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"configList": []}')
    stage = AllocatableStage(("spidernet.io/", "rdma/"), FileSource(config), _SeenNode(NODE))

    out = stage(AgentState(snapshot=without(mlx5_snapshot(), "umad1")))

    assert out.plugin_config == PluginConfigState(source="file", ref=str(config), loaded=False)
    assert out.selectors == ()
    assert out.problems[0].code == "device_plugin_config_invalid"
    assert out.problems[0].message == f"{config}: configList: no resources configured (the plugin exits)"
    assert [p.code for p in out.problems[1:]] == [
        "consumer_mode_mismatch",
        "consumer_mode_mismatch",
        "missing_umad",
        "zero_allocatable",
        "zero_allocatable",
        "zero_allocatable",
    ]


def test_a_configured_file_that_is_missing_is_a_problem_not_silence(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config.json"
    stage = AllocatableStage(("spidernet.io/",), FileSource(missing), _SeenNode(NODE))
    out = stage(AgentState(snapshot=mlx5_snapshot()))
    assert out.problems[0].code == "device_plugin_config_unreadable" and str(missing) in out.problems[0].message
    assert out.plugin_config == PluginConfigState(source="file", ref=str(missing), loaded=False)
