"""Rendering charts/rdma-node-agent with Helm's own Go SDK (helm-python-sdk, ctypes, no helm binary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.manifests import REPO, Obj

CHART = REPO / "charts" / "rdma-node-agent"
RELEASE, NAMESPACE = "rdma-node-agent", "rdma-node-agent"


def helm() -> Any:
    """The helm_python module (a test dependency, pinned in pyproject.toml)."""
    import helm_python

    return helm_python


def render(
    values: dict[str, Any] | None = None, *, kube_version: str = "v1.30.0", namespace: str = NAMESPACE
) -> list[Obj]:
    """``helm template`` of the chart: every object, in template order (NOTES.txt left out). The values
    schema is enforced; a template error raises ``helm_python.HelmError``."""
    h = helm()
    from helm_python import _native  # kube_version is only in the native options (helm-python-sdk 0.2.2)

    options = {"name": RELEASE, "namespace": namespace, "kube_version": kube_version, "is_install": True}
    with h.Chart.load(str(CHART)) as chart:
        encoded = json.dumps(values) if values is not None else None
        files: dict[str, str] = json.loads(
            _native.call_string("helm_render", chart._raw(), encoded, json.dumps(options))
        )
    objects: list[Obj] = []
    for name in sorted(files):
        if name.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(files[name]) if doc]
    return objects


def lint(values: dict[str, Any] | None = None, *, kube_version: str = "v1.30.0") -> dict[str, Any]:
    report: dict[str, Any] = helm().lint(str(CHART), values, strict=True, kube_version=kube_version)
    return report


def chart_file(relative: str) -> Path:
    return CHART / relative
