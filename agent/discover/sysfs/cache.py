"""The cross-cycle cache of the sysfs readers: what one snapshot keeps for the next.

Two kinds of things are kept, each behind one small interface, per :class:`Kind` (a typed name
that a reader module declares once, e.g. ``Kind[RdmaFacts]("rdma")``):

* static facts by identity — :meth:`SysfsCache.static` gives the kept fact or loads it, and keeps
  what was loaded when the load was clean and the identity was seen before;
* answers given again while what they were made of is unchanged — :meth:`SysfsCache.recall` and
  :meth:`SysfsCache.remember`, for the few answers whose making costs more than comparing their
  inputs (benchmarks/results/cache-layers.md).
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final, Generic, NamedTuple, TypeVar, TypeVarTuple, overload

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

Key = tuple[str, int]  # a sysfs object's identity: (entry name, inode number of the entry)
WHOLE: Final[Key] = ("", 0)  # the key of a kind kept as one answer, not per identity
STATIC_MAX_AGE_SECONDS: Final = 600.0  # the longest a fact treated as static goes unread


class Kind(Generic[T]):
    """One family of kept values (``rdma`` facts, ``net_links``, …), declared once by the module
    that reads them; ``T`` is the type of its values."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Kind({self.name!r})"


class Fresh(NamedTuple, Generic[T]):
    """What a loader read: the value, and whether it may be kept (none of its reads failed)."""

    value: T
    clean: bool = True


class _Answer(NamedTuple, Generic[T]):
    """An answer and the inputs it was made of."""

    inputs: object
    value: T


class _Miss(enum.Enum):
    MISS = 0


_MISS: Final = _Miss.MISS


class _Store(Generic[T]):
    """One kind's kept values: facts by identity with the snapshot each identity was first seen
    in, and answers by key with the inputs they were made of."""

    __slots__ = ("answers", "facts", "first_seen")

    def __init__(self) -> None:
        self.facts: dict[Key, T] = {}
        self.first_seen: dict[Key, int] = {}
        self.answers: dict[Key, _Answer[T]] = {}

    def retain(self, keys: AbstractSet[Key]) -> None:
        """Forget identities that are no longer listed (gone, or re-created with a new inode)."""
        if len(self.facts) > len(keys) or not keys >= self.facts.keys():
            self.facts = {k: v for k, v in self.facts.items() if k in keys}
        if len(self.first_seen) > len(keys) or not keys >= self.first_seen.keys():
            self.first_seen = {k: v for k, v in self.first_seen.items() if k in keys}
        if len(self.answers) > len(keys) or not keys >= self.answers.keys():
            self.answers = {k: v for k, v in self.answers.items() if k in keys}


