"""Reading the host's files without trusting them.

Anything on the host may be hostile or broken: a FIFO where a ``*.conf`` belongs blocks an ordinary
``open()`` forever, a symlink to ``/dev/zero`` never ends, opening a device node runs its driver's
``open`` (``/dev/watchdog`` arms the watchdog), a 100 MB file costs the agent its memory limit. So
every host read goes through one of two functions here, which never block, never open anything but
a regular file, and stop at a size cap:

* :func:`read_kernel_file` — files of kernel filesystems (sysfs, procfs), whose entries no user can
  create: opened ``O_NONBLOCK``, checked with ``fstat`` to be regular, read up to the cap.
* :func:`read_host_file` — files in the host's ``/etc``, ``/usr``, ``/run`` (modprobe.d, ofed_info,
  the agent's own files): opened ``O_PATH`` first, which runs no driver code and cannot block, then
  checked to be a regular file (``/dev/null``, the usual way to mask a modprobe.d file, reads as
  empty) and only then opened for reading, through its ``/proc/self/fd`` link so that the file
  checked is the file read.

A refusal raises :class:`Refused`, an ``OSError`` whose ``strerror`` says why in a few words, so
callers that already turn ``OSError`` into a problem code naming the file need nothing else.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

MAX_FILE_BYTES: Final = 1 << 20  # 1 MiB: modprobe.d files and sysfs attributes are a few hundred bytes
_CHUNK: Final = 1 << 16
_O_READ: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DEV_NULL: Final = os.makedev(1, 3)

_KINDS: Final = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symlink"),
    (stat.S_ISREG, "a regular file"),
)


class Refused(OSError):  # noqa: N818 - an OSError with a reason, caught wherever OSError is
    """The agent will not read (or write) this host file; ``strerror`` says why."""

    def __init__(self, code: int, why: str, path: str) -> None:
        super().__init__(code, why, path)


def kind_of(mode: int) -> str:
    """``a FIFO``, ``a character device``, … for a non-regular file's mode (for messages)."""
    return next((name for test, name in _KINDS if test(mode)), "of an unknown kind")


def refuse_unless_regular(mode: int, path: str) -> None:
    """Raise :class:`Refused` unless ``mode`` is a regular file's."""
    if stat.S_ISDIR(mode):  # as read() would say
        raise Refused(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not stat.S_ISREG(mode):
        raise Refused(errno.EINVAL, f"is {kind_of(mode)}, not a regular file: not read", path)


def _read_capped(fd: int, limit: int, path: str, *, first: bytes = b"") -> bytes:
    """Up to ``limit`` bytes from ``fd`` (``first``: what was read already); :class:`Refused` when
    there is more."""
    parts: list[bytes] = [first] if first else []
    total = len(first)
    while True:
        want = min(_CHUNK, limit + 1 - total)
        chunk = os.read(fd, want)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            raise Refused(errno.EFBIG, f"is larger than {_size(limit)}: not read", path)


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"


def read_kernel_file(path: str, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """A sysfs or procfs file: ``O_NONBLOCK``, regular files only (``fstat``), at most ``limit`` bytes.

    For the trees of kernel filesystems, where no user can create a FIFO or a device node (a tree
    given as ``--sys-root`` that is not sysfs is still read safely: such a node is refused after the
    open, which for a FIFO does not block). Sysfs attributes: :func:`read_attribute`. Raises
    ``OSError`` (:class:`Refused` for a refusal)."""
    fd = os.open(path, _O_READ)
    try:
        refuse_unless_regular(os.fstat(fd).st_mode, path)
        return _read_capped(fd, limit, path)
    finally:
        os.close(fd)


def read_attribute(path: str) -> bytes:
    """A sysfs attribute, with :func:`read_kernel_file`'s guarantees, in one ``read`` where it can:
    the kernel hands an attribute over whole in the first read (at most a page), so a read that
    gives at least one byte and fewer than asked is the whole file, from a regular file or from
    nothing that could block or go on (``O_NONBLOCK``: a FIFO gives what a writer put in it, nothing,
    or ``EAGAIN``; a device that streams fills the read). Only an empty or full read is checked
    with ``fstat`` (a FIFO or a device node is :class:`Refused`) and read on up to the cap.
    Thousands of attributes are read per cycle: this saves a system call and three Python calls on
    each. Raises ``OSError``."""
    fd = os.open(path, _O_READ)
    try:
        data = os.read(fd, _CHUNK)
        if 0 < len(data) < _CHUNK:
            return data
        refuse_unless_regular(os.fstat(fd).st_mode, path)
        return _read_capped(fd, MAX_FILE_BYTES, path, first=data) if data else data
    finally:
        os.close(fd)


def read_host_file(path: str, *, limit: int = MAX_FILE_BYTES, follow: bool = True, dir_fd: int | None = None) -> bytes:
    """A file an outsider may have planted anything at: checked before it is opened for reading.

    ``O_PATH`` (``follow=False``: also ``O_NOFOLLOW``, so a symlink is refused rather than followed)
    opens no device and never blocks; ``fstat`` then decides: a regular file is read (at most
    ``limit`` bytes) through ``/proc/self/fd/N``, ``/dev/null`` reads as empty, anything else is
    :class:`Refused`. ``dir_fd``: ``path`` is relative to that directory. Raises ``OSError``."""
    flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        mode = os.fstat(fd)
        if stat.S_ISCHR(mode.st_mode) and mode.st_rdev == _DEV_NULL:
            return b""
        refuse_unless_regular(mode.st_mode, path)
        reader = os.open(f"/proc/self/fd/{fd}", _O_READ)
    finally:
        os.close(fd)
    try:
        return _read_capped(reader, limit, path)
    finally:
        os.close(reader)


def kernel_text(data: bytes) -> str:
    """A kernel file's bytes as text, as Python's text mode reads them: bytes that are no UTF-8
    become U+FFFD, CR LF and a lone CR end lines as LF."""
    text = data.decode("utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def decode_text(data: bytes, path: str) -> str:
    """``data`` as UTF-8 text; :class:`Refused` naming the first bad byte otherwise."""
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise Refused(errno.EILSEQ, f"is not UTF-8 text (byte {err.start}): not read", path) from None
