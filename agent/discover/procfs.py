"""procfs (and a few sysfs/host files): kernel modules, kernel facts, the command line's ib_core
option, and how many network namespaces exist.

Every path comes from :class:`~agent.config.HostRoots` (``roots.procfs``, ``roots.sysfs``,
``roots.host``), so in the pod these read the host's trees. Parsers (``parse_*``) take text only.
Missing optional files give None; nothing here raises for a missing or vanished file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.config import HostRoots
from agent.discover.modprobe import MODULE, netns_mode_options, normalize_name
from agent.hostio import MAX_FILE_BYTES, Refused, kernel_text, read_host_file, read_kernel_file
from agent.model import KernelInfo, KernelModule, ModprobeOption, Problem

logger = logging.getLogger(__name__)

WATCHED_MODULES: Final = (
    "ib_core",
    "ib_uverbs",
    "ib_umad",
    "rdma_ucm",
    "rdma_cm",
    "mlx5_core",
    "mlx5_ib",
    "rdma_rxe",
)

# Mellanox/NVIDIA OFED's ``ofed_info`` is a shell script with its version inside:
#   if [ "X$1" == "X-s" ]; then echo MLNX_OFED_LINUX-5.8-1.0.1.1:; exit 0; fi
#   if [ "X$1" == "X-n" ]; then echo 5.8-1.0.1.1; exit 0; fi
# (DOCA-OFED prints "OFED-internal-24.01-0.3.3:" for -s.) We read it, never run it.
OFED_INFO_SCRIPT: Final = "usr/bin/ofed_info"

# The kernel command line names the file that shows it, for ModprobeOption.source.
CMDLINE_SOURCE: Final = HostRoots().display(HostRoots().procfs / "cmdline")

_NET_NS_LINK: Final = re.compile(r"net:\[([0-9]{1,20})\]")  # an inode number is a u64
_OFED_ECHO: Final = re.compile(r'"X-(?P<flag>[sn])"\s*\]\s*;?\s*then\s+echo\s+"?(?P<text>[^";\s]+)')
_OFED_HEADER: Final = re.compile(r"^\S*OFED\S*?-(?P<version>\d+\.\d+-[\w.]+):\s*$")
_OFED_NAMED: Final = re.compile(r"-(?P<version>\d+\.\d+-[\w.]+)$")
_KERNEL_THREAD_PID: Final = "2"  # kthreadd: every kernel thread lives in the initial namespaces


MOUNTINFO_MAX_BYTES: Final = 16 << 20  # a node with hundreds of pods has thousands of mounts


def _read_text(
    roots: HostRoots,
    path: Path,
    problems: list[Problem] | None = None,
    *,
    host: bool = False,
    limit: int = MAX_FILE_BYTES,
) -> str | None:
    """A procfs (or, ``host``, a host) file's text; None when it cannot be read. A refusal (not a
    regular file, larger than ``limit``) is a ``host_file_refused`` Problem naming the file."""
    try:
        data = read_host_file(str(path), limit=limit) if host else read_kernel_file(str(path), limit=limit)
    except Refused as err:
        shown = roots.display(path)
        logger.warning("not reading %s: it %s", shown, err.strerror)
        if problems is not None:
            problems.append(Problem(code="host_file_refused", message=f"{shown} {err.strerror}", subject=shown))
        return None
    except OSError as err:
        logger.debug("cannot read %s: %s", path, err)
        return None
    return kernel_text(data)


# --- modules -----------------------------------------------------------------------------------------


def parse_modules(text: str) -> frozenset[str]:
    """Names of the loaded modules in /proc/modules text (``name size refcount deps state address
    [taints]``, kernel/module/procfs.c ``m_show``)."""
    return frozenset(line.split(maxsplit=1)[0] for line in text.splitlines() if line.strip())


def read_modules(roots: HostRoots, problems: list[Problem] | None = None) -> tuple[KernelModule, ...]:
    """Whether each of :data:`WATCHED_MODULES` is in the kernel: listed in /proc/modules, or present as
    /sys/module/<name> — built-in modules with parameters (or a version) have that directory but no
    /proc/modules line, and a kernel without module support has no /proc/modules at all.

    Limitation: a built-in module with neither parameters nor a version shows up in neither place
    and is reported as not loaded.
    """
    text = _read_text(roots, roots.procfs / "modules", problems)
    listed = parse_modules(text) if text is not None else frozenset()
    return tuple(
        KernelModule(name=name, loaded=name in listed or (roots.sysfs / "module" / name).is_dir())
        for name in WATCHED_MODULES
    )


# --- kernel facts ------------------------------------------------------------------------------------


def parse_btime(text: str) -> float | None:
    """Boot time, in epoch seconds, from the ``btime`` line of /proc/stat text."""
    for line in text.splitlines():
        fields = line.split()
        # ASCII and at most a u64's 20 digits: str.isdigit() also takes "²", which float() refuses.
        if len(fields) == 2 and fields[0] == "btime" and re.fullmatch(r"[0-9]{1,20}", fields[1]):
            return float(fields[1])
    return None


def parse_ofed_info(script: str) -> str | None:
    """The Mellanox OFED version inside an ``ofed_info`` script: what ``ofed_info -n`` prints
    ("5.8-1.0.1.1"), else the number in what ``ofed_info -s`` prints ("MLNX_OFED_LINUX-5.8-1.0.1.1:"),
    else the same from the ``<name>-<version>:`` header of the package list."""
    echoed: dict[str, str] = {}
    for line in script.splitlines():
        match = _OFED_ECHO.search(line)
        if match:
            echoed.setdefault(match["flag"], match["text"])
    if "n" in echoed:
        return echoed["n"]
    if "s" in echoed:
        named = echoed["s"].rstrip(":")
        match = _OFED_NAMED.search(named)
        return match["version"] if match else named
    for line in script.splitlines():
        match = _OFED_HEADER.match(line)
        if match:
            return match["version"]
    return None


def read_mofed_version(roots: HostRoots, problems: list[Problem] | None = None) -> str | None:
    """Mellanox/NVIDIA OFED's version, without running anything:

    1. /usr/bin/ofed_info — the script ``ofed_info -s`` runs; the version is written inside it.
    2. Else, when /sys/module/mlx_compat exists (that backport module only ships with MLNX_OFED /
       DOCA-OFED's kernel package, e.g. loaded by a driver container whose ofed_info the host lacks),
       /sys/module/mlx5_core/version — OFED's mlx5_core sets ``MODULE_VERSION(DRIVER_VERSION)``
       ("25.10-1.7.1"; mlnx-ofa_kernel drivers/net/ethernet/mellanox/mlx5/core/main.c).
    3. Else None: inbox drivers.
    """
    script = _read_text(roots, roots.host(OFED_INFO_SCRIPT), problems, host=True)
    if script is not None:
        version = parse_ofed_info(script)
        if version:
            return version
    if (roots.sysfs / "module" / "mlx_compat").is_dir():
        text = _read_text(roots, roots.sysfs / "module" / "mlx5_core" / "version", problems)
        if text and text.strip():
            return text.strip()
    return None


def read_kernel(roots: HostRoots, problems: list[Problem] | None = None) -> KernelInfo:
    """Kernel facts: /proc/sys/kernel/osrelease, /proc/cmdline, /proc/stat ``btime``, and the OFED
    version (:func:`read_mofed_version`). Each is None when its file is missing."""
    release = _read_text(roots, roots.procfs / "sys" / "kernel" / "osrelease", problems)
    cmdline = _read_text(roots, roots.procfs / "cmdline", problems)
    stat_text = _read_text(roots, roots.procfs / "stat", problems)
    return KernelInfo(
        release=release.strip() or None if release is not None else None,
        cmdline=cmdline.rstrip("\n\0") if cmdline is not None else None,
        mofed_version=read_mofed_version(roots, problems),
        boot_time=parse_btime(stat_text) if stat_text is not None else None,
    )


# --- kernel command line -----------------------------------------------------------------------------


_IGNORE, _MODNAME, _PARAM, _VALUE = range(4)  # kmod_config_parse_kcmdline's states
_SPACE = "\0 \n\t\v\f\r"


@dataclass(slots=True)
class _Kcmdline:
    """The state of kmod's command-line scan (libkmod-config.c ``kmod_config_parse_kcmdline``)."""

    state: int = _MODNAME
    modname: int = 0
    dot: int = -1
    param: int = -1
    value: int = -1
    quote_start: int = -1
    quoted: bool = False

    def quote(self, i: int) -> None:
        self.quoted = not self.quoted
        if self.quoted and self.state == _MODNAME and i == self.modname:
            self.quote_start = i
            self.modname = i + 1
        elif self.state != _VALUE:
            self.state = _IGNORE

    def space(self, i: int) -> bool:
        """A separator at ``i``; True when it completes a ``module.option`` word."""
        if self.quoted and self.state == _VALUE:
            return False
        if self.quoted:
            self.state = _IGNORE
            return False
        if self.state in (_VALUE, _PARAM):
            return True
        self.restart(i)
        return False

    def dot_at(self, i: int) -> None:
        if self.state == _MODNAME:
            self.dot, self.param = i, i + 1
            self.state = _PARAM
        elif self.state == _PARAM:
            self.state = _IGNORE

    def equals(self, i: int) -> None:
        if self.state == _PARAM:
            self.value = i + 1
            self.state = _VALUE
        elif self.state == _MODNAME:
            self.state = _IGNORE

    def restart(self, i: int) -> None:
        self.modname = i + 1
        self.state = _MODNAME
        self.quote_start = -1

    def word(self, cmdline: str, i: int) -> tuple[str, str]:
        """The completed ``(module, option)`` ending at ``i``."""
        option = cmdline[self.param : i]
        if self.quote_start != -1 and self.state == _VALUE:
            option = f'{cmdline[self.param : self.value]}"{cmdline[self.value : i]}'
        return normalize_name(cmdline[self.modname : self.dot]), option


def kcmdline_module_options(cmdline: str) -> list[tuple[str, str]]:
    """``(module, option)`` for each ``module.option`` word of the kernel command line, split as kmod
    splits it (libkmod-config.c ``kmod_config_parse_kcmdline``): the first ``.`` ends the module name,
    a second ``.`` before ``=`` or an ``=`` before any ``.`` makes the word not a module option, double
    quotes may open the word or enclose spaces in the value, and kmod re-quotes a value whose opening
    quote the bootloader moved to the front of the word. kmod does not stop at ``--``."""
    out: list[tuple[str, str]] = []
    scan = _Kcmdline()
    for i in range(len(cmdline) + 1):
        char = cmdline[i] if i < len(cmdline) else "\0"
        if char == '"':
            scan.quote(i)
        elif char in _SPACE:
            if scan.space(i):
                out.append(scan.word(cmdline, i))
                scan.restart(i)
        elif char == ".":
            scan.dot_at(i)
        elif char == "=":
            scan.equals(i)
    return out


def parse_cmdline_netns_mode(cmdline: str, source: str = CMDLINE_SOURCE) -> ModprobeOption | None:
    """The ``ib_core.netns_mode=`` setting of a kernel command line (``ib-core.netns-mode`` too: names
    compare with ``-`` and ``_`` alike); when it appears more than once the last one wins, as the
    options are applied left to right. None when absent."""
    found: list[ModprobeOption] = []
    for module, option in kcmdline_module_options(cmdline):
        if module == MODULE:
            found.extend(netns_mode_options(option, source))
    return found[-1] if found else None


# --- network namespaces ------------------------------------------------------------------------------


def parse_nsfs_mounts(mountinfo_text: str) -> set[int]:
    """Inodes of the network namespaces bind-mounted somewhere, from /proc/<pid>/mountinfo text: an
    nsfs mount's root field (the 4th) is ``net:[<inode>]`` — how ``ip netns add`` keeps a namespace
    alive at /run/netns/<name> with no process in it. Other namespace kinds are skipped."""
    inodes: set[int] = set()
    for line in mountinfo_text.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            match = _NET_NS_LINK.fullmatch(fields[3])
            if match:
                inodes.add(int(match.group(1)))
    return inodes


def _netns_of(procfs: Path | str, pid: str) -> int | None:
    # A str path and os.readlink: this runs for every process on the node, every cycle.
    try:
        match = _NET_NS_LINK.fullmatch(os.readlink(f"{procfs}/{pid}/ns/net"))  # noqa: PTH115 - see above
    except OSError:  # the process ended mid-scan, or we may not look at it
        return None
    return int(match.group(1)) if match else None


def _init_netns(roots: HostRoots, procfs: Path) -> int | None:
    """The initial network namespace: pid 1's, else kthreadd's (pid 2) when pid 1 hides its ns links
    (a non-dumpable init) — kernel threads all live in the initial namespaces."""
    found = _netns_of(procfs, "1")
    if found is not None:
        return found
    comm = _read_text(roots, procfs / _KERNEL_THREAD_PID / "comm")
    return _netns_of(procfs, _KERNEL_THREAD_PID) if comm is not None and comm.strip() == "kthreadd" else None


def count_network_namespaces(roots: HostRoots, problems: list[Problem] | None = None) -> int | None:
    """How many network namespaces other than the initial one exist on the host — while any does, the
    kernel refuses ``rdma system set netns`` with EBUSY.

    Counts the distinct ``net:[inode]`` targets of /proc/<pid>/ns/net over every pid, plus the nsfs
    bind mounts in /proc/1/mountinfo (``ip netns add``, and the runtime's pin of every pod netns),
    minus the initial namespace (pid 1's, or kthreadd's when pid 1's link is hidden, else the agent's
    own — right under hostNetwork, which the agent requires). Processes that vanish mid-scan are skipped. None when
    /proc cannot be listed or the initial namespace cannot be found.

    Not seen: a namespace kept alive only by an open file descriptor, a bind mount made in another
    mount namespace than pid 1's, a thread that ``setns``-ed away from its thread group leader, and
    processes whose ns links we are not allowed to read (needs CAP_SYS_PTRACE over them).
    """
    procfs = roots.procfs
    try:
        with os.scandir(procfs) as listing:
            pids = [entry.name for entry in listing if entry.name.isdigit()]
    except OSError as err:
        logger.debug("cannot list %s: %s", procfs, err)
        return None
    init = _init_netns(roots, procfs)
    if init is None:
        # Without CAP_SYS_PTRACE (the DaemonSet does not grant it) other processes' ns links are
        # hidden. The agent runs with hostNetwork, so its own namespace is the initial one; pods'
        # namespaces are then seen through the nsfs mounts the container runtime pins them with.
        init = _netns_of(procfs, "self")
    if init is None:
        logger.debug("cannot tell the initial network namespace from %s", procfs)
        return None
    base = str(procfs)
    seen = {ns for ns in (_netns_of(base, pid) for pid in pids) if ns is not None}
    mountinfo = _read_text(roots, procfs / "1" / "mountinfo", problems, limit=MOUNTINFO_MAX_BYTES)
    if mountinfo is not None:
        seen |= parse_nsfs_mounts(mountinfo)
    seen.discard(init)
    return len(seen)
