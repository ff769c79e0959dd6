"""The `status` and `run --once` commands end to end on this machine (a kernel without RDMA netlink):
a clear "no RDMA netlink" report, exit 0, JSON valid against the shipped schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from agent.cli import main
from agent.discover.rdma_netlink import RdmaNetlink
from agent.errors import NetlinkError
from agent.publish.status import load_schema
from tests.kube_standin import KubeStandIn
from tests.sysfs_fixtures import load_tree

DEVICE_PLUGIN = Path(__file__).resolve().parents[1] / "fixtures" / "deviceplugin"


@pytest.fixture(scope="module", autouse=True)
def _no_rdma_here() -> None:
    try:
        RdmaNetlink().close()
    except NetlinkError:
        return
    pytest.skip("this kernel has RDMA netlink; these tests cover the RDMA-less case (the VM tests cover the other)")


def test_status_text_says_no_rdma_netlink(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"], env={}) == 0
    out = capsys.readouterr().out
    assert "RDMA netlink: unavailable" in out and "EPROTONOSUPPORT" in out
    assert "no RDMA netlink: ib_core is not loaded" in out
    assert "RDMA devices: none" in out
    assert "Node condition RDMAReady: False (NoRdmaNetlink)\n  rdma_device_present: no RDMA device" in out


def test_status_json_is_valid_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json"], env={}) == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, load_schema())
    assert (doc["netlink_available"], doc["devices"], doc["netns_mode"]) == (False, [], None)
    assert doc["enforcement"]["desired"] == "unmanaged" and doc["enforcement"]["plan"] == []
    assert [p["code"] for p in doc["problems"]] == ["no_rdma_netlink"]
    assert doc["condition"]["status"] == "False" and doc["condition"]["reason"] == "NoRdmaNetlink"


def test_status_plan_is_a_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "etc/modprobe.d/ib_core.conf"
    roots = ["--host-root", str(tmp_path), "--sys-root", "/sys", "--proc-root", "/proc", "--dev-root", "/dev"]
    argv = ["status", "--json", "--netns-mode", "exclusive", "--modprobe-file", "/etc/modprobe.d/ib_core.conf", *roots]
    assert main(argv, env={}) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [a["action"] for a in doc["enforcement"]["plan"]] == ["write_persisted"]
    assert doc["enforcement"]["dry_run"] is True
    assert not target.exists()  # status never changes the host


def test_run_once_persists_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "etc/modprobe.d").mkdir(parents=True)
    argv = [
        "run",
        "--once",
        "--no-kubernetes",
        "--netns-mode",
        "shared",
        "--host-root",
        str(tmp_path),
        "--sys-root",
        "/sys",
        "--proc-root",
        "/proc",
        "--dev-root",
        "/dev",
    ]
    assert main(argv, env={}) == 0
    doc = json.loads(capsys.readouterr().out)
    text = (tmp_path / "etc/modprobe.d/ib_core.conf").read_text()
    assert text.splitlines()[-1] == "options ib_core netns_mode=1"
    assert doc["enforcement"]["compliant"] is True  # no RDMA here: nothing to switch at runtime


def test_console_script_and_module_entry_points() -> None:
    for argv in (
        [sys.executable, "-m", "agent", "status"],
        [str(Path(sys.executable).parent / "rdma-node-agent"), "status"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "RDMA netlink: unavailable" in done.stdout


def test_status_shows_allocatable_and_why_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """status reads the Node once (real client → API stand-in), shows its RDMA resources and explains
    the zero: the recorded Soft-RoCE node has RDMA devices but none the plugin's 15b3:1017 selects."""
    roots = load_tree("rxe-dummy-veth", tmp_path)
    resource = "spidernet.io/hca_shared_devices"
    with KubeStandIn() as api:
        api.put_node("gpu-1", capacity={resource: "0"}, allocatable={resource: "0"})
        argv = [
            "status",
            "--json",
            "--host-root",
            str(roots.root),
            "--sys-root",
            str(roots.sysfs),
            "--dev-root",
            str(roots.devfs),
            "--proc-root",
            str(tmp_path / "no-proc"),
            "--kubeconfig",
            str(api.write_kubeconfig(tmp_path / "kubeconfig")),
            "--node-name",
            "gpu-1",
            "--device-plugin-config",
            str(DEVICE_PLUGIN / "spiderpool-default.json"),
        ]
        assert main(argv, env={}) == 0
        assert api.count("patch") == 0 and api.count("create") == 0  # status never writes
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, load_schema())
    assert doc["resources"] == [{"name": resource, "capacity": 0, "allocatable": 0}]
    assert [(s["resource"], s["matched"]) for s in doc["selectors"]] == [(resource, 0)]
    problems = {p["code"]: p["message"] for p in doc["problems"]}
    assert "1017" in problems["selector_matches_nothing"]
    assert resource in problems["zero_allocatable"]
