"""Superblock: copies, crash safety, damage, and bad input, on SimDisk and real files."""

from __future__ import annotations

import asyncio
import os
import random
import struct
from typing import Any

import pytest
import xxhash
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from mox.errors import CorruptionError, DataDirError, FormatError
from mox.io.real import RealFileSystem
from mox.io.sim import DiskFaults, SimDisk
from mox.io.simloop import VirtualTimeLoop, run_virtual
from mox.storage.superblock import Superblock, SuperblockState

SLOT = 4096


def state(term: int, **fields: Any) -> SuperblockState:
    return SuperblockState(cluster_id="c1", node_id=1, term=term, **fields)


def content(s: SuperblockState | None) -> Any:
    """Everything but the sequence number, which `write` assigns."""
    return None if s is None else (s.term, s.vote, s.commit, s.members, s.extra)


@pytest.fixture(params=["pwrite", "io_uring"])
def real_fs(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    from mox.io.uring import probe_ring

    if request.param == "io_uring":
        ring, reason = probe_ring(str(tmp_path))
        if ring is None:
            pytest.skip(f"io_uring unavailable here: {reason}")
        ring.close()
    fs = RealFileSystem(str(tmp_path), backend=request.param)
    yield fs
    fs.close()


def edit(fs: RealFileSystem, offset: int, data: bytes) -> None:
    fd = os.open(os.path.join(fs.root, "superblock"), os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def test_fresh_superblock_loads_none_then_round_trips(real_fs: RealFileSystem) -> None:
    sb = Superblock.open(real_fs, cluster_id="c1", node_id=1)
    assert sb.load() is None

    async def go() -> None:
        first = await sb.write(state(1, vote=2, members=[1, 2, 3], extra=b"\x00vsr"))
        assert first.sequence == 1
        second = await sb.write(state(2, vote=0, commit=7, members=[1, 2, 3]))
        assert second.sequence == 2

    asyncio.run(go())
    sb.close()
    loaded = Superblock.open(real_fs, cluster_id="c1", node_id=1).load()
    assert loaded is not None
    assert loaded.sequence == 2
    assert content(loaded) == (2, 0, 7, [1, 2, 3], b"")


def test_any_one_damaged_copy_loses_nothing(real_fs: RealFileSystem) -> None:
    sb = Superblock.open(real_fs)

    async def go() -> None:
        await sb.write(state(1))
        await sb.write(state(5, vote=3))

    asyncio.run(go())
    sb.close()
    for copy in range(4):
        edit(real_fs, copy * SLOT + 40, b"\xff\xee")  # inside the body
        loaded = Superblock.open(real_fs).load()
        assert loaded is not None and content(loaded) == content(state(5, vote=3))
        # Repair that copy by writing again, then damage the next one.
        sb = Superblock.open(real_fs)
        sb.load()
        asyncio.run(sb.write(state(5, vote=3)))
        sb.close()


def test_recover_rewrites_a_state_that_lost_copies(real_fs: RealFileSystem) -> None:
    sb = Superblock.open(real_fs)
    asyncio.run(sb.write(state(4, vote=1)))
    sb.close()
    edit(real_fs, 3 * SLOT + 40, b"\xde\xad")  # copy 3 damaged
    sb = Superblock.open(real_fs)
    loaded = sb.load()
    assert loaded is not None and loaded.sequence == 1
    assert not sb.intact
    recovered = asyncio.run(sb.recover())
    assert recovered is not None and content(recovered) == content(state(4, vote=1))
    assert recovered.sequence == 2
    sb.close()
    again = Superblock.open(real_fs)
    assert again.load() == recovered
    assert again.intact


def test_all_copies_damaged_is_corruption(real_fs: RealFileSystem) -> None:
    sb = Superblock.open(real_fs)
    asyncio.run(sb.write(state(1)))
    sb.close()
    for copy in range(4):
        edit(real_fs, copy * SLOT + 40, b"\x01\x02\x03")
    with pytest.raises(CorruptionError, match="no valid superblock copy") as info:
        Superblock.open(real_fs).load()
    assert info.value.path.endswith("superblock")


def test_wrong_magic_is_format_error(real_fs: RealFileSystem) -> None:
    sb = Superblock.open(real_fs)
    asyncio.run(sb.write(state(1)))
    sb.close()
    for copy in range(4):
        edit(real_fs, copy * SLOT, b"NOTSUPER")
    with pytest.raises(FormatError, match="not a Mox superblock"):
        Superblock.open(real_fs).load()


def test_future_version_is_format_error(real_fs: RealFileSystem) -> None:
    sb = Superblock.open(real_fs)
    asyncio.run(sb.write(state(1)))
    sb.close()
    path = os.path.join(real_fs.root, "superblock")
    with open(path, "rb") as handle:
        slot = bytearray(handle.read(SLOT))
    length = struct.unpack_from("<I", slot, 24)[0]
    slot[8:12] = struct.pack("<I", 42)
    hasher = xxhash.xxh3_64(bytes(slot[:32]))
    hasher.update(bytes(slot[40 : 40 + length]))
    slot[32:40] = struct.pack("<Q", hasher.intdigest())
    edit(real_fs, 0, bytes(slot))
    with pytest.raises(FormatError, match="unsupported superblock version"):
        Superblock.open(real_fs).load()


def test_other_node_or_cluster_is_refused(real_fs: RealFileSystem) -> None:
    sb = Superblock.open(real_fs, cluster_id="c1", node_id=1)
    asyncio.run(sb.write(state(1)))
    sb.close()
    with pytest.raises(DataDirError, match="belongs to node 1 of cluster 'c1', not node 2"):
        Superblock.open(real_fs, cluster_id="c1", node_id=2).load()
    with pytest.raises(DataDirError, match="not node 1 of cluster 'c9'"):
        Superblock.open(real_fs, cluster_id="c9", node_id=1).load()


def test_bad_arguments() -> None:
    disk = SimDisk(random.Random(1))
    fs = disk.filesystem()
    with pytest.raises(ValueError, match="copies must be an even number"):
        Superblock.open(fs, copies=3)
    sb = Superblock.open(fs, cluster_id="c1", node_id=1, slot_size_bytes=512)
    with pytest.raises(ValueError, match="does not fit a slot"):
        run_virtual(sb.write(state(1, extra=bytes(1000))))
    with pytest.raises(ValueError, match="node_id 2 != 1"):
        run_virtual(sb.write(SuperblockState(cluster_id="c1", node_id=2)))


def test_unsynced_create_can_vanish_but_a_completed_write_cannot() -> None:
    disk = SimDisk(random.Random(5))

    async def go() -> None:
        sb = Superblock.open(disk.filesystem("n"))
        await sb.write(state(3))

    run_virtual(go())
    disk.crash()
    loaded = Superblock.open(disk.filesystem("n")).load()
    assert loaded is not None and loaded.term == 3


class SuperblockMachine(RuleBasedStateMachine):
    """Writes, crashes mid-write, torn writes, bit flips at rest: after `recover`, the newest
    acknowledged state, or the one in flight at the crash, loads; never an older one. A
    state that `recover` returned counts as acknowledged from then on."""

    FAULTS = DiskFaults(torn_write_probability=0.6, bit_flip_at_rest_probability=0.3)

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.acked: SuperblockState | None = None
        self.flips_since_write = 0

    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        self.disk = SimDisk(random.Random(seed), self.FAULTS)
        self.sb = Superblock.open(self.disk.filesystem("n1"), cluster_id="c1", node_id=1)
        assert self.sb.load() is None

    def teardown(self) -> None:
        self.loop.close()

    def _flips(self) -> int:
        return sum(1 for kind, path, _ in self.disk.fault_log if kind == "bit_flip_at_rest")

    @rule(term=st.integers(0, 2**40), vote=st.integers(0, 9), extra=st.binary(max_size=200))
    def write(self, term: int, vote: int, extra: bytes) -> None:
        new = state(term, vote=vote, extra=extra, members=[1, 2, 3])
        written = self.loop.run_until_complete(self.sb.write(new))
        assert written.sequence == self.sb.sequence
        self.acked = new
        self.flips_since_write = 0

    @rule(term=st.integers(0, 2**40), steps=st.integers(0, 8))
    def crash_during_write(self, term: int, steps: int) -> None:
        new = state(term, commit=steps)
        task = self.loop.create_task(self.sb.write(new))
        for _ in range(steps):
            self.loop.run_until_complete(asyncio.sleep(0))
        done = task.done() and task.exception() is None
        self._crash_and_load(in_flight=None if done else new)
        task.cancel()
        self.loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        if done:
            self.acked = new

    @rule()
    def crash(self) -> None:
        self._crash_and_load(in_flight=None)

    def _crash_and_load(self, in_flight: SuperblockState | None) -> None:
        before = self._flips()
        self.disk.crash()
        self.flips_since_write += self._flips() - before
        self.sb = Superblock.open(self.disk.filesystem("n1"), cluster_id="c1", node_id=1)
        try:
            loaded = self.loop.run_until_complete(self.sb.recover())
        except CorruptionError:
            # One damaged copy never loses a written state; with nothing ever written, one
            # flipped bit leaves only garbage, and garbage is reported, not taken as "fresh".
            assert self.flips_since_write >= 2 or (self.acked is None and self.flips_since_write), (
                "one damaged copy must never lose the state"
            )
            self.disk = SimDisk(random.Random(0), self.FAULTS)
            self.sb = Superblock.open(self.disk.filesystem("n1"), cluster_id="c1", node_id=1)
            self.sb.load()
            self.acked = None
            self.flips_since_write = 0
            return
        assert self.sb.intact
        self.flips_since_write = 0  # every copy now holds the newest state
        allowed = [content(self.acked)]
        if in_flight is not None:
            allowed.append(content(in_flight))
            if loaded is not None and content(loaded) == content(in_flight):
                self.acked = in_flight
                self.flips_since_write = 0
        assert content(loaded) in allowed, (content(loaded), allowed)

    @precondition(lambda self: self.acked is not None)
    @rule()
    def load_is_acked(self) -> None:
        loaded = self.sb.load()
        assert content(loaded) == content(self.acked)


TestSuperblockCrashes = SuperblockMachine.TestCase
TestSuperblockCrashes.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
