"""ULIDs (mox/api/ids.py) against the ULID definition, computed the slow, obvious way."""

from __future__ import annotations

import os
import time

from hypothesis import given
from hypothesis import strategies as st

from mox.api.ids import format_ulid, new_ulid

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference_ulid(time_ms: int, randomness: bytes) -> str:
    """26 base32 digits of the 128-bit value, most significant first."""
    value = (time_ms << 80) | int.from_bytes(randomness, "big")
    return "".join(CROCKFORD[(value >> (5 * (25 - i))) & 31] for i in range(26))


@given(st.integers(0, (1 << 48) - 1), st.binary(min_size=10, max_size=10))
def test_format_ulid_matches_the_definition(time_ms: int, randomness: bytes) -> None:
    assert format_ulid(time_ms, randomness) == reference_ulid(time_ms, randomness)


def test_format_ulid_edges() -> None:
    assert format_ulid(0, bytes(10)) == "0" * 26
    assert format_ulid((1 << 48) - 1, b"\xff" * 10) == "7" + "Z" * 25
    assert format_ulid(1, bytes(10)) == "0" * 9 + "1" + "0" * 16


def test_new_ulids_sort_by_time_and_differ() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_ulid() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 and set(i) <= set(CROCKFORD) for i in ids)
    decoded_ms = int("".join(f"{CROCKFORD.index(c):05b}" for c in ids[0])[2:50], 2)
    assert before_ms <= decoded_ms <= time.time_ns() // 1_000_000
    assert format_ulid(5, os.urandom(10)) < format_ulid(6, bytes(10))
