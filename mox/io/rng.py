"""The `Random` protocol over a `random.Random` (seeded in the simulator, the OS's in production)."""

from __future__ import annotations

import random


class StdRandom:
    """`mox.io.interfaces.Random` over any `random.Random`, including `random.SystemRandom`
    (whose `randbytes` reads the OS's randomness)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def random(self) -> float:
        return self._rng.random()

    def randrange(self, start: int, stop: int) -> int:
        assert start < stop
        return self._rng.randrange(start, stop)

    def randbytes(self, n: int) -> bytes:
        assert n >= 0
        return self._rng.randbytes(n)
