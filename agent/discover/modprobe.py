"""modprobe configuration: the ``netns_mode`` ib_core will get at its next load, read as kmod reads it.

Reads every ``*.conf`` file in the modprobe.d directories (``HostRoots.modprobe_dirs()``: /etc, /run,
/usr/local/lib, /usr/lib, /lib — kmod libkmod.c ``default_config_paths``) and reports the effective
persisted ``ib_core netns_mode``, where it comes from, and every other setting that disagrees with it
or repeats it. Nothing is executed; modprobe itself is never run.

kmod's rules, as implemented in kmod-project/kmod (libkmod/libkmod-config.c unless noted):

- **Which files** (``conf_files_list``, ``conf_files_filter_out``): in each directory, names starting
  with ``.`` are skipped, so are names not ending in ``.conf`` (older kmod also took ``.alias``; current
  kmod takes ``.conf`` only) and entries that ``fstatat`` (following symlinks) says are directories or
  cannot stat (a dangling symlink). A symlink to /dev/null is kept: it reads as empty and so masks.
- **Precedence and order** (``conf_files_insert_sorted``): a name already taken by an earlier
  directory is ignored ("Ignoring duplicate config file"), so /etc/modprobe.d/x.conf hides
  /usr/lib/modprobe.d/x.conf. The surviving files form ONE list sorted by ``strcmp`` of their names
  across directories, and ``kmod_config_new`` parses them in that order — so
  /usr/lib/modprobe.d/mlnx.conf is read AFTER /etc/modprobe.d/00-local.conf.
- **Lines** (``kmod_config_parse`` + shared/util.c ``freadline_wrapped``): a backslash-newline joins
  two physical lines (nothing is inserted); a backslash before any other character is dropped and the
  character kept. A logical line whose first character is ``#`` is a comment; an indented ``#`` is
  not a comment but a bad line that kmod ignores. ``options <module> <rest>``: the module name has
  ``-`` turned into ``_`` (shared/util.c ``underscores``), so ``options ib-core …`` is ib_core; the
  rest of the line is kept verbatim (tabs become spaces), including any ``# trailing comment`` — the
  kernel then warns that ``#`` is an unknown parameter and ignores it.
- **Combining** (libkmod-module.c ``kmod_module_get_options``): every ``options`` entry for the module
  is concatenated, space-separated, in list order; ``kmod_module_probe_insert_module`` appends the
  modprobe command line's own arguments last (``module_options_concat``). The kernel applies the
  parameters left to right (kernel/params.c ``parse_args``), so the LAST ``netns_mode`` wins.
- **Kernel command line** (``kmod_config_parse_kcmdline``): ``ib_core.netns_mode=…`` words from
  /proc/cmdline are added as options AFTER all files are parsed (it is the last call in
  ``kmod_config_new``), so the command line beats every file. (A built-in ib_core would get it from the
  kernel directly, at boot.)

Values follow the kernel's bool parameter (kernel/params.c ``param_set_bool`` → lib/kstrtox.c
``kstrtobool``): only the first character counts — ``y``/``Y``/``1``/``t``/``T`` true, ``n``/``N``/``0``
/``f``/``F`` false, ``on``/``off`` by their second letter; a bare ``netns_mode`` (no ``=``) means true;
anything else, ``netns_mode=`` included, is ``-EINVAL`` and makes the module load fail. true = shared,
false = exclusive. ``t``/``f`` were added to kstrtobool in 2022; older kernels reject them.

Reading (:func:`conf_files`, :func:`read_persisted_netns_mode`) is apart from parsing
(:func:`parse_conf`, :func:`resolve_persisted`, which take text and values only).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.config import HostRoots
from agent.hostio import Refused, read_host_file
from agent.model import ModprobeOption, NetnsMode, PersistedNetnsMode, Problem

logger = logging.getLogger(__name__)

MODULE: Final = "ib_core"
PARAMETER: Final = "netns_mode"
CONF_SUFFIX: Final = ".conf"
_MAX_SYMLINKS: Final = 40  # the kernel's own limit on nested links (ELOOP)
_KERNEL_SPACE: Final = " \t\n\v\f\r"  # isspace() in the kernel's next_arg


# --- values and parameters, as the kernel reads them ----------------------------------------------


def normalize_name(name: str) -> str:
    """Module and parameter names compare with ``-`` and ``_`` alike (kmod ``underscores``, kernel
    ``dash2underscore``)."""
    return name.replace("-", "_")


def kstrtobool(text: str) -> bool | None:
    """lib/kstrtox.c ``kstrtobool``: judged by the first one or two characters; None means -EINVAL."""
    first = text[:1]
    if first in ("y", "Y", "t", "T", "1"):
        return True
    if first in ("n", "N", "f", "F", "0"):
        return False
    if first in ("o", "O"):
        second = text[1:2]
        if second in ("n", "N"):
            return True
        if second in ("f", "F"):
            return False
    return None


def netns_mode_of(value: str | None) -> NetnsMode | None:
    """The mode a ``netns_mode`` parameter sets: ``None`` value (no ``=``) means true, as in
    ``param_set_bool``; an unparseable value gives None."""
    flag = True if value is None else kstrtobool(value)
    if flag is None:
        return None
    return NetnsMode.SHARED if flag else NetnsMode.EXCLUSIVE


def kernel_args(args: str) -> list[tuple[str, str | None]]:
    """Split a module's argument string into ``(param, value)`` like kernel/params.c ``parse_args`` and
    ``next_arg``: whitespace separates, double quotes group (and are dropped from the value), the value
    is None when there is no ``=``; a bare ``--`` ends the parameters."""
    out: list[tuple[str, str | None]] = []
    rest = args.lstrip(_KERNEL_SPACE)
    while rest:
        quoted = rest.startswith('"')
        if quoted:
            rest = rest[1:]
        in_quote = quoted
        equals = 0  # as in the kernel, '=' at position 0 counts as no '='
        i = 0
        while i < len(rest):
            char = rest[i]
            if char in _KERNEL_SPACE and not in_quote:
                break
            if equals == 0 and char == "=":
                equals = i
            if char == '"':
                in_quote = not in_quote
            i += 1
        token, rest = rest[:i], rest[i:].lstrip(_KERNEL_SPACE)
        value: str | None
        if equals == 0:
            param, value = token, None
            if quoted and param.endswith('"'):
                param = param[:-1]
        else:
            param, value = token[:equals], token[equals + 1 :]
            if value.startswith('"'):
                value = value[1:]
                if token.endswith('"'):
                    value = value[:-1]
            elif quoted and token.endswith('"'):
                value = value[:-1]
        if value is None and param == "--":
            break
        out.append((param, value))
    return out


def netns_mode_options(args: str, source: str) -> list[ModprobeOption]:
    """Every ``netns_mode`` setting in one module argument string, in the order the kernel applies them."""
    return [
        ModprobeOption(source=source, raw=value if value is not None else "", value=netns_mode_of(value))
        for param, value in kernel_args(args)
        if normalize_name(param) == PARAMETER
    ]


# --- modprobe.d files --------------------------------------------------------------------------------


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(first physical line number, logical line)`` as kmod's ``freadline_wrapped`` joins them."""
    if "\\" not in text:  # no escapes, no continuations: the physical lines (most files, e.g. aliases.conf)
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the text ended with a newline: no partial last line
        yield from enumerate(lines, 1)
        return
    yield from _wrapped_lines(text)


