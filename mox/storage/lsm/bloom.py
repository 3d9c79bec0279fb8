"""Bloom filters that can be saved inside an SSTable.

rbloom's default hash is Python's `hash()`, which is salted per process, so a filter built
in one process would answer wrongly in the next. Every filter here hashes keys with
xxh3_128 instead (rbloom wants a signed 128-bit int), which is stable across processes.
"""

from __future__ import annotations

import xxhash
from rbloom import Bloom

__all__ = ["build_bloom", "load_bloom"]


def bloom_hash(key: bytes) -> int:
    """The stable 128-bit hash rbloom needs; the same for a key in every process."""
    return int.from_bytes(xxhash.xxh3_128_digest(key), "little", signed=True)


def build_bloom(keys: list[bytes], false_positive_rate: float) -> Bloom:
    """A filter holding `keys`, sized for them at `false_positive_rate`."""
    assert 0.0 < false_positive_rate < 1.0
    # rbloom rejects a capacity of 0; an empty table still gets a (tiny) valid filter.
    bloom = Bloom(max(1, len(keys)), false_positive_rate, bloom_hash)
    bloom.update(keys)
    return bloom


def load_bloom(data: bytes) -> Bloom:
    """The filter saved by `Bloom.save_bytes()`; the caller has verified its checksum."""
    return Bloom.load_bytes(data, bloom_hash)
