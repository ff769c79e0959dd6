"""Recorded NETLINK_RDMA exchanges (tests/fixtures/netlink/<kernel>/<case>.{request,reply}.hex).

Each ``.reply.hex`` holds the messages the kernel sent, one hex line per message, in arrival order;
they were recorded from real Debian kernels under QEMU by tools/capture_netlink.py."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.discover.rdma_netlink import CMD_GET, CMD_PORT_GET, CMD_SYS_GET, CMD_SYS_SET, FLAGS_DUMP

NETLINK_DIR = Path(__file__).parent / "fixtures" / "netlink"
KERNELS = tuple(sorted(p.name for p in NETLINK_DIR.iterdir() if p.is_dir()))


def reply_bytes(kernel: str, case: str) -> bytes:
    text = (NETLINK_DIR / kernel / f"{case}.reply.hex").read_text()
    return b"".join(bytes.fromhex(line) for line in text.split())


def with_seq(raw: bytes, seq: int) -> bytes:
    """Recorded messages with their sequence number replaced (each exchange of a socket has its own)."""
    out = bytearray(raw)
    offset = 0
    while offset + 16 <= len(out):
        struct.pack_into("=I", out, offset + 8, seq)
        offset += (struct.unpack_from("=I", out, offset)[0] + 3) & ~3
    return bytes(out)


def request_bytes(kernel: str, case: str) -> bytes:
    return bytes.fromhex((NETLINK_DIR / kernel / f"{case}.request.hex").read_text().strip())


def iproute2_json(kernel: str, case: str) -> Any:
    return json.loads((NETLINK_DIR / kernel / f"{case}.out").read_text())


class Replay:
    """An ``Exchange`` that answers requests with the recorded reply bytes, as the socket would.

    ``cases`` maps (cmd, dump?, dev_index, port) to a recorded case name; every call is logged."""

    def __init__(self, kernel: str, cases: dict[tuple[int, bool, int | None, int | None], str]) -> None:
        self.kernel = kernel
        self.cases = cases
        self.calls: list[tuple[int, tuple[tuple[str, int | str], ...], int]] = []

    def __call__(self, cmd: int, attrs: Sequence[tuple[str, int | str]], flags: int) -> bytes:
        self.calls.append((cmd, tuple(attrs), flags))
        given = dict(attrs)
        key = (cmd, flags & FLAGS_DUMP == FLAGS_DUMP, given.get("DEV_INDEX"), given.get("PORT_INDEX"))
        dev = key[2] if isinstance(key[2], int) else None
        port = key[3] if isinstance(key[3], int) else None
        case = self.cases[(cmd, key[1], dev, port)]
        return reply_bytes(self.kernel, case)


def rxe_replay(kernel: str, *, ebusy: bool = False, exclusive: bool = False) -> Replay:
    """The two-rxe-device node (rxe0 on dummy d0, rxe1 on veth0) as recorded."""
    return Replay(
        kernel,
        {
            (CMD_GET, True, None, None): "dev_get_dump",
            (CMD_PORT_GET, True, 0, None): "port_get_dump_rxe0",
            (CMD_PORT_GET, True, 1, None): "port_get_dump_rxe1",
            (CMD_PORT_GET, True, None, None): "port_get_dump_nodev",
            (CMD_PORT_GET, False, 0, 1): "port_get_doit_rxe0_p1",
            (CMD_SYS_GET, False, None, None): "sys_get_doit_exclusive" if exclusive else "sys_get_doit",
            (CMD_SYS_SET, False, None, None): "sys_set_exclusive_ebusy" if ebusy else "sys_set_exclusive_ok",
        },
    )
