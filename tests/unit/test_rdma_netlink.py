"""NETLINK_RDMA decoding and the socket adapter, against bytes recorded from real kernels (6.1, 6.12)
and iproute2's own output for the same exchanges; plus malformed and error replies."""

from __future__ import annotations

import collections
import errno
import socket
import struct
from collections.abc import Callable

import pytest

from agent.discover import rdma_netlink as nl
from agent.errors import NetlinkDecodeError, NetlinkError
from agent.model import NetnsMode
from tests.netlink_fixtures import (
    KERNELS,
    NETLINK_DIR,
    Replay,
    iproute2_json,
    reply_bytes,
    request_bytes,
    rxe_replay,
    with_seq,
)

assert KERNELS == ("6.1.0-56-amd64", "6.12.95+deb12-amd64")


@pytest.mark.parametrize("kernel", KERNELS)
def test_device_dump_matches_iproute2(kernel: str) -> None:
    devices = [nl.parse_device(a) for a in nl.decode(reply_bytes(kernel, "dev_get_dump"))]
    expected = iproute2_json(kernel, "strace_rdma_j_dev_show")
    got = [
        {
            "ifindex": d.index,
            "ifname": d.name,
            "node_type": d.node_type,
            "node_guid": d.node_guid,
            "sys_image_guid": d.sys_image_guid,
        }
        for d in devices
    ]
    assert got == expected
    assert [(d.protocol, d.port_count, d.fw_version) for d in devices] == [("roce", 1, None)] * 2


@pytest.mark.parametrize("kernel", KERNELS)
def test_port_doit_reply_is_typed_get_and_matches_iproute2(kernel: str) -> None:
    raw = reply_bytes(kernel, "port_get_doit_rxe0_p1")
    assert struct.unpack_from("=H", raw, 4)[0] == nl.message_type(nl.CMD_GET)  # the kernel quirk
    (attrs,) = nl.decode(raw)
    port = nl.parse_port(attrs)
    link = iproute2_json(kernel, "strace_rdma_j_link_show")[0]
    assert (attrs["DEV_NAME"], attrs["DEV_INDEX"]) == (link["ifname"], link["ifindex"])
    assert (port.port, port.state, port.physical_state, port.netdev, port.netdev_index) == (
        link["port"],
        link["state"],
        link["physical_state"],
        link["netdev"],
        link["netdev_index"],
    )
    assert (port.state_code, port.physical_state_code, port.lid, port.link_up) == (4, 5, None, True)


@pytest.mark.parametrize("kernel", KERNELS)
def test_system_get(kernel: str) -> None:
    shared = nl.parse_system(nl.decode(reply_bytes(kernel, "sys_get_doit"))[0])
    exclusive = nl.parse_system(nl.decode(reply_bytes(kernel, "sys_get_doit_exclusive"))[0])
    assert (shared.netns_mode, exclusive.netns_mode) == (NetnsMode.SHARED, NetnsMode.EXCLUSIVE)
    assert (shared.copy_on_fork, shared.privileged_qkey) == (True, False)
    # MONITOR_MODE exists from ~6.13 on; 6.12 (Debian backport) already sends it, 6.1 does not.
    assert shared.monitor == (True if kernel.startswith("6.12") else None)
    text = (NETLINK_DIR / kernel / "strace_rdma_system_show.out").read_text()
    assert text.split()[:2] == ["netns", "shared"]


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("port_get_dump_nodev", errno.EINVAL),  # the error arrives inside NLMSG_DONE
        ("dev_get_doit_nonexistent", errno.EINVAL),
        ("sys_get_dump", errno.EINVAL),  # SYS_GET has no dump
        ("sys_set_exclusive_ebusy", errno.EBUSY),
    ],
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_errors_carry_errno(kernel: str, case: str, code: int) -> None:
    with pytest.raises(NetlinkError) as info:
        nl.decode(reply_bytes(kernel, case), op=case)
    assert info.value.errno == code
    assert errno.errorcode[code] in str(info.value)


@pytest.mark.parametrize("kernel", KERNELS)
def test_success_ack_yields_nothing(kernel: str) -> None:
    assert nl.decode(reply_bytes(kernel, "sys_set_exclusive_ok")) == []
    assert nl.decode(reply_bytes(kernel, "sys_set_shared_ok")) == []


