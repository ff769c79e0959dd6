"""NETLINK_RDMA decoding and the socket adapter, against bytes recorded from real kernels (6.1, 6.12)
and iproute2's own output for the same exchanges; plus malformed and error replies."""

from __future__ import annotations

import errno
import struct

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
)

assert KERNELS == ("6.1.0-56-amd64", "6.12.95+deb12-amd64")


@pytest.mark.parametrize("kernel", KERNELS)
def test_device_dump_matches_iproute2(kernel: str) -> None:
    devices = [nl.parse_device(a) for a in nl.decode(reply_bytes(kernel, "dev_get_dump"))]
    expected = iproute2_json(kernel, "strace_rdma_j_dev_show")
    got = [
        {"ifindex": d.index, "ifname": d.name, "node_type": d.node_type, "node_guid": d.node_guid,
         "sys_image_guid": d.sys_image_guid}
        for d in devices
    ]  # fmt: skip
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
