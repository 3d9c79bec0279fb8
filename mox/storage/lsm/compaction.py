"""Leveled compaction in bounded steps.

Shape (LevelDB/RocksDB "leveled"): level 0 holds flushed tables, whose key ranges overlap;
every deeper level is one sorted run of non-overlapping tables, and level i may hold
`level1_size_bytes * level_size_multiplier ** (i - 1)` bytes. A job merges

* all of level 0 with the overlapping tables of level 1, once level 0 has
  `l0_compaction_trigger_tables` tables (level 0 first: it is what reads pay for most);
* otherwise one table of the level most over its target (round-robin by key within the
  level) with the overlapping tables of the next level. A table with no overlap below is
  moved down by a manifest edit alone (a trivial move).

A job is resumable: `CompactionJob.step(max_bytes)` merges at most about `max_bytes` of input
and returns, so whoever drives it (the node's background task, the simulator) decides how
much work happens between foreground operations. Outputs are cut at key boundaries into
tables of about `table_size_bytes`; they become live only when the job installs its manifest
edit, and a crash before that leaves orphan files that `LsmStore.open` deletes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter

from mox.io.interfaces import FileSystem
from mox.storage.lsm.sstable import (
    ENTRY_OVERHEAD_BYTES,
    BlockCache,
    Table,
    TableWriter,
    table_name,
    write_verified_table,
)
from mox.storage.lsm.versions import Version, retain_versions

__all__ = [
    "CompactionJob",
    "level_target_size_bytes",
    "merge_sources",
    "pick_job",
]


def level_target_size_bytes(level: int, level1_size_bytes: int, multiplier: int) -> int:
    assert level >= 1
    return int(level1_size_bytes * multiplier ** (level - 1))


def overlapping(tables: Sequence[Table], min_key: bytes, max_key: bytes) -> list[Table]:
    """The tables whose key range meets [min_key, max_key]."""
    assert min_key <= max_key
    return [t for t in tables if not (t.props.max_key < min_key or t.props.min_key > max_key)]


class JobPlan:
    """What one compaction merges, and where the result goes."""

    def __init__(
        self, input_level: int, inputs: list[Table], lower: list[Table], bottom: bool
    ) -> None:
        assert inputs, "a job has at least one input table"
        self.input_level = input_level
        self.output_level = input_level + 1
        self.inputs = inputs
        self.lower = lower
        self.bottom = bottom

    @property
    def trivial_move(self) -> bool:
        """One table, nothing below to merge with, level >= 1: move it by a manifest edit."""
        return self.input_level >= 1 and len(self.inputs) == 1 and not self.lower

    @property
    def all_inputs(self) -> list[Table]:
        return [*self.inputs, *self.lower]


def pick_job(
    levels: Sequence[Sequence[Table]],
    *,
    l0_trigger_tables: int,
    level1_size_bytes: int,
    multiplier: int,
    compact_pointers: list[bytes],
) -> JobPlan | None:
    """The most urgent compaction, or None if every level is within its limits."""
    level_count = len(levels)
    assert level_count >= 2
    assert len(compact_pointers) == level_count
    if len(levels[0]) >= l0_trigger_tables:
        inputs = list(levels[0])
        min_key = min(t.props.min_key for t in inputs)
        max_key = max(t.props.max_key for t in inputs)
        return JobPlan(0, inputs, overlapping(levels[1], min_key, max_key), _is_bottom(levels, 1))
    best_level = -1
    best_score = 1.0
    for level in range(1, level_count - 1):
        size_bytes = sum(t.size_bytes for t in levels[level])
        score = size_bytes / level_target_size_bytes(level, level1_size_bytes, multiplier)
        if score > best_score:
            best_level, best_score = level, score
    if best_level < 0:
        return None
    tables = levels[best_level]
    assert tables
    # Round-robin: the first table past where this level's last compaction ended.
    chosen = tables[0]
    for table in tables:
        if table.props.min_key > compact_pointers[best_level]:
            chosen = table
            break
    lower = overlapping(levels[best_level + 1], chosen.props.min_key, chosen.props.max_key)
    return JobPlan(best_level, [chosen], lower, _is_bottom(levels, best_level + 1))


def _is_bottom(levels: Sequence[Sequence[Table]], output_level: int) -> bool:
    """No table below `output_level`: nothing older can hide behind a dropped tombstone."""
    return all(not levels[level] for level in range(output_level + 1, len(levels)))


def merge_sources(
    sources: list[Iterator[tuple[bytes, list[Version]]]],
) -> Iterator[tuple[bytes, list[Version]]]:
    """Merge sorted (key, versions) streams into one, the versions of a key combined.

    Versions of a key in different sources have distinct seqs (one seq per batch), so
    sorting them by seq is unambiguous.
    """

    # heapq.merge with a key compares keys only (ties keep source order), never versions.
    merged = heapq.merge(*sources, key=itemgetter(0))
    current_key: bytes | None = None
    current: list[Version] = []
    group_count = 0
    for key, versions in merged:
        if key != current_key:
            if current_key is not None:
                if group_count > 1:
                    current.sort()
                yield current_key, current
            current_key, current, group_count = key, list(versions), 1
        else:
            current.extend(versions)
            group_count += 1
    if current_key is not None:
        if group_count > 1:
            current.sort()
        yield current_key, current


def _entry_bytes(key: bytes, versions: Sequence[Version]) -> int:
    """Key and value bytes of a key's versions (what compaction budgets count)."""
    if len(versions) == 1:
        value = versions[0][1]
        return len(key) + (len(value) if value is not None else 0)
    total = len(key) * len(versions)
    for _seq, value in versions:
        if value is not None:
            total += len(value)
    return total


