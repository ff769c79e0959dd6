"""NLDEV replies → model values: pure parsers of one message's decoded attributes
(:func:`agent.discover.rdma_netlink.decode` gives them), as iproute2's rdma/dev.c, link.c and sys.c
read them, and :class:`ParsedMessages`, which parses each distinct message once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, TypeVar

from agent.errors import NetlinkDecodeError
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

T = TypeVar("T")
Attrs = Mapping[str, int | str]
PARSED_MESSAGES_MAX: Final = 8192  # distinct messages kept per kind: 2,048 devices' worth, 4 times over


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
    node_text = format_guid(node_guid) if node_guid is not None else None
    image_text = node_text  # the usual case (a device is its own system image): format once
    if image_guid != node_guid:
        image_text = format_guid(image_guid) if image_guid is not None else None
    return RdmaDevice(
        name=str(_required(attrs, "DEV_NAME", "GET")),
        index=int(_required(attrs, "DEV_INDEX", "GET")),
        node_type=node_type_name(node_type) if node_type is not None else None,
        protocol=_str(attrs, "DEV_PROTOCOL"),
        fw_version=_str(attrs, "FW_VERSION"),
        node_guid=node_text,
        sys_image_guid=image_text,
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


class ParsedMessages(Generic[T]):
    """What ``parse`` made of each distinct message, by the message's attribute bytes (its payload:
    everything after the 16-byte header, which alone holds the sequence number).

    A device's GET message and its ports' PORT_GET messages are the same bytes from one cycle to
    the next until something in them changes, so a cycle parses only what changed and gives the
    same objects again for the rest (the snapshot's merge then tells them unchanged by identity).
    Parsing is a function of the payload alone, so an answer kept for equal bytes is the answer.
    Only messages that parsed are kept; at most ``limit`` of them (then all are forgotten at once
    and the next cycle parses everything again), so a node whose messages change every cycle costs
    one parse per message, as without this, and memory stays bounded. Shared by every socket of the
    process (a snapshot's socket lives one cycle); safe under concurrent use (a lost race costs a
    parse)."""

    def __init__(
        self, parse: Callable[[Attrs], T], decode: Callable[[bytes], Attrs], *, limit: int = PARSED_MESSAGES_MAX
    ) -> None:
        self._parse = parse
        self._decode = decode  # a payload's attributes, for one that was kept and is no longer
        self._limit = limit
        self._kept: dict[bytes, T] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def clear(self) -> None:
        self._kept = {}

    def __contains__(self, payload: object) -> bool:
        return payload in self._kept

    def parsed(self, payload: bytes, attrs: Attrs | None) -> T:
        """The kept answer for ``payload``, else what ``parse`` makes of ``attrs`` (its decoded
        attributes; None when the payload was kept as the message was decoded), kept."""
        kept = self._kept.get(payload)
        if kept is not None:
            return kept
        value = self._parse(attrs if attrs is not None else self._decode(payload))
        if len(self._kept) >= self._limit:
            self._kept = {}
        self._kept[payload] = value
        return value