def _wrapped_lines(text: str) -> Iterator[tuple[int, str]]:
    """:func:`logical_lines` character by character: ``\\`` escapes the next character, and a
    backslash-newline continues the logical line on the next physical one."""
    buf: list[str] = []
    line_no = 1
    start = 1
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\n":
            yield start, "".join(buf)
            buf.clear()
            line_no += 1
            start = line_no
        elif char == "\\":
            i += 1
            if i < len(text):
                if text[i] == "\n":
                    line_no += 1
                else:
                    buf.append(text[i])
        else:
            buf.append(char)
        i += 1
    if buf:
        yield start, "".join(buf)


def _strtok(line: str, pos: int) -> tuple[str | None, int]:
    """C ``strtok_r(…, "\\t ")``: skip separators, take a word, step over the one separator after it."""
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    if pos >= len(line):
        return None, pos
    end = pos
    while end < len(line) and line[end] not in " \t":
        end += 1
    return line[pos:end], end + 1


def parse_conf(text: str, source_path: str) -> tuple[ModprobeOption, ...]:
    """The ``netns_mode`` settings for ib_core in one modprobe.d file's text (``source`` = "path:line",
    the line where the ``options`` statement starts), in file order. Other statements are ignored."""
    found: list[ModprobeOption] = []
    for line_no, line in logical_lines(text):
        if not line or line[0] == "#":
            continue
        command, pos = _strtok(line, 0)
        if command != "options":
            continue
        module, pos = _strtok(line, pos)
        if module is None or normalize_name(module) != MODULE:
            continue
        found.extend(netns_mode_options(line[pos:], f"{source_path}:{line_no}"))
    return tuple(found)