def chain_tables(tables: Sequence[Table]) -> Iterator[tuple[bytes, list[Version]]]:
    """The entries of a sorted run of non-overlapping tables, in key order."""
    for table in tables:
        yield from table.scan(b"", None, fill_cache=False)


class CompactionJob:
    """A started merge: call `step` until it returns True (done), then install `outputs`.

    Merged entries for the next output are buffered (at most about `table_size_bytes`) and
    written as one table, read back before it counts: a misplaced write is rewritten from
    the buffer, never lost, and no step does more than one table of extra work.
    """

    def __init__(
        self,
        plan: JobPlan,
        fs: FileSystem,
        directory: str,
        allocate_file_number: Callable[[], int],
        cache: BlockCache,
        *,
        table_size_bytes: int,
        block_size_bytes: int,
        bloom_false_positive_rate: float,
    ) -> None:
        assert not plan.trivial_move
        self.plan = plan
        self._fs = fs
        self._directory = directory
        self._allocate_file_number = allocate_file_number
        self._cache = cache
        self._table_size_bytes = table_size_bytes
        self._block_size_bytes = block_size_bytes
        self._bloom_fp_rate = bloom_false_positive_rate
        # Level 0 tables are newest first; the run below is older than all of them.
        sources = [table.scan(b"", None, fill_cache=False) for table in plan.inputs]
        if plan.input_level >= 1:
            sources = [chain_tables(plan.inputs)]
        sources.append(chain_tables(plan.lower))
        self._merged = merge_sources(sources)
        self._pending: list[tuple[bytes, Sequence[Version]]] = []
        self._pending_bytes = 0
        self.outputs: list[Table] = []
        self.input_bytes = 0
        self.done = False

    async def step(self, max_bytes: int, snapshot_seqs: list[int]) -> bool:
        """Merge about `max_bytes` more input; True once every input is consumed and written."""
        assert not self.done
        assert max_bytes > 0
        budget_bytes = max_bytes
        bottom = self.plan.bottom
        merged = self._merged
        pending = self._pending
        input_bytes = 0
        try:
            while budget_bytes > 0:
                item = next(merged, None)
                if item is None:
                    if self._pending:
                        await self._write_output()
                    self.done = True
                    return True
                key, versions = item
                if len(versions) == 1:
                    # The common case, inlined: one version, kept unless a bottom tombstone.
                    value = versions[0][1]
                    if value is None:
                        entry_bytes = len(key)
                        budget_bytes -= entry_bytes
                        input_bytes += entry_bytes
                        if bottom:
                            continue
                    else:
                        entry_bytes = len(key) + len(value)
                        budget_bytes -= entry_bytes
                        input_bytes += entry_bytes
                    pending.append((key, versions))
                    self._pending_bytes += entry_bytes + ENTRY_OVERHEAD_BYTES
                else:
                    entry_bytes = _entry_bytes(key, versions)
                    budget_bytes -= entry_bytes
                    input_bytes += entry_bytes
                    kept = retain_versions(versions, snapshot_seqs, bottom=bottom)
                    if not kept:
                        continue
                    pending.append((key, kept))
                    self._pending_bytes += _entry_bytes(key, kept) + ENTRY_OVERHEAD_BYTES * len(
                        kept
                    )
                if self._pending_bytes >= self._table_size_bytes:
                    await self._write_output()
                    pending = self._pending
        finally:
            self.input_bytes += input_bytes
        return False

    async def _write_output(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        assert pending

        async def fill(writer: TableWriter) -> None:
            writer.add_many(pending)

        table = await write_verified_table(
            self._fs,
            self._directory,
            self._allocate_file_number,
            fill,
            self._cache,
            block_size_bytes=self._block_size_bytes,
            bloom_false_positive_rate=self._bloom_fp_rate,
        )
        self.outputs.append(table)

    @property
    def output_names(self) -> list[str]:
        return [table_name(self._directory, t.file_number) for t in self.outputs]

    def abandon(self) -> None:
        """Stop and close outputs; the caller removes `output_names` first (none is live)."""
        for table in self.outputs:
            table.close()
        self.outputs = []
        self._pending = []
        self.done = True
