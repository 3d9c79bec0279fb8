"""The real side of the IO seam: the system clock, OS randomness, files with fdatasync.

`sync` runs `os.fdatasync` inline on the event loop thread: measured on this machine, a hop to
a worker thread costs more than the ~100 µs it would free the loop for, and group commit keeps
the number of syncs low. With `backend="io_uring"` the durable paths (`write_sync`, `sync`)
go through one io_uring ring (linked writes + fdatasync in one submission, completions through
an eventfd); plain reads and buffered writes stay `os.pread`/`os.pwrite`.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence

from mox.errors import ConfigError, DataDirError
from mox.io.rng import StdRandom
from mox.io.uring import UringRing, probe_ring

__all__ = ["BACKENDS", "RealClock", "RealFile", "RealFileSystem", "RealRandom", "race_backends"]

BACKENDS = ("auto", "io_uring", "pwrite")
# `auto` picks io_uring only if its write+fdatasync is at least this much faster than
# pwrite+fdatasync in the start-up race: the race times the ring without the event loop,
# and the asyncio path adds an eventfd wakeup and two loop iterations to it (a WAL commit
# over io_uring measured 38 us of CPU on tmpfs against 9 us over pwrite).
AUTO_URING_SPEEDUP_MIN = 1.25
AUTO_RACE_ROUNDS = 4
AUTO_RACE_WRITE_SIZE_BYTES = 4096

_log = logging.getLogger("mox.io")


class RealClock:
    """`time.monotonic_ns` and `time.time_ns`."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ns(self) -> int:
        return time.time_ns()


