"""Which versions of one key must be kept: the one rule shared by memtable, flush and compaction.

A key's versions are `(seq, value)` pairs, `value` None for a tombstone, in ascending `seq`.
A reader at sequence number `s` sees the newest version with `seq <= s`. The newest version is
always kept (it is what a new reader sees); an older version is kept only if some live snapshot
sees it, that is, some snapshot seq falls in `[version.seq, next_newer.seq)`. At the bottom of
the tree nothing older exists anywhere, so an oldest-kept tombstone says nothing a missing key
would not say, and is dropped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["Version", "retain_versions", "visible_version"]

Version = tuple[int, bytes | None]


def retain_versions(
    versions: Sequence[Version], snapshot_seqs: list[int], *, bottom: bool
) -> Sequence[Version]:
    """The versions some reader can still see, in ascending seq.

    `snapshot_seqs` is sorted ascending. With `bottom`, trailing tombstones go too.
    """
    assert versions, "a key has at least one version"
    if len(versions) == 1:  # the common case: nothing to choose
        return [] if bottom and versions[0][1] is None else versions
    kept: list[Version] = []
    newer_seq: int | None = None
    for seq, value in reversed(versions):
        if newer_seq is None:
            kept.append((seq, value))
        else:
            assert seq < newer_seq, "versions are in ascending, unique seq"
            # Some snapshot in [seq, newer_seq) reads exactly this version.
            index = bisect_left(snapshot_seqs, seq)
            if index < len(snapshot_seqs) and snapshot_seqs[index] < newer_seq:
                kept.append((seq, value))
        newer_seq = seq
    if bottom:
        while kept and kept[-1][1] is None:
            kept.pop()
    kept.reverse()
    if kept:
        assert kept[-1] == versions[-1], "the newest version survives unless all are tombstones"
    return kept


def visible_version(versions: Sequence[Version], read_seq: int) -> Version | None:
    """The newest version with seq <= read_seq (ascending `versions`), or None."""
    for index in range(len(versions) - 1, -1, -1):
        if versions[index][0] <= read_seq:
            return versions[index]
    return None
