#!/usr/bin/env bash
# Install what the real-kernel test bed (tools/vm/vmrun.py) needs, on a Debian bookworm machine, as root.
# Idempotent: a re-run skips what is already done (the kernel cache is keyed by kernel version).
#
#  1. apt: busybox-static, prometheus (promtool), iproute2, kmod, strace, xz-utils, zstd;
#     qemu-system-x86 >= 8 from <codename>-backports (bookworm has 7.2, which lacks `-device igb`).
#     The backports source is derived from the machine's own configured Debian source, never hard-coded.
#  2. The Debian kernel that linux-image-amd64 depends on: downloaded (not installed into /boot),
#     extracted into $RNA_VM_CACHE/<kver>/root, depmod'ed there; its vmlinuz decompressed into an ELF
#     vmlinux (QEMU boots it directly via its PVH note); a tiny initramfs (busybox + the modules for
#     virtio 9p and overlayfs) built next to it.
#
# Env: RNA_VM_CACHE (default /var/cache/rdma-node-agent-vm).
set -euo pipefail

CACHE="${RNA_VM_CACHE:-/var/cache/rdma-node-agent-vm}"
QEMU_MIN_MAJOR=8
started=$(date +%s.%N)
log() { printf 'install-deps: %s\n' "$*" >&2; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}s')" "$started" "$(date +%s.%N)"; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root"; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# shellcheck disable=SC1091
. /etc/os-release
CODENAME="${VERSION_CODENAME:-bookworm}"
BACKPORTS="${CODENAME}-backports"

# ---------------------------------------------------------------- apt sources: derive backports
# Prints "URI<TAB>signed-by" of the first configured `deb` source that serves suite $CODENAME.
derive_source() {
  "$PY" - "$CODENAME" <<'PY'
import glob
import re
import sys

codename = sys.argv[1]


def deb822(path: str):
    text = open(path, encoding="utf-8", errors="replace").read()
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
            continue
        if codename in fields.get("suites", "").split():
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("signed-by", "")


def one_line(path: str):
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s", line + " ")
        if m and m.group(3) == codename:
            opts = m.group(1) or ""
            signed = re.search(r"signed-by=(\S+?)\s*[\]\s]", opts)
            yield m.group(2), signed.group(1) if signed else ""


found = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    found += list(deb822(path))
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        found += list(one_line(path))
    except FileNotFoundError:
        pass
if not found:
    sys.exit(f"no apt source for suite {codename!r} in /etc/apt/sources.list(.d)")
print(f"{found[0][0]}\t{found[0][1]}")
PY
}

has_backports_source() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v '^[[:space:]]*#' | grep -qE "(^|[[:space:]])${BACKPORTS}([[:space:]]|$)"
}

qemu_major() {
  local v
  v=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p')
  echo "${v:-0}"
}

need_pkgs=()
for p in busybox-static prometheus iproute2 kmod strace xz-utils zstd; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
[ -x /usr/bin/promtool ] || { [[ " ${need_pkgs[*]} " == *" prometheus "* ]] || need_pkgs+=(prometheus); }

