"""The benchmark code (benchmarks/): its statistics, the synthetic node (netlink replies rebuilt from
recorded messages byte for byte, the generated sysfs tree as the agent reads it), and one
``python -m benchmarks.run --quick --no-vm`` producing the table with the right rows. No timings
are asserted: speed is what the benchmark reports, not what a unit test checks."""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.discover.rdma_netlink import CMD_PORT_GET, FLAGS_DUMP, RdmaNetlink, decode
from agent.discover.snapshot import take_snapshot
from agent.model import NetnsMode
from benchmarks import cache_layers, run, stats
from benchmarks.report import Row, fmt
from benchmarks.synth import (
    NETLINK_FIXTURES,
    SynthExchange,
    Templates,
    build_node,
    layout,
    pack,
    read_all,
    rebuild,
    recorded,
    split,
)

KERNELS = sorted(p.name for p in NETLINK_FIXTURES.iterdir() if p.is_dir())


def header(length: int) -> bytes:
    """An nlmsghdr of a GET reply (type 0x1401, NLM_F_MULTI, seq 1) claiming ``length`` bytes."""
    return struct.pack("=IHHII", length, 0x1401, 2, 1, 0)


# --- statistics -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [
        ([3.0, 1.0, 2.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([float(i) for i in range(1, 101)], 99, 99.01),
        ([7.0], 99, 7.0),
    ],
)
def test_percentile(samples: list[float], q: float, expected: float) -> None:
    assert stats.percentile(samples, q) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("xs", "ys", "slope", "intercept", "r2"),
    [
        ([1, 2, 3], [3, 5, 7], 2.0, 1.0, 1.0),
        ([0, 10], [5, 5], 0.0, 5.0, 1.0),
        ([1, 2, 3, 4], [1, 3, 2, 4], 0.8, 0.5, 0.64),
    ],
)
def test_linear_fit(xs: list[float], ys: list[float], slope: float, intercept: float, r2: float) -> None:
    fit = stats.linear_fit(xs, ys)
    assert (fit.slope, fit.intercept, fit.r_squared) == pytest.approx((slope, intercept, r2))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: stats.median([]), "median of no samples"),
        (lambda: stats.percentile([1.0], 101), "within 0..100"),
        (lambda: stats.linear_fit([1], [1]), "at least two"),
        (lambda: stats.linear_fit([2, 2], [1, 3]), "distinct x"),
        (lambda: stats.repeat(lambda: None, min_repeats=0, max_repeats=1, min_seconds=0), "min_repeats"),
    ],
)
def test_statistics_reject_bad_input(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_repeat_counts_calls_with_an_injected_timer() -> None:
    ticks = iter(float(i) for i in range(100))
    calls: list[int] = []
    samples = stats.repeat(
        lambda: calls.append(1), min_repeats=2, max_repeats=10, min_seconds=3.0, timer=lambda: next(ticks)
    )
    assert samples == [1.0, 1.0, 1.0] and len(calls) == 3  # each call "took" 1 s; 3 s reached after 3


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (12.345, "ms", "12.3 ms"),
        (1790.2, "ms", "1,790 ms"),
        (0.0547, "%", "0.0547 %"),
        (120.0, "/h", "120/h"),
        (3.0, "count", "3"),
        (1.77, "×", "1.77"),
    ],
)
def test_fmt(value: float, unit: str, text: str) -> None:
    assert fmt(value, unit) == text


@pytest.mark.parametrize(
    ("ours", "baseline", "ratio", "cells"),
    [
        (5.0, 20.0, 0.25, ("b", "s", "5 ms", "20 ms", "0.25×", "≤ 1 ms", "**no**")),
        (None, None, None, ("b", "s", "skipped: --no-vm", "—", "—", "≤ 1 ms", "—")),
        (1.0, 0.0, None, ("b", "s", "1 ms", "0 ms", "—", "≤ 1 ms", "yes")),
    ],
)
def test_row_cells(ours: float | None, baseline: float | None, ratio: float | None, cells: tuple[str, ...]) -> None:
    met = None if ours is None else ours <= 1.0
    row = Row(
        benchmark="b",
        size="s",
        unit="ms",
        ours=ours,
        baseline=baseline,
        target="≤ 1 ms",
        met=met,
        note="--no-vm" if ours is None else "",
    )
    assert row.ratio == ratio
    assert row.cells() == cells


