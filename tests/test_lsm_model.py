"""The LSM store against a dict model, driven by Hypothesis.

Rules write batches (puts and deletes), read (get, prefix scans with cursors), hold
snapshots across writes, flushes and compactions, crash and reopen, and flip bits at rest.
After a crash the store must equal the model as of the last flush, with the same
`durable_applied_index`; after a bit flip every read either returns the model's value or
raises CorruptionError.

`SimMachine` runs on a SimDisk in virtual time; `RealMachine` on real files, where a "crash"
is a process death (the store is dropped unflushed; the kernel keeps what was written).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import Coroutine
from typing import Any

import hypothesis.strategies as st
import xxhash
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from mox.errors import CorruptionError
from mox.io.interfaces import FileSystem
from mox.io.real import RealFileSystem
from mox.io.sim import SimDisk
from mox.io.simloop import VirtualTimeLoop
from mox.storage.lsm import LsmOptions, LsmStore, Snapshot

# Tiny sizes so that a few dozen writes make many blocks, tables, levels and compactions.
OPTIONS = LsmOptions(
    memtable_size_bytes=1024,
    block_size_bytes=128,
    table_size_bytes=768,
    l0_compaction_trigger_tables=2,
    level1_size_bytes=1024,
    level_size_multiplier=2,
    level_count=4,
    block_cache_blocks=8,
)

keys = st.builds(
    lambda tenant, kind, n: b"t/%s/%s/%02d" % (tenant, kind, n),
    st.sampled_from([b"a", b"b"]),
    st.sampled_from([b"talent", b"campaign"]),
    st.integers(0, 9),
)
values = st.one_of(st.binary(min_size=0, max_size=12), st.binary(min_size=60, max_size=200))
prefixes = st.sampled_from(
    [b"", b"t/", b"t/a/", b"t/b/talent/", b"t/a/campaign/0", b"t/c/", b"\xff"]
)
ops = st.lists(st.tuples(keys, st.one_of(st.none(), values)), min_size=1, max_size=6)


def scan_model(
    model: dict[bytes, bytes], prefix: bytes, start_after: bytes | None, limit: int | None
) -> list[tuple[bytes, bytes]]:
    rows = sorted((k, v) for k, v in model.items() if k.startswith(prefix))
    if start_after is not None:
        rows = [(k, v) for k, v in rows if k > start_after]
    return rows if limit is None else rows[:limit]


class LsmModel(RuleBasedStateMachine):
    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.make_loop()
        self.model: dict[bytes, bytes] = {}
        self.durable_model: dict[bytes, bytes] = {}
        self.applied_index = 0
        self.durable_applied_index = 0
        self.held: dict[int, tuple[Snapshot, dict[bytes, bytes]]] = {}
        self.fs = self.make_fs()
        self.store: LsmStore = self.run(LsmStore.open(self.fs, OPTIONS))

    # Subclasses: the loop, the file system, a crash, a bit flip.
    def make_loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    def make_fs(self) -> FileSystem:
        raise NotImplementedError

    def crash(self) -> None:
        raise NotImplementedError

    def flip_bit(self, name: str, bit_index: int) -> None:
        raise NotImplementedError

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    @rule(batch=ops, gap=st.integers(0, 2))
    def write(self, batch: list[tuple[bytes, bytes | None]], gap: int) -> None:
        self.applied_index += gap
        seq = self.store.write_batch(batch, self.applied_index)
        assert seq == self.store.last_seq
        for key, value in batch:
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        assert self.store.get(key) == self.model.get(key)
        for snapshot, frozen in self.held.values():
            assert self.store.get(key, snapshot) == frozen.get(key)

    @rule(
        prefix=prefixes,
        start_after=st.one_of(st.none(), keys),
        limit=st.one_of(st.none(), st.integers(0, 5)),
    )
    def scan(self, prefix: bytes, start_after: bytes | None, limit: int | None) -> None:
        got = list(self.store.scan_prefix(prefix, start_after=start_after, limit=limit))
        assert got == scan_model(self.model, prefix, start_after, limit)
        for snapshot, frozen in self.held.values():
            got = list(self.store.scan_prefix(prefix, snapshot, start_after, limit))
            assert got == scan_model(frozen, prefix, start_after, limit)

    @rule(prefix=prefixes, page=st.integers(1, 4))
    def paginate(self, prefix: bytes, page: int) -> None:
        """Cursor pagination, with a write between pages, sees the rows as of each page."""
        rows: list[tuple[bytes, bytes]] = []
        cursor: bytes | None = None
        while True:
            chunk = list(self.store.scan_prefix(prefix, start_after=cursor, limit=page))
            rows += chunk
            if len(chunk) < page:
                break
            cursor = chunk[-1][0]
        assert rows == scan_model(self.model, prefix, None, None)

    @precondition(lambda self: len(self.held) < 3)
    @rule(target=snapshots)
    def take_snapshot(self) -> int:
        snapshot = self.store.snapshot()
        self.held[snapshot.snapshot_id] = (snapshot, dict(self.model))
        return snapshot.snapshot_id

    @rule(snapshot_id=consumes(snapshots))
    def release_snapshot(self, snapshot_id: int) -> None:
        held = self.held.pop(snapshot_id, None)
        if held is not None:
            assert dict(self.store.iter_all(held[0])) == held[1]
            held[0].release()

    @rule()
    def flush(self) -> None:
        self.run(self.store.flush())
        self.durable_model = dict(self.model)
        self.durable_applied_index = self.applied_index
        assert self.store.durable_applied_index == self.applied_index

    @rule(max_bytes=st.sampled_from([64, 512, 1 << 20]), steps=st.integers(1, 4))
    def compact(self, max_bytes: int, steps: int) -> None:
        for _ in range(steps):
            if not self.run(self.store.compact_step(max_bytes)):
                assert not self.store.needs_compaction
                break
        deepest = max((i for i, n in enumerate(self.store.level_table_counts()) if n), default=-1)
        event(f"deepest level with tables: {deepest}")

    @rule()
    def crash_and_reopen(self) -> None:
        self.held.clear()
        self.crash()
        self.store = self.run(LsmStore.open(self.fs, OPTIONS))
        self.model = dict(self.durable_model)
        self.applied_index = self.durable_applied_index
        assert self.store.durable_applied_index == self.durable_applied_index
        assert dict(self.store.iter_all()) == self.model
        event(f"crash: durable keys {'>= 10' if len(self.model) >= 10 else '< 10'}")

    @rule(data=st.data())
    def bit_flip_at_rest(self, data: st.DataObject) -> None:
        """Flip one bit of one table or the manifest: reads fail loudly or read the truth."""
        for snapshot, _frozen in self.held.values():
            snapshot.release()
        self.held.clear()
        self.run(self.store.flush())
        self.durable_model = dict(self.model)
        self.durable_applied_index = self.applied_index
        self.run(self.store.close())
        names = [n for n in self.fs.listdir(OPTIONS.directory) if n.endswith((".sst", "MANIFEST"))]
        name = f"{OPTIONS.directory}/{data.draw(st.sampled_from(names))}"
        file = self.fs.open(name)
        size_bytes = file.size()
        file.close()
        bit_index = data.draw(st.integers(0, size_bytes * 8 - 1))
        self.flip_bit(name, bit_index)
        try:
            unverified = OPTIONS.__class__(**{**_fields(OPTIONS), "verify_blocks_on_open": False})
            store = self.run(LsmStore.open(self.fs, unverified))
        except CorruptionError as exc:
            assert exc.path.endswith(name)
        else:
            for key in sorted(self.model):
                try:
                    assert store.get(key) == self.model[key]
                except CorruptionError as exc:
                    assert exc.path.endswith(name)
            try:
                assert dict(store.iter_all()) == self.model
            except CorruptionError as exc:
                assert exc.path.endswith(name)
            self.run(store.close())
        # With every block verified at open, the flip cannot go unnoticed.
        try:
            self.run(LsmStore.open(self.fs, OPTIONS))
            raise AssertionError(f"a flipped bit in {name} at bit {bit_index} went unnoticed")
        except CorruptionError as exc:
            assert exc.path.endswith(name)
        self.flip_bit(name, bit_index)  # heal, and go on from the durable state
        self.store = self.run(LsmStore.open(self.fs, OPTIONS))
        assert dict(self.store.iter_all()) == self.model

    @rule(
        contents=st.dictionaries(keys, st.binary(min_size=0, max_size=80), max_size=30),
        gap=st.integers(0, 3),
    )
    def replace_all(self, contents: dict[bytes, bytes], gap: int) -> None:
        """State transfer: the whole contents replaced; held snapshots keep the old view."""
        self.applied_index += gap
        self.run(self.store.replace_all(sorted(contents.items()), self.applied_index))
        self.model = dict(contents)
        self.durable_model = dict(contents)
        self.durable_applied_index = self.applied_index
        assert dict(self.store.iter_all()) == self.model

    @rule()
    def checksum(self) -> None:
        """The store's digest is the digest of the model's sorted pairs, whatever the layout."""
        assert self.store.checksum() == LsmModel.digest(self.model)
        for snapshot, frozen in self.held.values():
            assert self.store.checksum(snapshot) == LsmModel.digest(frozen)

    @staticmethod
    def digest(model: dict[bytes, bytes]) -> int:
        digest = xxhash.xxh3_64()
        for key, value in sorted(model.items()):
            digest.update(len(key).to_bytes(4, "little") + key)
            digest.update(len(value).to_bytes(4, "little") + value)
        return digest.intdigest()

    @invariant()
    def applied_indexes(self) -> None:
        assert self.store.applied_index == self.applied_index
        assert self.store.durable_applied_index == self.durable_applied_index

    def teardown(self) -> None:
        for snapshot, _frozen in self.held.values():
            snapshot.release()
        self.run(self.store.close())
        self.loop.close()


def _fields(options: LsmOptions) -> dict[str, Any]:
    import attrs

    return attrs.asdict(options)


class SimMachine(LsmModel):
    def make_loop(self) -> asyncio.AbstractEventLoop:
        return VirtualTimeLoop()

    def make_fs(self) -> FileSystem:
        self.disk = SimDisk(random.Random(7))
        return self.disk.filesystem("node1")

    def crash(self) -> None:
        self.disk.crash()

    def flip_bit(self, name: str, bit_index: int) -> None:
        self.disk.flip_bit(f"node1/{name}", bit_index)


class RealMachine(LsmModel):
    def make_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    def make_fs(self) -> FileSystem:
        self.root = tempfile.mkdtemp(prefix="mox-lsm-")
        self.real_fs = RealFileSystem(self.root)
        return self.real_fs

    def crash(self) -> None:
        # A process death: nothing is flushed, open files just go away.
        self.store._close_tables()

    def flip_bit(self, name: str, bit_index: int) -> None:
        file = self.fs.open(name)
        try:
            byte = file.pread(bit_index // 8, 1)
            file.pwrite(bit_index // 8, bytes([byte[0] ^ (1 << (bit_index % 8))]))
            self.run(file.sync())
        finally:
            file.close()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.real_fs.close()
            shutil.rmtree(self.root, ignore_errors=True)


SETTINGS = settings(
    max_examples=100,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SimMachine.TestCase.settings = SETTINGS
RealMachine.TestCase.settings = settings(SETTINGS, max_examples=30)
TestLsmOnSimDisk = SimMachine.TestCase
TestLsmOnRealFiles = RealMachine.TestCase
