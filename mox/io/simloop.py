"""A deterministic asyncio event loop that runs in virtual time.

The simulator runs whole clusters, the same async node code as production, on this loop.
It never waits: when nothing is ready, `select` jumps the virtual clock straight to the
next timer. With no timer and nothing ready the run is stuck, and that is an error, not a
hang. Callbacks run in the order asyncio schedules them (FIFO for `call_soon`, by deadline
then insertion for timers), which involves no randomness: one seed, one run.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class SimulationStalled(RuntimeError):
    """Nothing is ready and no timer is pending: the run can never make progress."""


class _VirtualSelector(selectors.BaseSelector):
    """A selector with no real file descriptors: `select` only advances virtual time."""

    def __init__(self) -> None:
        self._map: dict[Any, selectors.SelectorKey] = {}
        self._loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, id(fileobj), events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self._loop is not None
        if timeout is None:
            raise SimulationStalled("no callback is ready and no timer is pending")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._map.clear()

    def get_map(self) -> dict[Any, selectors.SelectorKey]:  # type: ignore[override]
        return self._map


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual seconds, starting at `start_s`."""

    def __init__(self, start_s: float = 0.0) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector._loop = self
        self._virtual_now_s = start_s

    def time(self) -> float:
        return self._virtual_now_s

    def advance(self, seconds: float) -> None:
        """Move virtual time forward by `seconds` (never backwards)."""
        assert seconds >= 0
        self._virtual_now_s += seconds


def run_virtual(coro: Any, start_s: float = 0.0) -> Any:
    """Run `coro` to completion on a fresh VirtualTimeLoop and close the loop."""
    loop = VirtualTimeLoop(start_s)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
