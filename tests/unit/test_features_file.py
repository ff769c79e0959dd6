"""The NFD features.d publisher: the file format node-feature-discovery's local source reads, atomic
replacement (a failed write leaves the old file), no write when nothing changed, the expiry lease."""

from __future__ import annotations

import datetime as dt
import errno
import os
from pathlib import Path

import pytest

from agent.errors import PublishError
from agent.publish.features_file import (
    HEADER,
    MAX_FILE_SIZE,
    parse_features,
    render_features,
    write_features,
)

P = "rdma.spidernet.io/"
LABELS = {P + "ready": "true", P + "capable": "true", P + "netns-mode": "shared", P + "device-count": "2"}
NOW = dt.datetime(2025, 7, 20, 8, 26, 40, tzinfo=dt.UTC).timestamp()


def test_render_is_sorted_key_value_lines() -> None:
    assert render_features(LABELS) == HEADER + (
        f"{P}capable=true\n{P}device-count=2\n{P}netns-mode=shared\n{P}ready=true\n"
    )


def test_render_with_expiry_directive() -> None:
    text = render_features({P + "ready": "true"}, expires_at=NOW + 600)
    # NFD parses the directive with time.RFC3339 (source/local/local.go parseDirectives).
    assert text.splitlines()[1] == "# +expiry-time=2025-07-20T08:36:40Z"
    assert parse_features(text) == ({P + "ready": "true"}, NOW + 600)


@pytest.mark.parametrize(
    ("text", "labels", "expiry"),
    [
        ("", {}, None),
        ("# comment\n\nvendor.io/a=1\n", {"vendor.io/a": "1"}, None),
        ("vendor.io/flag\n", {"vendor.io/flag": "true"}, None),  # a bare key means true
        ("  vendor.io/a=x=y  \n", {"vendor.io/a": "x=y"}, None),  # split at the first '='
        ("vendor.io/a=1\nvendor.io/a=2\n", {"vendor.io/a": "2"}, None),
        ("# +expiry-time=2025-07-20T08:26:40Z\na/b=1\n", {"a/b": "1"}, NOW),
        ("# +expiry-time=garbage\na/b=1\n", {"a/b": "1"}, None),
    ],
)
def test_parse_features(text: str, labels: dict[str, str], expiry: float | None) -> None:
    assert parse_features(text) == (labels, expiry)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({P + "bad key": "1"}, "invalid key"),
        ({P + "x": "two\nlines"}, "invalid value"),  # would inject a second line
        ({P + f"k{i:05d}": "v" * 63 for i in range(1000)}, "exceeds NFD's limit of 65536"),
    ],
)
def test_render_refuses_what_nfd_would_misread(labels: dict[str, str], message: str) -> None:
    with pytest.raises(PublishError, match=message):
        render_features(labels)
    assert MAX_FILE_SIZE == 65536


def test_write_creates_directory_and_file(tmp_path: Path) -> None:
    path = tmp_path / "features.d" / "rdma-node-agent"
    assert write_features(path, LABELS) is True
    assert path.read_text() == render_features(LABELS)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["rdma-node-agent"]  # no temporary file left


def test_unchanged_rewrite_leaves_mtime(tmp_path: Path) -> None:
    path = tmp_path / "rdma-node-agent"
    assert write_features(path, LABELS) is True
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # a distinctive mtime any rewrite would change
    inode = path.stat().st_ino
    assert write_features(path, dict(reversed(list(LABELS.items())))) is False  # same labels, other order
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert path.stat().st_ino == inode


def test_changed_labels_are_written(tmp_path: Path) -> None:
    path = tmp_path / "rdma-node-agent"
    write_features(path, LABELS)
    assert write_features(path, {**LABELS, P + "ready": "false"}) is True
    assert parse_features(path.read_text())[0][P + "ready"] == "false"
    assert write_features(path, {}) is True
    assert path.read_text() == HEADER  # NFD then removes the labels it published for us


def test_hand_edited_file_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "rdma-node-agent"
    path.write_text(f"{P}ready=true\n")
    assert write_features(path, {P + "ready": "true"}) is True
    assert path.read_text().startswith(HEADER)


def test_failed_rename_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rdma-node-agent"
    write_features(path, LABELS)
    old = path.read_text()

    def fail(src: object, dst: object, **_dir_fds: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "rename", fail)  # renameat, inside the directory's descriptor
    with pytest.raises(PublishError, match="Read-only file system; the old file is intact") as info:
        write_features(path, {P + "ready": "false"})
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EROFS
    assert path.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["rdma-node-agent"]  # the dot-file was cleaned up


def test_failed_fsync_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rdma-node-agent"
    write_features(path, LABELS)
    old = path.read_text()

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(PublishError, match="Input/output error"):
        write_features(path, {P + "ready": "false"})
    assert path.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["rdma-node-agent"]


def test_unwritable_directory_raises_publish_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(PublishError, match=f"cannot write {blocker}/features.d/x"):
        write_features(blocker / "features.d" / "x", LABELS)


@pytest.mark.parametrize(
    ("elapsed", "written"),
    [
        (0, False),
        (299, False),  # more than half of the 600 s lease left
        (301, True),  # less than half left: renew
        (700, True),  # expired
    ],
)
def test_expiry_lease_is_renewed_at_half_life(tmp_path: Path, elapsed: float, written: bool) -> None:
    path = tmp_path / "rdma-node-agent"
    assert write_features(path, LABELS, ttl_seconds=600, now=NOW) is True
    assert write_features(path, LABELS, ttl_seconds=600, now=NOW + elapsed) is written
    expected = NOW + elapsed + 600 if written else NOW + 600
    assert parse_features(path.read_text()) == (LABELS, expected)


def test_expiry_added_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "rdma-node-agent"
    write_features(path, LABELS)
    assert write_features(path, LABELS, ttl_seconds=600, now=NOW) is True  # no directive yet
    assert write_features(path, LABELS) is True  # the lease is no longer wanted
    assert parse_features(path.read_text())[1] is None


def test_write_rejects_bad_ttl(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        write_features(tmp_path / "x", LABELS, ttl_seconds=0)


def test_the_labels_stage_keeps_a_lease_on_the_features_file(tmp_path: Path) -> None:
    # NFD drops labels whose # +expiry-time has passed: the agent's lease makes an uninstalled or hung
    # agent's labels vanish, and a running agent renews it before it lapses.
    from agent.cli import features_lease
    from agent.config import Config
    from agent.model import AgentState
    from agent.publish.stages import LabelsStage
    from tests.unit.test_labels import mlx5_snapshot

    now = [NOW]
    path = tmp_path / "etc/kubernetes/node-feature-discovery/features.d/rdma-node-agent"
    lease = features_lease(Config(interval_seconds=30.0))
    assert (lease, features_lease(Config(interval_seconds=3600.0))) == (600.0, 4 * 3600.0)
    stage = LabelsStage(P, 60.0, features_file=path, features_ttl=lease, clock=lambda: now[0], timer=lambda: now[0])
    state = AgentState(snapshot=mlx5_snapshot())
    expiries = []
    for elapsed in (0, 100, 299, 301, 500, 602):
        now[0] = NOW + elapsed
        stage(state)
        expiries.append(parse_features(path.read_text())[1])
    # Renewed each time less than half of it is left: never lapses while the agent runs.
    assert expiries == [NOW + 600] * 3 + [NOW + 301 + 600] * 2 + [NOW + 602 + 600]
