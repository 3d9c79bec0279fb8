"""WAL behaviour on three disks: the simulated one, real files with pwrite, real files with
io_uring. Crashes on real files are process deaths (close without commit); damage is
injected by editing the segment bytes directly."""

from __future__ import annotations

import asyncio
import os
import random
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from mox.errors import CorruptionError, DataDirError, FormatError
from mox.io.real import RealFileSystem
from mox.io.sim import SimDisk, SimFileSystem
from mox.io.simloop import VirtualTimeLoop
from mox.io.uring import probe_ring
from mox.storage.record import RECORD_HEADER_SIZE_BYTES, SEGMENT_HEADER_SIZE_BYTES
from mox.storage.wal import Wal

SEGMENT_SIZE = 16 * 1024


def _uring_refusal(tmp: str) -> str | None:
    ring, reason = probe_ring(tmp)
    if ring is None:
        return reason
    ring.close()
    return None


class Env:
    """One disk and the way to run coroutines on it."""

    def __init__(self, kind: str, tmp: str) -> None:
        self.kind = kind
        self.tmp = tmp
        self.disk: SimDisk | None = None
        if kind == "sim":
            self.disk = SimDisk(random.Random(7))
            self.loop: asyncio.AbstractEventLoop = VirtualTimeLoop()
        else:
            self.loop = asyncio.new_event_loop()
        self._fs: Any = None
        self._opened: list[RealFileSystem] = []

    def fs(self) -> Any:
        if self.disk is not None:
            self._fs = self.disk.filesystem("node1")
        else:
            self._fs = RealFileSystem(self.tmp, backend=self.kind)
            self._opened.append(self._fs)
            assert self._fs.backend == self.kind
        return self._fs

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def crash(self) -> None:
        if self.disk is not None:
            self.disk.crash()

    def segment_path(self, fs: Any, name: str) -> str:
        return name if isinstance(fs, SimFileSystem) else os.path.join(fs.root, name)

    def edit(
        self, name: str, offset: int, transform: Callable[[bytes], bytes], length: int
    ) -> None:
        """Rewrite bytes of a segment at rest (after the WAL is closed)."""
        if self.disk is not None:
            path = f"node1/{name}"
            inode = self.disk._durable[path]
            old = inode.durable.read(offset, length)
            inode.durable.write(offset, transform(old))
            inode.volatile = inode.durable.copy()
            return
        path = os.path.join(self.tmp, name)
        fd = os.open(path, os.O_RDWR)
        try:
            old = os.pread(fd, length, offset)
            os.pwrite(fd, transform(old), offset)
        finally:
            os.close(fd)

    def close(self) -> None:
        for fs in self._opened:
            fs.close()
        self.loop.close()


@pytest.fixture(params=["sim", "pwrite", "io_uring"])
def env(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Env]:
    if request.param == "io_uring":
        refusal = _uring_refusal(str(tmp_path))
        if refusal is not None:
            pytest.skip(f"io_uring unavailable here: {refusal}")
    e = Env(request.param, str(tmp_path))
    yield e
    e.close()


def open_wal(env: Env, *, node_id: int = 1, cluster_id: str = "c1") -> Wal:
    wal: Wal = env.run(
        Wal.open(env.fs(), segment_size_bytes=SEGMENT_SIZE, cluster_id=cluster_id, node_id=node_id)
    )
    return wal


def bodies(n: int, size: int = 100, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, size)) for _ in range(n)]


def segment_names(wal: Wal) -> list[str]:
    return [f"wal/{first:020d}.seg" for first in wal._segment_firsts]


