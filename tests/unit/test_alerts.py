"""Alerts (manifests/components/monitoring/prometheusrule.yaml) and the Grafana dashboard: promtool checks the rules
and runs the unit tests in tests/alerts/ (every alert firing and not firing); every alert explains
itself and links its runbook; and every metric and label the alerts, their tests and the dashboard
use exists in the agent's golden /metrics output (tests/fixtures/metrics/*.prom), so they cannot
drift apart.

promtool (Debian package ``prometheus``) runs when it is on PATH; without it those tests skip with a
reason, except under CI=true or RNA_REQUIRE_PROMTOOL=1, where they fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.host import required_tool

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "components" / "monitoring" / "prometheusrule.yaml"
ALERT_TESTS = REPO / "tests" / "alerts"
GOLDEN = REPO / "tests" / "fixtures" / "metrics"
DASHBOARD = REPO / "dashboards" / "rdma-node-agent.json"
RUNBOOKS = REPO / "docs" / "runbooks"
# Where the runbooks are published: this repository's docs/runbooks on its default branch.
RUNBOOK_BASE = "https://github.com/spidernet-io/rdma-node-agent/blob/main/docs/runbooks/"
RULES_FILE = "rdma-node-agent.rules.yaml"  # the name tests/alerts/*.yaml load
# Labels Prometheus attaches to every series of a target (the ServiceMonitor adds ``node``).
TARGET_LABELS = {"instance", "job", "node", "namespace", "pod", "service", "endpoint", "container"}
PROMETHEUS_SERIES = {"up"}  # written by Prometheus itself, not by the agent
Obj = dict[str, Any]


def rule_groups() -> list[Obj]:
    groups: list[Obj] = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    return groups


def alerts() -> list[Obj]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def alert_tests() -> dict[str, Obj]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(ALERT_TESTS.glob("*.yaml"))}


# ---------------------------------------------------------------------------------------------------
# promtool.


def _promtool() -> str:
    return required_tool("promtool", env="RNA_REQUIRE_PROMTOOL", install="apt-get install prometheus")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a plain rules file, next to copies of the promtool tests."""
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    for path in ALERT_TESTS.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_promtool_checks_the_rules(workdir: Path) -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", RULES_FILE], cwd=workdir, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


@pytest.mark.parametrize("test_file", sorted(alert_tests()))
def test_promtool_unit_tests_pass(workdir: Path, test_file: str) -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", test_file], cwd=workdir, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    outcomes: dict[str, set[bool]] = {}
    for name, document in alert_tests().items():
        assert document["rule_files"] == [RULES_FILE], name
        for group in document["tests"]:
            for case in group.get("alert_rule_test", []):
                outcomes.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    names = {a["alert"] for a in alerts()}
    assert set(outcomes) == names, f"untested: {names - set(outcomes)}, unknown: {set(outcomes) - names}"
    incomplete = {name: seen for name, seen in outcomes.items() if seen != {True, False}}
    assert not incomplete, f"alerts without a firing and a not-firing case: {incomplete}"


# ---------------------------------------------------------------------------------------------------
# Alerts that explain themselves.


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_explains_itself_and_links_its_runbook(alert: Obj) -> None:
    name = alert["alert"]
    assert re.fullmatch(r"Rdma[A-Z][A-Za-z]+", name)
    assert alert["labels"]["severity"] in ("warning", "critical")
    assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}{name}.md"
    runbook = RUNBOOKS / f"{name}.md"
    assert runbook.exists(), f"{runbook} is missing"
    text = runbook.read_text()
    assert text.startswith(f"# {name}\n"), f"{runbook}: the title is the alert's name"
    for section in ("## Meaning", "## Confirm", "## Fix"):
        assert section in text, f"{runbook}: no '{section}' section"
    assert "rdma-node-agent status" in text, f"{runbook}: show how to confirm with the agent's own report"
    assert "for" in alert, f"{name}: alert after a while, not on one bad scrape"


