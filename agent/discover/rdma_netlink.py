"""NETLINK_RDMA (RDMA_NL_NLDEV): the only module that imports pyroute2.

What ``rdma dev``, ``rdma link`` and ``rdma system`` show, read the way iproute2 reads it
(rdma/utils.c, dev.c, link.c, sys.c) from the kernel's nldev interface
(drivers/infiniband/core/nldev.c, include/uapi/rdma/rdma_netlink.h). Kernel facts this relies on:

- No family header: attributes start right after the 16-byte nlmsghdr; integers are host order.
- A PORT_GET *doit* reply is typed as GET (0x1401); replies are therefore never filtered by type.
- A failing dump reports its errno inside NLMSG_DONE, not as NLMSG_ERROR (iproute2's
  ``mnlu_cb_stop`` reads it there too), so "no devices" can't be faked by a failed dump.
- Every attribute must fit its message, known fixed-size attributes have exactly their size (the
  kernel's NLA_U8/U32/U64 policy) and known strings are NUL-terminated (NLA_NUL_STRING); anything
  else is a malformed reply, reported, never half-decoded.
- Flags are explicit: ``REQUEST|ACK`` for doit and ``REQUEST|DUMP`` for dump. NLM_F_DUMP is
  ROOT|MATCH (0x300), so REPLACE/EXCL presets would turn a SET into a (failing) dump.

:func:`decode` is one pass of ``struct`` over the replies and :func:`encode_request` builds requests
(pyroute2's marshal is many times slower: docs/benchmarks.md). :class:`RdmaNetlink` drives
pyroute2's socket (``pyroute2.netns.create_socket``) synchronously, without its asyncio core, which
costs milliseconds per request under QEMU TCG. Everything above the socket is pure; the transport
(:data:`Exchange`: request → raw reply bytes) is replaced by recorded replies in tests.
"""

from __future__ import annotations

import errno as errno_mod
import socket
import struct
from collections.abc import Callable, Container, Sequence
from operator import attrgetter
from typing import Final, NamedTuple

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_MULTI, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netns import create_socket

from agent.discover.nldev_parse import ParsedMessages, parse_device, parse_port, parse_system
from agent.errors import NetlinkDecodeError, NetlinkError
from agent.model import NetnsMode, RdmaDevice, RdmaPort, SystemInfo

__all__ = ["RdmaNetlink", "decode", "encode_request", "messages", "parse_device", "parse_port", "parse_system"]

NETLINK_RDMA: Final = 20  # include/uapi/linux/netlink.h; pyroute2 has no constant for it
RDMA_NL_NLDEV: Final = 5

CMD_GET: Final = 1
CMD_SET: Final = 2
CMD_PORT_GET: Final = 5
CMD_SYS_GET: Final = 6
CMD_SYS_SET: Final = 7
_CMD_NAMES: Final = {
    CMD_GET: "GET",
    CMD_SET: "SET",
    CMD_PORT_GET: "PORT_GET",
    CMD_SYS_GET: "SYS_GET",
    CMD_SYS_SET: "SYS_SET",
}

FLAGS_DOIT: Final = NLM_F_REQUEST | NLM_F_ACK
FLAGS_DUMP: Final = NLM_F_REQUEST | NLM_F_DUMP


def message_type(cmd: int) -> int:
    """``RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, cmd)``: the client in bits 10-15, the op below."""
    return (RDMA_NL_NLDEV << 10) + cmd


