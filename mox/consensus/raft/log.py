"""The Raft log as the core sees it: a snapshot, the entries after it, and three cursors.

    snapshot.index < entries ... <= last_index
    snapshot.index <= applied_index <= commit_index <= last_index      (applied: handed out)
    snapshot.index <= stable_index <= last_index                       (stable: persisted)

Entries above `stable_index` are unstable: the next Ready hands them to the runtime to persist.
A truncation below `stable_index` lowers it, so the next Ready's entries overlap the stable log
and the runtime truncates there first. The configuration in effect is the last config entry in
the log, else the snapshot's (Ongaro's single-server change: effective when appended), so the
log keeps the indexes of its config entries to find it again after a truncation.
"""

from __future__ import annotations

from mox.consensus.raft.messages import CONFIG, Entry, SnapshotMeta, entry_size_bytes


class RaftLog:
    __slots__ = (
        "_config_indexes",
        "applied_index",
        "commit_index",
        "entries",
        "snapshot",
        "snapshot_data",
        "stable_index",
    )

    def __init__(self, snapshot: SnapshotMeta, snapshot_data: bytes, entries: list[Entry]) -> None:
        assert snapshot.config, "a snapshot always carries a configuration"
        self.snapshot = snapshot
        self.snapshot_data = snapshot_data
        self.entries: list[Entry] = list(entries)
        for offset, entry in enumerate(self.entries):
            assert entry.index == snapshot.index + 1 + offset
        self.commit_index = snapshot.index
        self.applied_index = snapshot.index
        self.stable_index = self.last_index()
        # Indexes of config entries in `entries`, ascending.
        self._config_indexes: list[int] = [e.index for e in self.entries if e.kind == CONFIG]

    # -- reading -----------------------------------------------------------------------------

    def first_index(self) -> int:
        """The index of the first entry held (snapshot.index + 1, even if there is none)."""
        return self.snapshot.index + 1

    def last_index(self) -> int:
        return self.snapshot.index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.term

    def term_at(self, index: int) -> int | None:
        """The term at `index`; None if it is compacted away (below the snapshot) or beyond."""
        offset = index - self.snapshot.index
        if offset == 0:
            return self.snapshot.term
        if offset < 0 or offset > len(self.entries):
            return None
        return self.entries[offset - 1].term

    def entry(self, index: int) -> Entry:
        offset = index - self.snapshot.index
        assert 1 <= offset <= len(self.entries), (index, self.snapshot.index, len(self.entries))
        entry = self.entries[offset - 1]
        assert entry.index == index
        return entry

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries lo..hi-1 (both within the log)."""
        assert self.snapshot.index < lo <= hi <= self.last_index() + 1, (lo, hi)
        base = self.snapshot.index + 1
        return self.entries[lo - base : hi - base]

    def slice_limited(self, lo: int, count_max: int, size_bytes_max: int) -> list[Entry]:
        """Entries from `lo` on: at most `count_max`, and within `size_bytes_max` except that
        the first entry is always included (an entry that alone exceeds the limit must still
        reach the follower; `propose` keeps entries below the limit)."""
        assert count_max >= 1
        last = self.last_index()
        if lo > last:
            return []
        hi = min(last + 1, lo + count_max)
        base = self.snapshot.index + 1
        out: list[Entry] = []
        size_bytes = 0
        for entry in self.entries[lo - base : hi - base]:
            size_bytes += entry_size_bytes(entry)
            if out and size_bytes > size_bytes_max:
                break
            out.append(entry)
        assert out and out[0].index == lo
        return out

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stable_index - self.snapshot.index :]

    def is_up_to_date(self, last_term: int, last_index: int) -> bool:
        """Whether a log ending at (last_term, last_index) is at least as up to date as ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def config(self) -> tuple[int, ...]:
        """The configuration in effect: the last config entry, else the snapshot's."""
        if self._config_indexes:
            return tuple(self.entry(self._config_indexes[-1]).config)
        return tuple(self.snapshot.config)

    def config_at(self, index: int) -> tuple[int, ...]:
        """The configuration in effect at `index` (snapshot.index <= index <= last_index)."""
        assert self.snapshot.index <= index <= self.last_index()
        for config_index in reversed(self._config_indexes):
            if config_index <= index:
                return tuple(self.entry(config_index).config)
        return tuple(self.snapshot.config)

    def last_config_index(self) -> int:
        """The index of the last config entry in the log (0: none after the snapshot)."""
        return self._config_indexes[-1] if self._config_indexes else 0

    # -- changing ----------------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        assert entry.index == self.last_index() + 1, (entry.index, self.last_index())
        assert entry.term >= self.last_term(), (entry.term, self.last_term())
        self.entries.append(entry)
        if entry.kind == CONFIG:
            self._config_indexes.append(entry.index)

    def truncate_from(self, index: int) -> None:
        """Drops entries index.. (a conflicting suffix). Never touches committed entries."""
        assert index > self.commit_index, (index, self.commit_index)
        assert self.snapshot.index < index <= self.last_index()
        del self.entries[index - self.snapshot.index - 1 :]
        while self._config_indexes and self._config_indexes[-1] >= index:
            self._config_indexes.pop()
        self.stable_index = min(self.stable_index, index - 1)
        assert self.last_index() == index - 1

    def compact(self, index: int, data: bytes) -> None:
        """The state machine has a snapshot at `index` (committed): drop entries up to it."""
        assert self.snapshot.index < index <= self.commit_index, (index, self.commit_index)
        assert index <= self.stable_index
        term = self.term_at(index)
        assert term is not None
        config = self.config_at(index)
        del self.entries[: index - self.snapshot.index]
        self.snapshot = SnapshotMeta(index=index, term=term, config=list(config))
        self.snapshot_data = data
        while self._config_indexes and self._config_indexes[0] <= index:
            self._config_indexes.pop(0)
        assert self.first_index() == index + 1

    def install(self, snapshot: SnapshotMeta, data: bytes) -> bool:
        """Installs a snapshot newer than commit_index; returns whether the suffix was kept.

        The suffix after the snapshot survives only if the log holds the snapshot's last
        entry (same index and term); otherwise the whole log is discarded.
        """
        assert snapshot.index > self.commit_index, (snapshot.index, self.commit_index)
        keep = self.term_at(snapshot.index) == snapshot.term
        if keep:
            del self.entries[: snapshot.index - self.snapshot.index]
            self._config_indexes = [i for i in self._config_indexes if i > snapshot.index]
            self.stable_index = max(self.stable_index, snapshot.index)
        else:
            self.entries = []
            self._config_indexes = []
            self.stable_index = snapshot.index
        self.snapshot = snapshot
        self.snapshot_data = data
        self.commit_index = snapshot.index
        self.applied_index = snapshot.index
        assert self.stable_index <= self.last_index()
        return keep
