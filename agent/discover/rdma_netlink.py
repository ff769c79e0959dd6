"""NETLINK_RDMA (RDMA_NL_NLDEV) over pyroute2: the only module that imports pyroute2.

What ``rdma dev``, ``rdma link`` and ``rdma system`` show, read the way iproute2 reads it
(rdma/utils.c, dev.c, link.c, sys.c) from the kernel's nldev interface
(drivers/infiniband/core/nldev.c, include/uapi/rdma/rdma_netlink.h). Kernel facts this relies on:

- No family header: attributes start right after the 16-byte nlmsghdr; integers are host order.
- A PORT_GET *doit* reply is typed as GET (0x1401); replies are therefore never filtered by type.
- A failing dump reports its errno inside NLMSG_DONE, not as NLMSG_ERROR. Stock pyroute2 returns
  ``[]`` then; :class:`RdmaMarshal` turns it into an error so "no devices" can't be faked.
- pyroute2 accepts truncated or wrongly sized attributes silently (it hands back raw header bytes);
  :func:`validate_attributes` checks every attribute's length first and marks bad messages.
- Flags are explicit: ``REQUEST|ACK`` for doit and ``REQUEST|DUMP`` for dump. NLM_F_DUMP is
  ROOT|MATCH (0x300), so REPLACE/EXCL presets would turn a SET into a (failing) dump.

Parsing is pure (:func:`decode`, ``parse_*`` take bytes or attribute mappings); the socket lives in
:class:`RdmaNetlink`, whose transport can be replaced by recorded replies in tests.
"""

from __future__ import annotations

import errno as errno_mod
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, nlmsg
from pyroute2.netlink.exceptions import NetlinkDecodeError as Pyroute2DecodeError
from pyroute2.netlink.exceptions import NetlinkError as Pyroute2NetlinkError
from pyroute2.netlink.nlsocket import Marshal, NetlinkSocket

from agent.errors import NetlinkDecodeError, NetlinkError
from agent.model import (
    NetnsMode,
    RdmaDevice,
    RdmaPort,
    SystemInfo,
    format_guid,
    node_type_name,
    phys_state_name,
    port_state_name,
)

NETLINK_RDMA: Final = 20  # include/uapi/linux/netlink.h; pyroute2 has no constant for it
RDMA_NL_NLDEV: Final = 5

CMD_GET: Final = 1
CMD_SET: Final = 2
CMD_PORT_GET: Final = 5
CMD_SYS_GET: Final = 6
CMD_SYS_SET: Final = 7
_CMD_NAMES: Final = {CMD_GET: "GET", CMD_SET: "SET", CMD_PORT_GET: "PORT_GET", CMD_SYS_GET: "SYS_GET",
                     CMD_SYS_SET: "SYS_SET"}  # fmt: skip

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
_PYROUTE2_FORMAT: Final = {"none": "none", "u8": "uint8", "u32": "uint32", "u64": "uint64", "str": "asciiz"}
_FIXED_SIZE: Final = {"u8": 1, "u32": 4, "u64": 8}
_FORMAT_BY_TYPE: Final = {number: fmt for number, _, fmt in ATTRIBUTES}
_NLA_TYPE_MASK: Final = 0x3FFF  # strip NLA_F_NESTED / NLA_F_NET_BYTEORDER