def test_every_runbook_belongs_to_an_alert() -> None:
    names = {a["alert"] for a in alerts()}
    files = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert files == names
    index = (RUNBOOKS / "README.md").read_text()
    assert all(f"({name}.md)" in index for name in names), "docs/runbooks/README.md lists every runbook"


# ---------------------------------------------------------------------------------------------------
# No drift between alerts, dashboard and the agent's real /metrics.


def golden_labels() -> dict[str, set[str]]:
    """Every series name in the golden /metrics files and the label names it carries."""
    files = sorted(GOLDEN.glob("*.prom"))
    assert files, f"no golden /metrics files in {GOLDEN}"
    labels: dict[str, set[str]] = {}
    for path in files:
        for family in text_string_to_metric_families(path.read_text()):
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


GOLDEN_LABELS = golden_labels()
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_METRIC = re.compile(r"\b(rdma_[a-z0-9_]+|up)\b")
_TEMPLATE_QUERY = re.compile(r'query\s+\(?\s*(?:printf\s+)?("(?:[^"\\]|\\.)*"|`[^`]*`)')
_TEMPLATE_LABEL = re.compile(r'(?:\$labels|\.Labels)\.([a-zA-Z_][a-zA-Z0-9_]*)|sortByLabel\s+"([a-zA-Z_]+)"')


