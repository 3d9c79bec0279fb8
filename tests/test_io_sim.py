"""SimDisk semantics: what survives a crash, faults by seed, clocks and randomness."""

from __future__ import annotations

import asyncio
import errno
import random

import pytest

from mox.io.interfaces import Clock, File, FileSystem
from mox.io.interfaces import Random as RandomProtocol
from mox.io.sim import DiskFaults, SimClock, SimDisk, SimRandom
from mox.io.simloop import VirtualTimeLoop, run_virtual


def test_protocols_are_implemented() -> None:
    disk = SimDisk(random.Random(1))
    fs = disk.filesystem("n1")
    assert isinstance(fs, FileSystem)
    assert isinstance(fs.open("f", create=True), File)
    assert isinstance(SimClock(VirtualTimeLoop()), Clock)
    assert isinstance(SimRandom(random.Random(1)), RandomProtocol)


def test_synced_bytes_survive_unsynced_are_lost() -> None:
    disk = SimDisk(random.Random(1))

    async def go() -> None:
        fs = disk.filesystem("n1")
        f = fs.open("data", create=True)
        await f.write_sync([(0, b"durable!")])
        await fs.sync_dir()
        f.pwrite(8, b"volatile")
        assert f.pread(0, 16) == b"durable!volatile"
        assert f.size() == 16

    run_virtual(go())
    disk.crash()
    f = disk.filesystem("n1").open("data")
    assert f.pread(0, 100) == b"durable!"
    assert disk.fault_counts["lost_write"] == 1
    assert disk.fault_log == [("lost_write", "n1/data", 8)]


def test_handles_die_in_a_crash() -> None:
    disk = SimDisk(random.Random(1))
    f = disk.filesystem().open("x", create=True)
    disk.crash()
    with pytest.raises(OSError) as info:
        f.pread(0, 1)
    assert info.value.errno == errno.EBADF
    assert info.value.filename == "x"


def test_sync_started_before_a_crash_does_not_complete() -> None:
    disk = SimDisk(random.Random(1), DiskFaults(sync_latency_s_min=0.01, sync_latency_s_max=0.01))
    loop = VirtualTimeLoop()
    fs = disk.filesystem()
    f = fs.open("x", create=True)
    task = loop.create_task(f.write_sync([(0, b"abc")]))
    loop.run_until_complete(asyncio.sleep(0.001))
    disk.crash()
    with pytest.raises(OSError, match="lost in a crash"):
        loop.run_until_complete(task)
    loop.close()
    assert "x" not in disk.filesystem().listdir()  # the create was never dir-synced


def test_torn_write_keeps_a_subset_of_sectors() -> None:
    torn_seen = False
    for seed in range(20):
        disk = SimDisk(random.Random(seed), DiskFaults(torn_write_probability=1.0))

        async def go(d: SimDisk = disk) -> None:
            fs = d.filesystem()
            f = fs.open("x", create=True)
            await f.sync()
            await fs.sync_dir()
            f.pwrite(0, b"A" * 2048)

        run_virtual(go())
        disk.crash()
        data = disk.filesystem().open("x").pread(0, 2048)
        sectors = [data[i : i + 512] for i in range(0, len(data), 512)]
        for sector in sectors:
            assert sector in (b"A" * 512, b"\x00" * 512, b"")  # whole sectors only
        assert any(s == b"A" * 512 for s in sectors)  # at least one sector landed
        torn_seen |= len(data) < 2048 or any(s != b"A" * 512 for s in sectors)
    assert torn_seen


def test_directory_ops_need_sync_dir() -> None:
    disk = SimDisk(random.Random(3))

    async def go() -> None:
        fs = disk.filesystem()
        fs.mkdir("d")
        a = fs.open("d/a", create=True)
        await a.write_sync([(0, b"a")])
        await fs.sync_dir("d")
        b = fs.open("d/b", create=True)
        await b.write_sync([(0, b"b")])
        fs.rename("d/a", "d/c")
        # No sync_dir: the create of b and the rename may each be lost, in order.

    run_virtual(go())
    disk.crash()
    names = disk.filesystem().listdir("d")
    # The directory log was [link b, link c, unlink a]: a crash keeps a prefix of it.
    prefixes = [["a"], ["a", "b"], ["a", "b", "c"], ["b", "c"]]
    assert names in prefixes
    assert disk.fault_counts["lost_dir_op"] == 3 - prefixes.index(names)


def test_same_seed_same_faults() -> None:
    def run(seed: int) -> tuple[list[tuple[str, str, int]], bytes]:
        faults = DiskFaults(
            torn_write_probability=0.5,
            bit_flip_at_rest_probability=0.5,
            bit_flip_on_read_probability=0.2,
            misdirected_write_probability=0.2,
        )
        disk = SimDisk(random.Random(seed), faults)

        async def go() -> bytes:
            fs = disk.filesystem("n")
            f = fs.open("x", create=True)
            await fs.sync_dir()
            out = b""
            for i in range(20):
                f.pwrite(i * 700, bytes([i]) * 700)
                if i % 3 == 0:
                    await f.sync()
                out += f.pread(i * 100, 50)
            return out

        reads = run_virtual(go())
        disk.crash()
        return disk.fault_log, reads + disk.durable_bytes("n/x")

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_bit_flip_on_read_leaves_stored_bytes_intact() -> None:
    disk = SimDisk(random.Random(9), DiskFaults(bit_flip_on_read_probability=1.0))
    f = disk.filesystem().open("x", create=True)
    f.pwrite(0, b"\x00" * 64)
    first = f.pread(0, 64)
    assert sum(bin(b).count("1") for b in first) == 1
    disk.faults = DiskFaults()
    assert f.pread(0, 64) == b"\x00" * 64
    assert disk.fault_counts["bit_flip_on_read"] == 1


def test_preallocation_is_cheap_and_zero() -> None:
    disk = SimDisk(random.Random(1))
    f = disk.filesystem().open("big", create=True)
    f.allocate(1 << 30)
    assert f.size() == 1 << 30
    assert f.pread((1 << 30) - 4, 100) == b"\x00" * 4


def test_disk_faults_validate() -> None:
    with pytest.raises(ValueError, match="torn_write_probability must be in"):
        DiskFaults(torn_write_probability=1.5)
    with pytest.raises(ValueError, match="sync_latency_s_min"):
        DiskFaults(sync_latency_s_min=0.5, sync_latency_s_max=0.1)


def test_sim_clock_follows_virtual_time_with_drift() -> None:
    loop = VirtualTimeLoop()
    fast = SimClock(loop, drift_ppm=1000)
    exact = SimClock(loop)

    async def go() -> tuple[int, int]:
        await asyncio.sleep(10)
        return exact.monotonic_ns(), fast.monotonic_ns()

    exact_ns, fast_ns = loop.run_until_complete(go())
    loop.close()
    assert exact_ns == 10 * 10**9
    assert fast_ns == pytest.approx(10.01 * 10**9)
    assert exact.wall_ns() - exact_ns == 1_800_000_000 * 10**9


def test_sim_random_is_seeded() -> None:
    a, b = SimRandom(random.Random(5)), SimRandom(random.Random(5))
    assert [a.randrange(0, 100) for _ in range(5)] == [b.randrange(0, 100) for _ in range(5)]
    assert a.randbytes(8) == b.randbytes(8)
    assert 0 <= a.random() < 1
