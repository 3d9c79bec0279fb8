"""Real files through both backends, the io_uring ring itself, clock and randomness."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any

import pytest

from mox.errors import ConfigError, DataDirError
from mox.io.interfaces import Clock, File, FileSystem
from mox.io.interfaces import Random as RandomProtocol
from mox.io.real import AUTO_URING_SPEEDUP_MIN, RealClock, RealFileSystem, RealRandom, race_backends
from mox.io.uring import UringRing, probe_ring


def uring_or_skip(path: str) -> None:
    ring, reason = probe_ring(path)
    if ring is None:
        pytest.skip(f"io_uring unavailable here: {reason}")
    ring.close()


@pytest.fixture(params=["pwrite", "io_uring"])
def fs(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "io_uring":
        uring_or_skip(str(tmp_path))
    filesystem = RealFileSystem(str(tmp_path / "root"), backend=request.param)
    assert filesystem.backend == request.param
    yield filesystem
    filesystem.close()


def test_protocols_are_implemented(fs: RealFileSystem) -> None:
    assert isinstance(fs, FileSystem)
    f = fs.open("x", create=True)
    assert isinstance(f, File)
    f.close()
    assert isinstance(RealClock(), Clock)
    assert isinstance(RealRandom(), RandomProtocol)


def test_file_operations(fs: RealFileSystem) -> None:
    fs.mkdir("a/b")
    f = fs.open("a/b/data", create=True)
    f.allocate(8192)
    assert f.size() == 8192
    assert f.pread(0, 16) == bytes(16)

    async def go() -> None:
        await f.write_sync([(0, b"hello "), (6, memoryview(b"world")), (4096, b"page")])
        f.pwrite(100, b"buffered")
        await f.sync()
        await fs.sync_dir("a/b")

    asyncio.run(go())
    assert f.pread(0, 11) == b"hello world"
    assert f.pread(4096, 4) == b"page"
    assert f.pread(100, 8) == b"buffered"
    assert f.pread(8190, 100) == b"\x00\x00"  # short only at end of file
    f.truncate(10)
    assert f.size() == 10
    f.close()
    with open(os.path.join(fs.root, "a/b/data"), "rb") as handle:
        assert handle.read() == b"hello worl"
    assert fs.exists("a/b/data")
    assert fs.listdir("a") == ["b"]
    fs.rename("a/b/data", "a/b/moved")
    assert fs.listdir("a/b") == ["moved"]
    fs.remove("a/b/moved")
    assert not fs.exists("a/b/moved")
    with pytest.raises(FileNotFoundError):
        fs.open("missing")


def test_many_writes_in_one_write_sync(fs: RealFileSystem) -> None:
    f = fs.open("many", create=True)
    writes = [(i * 512, bytes([i % 251]) * 512) for i in range(700)]  # more than a ring holds
    writes += [(700 * 512 + i, b"z") for i in range(300)]  # contiguous: coalesced

    asyncio.run(f.write_sync(writes))
    assert f.pread(0, 512) == bytes(512)
    assert f.pread(699 * 512, 512) == bytes([699 % 251]) * 512
    assert f.pread(700 * 512, 300) == b"z" * 300
    f.close()


def test_concurrent_write_syncs_complete_independently(fs: RealFileSystem) -> None:
    files = [fs.open(f"f{i}", create=True) for i in range(8)]

    async def go() -> None:
        await asyncio.gather(
            *(f.write_sync([(j * 100, b"%d" % j * 100) for j in range(5)]) for f in files)
        )

    asyncio.run(go())
    for f in files:
        assert f.pread(400, 3) == b"444"
        f.close()


def test_io_uring_error_names_the_file(tmp_path: Any) -> None:
    uring_or_skip(str(tmp_path))
    path = tmp_path / "readonly"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    ring = UringRing()
    try:
        with pytest.raises(OSError) as info:
            ring.write_sync_blocking(fd, str(path), [(0, b"x" * 10)])
        assert info.value.filename == str(path)
        assert "at offset 0" in str(info.value)

        async def go() -> None:
            await ring.write_sync(fd, str(path), [(4096, b"y")])

        with pytest.raises(OSError, match="readonly"):
            asyncio.run(go())
        assert ring.inflight_count == 0
        # The ring still works after errors: no stale slot is resubmitted.
        ok = os.open(tmp_path / "ok", os.O_RDWR | os.O_CREAT)
        ring.write_sync_blocking(ok, "ok", [(0, b"fine")])
        assert os.pread(ok, 4, 0) == b"fine"
        os.close(ok)
    finally:
        os.close(fd)
        ring.close()


def test_bad_write_arguments_never_reach_the_ring(tmp_path: Any) -> None:
    uring_or_skip(str(tmp_path))
    ring = UringRing()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(ValueError, match="non-negative"):
            ring.write_sync_blocking(fd, "f", [(-1, b"x")])
        with pytest.raises(TypeError, match="bytes-like"):
            ring.write_sync_blocking(fd, "f", [(0, "text")])  # type: ignore[list-item]
        ring.write_sync_blocking(fd, "f", [(0, b"good")])
        assert os.pread(fd, 8, 0) == b"good"
    finally:
        os.close(fd)
        ring.close()


def test_backend_choice_is_logged_and_exposed(tmp_path: Any, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="mox.io"):
        fs = RealFileSystem(str(tmp_path), backend="auto")
    assert fs.backend in ("io_uring", "pwrite")
    assert any(f"io backend {fs.backend}" in r.getMessage() for r in caplog.records)
    fs.close()
    with pytest.raises(ConfigError) as info:
        RealFileSystem(str(tmp_path), backend="aio")
    assert info.value.key == "storage.io_backend"


def test_auto_backend_follows_the_logged_race(tmp_path: Any, caplog: Any) -> None:
    ring, reason = probe_ring(str(tmp_path))
    with caplog.at_level(logging.INFO, logger="mox.io"):
        fs = RealFileSystem(str(tmp_path), backend="auto")
    fs.close()
    if ring is None:
        assert fs.backend == "pwrite"
        assert reason in caplog.text
        return
    uring_s, pwrite_s = race_backends(str(tmp_path), ring)
    ring.close()
    assert uring_s > 0 and pwrite_s > 0
    match = re.search(r"race: io_uring (\d+) us, pwrite (\d+) us", caplog.text)
    assert match is not None, caplog.text
    uring_us, pwrite_us = int(match.group(1)), int(match.group(2))
    if pwrite_us >= AUTO_URING_SPEEDUP_MIN * uring_us + 1:
        assert fs.backend == "io_uring"
    elif pwrite_us + 1 < AUTO_URING_SPEEDUP_MIN * uring_us:
        assert fs.backend == "pwrite"


def test_blocking_sync_says_whether_durable_writes_suspend(tmp_path: Any) -> None:
    fs = RealFileSystem(str(tmp_path / "p"), backend="pwrite")
    assert fs.blocking_sync
    fs.close()
    ring, _reason = probe_ring(str(tmp_path))
    if ring is None:
        return
    ring.close()
    for fsync, blocking in ((True, False), (False, True)):
        fs = RealFileSystem(str(tmp_path / str(fsync)), backend="io_uring", fsync=fsync)
        assert fs.blocking_sync is blocking
        fs.close()


def test_real_clock_and_random() -> None:
    clock = RealClock()
    a = clock.monotonic_ns()
    assert clock.monotonic_ns() >= a
    assert clock.wall_ns() > 1_600_000_000 * 10**9
    seeded = [RealRandom(3).randrange(0, 1000) for _ in range(2)]
    assert seeded[0] == seeded[1]
    assert RealRandom(3).randbytes(4) == RealRandom(3).randbytes(4)
    assert len(RealRandom().randbytes(16)) == 16


def test_unusable_root_is_a_data_dir_error(tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataDirError, match="cannot create directory") as info:
        RealFileSystem(str(blocker / "sub"), backend="pwrite")
    assert info.value.path == str(blocker / "sub")


def test_fsync_off_skips_every_sync(tmp_path: Any, monkeypatch: Any) -> None:
    calls: list[int] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def counting_fdatasync(fd: int) -> None:
        calls.append(fd)
        real_fdatasync(fd)

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    for fsync in (True, False):
        calls.clear()
        fs = RealFileSystem(str(tmp_path / str(fsync)), backend="pwrite", fsync=fsync)
        assert fs.fsync is fsync
        f = fs.open("x", create=True)
        asyncio.run(f.write_sync([(0, b"data")]))
        asyncio.run(f.sync())
        asyncio.run(fs.sync_dir())
        assert f.pread(0, 4) == b"data"
        f.close()
        assert len(calls) == (3 if fsync else 0)


def test_ring_close_waits_for_batches_in_flight(tmp_path: Any) -> None:
    uring_or_skip(str(tmp_path))
    ring = UringRing()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(ring.write_sync(fd, "f", [(0, b"q" * 65536)]))
        loop.run_until_complete(asyncio.sleep(0))  # submitted, maybe not completed
        ring.close()  # must wait for the kernel to finish with the buffer
        assert ring.inflight_count == 0
        assert os.pread(fd, 65536, 0) == b"q" * 65536
        loop.run_until_complete(task)
    finally:
        loop.close()
        os.close(fd)


def test_failed_preparation_leaves_no_write_behind(tmp_path: Any) -> None:
    uring_or_skip(str(tmp_path))
    ring = UringRing()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        strided = memoryview(b"abcdef")[::2]  # bytes-like, but not one contiguous buffer
        with pytest.raises(TypeError):
            ring.write_sync_blocking(fd, "f", [(0, b"good"), (100, strided)])
        assert ring.inflight_count == 0
        ring.write_sync_blocking(fd, "f", [(200, b"next")])
        # The first write of the failed batch never ran: only "next" is in the file.
        assert os.pread(fd, 204, 0) == bytes(200) + b"next"
        assert ring.inflight_count == 0
    finally:
        os.close(fd)
        ring.close()