class SysfsCache:
    """What the sysfs readers keep from one snapshot to the next, so that a warm cycle reads only what
    can change. The agent's loop holds one and passes it to ``take_snapshot(cache=…)``.

    **Identity.** A sysfs object is known by its directory entry: (name, inode number), the inode
    number coming free with the listing (``os.scandir``'s ``DirEntry.inode()``, getdents' d_ino; no
    stat). kernfs numbers its nodes from a cyclic allocator, so a device removed and created again
    under the same name (hot-unplug and re-plug, ``rdma link delete``/``add``, ``sriov_numvfs`` 0 → N,
    a driver reload re-registering its RDMA devices) is a new identity, and so is a renamed netdev or
    RDMA device (new name). Facts about identities that leave their listing are dropped.

    **Static while the identity lives** (read once, then kept): an RDMA device's node_type,
    node_guid, sys_image_guid, fw_ver, port numbers and each port's link_layer (set when ib_core
    registers the device; changing them — new firmware, an mlx4 port type change — re-registers it;
    a live firmware patch that keeps the device shows at the next refresh, and netlink's
    FW_VERSION, read every cycle, wins anyway); the PCI function behind each ``class/infiniband``
    and ``class/net`` entry (its ``device`` link, made by device_add()); where an RDMA device's and a
    PCI function's directories are (dynamic reads skip the class and bus links); a PCI function's
    vendor, device, subsystem ids, class, numa_node, ``physfn`` and whether it is an SR-IOV PF
    (pci_dev fields set at enumeration); a char device's port, and its ibdev while the
    ``class/infiniband`` listing is unchanged (ibdev prints the RDMA device's current name, and
    ``rdma dev set … name`` or udev's persistent naming renames devices after they appear).

    **Read every cycle:** port state, phys_state, lid and sm_lid, and the port's netdev with its
    ifindex — each only when netlink did not give it (netlink wins in the merge anyway), with the
    ``parent`` fallback (rxe and siw print their netdev's current name there); port rate (follows the
    link speed); a PCI function's driver link (rebinding a VF to vfio-pci is common); sriov_totalvfs
    and sriov_numvfs, and a PF's ``virtfnN`` names (their targets are read again when those or
    sriov_numvfs changed, or did not agree); which netdevs and RDMA devices sit on which function
    (from that cycle's listings of class/net and class/infiniband); which char device nodes exist
    (one listing of /dev/infiniband); ib_core's netns mode.

    **Never kept:** a read that failed (its error is reported again next cycle, as without a cache)
    and a read at an identity's first sighting: the kernel makes an entry visible before it is
    complete (device_add() links the class entry before it adds attribute groups,
    ib_register_device() adds ``ports/`` after device_add(), a VF's ``physfn`` link comes after its
    bus entry), so facts are kept from the second snapshot that sees the identity.

    **Answers given again** (:meth:`recall`): an RDMA device while its facts, PCI function and ports
    say what they said last cycle (fewer objects to build, and objects the snapshot's merge can tell
    unchanged by identity); a PF's VF addresses while its ``virtfnN`` names and sriov_numvfs are
    unchanged; the char devices while every listing they come from is unchanged.

    **Refresh:** every ``refresh_every`` snapshots all kept facts and answers are dropped and read
    again, which bounds how stale a fact treated as static can be (:meth:`for_interval`: 10 minutes
    of cycles).

    Not thread-safe: one cache per loop. ``take_snapshot`` calls :meth:`begin_snapshot`.
    """

    def __init__(self, refresh_every: int = 20) -> None:
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be at least 1, got {refresh_every}")
        self.refresh_every = refresh_every
        self.snapshots = 0
        self.refreshes = 0
        self._stores: defaultdict[Kind[Any], _Store[Any]] = defaultdict(_Store)
        self._ties: dict[Kind[Any], object] = {}

    @classmethod
    def for_interval(cls, interval_seconds: float, max_age_seconds: float = STATIC_MAX_AGE_SECONDS) -> SysfsCache:
        """A cache whose static facts are at most ``max_age_seconds`` old at one snapshot every
        ``interval_seconds`` (30 s → a refresh every 20 snapshots)."""
        if not interval_seconds > 0 or not math.isfinite(interval_seconds):
            return cls(refresh_every=1)
        return cls(refresh_every=max(1, math.floor(max_age_seconds / interval_seconds)))

    def begin_snapshot(self) -> None:
        """A new snapshot starts; every ``refresh_every``-th one reads everything again."""
        self.snapshots += 1
        if self.snapshots % self.refresh_every == 0:
            self.refresh()

    def refresh(self) -> None:
        """Drop every kept fact and answer. Identities already seen stay seen: what is read next is
        kept."""
        self.refreshes += 1
        for store in self._stores.values():
            store.facts = {}
            store.answers = {}

    # --- static facts ---------------------------------------------------------------------------------

    @overload
    def static(self, kind: Kind[T], key: Key, load: Callable[[*Ts], Fresh[T]], *args: *Ts) -> T: ...

    @overload
    def static(self, kind: Kind[T], key: Key, load: Callable[[*Ts], Fresh[T] | None], *args: *Ts) -> T | None: ...

    def static(self, kind: Kind[T], key: Key, load: Callable[[*Ts], Fresh[T] | None], *args: *Ts) -> T | None:
        """The fact kept for ``key``, else ``load(*args)``'s value (None when it read nothing, e.g.
        the object is gone). What was loaded is kept only when the load was clean and ``key`` was
        first seen in an earlier snapshot; a clean load records the first sighting."""
        store: _Store[T] = self._stores[kind]
        kept = store.facts.get(key, _MISS)
        if kept is not _MISS:
            return kept
        fresh = load(*args)
        return None if fresh is None else self._keep(store, key, fresh)

    def static_listing(
        self, kind: Kind[T], entries: Mapping[str, int], load: Callable[[str], Fresh[T]]
    ) -> dict[str, T]:
        """:meth:`static` for every entry of a listing (entry name → inode number), by name;
        ``load`` is given the entry's name."""
        store: _Store[T] = self._stores[kind]
        facts = store.facts
        found: dict[str, T] = {}
        for name, ino in entries.items():
            key = (name, ino)
            kept = facts.get(key, _MISS)
            found[name] = kept if kept is not _MISS else self._keep(store, key, load(name))
        return found

    def _keep(self, store: _Store[T], key: Key, fresh: Fresh[T]) -> T:
        """What a load gave; kept when it was clean and ``key`` was seen in an earlier snapshot (a
        clean load records the first sighting)."""
        if fresh.clean and store.first_seen.setdefault(key, self.snapshots) < self.snapshots:
            store.facts[key] = fresh.value
        return fresh.value

    def keeps(self, kind: Kind[Any], keys: AbstractSet[Key]) -> bool:
        """Whether a fact is kept for every one of ``keys``."""
        return self._stores[kind].facts.keys() >= keys

    def tie(self, kind: Kind[Any], token: object) -> None:
        """Keep ``kind``'s facts only while ``token`` stays what it was: when it changed, or is None
        (unknown), they are dropped."""
        if token is None or token != self._ties.get(kind):
            self._stores[kind].facts = {}
            self._ties[kind] = token

    # --- answers given again ------------------------------------------------------------------------

    def recall(self, kind: Kind[T], key: Key, inputs: object) -> T | None:
        """The answer kept for ``key`` when it was made of inputs equal to ``inputs``, else None.
        Equal inputs that are other objects (facts read again at a refresh or kept from their second
        sighting) replace the kept ones, so that next cycle's comparison is one of identities."""
        store: _Store[T] = self._stores[kind]
        answers = store.answers
        kept = answers.get(key)
        if kept is None or kept.inputs is inputs:
            return None if kept is None else kept.value
        if kept.inputs != inputs:
            return None
        answers[key] = _Answer(inputs, kept.value)
        return kept.value

    def remember(self, kind: Kind[T], key: Key, inputs: object, answer: T) -> None:
        """Keep ``answer`` (not None) for ``key``, to be given again while its inputs stay equal to
        ``inputs``."""
        self._stores[kind].answers[key] = _Answer(inputs, answer)

    # --- both -----------------------------------------------------------------------------------------

    def retain(self, kind: Kind[Any], keys: AbstractSet[Key]) -> None:
        """Forget ``kind``'s facts and answers about identities not in ``keys`` (no longer listed)."""
        self._stores[kind].retain(keys)
