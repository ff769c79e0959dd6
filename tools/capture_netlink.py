#!/usr/bin/env python3
"""Record raw NETLINK_RDMA exchanges from the running kernel into fixture files.

Run as root inside the QEMU test bed (tools/regenerate_fixtures.py does that). It sets up the
recorded scenario itself — rxe0 on a dummy netdev ``d0``, rxe1 on a veth ``veth0`` — then sends each
request with a plain stdlib socket (requests built with struct exactly as iproute2 builds them, not
with the agent's encoder, so the unit tests' request comparison stays a real check) and writes, per
case, ``<case>.request.hex``, ``<case>.reply.hex`` (one message per line, arrival order) and
``<case>.decoded.txt``; plus iproute2's own output for the same state (``strace_rdma_*.out``).

Usage: capture_netlink.py OUTDIR
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

NETLINK_RDMA = 20
NLDEV = 5
GET, PORT_GET, SYS_GET, SYS_SET, RES_GET = 1, 5, 6, 7, 9
F_REQUEST, F_ACK, F_DUMP = 0x1, 0x4, 0x300
DOIT, DUMP = F_REQUEST | F_ACK, F_REQUEST | F_DUMP
NAMES = {
    1: "DEV_INDEX",
    2: "DEV_NAME",
    3: "PORT_INDEX",
    4: "CAP_FLAGS",
    5: "FW_VERSION",
    6: "NODE_GUID",
    7: "SYS_IMAGE_GUID",
    12: "PORT_STATE",
    13: "PORT_PHYS_STATE",
    14: "DEV_NODE_TYPE",
    50: "NDEV_INDEX",
    51: "NDEV_NAME",
    66: "NETNS_MODE",
    67: "DEV_PROTOCOL",
    84: "DEV_DIM",
    93: "COPY_ON_FORK",
    96: "PRIVILEGED_QKEY_MODE",
    101: "NAME_ASSIGN_TYPE",
    103: "MONITOR_MODE",
}


def nla_u32(nla_type: int, value: int) -> bytes:
    return struct.pack("=HHI", 8, nla_type, value)


def nla_u8(nla_type: int, value: int) -> bytes:
    return struct.pack("=HHB", 5, nla_type, value) + b"\0\0\0"


def request(cmd: int, flags: int, body: bytes = b"", seq: int = 1) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), (NLDEV << 10) + cmd, flags, seq, 0) + body


def exchange(req: bytes) -> list[bytes]:
    """Send one request on a fresh socket; collect messages until the exchange is over."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_RDMA)
    sock.settimeout(5)
    try:
        sock.send(req)
        flags = struct.unpack_from("=H", req, 6)[0]
        messages: list[bytes] = []
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype, mflags = struct.unpack_from("=IHH", data, offset)
                messages.append(data[offset : offset + length])
                offset += (length + 3) & ~3
                if mtype in (2, 3):  # NLMSG_ERROR (error or ack) / NLMSG_DONE end the exchange
                    return messages
                if not mflags & 0x2 and not flags & F_ACK:  # a doit reply without ACK requested
                    return messages
    except TimeoutError:
        return messages
    finally:
        sock.close()


def describe(req: bytes, replies: list[bytes]) -> str:
    length, mtype, flags = struct.unpack_from("=IHH", req)
    lines = [
        f"request: type={mtype:#06x} (client {mtype >> 10} op {mtype & 0x3FF}) flags={flags:#x} len={length}",
        f"  {req.hex()}",
    ]
    for n, msg in enumerate(replies):
        length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", msg)
        lines.append(f"reply[{n}]: len={length} type={mtype:#06x} flags={flags:#x} seq={seq} pid={pid}")
        if mtype == 3:
            code = struct.unpack_from("=i", msg, 16)[0]
            lines.append(f"  NLMSG_DONE (payload int {code}{' = ' + os.strerror(-code) if code else ''})")
            continue
        if mtype == 2:
            code = struct.unpack_from("=i", msg, 16)[0]
            lines.append(f"  NLMSG_ERROR error={code} ({os.strerror(-code) if code else 'ACK'})")
            continue
        offset = 16
        while offset + 4 <= len(msg):
            alen, atype = struct.unpack_from("=HH", msg, offset)
            body = msg[offset + 4 : offset + alen]
            value = body.rstrip(b"\0").decode(errors="replace") if body.endswith(b"\0") else body.hex()
            if (len(body) in (1, 4, 8) and not body.endswith(b"\0")) or len(body) == 1:
                value = str(int.from_bytes(body, sys.byteorder))
            lines.append(f"  attr {atype:3d} {NAMES.get(atype & 0x3FFF, '?'):22s} len={alen:3d} {value}")
            offset += (alen + 3) & ~3
    return "\n".join(lines) + "\n"


def save(out: Path, case: str, req: bytes) -> list[bytes]:
    replies = exchange(req)
    (out / f"{case}.request.hex").write_text(req.hex() + "\n")
    (out / f"{case}.reply.hex").write_text("".join(m.hex() + "\n" for m in replies))
    (out / f"{case}.decoded.txt").write_text(describe(req, replies))
    return replies


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for module in ("rdma_rxe", "ib_uverbs", "ib_umad", "rdma_ucm"):
        sh("modprobe", module)
    sh("ip", "link", "add", "d0", "type", "dummy")
    sh("ip", "link", "set", "d0", "up")
    sh("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
    sh("ip", "link", "set", "veth0", "up")
    sh("ip", "link", "set", "veth1", "up")
    sh("rdma", "link", "add", "rxe0", "type", "rxe", "netdev", "d0")
    sh("rdma", "link", "add", "rxe1", "type", "rxe", "netdev", "veth0")

    save(out, "dev_get_dump", request(GET, DUMP))
    save(out, "dev_get_doit_rxe0", request(GET, DOIT, nla_u32(1, 0)))
    save(out, "dev_get_doit_nonexistent", request(GET, DOIT, nla_u32(1, 999)))
    save(out, "port_get_doit_rxe0_p1", request(PORT_GET, DOIT, nla_u32(1, 0) + nla_u32(3, 1)))
    save(out, "port_get_dump_rxe0", request(PORT_GET, DUMP, nla_u32(1, 0)))
    save(out, "port_get_dump_rxe1", request(PORT_GET, DUMP, nla_u32(1, 1)))
    save(out, "port_get_dump_nodev", request(PORT_GET, DUMP))
    save(out, "res_get_dump", request(RES_GET, DUMP))
    save(out, "sys_get_doit", request(SYS_GET, DOIT))
    save(out, "sys_get_dump", request(SYS_GET, DUMP))
    (out / "strace_rdma_j_link_show.out").write_text(sh("rdma", "-j", "link", "show"))
    (out / "strace_rdma_j_dev_show.out").write_text(sh("rdma", "-j", "dev", "show"))
    (out / "strace_rdma_system_show.out").write_text(sh("rdma", "system", "show"))
    save(out, "sys_set_exclusive_ok", request(SYS_SET, DOIT, nla_u8(66, 0)))
    save(out, "sys_get_doit_exclusive", request(SYS_GET, DOIT))
    save(out, "sys_set_shared_ok", request(SYS_SET, DOIT, nla_u8(66, 1)))
    sh("ip", "netns", "add", "x")
    try:
        save(out, "sys_set_exclusive_ebusy", request(SYS_SET, DOIT, nla_u8(66, 0)))
    finally:
        sh("ip", "netns", "del", "x")
    print(f"captured {len(list(out.glob('*.reply.hex')))} exchanges into {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