def test_append_commit_reopen_reads_everything(env: Env) -> None:
    wal = open_wal(env)
    assert (wal.first_seq, wal.last_seq) == (1, 0)
    data = bodies(300)
    seqs = [wal.append(i % 7, body) for i, body in enumerate(data)]
    assert seqs == list(range(1, 301))
    env.run(wal.commit())
    assert wal.durable_seq == 300
    assert wal.segment_count > 1, "the test must cross segment boundaries"
    wal.close()
    env.crash()
    wal = open_wal(env)
    assert (wal.first_seq, wal.last_seq) == (1, 300)
    records = wal.read(1, 300)
    assert [r.body for r in records] == data
    assert [r.rtype for r in records] == [i % 7 for i in range(300)]
    assert [r.seq for r in wal.read(120, 122)] == [120, 121, 122]


def test_uncommitted_records_are_lost_on_crash(env: Env) -> None:
    wal = open_wal(env)
    for body in bodies(10):
        wal.append(1, body)
    env.run(wal.commit())
    wal.append(1, b"not committed")
    assert wal.last_seq == 11
    assert wal.read(11, 11)[0].body == b"not committed"
    wal.close()
    env.crash()
    wal = open_wal(env)
    assert wal.last_seq == 10
    assert wal.append(2, b"again") == 11


def test_group_commit_shares_one_flush(env: Env) -> None:
    wal = open_wal(env)
    seqs = [wal.append(1, b"x" * 64) for _ in range(50)]
    before = wal.flush_count

    async def all_commit() -> None:
        await asyncio.gather(*(wal.commit(seq) for seq in seqs))

    env.run(all_commit())
    assert wal.flush_count == before + 1
    assert wal.durable_seq == 50


def test_commit_during_flush_waits_for_its_own_record(env: Env) -> None:
    wal = open_wal(env)
    wal.append(1, b"first")

    async def scenario() -> None:
        first = asyncio.ensure_future(wal.commit())
        while wal.flush_count == 0 and not wal._lock.locked():
            await asyncio.sleep(0)  # until the first flush has taken record 1
        second_seq = wal.append(1, b"second")
        await wal.commit(second_seq)
        assert wal.durable_seq >= second_seq
        await first

    env.run(scenario())
    assert wal.durable_seq == 2
    assert wal.flush_count == 2


def test_torn_tail_is_truncated(env: Env) -> None:
    wal = open_wal(env)
    for body in bodies(5, 50):
        wal.append(1, body)
    env.run(wal.commit())
    tail_offset = wal._segments[-1].write_offset
    last_name = segment_names(wal)[-1]
    wal.close()
    # A half-written record after the tail: a header claiming more bytes than follow.
    fake = struct.pack("<IIQQQHHIQ", 0x52584F4D, 1000, 6, 6, 0, 1, 0, 0, 0) + b"\x01" * 30
    env.edit(last_name, tail_offset, lambda _old: fake, len(fake))
    env.crash()
    wal = open_wal(env)
    assert wal.last_seq == 5
    assert wal.torn_tail_bytes_zeroed == len(fake)
    assert wal.append(1, b"after") == 6
    env.run(wal.commit())
    wal.close()
    env.crash()
    wal = open_wal(env)
    assert wal.read(6, 6)[0].body == b"after"


def test_corrupt_record_before_valid_ones_raises(env: Env) -> None:
    wal = open_wal(env)
    for body in bodies(3, 50, seed=2):
        wal.append(1, body)
        env.run(wal.commit())  # three flushes: record 2 is followed by a later flush
    second = wal._segments[0].offsets[1]
    name = segment_names(wal)[0]
    wal.close()
    flip_at = second + RECORD_HEADER_SIZE_BYTES  # first body byte of record 2
    env.edit(name, flip_at, lambda old: bytes([old[0] ^ 0x10]), 1)
    env.crash()
    with pytest.raises(CorruptionError) as info:
        open_wal(env)
    assert info.value.offset == second
    assert info.value.path.endswith(name)