# --- the synthetic node -------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", ["dev_get_dump", "port_get_dump_rxe0", "sys_get_doit", "sys_set_shared_ok"])
def test_recorded_messages_repack_byte_for_byte(kernel: str, case: str) -> None:
    messages = recorded(case, kernel)
    for message in messages:
        assert pack(split(message)) == message
    data = [m for m in messages if split(m).payload is None]
    assert [rebuild(split(m), {}) for m in data] == data


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (header(20) + bytes.fromhex("0000aaaa"), "attribute 43690 claims 0 bytes"),
        (header(22) + bytes.fromhex("0800010001"), "claims 22 bytes, has 21"),
        (header(22) + bytes.fromhex("040001000000"), "2 stray bytes"),
    ],
)
def test_split_rejects_malformed_messages(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split(raw)


def test_rebuild_rejects_control_messages_and_missing_attributes() -> None:
    done = split(recorded("dev_get_dump")[-1])
    assert done.payload is not None
    with pytest.raises(ValueError, match="control message"):
        rebuild(done, {})
    with pytest.raises(ValueError, match="no attribute"):
        rebuild(split(recorded("sys_get_doit")[0]), {2: "x"})


@pytest.mark.parametrize("kernel", KERNELS)
def test_rebuilt_device_decodes_with_new_values(kernel: str) -> None:
    template = Templates.load(kernel).device
    raw = rebuild(template, {1: 41, 2: "mlx5_41", 6: 0x0C42A1030012ABCD, 7: 0x0C42A1030012ABCD})
    (attrs,) = decode(raw)
    original = decode(recorded("dev_get_dump", kernel)[0])[0]
    assert attrs == {
        **original,
        "DEV_INDEX": 41,
        "DEV_NAME": "mlx5_41",
        "NODE_GUID": 0x0C42A1030012ABCD,
        "SYS_IMAGE_GUID": 0x0C42A1030012ABCD,
    }


@pytest.mark.parametrize(
    ("count", "per_pf", "pfs", "last"),
    [
        (1, 128, ["0000:3b:00.0"], "0000:3b:00.0"),
        (3, 128, ["0000:3b:00.0"], "0000:3b:00.3"),
        (130, 128, ["0000:3b:00.0", "0000:3c:00.0"], "0000:3c:00.2"),
        (2, 1, ["0000:3b:00.0", "0000:3c:00.0"], "0000:3c:00.0"),
    ],
)
def test_layout(count: int, per_pf: int, pfs: list[str], last: str) -> None:
    functions = layout(count, per_pf)
    assert [f.address for f in functions if f.is_pf] == pfs
    assert functions[-1].address == last
    assert len({f.address for f in functions}) == len({f.guid for f in functions}) == count


def test_generated_node_snapshots_as_the_synthesized_netlink_says(tmp_path: Path) -> None:
    node = build_node(tmp_path, 10)
    exchange = SynthExchange(node.functions)
    snapshot = take_snapshot(node.roots, netlink=exchange.factory)
    assert snapshot.problems == ()
    assert snapshot.netlink_available and snapshot.netns_mode is NetnsMode.SHARED
    assert [d.name for d in snapshot.devices] == [f"mlx5_{i}" for i in range(10)]
    vf = snapshot.device("mlx5_3")
    assert vf is not None
    assert (vf.index, vf.pci_address, vf.node_guid, vf.fw_version) == (
        3,
        "0000:3b:00.4",
        "0c42:a103:003b:0003",
        "22.36.1010",
    )
    assert vf.char_devices == ("umad3", "uverbs3")
    (port,) = vf.ports
    assert (port.state, port.physical_state, port.netdev, port.netdev_index, port.link_layer) == (
        "ACTIVE",
        "LINK_UP",
        "ens1f0v2",
        7,
        "Ethernet",
    )
    pf = snapshot.pci("0000:3b:00.0")
    assert pf is not None
    facts = (pf.vendor, pf.device, pf.driver, pf.sriov_totalvfs, pf.sriov_numvfs)
    assert facts == ("15b3", "101d", "mlx5_core", 127, 9)
    assert pf.virtfns[:2] == ("0000:3b:00.2", "0000:3b:00.3") and len(pf.virtfns) == 9
    last_vf = snapshot.pci("0000:3b:01.2")
    assert last_vf is not None and last_vf.physfn == "0000:3b:00.0"
    assert read_all(node) > 0


def test_each_cache_layer_switched_off_gives_the_same_snapshot(tmp_path: Path) -> None:
    # benchmarks/cache_layers.py times the snapshot without one layer: that snapshot must be the same.
    node = build_node(tmp_path, 3, per_pf=2)
    exchange = SynthExchange(node.functions)
    cold = replace(take_snapshot(node.roots, netlink=exchange.factory), taken_at=0.0)
    for layer in cache_layers.LAYERS:
        cache = cache_layers.without(layer)
        for _ in range(3):
            assert replace(take_snapshot(node.roots, netlink=exchange.factory, cache=cache), taken_at=0.0) == cold
    assert [row[0] for row in cache_layers.measure(2, ["rdma", "MergeMemo"], rounds=1)] == ["rdma", "MergeMemo"]


def test_synth_exchange_answers_like_the_kernel(tmp_path: Path) -> None:
    node = build_node(tmp_path, 3)
    exchange = SynthExchange(node.functions)
    with RdmaNetlink(exchange=exchange) as sock:
        assert [d.name for d in sock.devices()] == ["mlx5_0", "mlx5_1", "mlx5_2"]
        assert [p.netdev for p in sock.ports(2)] == ["ens1f0v1"]
        assert sock.system().netns_mode is NetnsMode.SHARED
        sock.set_netns_mode(NetnsMode.SHARED)
    assert exchange.calls == 4  # GET dump, PORT_GET dump, SYS_GET, SYS_SET
    with pytest.raises(ValueError, match="unknown device index"):
        exchange(CMD_PORT_GET, [("DEV_INDEX", 99)], FLAGS_DUMP)


# --- the whole command, tiny ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "latest.md"
    code = run.main(["--quick", "--no-vm", "--out", str(out)])
    return code, out.read_text(), json.loads(out.with_suffix(".json").read_text())


def test_quick_run_succeeds_and_saves_both_files(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    code, markdown, data = quick_run
    assert code == 0, markdown
    assert "| benchmark | size | ours | baseline | ratio | target | met? |" in markdown
    assert set(data["machine"]) >= {"nproc", "cpu_model", "kernel", "python"}
    assert set(data["load"]) >= {"load_average_before", "load_average_after", "cpu_busy_cores_others"}
    assert data["command"] == "python -m benchmarks.run --quick --no-vm --out " + data["command"].split("--out ")[1]


def test_quick_run_has_the_right_rows(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    _, _, data = quick_run
    plan = run.Plan.quick()
    rows = [(r["benchmark"], r["size"]) for r in data["rows"]]
    by_benchmark: dict[str, list[str]] = {}
    for benchmark, size in rows:
        by_benchmark.setdefault(benchmark, []).append(size)
    assert list(by_benchmark) == [
        "Snapshot in QEMU (vs `rdma -j link show`)",
        "Snapshot, no kernel (vs bare read loop)",
        "Memory (vs node_exporter)",
        "CPU (vs node_exporter)",
        "/metrics latency (vs /healthz, same load)",
        "Kubernetes API requests (vs naive poller)",
        "Kubernetes writes under a flapping port (vs writing every cycle)",
        "Hostile clients (vs the same process, same run)",
    ]
    hostile = by_benchmark["Hostile clients (vs the same process, same run)"]
    assert [s.split(",")[0].split(" (")[0] for s in hostile] == [
        "8 devices",
        "8 devices",
        "/healthz p99 during that flood",
        f"/healthz p99 while {plan.idle} connections open at full speed",
    ]
    assert by_benchmark["Snapshot in QEMU (vs `rdma -j link show`)"] == [f"{n} rxe" for n in plan.vm_sizes]
    scale_sizes = by_benchmark["Snapshot, no kernel (vs bare read loop)"]
    assert scale_sizes[:3] == ["1 function, steady state", "8 functions, steady state", "16 functions, steady state"]
    assert scale_sizes[3].startswith("per function: slope over 3 sizes") and scale_sizes[4] == "t(16) / t(8)"
    assert len(by_benchmark["Memory (vs node_exporter)"]) == 5
    assert [s.split(", ", 1)[1] for s in by_benchmark["CPU (vs node_exporter)"]] == [
        "per reconcile",
        "per /metrics scrape",
        "% of a core at 30 s",
    ]
    floor = ["p99"] if shutil.which("prometheus-node-exporter") or shutil.which("node_exporter") else []
    assert [s.rsplit(", ", 1)[1] for s in by_benchmark["/metrics latency (vs /healthz, same load)"]] == [
        "p50",
        "p99",
        "p50",
        "p99",
        f"errors of {2 * plan.scrapers * plan.per_scraper}",
        *floor,
        "p50",
    ]
    assert [s.split(",")[0] for s in by_benchmark["Kubernetes API requests (vs naive poller)"]] == [
        "label patches/h",
        "status patches/h (between heartbeats)",
        "events/h (create + patch)",
        "polls (GET/LIST)/h",
        "all requests/h",
    ]
    flapping = by_benchmark["Kubernetes writes under a flapping port (vs writing every cycle)"]
    fast, slow = " port down/up every cycle (30 s)", " port down/up every 2 min"
    assert [s.split(",")[:2] for s in flapping] == [
        ["status patches/h", fast],
        ["events/h (create + patch)", fast],
        ["status patches/h", slow],
        ["events/h (create + patch)", slow],
    ]


def test_quick_run_values(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    _, markdown, data = quick_run
    rows = {(r["benchmark"], r["size"]): r for r in data["rows"]}
    for (benchmark, _), row in rows.items():
        if benchmark.startswith("Snapshot in QEMU"):
            assert row["ours"] is None and row["note"] == "--no-vm" and row["met"] is None
        elif row["target"] != "—":
            assert row["ours"] is not None and row["met"] in (True, False), row
    kube = [r for r in data["rows"] if r["benchmark"].startswith("Kubernetes API")]
    # The naive agent per 30 s: GET, PATCH labels, PATCH status, POST an event.
    assert [r["baseline"] for r in kube] == [120.0, 120.0, 120.0, 120.0, 480.0]
    assert [r["ours"] for r in kube[:4]] == [0.0] * 4, "the agent wrote to or polled the API server in steady state"
    flapping = [r for r in data["rows"] if r["benchmark"].startswith("Kubernetes writes")]
    assert all(r["met"] for r in flapping), flapping  # within the bounds of the design
    assert flapping[0]["ours"] <= 1 and flapping[1]["ours"] == 0  # faster than the hold: nothing but a heartbeat
    errors = next(r for r in data["rows"] if r["size"].endswith("errors of 20"))
    assert errors["ours"] == 0.0 and errors["baseline"] == 0.0
    assert [c["n"] for c in data["curve"]] == [1, 8, 16]
    assert "skipped: --no-vm" in markdown and "Notes:" in markdown


def test_unknown_benchmark_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--only", "scale,nope"])
    assert exit_info.value.code == 2
    assert "unknown benchmark(s) nope" in capsys.readouterr().err
