"""Host files: the one place that creates, replaces or removes files on the host.

**Never outside the host root.** A host file is named by the host root it is mounted under and its
path there (``/host`` and ``/host/etc/modprobe.d/ib_core.conf``). Its directory is reached one
component at a time from a descriptor of the root (``openat`` with ``O_NOFOLLOW``), as Linux's
``openat2(RESOLVE_IN_ROOT)`` does: a symlink on the way is followed, but an absolute target starts
again from the host root and ``..`` never climbs above it, so ``/etc -> /tmp/x`` on the host means
``<root>/tmp/x`` here, never this container's ``/tmp``. Every later step works on that directory's
descriptor, so a component swapped after the walk cannot redirect a write. The file itself must
not be a symlink (the agent never writes through one: it would copy its content and mode to
wherever the link points), nor a FIFO, device or directory.

**Crash-safe.** Files are replaced atomically — a temporary file in the same directory, fsync,
rename, fsync of the directory — so a crash at any point leaves the old file or the new one, never a
partial one. A write whose content is already right does not happen at all (the mtime stays).

**Only what it wrote.** :func:`remove_file` takes a predicate on the content and removes only a file
it accepts (the reboot sentinel carries a mark the agent looks for).

Used by the enforcer (the modprobe.d file, the reboot sentinel) and the NFD publisher (its
features.d file). Every refusal is a :class:`~agent.hostio.Refused` (an ``OSError``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from agent.hostio import MAX_FILE_BYTES, Refused, kind_of, read_host_file

TEMP_MARK: Final = ".rna-tmp-"
# Step names passed to the test hook of atomic_write, in order.
WRITE_STEPS: Final = ("temp_written", "temp_fsynced", "renamed", "dir_fsynced")
MAX_SYMLINKS: Final = 40  # the kernel's own limit on nested links (ELOOP)
_O_DIR_PATH: Final = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def host_parts(root: Path, path: Path) -> tuple[list[str], str]:
    """(directory components, file name) of ``path`` relative to ``root``; :class:`Refused` when
    ``path`` is not under ``root`` or has a ``..`` component (config refuses those; this is the
    last line)."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        raise Refused(errno.EXDEV, f"is outside the host root {root}: not touched", str(path)) from None
    parts = [p for p in relative.parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise Refused(errno.EINVAL, "is not a file path under the host root: not touched", str(path))
    return parts[:-1], parts[-1]


def _step(stack: list[int], part: str, pending: list[str], hops: int, create: bool) -> int:
    """Take one component from the directory on top of ``stack``; returns the symlink count."""
    current = stack[-1]
    try:
        fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: fine
            os.mkdir(part, 0o755, dir_fd=current)
        fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        stack.append(fd)
        return hops
    os.close(fd)
    if not stat.S_ISLNK(mode):
        raise NotADirectoryError(errno.ENOTDIR, f"{part} is {kind_of(mode)}, not a directory")
    if hops >= MAX_SYMLINKS:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part)
    target = os.readlink(part, dir_fd=current)
    if target.startswith("/"):  # absolute: from the host's /, not this process's
        while len(stack) > 1:
            os.close(stack.pop())
    pending.extend(reversed(target.split("/")))
    return hops + 1


def open_directory(root: Path, parts: list[str], *, create: bool) -> int:
    """A read-only descriptor of ``root``/``parts`` reached inside ``root`` (see the module
    docstring); missing directories are made (0755) when ``create``. Raises ``OSError``."""
    stack = [os.open(root, _O_DIR_PATH)]
    try:
        pending = list(reversed(parts))
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            hops = _step(stack, part, pending, hops, create)
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


@contextlib.contextmanager
def _directory(root: Path, path: Path, *, create: bool) -> Iterator[tuple[int, str]]:
    directory, name = host_parts(root, path)
    fd = open_directory(root, directory, create=create)
    try:
        yield fd, name
    finally:
        os.close(fd)


def _existing(dir_fd: int, name: str, shown: str, limit: int) -> tuple[bytes, int] | None:
    """(content, permission bits) of ``name`` in ``dir_fd``; None when absent; :class:`Refused`
    for a symlink or anything but a regular file (nothing is opened for reading then)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise Refused(errno.ELOOP, "is a symlink: the agent neither reads nor writes through one", shown)
    if not stat.S_ISREG(st.st_mode):
        raise Refused(errno.EINVAL, f"is {kind_of(st.st_mode)}, not a regular file: not touched", shown)
    return read_host_file(name, limit=limit, follow=False, dir_fd=dir_fd), st.st_mode & 0o7777


def read_file(root: Path, path: Path, *, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """A host file the agent manages, reached as :func:`atomic_write` reaches it; None when it (or
    its directory) does not exist. Raises ``OSError`` (:class:`Refused` for a symlink, a
    non-regular file, one over ``limit`` bytes, or a path that leaves the root)."""
    try:
        with _directory(root, path, create=False) as (dir_fd, name):
            found = _existing(dir_fd, name, str(path), limit)
    except (FileNotFoundError, NotADirectoryError):  # no such file can exist there
        return None
    return found[0] if found is not None else None


def atomic_write(
    root: Path, path: Path, data: bytes, *, mode: int = 0o644, hook: Callable[[str], None] | None = None
) -> bool:
    """Replace ``path`` (under ``root``) with ``data`` atomically; return False (and touch nothing)
    if it already holds it. An existing file keeps its permission bits. Missing directories are
    made. Raises ``OSError`` (:class:`Refused` when the file is a symlink or not a regular file).

    ``hook`` is called after each step in :data:`WRITE_STEPS` (crash-safety tests stop there)."""
    step = hook or (lambda _name: None)
    with _directory(root, path, create=True) as (dir_fd, name):
        found = _existing(dir_fd, name, str(path), max(len(data), MAX_FILE_BYTES))
        if found is not None:
            if found[0] == data:
                return False
            mode = found[1]
        _remove_stale_temps(dir_fd, name)
        temp = f".{name}{TEMP_MARK}{os.getpid()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        try:
            try:
                os.fchmod(fd, mode)  # the umask must not narrow an existing file's mode
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                step("temp_written")
                os.fsync(fd)
                step("temp_fsynced")
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        step("renamed")
        os.fsync(dir_fd)
        step("dir_fsynced")
    return True


def _remove_stale_temps(dir_fd: int, name: str) -> None:
    """Temporary files of ``name`` left by a write that was killed."""
    prefix = f".{name}{TEMP_MARK}"
    with os.scandir(dir_fd) as entries:
        stale = [e.name for e in entries if e.name.startswith(prefix)]
    for entry in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry, dir_fd=dir_fd)


def remove_file(root: Path, path: Path, *, ours: Callable[[bytes], bool] = lambda _data: True) -> bool:
    """Remove ``path`` durably if its content is ``ours``; False when it was not there or is
    someone else's (then it is left alone). Raises ``OSError`` (:class:`Refused` for a symlink or
    a non-regular file, which are never removed)."""
    try:
        with _directory(root, path, create=False) as (dir_fd, name):
            try:
                found = _existing(dir_fd, name, str(path), MAX_FILE_BYTES)
            except Refused as err:
                if err.errno != errno.EFBIG:
                    raise
                return False  # larger than anything the agent writes: not ours
            if found is None or not ours(found[0]):
                return False
            os.unlink(name, dir_fd=dir_fd)
            os.fsync(dir_fd)
    except FileNotFoundError:
        return False
    return True