def test_corrupt_record_in_earlier_segment_raises(env: Env) -> None:
    wal = open_wal(env)
    for body in bodies(300, seed=3):
        wal.append(1, body)
    env.run(wal.commit())
    assert wal.segment_count > 1
    seg = wal._segments[0]
    last_offset = seg.offsets[-1]
    name = segment_names(wal)[0]
    wal.close()
    env.edit(name, last_offset + 20, lambda old: bytes([old[0] ^ 1]), 1)
    env.crash()
    with pytest.raises(CorruptionError) as info:
        open_wal(env)
    assert info.value.offset == last_offset


def test_read_of_damaged_record_raises_not_returns(env: Env) -> None:
    wal = open_wal(env)
    for body in bodies(4, 80, seed=4):
        wal.append(1, body)
    env.run(wal.commit())
    offset = wal._segments[0].offsets[2]
    name = segment_names(wal)[0]
    if env.disk is not None:
        env.disk.flip_bit(f"node1/{name}", (offset + RECORD_HEADER_SIZE_BYTES) * 8)
    else:
        env.edit(name, offset + RECORD_HEADER_SIZE_BYTES, lambda old: bytes([old[0] ^ 4]), 1)
    assert [r.seq for r in wal.read(1, 2)] == [1, 2]
    with pytest.raises(CorruptionError) as info:
        wal.read(1, 4)
    assert info.value.offset == offset


def test_other_node_or_cluster_is_refused(env: Env) -> None:
    wal = open_wal(env, node_id=1, cluster_id="c1")
    wal.append(1, b"x")
    env.run(wal.commit())
    wal.close()
    with pytest.raises(DataDirError, match="belongs to node 1 of cluster 'c1', not node 2"):
        open_wal(env, node_id=2, cluster_id="c1")
    with pytest.raises(DataDirError, match="not node 1 of cluster 'other'"):
        open_wal(env, node_id=1, cluster_id="other")


def test_wrong_magic_and_version_are_format_errors(env: Env) -> None:
    wal = open_wal(env)
    name = segment_names(wal)[0]
    wal.close()
    env.edit(name, 0, lambda _old: b"NOTAWAL!", 8)
    with pytest.raises(FormatError, match="not a Mox WAL segment"):
        open_wal(env)
    env.edit(name, 0, lambda _old: b"MOXWAL\x00\x00", 8)
    wal = open_wal(env)  # restored
    wal.close()
    # Version 99 with a matching checksum: a file from a future build.
    import xxhash

    def future(old: bytes) -> bytes:
        fields = bytearray(old[:120])  # the header fields before the checksum
        fields[8:12] = struct.pack("<I", 99)
        return bytes(fields) + struct.pack("<Q", xxhash.xxh3_64_intdigest(bytes(fields)))

    env.edit(name, 0, future, 128)
    with pytest.raises(FormatError, match="unsupported WAL format version 99"):
        open_wal(env)


def test_truncate_suffix_is_durable_and_fences_stale_records(env: Env) -> None:
    wal = open_wal(env)
    for body in bodies(200, seed=5):
        wal.append(1, body)
    env.run(wal.commit())
    env.run(wal.truncate_suffix(150))
    assert wal.last_seq == 149
    new = [wal.append(2, b"new %d" % i) for i in range(3)]
    assert new == [150, 151, 152]
    env.run(wal.commit())
    wal.close()
    env.crash()
    wal = open_wal(env)
    assert wal.last_seq == 152
    assert [r.body for r in wal.read(150, 152)] == [b"new 0", b"new 1", b"new 2"]
    # Truncating again inside the same old segment, then at a fence boundary.
    env.run(wal.truncate_suffix(151))
    env.run(wal.truncate_suffix(150))
    wal.close()
    env.crash()
    wal = open_wal(env)
    assert wal.last_seq == 149
    assert wal.read(149, 149)[0].rtype == 1


def test_truncate_pending_only(env: Env) -> None:
    wal = open_wal(env)
    wal.append(1, b"a")
    env.run(wal.commit())
    wal.append(1, b"b")
    wal.append(1, b"c")
    env.run(wal.truncate_suffix(3))
    assert wal.last_seq == 2
    env.run(wal.commit())
    assert [r.body for r in wal.read(1, 2)] == [b"a", b"b"]


