"""Fixtures shared by the unit tests that talk to the kube-apiserver stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.publish.kube.client import load_api_client
from tests.kube_standin import KubeStandIn


@pytest.fixture
def api_client(api: KubeStandIn, tmp_path: Path) -> Iterator[Any]:
    """The real kubernetes client, configured for the ``api`` stand-in of the test's module."""
    client = load_api_client(api.write_kubeconfig(tmp_path / "kubeconfig"))
    yield client
    client.close()