if [ "${#need_pkgs[@]}" -gt 0 ] || [ "$(qemu_major)" -lt "$QEMU_MIN_MAJOR" ]; then
  if ! has_backports_source; then
    src=$(derive_source)
    uri=${src%%$'\t'*}
    signed=${src#*$'\t'}
    file=/etc/apt/sources.list.d/${BACKPORTS}.sources
    {
      echo "# Written by tools/vm/install-deps.sh: derived from this machine's source for ${CODENAME}"
      echo "Types: deb"
      echo "URIs: ${uri}"
      echo "Suites: ${BACKPORTS}"
      echo "Components: main"
      # a keyring path is reused; an inline key block is not (apt's trusted.gpg.d then applies)
      case "$signed" in /*) echo "Signed-By: ${signed}" ;; esac
    } >"$file"
    log "added ${file} (URIs: ${uri})"
  fi
  log "apt-get update"
  apt-get update -qq
  if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  fi
  if [ "$(qemu_major)" -lt "$QEMU_MIN_MAJOR" ]; then
    log "installing qemu-system-x86 from ${BACKPORTS}"
    apt-get install -y -qq --no-install-recommends -t "$BACKPORTS" qemu-system-x86 >/dev/null
  fi
else
  log "packages already installed"
fi
if [ "$(qemu_major)" -lt "$QEMU_MIN_MAJOR" ]; then
  log "QEMU >= ${QEMU_MIN_MAJOR} required, have: $(qemu-system-x86_64 --version 2>&1 | head -1)"; exit 1
fi
log "$(qemu-system-x86_64 --version | head -1)"

# ---------------------------------------------------------------- kernel
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
if [ -z "$kpkg" ]; then
  log "apt-get update (to resolve linux-image-amd64)"; apt-get update -qq
  kpkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
fi
[ -n "$kpkg" ] || { log "cannot resolve the package linux-image-amd64 depends on"; exit 1; }
KVER=${kpkg#linux-image-}
DIR="$CACHE/$KVER"
LAYOUT=2  # bump when the initramfs/init below changes: a cache of another layout is rebuilt
mkdir -p "$CACHE"

if [ -f "$DIR/ready" ] && [ "$(cat "$DIR/ready")" = "$KVER layout $LAYOUT" ]; then
  log "kernel ${KVER}: cached in ${DIR}"
else
  log "kernel ${KVER}: downloading ${kpkg}"
  rm -rf "$DIR" "$DIR.tmp"
  mkdir -p "$DIR.tmp/dl"
  chown _apt "$DIR.tmp/dl" 2>/dev/null || true   # apt-get download runs as _apt where it can
  if ! (cd "$DIR.tmp/dl" && apt-get download -qq "$kpkg"); then
    log "download failed: apt-get update and retry"; apt-get update -qq
    (cd "$DIR.tmp/dl" && apt-get download -qq "$kpkg")
  fi
  log "kernel ${KVER}: extracting"
  dpkg-deb -x "$DIR.tmp"/dl/*.deb "$DIR.tmp/root"
  rm -rf "$DIR.tmp/dl"
  depmod -b "$DIR.tmp/root" "$KVER"

  log "kernel ${KVER}: vmlinuz -> vmlinux, initramfs"
  "$PY" - "$DIR.tmp" "$KVER" /bin/busybox <<'PY'
"""Decompress vmlinuz into an ELF vmlinux; build initramfs.cpio (newc, uncompressed)."""
import gzip
import lzma
import os
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

work, kver, busybox = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
root = work / "root"
mods = root / "lib" / "modules" / kver

MAGICS = [(b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x1f\x8b\x08", "gzip")]


def decompress(kind: str, data: bytes) -> bytes:
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)  # stops at the stream end
    if kind == "gzip":
        return zlib.decompressobj(wbits=31).decompress(data)
    out = subprocess.run(["zstd", "-dcq"], input=data, capture_output=True)
    return out.stdout  # trailing bytes after the frame make zstd complain; the frame itself is out


def payload(image: bytes) -> list[tuple[int, str]]:
    """Where the compressed kernel starts: the bzImage header's payload_offset, else a magic scan."""
    spots: list[tuple[int, str]] = []
    if image[0x202:0x206] == b"HdrS":
        setup_sects = image[0x1F1] or 4
        offset, _length = struct.unpack_from("<II", image, 0x248)
        start = (setup_sects + 1) * 512 + offset
        spots += [(start, kind) for magic, kind in MAGICS if image[start : start + len(magic)] == magic]
    for magic, kind in MAGICS:
        i = image.find(magic)
        while i != -1 and len(spots) < 64:
            spots.append((i, kind))
            i = image.find(magic, i + 1)
    return spots


image = (root / "boot" / f"vmlinuz-{kver}").read_bytes()
for start, kind in payload(image):
    try:
        elf = decompress(kind, image[start:])
    except (lzma.LZMAError, zlib.error, gzip.BadGzipFile, EOFError):
        continue
    if elf[:4] == b"\x7fELF":
        break
else:
    sys.exit("no ELF kernel found inside vmlinuz")
(work / "vmlinux").write_bytes(elf)
print(f"install-deps: vmlinux: {len(elf) >> 20} MiB ELF ({kind} at offset {start})", file=sys.stderr)

# ---- initramfs: busybox + modules for 9p-over-virtio (pci and mmio) and overlayfs, in dependency order
deps: dict[str, list[str]] = {}
for line in (mods / "modules.dep").read_text().splitlines():
    path, _, rest = line.partition(":")
    deps[path] = rest.split()
by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
wanted = ["virtio_pci", "virtio_mmio", "9pnet_virtio", "9p", "overlay"]
order: list[str] = []


def visit(path: str) -> None:
    if path in order:
        return
    for dep in deps[path]:
        visit(dep)
    order.append(path)


for name in wanted:
    if name in by_name:  # a built-in one is simply not in modules.dep
        visit(by_name[name])


def module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=True).stdout
    return data


INIT = r"""#!/bin/busybox sh
# initramfs of tools/vm: mount the host's / (9p, read-only) under a tmpfs overlay, then hand over to
# the run script that tools/vm/vmrun.py put in its output share.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "rna-init: $*" >&2; echo o >/proc/sysrq-trigger; sleep 5; exit 1; }
for m in $(cat /modules); do insmod "/modules.d/$m" || fail "insmod $m"; done
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -1; }
MODULES=$(arg rna.modules)
KVER=$(uname -r)
mkdir -p /lower /rw /root
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower || fail "mount 9p hostroot"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /root || fail "mount overlay"
mount -t proc proc /root/proc
mount -t sysfs sysfs /root/sys
mount -t devtmpfs devtmpfs /root/dev
mkdir -p /root/dev/pts /root/dev/shm
mount -t devpts devpts /root/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /root/dev/shm
mount -t tmpfs -o mode=0755 tmpfs /root/run
# /tmp is NOT a fresh tmpfs: the host's /tmp shows through the overlay (writes stay in the guest),
# so a checkout under /tmp (CI clones there) is visible at the same path.
mkdir -p /root/run/rna
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 rnaout /root/run/rna || fail "mount 9p rnaout"
if [ -n "$MODULES" ]; then
  mkdir -p "/root/lib/modules/$KVER"
  mount -o bind "/lower$MODULES" "/root/lib/modules/$KVER" || fail "bind modules"
fi
echo /sbin/modprobe >/proc/sys/kernel/modprobe
hostname rnavm
umount /proc /sys /dev 2>/dev/null
exec switch_root /root /bin/sh /run/rna/run.sh
"""

entries: list[tuple[str, int, bytes]] = []  # (name, mode, data)
for d in ["bin", "dev", "proc", "sys", "lower", "rw", "root", "modules.d"]:
    entries.append((d, stat.S_IFDIR | 0o755, b""))
entries.append(("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()))
entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
entries.append(("init", stat.S_IFREG | 0o755, INIT.encode()))
names = []
for rel in order:
    name = Path(rel).name.split(".ko")[0] + ".ko"
    names.append(name)
    entries.append((f"modules.d/{name}", stat.S_IFREG | 0o644, module_bytes(mods / rel)))
entries.append(("modules", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode()))
# /dev/console must exist before init runs so its stdio is connected
console = ("dev/console", stat.S_IFCHR | 0o600, b"")


def newc(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int] = (0, 0)) -> bytes:
    raw = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    pad1 = b"\0" * ((-(len(head) + len(raw))) % 4)
    return head + raw + pad1 + data + b"\0" * ((-len(data)) % 4)


blob = bytearray()
for i, (name, mode, data) in enumerate(entries, 1):
    blob += newc(i, name, mode, data)
blob += newc(len(entries) + 1, console[0], console[1], b"", (5, 1))
blob += newc(0, "TRAILER!!!", 0, b"")
blob += b"\0" * ((-len(blob)) % 512)
(work / "initramfs.cpio").write_bytes(bytes(blob))
print(f"install-deps: initramfs: {len(blob) >> 10} KiB, modules: {' '.join(names)}", file=sys.stderr)
os.sync()
PY
  rm -rf "$DIR.tmp/root/boot/vmlinuz-$KVER"
  echo "$KVER layout $LAYOUT" >"$DIR.tmp/ready"
  mv "$DIR.tmp" "$DIR"
fi
echo "$KVER" >"$CACHE/current.tmp" && mv "$CACHE/current.tmp" "$CACHE/current"
for old in "$CACHE"/*/ready; do  # kernels of ours that Debian has since replaced
  old=$(dirname "$old")
  if [ "$old" != "$DIR" ] && [ -f "$old/vmlinux" ]; then log "removing old kernel cache ${old}"; rm -rf "$old"; fi
done
log "ready: kernel ${KVER} in ${DIR} (vmlinux, initramfs.cpio, root/lib/modules/${KVER}); took $(elapsed)"