class RealRandom(StdRandom):
    """OS randomness (`random.SystemRandom`), or a seeded `random.Random` for repeatable tools."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(random.SystemRandom() if seed is None else random.Random(seed))


class RealFile:
    """An open file descriptor. Every operation names the file in its OSError."""

    def __init__(self, path: str, fd: int, ring: UringRing | None, *, fsync: bool = True) -> None:
        assert fd >= 0
        self._path = path
        self._fd = fd
        self._ring = ring
        self._fsync = fsync

    @property
    def path(self) -> str:
        return self._path

    @property
    def fd(self) -> int:
        return self._fd

    def _check_open(self) -> None:
        if self._fd < 0:
            raise OSError(9, "file is closed", self._path)

    def size(self) -> int:
        self._check_open()
        return os.fstat(self._fd).st_size

    def pread(self, offset: int, length: int) -> bytes:
        assert offset >= 0
        assert length >= 0
        self._check_open()
        data = os.pread(self._fd, length, offset)
        if len(data) == length or not data:
            return data
        # A short read before EOF is legal for pread: keep reading until EOF or enough.
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(self._fd, length - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        assert offset >= 0
        self._check_open()
        view = memoryview(data)
        written = 0
        while written < len(view):
            n = os.pwrite(self._fd, view[written:], offset + written)
            assert n > 0
            written += n
        assert written == len(view)

    async def sync(self) -> None:
        self._check_open()
        if not self._fsync:
            return
        if self._ring is not None:
            await self._ring.fsync(self._fd, self._path)
        else:
            os.fdatasync(self._fd)

    async def write_sync(self, writes: Sequence[tuple[int, bytes | memoryview]]) -> None:
        self._check_open()
        if self._ring is not None and self._fsync:
            await self._ring.write_sync(self._fd, self._path, writes)
            return
        fd = self._fd
        for offset, data in writes:
            # One pwrite per write; the loop in `pwrite` only for a short write.
            if os.pwrite(fd, data, offset) != len(data):
                self.pwrite(offset, data)
        if self._fsync:
            os.fdatasync(fd)

    def write_sync_blocking(self, writes: Sequence[tuple[int, bytes | memoryview]]) -> None:
        """`write_sync` without an event loop (benchmarks and offline tools)."""
        self._check_open()
        if not self._fsync:
            for offset, data in writes:
                self.pwrite(offset, data)
            return
        if self._ring is not None:
            self._ring.write_sync_blocking(self._fd, self._path, writes)
            return
        for offset, data in writes:
            self.pwrite(offset, data)
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        assert size >= 0
        self._check_open()
        os.ftruncate(self._fd, size)

    def allocate(self, size: int) -> None:
        assert size >= 0
        self._check_open()
        if size > 0:
            os.posix_fallocate(self._fd, 0, size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def race_backends(
    directory: str, ring: UringRing, *, rounds: int = AUTO_RACE_ROUNDS
) -> tuple[float, float]:
    """Median seconds of one 4 KiB write + fdatasync through `ring` and through
    os.pwrite + os.fdatasync, interleaved `rounds` times in a temporary file of `directory`
    (interleaving, so that both see the same disk and load)."""
    assert rounds >= 1
    data = b"\x5a" * AUTO_RACE_WRITE_SIZE_BYTES
    uring_s: list[float] = []
    pwrite_s: list[float] = []
    with tempfile.TemporaryFile(dir=directory) as probe:
        fd = probe.fileno()
        os.posix_fallocate(fd, 0, 2 * rounds * len(data))
        os.fsync(fd)
        for index in range(rounds):
            offset = 2 * index * len(data)
            started = time.perf_counter()
            ring.write_sync_blocking(fd, "<io backend race>", [(offset, data)])
            uring_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            os.pwrite(fd, data, offset + len(data))
            os.fdatasync(fd)
            pwrite_s.append(time.perf_counter() - started)
    return statistics.median(uring_s), statistics.median(pwrite_s)


class RealFileSystem:
    """A directory of real files. `backend`: "auto" | "io_uring" | "pwrite".

    "auto" probes an io_uring ring (one write + fdatasync in `root`); if the kernel allows
    one, it races the two backends (`race_backends`: 4 interleaved 4 KiB write+fdatasync
    each) and keeps io_uring only if it was AUTO_URING_SPEEDUP_MIN times faster, else
    pwrite + fdatasync; the choice and the race's medians are logged once and exposed as
    `backend`. "io_uring" raises ConfigError (key storage.io_backend) if no ring works.
    A root that cannot be created or written raises DataDirError. `fsync=False`
    (`[storage] fsync = false`, for throwaway dev clusters) turns every sync into a no-op.
    """

    def __init__(self, root: str, *, backend: str = "auto", fsync: bool = True) -> None:
        if backend not in BACKENDS:
            raise ConfigError(
                "storage.io_backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as exc:
            raise DataDirError(root, f"cannot create directory: {exc.strerror}") from None
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            raise DataDirError(root, "directory is not readable and writable by this user")
        self._root = os.path.abspath(root)
        self._ring: UringRing | None = None
        self._fsync = fsync
        if not fsync:
            _log.warning("fsync is off for %s: nothing written there survives a power loss", root)
        if backend == "pwrite":
            self._backend = "pwrite"
            reason = "configured"
        else:
            ring, reason = probe_ring(self._root)
            if ring is None and backend == "io_uring":
                raise ConfigError("storage.io_backend", f"io_uring requested but {reason}")
            if ring is not None and backend == "auto":
                ring, reason = self._race(ring, reason)
            self._ring = ring
            self._backend = "io_uring" if ring is not None else "pwrite"
        _log.info("io backend %s for %s (%s: %s)", self._backend, self._root, backend, reason)

    def _race(self, ring: UringRing, reason: str) -> tuple[UringRing | None, str]:
        """Keep `ring` only if it beats pwrite + fdatasync clearly (see the class doc)."""
        try:
            uring_s, pwrite_s = race_backends(self._root, ring)
        except OSError as exc:
            ring.close()
            return None, f"{reason}, but the backend race failed: {exc}"
        race = (
            f"{reason}; race: io_uring {uring_s * 1e6:.0f} us, pwrite {pwrite_s * 1e6:.0f} us"
            f" per 4 KiB write+fdatasync (median of {AUTO_RACE_ROUNDS})"
        )
        if pwrite_s >= AUTO_URING_SPEEDUP_MIN * uring_s:
            return ring, race
        ring.close()
        return None, race + f", io_uring not {AUTO_URING_SPEEDUP_MIN}x faster"

    @property
    def root(self) -> str:
        return self._root

    @property
    def fsync(self) -> bool:
        """False when syncs are no-ops (`[storage] fsync = false`)."""
        return self._fsync

    @property
    def backend(self) -> str:
        """The backend in use: "io_uring" or "pwrite"."""
        return self._backend

    @property
    def blocking_sync(self) -> bool:
        """True when `write_sync`/`sync` of this file system's files never suspend (pwrite
        backend, or fsync off): they block the loop for the syscall instead. The WAL then
        flushes in the committing task (see mox/storage/wal.py)."""
        return self._ring is None or not self._fsync

    def close(self) -> None:
        """Release the io_uring ring (files opened from here must be closed first)."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def _full(self, name: str) -> str:
        # Names are relative and stay inside root: a bug elsewhere must not escape it.
        assert not os.path.isabs(name), name
        assert ".." not in name.split("/"), name
        return os.path.join(self._root, name) if name else self._root

    def open(self, name: str, *, create: bool = False) -> RealFile:
        assert name
        path = self._full(name)
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o644)
        return RealFile(path, fd, self._ring, fsync=self._fsync)

    def exists(self, name: str) -> bool:
        return os.path.exists(self._full(name))

    def listdir(self, name: str = "") -> list[str]:
        return sorted(os.listdir(self._full(name)))

    def mkdir(self, name: str) -> None:
        os.makedirs(self._full(name), exist_ok=True)

    def remove(self, name: str) -> None:
        os.unlink(self._full(name))

    def rename(self, src: str, dst: str) -> None:
        os.replace(self._full(src), self._full(dst))

    async def sync_dir(self, name: str = "") -> None:
        if not self._fsync:
            return
        fd = os.open(self._full(name), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