def promql_uses(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """(metric → label names in its selectors, label names in by/on/group_left clauses) of a PromQL
    expression (template placeholders ``%q`` count as strings)."""
    expr = expr.replace("%q", '""')
    selectors: dict[str, set[str]] = {}
    for metric, matchers in _SELECTOR.findall(expr):
        selectors.setdefault(metric, set()).update(_MATCHER.findall(_STRING.sub('""', matchers)))
    bare = _STRING.sub('""', expr)
    for metric in _METRIC.findall(_SELECTOR.sub(lambda m: m.group(1), bare)):
        selectors.setdefault(metric, set())
    clauses = {label.strip() for group in _CLAUSE.findall(bare) for label in group.split(",") if label.strip()}
    return selectors, clauses


def _template_queries(text: str) -> Iterator[str]:
    for literal in _TEMPLATE_QUERY.findall(text):
        yield json.loads(literal) if literal.startswith('"') else literal[1:-1]


def _dashboard_queries(node: Any) -> Iterator[str]:
    """Panel targets' ``expr`` and query variables' ``query`` (a data source variable's "query" is the
    data source type, not PromQL)."""
    if isinstance(node, dict):
        if node.get("type") == "datasource":
            return
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from _dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_queries(item)


def all_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query in the alerts, their annotations' templates and the dashboard."""
    for alert in alerts():
        yield f"{alert['alert']}: expr", alert["expr"]
        for key, text in alert["annotations"].items():
            for query in _template_queries(text):
                yield f"{alert['alert']}: {key}", query
    for query in _dashboard_queries(json.loads(DASHBOARD.read_text())):
        yield "dashboard", query


QUERIES = list(all_queries())
ALL_LABELS = set().union(*GOLDEN_LABELS.values()) | TARGET_LABELS


def test_the_drift_check_sees_every_query() -> None:
    places = {where.split(":")[0] for where, _ in QUERIES}
    assert places >= {a["alert"] for a in alerts()} | {"dashboard"}
    assert sum(1 for where, _ in QUERIES if where == "dashboard") >= 10
    assert sum(1 for where, _ in QUERIES if where.endswith(("description", "summary"))) >= 10


@pytest.mark.parametrize(("where", "query"), QUERIES, ids=[f"{w}#{i}" for i, (w, _) in enumerate(QUERIES)])
def test_queries_use_only_real_metrics_and_labels(where: str, query: str) -> None:
    # Grafana's label_values(metric, label) and $variables are not PromQL; read them as if they were.
    query = re.sub(r"label_values\(\s*([^,)]+)\s*,\s*(\w+)\s*\)", r"\1 by (\2)", query)
    query = re.sub(r"\$\{?\w+\}?", '""', query)
    selectors, clauses = promql_uses(query)
    assert selectors, f"{where}: no metric found in {query!r}"
    for metric, labels in selectors.items():
        if metric in PROMETHEUS_SERIES:
            assert labels <= TARGET_LABELS, f"{where}: {metric} with labels {labels}"
            continue
        assert metric in GOLDEN_LABELS, f"{where}: {metric} is not in the agent's /metrics output"
        unknown = labels - GOLDEN_LABELS[metric] - TARGET_LABELS
        assert not unknown, f"{where}: {metric} has no label {unknown}"
    assert clauses <= ALL_LABELS, f"{where}: grouping by unknown labels {clauses - ALL_LABELS}"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_templates_use_only_real_labels(alert: Obj) -> None:
    for key, text in alert["annotations"].items():
        used = {a or b for a, b in _TEMPLATE_LABEL.findall(text)}
        assert used <= ALL_LABELS, f"{alert['alert']} {key}: unknown labels {used - ALL_LABELS}"


@pytest.mark.parametrize("test_file", sorted(alert_tests()))
def test_alert_test_series_look_like_the_agents(test_file: str) -> None:
    for group in alert_tests()[test_file]["tests"]:
        for item in group["input_series"]:
            selectors, _ = promql_uses(item["series"])
            ((metric, labels),) = selectors.items()
            if metric in PROMETHEUS_SERIES:
                continue
            assert metric in GOLDEN_LABELS, f"{test_file}: {metric} is not in the agent's /metrics output"
            assert labels - TARGET_LABELS == GOLDEN_LABELS[metric], f"{test_file}: {item['series']}"


def agent_problem_codes() -> set[str]:
    """Every snake_case string literal in the agent's source: a superset of the problem codes it
    emits (``Problem(code=...)``), enough to catch a runbook or test quoting a code that does not exist."""
    literals: set[str] = set()
    for path in (REPO / "agent").rglob("*.py"):
        literals.update(re.findall(r'"([a-z][a-z0-9]*(?:_[a-z0-9]+)+)"', path.read_text()))
    return literals


def _runbook_codes(text: str) -> set[str]:
    """Codes in the first column of the runbook tables headed "Problem code"."""
    codes: set[str] = set()
    in_table = False
    for line in text.splitlines():
        if line.startswith("| Problem code"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table:
            codes.update(re.findall(r"`([a-z0-9_]+)`", line.split("|")[1]))
    return codes


def test_problem_codes_quoted_by_runbooks_and_tests_exist() -> None:
    known = agent_problem_codes()
    quoted = {"tests": set[str]()}
    for document in alert_tests().values():
        for group in document["tests"]:
            for item in group["input_series"]:
                quoted["tests"].update(re.findall(r'code="([^"]+)"', item["series"]))
    for runbook in sorted(RUNBOOKS.glob("*.md")):
        quoted[runbook.name] = _runbook_codes(runbook.read_text())
    assert quoted["RdmaAllocatableZero.md"] and quoted["RdmaNetnsModeNotCompliant.md"]
    unknown = {where: codes - known for where, codes in quoted.items() if codes - known}
    assert not unknown, f"problem codes the agent never emits: {unknown}"


@pytest.mark.parametrize(
    ("expr", "selectors", "clauses"),
    [
        ("rdma_port_link_up == 0", {"rdma_port_link_up": set()}, set()),
        (
            '(rdma_port_link_up{device="mlx5_0"} == 0) * on (instance, job) group_left (netdev) rdma_port_info',
            {"rdma_port_link_up": {"device"}, "rdma_port_info": set()},
            {"instance", "job", "netdev"},
        ),
        (
            'rdma_char_devices{instance=%q,kind=~"uverbs|rdma_cm"} == 0',
            {"rdma_char_devices": {"instance", "kind"}},
            set(),
        ),
        ('absent(up{job="rdma-node-agent"})', {"up": {"job"}}, set()),
    ],
)
def test_promql_uses(expr: str, selectors: dict[str, set[str]], clauses: set[str]) -> None:
    # rdma_cm inside a label value is a value, not a metric.
    assert promql_uses(expr) == (selectors, clauses)