@pytest.mark.parametrize(
    ("case", "cmd", "attrs", "flags"),
    [
        ("dev_get_dump", nl.CMD_GET, [], 0x301),
        ("port_get_doit_rxe0_p1", nl.CMD_PORT_GET, [("DEV_INDEX", 0), ("PORT_INDEX", 1)], 0x5),
        ("sys_get_doit", nl.CMD_SYS_GET, [], 0x5),
        ("sys_set_exclusive_ok", nl.CMD_SYS_SET, [("NETNS_MODE", 0)], 0x5),
        ("sys_set_shared_ok", nl.CMD_SYS_SET, [("NETNS_MODE", 1)], 0x5),
    ],
)
def test_requests_match_recorded_bytes(case: str, cmd: int, attrs: list[tuple[str, int]], flags: int) -> None:
    assert nl.encode_request(cmd, attrs, flags=flags, seq=1) == request_bytes(KERNELS[0], case)


# --- malformed input, derived from a recorded GET reply -------------------------------------------

_DUMP = reply_bytes(KERNELS[0], "dev_get_dump")
GOOD = _DUMP[: struct.unpack_from("=I", _DUMP)[0]]  # the first message: rxe0


def _message(*attrs: bytes, mtype: int = 0x1401) -> bytes:
    body = b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), mtype, 2, 1, 1) + body


def _nla(nla_type: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), nla_type) + payload + b"\0" * (-(4 + len(payload)) % 4)


def test_first_recorded_message_decodes() -> None:
    (attrs,) = nl.decode(GOOD)
    assert attrs["DEV_NAME"] == "rxe0"


@pytest.mark.parametrize("cut", [20, 30, 50, 60, len(GOOD) - 4])  # none on an attribute boundary
def test_truncated_messages_raise(cut: int) -> None:
    bad = bytearray(GOOD[:cut])
    struct.pack_into("=I", bad, 0, cut)  # header claims exactly what is there; the attribute does not fit
    with pytest.raises(NetlinkDecodeError):
        nl.decode(bytes(bad))


def test_message_longer_than_datagram_raises() -> None:
    with pytest.raises(NetlinkDecodeError):
        nl.decode(GOOD[:-8])


@pytest.mark.parametrize(
    "attr",
    [
        struct.pack("=HHB", 5, 1, 7) + b"\0\0\0",  # DEV_INDEX (u32) with 1 byte
        _nla(6, b"\1\2\3\4"),  # NODE_GUID (u64) with 4 bytes
        _nla(2, b"rxe0"),  # DEV_NAME without its NUL
        struct.pack("=HH", 2, 1),  # nla_len below the header size
    ],
)
def test_malformed_attributes_raise(attr: bytes) -> None:
    with pytest.raises(NetlinkDecodeError):
        nl.decode(_message(_nla(2, b"ok\0"), attr))


def test_unknown_pad_flags_and_order_are_tolerated() -> None:
    raw = _message(
        _nla(117, b"\xff" * 8),  # unknown (newer kernel)
        _nla(0, b""),  # PAD before a u64
        _nla(6 | 0x4000, struct.pack("=Q", 0x0C42A10300AB12CD)),  # NET_BYTEORDER bit set: masked off
        _nla(2, b"mlx5_0\0"),
        _nla(1, struct.pack("=I", 7)),
    )
    device = nl.parse_device(nl.decode(raw)[0])
    assert (device.name, device.index, device.node_guid) == ("mlx5_0", 7, "0c42:a103:00ab:12cd")


def test_missing_required_attribute_raises() -> None:
    with pytest.raises(NetlinkDecodeError, match="DEV_INDEX"):
        nl.parse_device(nl.decode(_message(_nla(2, b"x\0")))[0])


@pytest.mark.parametrize(
    "tail",
    [
        struct.pack("=IHHII", 64, 0x1401, 2, 1, 1),  # a message header promising more than follows
        struct.pack("=IHHII", 0, 0x1401, 2, 1, 1),  # a zero-length header
    ],
)
def test_trailing_partial_message_raises(tail: bytes) -> None:
    with pytest.raises(NetlinkDecodeError):
        nl.decode(GOOD + tail)


@pytest.mark.parametrize("code", [errno.EPERM, errno.EBUSY, errno.EINVAL, errno.ENOMEM])
def test_error_codes_from_a_recorded_error_reply(code: int) -> None:
    raw = bytearray(reply_bytes(KERNELS[1], "sys_set_exclusive_ebusy"))
    struct.pack_into("=i", raw, 16, -code)  # same real layout, another errno
    with pytest.raises(NetlinkError) as info:
        nl.decode(bytes(raw))
    assert info.value.errno == code


