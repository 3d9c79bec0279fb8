"""LsmStore: the state store of one node, an LSM tree over the FileSystem seam.

Theory of operation:

* Writes go to the memtable as one batch with one sequence number and the Raft log index
  it applies (`write_batch`). There is no LSM log: the Raft log is the log. A flush turns
  the memtable into a level-0 table and then durably records, in the manifest, the highest
  applied index whose writes are all in tables (`durable_applied_index`); after a crash the
  node replays the Raft log from the entry after it.
* Reads look at the memtable, the memtables being flushed, level 0 (newest first), then
  one table per deeper level; the first source holding a version visible at the read's
  sequence number answers (a shallower source only holds newer versions of a key).
* A `Snapshot` pins a sequence number and the set of sources live when it was taken. Older
  versions stay in memtables and compaction outputs while a snapshot can see them, and a
  table a snapshot pins is deleted only after the snapshot is released.
* `compact_step(max_bytes)` does a bounded piece of a leveled compaction (compaction.py).
* Every block read is checksum-verified; damage raises `CorruptionError`, never data.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from types import TracebackType
from typing import Any

import attrs
import xxhash

from mox.errors import ConfigError, CorruptionError, DataDirError, MoxError
from mox.io.interfaces import FileSystem
from mox.storage.lsm.compaction import (
    CompactionJob,
    JobPlan,
    pick_job,
)
from mox.storage.lsm.manifest import ManifestState, manifest_name, read_manifest, write_manifest
from mox.storage.lsm.memtable import Memtable
from mox.storage.lsm.sstable import (
    ENTRY_OVERHEAD_BYTES,
    BlockCache,
    Table,
    TableProps,
    TableWriter,
    table_name,
    write_verified_table,
)
from mox.storage.lsm.versions import Version, retain_versions, visible_version

__all__ = ["LsmOptions", "LsmStore", "LsmStoreFailed", "Snapshot"]

_MiB = 1024 * 1024
# A flush yields to the event loop every this many keys so foreground work keeps moving.
_FLUSH_YIELD_KEYS = 2048
_LEN = struct.Struct("<I")


def _positive(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"lsm.{attribute.name}", f"must be a positive integer, got {value!r}")


def _fp_rate(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, float) or not 0.0 < value < 0.5:
        raise ConfigError(f"lsm.{attribute.name}", f"must be a float in (0, 0.5), got {value!r}")


@attrs.frozen
class LsmOptions:
    """Tuning of one store. Keys appear in errors as `lsm.<name>`."""

    # Subdirectory of the node's FileSystem holding the manifest and tables.
    directory: str = "lsm"
    memtable_size_bytes: int = attrs.field(default=8 * _MiB, validator=_positive)
    block_size_bytes: int = attrs.field(default=4096, validator=_positive)
    table_size_bytes: int = attrs.field(default=2 * _MiB, validator=_positive)
    l0_compaction_trigger_tables: int = attrs.field(default=4, validator=_positive)
    level1_size_bytes: int = attrs.field(default=64 * _MiB, validator=_positive)
    level_size_multiplier: int = attrs.field(default=10, validator=_positive)
    level_count: int = attrs.field(default=7, validator=_positive)
    bloom_false_positive_rate: float = attrs.field(default=0.01, validator=_fp_rate)
    block_cache_blocks: int = attrs.field(default=4096)
    # Read and checksum every data block of every table at open, not only footers/indexes.
    verify_blocks_on_open: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.directory or self.directory.startswith("/") or ".." in self.directory:
            raise ConfigError("lsm.directory", f"must be a relative path, got {self.directory!r}")
        if self.level_count < 2:
            raise ConfigError("lsm.level_count", f"must be at least 2, got {self.level_count}")
        if self.level_size_multiplier < 2:
            raise ConfigError(
                "lsm.level_size_multiplier", f"must be at least 2, got {self.level_size_multiplier}"
            )
        if not isinstance(self.block_cache_blocks, int) or self.block_cache_blocks < 0:
            raise ConfigError(
                "lsm.block_cache_blocks",
                f"must be a non-negative integer, got {self.block_cache_blocks!r}",
            )


class LsmStoreFailed(MoxError):
    """A durable write failed mid-way; the store must be reopened from disk."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"LSM store {path} stopped: {problem}; reopen it")


