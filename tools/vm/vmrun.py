#!/usr/bin/env python3
"""Boot the real-kernel test bed under QEMU, run ONE shell command inside, return its output.

The guest is Debian's kernel (prepared by tools/vm/install-deps.sh in ``$RNA_VM_CACHE``, default
/var/cache/rdma-node-agent-vm), booted directly from its ELF vmlinux (PVH) under TCG. Its root is the
host's ``/``, shared read-only over virtio-9p with a tmpfs overlay on top, so the guest can write
anywhere and the host is never touched; /proc, /sys, /dev and /run are the guest's own, and the
kernel's modules appear at /lib/modules/<version>, so ``modprobe rdma_rxe`` works (module auto-loading
too: /proc/sys/kernel/modprobe is the host root's /sbin/modprobe). Nothing loads drivers by modalias.

The command runs as root with the caller's working directory and PATH (a directory under the host's
/run is not: /run is the guest's own). Its stdout, stderr and exit
code come back through a second, read-write 9p share (a fresh host temp dir), apart from the kernel
console; then the guest powers off. ``igb=True`` boots a q35 machine with an igb NIC (SR-IOV PF
8086:10c9, 7 VFs) behind a PCIe root port; otherwise a plain `pc`.

CLI: ``vmrun.py [--igb] [--timeout S] [--console] [--] COMMAND...`` prints the command's stdout and
stderr and exits with its exit code; if the VM could not run it: a message and 124 (timeout) or 125.
Env: RNA_VM_CACHE, RNA_VM_QEMU (the QEMU binary), RNA_VM_APPEND (extra kernel command line).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

DEFAULT_CACHE = Path("/var/cache/rdma-node-agent-vm")
DEFAULT_TIMEOUT = 600.0
QEMU_MIN_MAJOR = 8  # `-device igb` appeared in QEMU 8.0
PR_SET_PDEATHSIG = 1
INSTALL_HINT = "run `sudo bash tools/vm/install-deps.sh`"


class VmError(RuntimeError):
    """The VM could not run the command to completion."""


class VmUnavailable(VmError):  # noqa: N818 - the names the tests use
    """QEMU or the prepared kernel is missing: the test bed is not installed on this machine."""


class VmTimeout(VmError):  # noqa: N818 - the names the tests use
    """The wall-clock timeout passed; QEMU was killed."""


class VmCrashed(VmError):  # noqa: N818 - the names the tests use
    """QEMU ended without the guest having written the command's exit code."""


@dataclass(frozen=True)
class Kernel:
    version: str
    vmlinux: Path
    initramfs: Path
    modules: Path  # the host path of lib/modules/<version>, bind-mounted into the guest


@dataclass(frozen=True)
class VmResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float  # wall time of boot + run + poweroff
    console: str  # the tail of the guest's console and QEMU's own messages


def cache_dir() -> Path:
    return Path(os.environ.get("RNA_VM_CACHE") or DEFAULT_CACHE)


def find_kernel(cache: Path | None = None) -> Kernel:
    cache = (cache or cache_dir()).resolve()
    current = cache / "current"
    if not current.is_file():
        raise VmUnavailable(f"no prepared kernel in {cache} ({current} missing): {INSTALL_HINT}")
    if any(c.isspace() for c in str(cache)):
        raise VmUnavailable(f"kernel cache path {str(cache)!r} has whitespace: it goes on the kernel command line")
    version = current.read_text().strip()
    base = cache / version
    kernel = Kernel(version, base / "vmlinux", base / "initramfs.cpio", base / "root" / "lib" / "modules" / version)
    for path in (base / "ready", kernel.vmlinux, kernel.initramfs, kernel.modules / "modules.dep.bin"):
        if not path.exists():
            raise VmUnavailable(f"kernel cache {base} is incomplete ({path} missing): {INSTALL_HINT}")
    return kernel


def qemu_version(qemu: str) -> tuple[int, ...]:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False).stdout
    words = out.split()
    try:
        return tuple(int(x) for x in words[words.index("version") + 1].split(".")[:3])
    except (ValueError, IndexError):
        return (0,)


def find_qemu() -> str:
    qemu = os.environ.get("RNA_VM_QEMU") or shutil.which("qemu-system-x86_64")
    if not qemu:
        raise VmUnavailable(f"qemu-system-x86_64 not found: {INSTALL_HINT}")
    version = qemu_version(qemu)
    if version[0] < QEMU_MIN_MAJOR:
        found = ".".join(map(str, version))
        raise VmUnavailable(f"{qemu} is QEMU {found}; >= {QEMU_MIN_MAJOR} needed (-device igb): {INSTALL_HINT}")
    return qemu


def qemu_argv(qemu: str, kernel: Kernel, outdir: Path, *, igb: bool, memory: int, smp: int) -> list[str]:
    cmdline = " ".join(
        [
            "console=ttyS0",
            "quiet",
            "loglevel=3",
            "panic=-1",
            "oops=panic",
            "reboot=t",
            "tsc=reliable",
            "no_timer_check",
            "nowatchdog",
            "8250.nr_uarts=1",
            f"rna.modules={kernel.modules}",
            os.environ.get("RNA_VM_APPEND", ""),  # e.g. loglevel=7 to debug a boot
        ]
    ).strip()
    if igb:
        machine = ["-M", "q35", "-cpu", "max"]
        virtio9p = "virtio-9p-pci"
        nic = [
            "-device",
            "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=0,addr=3",
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "igb,bus=rp0,netdev=n0,romfile=",
        ]
    else:
        # not microvm: its kernel boot dies in ~half the runs under TCG (divide error in start_kernel)
        machine = ["-M", "pc", "-cpu", "max"]
        virtio9p = "virtio-9p-pci"
        nic = []
    return [
        qemu,
        *machine,
        "-accel",
        "tcg,thread=multi",
        "-m",
        str(memory),
        "-smp",
        str(smp),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel.vmlinux),
        "-initrd",
        str(kernel.initramfs),
        "-append",
        cmdline,
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device",
        f"{virtio9p},fsdev=hostroot,mount_tag=hostroot",
        "-fsdev",
        f"local,id=rnaout,path={outdir},security_model=none",
        "-device",
        f"{virtio9p},fsdev=rnaout,mount_tag=rnaout",
        *nic,
    ]