# --- the adapter over a replayed transport ----------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_adapter_reads_devices_ports_and_system(kernel: str) -> None:
    replay = rxe_replay(kernel)
    sock = nl.RdmaNetlink(exchange=replay)
    devices = sock.devices()
    assert [d.name for d in devices] == ["rxe0", "rxe1"]
    (port,) = sock.ports(0)
    assert (port.port, port.netdev, port.state) == (1, "d0", "ACTIVE")
    assert sock.port(0, 1) == port
    assert sock.system().netns_mode is NetnsMode.SHARED
    flags = [f for _, _, f in replay.calls]
    assert flags == [0x301, 0x301, 0x5, 0x5]  # dumps use REQUEST|DUMP, doits REQUEST|ACK — never REPLACE


@pytest.mark.parametrize("kernel", KERNELS)
def test_adapter_dump_error_in_done_is_not_an_empty_list(kernel: str) -> None:
    sock = nl.RdmaNetlink(exchange=rxe_replay(kernel))
    with pytest.raises(NetlinkError) as info:
        sock.request(nl.CMD_PORT_GET, flags=nl.FLAGS_DUMP)
    assert info.value.errno == errno.EINVAL


def test_adapter_set_netns_mode_sends_one_byte_and_raises_ebusy() -> None:
    ok = rxe_replay(KERNELS[1])
    nl.RdmaNetlink(exchange=ok).set_netns_mode(NetnsMode.EXCLUSIVE)
    assert ok.calls == [(nl.CMD_SYS_SET, (("NETNS_MODE", 0),), 0x5)]
    busy = Replay(KERNELS[1], {(nl.CMD_SYS_SET, False, None, None): "sys_set_exclusive_ebusy"})
    with pytest.raises(NetlinkError) as info:
        nl.RdmaNetlink(exchange=busy).set_netns_mode(NetnsMode.EXCLUSIVE)
    assert info.value.errno == errno.EBUSY


def test_socket_without_rdma_netlink_raises_eprotonosupport() -> None:
    try:
        sock = nl.RdmaNetlink()
    except NetlinkError as err:
        assert err.errno == errno.EPROTONOSUPPORT
        return
    sock.close()
    pytest.skip("this kernel has NETLINK_RDMA; the no-RDMA path is covered where it has not")


# --- decoding details (where the pyroute2 marshal this decoder replaced read differently) ----------


def _raw(mtype: int, body: bytes, *, flags: int = 2, seq: int = 1, length: int | None = None) -> bytes:
    return struct.pack("=IHHII", 16 + len(body) if length is None else length, mtype, flags, seq, 0) + body


def _code(code: int) -> bytes:
    return struct.pack("=i", code)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"rxe0\0", "rxe0"),
        (b"rxe0\0\0\0\0", "rxe0"),  # more NULs inside the attribute: the text ends at the first
        (b"ab\0cd\0", "ab"),  # the kernel and iproute2 read up to the first NUL (pyroute2: "ab\x00cd")
        (b"\0rxe0\0", ""),  # (pyroute2 stripped NULs at both ends: "rxe0")
        (b"mlx\xff5\0", "mlx\ufffd5"),  # no UTF-8: replaced (pyroute2 dropped the attribute altogether)
        ("ümlaut_0".encode() + b"\0", "ümlaut_0"),
    ],
)
def test_strings_end_at_the_first_nul(body: bytes, text: str) -> None:
    (attrs,) = nl.decode(_message(_nla(2, body), _nla(1, struct.pack("=I", 3))))
    assert attrs == {"DEV_NAME": text, "DEV_INDEX": 3}


def test_invalid_utf8_name_keeps_the_device() -> None:
    # Before, the undecodable name vanished and the whole GET dump failed with "reply lacks DEV_NAME".
    device = nl.parse_device(nl.decode(_message(_nla(2, b"\xc3(\0"), _nla(1, struct.pack("=I", 0))))[0])
    assert (device.name, device.index) == ("\ufffd(", 0)


def test_repeated_attribute_last_one_counts() -> None:
    (attrs,) = nl.decode(_message(_nla(1, struct.pack("=I", 1)), _nla(1, struct.pack("=I", 2))))
    assert attrs == {"DEV_INDEX": 2}