# (number, short name, wire format) for the attributes this agent reads or writes. Names are the uapi
# names without the RDMA_NLDEV_ATTR_ / RDMA_NLDEV_SYS_ATTR_ prefix. Any other attribute is ignored.
ATTRIBUTES: Final[tuple[tuple[int, str, str], ...]] = (
    (0, "PAD", "none"),
    (1, "DEV_INDEX", "u32"),
    (2, "DEV_NAME", "str"),
    (3, "PORT_INDEX", "u32"),
    (4, "CAP_FLAGS", "u64"),
    (5, "FW_VERSION", "str"),
    (6, "NODE_GUID", "u64"),
    (7, "SYS_IMAGE_GUID", "u64"),
    (8, "SUBNET_PREFIX", "u64"),
    (9, "LID", "u32"),
    (10, "SM_LID", "u32"),
    (11, "LMC", "u8"),
    (12, "PORT_STATE", "u8"),
    (13, "PORT_PHYS_STATE", "u8"),
    (14, "DEV_NODE_TYPE", "u8"),
    (50, "NDEV_INDEX", "u32"),
    (51, "NDEV_NAME", "str"),
    (66, "NETNS_MODE", "u8"),
    (67, "DEV_PROTOCOL", "str"),
    (84, "DEV_DIM", "u8"),
    (93, "COPY_ON_FORK", "u8"),
    (96, "PRIVILEGED_QKEY_MODE", "u8"),
    (101, "NAME_ASSIGN_TYPE", "u8"),
    (103, "MONITOR_MODE", "u8"),
)
_NLA_TYPE_MASK: Final = 0x3FFF  # strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
_MAX_ERRNO: Final = 4095  # include/linux/err.h: the kernel's error codes are -1 … -4095
_NLDEV_FIRST: Final = message_type(0)
_NLDEV_END: Final = message_type(32)  # NLDEV replies: 0x1400 … 0x141f
_ALIGN: Final = 3  # attributes and messages start on 4-byte boundaries (NLA_ALIGN, NLMSG_ALIGN)

_HEADER: Final = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_LENGTH_TYPE: Final = struct.Struct("=IH")  # its first two fields
_NLA: Final = struct.Struct("=HH")  # nlattr: length, type
_CODE: Final = struct.Struct("=i")  # the int after the header of NLMSG_ERROR and NLMSG_DONE
_INTS: Final = {"u8": struct.Struct("=B"), "u32": struct.Struct("=I"), "u64": struct.Struct("=Q")}
_STRING: Final = -1  # size marker of NUL-terminated strings in _DECODERS
# nla_type → (name, size, unpack_from) for the attributes decode() returns; PAD and unknown types are
# absent, so they are skipped (after the same bounds check as every attribute).
_DECODERS: Final[dict[int, tuple[str, int, Callable[[bytes, int], tuple[int]] | None]]] = {
    number: (name, _INTS[fmt].size, _INTS[fmt].unpack_from) if fmt in _INTS else (name, _STRING, None)
    for number, name, fmt in ATTRIBUTES
    if fmt != "none"
}
_ENCODERS: Final = {name: (number, fmt) for number, name, fmt in ATTRIBUTES}

Attr = tuple[str, int | str]  # a request attribute: (name, value)


class Message(NamedTuple):
    """One data message of a reply: its payload (the attribute bytes after the header) and its
    decoded attributes (None: not decoded, the payload was known)."""

    payload: bytes
    attrs: dict[str, int | str] | None


def _netlink_error(op: str, code: int) -> NetlinkError:
    """``NetlinkError`` for a positive kernel error code; a code no kernel sends (beyond MAX_ERRNO,
    e.g. INT_MIN in a damaged reply) becomes EIO naming the code, never an exception of its own."""
    if 0 < code <= _MAX_ERRNO:
        return NetlinkError(op, code)
    return NetlinkError(op, errno_mod.EIO, f"the kernel answered error code {code}, which is no errno")


def decode(raw: bytes, op: str = "decode") -> list[dict[str, int | str]]:
    """Decode the reply bytes of one exchange (its messages, as read from the socket, concatenated)
    into one attribute dict per data message, in order (:func:`messages`)."""
    return [attrs or {} for _, attrs in messages(raw, op)]