def test_drop_prefix_deletes_whole_old_segments(env: Env) -> None:
    wal = open_wal(env)
    for body in bodies(400, seed=6):
        wal.append(1, body)
    env.run(wal.commit())
    firsts = list(wal._segment_firsts)
    assert len(firsts) >= 3
    env.run(wal.drop_prefix(firsts[2]))
    assert wal.first_seq == firsts[2]
    env.run(wal.drop_prefix(10**9))  # never drops the last segment
    assert wal.segment_count == 1
    kept_first = wal.first_seq
    wal.close()
    env.crash()
    wal = open_wal(env)
    assert wal.first_seq == kept_first
    assert wal.last_seq == 400
    with pytest.raises(ValueError, match="outside the log"):
        wal.read(1, 2)


def test_reset_starts_an_empty_log_at_next_seq(env: Env) -> None:
    wal = open_wal(env)
    for body in bodies(50, seed=8):
        wal.append(1, body)
    env.run(wal.commit())
    env.run(wal.reset(1000))
    assert (wal.first_seq, wal.last_seq) == (1000, 999)
    assert wal.append(1, b"after snapshot") == 1000
    env.run(wal.commit())
    wal.close()
    env.crash()
    wal = open_wal(env)
    assert (wal.first_seq, wal.last_seq) == (1000, 1000)
    assert wal.read(1000, 1000)[0].body == b"after snapshot"


def test_bad_arguments_are_clear_errors(env: Env) -> None:
    wal = open_wal(env)
    with pytest.raises(ValueError, match="record type must be in"):
        wal.append(70000, b"")
    with pytest.raises(ValueError, match="exceeds the segment's room"):
        wal.append(1, bytes(SEGMENT_SIZE))
    with pytest.raises(ValueError, match="segment_size_bytes must be at least"):
        env.run(Wal.open(env.fs(), segment_size_bytes=100, cluster_id="c1", node_id=1))
    max_body = bytes(wal.max_body_size_bytes)
    wal.append(1, max_body)  # the largest record fits an empty segment exactly
    env.run(wal.commit())
    assert wal.read(1, 1)[0].body == max_body
    assert SEGMENT_HEADER_SIZE_BYTES + RECORD_HEADER_SIZE_BYTES + len(max_body) == SEGMENT_SIZE


def test_segment_size_can_change_between_runs(env: Env) -> None:
    wal = open_wal(env)
    for body in bodies(200, seed=9):
        wal.append(1, body)
    env.run(wal.commit())
    wal.close()
    bigger: Wal = env.run(
        Wal.open(env.fs(), segment_size_bytes=2 * SEGMENT_SIZE, cluster_id="c1", node_id=1)
    )
    assert bigger.last_seq == 200
    for body in bodies(300, seed=10):
        bigger.append(2, body)
    env.run(bigger.commit())
    bigger.close()
    env.crash()
    wal = open_wal(env)
    assert wal.last_seq == 500
    assert [r.rtype for r in wal.read(199, 202)] == [1, 1, 2, 2]


def test_truncated_segment_file_is_corruption(env: Env) -> None:
    wal = open_wal(env)
    name = segment_names(wal)[0]
    wal.close()
    if env.disk is not None:
        env.disk._durable[f"node1/{name}"].durable.truncate(100)
        env.disk._volatile[f"node1/{name}"].volatile.truncate(100)
    else:
        os.truncate(os.path.join(env.tmp, name), 100)
    with pytest.raises(CorruptionError, match="too short"):
        open_wal(env)


