"""The character devices under /dev/infiniband: ``class/infiniband_verbs`` (uverbsN),
``class/infiniband_mad`` (umadN, issmN) and ``class/misc/rdma_cm``, and which of their nodes exist.

Kernel ABI document: Documentation/ABI/stable/sysfs-class-infiniband (infiniband_verbs,
infiniband_mad); formats: drivers/infiniband/core/uverbs_main.c, user_mad.c.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Final, NamedTuple

from agent.discover.sysfs.base import ReaderBase
from agent.discover.sysfs.cache import WHOLE, Fresh, Key, Kind
from agent.discover.sysfs.files import Errors, exists, parsed, scan, scan_class
from agent.discover.sysfs.parse import natural_key, parse_int, parse_text
from agent.model import CharDevice, Problem

logger = logging.getLogger(__name__)

_CHAR_KINDS: Final = {"uverbs": "infiniband_verbs", "umad": "infiniband_mad", "issm": "infiniband_mad"}
_CHAR_NAME: Final = re.compile(r"^(uverbs|umad|issm)(\d+)$")


class CharFacts(NamedTuple):
    """What sysfs says of one char device: the RDMA device it belongs to (``ibdev``) and, for
    umad/issm, the port (``port``)."""

    ibdev: str | None
    port: int | None


class ClassListing(NamedTuple):
    """One char device class directory (``infiniband_verbs``, ``infiniband_mad``) and its entries."""

    cls: str
    base: str  # <sysfs>/class/<cls>
    entries: dict[str, int]  # entry name → inode number


class CharInputs(NamedTuple):
    """Everything the char devices are made of but their kept facts: while it is unchanged (and
    every fact is kept), so is the answer."""

    verbs: dict[str, int]
    mad: dict[str, int]
    nodes: set[str] | None  # the names under /dev/infiniband that exist
    rdma_cm: bool  # class/misc/rdma_cm exists
    rdma_devices: dict[str, int] | None  # class/infiniband, which the ibdevs name


CHARS: Final = Kind[CharFacts]("chars")  # by (class/name, inode); while class/infiniband is unchanged
CHAR_DEVICES: Final = Kind[tuple[CharDevice, ...]]("char_devices")  # the whole answer, by its CharInputs


class CharReader(ReaderBase):
    """The char device reader of :class:`~agent.discover.sysfs.SysfsReader`."""

    def char_devices(self) -> tuple[CharDevice, ...]:
        """The /dev/infiniband nodes sysfs knows of: ``class/infiniband_verbs/uverbsN/ibdev`` and
        ``class/infiniband_mad/{umadN,issmN}/{ibdev,port}`` (Documentation/ABI/stable/
        sysfs-class-infiniband), and ``rdma_cm`` when ``class/misc/rdma_cm`` or the node exists.
        ``present``: the node exists under the host's /dev (one listing of /dev/infiniband). Unreadable
        attributes are None (logged). When neither the listings nor the nodes changed and every fact
        is kept, last cycle's answer is given again."""
        dev_dir = str(self.roots.devfs / "infiniband")
        nodes = _nodes(dev_dir)
        verbs, mad = self._listing("infiniband_verbs"), self._listing("infiniband_mad")
        rdma_cm = exists(f"{self.sys}/class/misc/rdma_cm")
        try:
            rdma_devices: dict[str, int] | None = scan(f"{self.sys}/class/infiniband")
        except OSError:
            rdma_devices = None
        self.cache.tie(CHARS, rdma_devices)  # an RDMA device came, went or was renamed: ibdev may name another
        inputs = CharInputs(verbs.entries, mad.entries, nodes, rdma_cm, rdma_devices)
        answer = self.cache.recall(CHAR_DEVICES, WHOLE, inputs)
        if answer is not None:
            return answer

        def present(name: str) -> bool:
            return name in nodes if nodes is not None else exists(f"{dev_dir}/{name}")

        keys: set[Key] = set()
        found = self._char_devices((verbs, mad), present, keys)
        self.cache.retain(CHARS, keys)
        shown_dir = self.roots.display(self.roots.devfs / "infiniband")
        if rdma_cm or present("rdma_cm"):
            found["rdma_cm"] = CharDevice(
                name="rdma_cm", kind="rdma_cm", path=f"{shown_dir}/rdma_cm", present=present("rdma_cm")
            )
        answer = tuple(found[name] for name in sorted(found, key=natural_key))
        if nodes is not None and rdma_devices is not None and self.cache.keeps(CHARS, keys):
            self.cache.remember(CHAR_DEVICES, WHOLE, inputs, answer)
        return answer

    def _listing(self, cls: str) -> ClassListing:
        """One char device class directory; one that cannot be listed is logged and empty."""
        base = f"{self.sys}/class/{cls}"
        problems: list[Problem] = []
        listing = ClassListing(cls, base, scan_class(self.roots, base, problems))
        for problem in problems:
            logger.warning("%s", problem.message)
        return listing

    def _char_devices(
        self, listings: tuple[ClassListing, ...], present: Callable[[str], bool], keys: set[Key]
    ) -> dict[str, CharDevice]:
        """The uverbs, umad and issm devices of ``listings``, by name; their identities go to ``keys``."""
        shown_dir = self.roots.display(self.roots.devfs / "infiniband")
        found: dict[str, CharDevice] = {}
        for cls, base, entries in listings:
            for name in sorted(entries, key=natural_key):
                match = _CHAR_NAME.match(name)
                if match is None or _CHAR_KINDS[match.group(1)] != cls:
                    continue  # abi_version
                key = (f"{cls}/{name}", entries[name])
                keys.add(key)
                facts = self.cache.static(CHARS, key, _char_facts, f"{base}/{name}", cls == "infiniband_mad")
                found[name] = CharDevice(
                    name=name,
                    kind=match.group(1),
                    path=f"{shown_dir}/{name}",
                    present=present(name),
                    rdma_device=facts.ibdev,
                    port=facts.port,
                )
        return found


def _char_facts(path: str, mad: bool) -> Fresh[CharFacts]:
    """``ibdev`` and, for umad/issm, ``port`` of one char device; unreadable ones are None (logged),
    and then not kept."""
    errors = Errors()
    port = parsed(f"{path}/port", parse_int, errors, "port") if mad else None
    facts = CharFacts(parsed(f"{path}/ibdev", parse_text, errors, "ibdev"), port)
    if errors.items:
        logger.warning("%s: %s", path.rpartition("/")[2], "; ".join(errors.items))
    return Fresh(facts, clean=not errors.items)


def _nodes(path: str) -> set[str] | None:
    """The names under /dev/infiniband that exist (a dangling symlink does not); None when the
    directory exists but cannot be listed."""
    try:
        with os.scandir(path) as entries:
            return {e.name for e in entries if not e.is_symlink() or exists(e.path)}
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except OSError:
        return None