def messages(raw: bytes, op: str = "decode", known: Container[bytes] = ()) -> list[Message]:
    """The data messages of one exchange's reply bytes, in order: each one's payload (its attribute
    bytes) and its decoded attributes — None for a payload in ``known``, which was decoded before
    (the same bytes decode the same; :class:`~agent.discover.nldev_parse.ParsedMessages`).

    One pass over the bytes with ``struct``: message headers 4-byte aligned (NLMSG_ALIGN), trailing
    bytes too short for a header ignored (as the kernel's own netlink_rcv_skb does). NLMSG_DONE and
    success ACKs (NLMSG_ERROR with code 0) carry no data and are skipped; an error code in
    NLMSG_ERROR, or a negative one in NLMSG_DONE (a failed dump), raises :class:`NetlinkError`
    (codes beyond MAX_ERRNO as EIO). Malformed replies raise :class:`NetlinkDecodeError`: a message
    cut short, a length below the header, bytes after the last message claiming to be one, an
    attribute that does not fit or has the wrong size, a string without its NUL. A broken message
    header ends the walk at once; otherwise the first failing message decides.

    In an NLDEV message unknown attributes and PAD are ignored, flag bits (NLA_F_NESTED,
    NLA_F_NET_BYTEORDER) are masked off the type, a repeated attribute's last value counts, strings
    end at their first NUL (as the kernel and iproute2 read them) and bytes that are no UTF-8 become
    U+FFFD. Any other data message yields ``{}`` (nothing this agent reads).
    """
    out: list[Message] = []
    failure: NetlinkError | NetlinkDecodeError | None = None
    unpack_header = _LENGTH_TYPE.unpack_from
    total = len(raw)
    offset = 0
    while offset <= total - 16:
        length, msg_type = unpack_header(raw, offset)
        if length == 0 or length > total:
            raise NetlinkDecodeError(
                f"{op}: {total - offset} bytes after the last complete message (a header claims {length})"
            )
        if length < 16:
            raise NetlinkDecodeError(f"{op}: message length {length} is shorter than its 16-byte header")
        end = offset + length
        if end > total:  # the last message, cut short; an error code that made it through still counts
            failure = failure or _truncated(raw, offset, length, msg_type, op)
            break
        if _NLDEV_FIRST <= msg_type < _NLDEV_END:
            payload = raw[offset + 16 : end]
            if payload in known:
                out.append(Message(payload, None))
            else:
                attrs, problem = _attributes(raw, offset + 16, end)
                if problem is None:
                    out.append(Message(payload, attrs))
                elif failure is None:
                    failure = NetlinkDecodeError(f"{op}: message type {msg_type:#x}: {problem}")
        elif msg_type in (NLMSG_ERROR, NLMSG_DONE):
            failure = failure or _control(raw, offset, length, msg_type, op)
        else:
            out.append(Message(b"", {}))
        offset += (length + _ALIGN) & ~_ALIGN
    if offset == 0 and total:
        raise NetlinkDecodeError(f"{op}: no complete message in {total} bytes")
    if failure is not None:
        raise failure
    return out


def _truncated(raw: bytes, offset: int, length: int, msg_type: int, op: str) -> NetlinkError | NetlinkDecodeError:
    """What a last message cut short means: its error code when that made it through, else a
    decode error."""
    total = len(raw)
    code = _CODE.unpack_from(raw, offset + 16)[0] if offset + 20 <= total else 0
    if msg_type == NLMSG_ERROR and length >= 20 and code != 0:
        return _netlink_error(op, abs(code))
    return NetlinkDecodeError(f"{op}: message of {length} bytes truncated to {total - offset}")


def _control(raw: bytes, offset: int, length: int, msg_type: int, op: str) -> NetlinkError | NetlinkDecodeError | None:
    """The failure an NLMSG_ERROR or NLMSG_DONE reports, if any: an ERROR with a non-zero code (0 is
    the ACK of a successful doit; a positive code counts too, as in libmnl), a DONE with a negative
    one (a failed dump)."""
    if msg_type == NLMSG_ERROR:
        if length < 20:
            return NetlinkDecodeError(f"{op}: NLMSG_ERROR of {length} bytes has no error code")
        code = _CODE.unpack_from(raw, offset + 16)[0]
        return _netlink_error(op, abs(code)) if code != 0 else None
    if length >= 20:
        code = _CODE.unpack_from(raw, offset + 16)[0]
        if code < 0:
            return _netlink_error(op, -code)
    return None


