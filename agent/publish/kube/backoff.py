"""How long to wait before retrying kube-apiserver: exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff with jitter: ``initial·factor^n`` capped at ``maximum``, each delay randomly
    shortened by up to ``jitter`` of itself so that a fleet of agents does not reconnect in lockstep."""

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    _base: float = field(default=0.0, init=False, repr=False)

    def next_delay(self) -> float:
        self._base = self.initial if self._base == 0.0 else min(self.maximum, self._base * self.factor)
        return self._base * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self._base = 0.0