def test_reads_and_appends_during_truncate_and_reset_see_the_new_log(env: Env) -> None:
    wal = open_wal(env)
    for i in range(10):
        wal.append(1, b"old %d" % i)
    env.run(wal.commit())

    async def scenario() -> None:
        truncating = asyncio.ensure_future(wal.truncate_suffix(5))
        await asyncio.sleep(0)  # truncate runs until its first I/O wait (or to the end)
        assert wal.last_seq == 4
        assert wal.append(2, b"new 5") == 5
        assert [r.body for r in wal.read(4, 5)] == [b"old 3", b"new 5"]
        await truncating
        await wal.commit()
        resetting = asyncio.ensure_future(wal.reset(100))
        await asyncio.sleep(0)
        assert (wal.first_seq, wal.last_seq) == (100, 99)
        assert wal.append(3, b"first after reset") == 100
        await resetting
        await wal.commit()

    env.run(scenario())
    wal.close()
    env.crash()
    wal = open_wal(env)
    assert (wal.first_seq, wal.last_seq) == (100, 100)
    assert wal.read(100, 100)[0].body == b"first after reset"


def test_commit_waits_out_a_held_lock_and_a_cancelled_committer(env: Env) -> None:
    """A flush that has to wait for the lock (held across an await by a truncation) still
    completes, also when the committer that started it is cancelled meanwhile; on a
    blocking file system this is the path where the flush, begun in the caller, is handed
    to a task."""
    wal = open_wal(env)
    seq = wal.append(1, b"held")

    async def scenario() -> None:
        await wal._lock.acquire()
        try:
            starter = asyncio.ensure_future(wal.commit(seq))
            joiner = asyncio.ensure_future(wal.commit(seq))
            for _ in range(5):
                await asyncio.sleep(0)
            assert wal.durable_seq == 0
            assert not starter.done() and not joiner.done()
            starter.cancel()
            await asyncio.sleep(0)
            assert starter.cancelled()
        finally:
            wal._lock.release()
        await joiner
        assert wal._flush_task is not None  # the flush ran on in a task, not in `starter`
        assert wal.durable_seq == seq

    env.run(scenario())
    assert wal.flush_count == 1
    assert wal.append(1, b"after") == seq + 1
    env.run(wal.commit())
    wal.close()
    env.crash()
    wal = open_wal(env)
    assert [r.body for r in wal.read(1, 2)] == [b"held", b"after"]


def test_committer_cancelled_before_the_flush_began_leaves_it_to_the_others(env: Env) -> None:
    wal = open_wal(env)
    seq = wal.append(1, b"x")

    async def scenario() -> None:
        starter = asyncio.ensure_future(wal.commit(seq))
        await asyncio.sleep(0)  # the starter is in its flush's first loop iteration (or waits)
        joiner = asyncio.ensure_future(wal.commit(seq))
        starter.cancel()
        await joiner
        assert wal.durable_seq == seq
        with pytest.raises(asyncio.CancelledError):
            await starter

    env.run(scenario())
    assert wal.flush_count == 1
    assert wal.append(1, b"y") == seq + 1
    env.run(wal.commit())
    assert wal.durable_seq == seq + 1


@pytest.fixture
def pwrite_env(tmp_path: Any) -> Iterator[Env]:
    e = Env("pwrite", str(tmp_path))
    yield e
    e.close()


def test_close_ends_a_committer_whose_flush_had_not_begun(pwrite_env: Env) -> None:
    """On a blocking file system (pwrite; the only one where the committer runs the flush
    itself, after one loop iteration) a close() in that iteration dropped the records: the
    committer gets an error, it neither hangs nor flushes nothing forever."""
    env = pwrite_env
    assert env.fs().blocking_sync
    wal = open_wal(env)
    wal.append(1, b"never flushed")

    async def scenario() -> None:
        committer = asyncio.ensure_future(wal.commit())
        await asyncio.sleep(0)  # the committer now waits its one iteration
        wal.close()
        done, _pending = await asyncio.wait([committer], timeout=5)
        assert committer in done, "commit() still running after close()"
        error = committer.exception()
        assert isinstance(error, OSError) and "closed" in str(error), error

    env.run(scenario())
    with pytest.raises(OSError, match="closed"):
        wal.append(1, b"after close")