def payload_attributes(payload: bytes) -> dict[str, int | str]:
    """The attributes of one message's payload that decoded cleanly before."""
    attrs, problem = _attributes(payload, 0, len(payload))
    if problem is not None:
        raise NetlinkDecodeError(f"decode: {problem}")
    return attrs


def _attributes(raw: bytes, at: int, end: int) -> tuple[dict[str, int | str], str | None]:
    """The NLDEV attributes in ``raw[at:end]``, and what is wrong with them (None: nothing)."""
    attrs: dict[str, int | str] = {}
    unpack_nla = _NLA.unpack_from
    decoders = _DECODERS.get
    while at < end:
        if end - at < 4:
            return attrs, f"{end - at} stray bytes after the last attribute"
        nla_length, nla_type = unpack_nla(raw, at)
        kind = nla_type & _NLA_TYPE_MASK
        if nla_length < 4 or at + nla_length > end:
            return attrs, f"attribute {kind} claims {nla_length} bytes, {end - at} left"
        spec = decoders(kind)
        if spec is not None:
            name, size, unpack = spec
            if size == _STRING:
                nul = raw.find(b"\0", at + 4, at + nla_length)
                if nul < 0:
                    return attrs, f"string attribute {kind} is not NUL-terminated"
                attrs[name] = raw[at + 4 : nul].decode("utf-8", "replace")
            elif nla_length - 4 == size:
                attrs[name] = unpack(raw, at + 4)[0]  # type: ignore[misc]  # set for every int
            else:
                return attrs, f"attribute {kind} has {nla_length - 4} bytes, expected {size}"
        at += (nla_length + _ALIGN) & ~_ALIGN
    return attrs, None


def _encode_attribute(name: str, value: int | str) -> bytes:
    try:
        number, fmt = _ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown NLDEV attribute {name!r}") from None
    if fmt == "str" and isinstance(value, str):
        payload = value.encode() + b"\0"
    elif fmt in _INTS and isinstance(value, int) and not isinstance(value, bool):
        payload = _INTS[fmt].pack(value)
    else:
        raise ValueError(f"attribute {name} ({fmt}) cannot carry {value!r}")
    length = 4 + len(payload)
    return _NLA.pack(length, number) + payload + b"\0" * (-length & _ALIGN)


def encode_request(cmd: int, attrs: Sequence[Attr] = (), *, flags: int, seq: int = 1) -> bytes:
    """The request bytes for ``cmd`` as the kernel expects them (and as iproute2 and pyroute2 build
    them): nlmsghdr with pid 0, then the attributes, each padded to 4 bytes; strings NUL-terminated."""
    body = b"".join(_encode_attribute(name, value) for name, value in attrs)
    return _HEADER.pack(16 + len(body), message_type(cmd), flags, seq, 0) + body


# ---------------------------------------------------------------------------------------------------
# The socket adapter.

# (cmd, attrs, flags) → the raw reply bytes of one exchange: every message the kernel answered the
# request with, up to and including its NLMSG_DONE or NLMSG_ERROR (error or ACK), concatenated. The
# real one is RdmaNetlink's socket; tests and benchmarks return recorded or synthesized bytes.
Exchange = Callable[[int, Sequence[Attr], int], bytes]

_TIMEVAL: Final = struct.Struct("@ll")  # struct timeval (time_t, suseconds_t: both long on Linux LP64)
RECEIVE_BUFFER: Final = 65536  # the kernel sizes dump datagrams to the reader's buffer, at most ~32 KiB
REPLY_TIMEOUT: Final = 5.0  # seconds; the kernel answers while we send or read, so only a lost reply waits


