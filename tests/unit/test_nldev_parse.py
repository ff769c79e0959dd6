"""Each distinct NLDEV message parsed once (ParsedMessages), against bytes recorded from real kernels:
the same bytes give the very same objects, a changed message is parsed again, the memory is bounded,
and a broken reply is still refused."""

from __future__ import annotations

import struct
from collections.abc import Mapping

import pytest

from agent.discover import rdma_netlink as nl
from agent.discover.nldev_parse import ParsedMessages, parse_port
from agent.errors import NetlinkDecodeError
from agent.model import RdmaPort
from tests.netlink_fixtures import KERNELS, reply_bytes, rxe_replay, with_seq

PORT_STATE = 12  # RDMA_NLDEV_ATTR_PORT_STATE (u8)


def _with_u8(raw: bytes, nla_type: int, value: int) -> bytes:
    """The first message of ``raw`` with attribute ``nla_type`` (a u8) set to ``value``."""
    out = bytearray(raw)
    at, end = 16, struct.unpack_from("=I", out, 0)[0]
    while at < end:
        length, kind = struct.unpack_from("=HH", out, at)
        if kind & 0x3FFF == nla_type:
            out[at + 4] = value
            return bytes(out)
        at += (length + 3) & ~3
    raise AssertionError(f"attribute {nla_type} not in the message")


class Counting:
    """parse_port, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, attrs: Mapping[str, int | str]) -> RdmaPort:
        self.calls += 1
        return parse_port(attrs)


def _ports(memo: ParsedMessages[RdmaPort], raw: bytes) -> list[RdmaPort]:
    return [memo.parsed(*m) for m in nl.messages(raw, "PORT_GET", memo)]


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_same_message_is_parsed_once_whatever_its_sequence_number(kernel: str) -> None:
    parse = Counting()
    memo = ParsedMessages(parse, nl.payload_attributes)
    raw = reply_bytes(kernel, "port_get_dump_rxe0")
    (first,) = _ports(memo, with_seq(raw, 7))
    (again,) = _ports(memo, with_seq(raw, 8))
    assert again is first
    assert parse.calls == 1
    assert (first.port, first.state, first.netdev) == (1, "ACTIVE", "d0")
    assert first == parse_port(nl.decode(raw)[0])  # the same answer as without the memo


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_changed_message_is_parsed_again(kernel: str) -> None:
    parse = Counting()
    memo = ParsedMessages(parse, nl.payload_attributes)
    raw = reply_bytes(kernel, "port_get_dump_rxe0")
    (active,) = _ports(memo, raw)
    (down,) = _ports(memo, _with_u8(raw, PORT_STATE, 1))
    (back,) = _ports(memo, raw)
    assert (active.state, down.state, back.state) == ("ACTIVE", "DOWN", "ACTIVE")
    assert back is active
    assert parse.calls == 2


def test_memory_is_bounded_by_the_limit() -> None:
    memo = ParsedMessages(parse_port, nl.payload_attributes, limit=3)
    raw = reply_bytes(KERNELS[0], "port_get_dump_rxe0")
    states = [_ports(memo, _with_u8(raw, PORT_STATE, state))[0].state for state in range(6)]
    assert states == ["NOP", "DOWN", "INIT", "ARMED", "ACTIVE", "ACTIVE_DEFER"]
    assert 1 <= len(memo) <= 3


def test_a_payload_forgotten_meanwhile_is_decoded_from_its_bytes() -> None:
    """Another thread may empty the memo between ``messages`` (which skipped decoding a known
    payload) and ``parsed``: the payload's own bytes are decoded then."""
    raw = reply_bytes(KERNELS[0], "port_get_dump_rxe0")
    warm = ParsedMessages(parse_port, nl.payload_attributes)
    (payload, attrs), *_ = nl.messages(raw, "PORT_GET", ())
    assert attrs is not None
    warm.parsed(payload, attrs)
    (known,) = [m for m in nl.messages(raw, "PORT_GET", warm) if m.payload]
    assert known.attrs is None  # not decoded: known
    cold = ParsedMessages(parse_port, nl.payload_attributes)
    assert cold.parsed(known.payload, None) == warm.parsed(payload, None)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_broken_message_is_refused_although_its_neighbours_are_known(kernel: str) -> None:
    memo = ParsedMessages(parse_port, nl.payload_attributes)
    raw = reply_bytes(kernel, "port_get_dump_rxe0")
    _ports(memo, raw)
    broken = bytearray(raw)
    struct.pack_into("=H", broken, 16, 0xFFF)  # the first attribute claims more than the message
    with pytest.raises(NetlinkDecodeError, match="claims"):
        _ports(memo, bytes(broken))


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_cycles_socket_gives_the_same_device_and_port_objects(kernel: str) -> None:
    first, second = nl.RdmaNetlink(exchange=rxe_replay(kernel)), nl.RdmaNetlink(exchange=rxe_replay(kernel))
    devices = first.devices()
    assert [d.name for d in devices] == ["rxe0", "rxe1"]
    assert all(a is b for a, b in zip(devices, second.devices(), strict=True))
    assert first.ports(0)[0] is second.ports(0)[0]