def test_messages_are_aligned_like_the_kernel_aligns_them() -> None:
    # A length that is no multiple of 4 (a u8 without its padding): the next message starts at the
    # next 4-byte boundary (NLMSG_ALIGN), as the kernel and libmnl walk them.
    first = _raw(0x1401, struct.pack("=HHB", 5, 12, 4), length=21) + b"\0\0\0"
    assert nl.decode(first + _raw(0x1401, _nla(2, b"rxe1\0"))) == [{"PORT_STATE": 4}, {"DEV_NAME": "rxe1"}]
    assert nl.decode(first[:-3]) == [{"PORT_STATE": 4}]  # the last one needs no padding behind it


@pytest.mark.parametrize("length", [1, 8, 15])
def test_message_length_below_the_header_raises(length: int) -> None:
    with pytest.raises(NetlinkDecodeError, match="shorter than its 16-byte header"):
        nl.decode(_raw(0x1401, b"\0" * 16, length=length))


def test_error_message_without_its_code_raises() -> None:
    with pytest.raises(NetlinkDecodeError, match="no error code"):
        nl.decode(_raw(2, b"", flags=0) + _code(-errno.EBUSY))  # length 16: the code lies outside


def test_positive_error_code_is_that_errno() -> None:
    # No kernel sends one; libmnl (iproute2) reports it as the errno, and so does this decoder.
    with pytest.raises(NetlinkError) as info:
        nl.decode(_raw(2, _code(errno.EPERM), flags=0))
    assert info.value.errno == errno.EPERM


@pytest.mark.parametrize("flags", [0x2, 0x2 | 0x200])  # NLM_F_MULTI, with or without NLM_F_ACK_TLVS
def test_done_error_with_or_without_tlvs(flags: int) -> None:
    tlv = _nla(1, b"bad dump\0") if flags & 0x200 else b""
    with pytest.raises(NetlinkError) as info:
        nl.decode(_raw(3, _code(-errno.EOPNOTSUPP) + tlv, flags=flags))
    assert info.value.errno == errno.EOPNOTSUPP
    assert nl.decode(_raw(3, _code(0) + tlv, flags=flags)) == []
    assert nl.decode(_raw(3, b"", flags=flags)) == []  # a DONE without its int: the end, no error


def test_other_message_types_are_empty_records() -> None:
    assert nl.decode(_raw(0x10, _nla(2, b"x\0")) + _raw(1, b"")) == [{}, {}]


def test_empty_reply_and_short_tails() -> None:
    assert nl.decode(b"") == []
    assert nl.decode(GOOD + b"\0" * 15) == [nl.decode(GOOD)[0]]  # too short to be a message: ignored
    with pytest.raises(NetlinkDecodeError, match="no complete message"):
        nl.decode(GOOD[:15])


def test_first_failing_message_decides_unless_framing_breaks() -> None:
    ebusy = _raw(2, _code(-errno.EBUSY) + GOOD[:16], flags=0)
    bad = _message(_nla(1, b"\1"))
    with pytest.raises(NetlinkError, match="EBUSY"):
        nl.decode(ebusy + bad + GOOD)
    with pytest.raises(NetlinkDecodeError, match="attribute 1 has 1 bytes"):
        nl.decode(bad + ebusy)
    with pytest.raises(NetlinkDecodeError, match="after the last complete message"):
        nl.decode(ebusy + struct.pack("=IHHII", 4096, 0x1401, 2, 1, 1))  # a broken header ends it all


def test_cut_error_keeps_its_errno_behind_a_message() -> None:
    raw = reply_bytes(KERNELS[0], "sys_set_exclusive_ebusy")
    with pytest.raises(NetlinkError) as info:
        nl.decode(GOOD + raw[:24])  # code intact, echoed request cut
    assert info.value.errno == errno.EBUSY
    with pytest.raises(NetlinkDecodeError):  # alone, its length exceeds all there is: framing is broken
        nl.decode(raw[:24])


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ([("DEV_NAME", "rxe0")], "090002007278653000000000"),  # NUL-terminated, padded to 4
        ([("NDEV_NAME", "eth0"), ("DEV_INDEX", 7)], "09003300657468300000000008000100" + "07000000"),
        ([("NODE_GUID", 0x0C42A10300AB12CD)], "0c000600cd12ab0003a1420c"),
    ],
)
def test_request_attribute_encoding(attrs: list[tuple[str, int | str]], expected: str) -> None:
    raw = nl.encode_request(nl.CMD_SET, attrs, flags=nl.FLAGS_DOIT, seq=9)
    assert raw[16:].hex() == expected
    assert struct.unpack_from("=IHHII", raw) == (len(raw), 0x1402, 0x5, 9, 0)


