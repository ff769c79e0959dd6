"""Attribute files that are not what sysfs makes (a tree given as the sys root that is not sysfs):
each read ends at once, is bounded, and is a problem about its device, never a hang. The attribute
reader (agent.hostio.read_attribute) spends one read on an ordinary attribute and checks only reads
that do not look like one."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.discover.sysfs import SysfsReader
from agent.hostio import MAX_FILE_BYTES, Refused, read_attribute
from tests.sysfs_fixtures import load_tree


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "rate"
    os.mkfifo(path)
    return path


@pytest.fixture
def writer(fifo: Path) -> Iterator[int]:
    """The FIFO held open by a writer that never writes (O_RDWR: opening does not wait)."""
    fd = os.open(fifo, os.O_RDWR)
    yield fd
    os.close(fd)


def test_an_attribute_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"4: ACTIVE\n")
    assert read_attribute(str(path)) == b"4: ACTIVE\n"


def test_an_empty_regular_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert read_attribute(str(path)) == b""


def test_a_fifo_without_a_writer_is_refused(fifo: Path) -> None:
    with pytest.raises(Refused, match="is a FIFO"):
        read_attribute(str(fifo))


def test_a_fifo_whose_writer_says_nothing_fails_at_once(fifo: Path, writer: int) -> None:
    with pytest.raises(OSError) as info:  # before O_NONBLOCK: blocked forever
        read_attribute(str(fifo))
    assert info.value.errno == errno.EAGAIN


def test_a_fifo_that_was_written_to_gives_what_was_written(fifo: Path, writer: int) -> None:
    """What a planted FIFO holds is read like a planted file would be: bounded, and never a wait."""
    os.write(writer, b"100 Gb/sec (4X EDR)\n")
    assert read_attribute(str(fifo)) == b"100 Gb/sec (4X EDR)\n"


def test_a_link_to_dev_zero_is_refused_after_one_read(tmp_path: Path) -> None:
    path = tmp_path / "node_guid"
    path.symlink_to("/dev/zero")
    with pytest.raises(Refused, match="is a character device"):
        read_attribute(str(path))


def test_a_large_file_is_read_up_to_the_cap_and_refused_beyond(tmp_path: Path) -> None:
    big, huge = tmp_path / "big", tmp_path / "huge"
    big.write_bytes(b"x" * 200_000)
    huge.write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    assert read_attribute(str(big)) == b"x" * 200_000
    with pytest.raises(Refused, match="larger than 1 MiB") as info:
        read_attribute(str(huge))
    assert info.value.errno == errno.EFBIG


def test_a_directory_is_eisdir(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        read_attribute(str(tmp_path))
    assert info.value.errno == errno.EISDIR


def test_a_fifo_as_a_port_attribute_is_a_problem_about_its_device(tmp_path: Path) -> None:
    roots = load_tree("rxe-dummy-veth", tmp_path)
    rate = Path(os.path.realpath(roots.sysfs / "class/infiniband/rxe0")) / "ports/1/rate"
    rate.unlink()
    os.mkfifo(rate)
    devices, problems = SysfsReader(roots).rdma_devices()
    assert [d.name for d in devices] == ["rxe0", "rxe1"]
    assert [(d.name, d.ports[0].rate) for d in devices] == [("rxe0", None), ("rxe1", "10 Gb/sec (1X FDR10)")]
    assert [(p.code, p.subject) for p in problems] == [("sysfs_read_error", "rxe0")]
    assert "ports/1/rate" in problems[0].message and "FIFO" in problems[0].message