class NldevMessage(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """An RDMA_NL_NLDEV message: no family header, attributes only."""

    fields = ()
    nla_map = tuple((number, name, _PYROUTE2_FORMAT[fmt]) for number, name, fmt in ATTRIBUTES)


def validate_attributes(payload: bytes) -> str | None:
    """Check the attribute stream of one message; return what is wrong, or None.

    Every attribute must fit in the message; known fixed-size attributes must have exactly their
    size (the kernel's NLA_U8/U32/U64 policy); known strings must be NUL-terminated.
    """
    offset = 0
    while offset < len(payload):
        if len(payload) - offset < 4:
            return f"{len(payload) - offset} stray bytes after the last attribute"
        length, raw_type = struct.unpack_from("=HH", payload, offset)
        nla_type = raw_type & _NLA_TYPE_MASK
        if length < 4 or offset + length > len(payload):
            return f"attribute {nla_type} claims {length} bytes, {len(payload) - offset} left"
        body = payload[offset + 4 : offset + length]
        fmt = _FORMAT_BY_TYPE.get(nla_type)
        if fmt in _FIXED_SIZE and len(body) != _FIXED_SIZE[fmt]:
            return f"attribute {nla_type} has {len(body)} bytes, expected {_FIXED_SIZE[fmt]}"
        if fmt == "str" and b"\0" not in body:
            return f"string attribute {nla_type} is not NUL-terminated"
        offset += (length + 3) & ~3
    return None


_NLDEV_TYPES: Final = frozenset(message_type(cmd) for cmd in range(32))
_MAX_ERRNO: Final = 4095  # include/linux/err.h: the kernel's error codes are -1 … -4095
# What pyroute2 lets out of decoding one malformed message (it does not guard the request an
# NLMSG_ERROR echoes, nor a header shorter than its fields).
_DECODE_FAILURES: Final = (Pyroute2DecodeError, struct.error, ValueError, IndexError, OverflowError)


def _netlink_error(op: str, code: int) -> NetlinkError:
    """``NetlinkError`` for a positive kernel error code; a code no kernel sends (beyond MAX_ERRNO,
    e.g. INT_MIN in a damaged reply) becomes EIO naming the code, never an exception of its own."""
    if 0 < code <= _MAX_ERRNO:
        return NetlinkError(op, code)
    return NetlinkError(op, errno_mod.EIO, f"the kernel answered error code {code}, which is no errno")


def _carried_error(code: int) -> Pyroute2NetlinkError:
    # With a text of its own: pyroute2 would ask os.strerror(), which overflows on INT_MIN.
    return Pyroute2NetlinkError(-code, f"kernel error code {code}")


class RdmaMarshal(Marshal):  # type: ignore[misc]  # pyroute2 is untyped
    """pyroute2 Marshal for NLDEV: every NLDEV type decodes as :class:`NldevMessage`, errors carried
    in NLMSG_DONE are raised, and malformed attributes are reported instead of half-decoded."""

    msg_map = dict.fromkeys(_NLDEV_TYPES, NldevMessage)

    def parse_one_message(self, key: int, flags: int, seq: int, data: bytes, offset: int, length: int) -> Any:
        try:
            msg = super().parse_one_message(key, flags, seq, data, offset, length)
        except _DECODE_FAILURES as err:
            return self._undecodable(key, flags, seq, data, offset, length, err)
        if msg["header"].get("error") is not None:
            return msg
        if offset + length > len(data):
            msg["header"]["error"] = NetlinkDecodeError(
                f"message of {length} bytes truncated to {len(data) - offset}"
            )
        elif key == NLMSG_DONE and length >= 20:
            (code,) = struct.unpack_from("=i", data, offset + 16)
            if code < 0:
                msg["header"]["error"] = _carried_error(code)
        elif key in _NLDEV_TYPES:
            problem = validate_attributes(bytes(data[offset + 16 : offset + length]))
            if problem is not None:
                msg["header"]["error"] = NetlinkDecodeError(f"message type {key:#x}: {problem}")
        return msg

    @staticmethod
    def _undecodable(
        key: int, flags: int, seq: int, data: bytes, offset: int, length: int, err: Exception
    ) -> Any:
        """A message pyroute2 could not decode, carrying the error instead. An NLMSG_ERROR keeps its
        errno (a fixed field in front of the echoed request, which may be capped or damaged)."""
        msg = nlmsg()
        msg["header"].update(length=length, type=key, flags=flags, sequence_number=seq)
        code = 0
        if key == NLMSG_ERROR and length >= 20 and offset + 20 <= len(data):
            (code,) = struct.unpack_from("=i", data, offset + 16)
        if code < 0:
            msg["header"]["error"] = _carried_error(code)
        else:
            msg["header"]["error"] = NetlinkDecodeError(f"message type {key:#x}: {err}")
        return msg


Attrs = Mapping[str, int | str]


def _attrs_of(message: Any) -> dict[str, int | str]:
    attrs: dict[str, int | str] = {}
    for name, value in message.get("attrs") or ():
        if name in ("PAD", "UNKNOWN") or not isinstance(value, int | str):
            continue
        attrs[name] = value
    return attrs


def collect(messages: Iterable[Any], op: str) -> list[dict[str, int | str]]:
    """Turn decoded pyroute2 messages into attribute dicts, raising the first error carried in them.

    NLMSG_DONE and success ACKs carry no data and are skipped."""
    out: list[dict[str, int | str]] = []
    for message in messages:
        error = message["header"].get("error")
        if isinstance(error, NetlinkDecodeError):
            raise NetlinkDecodeError(f"{op}: {error}")
        if isinstance(error, Pyroute2NetlinkError | OSError):
            code = abs(int(getattr(error, "code", 0) or error.errno or errno_mod.EIO))
            raise _netlink_error(op, code) from error
        if message["header"].get("type") in (NLMSG_DONE, NLMSG_ERROR):
            continue
        out.append(_attrs_of(message))
    return out


def decode(raw: bytes, op: str = "decode") -> list[dict[str, int | str]]:
    """Decode the reply bytes of one exchange (one or more messages, as read from the socket)."""
    try:
        messages = list(RdmaMarshal().parse(raw))
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as err:
        raise NetlinkDecodeError(f"{op}: {err}") from err
    consumed = sum(int(m["header"].get("length") or 0) for m in messages)
    if consumed < len(raw) and len(raw) - consumed >= 16:
        raise NetlinkDecodeError(f"{op}: {len(raw) - consumed} bytes after the last complete message")
    if consumed == 0 and raw:
        raise NetlinkDecodeError(f"{op}: no complete message in {len(raw)} bytes")
    return collect(messages, op)


def encode_request(
    cmd: int, attrs: Sequence[tuple[str, int | str]] = (), *, flags: int, seq: int = 1
) -> bytes:
    """The request bytes for ``cmd`` as the kernel expects them (used by tests and the capture tool)."""
    msg = NldevMessage()
    msg["header"].update(type=message_type(cmd), flags=flags, sequence_number=seq, pid=0)
    msg["attrs"] = list(attrs)
    msg.encode()
    return bytes(msg.data)


# ---------------------------------------------------------------------------------------------------
# Pure parsers: attribute mappings → model values.


def _int(attrs: Attrs, key: str) -> int | None:
    value = attrs.get(key)
    return value if isinstance(value, int) else None


def _str(attrs: Attrs, key: str) -> str | None:
    value = attrs.get(key)
    return value if isinstance(value, str) and value != "" else None


def _required(attrs: Attrs, key: str, op: str) -> Any:
    value = attrs.get(key)
    if value is None:
        raise NetlinkDecodeError(f"{op}: reply lacks {key}")
    return value


def parse_device(attrs: Attrs) -> RdmaDevice:
    """One GET reply (``rdma dev show``) → :class:`RdmaDevice` without ports."""
    node_type = _int(attrs, "DEV_NODE_TYPE")
    node_guid = _int(attrs, "NODE_GUID")
    image_guid = _int(attrs, "SYS_IMAGE_GUID")
    return RdmaDevice(
        name=str(_required(attrs, "DEV_NAME", "GET")),
        index=int(_required(attrs, "DEV_INDEX", "GET")),
        node_type=node_type_name(node_type) if node_type is not None else None,
        protocol=_str(attrs, "DEV_PROTOCOL"),
        fw_version=_str(attrs, "FW_VERSION"),
        node_guid=format_guid(node_guid) if node_guid is not None else None,
        sys_image_guid=format_guid(image_guid) if image_guid is not None else None,
        port_count=_int(attrs, "PORT_INDEX") or 0,  # in a GET reply this is the number of ports
    )


def parse_port(attrs: Attrs) -> RdmaPort:
    """One PORT_GET reply (``rdma link show``) → :class:`RdmaPort`.

    NDEV_* appear only when the netdev is in the requester's netns; LID/SM_LID only on IB ports."""
    state = _int(attrs, "PORT_STATE")
    phys = _int(attrs, "PORT_PHYS_STATE")
    return RdmaPort(
        port=int(_required(attrs, "PORT_INDEX", "PORT_GET")),
        state=port_state_name(state) if state is not None else None,
        state_code=state,
        physical_state=phys_state_name(phys) if phys is not None else None,
        physical_state_code=phys,
        netdev=_str(attrs, "NDEV_NAME"),
        netdev_index=_int(attrs, "NDEV_INDEX"),
        lid=_int(attrs, "LID"),
        sm_lid=_int(attrs, "SM_LID"),
    )


def parse_system(attrs: Attrs) -> SystemInfo:
    """The SYS_GET reply (``rdma system``) → :class:`SystemInfo`; absent attributes stay None."""

    def flag(key: str) -> bool | None:
        value = _int(attrs, key)
        return None if value is None else bool(value)

    mode = _int(attrs, "NETNS_MODE")
    return SystemInfo(
        netns_mode=NetnsMode.from_kernel(mode) if mode is not None else None,
        copy_on_fork=flag("COPY_ON_FORK"),
        privileged_qkey=flag("PRIVILEGED_QKEY_MODE"),
        monitor=flag("MONITOR_MODE"),
    )


# ---------------------------------------------------------------------------------------------------
# The socket adapter.

# (cmd, attrs, flags) → decoded pyroute2 messages. The real one is a pyroute2 socket's nlm_request;
# tests pass one that parses recorded replies with RdmaMarshal.
Exchange = Callable[[int, Sequence[tuple[str, int | str]], int], Iterable[Any]]


class RdmaNetlink:
    """A NETLINK_RDMA socket in the caller's network namespace.

    Raises :class:`agent.errors.NetlinkError` with ``errno`` EPROTONOSUPPORT when the kernel has no
    RDMA netlink (ib_core not loaded) — a normal state the snapshot reports, not a crash.
    """

    def __init__(self, exchange: Exchange | None = None) -> None:
        self._socket: Any = None
        if exchange is None:
            try:
                self._socket = NetlinkSocket(family=NETLINK_RDMA)
            except OSError as err:
                raise NetlinkError("open NETLINK_RDMA socket", err.errno or errno_mod.EIO) from err
            self._socket.set_marshal(RdmaMarshal())  # plain assignment is ignored by pyroute2 >= 0.8
            exchange = self._socket_exchange
        self._exchange = exchange

    def _socket_exchange(self, cmd: int, attrs: Sequence[tuple[str, int | str]], flags: int) -> list[Any]:
        msg = NldevMessage()
        msg["attrs"] = list(attrs)
        return list(self._socket.nlm_request(msg, msg_type=message_type(cmd), msg_flags=flags))

    def __enter__(self) -> RdmaNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def request(self, cmd: int, attrs: Sequence[tuple[str, int | str]] = (), *, flags: int = FLAGS_DOIT
                ) -> list[dict[str, int | str]]:  # fmt: skip
        op = _CMD_NAMES.get(cmd, str(cmd))
        try:
            return collect(self._exchange(cmd, attrs, flags), op)
        except Pyroute2NetlinkError as err:
            raise _netlink_error(op, abs(int(err.code)) or errno_mod.EIO) from err
        except OSError as err:
            raise NetlinkError(op, err.errno or errno_mod.EIO) from err

    def devices(self) -> list[RdmaDevice]:
        """GET dump: every RDMA device this netns can see (all of them in shared mode)."""
        return [parse_device(a) for a in self.request(CMD_GET, flags=FLAGS_DUMP)]

    def ports(self, device_index: int) -> list[RdmaPort]:
        """PORT_GET dump for one device (there is no all-devices port dump)."""
        replies = self.request(CMD_PORT_GET, [("DEV_INDEX", device_index)], flags=FLAGS_DUMP)
        return sorted((parse_port(a) for a in replies), key=lambda p: p.port)

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
