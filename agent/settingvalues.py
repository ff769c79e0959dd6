"""The values of settings, parsed: Go durations (bounded), booleans, bind addresses, absolute host
paths, globs, a label prefix, a ConfigMap reference. Each parser takes the text as given (flag,
environment variable or config file) and returns the value or raises ``ValueError`` saying what was
expected; :mod:`agent.settings` names the setting in the error."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from pathlib import Path

from agent.labelsyntax import label_prefix_error
from agent.model import DesiredMode

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_BARE_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{0,9})?")
MAX_DURATION_TEXT = 64  # "1h2m3s500ms" is 11; nothing legitimate is longer


def parse_duration(text: str) -> float:
    """A positive duration in Go's form (``1m30s``, ``90s``, ``500ms``, ``1.5h``) or a bare number of
    seconds (``30``) → seconds. Raises ValueError on anything else, zero included."""
    value = text.strip()
    if len(value) > MAX_DURATION_TEXT:
        raise ValueError(f"expected a duration like 30s, 1m30s or 1h, got {len(value)} characters")
    if _BARE_SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(f"expected a duration like 30s, 1m30s or 1h, got {text!r}")
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"expected a positive duration like 30s, 1m30s or 1h, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as Go prints a duration, for messages: 90 → ``1m30s``, 86400 → ``24h0m0s``, 0.5 → ``500ms``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(round(seconds, 3), 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + f"{secs:g}s"


def bounded_duration(low: float, high: float) -> Callable[[str], float]:
    """A duration parser that also refuses values outside [low, high] seconds."""

    def parse(text: str) -> float:
        seconds = parse_duration(text)
        if not low <= seconds <= high:
            raise ValueError(
                f"must be between {format_duration(low)} and {format_duration(high)}, got {text.strip()!r}"
            )
        return seconds

    return parse


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_BIND_FORMS = "expected HOST:PORT such as ':9435', '0.0.0.0:9435', '[::1]:9435'"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def parse_bind_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``; an empty host (``":9435"``) means every address.

    IPv6 literals go in brackets (``[::1]:9435``), as in Go's ``net.Listen``. Port 0 picks a free
    port (tests). Raises ValueError on anything else.
    """

    def bad(why: str) -> ValueError:
        return ValueError(f"{why}: {text!r} ({_BIND_FORMS})")

    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise bad("no port")
    if not port_text.isascii() or not port_text.isdigit():
        raise bad("port is not a number")
    port = int(port_text)
    if port > 65535:
        raise bad("port is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad("not an IPv6 address inside the brackets") from None
        return host, port
    if ":" in host or "[" in host or "]" in host:
        raise bad("IPv6 addresses must be in brackets")
    if host and not _is_host(host):
        raise bad("host is neither an IPv4 address nor a hostname")
    return host, port


def _is_host(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return True
    if all(c.isdigit() or c == "." for c in host):  # "999.1.1.1" is a bad address, not a hostname
        return False
    return len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None


def parse_desired_mode(text: str) -> DesiredMode:
    try:
        return DesiredMode(text.strip().lower())
    except ValueError:
        raise ValueError(f"expected shared, exclusive or unmanaged, got {text!r}") from None


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def parse_absolute_path(text: str) -> Path:
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute path, got {text!r}")
    if "\0" in text:  # the kernel cannot open it; every later use would fail with a bare ValueError
        raise ValueError(f"a path cannot contain a NUL byte, got {text!r}")
    if ".." in text.split("/"):  # a host path must not climb out of the host root; no path needs it
        raise ValueError(f"a path cannot contain '..', got {text!r}")
    return Path(text)


def parse_optional_path(text: str) -> Path | None:
    return None if text.strip() == "" else parse_absolute_path(text)


def comma_list(text: str) -> tuple[str, ...]:
    """``a, b,,c`` → ``("a", "b", "c")``: the items of a comma-separated list, blanks dropped."""
    return tuple(item for item in (part.strip() for part in text.split(",")) if item)


def parse_prefixes(text: str) -> tuple[str, ...]:
    items = comma_list(text)
    if not items:
        raise ValueError("expected a comma-separated list of resource name prefixes")
    return items


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"


def parse_configmap_ref(text: str) -> tuple[str, str] | None:
    """``NAMESPACE/NAME`` of a ConfigMap (a DNS label and a DNS subdomain, as the API server requires);
    empty: none."""
    if text.strip() == "":
        return None
    namespace, _, name = text.strip().partition("/")
    if not re.fullmatch(_DNS_LABEL, namespace) or len(name) > 253 or not re.fullmatch(_DNS_SUBDOMAIN, name):
        raise ValueError(f"expected NAMESPACE/NAME of a ConfigMap (lowercase DNS names), got {text!r}")
    return namespace, name


def parse_configmap_key(text: str) -> str:
    if not re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", text):  # apimachinery IsConfigMapKey
        raise ValueError(f"expected a ConfigMap key (letters, digits, '-', '_', '.'), got {text!r}")
    return text


def parse_globs(text: str) -> tuple[str, ...]:
    items = comma_list(text)
    bad = [p for p in items if not re.fullmatch(r"[A-Za-z0-9_.:/*?\[\]!-]{1,64}", p)]
    if bad:
        raise ValueError(f"expected globs on device/port or a netdev name, got {bad[0]!r}")
    return items


def parse_label_prefix(text: str) -> str:
    error = label_prefix_error(text)  # the publishers' own rule: syntax and reserved namespaces
    if error is not None:
        raise ValueError(error)
    return text


def parse_node_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", text) or len(text) > 253:
        raise ValueError(f"expected a Kubernetes node name, got {text!r}")
    return text


def parse_bind(text: str) -> str:
    parse_bind_address(text)
    return text


def parse_optional_bind(text: str) -> str:
    return "" if text.strip() == "" else parse_bind(text)
