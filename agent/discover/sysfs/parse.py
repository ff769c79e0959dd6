"""Pure parsers: the text of one sysfs attribute file → a value.

Each ``parse_*`` takes what the kernel prints and returns a value, or raises ``ValueError`` on text
the kernel never prints. No I/O here: the readers (``rdma``, ``pci``, ``chars``, ``ib_core``) read
the files and hand their text over. Formats: drivers/infiniband/core/sysfs.c, drivers/pci/pci-sysfs.c,
kernel/params.c.
"""

from __future__ import annotations

import re
from typing import Final

from agent.model import NetnsMode, node_type_name, phys_state_name, port_state_name

# pci_name(): "%04x:%02x:%02x.%d"; the domain can be wider than 4 digits (Intel VMD: 10000:e1:00.0)
PCI_ADDRESS: Final = re.compile(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")

_STATE: Final = re.compile(r"^(-?\d+): ?(.*)$")  # "%d: %s\n" (state, phys_state, node_type)
_HEX_ID: Final = re.compile(r"^(?:0x)?([0-9a-fA-F]+)$")
_FLAGS: Final = re.compile(r"0x[0-9a-f]{1,8}|0")  # net-sysfs.c format_flags: "%#x" (plain "0" for 0)
_GUID: Final = re.compile(r"^[0-9a-fA-F]{4}(?::[0-9a-fA-F]{4}){3}$")
_DECIMAL: Final = re.compile(r"-?\d+")
_LID: Final = re.compile(r"0x[0-9a-fA-F]+")
_DIGIT_RUNS: Final = re.compile(r"([0-9]+)")


def _one_line(text: str) -> str:
    return text.rstrip("\n").strip()


def _numbered(text: str, what: str) -> int:
    match = _STATE.match(_one_line(text))
    if match is None:
        raise ValueError(f"{what}: expected 'N: NAME', got {text!r}")
    return int(match.group(1))


def parse_port_state(text: str) -> tuple[int, str]:
    """``ports/N/state`` ("4: ACTIVE\\n") → (4, "ACTIVE"). The name is iproute2's for the number
    (kernel: ``"%d: %s\\n"``, UNKNOWN beyond ACTIVE_DEFER)."""
    code = _numbered(text, "port state")
    return code, port_state_name(code)


def parse_phys_state(text: str) -> tuple[int, str]:
    """``ports/N/phys_state`` ("5: LinkUp\\n") → (5, "LINK_UP"): sysfs spells names in IBTA style
    ("LinkUp", "Phy Test"), netlink users see iproute2's, so the name comes from the number."""
    code = _numbered(text, "physical state")
    return code, phys_state_name(code)


def parse_node_type(text: str) -> str:
    """``node_type`` ("1: CA\\n") → "ca", iproute2's spelling of the number."""
    return node_type_name(_numbered(text, "node type"))


def parse_hex_id(text: str) -> str:
    """PCI ``vendor``/``device``/``subsystem_*``/``class`` ("0x15b3\\n") → "15b3" (lower case)."""
    match = _HEX_ID.match(_one_line(text))
    if match is None:
        raise ValueError(f"expected a hexadecimal id such as 0x15b3, got {text!r}")
    return match.group(1).lower()


def parse_guid(text: str) -> str:
    """``node_guid``/``sys_image_guid`` ("d421:2dff:fe34:4699\\n", ``%04x:%04x:%04x:%04x``)."""
    value = _one_line(text)
    if _GUID.match(value) is None:
        raise ValueError(f"expected a GUID such as 0c42:a103:00ab:12cd, got {text!r}")
    return value.lower()


def parse_int(text: str) -> int:
    """A decimal attribute ("7\\n"): ``sriov_totalvfs``, ``ifindex``, ``port``."""
    value = _one_line(text)
    if not _DECIMAL.fullmatch(value):
        raise ValueError(f"expected a decimal number, got {text!r}")
    return int(value)


def parse_netdev_flags(text: str) -> int:
    """A netdev's ``flags`` ("0x1003\n", ``%#x`` of dev->flags: IFF_UP is 0x1)."""
    value = _one_line(text)
    if not _FLAGS.fullmatch(value):
        raise ValueError(f"expected hexadecimal flags such as 0x1003, got {text!r}")
    return int(value, 16)


def parse_numa_node(text: str) -> int | None:
    """PCI ``numa_node`` ("%d\\n"); -1 (no NUMA information) → None."""
    value = parse_int(text)
    return None if value < 0 else value


def parse_lid(text: str) -> int:
    """``ports/N/lid`` and ``sm_lid`` ("0x%x\\n") → int."""
    value = _one_line(text)
    if not _LID.fullmatch(value):
        raise ValueError(f"expected a LID such as 0x12, got {text!r}")
    return int(value, 16)


def parse_text(text: str) -> str | None:
    """A one-line string attribute (``fw_ver``, ``link_layer``, ``rate``, ``ibdev``, ``parent``);
    an empty line (``fw_ver`` of a driver without firmware, e.g. rxe) → None."""
    value = _one_line(text)
    return value or None


def parse_netns_mode(text: str) -> NetnsMode:
    """``module/ib_core/parameters/netns_mode``: a bool parameter, printed by param_get_bool as
    "Y" (shared) or "N" (exclusive)."""
    value = _one_line(text)
    if value in ("Y", "y", "1"):
        return NetnsMode.SHARED
    if value in ("N", "n", "0"):
        return NetnsMode.EXCLUSIVE
    raise ValueError(f"expected Y or N, got {text!r}")


def parse_pci_address(name: str) -> str | None:
    """A sysfs device directory name that is a PCI function (``DDDD:BB:DD.F``), else None."""
    return name if PCI_ADDRESS.match(name) else None


def natural_key(name: str) -> tuple[int | str, ...]:
    """Sort key that puts virtfn10 after virtfn9 and uverbs10 after uverbs2. Only ASCII digit runs
    count as numbers: a netdev may be named ``eth0²`` and '²'.isdigit() is true, but int() refuses it.

    Splitting on ASCII digit runs gives text and digits by turns, text first (possibly empty). The key
    holds a pair for each run, flat: ``-1, text`` for text and ``number, ""`` for digits (so digits
    sort after text at the same place); empty text is left out. One flat tuple of ints and strs
    per name: a sort of thousands of names makes no nested tuples for the garbage collector."""
    key: list[int | str] = []
    digits = False
    for part in _DIGIT_RUNS.split(name):
        if digits:
            key += (int(part), "")
        elif part:
            key += (-1, part)
        digits = not digits
    return tuple(key)