class _View:
    """The sources a reader consults, frozen at one moment."""

    __slots__ = ("immutables", "level_max_keys", "levels", "memtable")

    def __init__(
        self,
        memtable: Memtable,
        immutables: tuple[Memtable, ...],
        levels: tuple[tuple[Table, ...], ...],
    ) -> None:
        self.memtable = memtable
        self.immutables = immutables
        self.levels = levels
        self.level_max_keys = tuple([t.props.max_key for t in level] for level in levels)

    def file_numbers(self) -> Iterator[int]:
        for level in self.levels:
            for table in level:
                yield table.file_number


class Snapshot:
    """A consistent read view at one sequence number. Release it (or use `with`)."""

    def __init__(self, store: LsmStore, snapshot_id: int, seq: int, view: _View) -> None:
        self._store = store
        self.snapshot_id = snapshot_id
        self.seq = seq
        self.view = view
        self.released = False

    def release(self) -> None:
        """Let the store drop versions and tables only this snapshot needed. Idempotent."""
        if not self.released:
            self.released = True
            self._store._release(self)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class LsmStore:
    """See the module docstring. Build with `await LsmStore.open(fs, options)`."""

    def __init__(self, fs: FileSystem, options: LsmOptions, state: ManifestState) -> None:
        self._fs = fs
        self._options = options
        self._dir = options.directory
        self._cache = BlockCache(options.block_cache_blocks)
        self._memtable = Memtable()
        self._immutables: tuple[Memtable, ...] = ()
        self._levels: list[list[Table]] = [[] for _ in range(options.level_count)]
        self._last_seq = state.last_seq
        self._durable_last_seq = state.last_seq
        self._applied_index = state.applied_index
        self._durable_applied_index = state.applied_index
        self._next_file_number = state.next_file_number
        self._snapshots: dict[int, Snapshot] = {}
        self._snapshot_ids = itertools.count(1)
        self._obsolete: list[Table] = []
        self._compact_pointers: list[bytes] = [b""] * options.level_count
        self._job: CompactionJob | None = None
        self._flush_lock = asyncio.Lock()
        self._compaction_lock = asyncio.Lock()
        self._manifest_lock = asyncio.Lock()
        self._replacing = False
        self._closed = False
        self._failure: str | None = None
        self._view: _View | None = None

    # ----------------------------------------------------------------- open / close

    @classmethod
    async def open(cls, fs: FileSystem, options: LsmOptions | None = None) -> LsmStore:
        """Open (or create) the store in `options.directory` of `fs`, verifying every table."""
        options = options if options is not None else LsmOptions()
        directory = options.directory
        fs.mkdir(directory)
        names = fs.listdir(directory)
        table_names = [n for n in names if n.endswith(".sst")]
        if "MANIFEST" in names:
            state = read_manifest(fs, directory)
        elif table_names:
            raise DataDirError(
                f"{fs.root}/{directory}",
                f"holds {len(table_names)} table(s) but no MANIFEST: refusing to guess what is live",
            )
        else:
            state = ManifestState(
                next_file_number=1,
                last_seq=0,
                applied_index=0,
                levels=[[] for _ in range(options.level_count)],
            )
            await write_manifest(fs, directory, state)
        path = f"{fs.root}/{manifest_name(directory)}"
        if len(state.levels) > options.level_count and any(state.levels[options.level_count :]):
            raise ConfigError(
                "lsm.level_count",
                f"{options.level_count} is fewer than the {len(state.levels)} levels in {path}",
            )
        store = cls(fs, options, state)
        live: set[int] = set()
        try:
            for level, props_list in enumerate(state.levels):
                for props in props_list:
                    if props.file_number >= state.next_file_number or props.file_number in live:
                        raise CorruptionError(path, 0, f"bad table number {props.file_number}")
                    store._levels[level].append(store._open_table(props, path))
                    live.add(props.file_number)
            for level in range(1, options.level_count):
                tables = store._levels[level]
                for left, right in itertools.pairwise(tables):
                    if not left.props.max_key < right.props.min_key:
                        raise CorruptionError(path, 0, f"level {level} tables overlap")
        except BaseException:
            store._close_tables()
            raise
        # Tables a crash left behind (flush or compaction outputs never installed) go now.
        removed = False
        for name in names:
            stale = name == "MANIFEST.tmp" or (
                name.endswith(".sst") and _table_number(name) not in live
            )
            # A fresh store's first manifest write may have consumed a leftover temp file.
            if stale and fs.exists(f"{directory}/{name}"):
                fs.remove(f"{directory}/{name}")
                removed = True
        if removed:
            await fs.sync_dir(directory)
        store._check_invariants()
        return store

    def _open_table(self, props: TableProps, manifest_path: str) -> Table:
        name = table_name(self._dir, props.file_number)
        try:
            table = Table.open(self._fs, name, props.file_number, self._cache)
        except FileNotFoundError:
            raise CorruptionError(
                manifest_path, 0, f"table {name} listed in the manifest is missing"
            ) from None
        try:
            if table.props != props:
                raise CorruptionError(
                    table.path, table.size_bytes, "table properties differ from the manifest's"
                )
            if self._options.verify_blocks_on_open:
                table.verify_blocks()
        except BaseException:
            table.close()
            raise
        return table

    async def close(self) -> None:
        """Close every file. Unflushed writes are dropped: the Raft log replays them."""
        if self._closed:
            return
        async with self._compaction_lock:
            if self._job is not None:
                self._abandon_job(self._job)
        self._closed = True
        # Snapshots die with the store, so replaced tables can go now rather than at reopen.
        for table in self._obsolete:
            table.close()
            self._fs.remove(table_name(self._dir, table.file_number))
        self._obsolete = []
        self._close_tables()

    def _close_tables(self) -> None:
        for level in self._levels:
            for table in level:
                table.close()
        for table in self._obsolete:
            table.close()
        self._obsolete = []

    # ----------------------------------------------------------------- properties

    @property
    def options(self) -> LsmOptions:
        return self._options

    @property
    def last_seq(self) -> int:
        """The sequence number of the last write batch."""
        return self._last_seq

    @property
    def applied_index(self) -> int:
        """The highest Raft index applied in memory (lost on a crash unless flushed)."""
        return self._applied_index

    @property
    def durable_applied_index(self) -> int:
        """The highest Raft index whose writes are all durable: replay the log after it."""
        return self._durable_applied_index

    @property
    def memtable_size_bytes(self) -> int:
        return self._memtable.size_bytes

    @property
    def needs_flush(self) -> bool:
        """The memtable has reached `memtable_size_bytes`: call `flush()` soon."""
        return self._memtable.size_bytes >= self._options.memtable_size_bytes

    @property
    def needs_compaction(self) -> bool:
        """A compaction is under way or some level is over its limit: call `compact_step`."""
        return self._job is not None or self._pick() is not None

    def level_sizes_bytes(self) -> list[int]:
        """Bytes of live tables per level (for metrics and tests)."""
        return [sum(t.size_bytes for t in level) for level in self._levels]

    def level_table_counts(self) -> list[int]:
        return [len(level) for level in self._levels]

    # ----------------------------------------------------------------- writes

    def write_batch(self, ops: Sequence[tuple[bytes, bytes | None]], applied_index: int) -> int:
        """Apply `ops` (value None: delete) as one batch; return its sequence number.

        `applied_index` is the Raft log index this batch applies; it never decreases.
        """
        self._check_open()
        assert not self._replacing, "no writes while replace_all runs"
        if not isinstance(applied_index, int) or applied_index < self._applied_index:
            raise ValueError(
                f"applied_index {applied_index!r} is below the store's {self._applied_index}"
            )
        for position, op in enumerate(ops):
            if (
                not isinstance(op, (tuple, list))
                or len(op) != 2
                or not isinstance(op[0], bytes)
                or not (op[1] is None or isinstance(op[1], bytes))
            ):
                raise ValueError(f"ops[{position}] must be (bytes, bytes | None), got {op!r}")
        seq = self._last_seq + 1
        snapshot_seqs = self._snapshot_seqs()
        memtable = self._memtable
        for key, value in ops:
            memtable.put(key, seq, value, snapshot_seqs)
        self._last_seq = seq
        self._applied_index = applied_index
        return seq

    def _snapshot_seqs(self) -> list[int]:
        if not self._snapshots:
            return []
        return sorted(s.seq for s in self._snapshots.values())

    # ----------------------------------------------------------------- reads

    def snapshot(self) -> Snapshot:
        """A read view of everything written so far; writes, flushes, compactions go on."""
        self._check_open()
        snapshot = Snapshot(self, next(self._snapshot_ids), self._last_seq, self._current_view())
        self._snapshots[snapshot.snapshot_id] = snapshot
        return snapshot

    def _release(self, snapshot: Snapshot) -> None:
        del self._snapshots[snapshot.snapshot_id]
        if not self._closed:
            self._delete_obsolete()

    def _read_point(self, snapshot: Snapshot | None) -> tuple[_View, int]:
        self._check_open()
        if snapshot is None:
            return self._current_view(), self._last_seq
        if snapshot.released or snapshot._store is not self:
            raise ValueError("snapshot was released or belongs to another store")
        return snapshot.view, snapshot.seq

    def get(self, key: bytes, snapshot: Snapshot | None = None) -> bytes | None:
        """The value of `key` (None if absent or deleted), as of `snapshot` if given."""
        if not isinstance(key, bytes):
            raise ValueError(f"key must be bytes, got {type(key).__name__}")
        view, read_seq = self._read_point(snapshot)
        found = view.memtable.get(key, read_seq)
        if found is not None:
            return found[1]
        for memtable in view.immutables:
            found = memtable.get(key, read_seq)
            if found is not None:
                return found[1]
        levels = view.levels
        for table in levels[0]:
            found = table.get(key, read_seq)
            if found is not None:
                return found[1]
        for level in range(1, len(levels)):
            tables = levels[level]
            if not tables:
                continue
            index = bisect_left(view.level_max_keys[level], key)
            if index < len(tables):
                found = tables[index].get(key, read_seq)
                if found is not None:
                    return found[1]
        return None

    def scan_prefix(
        self,
        prefix: bytes,
        snapshot: Snapshot | None = None,
        start_after: bytes | None = None,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs whose key starts with `prefix`, ascending by key.

        `start_after`: resume after this key (cursor pagination). `limit`: at most this many.
        Without `snapshot` the scan pins one consistent view at its first `next()` and
        releases it when exhausted or closed (an unstarted scan pins nothing). With a
        `snapshot`, release it only after the scan is done.
        """
        if not isinstance(prefix, bytes):
            raise ValueError(f"prefix must be bytes, got {type(prefix).__name__}")
        if start_after is not None and not isinstance(start_after, bytes):
            raise ValueError(f"start_after must be bytes, got {type(start_after).__name__}")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        self._read_point(snapshot)  # validate now, not at the first next()
        start = prefix
        if start_after is not None and start_after >= prefix:
            start = start_after + b"\x00"
        return self._scan(start, prefix_end(prefix), snapshot, limit)

    def _scan(
        self, start: bytes, end: bytes | None, snapshot: Snapshot | None, limit: int | None
    ) -> Iterator[tuple[bytes, bytes]]:
        if limit == 0:
            return
        # A scan may be suspended across writes and compactions: pin what it reads.
        own = snapshot is None
        pinned = self.snapshot() if snapshot is None else snapshot
        try:
            read_seq = pinned.seq
            view = pinned.view
            sources: list[Iterator[tuple[bytes, Any]]] = [view.memtable.scan(start, end)]
            sources += [m.scan(start, end) for m in view.immutables]
            sources += [t.scan(start, end) for t in view.levels[0]]
            for level in range(1, len(view.levels)):
                if view.levels[level]:
                    first = bisect_left(view.level_max_keys[level], start)
                    sources.append(_chain_scan(view.levels[level][first:], start, end))
            count = 0
            for key, versions in _newest_first_merge(sources):
                visible: Version | None = None
                for source_versions in versions:
                    visible = visible_version(source_versions, read_seq)
                    if visible is not None:
                        break
                if visible is None or visible[1] is None:
                    continue
                yield key, visible[1]
                count += 1
                if limit is not None and count >= limit:
                    return
        finally:
            if own:
                pinned.release()

    def iter_all(self, snapshot: Snapshot | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Every live (key, value), ascending: the state a Raft snapshot ships."""
        return self.scan_prefix(b"", snapshot)

    def checksum(self, snapshot: Snapshot | None = None) -> int:
        """An xxh3_64 digest of the visible (key, value) pairs, independent of layout.

        Two stores with the same visible contents have the same checksum, whatever their
        memtables, tables, levels and obsolete versions.
        """
        digest = xxhash.xxh3_64()
        for key, value in self.scan_prefix(b"", snapshot):
            digest.update(_LEN.pack(len(key)))
            digest.update(key)
            digest.update(_LEN.pack(len(value)))
            digest.update(value)
        return digest.intdigest()

    # ----------------------------------------------------------------- flush

    async def flush(self) -> None:
        """Write the memtable to a level-0 table and record `durable_applied_index`.

        Memtables left frozen by an earlier failed flush are written first, oldest first.
        """
        self._check_open()
        async with self._flush_lock:
            self._check_open()
            memtable = self._memtable
            if len(memtable) or self._applied_index > self._newest_frozen_applied_index():
                memtable.freeze(self._last_seq, self._applied_index)
                self._memtable = Memtable()
                self._immutables = (memtable, *self._immutables)
                self._view = None
            while self._immutables:
                await self._flush_memtable(self._immutables[-1])
            self._check_invariants()

    def _newest_frozen_applied_index(self) -> int:
        if self._immutables:
            return self._immutables[0].frozen_applied_index
        return self._durable_applied_index

    async def _flush_memtable(self, memtable: Memtable) -> None:
        assert memtable.frozen
        assert self._flush_lock.locked()
        table: Table | None = None
        if len(memtable):
            snapshot_seqs = self._snapshot_seqs()

            async def fill(writer: TableWriter) -> None:
                chunk: list[tuple[bytes, Sequence[Version]]] = []
                for key, versions in memtable.items():
                    kept: Sequence[Version] = versions
                    if len(versions) > 1:
                        kept = retain_versions(versions, snapshot_seqs, bottom=False)
                    chunk.append((key, kept))
                    if len(chunk) >= _FLUSH_YIELD_KEYS:
                        writer.add_many(chunk)
                        chunk = []
                        await asyncio.sleep(0)
                writer.add_many(chunk)

            table = await write_verified_table(
                self._fs,
                self._dir,
                self._allocate_file_number,
                fill,
                self._cache,
                block_size_bytes=self._options.block_size_bytes,
                bloom_false_positive_rate=self._options.bloom_false_positive_rate,
            )
        async with self._manifest_lock:
            levels = [list(level) for level in self._levels]
            if table is not None:
                levels[0].insert(0, table)
            try:
                await self._write_manifest(
                    levels, memtable.frozen_applied_index, memtable.frozen_last_seq
                )
            except BaseException:
                if table is not None:
                    table.close()
                raise
            self._levels = levels
            self._immutables = tuple(m for m in self._immutables if m is not memtable)
            self._durable_applied_index = memtable.frozen_applied_index
            self._durable_last_seq = memtable.frozen_last_seq
            self._view = None

    # ----------------------------------------------------------------- compaction

    def _pick(self) -> JobPlan | None:
        return pick_job(
            self._levels,
            l0_trigger_tables=self._options.l0_compaction_trigger_tables,
            level1_size_bytes=self._options.level1_size_bytes,
            multiplier=self._options.level_size_multiplier,
            compact_pointers=self._compact_pointers,
        )

    async def compact_step(self, max_bytes: int = 1 * _MiB) -> bool:
        """Do about `max_bytes` of compaction work; False if there was nothing to do."""
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        self._check_open()
        async with self._compaction_lock:
            self._check_open()
            if self._job is None:
                plan = self._pick()
                if plan is None:
                    return False
                if plan.trivial_move:
                    await self._install_trivial_move(plan)
                    return True
                self._job = CompactionJob(
                    plan,
                    self._fs,
                    self._dir,
                    self._allocate_file_number,
                    self._cache,
                    table_size_bytes=self._options.table_size_bytes,
                    block_size_bytes=self._options.block_size_bytes,
                    bloom_false_positive_rate=self._options.bloom_false_positive_rate,
                )
            job = self._job
            try:
                done = await job.step(max_bytes, self._snapshot_seqs())
            except BaseException:
                self._abandon_job(job)
                raise
            if done:
                self._job = None
                await self._install_job(job)
            return True

    def _abandon_job(self, job: CompactionJob) -> None:
        names = job.output_names
        job.abandon()
        self._job = None
        self._remove_files(names)

    async def _install_trivial_move(self, plan: JobPlan) -> None:
        (table,) = plan.inputs
        async with self._manifest_lock:
            levels = [list(level) for level in self._levels]
            levels[plan.input_level].remove(table)
            levels[plan.output_level].append(table)
            levels[plan.output_level].sort(key=lambda t: t.props.min_key)
            await self._write_manifest(levels, self._durable_applied_index, self._durable_last_seq)
            self._levels = levels
            self._view = None
        self._compact_pointers[plan.input_level] = table.props.max_key
        self._check_invariants()

    async def _install_job(self, job: CompactionJob) -> None:
        plan = job.plan
        outputs = job.outputs
        manifest_attempted = False
        try:
            async with self._manifest_lock:
                levels = [list(level) for level in self._levels]
                input_numbers = {t.file_number for t in plan.all_inputs}
                for level in (plan.input_level, plan.output_level):
                    levels[level] = [t for t in levels[level] if t.file_number not in input_numbers]
                levels[plan.output_level].extend(outputs)
                levels[plan.output_level].sort(key=lambda t: t.props.min_key)
                manifest_attempted = True
                await self._write_manifest(
                    levels, self._durable_applied_index, self._durable_last_seq
                )
                self._levels = levels
                self._view = None
        except BaseException:
            for table in outputs:
                table.close()
            # Once a manifest naming the outputs may be durable, they are not ours to delete.
            if not manifest_attempted:
                self._remove_files(job.output_names)
            raise
        if plan.input_level >= 1:
            self._compact_pointers[plan.input_level] = max(t.props.max_key for t in plan.inputs)
        self._obsolete.extend(plan.all_inputs)
        self._delete_obsolete()
        self._check_invariants()

    # ----------------------------------------------------------------- state transfer

    async def replace_all(self, items: Iterable[tuple[bytes, bytes]], applied_index: int) -> None:
        """Replace the whole contents with `items` (ascending keys), as of `applied_index`.

        The new tables are written to the bottom level and switched in with one manifest
        write; a crash before it leaves the old contents. Snapshots keep reading the old.
        """
        self._check_open()
        if not isinstance(applied_index, int) or applied_index < 0:
            raise ValueError(f"applied_index must be a non-negative int, got {applied_index!r}")
        async with self._flush_lock, self._compaction_lock:
            self._check_open()
            self._replacing = True
            try:
                await self._replace_all(items, applied_index)
            finally:
                self._replacing = False
        self._check_invariants()

    async def _replace_all(self, items: Iterable[tuple[bytes, bytes]], applied_index: int) -> None:
        if self._job is not None:
            self._abandon_job(self._job)
        seq = self._last_seq + 1
        tables: list[Table] = []
        pending: list[tuple[bytes, Sequence[Version]]] = []
        pending_bytes = 0
        previous: bytes | None = None
        try:
            for position, item in enumerate(items):
                if (
                    not isinstance(item, tuple)
                    or len(item) != 2
                    or not isinstance(item[0], bytes)
                    or not isinstance(item[1], bytes)
                ):
                    raise ValueError(f"items[{position}] must be (bytes, bytes), got {item!r}")
                key, value = item
                if previous is not None and key <= previous:
                    raise ValueError(f"items[{position}]: key {key!r} is not above {previous!r}")
                previous = key
                # Buffered per table so that a table that does not read back is rewritten.
                pending.append((key, ((seq, value),)))
                pending_bytes += len(key) + len(value) + ENTRY_OVERHEAD_BYTES
                if pending_bytes >= self._options.table_size_bytes:
                    tables.append(await self._write_table(pending))
                    pending, pending_bytes = [], 0
                if position % _FLUSH_YIELD_KEYS == _FLUSH_YIELD_KEYS - 1:
                    await asyncio.sleep(0)
            if pending:
                tables.append(await self._write_table(pending))
        except BaseException:
            for table in tables:
                table.close()
            self._remove_files([table_name(self._dir, t.file_number) for t in tables])
            raise
        written = [table_name(self._dir, t.file_number) for t in tables]
        manifest_attempted = False
        try:
            async with self._manifest_lock:
                levels: list[list[Table]] = [[] for _ in self._levels]
                levels[-1] = tables
                manifest_attempted = True
                await self._write_manifest(levels, applied_index, seq)
                old = [t for level in self._levels for t in level]
                self._levels = levels
        except BaseException:
            for table in tables:
                table.close()
            if not manifest_attempted:
                self._remove_files(written)
            raise
        self._memtable = Memtable()
        self._immutables = ()
        self._view = None
        self._last_seq = seq
        self._applied_index = applied_index
        self._durable_applied_index = applied_index
        self._durable_last_seq = seq
        self._compact_pointers = [b""] * len(self._levels)
        self._obsolete.extend(old)
        self._delete_obsolete()

    async def _write_table(self, entries: list[tuple[bytes, Sequence[Version]]]) -> Table:
        async def fill(writer: TableWriter) -> None:
            writer.add_many(entries)

        return await write_verified_table(
            self._fs,
            self._dir,
            self._allocate_file_number,
            fill,
            self._cache,
            block_size_bytes=self._options.block_size_bytes,
            bloom_false_positive_rate=self._options.bloom_false_positive_rate,
        )

    # ----------------------------------------------------------------- helpers

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the store is closed")
        if self._failure is not None:
            raise LsmStoreFailed(f"{self._fs.root}/{self._dir}", self._failure)

    def _allocate_file_number(self) -> int:
        number = self._next_file_number
        self._next_file_number += 1
        return number

    def _new_writer(self, number: int) -> TableWriter:
        return TableWriter(
            self._fs,
            table_name(self._dir, number),
            number,
            block_size_bytes=self._options.block_size_bytes,
            bloom_false_positive_rate=self._options.bloom_false_positive_rate,
        )

    async def _write_manifest(
        self, levels: list[list[Table]], applied_index: int, last_seq: int
    ) -> None:
        assert self._manifest_lock.locked()
        assert applied_index >= 0 and last_seq >= 0
        state = ManifestState(
            next_file_number=self._next_file_number,
            last_seq=last_seq,
            applied_index=applied_index,
            levels=[[t.props for t in level] for level in levels],
        )
        try:
            await write_manifest(self._fs, self._dir, state)
        except BaseException as exc:
            # Which manifest is durable is now unknown, and memory may disagree with disk:
            # stop here; reopening reads whichever manifest survived.
            self._failure = f"manifest write failed: {exc!r}"
            raise

    def _current_view(self) -> _View:
        if self._view is None:
            self._view = _View(
                self._memtable, self._immutables, tuple(tuple(level) for level in self._levels)
            )
        return self._view

    def _delete_obsolete(self) -> None:
        """Delete replaced tables no live snapshot reads. A crash before this leaves orphans
        that `open` removes, so the directory is not fsynced here."""
        if not self._obsolete:
            return
        pinned: set[int] = set(self._current_view().file_numbers())
        for snapshot in self._snapshots.values():
            pinned.update(snapshot.view.file_numbers())
        keep: list[Table] = []
        for table in self._obsolete:
            if table.file_number in pinned:
                keep.append(table)
                continue
            self._cache.evict_table(table.file_number)
            table.close()
            self._fs.remove(table_name(self._dir, table.file_number))
        self._obsolete = keep

    def _remove_files(self, names: list[str]) -> None:
        for name in names:
            if self._fs.exists(name):
                self._fs.remove(name)

    def _check_invariants(self) -> None:
        assert self._durable_applied_index <= self._applied_index
        assert self._durable_last_seq <= self._last_seq
        for level in range(1, len(self._levels)):
            for left, right in itertools.pairwise(self._levels[level]):
                assert left.props.max_key < right.props.min_key, "deeper levels do not overlap"
        for table in self._levels[0]:
            assert table.props.seq_max <= self._durable_last_seq


def _table_number(name: str) -> int | None:
    stem = name.removesuffix(".sst")
    return int(stem) if stem.isdigit() else None


def _chain_scan(
    tables: tuple[Table, ...], start: bytes, end: bytes | None
) -> Iterator[tuple[bytes, list[Version]]]:
    for table in tables:
        if end is not None and table.props.min_key >= end:
            return
        yield from table.scan(start, end)


def _newest_first_merge(
    sources: list[Iterator[tuple[bytes, Any]]],
) -> Iterator[tuple[bytes, list[Any]]]:
    """Merge sorted (key, versions) sources; per key, the version lists newest source first.

    Sources are given newest first (memtable, immutables, level 0 newest first, deeper
    levels), so the first list holding a visible version holds the answer.
    """

    current_key: bytes | None = None
    group: list[Any] = []
    # heapq.merge is stable: for equal keys the earlier (newer) source comes first.
    for key, versions in heapq.merge(*sources, key=itemgetter(0)):
        if key != current_key:
            if current_key is not None:
                yield current_key, group
            current_key, group = key, [versions]
        else:
            group.append(versions)
    if current_key is not None:
        yield current_key, group


__all__ += ["prefix_end"]