def take_ours(data: bytes, seq: int, single: bool, parts: list[bytes]) -> bool:
    """Append to ``parts`` the bytes of ``data`` (one datagram) that belong to exchange ``seq``, runs of
    other sequence numbers left out; True when the exchange is over: NLMSG_ERROR (an error, or the
    ACK a doit asked for), NLMSG_DONE, the one reply of a doit without ACK (``single``), or framing
    so broken that :func:`decode` must say so."""
    size = len(data)
    offset = 0
    start = -1  # the first byte of the current run of our messages
    while offset <= size - 16:
        length, msg_type, msg_flags, msg_seq, _pid = _HEADER.unpack_from(data, offset)
        if length < 16 or offset + length > size:  # broken framing: decode() will say so
            if msg_seq == seq:
                parts.append(data[offset if start < 0 else start :])
                return True
            break
        if msg_seq != seq:
            if start >= 0:
                parts.append(data[start:offset])
                start = -1
        else:
            if start < 0:
                start = offset
            if msg_type in (NLMSG_ERROR, NLMSG_DONE) or (single and not msg_flags & NLM_F_MULTI):
                parts.append(data[start : offset + length])
                return True
        offset += (length + _ALIGN) & ~_ALIGN
    if start >= 0:
        parts.append(data[start:offset])
    return False


# Each distinct GET and PORT_GET message parsed once per process (devices and ports are the same
# bytes cycle after cycle); bounded (nldev_parse.PARSED_MESSAGES_MAX).
_DEVICES: Final = ParsedMessages(parse_device, payload_attributes)
_PORTS: Final = ParsedMessages(parse_port, payload_attributes)


def forget_parsed_messages() -> None:
    """Forget every parsed message, so that the next snapshot parses all of them, as the process's
    first one does (benchmarks of a first cycle)."""
    _DEVICES.clear()
    _PORTS.clear()