@pytest.mark.parametrize(
    "attrs",
    [[("LINK_TYPE", "rxe")], [("DEV_INDEX", "0")], [("DEV_NAME", 1)], [("NETNS_MODE", 256)], [("PAD", 0)]],
)
def test_request_encoding_refuses_what_the_kernel_would(attrs: list[tuple[str, int | str]]) -> None:
    with pytest.raises((ValueError, struct.error)):
        nl.encode_request(nl.CMD_SET, attrs, flags=nl.FLAGS_DOIT)


# --- the socket path, against a fake kernel behind create_socket ------------------------------------

Datagram = tuple[bytes, int] | BaseException  # (bytes, sender port id) or what recvfrom raises


class FakeSocket:
    """What ``pyroute2.netns.create_socket`` returns, with the kernel replaced by ``answer``: it gets
    each request and returns the datagrams to queue; an empty queue times out (EAGAIN), as the socket
    with SO_RCVTIMEO would."""

    def __init__(self, answer: Callable[[bytes], list[Datagram]]) -> None:
        self.answer = answer
        self.queue: collections.deque[Datagram] = collections.deque()
        self.sent: list[bytes] = []
        self.timeout: float | None = None
        self.closed = False

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_RCVTIMEO)
        seconds, microseconds = struct.unpack("@ll", value)
        self.timeout = seconds + microseconds / 1e6

    def sendto(self, data: bytes, address: tuple[int, int]) -> int:
        assert address == (0, 0) and not self.closed
        self.sent.append(data)
        self.queue.extend(self.answer(data))
        return len(data)

    def recvfrom_into(self, buffer: bytearray, nbytes: int, flags: int) -> tuple[int, tuple[int, int]]:
        assert nbytes == 0 and flags == socket.MSG_TRUNC and not self.closed
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")  # SO_RCVTIMEO passed
        item = self.queue.popleft()
        if isinstance(item, BaseException):
            raise item
        data, sender = item
        size = min(len(data), len(buffer))
        buffer[:size] = data[:size]
        return len(data), (sender, 0)  # MSG_TRUNC: the datagram's real length

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[bytes], list[Datagram]]], list[FakeSocket]]:
    """Install a fake kernel; returns the list of sockets the adapter opened."""

    def install(answer: Callable[[bytes], list[Datagram]]) -> list[FakeSocket]:
        opened: list[FakeSocket] = []

        def create_socket(netns: object, family: int, kind: int, proto: int) -> FakeSocket:
            assert (netns, family, kind, proto) == (None, socket.AF_NETLINK, socket.SOCK_DGRAM, nl.NETLINK_RDMA)
            opened.append(FakeSocket(answer))
            return opened[-1]

        monkeypatch.setattr(nl, "create_socket", create_socket)
        return opened

    return install


def _seq(request: bytes) -> int:
    return int(struct.unpack_from("=I", request, 8)[0])


def test_socket_dump_across_datagrams_skips_strangers(
    kernel: Callable[[Callable[[bytes], list[Datagram]]], list[FakeSocket]],
) -> None:
    dump = reply_bytes(KERNELS[1], "dev_get_dump")
    rxe0 = dump[: struct.unpack_from("=I", dump)[0]]
    rest = dump[len(rxe0) :]

    def answer(request: bytes) -> list[Datagram]:
        seq = _seq(request)
        return [
            (with_seq(GOOD, seq + 100), 0),  # left over from another exchange
            (with_seq(rxe0, seq), 0),
            (with_seq(GOOD, seq), 4242),  # not from the kernel
            (with_seq(GOOD, seq + 100) + with_seq(rest, seq), 0),  # a stranger first in a datagram
            (with_seq(GOOD, seq), 0),  # after NLMSG_DONE: never read
        ]

    opened = kernel(answer)
    with nl.RdmaNetlink() as rdma:
        (sock,) = opened
        assert [d.name for d in rdma.devices()] == ["rxe0", "rxe1"]
        assert [d.name for d in rdma.devices()] == ["rxe0", "rxe1"]  # the unread datagram is skipped
    assert sock.closed and len(opened) == 1 and sock.timeout == nl.REPLY_TIMEOUT
    assert sock.sent == [nl.encode_request(nl.CMD_GET, flags=nl.FLAGS_DUMP, seq=seq) for seq in (1, 2)]


