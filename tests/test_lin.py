"""checker.lin on hand-made histories: linearizable ones pass, broken ones are caught."""

from __future__ import annotations

import random

import pytest

from checker.lin import HistoryRecorder, check_kv, check_stale_reads


def test_sequential_history_is_linearizable() -> None:
    h = HistoryRecorder()
    w = h.invoke("a", "write", "x", "1", 0)
    h.ok(w, 10)
    r = h.invoke("b", "read", "x", None, 20)
    h.ok(r, 30, "1")
    result = check_kv(h.operations)
    assert result.ok is True
    assert result.operations_checked == 2
    assert result.keys_checked == 1


def test_stale_read_after_completed_write_is_not_linearizable() -> None:
    h = HistoryRecorder()
    w1 = h.invoke("a", "write", "x", "1", 0)
    h.ok(w1, 10)
    w2 = h.invoke("a", "write", "x", "2", 20)
    h.ok(w2, 30)
    r = h.invoke("b", "read", "x", None, 40)
    h.ok(r, 50, "1")
    result = check_kv(h.operations)
    assert result.ok is False
    assert "not linearizable" in result.explanation


def test_concurrent_read_may_see_either_value() -> None:
    for seen in ("1", "2"):
        h = HistoryRecorder()
        w1 = h.invoke("a", "write", "x", "1", 0)
        h.ok(w1, 10)
        w2 = h.invoke("a", "write", "x", "2", 20)
        r = h.invoke("b", "read", "x", None, 25)
        h.ok(r, 30, seen)
        h.ok(w2, 40)
        assert check_kv(h.operations).ok is True


def test_read_of_initial_none_before_any_write() -> None:
    h = HistoryRecorder()
    r = h.invoke("b", "read", "x", None, 0)
    h.ok(r, 5, None)
    w = h.invoke("a", "write", "x", "1", 10)
    h.ok(w, 20)
    r2 = h.invoke("b", "read", "x", None, 30)
    h.ok(r2, 40, None)
    assert check_kv(h.operations).ok is False


def test_unknown_write_may_take_effect_later_or_never() -> None:
    h = HistoryRecorder()
    w = h.invoke("a", "write", "x", "1", 0)
    h.unknown(w, 10)
    r1 = h.invoke("b", "read", "x", None, 20)
    h.ok(r1, 30, None)
    r2 = h.invoke("b", "read", "x", None, 40)
    h.ok(r2, 50, "1")
    assert check_kv(h.operations).ok is True
    # ...but once seen it cannot be unseen.
    r3 = h.invoke("b", "read", "x", None, 60)
    h.ok(r3, 70, None)
    assert check_kv(h.operations).ok is False


def test_failed_write_must_not_be_observed() -> None:
    h = HistoryRecorder()
    w = h.invoke("a", "write", "x", "1", 0)
    h.fail(w, 10)
    r = h.invoke("b", "read", "x", None, 20)
    h.ok(r, 30, "1")
    assert check_kv(h.operations).ok is False


def test_keys_are_independent() -> None:
    h = HistoryRecorder()
    wx = h.invoke("a", "write", "x", "1", 0)
    h.ok(wx, 10)
    ry = h.invoke("b", "read", "y", None, 20)
    h.ok(ry, 30, None)
    result = check_kv(h.operations)
    assert result.ok is True
    assert result.keys_checked == 2


def test_lost_acknowledged_write_is_caught_among_many_operations() -> None:
    """A random, correct register history stays linearizable; dropping one acked write doesn't."""
    rng = random.Random(11)
    h = HistoryRecorder()
    state: dict[str, str | None] = {"k0": None, "k1": None, "k2": None}
    now = 0
    lost_key = None
    for n in range(300):
        key = f"k{rng.randrange(3)}"
        now += 10
        if rng.random() < 0.5:
            op = h.invoke(n % 5, "write", key, f"v{n}", now)
            if lost_key is None and n > 100:
                lost_key = key  # acknowledged, but the "database" forgets it
            else:
                state[key] = f"v{n}"
            h.ok(op, now + 5)
        else:
            op = h.invoke(n % 5, "read", key, None, now)
            h.ok(op, now + 5, state[key])
    assert lost_key is not None
    # Make sure the lost write is observable: read its key once more.
    op = h.invoke("z", "read", lost_key, None, now + 100)
    h.ok(op, now + 105, state[lost_key])
    assert check_kv(h.operations).ok is False


def test_budget_exhaustion_is_undecided_not_a_crash() -> None:
    h = HistoryRecorder()
    ops = [h.invoke(c, "write", "x", f"v{c}", 0) for c in range(12)]
    reads = [h.invoke(100 + c, "read", "x", None, 0) for c in range(12)]
    for c, op in enumerate(reads):
        h.ok(op, 10, f"v{(c * 5) % 12}")
    for op in ops:
        h.ok(op, 20)
    result = check_kv(h.operations, budget_steps=50)
    assert result.ok is None
    assert result.explanation.startswith("undecided")


def test_stale_reads_are_excluded_from_linearizability_but_must_return_written_values() -> None:
    h = HistoryRecorder()
    w1 = h.invoke("a", "write", "x", "1", 0)
    h.ok(w1, 10)
    w2 = h.invoke("a", "write", "x", "2", 20)
    h.ok(w2, 30)
    r = h.invoke("b", "read", "x", None, 40, stale=True)
    h.ok(r, 50, "1")
    assert check_kv(h.operations).ok is True
    assert check_stale_reads(h.operations) == []
    bogus = h.invoke("b", "read", "x", None, 60, stale=True)
    h.ok(bogus, 70, "never")
    assert len(check_stale_reads(h.operations)) == 1


def test_recorder_rejects_bad_input() -> None:
    h = HistoryRecorder()
    with pytest.raises(ValueError, match="kind"):
        h.invoke("a", "delete", "x", None, 0)
    with pytest.raises(ValueError, match="stale"):
        h.invoke("a", "write", "x", "1", 0, stale=True)
    op = h.invoke("a", "write", "x", "1", 0)
    h.ok(op, 1)
    with pytest.raises(ValueError, match="already completed"):
        h.ok(op, 2)
