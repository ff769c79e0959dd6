"""HTTP on the wire for the agent's listeners: bind addresses and listening sockets, the request
head parser (strict: HTTP/1.x, ASCII, bounded by the caller), and the answer's bytes. No I/O loop:
that is :mod:`agent.publish.http`."""

from __future__ import annotations

import email.utils
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from agent.errors import ConfigError, PublishError
from agent.settingvalues import parse_bind_address as config_parse_bind_address

SETTING: Final = "--metrics-bind-address"
TEXT: Final = "text/plain; charset=utf-8"
SERVER: Final = "rdma-node-agent"  # the Server header: no Python version advertised


def parse_bind_address(text: str, setting: str = SETTING) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)`` (see :func:`agent.settings.parse_bind_address`), raising
    :class:`ConfigError` naming ``setting``."""
    try:
        return config_parse_bind_address(text)
    except ValueError as err:
        raise ConfigError(setting, str(err)) from None


def listen_address(host: str, port: int, setting: str) -> tuple[socket.AddressFamily, str, bool]:
    """(family, host to bind, dual-stack?) for a parsed bind address."""
    if host == "":
        if socket.has_dualstack_ipv6():
            return socket.AF_INET6, "::", True
        return socket.AF_INET, "0.0.0.0", False  # noqa: S104 - ":PORT" asks for every address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ConfigError(setting, f"cannot resolve {host!r}: {err.strerror}") from err
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0]), False


def listen(bind: str, setting: str) -> socket.socket:
    host, port = parse_bind_address(bind, setting)
    family, address, dual_stack = listen_address(host, port, setting)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # The kernel hands a connection to accept() only once its first data has arrived (or a
        # second later): a client that connects and says nothing costs the agent nothing, and a
        # request is always there to read when a connection is accepted past the cap.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        sock.bind((address, port))
        # The kernel caps the backlog at net.core.somaxconn (Go's net.Listen asks for somaxconn): a
        # short queue overflows in a burst, and a dropped SYN makes a probe wait for the client's
        # 1 s retransmit, failing kubelet's 1 s probe timeout.
        sock.listen(4096)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise PublishError(f"{setting}: cannot listen on {show(address, port)}: {err.strerror}") from err
    return sock


def show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- requests and answers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query
    headers: dict[str, str]  # lower-case names; a repeated header keeps the last value


class BadRequest(Exception):  # noqa: N818 - an answer, not a failure of ours
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _request_line(line: str) -> tuple[str, str]:
    """(method, target) of ``METHOD SP TARGET SP HTTP/1.x``; :class:`BadRequest` otherwise (HTTP/0.9's
    two words included)."""
    words = line.split(" ")
    if len(words) == 2:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not served")
    if len(words) != 3 or not all(words) or not words[0].isalpha() or not words[0].isupper():
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad request line")
    method, target, version = words
    if not version.startswith("HTTP/") or len(version) != 8 or version[6] != ".":
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad HTTP version")
    if version[5] != "1":
        raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x is served")
    return method, target


def parse_request(head: bytes) -> Request:
    """A request head (request line and header lines, without the blank line)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "request head is not ASCII") from None
    lines = text.replace("\r\n", "\n").split("\n")
    method, target = _request_line(lines[0])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad header line")
        headers[name.lower()] = value.strip()
    if target.startswith(("http://", "https://")):  # absolute form: keep the path
        target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    return Request(method=method, path=target.split("?", 1)[0], headers=headers)


def encode_answer(
    status: HTTPStatus,
    body: Sequence[bytes],
    *,
    content_type: str = TEXT,
    headers: Sequence[tuple[str, str]] = (),
    head_only: bool = False,
) -> list[bytes]:
    """The response as buffers to send: status line and headers, then the body (unless HEAD)."""
    length = sum(len(b) for b in body)
    lines = [
        f"HTTP/1.0 {status.value} {status.phrase}",
        f"Server: {SERVER}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    out = ["\r\n".join([*lines, "", ""]).encode("latin-1")]
    if not head_only:
        out += [b for b in body if b]
    return out


def head_end(buf: bytes | bytearray) -> int:
    """Where the request head ends (before the blank line), or -1."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    found = [i for i in (crlf, lf) if i >= 0]
    return min(found) if found else -1