# PID 1 of the final root (after switch_root): run the command, record its exit code, power off.
RUN_SH = """\
/bin/sh /run/rna/cmd.sh >/run/rna/stdout 2>/run/rna/stderr </dev/null
echo $? >/run/rna/rc.tmp && mv /run/rna/rc.tmp /run/rna/rc
sync
echo o >/proc/sysrq-trigger
sleep 30
"""


def command_script(command: str, cwd: str, env: Mapping[str, str]) -> str:
    q = shlex.quote(cwd)
    lines = [f"cd {q} 2>/dev/null || {{ echo 'vmrun: no directory '{q}' in the guest' >&2; exit 1; }}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append(f"exec /bin/sh -c {shlex.quote(command)}")
    return "\n".join(lines) + "\n"


def guest_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    path = os.environ.get("PATH", "/usr/bin:/bin").split(":")
    path += [d for d in ("/usr/sbin", "/sbin") if d not in path]  # modprobe, ip: even for a non-root caller
    env = {"PATH": ":".join(path), "HOME": "/root", "TERM": "dumb"}
    env.update({k: os.environ[k] for k in ("LANG", "LC_ALL") if k in os.environ})
    env["RNA_IN_VM"] = "1"
    env.update(extra or {})
    return env


def _die_with_parent() -> None:
    """In the QEMU child: get SIGKILL when the thread that started it ends (e.g. `timeout` killed us)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|.)|\r")  # SeaBIOS clears the screen


def _pump(stream: IO[bytes], tail: collections.deque[str], echo: bool) -> None:
    for raw in iter(stream.readline, b""):
        line = ANSI.sub("", raw.decode("utf-8", "replace"))
        tail.append(line)
        if echo:
            sys.stderr.write(line)
            sys.stderr.flush()


def run(
    command: str,
    *,
    igb: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    console: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    memory: int = 1024,
    smp: int = 1,
    cache: Path | None = None,
) -> VmResult:
    """Boot, run ``command`` with /bin/sh -c in the guest (cwd and PATH as here), power off.

    Raises VmUnavailable (no QEMU / no prepared kernel), VmTimeout, VmCrashed.
    """
    kernel = find_kernel(cache)
    qemu = find_qemu()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vmrun-") as tmp:
        outdir = Path(tmp)
        outdir.chmod(0o755)
        (outdir / "run.sh").write_text(RUN_SH)
        (outdir / "cmd.sh").write_text(command_script(command, str(cwd or Path.cwd()), guest_env(env)))
        argv = qemu_argv(qemu, kernel, outdir, igb=igb, memory=memory, smp=smp)
        tail: collections.deque[str] = collections.deque(maxlen=200)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(proc.stdout, tail, console), daemon=True)
        pump.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pump.join(5)
            raise VmTimeout(
                f"guest did not finish within {timeout:g}s; QEMU killed. Console tail:\n{''.join(tail)[-3000:]}"
            ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        pump.join(5)
        seconds = time.monotonic() - started
        console_text = "".join(tail)
        rc_file = outdir / "rc"
        if not rc_file.exists():
            raise VmCrashed(
                f"QEMU exited ({proc.returncode}) after {seconds:.1f}s without the command's exit code."
                f"\n$ {shlex.join(argv)}\nConsole tail:\n{console_text[-3000:]}"
            )
        return VmResult(
            returncode=int(rc_file.read_text().strip() or "255"),
            stdout=(outdir / "stdout").read_text(errors="replace"),
            stderr=(outdir / "stderr").read_text(errors="replace"),
            seconds=seconds,
            console=console_text,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--igb", action="store_true", help="q35 with an igb SR-IOV NIC behind a PCIe root port")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="wall-clock seconds (default 600)")
    parser.add_argument("--console", action="store_true", help="echo the guest console to stderr")
    parser.add_argument("--memory", type=int, default=1024, help="guest MiB (default 1024)")
    parser.add_argument("--smp", type=int, default=1, help="guest CPUs (default 1: faster under TCG)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="shell command (words are joined by spaces)")
    args = parser.parse_args(argv)
    # `timeout` / kill: end QEMU and remove the temp dir on the way out, as for any other exit
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    words = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not words:
        parser.error("no command given")
    try:
        result = run(
            " ".join(words),
            igb=args.igb,
            timeout=args.timeout,
            console=args.console,
            memory=args.memory,
            smp=args.smp,
        )
    except VmError as e:
        print(f"vmrun: {type(e).__name__}: {e}", file=sys.stderr)
        return 124 if isinstance(e, VmTimeout) else 125
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    print(f"vmrun: boot+run+poweroff {result.seconds:.1f}s, rc={result.returncode}", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
