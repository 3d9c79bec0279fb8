"""The node's tick arithmetic (mox.node.runtime.ticks_due).

A real 3-node bench once stopped a node at start on `assert self._next_tick_s > now_s`: when
the loop's clock lies on a tick boundary up to floating-point error, the division rounds the
number of due ticks down by one.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from mox.node.runtime import ticks_due


@given(
    next_tick_s=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    interval_s=st.sampled_from([0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.25]),
    intervals=st.integers(min_value=0, max_value=10_000),
    extra_fraction=st.floats(min_value=0, max_value=1, exclude_max=True),
)
# On a boundary: the old formula scheduled the next tick at `now_s` itself.
@example(next_tick_s=1179.1870367106105, interval_s=0.003, intervals=30, extra_fraction=0.0)
@example(next_tick_s=6074.379962852603, interval_s=0.01, intervals=44, extra_fraction=0.0)
def test_ticks_due_schedules_the_next_tick_strictly_after_now(
    next_tick_s: float, interval_s: float, intervals: int, extra_fraction: float
) -> None:
    now_s = next_tick_s + intervals * interval_s + extra_fraction * interval_s
    due, after_s = ticks_due(next_tick_s, now_s, interval_s)
    assert after_s > now_s
    # Not more than one interval late, up to rounding.
    assert after_s - now_s <= interval_s * (1 + 1e-6) + 1e-9
    # One tick per elapsed interval, counting the one due at `next_tick_s`.
    assert intervals + 1 <= due <= intervals + 2
    assert abs(next_tick_s + due * interval_s - after_s) <= 1e-6 * max(1.0, after_s)


def test_ticks_due_counts_ticks_between_boundaries() -> None:
    assert ticks_due(1.0, 1.0, 0.5) == (1, 1.5)
    assert ticks_due(1.0, 1.2, 0.5) == (1, 1.5)
    assert ticks_due(1.0, 2.6, 0.5) == (4, 3.0)