def test_socket_doit_reads_through_the_ack(
    kernel: Callable[[Callable[[bytes], list[Datagram]]], list[FakeSocket]],
) -> None:
    reply = reply_bytes(KERNELS[0], "port_get_doit_rxe0_p1")  # the reply, then the ACK
    ack_at = struct.unpack_from("=I", reply)[0]

    def answer(request: bytes) -> list[Datagram]:
        return [(with_seq(reply[:ack_at], _seq(request)), 0), (with_seq(reply[ack_at:], _seq(request)), 0)]

    opened = kernel(answer)
    with nl.RdmaNetlink() as rdma:
        (sock,) = opened
        port = rdma.port(0, 1)
        assert (port.port, port.netdev) == (1, "d0")
        assert not sock.queue  # the ACK was read with its reply, not left for the next request


def test_socket_doit_without_ack_ends_at_its_reply(
    kernel: Callable[[Callable[[bytes], list[Datagram]]], list[FakeSocket]],
) -> None:
    single = reply_bytes(KERNELS[0], "sys_get_doit")
    kernel(lambda request: [(with_seq(single, _seq(request)), 0)])
    with nl.RdmaNetlink() as rdma:
        assert rdma.request(nl.CMD_SYS_GET, flags=0x1) == nl.decode(single)


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (OSError(errno.ENOBUFS, "No buffer space available"), errno.ENOBUFS),
        (InterruptedError(errno.EINTR, "Interrupted system call"), errno.EINTR),
        (None, errno.ETIMEDOUT),  # nothing comes
        (("big", 0), errno.EMSGSIZE),  # a datagram larger than the receive buffer
    ],
)
def test_socket_failures_raise_the_errno_and_reopen(
    kernel: Callable[[Callable[[bytes], list[Datagram]]], list[FakeSocket]], failure: object, code: int
) -> None:
    answers = [0]
    ok = reply_bytes(KERNELS[0], "sys_get_doit")

    def answer(request: bytes) -> list[Datagram]:
        answers[0] += 1
        if answers[0] > 1:
            return [(with_seq(ok, _seq(request)), 0)]
        if failure is None:
            return []
        if isinstance(failure, tuple):
            return [(b"\0" * (nl.RECEIVE_BUFFER + 1), 0)]
        assert isinstance(failure, BaseException)
        return [failure]

    opened = kernel(answer)
    with nl.RdmaNetlink(timeout=0.25) as rdma:
        assert opened[0].timeout == 0.25
        with pytest.raises(NetlinkError) as info:
            rdma.system()
        assert info.value.errno == code and info.value.op == "SYS_GET"
        assert opened[0].closed  # whatever is left of that exchange can't answer the next one
        assert rdma.system().netns_mode is NetnsMode.SHARED
    assert len(opened) == 2 and opened[1].closed


def test_socket_broken_framing_is_a_decode_error(
    kernel: Callable[[Callable[[bytes], list[Datagram]]], list[FakeSocket]],
) -> None:
    kernel(lambda request: [(with_seq(GOOD, _seq(request))[:40], 0)])  # the header claims more
    with nl.RdmaNetlink() as rdma, pytest.raises(NetlinkDecodeError):
        rdma.devices()


def test_socket_path_against_this_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    # No NETLINK_RDMA here, but rtnetlink runs the same socket code for real (send, SO_RCVTIMEO,
    # recvfrom_into with MSG_TRUNC, the sender check): it refuses NLDEV types with EOPNOTSUPP.
    monkeypatch.setattr(nl, "NETLINK_RDMA", 0)  # NETLINK_ROUTE
    try:
        rdma = nl.RdmaNetlink(timeout=2)
    except NetlinkError as err:
        pytest.skip(f"no rtnetlink here: {err}")
    with rdma:
        for request in (rdma.devices, rdma.system, lambda: rdma.ports(0), rdma.devices):
            with pytest.raises(NetlinkError) as info:
                request()
            assert info.value.errno == errno.EOPNOTSUPP
