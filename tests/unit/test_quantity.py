"""Kubernetes quantities as device counts, and the Node's RDMA extended resources
(agent/diagnose/quantity.py)."""

from __future__ import annotations

import pytest

from agent.diagnose.quantity import parse_quantity, resources_from_node
from agent.model import ResourceAmount
from tests.deviceplugin_fixtures import HCA, SRIOV


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500", 500),
        ("0", 0),
        (" 8 ", 8),
        ("+3", 3),
        ("-0", 0),
        ("1k", 1000),
        ("1.5k", 1500),
        ("2Ki", 2048),
        ("1Mi", 1048576),
        ("1e3", 1000),
        ("1E2", 100),
        ("10e-1", 1),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),  # beyond int64
        ("1e40", None),
        ("500m", None),  # a fraction is no device count
        ("1.5", None),
        ("-1", None),
        ("", None),
        ("k", None),
        ("1 k", None),
        ("1KB", None),
        ("abc", None),
    ],
)
def test_parse_quantity(text: str, value: int | None) -> None:
    assert parse_quantity(text) == value


def test_resources_from_node_seed_example() -> None:
    """The seed guide's SR-IOV node: the shared plugin's resource is 0, the VFs are 8."""
    capacity = {
        "cpu": "56",
        "memory": "131779740Ki",
        HCA: "0",
        SRIOV: "8",
        "rdma/hca_shared_devices_a": "1k",
        "nvidia.com/gpu": "8",
    }
    allocatable = {"cpu": "56", HCA: "0", SRIOV: "8", "spidernet.io/odd": "500m"}
    assert resources_from_node(capacity, allocatable, ("spidernet.io/", "rdma/")) == (
        ResourceAmount(name="rdma/hca_shared_devices_a", capacity=1000, allocatable=None),
        ResourceAmount(name=HCA, capacity=0, allocatable=0),
        ResourceAmount(name=SRIOV, capacity=8, allocatable=8),
        ResourceAmount(name="spidernet.io/odd", capacity=None, allocatable=None),
    )
    assert resources_from_node(capacity, allocatable, ()) == ()
