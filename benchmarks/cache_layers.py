"""What each layer of the sysfs cache saves: the steady-state snapshot with the layer and without it.

    python -m benchmarks.cache_layers [--sizes 64,2048] [--rounds 41]

For each size a node is generated on tmpfs (benchmarks/synth.py) and, for each layer, two caches
are warmed: the loop's (every layer on) and one with that layer switched off (a
:class:`~agent.discover.sysfs.SysfsCache` whose kind of facts or answers is never kept; ``MergeMemo``
off is ``SnapshotCache.merged = None``). Only those two are alive while they are measured, one
snapshot each per round in a shuffled order, with the garbage collector on as in the agent: a
layer that saves allocations is credited with the collections it saves. The figures are medians
(benchmarks/results/cache-layers.md has a run and the decisions taken on it).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple, overload

from agent.discover.snapshot import SnapshotCache, take_snapshot
from agent.discover.sysfs import SysfsCache
from agent.discover.sysfs.cache import Fresh, Key, Kind
from benchmarks.scale import NEVER, scratch_dir
from benchmarks.synth import SynthExchange, build_node

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# The layers, by the name of their Kind (agent/discover/sysfs/*.py), and MergeMemo (snapshot.py).
LAYERS = ("rdma", "pci", "chars", "ib_links", "net_links", "rdma_devices", "virtfns", "char_devices", "MergeMemo")


class WithoutLayer(SysfsCache):
    """A cache that never keeps the facts or answers of one kind: everything of it is read again."""

    def __init__(self, off: str) -> None:
        super().__init__(refresh_every=NEVER)
        self.off = off

    @overload
    def static(self, kind: Kind[T], key: Key, load: Callable[[*Ts], Fresh[T]], *args: *Ts) -> T: ...

    @overload
    def static(self, kind: Kind[T], key: Key, load: Callable[[*Ts], Fresh[T] | None], *args: *Ts) -> T | None: ...

    def static(self, kind: Kind[T], key: Key, load: Callable[[*Ts], Fresh[T] | None], *args: *Ts) -> T | None:
        if kind.name == self.off:
            fresh = load(*args)
            return None if fresh is None else fresh.value
        return super().static(kind, key, load, *args)

    def static_listing(
        self, kind: Kind[T], entries: Mapping[str, int], load: Callable[[str], Fresh[T]]
    ) -> dict[str, T]:
        if kind.name == self.off:
            return {name: load(name).value for name in entries}
        return super().static_listing(kind, entries, load)

    def keeps(self, kind: Kind[Any], keys: AbstractSet[Key]) -> bool:
        return kind.name != self.off and super().keeps(kind, keys)

    def recall(self, kind: Kind[T], key: Key, inputs: object) -> T | None:
        return None if kind.name == self.off else super().recall(kind, key, inputs)

    def remember(self, kind: Kind[T], key: Key, inputs: object, answer: T) -> None:
        if kind.name != self.off:
            super().remember(kind, key, inputs, answer)


def without(layer: str) -> SnapshotCache:
    if layer == "MergeMemo":
        cache = SnapshotCache(SysfsCache(refresh_every=NEVER))
        cache.merged = None  # type: ignore[assignment]  # take_snapshot then merges every device again
        return cache
    return SnapshotCache(WithoutLayer(layer))


def measure(n: int, layers: Sequence[str], rounds: int) -> list[tuple[str, float, float]]:
    """(layer, median ms with every layer, median ms without that one) for each layer."""
    out: list[tuple[str, float, float]] = []
    rng = random.Random(n)  # noqa: S311 - an order to run in, not a secret
    with tempfile.TemporaryDirectory(prefix="rna-layers-", dir=scratch_dir()) as tmp:
        node = build_node(Path(tmp), n)
        exchange = SynthExchange(node.functions)
        for layer in layers:
            caches = {"with": SnapshotCache(SysfsCache(refresh_every=NEVER)), "without": without(layer)}
            for cache in caches.values():
                for _ in range(3):  # facts are kept from an identity's second sighting
                    take_snapshot(node.roots, netlink=exchange.factory, cache=cache)
            gc.collect()
            seconds: dict[str, list[float]] = {name: [] for name in caches}
            for _ in range(rounds):
                for name in rng.sample(sorted(caches), len(caches)):
                    started = time.perf_counter()
                    take_snapshot(node.roots, netlink=exchange.factory, cache=caches[name])
                    seconds[name].append(time.perf_counter() - started)
            out.append((layer, statistics.median(seconds["with"]) * 1e3, statistics.median(seconds["without"]) * 1e3))
            del caches
            gc.collect()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cache_layers", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,2048", help="functions per node, comma-separated")
    parser.add_argument("--rounds", type=int, default=41, help="snapshots of each cache per layer")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated, of: " + ", ".join(LAYERS))
    args = parser.parse_args(argv)
    print("| functions | layer | with it | without it | a cycle without it is longer by |")
    print("|---|---|---|---|---|")
    for n in (int(size) for size in args.sizes.split(",")):
        for layer, with_ms, without_ms in measure(n, args.layers.split(","), args.rounds):
            longer = (without_ms - with_ms) / with_ms
            print(f"| {n:,} | {layer} | {with_ms:.2f} ms | {without_ms:.2f} ms | {longer:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
