"""The memtable: the newest writes, in memory, sorted by user key.

Each key maps to a tuple of versions `(seq, value)` in ascending seq (value None: a
tombstone). Tuples, never lists: a reader that copied a key's versions keeps a stable view
while writers replace the entry. Older versions are kept only while a live snapshot can see
them (`versions.retain_versions`), so with no snapshot a key holds one version.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedDict

from mox.storage.lsm.versions import Version, retain_versions, visible_version

__all__ = ["Memtable"]

# Rough per-version bookkeeping cost (tuple, dict slot, ints) so that many tiny values
# still trigger a flush.
_VERSION_OVERHEAD_BYTES = 48
# A scan copies this many keys at a time, then re-seeks: writes between two chunks
# never invalidate an iterator over a SortedDict.
_SCAN_CHUNK_KEYS = 128


class Memtable:
    """Sorted in-memory versions of keys; frozen (read-only) once handed to a flush."""

    def __init__(self) -> None:
        self._entries: SortedDict = SortedDict()
        self.size_bytes = 0
        self.frozen = False
        self.seq_max = 0
        # Set by `freeze`: the store's last seq and applied index when this memtable stopped
        # taking writes. Once it is in a table, every write up to these is durable.
        self.frozen_last_seq = -1
        self.frozen_applied_index = -1

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: bytes, seq: int, value: bytes | None, snapshot_seqs: list[int]) -> None:
        """Add version `seq` of `key`; drop older versions no snapshot in `snapshot_seqs` sees."""
        assert not self.frozen, "a frozen memtable takes no writes"
        assert seq >= self.seq_max, "sequence numbers only grow"
        old: tuple[Version, ...] | None = self._entries.get(key)
        added_bytes = len(key) + (len(value) if value is not None else 0) + _VERSION_OVERHEAD_BYTES
        if old is None:
            self._entries[key] = ((seq, value),)
            self.size_bytes += added_bytes
        elif not snapshot_seqs:
            assert old[-1][0] <= seq
            self._entries[key] = ((seq, value),)
            self.size_bytes += added_bytes - _versions_size_bytes(key, old)
        else:
            if old[-1][0] == seq:
                # Same batch wrote this key twice: the last write of the batch wins.
                old = old[:-1]
            kept = retain_versions([*old, (seq, value)], snapshot_seqs, bottom=False)
            new = tuple(kept)
            self._entries[key] = new
            self.size_bytes += _versions_size_bytes(key, new) - _versions_size_bytes(key, old)
        self.seq_max = seq

    def freeze(self, last_seq: int, applied_index: int) -> None:
        assert not self.frozen
        assert last_seq >= self.seq_max and applied_index >= 0
        self.frozen = True
        self.frozen_last_seq = last_seq
        self.frozen_applied_index = applied_index

    def get(self, key: bytes, read_seq: int) -> Version | None:
        """The version of `key` a reader at `read_seq` sees here, or None if none is here."""
        versions: tuple[Version, ...] | None = self._entries.get(key)
        if versions is None:
            return None
        return visible_version(versions, read_seq)

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, tuple[Version, ...]]]:
        """Keys in [start, end) (end None: to the last key) with all their versions."""
        lower = start
        inclusive = True
        while True:
            chunk: list[bytes] = []
            for key in self._entries.irange(lower, end, inclusive=(inclusive, False)):
                chunk.append(key)
                if len(chunk) >= _SCAN_CHUNK_KEYS:
                    break
            if not chunk:
                return
            # Copy before yielding: the caller may write between two items.
            items = [(key, self._entries.get(key)) for key in chunk]
            for key, versions in items:
                if versions is not None:
                    yield key, versions
            lower = chunk[-1]
            inclusive = False

    def items(self) -> Iterator[tuple[bytes, tuple[Version, ...]]]:
        """Every key with its versions, ascending (frozen memtables only: no concurrent writes)."""
        assert self.frozen
        entries = self._entries
        # Keys, then a dict lookup: much cheaper than SortedDict's items view.
        for key in entries:
            yield key, entries[key]


def _versions_size_bytes(key: bytes, versions: tuple[Version, ...]) -> int:
    total = 0
    for _seq, value in versions:
        total += len(key) + (len(value) if value is not None else 0) + _VERSION_OVERHEAD_BYTES
    return total