class RdmaNetlink:
    """A NETLINK_RDMA socket in the caller's network namespace.

    Raises :class:`agent.errors.NetlinkError` with ``errno`` EPROTONOSUPPORT when the kernel has no
    RDMA netlink (ib_core not loaded) — a normal state the snapshot reports, not a crash. A request
    that fails with an OSError (ENOBUFS: the socket overran and dropped messages; ETIMEDOUT: no reply
    within ``timeout``) raises NetlinkError with that errno; the next request gets a fresh socket, so
    nothing left over from the failed exchange (the rest of a dump) can answer it.
    """

    def __init__(self, exchange: Exchange | None = None, *, timeout: float = REPLY_TIMEOUT) -> None:
        self._socket: socket.socket | None = None
        self._timeout = timeout
        self._seq = 0
        self._buffer = memoryview(bytearray())
        if exchange is None:
            self._socket = self._open()
            self._buffer = memoryview(bytearray(RECEIVE_BUFFER))
            exchange = self._socket_exchange
        self._exchange = exchange

    def _open(self) -> socket.socket:
        try:
            sock: socket.socket = create_socket(None, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_RDMA)
        except OSError as err:
            raise NetlinkError("open NETLINK_RDMA socket", err.errno or errno_mod.EIO) from err
        # A receive timeout kept by the kernel, on a blocking socket: Python's own socket timeout would
        # poll() before every send and receive, a syscall more per exchange.
        seconds = int(self._timeout)
        timeval = _TIMEVAL.pack(seconds, int((self._timeout - seconds) * 1_000_000))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        except OSError as err:
            sock.close()
            raise NetlinkError("open NETLINK_RDMA socket", err.errno or errno_mod.EIO) from err
        return sock

    def _socket_exchange(self, cmd: int, attrs: Sequence[Attr], flags: int) -> bytes:
        """Send one request; read datagrams until its exchange is over; return its messages' bytes.

        Messages with another sequence number (left over from an earlier exchange) and datagrams not
        sent by the kernel are skipped. The exchange ends with NLMSG_ERROR (an error, or the ACK a doit
        asked for), with NLMSG_DONE, or — for a doit without ACK — with its one reply."""
        if self._socket is None:
            self._socket = self._open()
        sock = self._socket
        self._seq = seq = self._seq % 0xFFFFFFFF + 1
        dump = bool(flags & NLM_F_DUMP)  # either bit: the kernel tests flags & NLM_F_DUMP
        single = not dump and not flags & NLM_F_ACK
        buffer = self._buffer
        request = encode_request(cmd, attrs, flags=flags, seq=seq)
        parts: list[bytes] = []
        try:
            sock.sendto(request, (0, 0))
            while True:
                try:
                    size, (sender, _groups) = sock.recvfrom_into(buffer, 0, socket.MSG_TRUNC)
                except BlockingIOError as err:  # EAGAIN: SO_RCVTIMEO passed
                    raise TimeoutError(errno_mod.ETIMEDOUT, "no reply") from err
                if size > len(buffer):
                    raise OSError(errno_mod.EMSGSIZE, f"a {size}-byte datagram exceeds the receive buffer")
                if sender == 0 and take_ours(buffer[:size].tobytes(), seq, single, parts):  # else: not the kernel's
                    return b"".join(parts)
        except BaseException:
            self.close()  # the rest of this exchange may still come: never let it answer the next one
            raise

    def __enter__(self) -> RdmaNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def request(self, cmd: int, attrs: Sequence[Attr] = (), *, flags: int = FLAGS_DOIT) -> list[dict[str, int | str]]:
        return [message.attrs or {} for message in self._messages(cmd, attrs, flags)]

    def _messages(self, cmd: int, attrs: Sequence[Attr], flags: int, known: Container[bytes] = ()) -> list[Message]:
        op = _CMD_NAMES.get(cmd, str(cmd))
        try:
            raw = self._exchange(cmd, attrs, flags)
        except TimeoutError as err:
            raise NetlinkError(op, errno_mod.ETIMEDOUT, f"no reply within {self._timeout:g} s") from err
        except OSError as err:
            raise NetlinkError(op, err.errno or errno_mod.EIO) from err
        return messages(raw, op, known)

    def devices(self) -> list[RdmaDevice]:
        """GET dump: every RDMA device this netns can see (all of them in shared mode)."""
        parsed = _DEVICES.parsed
        return [parsed(*m) for m in self._messages(CMD_GET, (), FLAGS_DUMP, _DEVICES)]

    def ports(self, device_index: int) -> list[RdmaPort]:
        """PORT_GET dump for one device (there is no all-devices port dump)."""
        parsed = _PORTS.parsed
        replies = self._messages(CMD_PORT_GET, [("DEV_INDEX", device_index)], FLAGS_DUMP, _PORTS)
        return sorted((parsed(*m) for m in replies), key=attrgetter("port"))

    def port(self, device_index: int, port: int) -> RdmaPort:
        """PORT_GET doit, as ``rdma link show`` sends it (the reply arrives typed as GET)."""
        replies = self.request(CMD_PORT_GET, [("DEV_INDEX", device_index), ("PORT_INDEX", port)])
        if len(replies) != 1:
            raise NetlinkDecodeError(f"PORT_GET: expected one reply, got {len(replies)}")
        return parse_port(replies[0])

    def system(self) -> SystemInfo:
        """SYS_GET doit (``rdma system``); unprivileged."""
        replies = self.request(CMD_SYS_GET)
        if len(replies) != 1:
            raise NetlinkDecodeError(f"SYS_GET: expected one reply, got {len(replies)}")
        return parse_system(replies[0])

    def set_netns_mode(self, mode: NetnsMode) -> None:
        """SYS_SET NETNS_MODE (``rdma system set netns …``); needs CAP_NET_ADMIN in the init user ns.

        EBUSY: the mode differs and a non-init network namespace exists. Setting the current mode
        succeeds even then."""
        self.request(CMD_SYS_SET, [("NETNS_MODE", mode.kernel_value)])
