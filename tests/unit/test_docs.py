"""The README's reference tables stay in sync with the code: every setting (key, environment
variable), every metric (name, type, labels) and every problem code the agent can emit."""

from __future__ import annotations

import re
from pathlib import Path

from agent.publish.metric_specs import SPECS
from agent.settings import SETTINGS

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def table_rows(first_cell: str) -> list[list[str]]:
    """Rows of the README table whose header starts with ``first_cell``."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_configuration_table_matches_settings() -> None:
    rows = table_rows("key (flag")
    assert [(r[0], r[1]) for r in rows] == [(f"`{s.key}`", f"`{s.env}`") for s in SETTINGS]


def test_metrics_table_matches_the_collector() -> None:
    rows = table_rows("metric")
    documented = [(r[0].strip("`"), r[1], tuple(re.findall(r"`([^`]+)`", r[2]))) for r in rows]
    assert documented == [(m.name, m.type, m.labels) for m in SPECS]


def test_every_problem_code_is_documented() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "agent").rglob("*.py"))
    emitted = set(re.findall(r'code="([a-z_]+)"', source))
    emitted |= set(re.findall(r'_os_problem\(\s*"([a-z_]+)"', source))
    emitted |= set(re.findall(r'^READ_ERROR: Final = "([a-z_]+)"', source, re.MULTILINE))
    documented = {r[0].strip("`") for r in table_rows("code")}
    assert emitted, "the scan found no codes"
    assert emitted == documented, (sorted(emitted - documented), sorted(documented - emitted))


def test_every_label_the_agent_emits_is_documented() -> None:
    from dataclasses import replace

    from agent.model import DesiredMode, EnforcementState, NetnsMode
    from agent.publish.labels import desired_labels
    from tests.unit.test_labels import mlx5_snapshot

    prefix = "rdma.spidernet.io/"
    snapshot = mlx5_snapshot()
    ib = replace(
        snapshot,
        devices=tuple(
            replace(d, ports=tuple(replace(p, link_layer="InfiniBand") for p in d.ports)) for d in snapshot.devices
        ),
    )
    enforcement = EnforcementState(desired=DesiredMode.SHARED, live=NetnsMode.SHARED, persisted=None, compliant=True)
    keys = set(desired_labels(snapshot, enforcement, prefix)) | set(desired_labels(ib, enforcement, prefix))
    names = {re.sub(r"^pci-[0-9a-f]{4}-[0-9a-f]{4}", "pci-<vendor>-<device>", k.removeprefix(prefix)) for k in keys}
    labels_doc = (REPO / "docs" / "labels.md").read_text()
    documented = set(re.findall(r"^\| `P ([^`]+)`", labels_doc, re.MULTILINE))
    assert names == documented, (sorted(names - documented), sorted(documented - names))
    for name in names:  # and the README's summary names each of them
        assert f"`{name}`" in README, name