def _resolve(root: str, current: str, pending: list[str]) -> str:
    """Walk ``pending`` path parts from ``current`` (a resolved path at or under ``root``), following
    symlinks as the host would: an absolute target restarts from ``root`` (the host's ``/``), ``..``
    never climbs above it. Missing parts are kept as they are. Raises OSError(ELOOP) on a link loop.
    On str paths with os calls: this runs for every modprobe.d file every cycle, and pathlib's per-part
    objects made it the largest part of a snapshot on a node with few devices."""
    hops = 0
    pending.reverse()  # pop() from the end: the next part is last
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if current != root:
                current = os.path.dirname(current) or root  # noqa: PTH120 - str paths, see _resolve
            continue
        candidate = current + part if current.endswith("/") else current + "/" + part
        try:
            target = os.readlink(candidate)  # noqa: PTH115 - str paths, see _resolve
        except OSError:  # not a link, or not there: keep it literally
            current = candidate
            continue
        hops += 1
        if hops > _MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), candidate)
        parts = target.split("/")
        if target.startswith("/"):
            current = root
        pending.extend(reversed(parts))
    return current


def _host_realpath(roots: HostRoots, path: Path) -> str:
    """``path`` (under ``roots.root``) with every symlink followed as the host would follow it: an
    absolute target is taken from the host's ``/``, not this process's. Missing parts are kept as they
    are. Raises OSError(ELOOP) on a link loop."""
    root = str(roots.root)
    try:
        parts = list(path.relative_to(roots.root).parts)
    except ValueError:
        return str(path)
    return _resolve(root, root, parts)


@dataclass(frozen=True, slots=True)
class ConfFile:
    path: Path  # under roots, unresolved: what roots.display() shows
    real: str  # resolved on the host's terms
    mtime: float


def conf_files(roots: HostRoots) -> list[ConfFile]:
    """The modprobe.d files modprobe would read, in the order it reads them (kmod ``kmod_config_new``),
    each with its resolved path and mtime (one stat per file; each directory is resolved once).

    ``path`` is under ``roots`` and unresolved (``roots.display`` shows it as the host names it).
    A directory that is missing or unreadable is skipped, as kmod does. A configuration path that is a
    regular file rather than a directory is read itself, under its base name (``conf_files_list``)."""
    root = str(roots.root)
    chosen: dict[str, ConfFile] = {}
    for directory in roots.modprobe_dirs():
        try:
            real_dir = _host_realpath(roots, directory)
            st = os.stat(real_dir)  # noqa: PTH116 - str paths, see _resolve
        except OSError:
            logger.debug("modprobe directory %s is absent", directory)
            continue
        if not stat.S_ISDIR(st.st_mode):
            chosen.setdefault(directory.name, ConfFile(directory, real_dir, st.st_mtime))
            continue
        try:
            with os.scandir(real_dir) as listing:
                entries = [(entry.name, entry.is_symlink()) for entry in listing]
        except OSError as err:
            logger.debug("cannot list %s: %s", directory, err)
            continue
        for name, is_link in entries:
            if name.startswith(".") or len(name) < len(CONF_SUFFIX) + 1 or not name.endswith(CONF_SUFFIX):
                continue
            if name in chosen:
                continue  # hidden by the same name in an earlier directory
            try:
                real = _resolve(root, real_dir, [name]) if is_link else real_dir + "/" + name
                entry_stat = os.stat(real)  # noqa: PTH116 - str paths, see _resolve
            except OSError:
                continue
            if stat.S_ISDIR(entry_stat.st_mode):
                continue
            chosen[name] = ConfFile(directory / name, real, entry_stat.st_mtime)
    return [chosen[name] for name in sorted(chosen, key=os.fsencode)]


# --- the verdict ------------------------------------------------------------------------------------


def _describe(option: ModprobeOption) -> str:
    if option.value is None:
        return f"netns_mode={option.raw!r}"
    if option.raw == "" and option.value is NetnsMode.SHARED:
        return "netns_mode (no value, which means Y: shared)"
    return f"netns_mode={option.raw} ({option.value.value})"


