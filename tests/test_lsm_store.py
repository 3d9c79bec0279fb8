"""Focused tests of the LSM store: formats and bad input, snapshots pinning tables,
tombstone collection, bounded compaction, state transfer, checksums, crash atomicity."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import xxhash

from mox.errors import ConfigError, CorruptionError, DataDirError, FormatError
from mox.io.real import RealFileSystem
from mox.io.sim import SimDisk, SimFileSystem
from mox.io.simloop import VirtualTimeLoop, run_virtual
from mox.storage.lsm import LsmOptions, LsmStore
from mox.storage.lsm.manifest import MANIFEST_MAGIC

SMALL = LsmOptions(
    memtable_size_bytes=4096,
    block_size_bytes=256,
    table_size_bytes=4096,
    l0_compaction_trigger_tables=2,
    level1_size_bytes=8192,
    level_size_multiplier=4,
    level_count=4,
)


def sim_fs(seed: int = 1) -> SimFileSystem:
    return SimDisk(random.Random(seed)).filesystem("n1")


def key(i: int) -> bytes:
    return b"t/acme/talent/%05d" % i


async def fill(store: LsmStore, count: int, *, first_index: int = 1, tag: bytes = b"v") -> None:
    for start in range(0, count, 50):
        batch = [(key(i), tag + b"%d" % i) for i in range(start, min(count, start + 50))]
        store.write_batch(batch, first_index + start // 50)


async def compact_all(store: LsmStore, max_bytes: int = 1 << 20) -> int:
    steps = 0
    while await store.compact_step(max_bytes):
        steps += 1
        assert steps < 10_000
    return steps


def sst_names(fs: Any) -> list[str]:
    return [n for n in fs.listdir("lsm") if n.endswith(".sst")]


# ------------------------------------------------------------------ formats and bad input


def test_table_with_wrong_magic_or_version_is_a_format_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        fs = RealFileSystem(str(tmp_path), backend="pwrite")
        store = await LsmStore.open(fs, SMALL)
        await fill(store, 10)
        await store.flush()
        await store.close()
        (name,) = sst_names(fs)
        path = tmp_path / "lsm" / name
        data = bytearray(path.read_bytes())
        footer_at = len(data) - 56
        # Another file format entirely: the magic is far from ours.
        wrong_magic = bytearray(data)
        wrong_magic[footer_at : footer_at + 8] = b"SQLite f"
        path.write_bytes(wrong_magic)
        with pytest.raises(FormatError) as info:
            await LsmStore.open(fs, SMALL)
        assert name in info.value.path and "magic" in str(info.value)
        # A future version, with a valid footer checksum: a version error, not damage.
        future = bytearray(data)
        struct.pack_into("<I", future, footer_at + 8, 99)
        struct.pack_into(
            "<Q",
            future,
            footer_at + 48,
            xxhash.xxh3_64_intdigest(bytes(future[footer_at : footer_at + 48])),
        )
        path.write_bytes(future)
        with pytest.raises(FormatError) as info:
            await LsmStore.open(fs, SMALL)
        assert name in info.value.path and "version 99" in str(info.value)
        # One flipped bit of the magic is damage to our file.
        flipped = bytearray(data)
        flipped[footer_at] ^= 0x01
        path.write_bytes(flipped)
        with pytest.raises(CorruptionError) as cinfo:
            await LsmStore.open(fs, SMALL)
        assert name in cinfo.value.path
        path.write_bytes(data)
        store = await LsmStore.open(fs, SMALL)
        assert store.get(key(3)) == b"v3"
        await store.close()
        fs.close()

    asyncio.run(scenario())


def test_manifest_with_wrong_magic_or_version_is_a_format_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        fs = RealFileSystem(str(tmp_path), backend="pwrite")
        store = await LsmStore.open(fs, SMALL)
        await store.close()
        path = tmp_path / "lsm" / "MANIFEST"
        data = path.read_bytes()
        assert data.startswith(MANIFEST_MAGIC)
        path.write_bytes(b"PK\x03\x04zip!" + data[8:])
        with pytest.raises(FormatError) as info:
            await LsmStore.open(fs, SMALL)
        assert info.value.path.endswith("lsm/MANIFEST") and "magic" in str(info.value)
        future = bytearray(data)
        struct.pack_into("<I", future, 8, 7)
        body = bytes(future[24:])
        struct.pack_into("<Q", future, 16, xxhash.xxh3_64_intdigest(bytes(future[:16]) + body))
        path.write_bytes(future)
        with pytest.raises(FormatError) as info:
            await LsmStore.open(fs, SMALL)
        assert "version 7" in str(info.value)
        path.write_bytes(data[:-1])
        with pytest.raises(CorruptionError):
            await LsmStore.open(fs, SMALL)
        fs.close()

    asyncio.run(scenario())


def test_tables_without_a_manifest_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        fs = RealFileSystem(str(tmp_path), backend="pwrite")
        store = await LsmStore.open(fs, SMALL)
        await fill(store, 5)
        await store.flush()
        await store.close()
        (tmp_path / "lsm" / "MANIFEST").unlink()
        with pytest.raises(DataDirError) as info:
            await LsmStore.open(fs, SMALL)
        assert "MANIFEST" in str(info.value)
        fs.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("block_size_bytes", 0),
        ("memtable_size_bytes", -1),
        ("level_count", 1),
        ("bloom_false_positive_rate", 0.9),
        ("directory", "/abs"),
        ("block_cache_blocks", -3),
    ],
)
def test_bad_options_name_the_key(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        LsmOptions(**{field: value})
    assert info.value.key == f"lsm.{field}"


def test_bad_writes_and_reads_are_value_errors() -> None:
    async def scenario() -> None:
        store = await LsmStore.open(sim_fs(), SMALL)
        store.write_batch([(b"a", b"1")], 5)
        with pytest.raises(ValueError, match=r"ops\[1\]"):
            store.write_batch([(b"b", b"1"), ("c", b"2")], 6)  # type: ignore[list-item]
        with pytest.raises(ValueError, match="applied_index"):
            store.write_batch([(b"b", b"1")], 4)
        with pytest.raises(ValueError, match="limit"):
            store.scan_prefix(b"", limit=-1)
        with pytest.raises(ValueError, match="max_bytes"):
            await store.compact_step(0)
        with pytest.raises(ValueError, match="key must be bytes"):
            store.get("a")  # type: ignore[arg-type]
        assert store.get(b"b") is None  # the rejected batch wrote nothing
        await store.close()
        with pytest.raises(ValueError, match="closed"):
            store.get(b"a")

    run_virtual(scenario())


# ------------------------------------------------------------------ snapshots and compaction


def test_snapshot_pins_tables_through_compaction_and_sees_its_versions() -> None:
    async def scenario() -> None:
        fs = sim_fs()
        store = await LsmStore.open(fs, SMALL)
        await fill(store, 300)
        await store.flush()
        snapshot = store.snapshot()
        pinned = set(sst_names(fs))
        await fill(store, 300, first_index=100, tag=b"w")
        for i in range(0, 300, 3):
            store.write_batch([(key(i), None)], 200 + i)
        await store.flush()
        await compact_all(store)
        # The snapshot's tables outlive the compaction that replaced them.
        assert pinned <= set(sst_names(fs))
        assert store.get(key(7), snapshot) == b"v7"
        assert store.get(key(7)) == b"w7"
        assert store.get(key(9)) is None and store.get(key(9), snapshot) == b"v9"
        old = dict(store.iter_all(snapshot))
        assert len(old) == 300 and old[key(0)] == b"v0"
        snapshot.release()
        assert not pinned & set(sst_names(fs))
        assert len(dict(store.iter_all())) == 200
        await store.close()

    run_virtual(scenario())


def test_tombstones_are_dropped_only_at_the_bottom_and_unseen() -> None:
    # Two levels: every compaction writes into the bottom level.
    options = LsmOptions(
        memtable_size_bytes=4096,
        block_size_bytes=256,
        table_size_bytes=4096,
        l0_compaction_trigger_tables=2,
        level_count=2,
    )

    async def scenario() -> None:
        store = await LsmStore.open(sim_fs(), options)
        await fill(store, 200)
        await store.flush()
        snapshot = store.snapshot()
        for i in range(200):
            store.write_batch([(key(i), None)], 1000 + i)
        await store.flush()
        await compact_all(store)
        assert store.level_table_counts()[0] == 0
        # The snapshot still reads the values, so values and tombstones were both kept.
        assert store.get(key(5), snapshot) == b"v5" and store.get(key(5)) is None
        entries = sum(t.props.entry_count for level in store._levels for t in level)
        assert entries == 400
        snapshot.release()
        for i in range(0, 200, 2):
            store.write_batch([(key(i), b"again")], 3000 + i)
        await store.flush()
        store.write_batch([(key(1), None), (key(199), None)], 5000)
        await store.flush()
        await compact_all(store)
        # Unseen by any snapshot at the bottom: deleted keys leave no entry at all.
        entries = sum(t.props.entry_count for level in store._levels for t in level)
        assert entries == 100, store.level_table_counts()
        assert list(store.iter_all()) == [(key(i), b"again") for i in range(0, 200, 2)]
        await store.close()

    run_virtual(scenario())


def test_tombstones_above_older_data_survive_compaction_until_the_bottom() -> None:
    async def scenario() -> None:
        store = await LsmStore.open(sim_fs(), SMALL)
        for round_index in range(4):
            await fill(store, 400, first_index=1 + 10 * round_index)
            await store.flush()
            await compact_all(store)
        counts = store.level_table_counts()
        assert counts[2] > 0, counts  # values live two levels down
        for i in range(0, 400, 3):
            store.write_batch([(key(i), None)], 100 + i)
        await store.flush()
        store.write_batch([(b"t/acme/talent/zzz", b"1")], 1000)
        await store.flush()  # level 0 reaches its trigger: merged into level 1, not the bottom
        await compact_all(store)
        for i in range(400):
            assert store.get(key(i)) == (None if i % 3 == 0 else b"v%d" % i), i
        assert len(list(store.scan_prefix(b"t/acme/talent/0"))) == 400 - 134

    run_virtual(scenario())


def test_compact_step_is_bounded_and_reads_stay_right_between_steps() -> None:
    async def scenario() -> None:
        store = await LsmStore.open(sim_fs(), SMALL)
        for round_index in range(2):
            await fill(store, 400, first_index=1 + 100 * round_index, tag=b"r%d-" % round_index)
            await store.flush()
        assert store.needs_compaction
        steps = 0
        while await store.compact_step(max_bytes=512):
            steps += 1
            assert store.get(key(17)) == b"r1-17"
            assert len(list(store.scan_prefix(b"t/acme/"))) == 400
        assert steps > 10  # 2 x 400 entries of ~25 bytes cannot fit a few 512-byte steps
        assert not store.needs_compaction
        assert store.level_table_counts()[0] == 0
        await store.close()

    run_virtual(scenario())


def test_scan_suspended_across_writes_flushes_and_compactions_is_consistent() -> None:
    async def scenario() -> None:
        store = await LsmStore.open(sim_fs(), SMALL)
        await fill(store, 300)
        scan = store.scan_prefix(b"t/acme/talent/")
        first = [next(scan) for _ in range(10)]
        for i in range(300):
            store.write_batch([(key(i), None if i % 2 else b"new")], 100 + i)
        await store.flush()
        await fill(store, 300, first_index=1000, tag=b"z")
        await store.flush()
        await compact_all(store)
        rest = list(scan)
        assert first + rest == [(key(i), b"v%d" % i) for i in range(300)]
        await store.close()

    run_virtual(scenario())


# ------------------------------------------------------------------ state transfer, checksum


def test_replace_all_installs_a_copy_with_the_same_checksum() -> None:
    async def scenario() -> None:
        source = await LsmStore.open(sim_fs(1), SMALL)
        await fill(source, 500)
        await source.flush()
        for i in range(0, 500, 7):
            source.write_batch([(key(i), None)], 900 + i)
        snapshot = source.snapshot()
        fs = sim_fs(2)
        target = await LsmStore.open(fs, SMALL)
        await fill(target, 50, tag=b"stale")
        await target.flush()
        await target.replace_all(source.iter_all(snapshot), applied_index=1400)
        assert target.checksum() == source.checksum(snapshot)
        assert target.durable_applied_index == 1400
        # Unsorted input is refused, and the contents stay as they were.
        with pytest.raises(ValueError, match=r"items\[1\]"):
            await target.replace_all([(b"b", b"1"), (b"a", b"2")], applied_index=1500)
        assert target.checksum() == source.checksum(snapshot)
        await target.close()
        reopened = await LsmStore.open(fs, SMALL)
        assert reopened.checksum() == source.checksum(snapshot)
        assert reopened.durable_applied_index == 1400
        reopened.write_batch([(key(1), b"after")], 1401)
        assert reopened.get(key(1)) == b"after"
        await reopened.close()
        snapshot.release()
        await source.close()

    run_virtual(scenario())


def test_checksum_depends_on_contents_not_layout() -> None:
    async def scenario() -> None:
        a = await LsmStore.open(sim_fs(1), SMALL)
        b = await LsmStore.open(sim_fs(2), SMALL)
        await fill(a, 400)
        await a.flush()
        await compact_all(a)
        for i in range(400):  # b: one key at a time, with churn, never compacted
            b.write_batch([(key(i), b"junk")], 1 + i)
            b.write_batch([(key(i), b"v%d" % i)], 1 + i)
            if i % 100 == 0:
                await b.flush()
        assert a.level_table_counts() != b.level_table_counts()
        assert a.checksum() == b.checksum()
        b.write_batch([(key(3), b"different")], 999)
        assert a.checksum() != b.checksum()
        b.write_batch([(key(3), b"v3"), (b"t/extra", b"")], 1000)
        assert a.checksum() != b.checksum()
        await a.close()
        await b.close()

    run_virtual(scenario())


# ------------------------------------------------------------------ durability


def test_crash_at_any_moment_of_a_flush_or_compaction_leaves_old_or_new() -> None:
    """Crash a SimDisk at many virtual instants inside flush + compaction; every reopen sees
    exactly the state before or after one completed flush, never a mix."""
    outcomes: set[str] = set()
    for delay_us in range(0, 6000, 150):
        loop = VirtualTimeLoop()
        disk = SimDisk(random.Random(delay_us))
        fs = disk.filesystem("n1")

        async def prepare() -> LsmStore:
            store = await LsmStore.open(fs, SMALL)
            await fill(store, 200)
            await store.flush()
            await fill(store, 200, first_index=10, tag=b"x")
            return store

        store = loop.run_until_complete(prepare())

        async def background() -> None:
            await store.flush()
            await compact_all(store, max_bytes=256)

        task = loop.create_task(background())
        loop.run_until_complete(asyncio.sleep(delay_us / 1e6))
        finished = task.done()
        disk.crash()
        if not finished:
            with pytest.raises(OSError):
                loop.run_until_complete(task)
        reopened = loop.run_until_complete(LsmStore.open(fs, SMALL))
        contents = dict(reopened.iter_all())
        if reopened.durable_applied_index == 4:
            assert contents == {key(i): b"v%d" % i for i in range(200)}
            outcomes.add("old")
        else:
            assert reopened.durable_applied_index == 13
            assert contents == {key(i): b"x%d" % i for i in range(200)}
            outcomes.add("new")
        loop.run_until_complete(reopened.close())
        loop.close()
    assert outcomes == {"old", "new"}


Scenario = Callable[[], Awaitable[None]]


def test_writes_reads_flushes_and_compactions_interleave() -> None:
    """Four tasks on one virtual-time loop: writes and reads go on while flushes and
    compaction steps are suspended in disk latency; every read matches the model."""

    async def scenario() -> None:
        rng = random.Random(11)
        store = await LsmStore.open(sim_fs(5), SMALL)
        model: dict[bytes, bytes] = {}
        applied = [0]
        done = asyncio.Event()
        checks = [0]

        async def writer() -> None:
            for _ in range(600):
                applied[0] += 1
                batch: list[tuple[bytes, bytes | None]] = []
                for _ in range(rng.randrange(1, 6)):
                    k = key(rng.randrange(150))
                    v = None if rng.random() < 0.25 else b"%d" % applied[0]
                    batch.append((k, v))
                store.write_batch(batch, applied[0])
                for k, v in batch:
                    if v is None:
                        model.pop(k, None)
                    else:
                        model[k] = v
                await asyncio.sleep(rng.uniform(0, 0.0005))
            done.set()

        async def reader() -> None:
            while not done.is_set():
                k = key(rng.randrange(150))
                assert store.get(k) == model.get(k)
                with store.snapshot() as snapshot:
                    frozen = dict(model)
                    await asyncio.sleep(0.0003)  # writes, flushes, compactions happen meanwhile
                    assert dict(store.iter_all(snapshot)) == frozen
                checks[0] += 1

        async def flusher() -> None:
            while not done.is_set():
                await store.flush()
                await asyncio.sleep(0.002)

        async def compactor() -> None:
            while not done.is_set():
                if not await store.compact_step(max_bytes=300):
                    await asyncio.sleep(0.001)

        await asyncio.gather(writer(), reader(), flusher(), compactor())
        assert checks[0] > 50
        assert dict(store.iter_all()) == model
        await store.flush()
        assert store.durable_applied_index == applied[0]
        assert sum(store.level_table_counts()[1:]) > 0  # compaction really ran
        await store.close()
        reopened = await LsmStore.open(store._fs, SMALL)
        assert dict(reopened.iter_all()) == model
        await reopened.close()

    run_virtual(scenario())


def test_leftovers_of_a_crashed_first_start_are_cleaned(tmp_path: Path) -> None:
    async def scenario() -> None:
        (tmp_path / "lsm").mkdir()
        (tmp_path / "lsm" / "MANIFEST.tmp").write_bytes(b"half a manifest")
        fs = RealFileSystem(str(tmp_path), backend="pwrite")
        store = await LsmStore.open(fs, SMALL)
        assert sorted(fs.listdir("lsm")) == ["MANIFEST"]
        store.write_batch([(b"k", b"v")], 1)
        await store.flush()
        await store.close()
        (tmp_path / "lsm" / "000099.sst").write_bytes(b"an unfinished table")
        store = await LsmStore.open(fs, SMALL)
        assert "000099.sst" not in fs.listdir("lsm")
        assert store.get(b"k") == b"v"
        await store.close()
        fs.close()

    asyncio.run(scenario())
