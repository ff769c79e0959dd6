"""The Node's extended resources: Kubernetes quantities (``"500"``, ``"1k"``, ``"2Ki"``) as device
counts. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

from agent.model import ResourceAmount

_QUANTITY = re.compile(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_INT64_MAX = 2**63 - 1


def parse_quantity(text: str) -> int | None:
    """A Kubernetes quantity that is a whole number ≥ 0 (``"500"``, ``"1k"``, ``"2Ki"``, ``"1e3"``) →
    int; anything else (fractions such as ``"500m"``, negatives, junk, beyond int64) → None.
    Extended resources are integers, so a fraction is no device count."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        return None
    sign, number, suffix = match.group(1), match.group(2), match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        exponent = int(suffix[1:])
        if abs(exponent) > 30:
            return None
        multiplier = Decimal(10) ** exponent
    else:
        multiplier = _SUFFIX[suffix]
    try:
        value = Decimal(number) * multiplier
    except InvalidOperation:
        return None
    if sign == "-" and value != 0:
        return None
    if value != value.to_integral_value() or value > _INT64_MAX:
        return None
    return int(value)


def resources_from_node(
    capacity: Mapping[str, str], allocatable: Mapping[str, str], prefixes: Sequence[str]
) -> tuple[ResourceAmount, ...]:
    """The Node's extended resources whose name starts with one of ``prefixes`` (``spidernet.io/``),
    sorted by name. A quantity that is not a whole number is None."""
    names = sorted(n for n in set(capacity) | set(allocatable) if any(n.startswith(p) for p in prefixes))
    return tuple(
        ResourceAmount(
            name=name,
            capacity=parse_quantity(capacity[name]) if name in capacity else None,
            allocatable=parse_quantity(allocatable[name]) if name in allocatable else None,
        )
        for name in names
    )