def winner_index(options: Sequence[ModprobeOption]) -> int | None:
    """Which setting the kernel ends up with: the last one with a valid value."""
    return next((i for i in range(len(options) - 1, -1, -1) if options[i].value is not None), None)


def resolve_persisted(
    options: Sequence[ModprobeOption], source_mtime: float | None = None
) -> tuple[PersistedNetnsMode, tuple[Problem, ...]]:
    """Pure verdict over every setting in application order: the last valid one wins; every other
    setting is a conflict (different or invalid value) or a duplicate (same value), each with a Problem.
    An invalid value never wins: the kernel leaves the variable as it was and fails the load.
    ``source_mtime`` is passed through for the winner's file."""
    index = winner_index(options)
    winner = options[index] if index is not None else None
    others = tuple(o for i, o in enumerate(options) if i != index)
    problems: list[Problem] = []
    for option in others:
        if option.value is None:
            problems.append(
                Problem(
                    code="modprobe_invalid_value",
                    message=(
                        f"{option.source} sets ib_core {_describe(option)}, which is not a boolean the "
                        "kernel accepts (1, Y or on = shared; 0, N or off = exclusive); while it is there, "
                        "loading ib_core fails with 'Invalid argument'."
                    ),
                    subject=option.source,
                )
            )
        elif winner is not None and option.value is not winner.value:
            problems.append(
                Problem(
                    code="modprobe_conflict",
                    message=(
                        f"{option.source} sets ib_core {_describe(option)} but {winner.source}, applied "
                        f"later, sets {_describe(winner)}, so the setting in {option.source} has no effect."
                    ),
                    subject=option.source,
                )
            )
        elif winner is not None:
            problems.append(
                Problem(
                    code="modprobe_duplicate",
                    message=(
                        f"{option.source} repeats ib_core {_describe(option)}, which {winner.source} "
                        "sets again later; the repeat is harmless but should be removed."
                    ),
                    subject=option.source,
                )
            )
    persisted = PersistedNetnsMode(
        value=winner.value if winner is not None else None,
        source=winner.source if winner is not None else None,
        conflicts=others,
        options=tuple(options),
        source_mtime=source_mtime if winner is not None else None,
    )
    return persisted, tuple(problems)


def read_persisted_netns_mode(
    roots: HostRoots, cmdline_option: ModprobeOption | None
) -> tuple[PersistedNetnsMode, tuple[Problem, ...]]:
    """The ``netns_mode`` ib_core gets at its next ``modprobe``: reads each file of
    :func:`conf_files` (``<modprobe dir>/*.conf``), then adds ``cmdline_option`` (from
    /proc/cmdline, see ``procfs.parse_cmdline_netns_mode``) last, as kmod does. ``source_mtime`` is the
    modification time of the file holding the winning setting (None when the command line wins).

    A file that cannot be read gives a ``modprobe_unreadable`` Problem (kmod skips it silently).
    """
    options: list[ModprobeOption] = []
    mtimes: list[float | None] = []  # per option: its file's mtime
    problems: list[Problem] = []
    for conf in conf_files(roots):
        shown = roots.display(conf.path)
        mtime = conf.mtime
        try:
            data = read_host_file(conf.real, follow=False)  # resolved already: a link left is a race
        except Refused as err:
            problems.append(
                Problem(
                    code="modprobe_unreadable",
                    message=(
                        f"{shown} {err.strerror}; any ib_core option in it is unknown to the agent "
                        "(modprobe itself may read it)."
                    ),
                    subject=shown,
                )
            )
            continue
        except OSError as err:
            problems.append(
                Problem(
                    code="modprobe_unreadable",
                    message=(
                        f"{shown} could not be read ({err.strerror or err}); modprobe skips it too, so any "
                        "ib_core option in it is unknown and not applied."
                    ),
                    subject=shown,
                )
            )
            continue
        found = parse_conf(data.decode("utf-8", errors="replace"), shown)
        options.extend(found)
        mtimes.extend(mtime for _ in found)
    if cmdline_option is not None:
        options.append(cmdline_option)
        mtimes.append(None)
    index = winner_index(options)
    persisted, verdict_problems = resolve_persisted(options, mtimes[index] if index is not None else None)
    return persisted, (*problems, *verdict_problems)
