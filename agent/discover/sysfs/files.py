"""The low-level, safe reads every sysfs reader uses: attribute files, listings, links.

A missing optional file is None, not an error; other failures are gathered per device in an
:class:`Errors` and become one :class:`~agent.model.Problem` (code ``sysfs_read_error``) about that
device, so one odd device never blanks the rest (:func:`each`). A device that vanishes between
listing and reading is left out quietly. Attribute files are read with
:func:`agent.hostio.read_attribute` (non-blocking, regular files only, capped).

pathlib costs a Path object and several calls per step; the readers take thousands of steps per
cycle, so these use str paths and ``os`` calls (the "noqa: PTH" below), each in one place.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Final, TypeVar

from agent.config import HostRoots
from agent.discover.sysfs.parse import natural_key, parse_pci_address
from agent.hostio import kernel_text, read_attribute
from agent.model import Problem

logger = logging.getLogger(__name__)

T = TypeVar("T")

READ_ERROR: Final = "sysfs_read_error"
_VIRTIO: Final = re.compile(r"^virtio\d+$")


class Errors:
    """Read errors of one device, gathered into one Problem so one bad file costs one line.
    ``missing``: some read found no file (optional, or the device is going away)."""

    __slots__ = ("items", "missing")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.missing = False

    def add(self, what: str, err: Exception) -> None:
        if isinstance(err, OSError):
            name = errno.errorcode.get(err.errno or 0, "error")
            self.items.append(f"{what}: {name} ({err.strerror})")
        else:
            self.items.append(f"{what}: {err}")

    def problem(self, subject: str, kind: str) -> Problem | None:
        if not self.items:
            return None
        return Problem(
            code=READ_ERROR,
            message=f"cannot read sysfs for {kind} {subject}: " + "; ".join(self.items),
            subject=subject,
        )


def exists(path: str) -> bool:
    return os.path.exists(path)  # noqa: PTH110 - str paths in the hot path, see above


def mode(path: str) -> int:
    return os.stat(path).st_mode  # noqa: PTH116 - str paths in the hot path, see above


def readlink(path: str) -> str:
    return os.readlink(path)  # noqa: PTH115 - str paths in the hot path, see above


def inode(path: str) -> int | None:
    """The inode number of a directory entry itself (not of what a link points at); None if absent."""
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def gone(path: str) -> bool:
    return not exists(path)


def read_bytes(path: str) -> bytes:
    """One attribute file: O_NONBLOCK, regular files only, capped (:func:`agent.hostio.read_attribute`)."""
    return read_attribute(path)


def read_attr(
    path: str, errors: Errors, what: str, *, einval_is_empty: bool = False, optional: bool = False
) -> str | None:
    """Text of one attribute file; None when it does not exist. Other failures are recorded.
    ``optional``: an attribute only some drivers have (mlx5's ``hca_type``), whose absence says
    nothing about the device going away (so it does not set ``errors.missing``)."""
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        errors.missing = errors.missing or not optional
        return None
    except OSError as err:
        if einval_is_empty and err.errno == errno.EINVAL:
            return None
        errors.add(what, err)
        return None
    return kernel_text(data)


def parsed(path: str, parse: Callable[[str], T], errors: Errors, what: str, *, optional: bool = False) -> T | None:
    """One attribute file through ``parse``; None when it is missing, unreadable or unparsable."""
    text = read_attr(path, errors, what, optional=optional)
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as err:
        errors.add(what, err)
        return None


def scan(path: str) -> dict[str, int]:
    """Entry names → inode numbers, in listing order; {} when the directory does not exist. The
    inode numbers are getdents' (no stat per entry)."""
    try:
        with os.scandir(path) as entries:
            return {entry.name: entry.inode() for entry in entries}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def listing(path: str) -> list[str]:
    """Entry names, naturally sorted; [] when the directory does not exist (not an error)."""
    try:
        with os.scandir(path) as entries:
            return sorted((entry.name for entry in entries), key=natural_key)
    except (FileNotFoundError, NotADirectoryError):
        return []


def scan_class(roots: HostRoots, path: str, problems: list[Problem]) -> dict[str, int]:
    """A top-level directory's entries (``class/infiniband``, ``class/net``); a directory that exists
    but cannot be listed is a problem about the whole class, not a crash."""
    try:
        return scan(path)
    except OSError as err:
        shown = roots.display(Path(path))
        problems.append(Problem(code=READ_ERROR, message=f"cannot list {shown}: {err.strerror}", subject=shown))
        return {}


def link_name(path: str, errors: Errors | None = None) -> str | None:
    """Basename of a symlink's target (``driver``, ``physfn``), or None when there is no link. A link
    that does not exist marks ``errors`` missing (an unbound driver, or a device going away)."""
    try:
        target = readlink(path)
    except OSError as err:  # no such file, or not a symlink (EINVAL)
        if errors is not None and isinstance(err, FileNotFoundError):
            errors.missing = True
        return None
    name = target.rstrip("/").rpartition("/")[2]
    return name if name not in ("", ".") else PurePosixPath(target).name


def pci_of(device_link: str) -> str | None:
    """The PCI function behind a ``device`` link: itself when it points at one, or its parent when it
    points at a virtio device (virtio-net: netdev → virtioN → PCI function). Other buses (USB,
    auxiliary) give None: their nearest PCI ancestor is a controller, not the NIC.

    No realpath: sysfs links are relative and end in the name of the device they point at
    (kernfs_get_target_path() writes ``../../../0000:3b:00.0``), so one readlink answers. A virtio
    target (whose parent is wanted) or a link that does not end in a name (``../..``, as
    tools/capture_sysfs.py shortens them) is worked out with path arithmetic from the real directory
    of the link (:func:`real_dir`). At most two links are read, so a loop or garbage costs nothing
    and names no PCI function."""
    try:
        target = readlink(device_link)
    except OSError:  # no such file, or not a symlink (EINVAL)
        return None
    name = posixpath.basename(posixpath.normpath(target))
    if parse_pci_address(name):
        return name
    if name not in ("", ".", "..") and not _VIRTIO.match(name):
        return None
    resolved = posixpath.normpath(posixpath.join(real_dir(posixpath.dirname(device_link)), target))
    name = posixpath.basename(resolved)
    if parse_pci_address(name):
        return name
    if _VIRTIO.match(name):
        parent = posixpath.basename(posixpath.dirname(resolved))
        return parent if parse_pci_address(parent) else None
    return None


def real_dir(path: str) -> str:
    """Where a sysfs directory entry really is: ``class/net/eth0`` is a link (one hop, relative) to
    ``devices/…/net/eth0``; a directory that is no link is where it is."""
    try:
        target = readlink(path)
    except OSError:
        return path
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), target))


def each(
    kind: str,
    subjects: Iterable[str],
    path_of: Callable[[str], str],
    read: Callable[[str, Errors], T | None],
    problems: list[Problem],
) -> Iterator[T]:
    """Read each item on its own: its errors become one Problem about it and never stop the others.
    An item that vanished while it was read (``rdma link delete``, VFs removed) is left out quietly;
    whether it vanished is asked only when one of its reads failed or found a file missing."""
    for subject in subjects:
        errors = Errors()
        try:
            value = read(subject, errors)
        except OSError as err:
            errors.add(subject, err)
            value = None
        if (errors.items or errors.missing) and gone(path_of(subject)):
            logger.debug("%s %s vanished while it was read", kind, subject)
            continue
        problem = errors.problem(subject, kind)
        if problem is not None:
            problems.append(problem)
        if value is not None:
            yield value
