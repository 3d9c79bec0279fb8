"""The simulated side of the IO seam: a disk with faults, virtual clocks, seeded randomness.

Theory of operation of `SimDisk`:

* Every file (inode) has a durable image (what survives a crash) and a volatile image (what
  reads see). Writes, truncates and allocations change the volatile image at once and are
  queued as pending operations. `sync` makes the operations issued before it durable, in
  order, after a simulated latency (`await asyncio.sleep`, virtual on VirtualTimeLoop).
* Names live in directories. A create, rename or remove changes the volatile namespace at
  once and is queued in its directory's log; `sync_dir` makes that log durable. On a crash
  each directory keeps a random prefix of its unsynced log (journals commit in order).
* `crash()` invalidates every open file, then rebuilds each file from its durable image
  plus, for every unsynced write, either nothing (lost) or, with `torn_write_probability`,
  a random subset of its 512-byte sectors (a torn write). With
  `bit_flip_at_rest_probability` one bit of the file's durable bytes flips.
* `bit_flip_on_read_probability` flips one bit of the bytes a `pread` returns (the stored
  bytes stay intact, as with a transient media/bus error). `misdirected_write_probability`
  sends a write a few sectors away from where it was aimed (and leaves the target alone);
  files under `misdirect_excluded_prefixes` are never misdirected.
* `corrupt_sector(path, rng)` damages a file while the node runs: one bit of the stored
  bytes flips (a latent sector error). Reads see it too unless the page cache holds newer
  bytes there (an unsynced write over it).

Every draw comes from the one `random.Random` handed in, in an order fixed by the calls
made: one seed, one sequence of faults. The corruption draws (flips on read, misdirected
writes) may come from a second one (`fault_rng`), so that switching them on leaves every
other draw (latencies, torn and lost writes) where it was. Injected faults are counted in `fault_counts` and
logged with their place in `fault_log` for the simulator's summary and for tests.
"""

from __future__ import annotations

import asyncio
import errno
import posixpath
import random
from collections.abc import Sequence

import attrs

from mox.io.rng import StdRandom

__all__ = [
    "FAULT_KINDS",
    "DiskFaults",
    "SimClock",
    "SimDisk",
    "SimFile",
    "SimFileSystem",
    "SimRandom",
]

SECTOR_SIZE_BYTES = 512

FAULT_KINDS = (
    "lost_write",
    "torn_write",
    "bit_flip_at_rest",
    "bit_flip_on_read",
    "misdirected_write",
    "lost_dir_op",
    "corrupt_sector",
)


def _probability(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value}")


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


@attrs.frozen
class DiskFaults:
    """Fault options of a simulated disk. Probabilities are per operation (per write, per
    read, per file at a crash); latencies are seconds of virtual time per sync."""

    torn_write_probability: float = attrs.field(default=0.0, validator=_probability)
    bit_flip_at_rest_probability: float = attrs.field(default=0.0, validator=_probability)
    bit_flip_on_read_probability: float = attrs.field(default=0.0, validator=_probability)
    misdirected_write_probability: float = attrs.field(default=0.0, validator=_probability)
    # Paths (relative to the disk) starting with one of these are never misdirected.
    misdirect_excluded_prefixes: tuple[str, ...] = ()
    sync_latency_s_min: float = attrs.field(default=0.0001, validator=_non_negative)
    sync_latency_s_max: float = attrs.field(default=0.001, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.sync_latency_s_min > self.sync_latency_s_max:
            raise ValueError(
                f"sync_latency_s_min ({self.sync_latency_s_min}) must be <= "
                f"sync_latency_s_max ({self.sync_latency_s_max})"
            )


class _Image:
    """File contents with a logical size; bytes past `len(data)` up to `size` are zeros.

    Keeping preallocated space implicit makes a 64 MiB preallocated segment cost nothing.
    """

    __slots__ = ("data", "size")

    def __init__(self) -> None:
        self.data = bytearray()
        self.size = 0

    def copy(self) -> _Image:
        other = _Image()
        other.data = bytearray(self.data)
        other.size = self.size
        return other

    def write(self, offset: int, data: bytes) -> None:
        assert offset >= 0
        end = offset + len(data)
        if len(self.data) < offset:
            self.data.extend(bytes(offset - len(self.data)))
        self.data[offset:end] = data
        self.size = max(self.size, end)
        assert len(self.data) <= self.size

    def truncate(self, size: int) -> None:
        assert size >= 0
        del self.data[size:]
        self.size = size

    def allocate(self, size: int) -> None:
        self.size = max(self.size, size)

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        chunk = bytes(self.data[offset:end])
        return chunk + bytes(end - offset - len(chunk))

    def apply(self, op: _Op) -> None:
        kind, offset, data = op
        if kind == "write":
            self.write(offset, data)
        elif kind == "truncate":
            self.truncate(offset)
        else:
            assert kind == "allocate"
            self.allocate(offset)


# (kind, offset or size, data): kind is "write", "truncate" or "allocate".
_Op = tuple[str, int, bytes]


class _Inode:
    __slots__ = ("durable", "pending", "volatile")

    def __init__(self) -> None:
        self.durable = _Image()
        self.volatile = _Image()
        self.pending: list[_Op] = []


# A directory log entry: ("link", name, inode) or ("unlink", name, None).
_DirOp = tuple[str, str, _Inode | None]


class SimDisk:
    """One node's disk. Hand out file systems with `filesystem()`, crash it with `crash()`."""

    def __init__(
        self,
        rng: random.Random,
        faults: DiskFaults = DiskFaults(),
        *,
        fault_rng: random.Random | None = None,
    ) -> None:
        self._rng = rng
        self._fault_rng = fault_rng if fault_rng is not None else rng
        self.faults = faults
        # Full path -> inode. Volatile is what the running node sees; durable survives a crash.
        self._volatile: dict[str, _Inode] = {}
        self._durable: dict[str, _Inode] = {}
        self._directories: dict[str, None] = {"": None}
        self._dir_logs: dict[str, list[_DirOp]] = {}
        self.generation = 0
        self.fault_counts: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}
        self.fault_log: list[tuple[str, str, int]] = []
        self.crash_count = 0

    def filesystem(self, root: str = "") -> SimFileSystem:
        return SimFileSystem(self, root)

    # -- faults ------------------------------------------------------------------------

    def _fault(self, kind: str, path: str, offset: int) -> None:
        assert kind in self.fault_counts
        self.fault_counts[kind] += 1
        self.fault_log.append((kind, path, offset))

    def _maybe_flip_on_read(self, path: str, offset: int, data: bytes) -> bytes:
        p = self.faults.bit_flip_on_read_probability
        if not data or p <= 0 or self._fault_rng.random() >= p:
            return data
        bit = self._fault_rng.randrange(0, len(data) * 8)
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        self._fault("bit_flip_on_read", path, offset + bit // 8)
        return bytes(flipped)

    def _maybe_misdirect(self, path: str, inode: _Inode, offset: int, length: int) -> int:
        p = self.faults.misdirected_write_probability
        if p <= 0 or path.startswith(self.faults.misdirect_excluded_prefixes):
            return offset
        if self._fault_rng.random() >= p:
            return offset
        shift_sectors = self._fault_rng.choice((-8, -4, -2, -1, 1, 2, 4, 8))
        target = max(0, offset + shift_sectors * SECTOR_SIZE_BYTES)
        if target == offset:
            target = offset + SECTOR_SIZE_BYTES
        self._fault("misdirected_write", path, offset)
        return target

    def crash(self) -> None:
        """Power loss: open files die; only synced bytes and synced names survive (mostly)."""
        self.generation += 1
        self.crash_count += 1
        # Names: each directory keeps a random prefix of its unsynced log.
        for log in self._dir_logs.values():
            keep = self._rng.randrange(0, len(log) + 1) if log else 0
            for kind, name, inode in log[:keep]:
                self._apply_dir_op(self._durable, kind, name, inode)
            for _kind, path, _inode in log[keep:]:
                self._fault("lost_dir_op", path, 0)
        self._dir_logs = {}
        # Contents: durable image plus lost or torn pending writes, then rot.
        seen: set[int] = set()
        for path, inode in list(self._volatile.items()) + list(self._durable.items()):
            if id(inode) in seen:
                continue
            seen.add(id(inode))
            self._crash_inode(path, inode)
        self._volatile = dict(self._durable)

    def _crash_inode(self, path: str, inode: _Inode) -> None:
        image = inode.durable
        for kind, offset, data in inode.pending:
            if kind != "write":
                # Size changes are metadata: like names, they survive only with luck.
                if self._rng.random() < 0.5:
                    image.apply((kind, offset, data))
                continue
            p = self.faults.torn_write_probability
            if p > 0 and self._rng.random() < p:
                self._fault("torn_write", path, offset)
                self._apply_torn(image, offset, data)
            else:
                self._fault("lost_write", path, offset)
        inode.pending = []
        p = self.faults.bit_flip_at_rest_probability
        if image.size > 0 and p > 0 and self._rng.random() < p:
            bit = self._rng.randrange(0, image.size * 8)
            position = bit // 8
            current = image.read(position, 1)
            image.write(position, bytes([current[0] ^ (1 << (bit % 8))]))
            self._fault("bit_flip_at_rest", path, position)
        inode.volatile = image.copy()

    def _apply_torn(self, image: _Image, offset: int, data: bytes) -> None:
        """Apply a random subset of the sectors `data` covers (at least one, maybe all)."""
        end = offset + len(data)
        first_sector = offset // SECTOR_SIZE_BYTES
        last_sector = (end - 1) // SECTOR_SIZE_BYTES
        sectors = list(range(first_sector, last_sector + 1))
        chosen = [s for s in sectors if self._rng.random() < 0.5] or [self._rng.choice(sectors)]
        for sector in chosen:
            lo = max(offset, sector * SECTOR_SIZE_BYTES)
            hi = min(end, (sector + 1) * SECTOR_SIZE_BYTES)
            image.write(lo, data[lo - offset : hi - offset])

    # -- namespace ---------------------------------------------------------------------

    @staticmethod
    def _apply_dir_op(table: dict[str, _Inode], kind: str, path: str, inode: _Inode | None) -> None:
        if kind == "link":
            assert inode is not None
            table[path] = inode
        else:
            assert kind == "unlink"
            table.pop(path, None)

    def _log_dir_op(self, kind: str, path: str, inode: _Inode | None) -> None:
        directory = posixpath.dirname(path)
        self._dir_logs.setdefault(directory, []).append((kind, path, inode))
        self._apply_dir_op(self._volatile, kind, path, inode)

    def _sync_dir(self, directory: str) -> None:
        for kind, path, inode in self._dir_logs.pop(directory, []):
            self._apply_dir_op(self._durable, kind, path, inode)

    def _latency_s(self) -> float:
        lo, hi = self.faults.sync_latency_s_min, self.faults.sync_latency_s_max
        return lo if hi <= lo else self._rng.uniform(lo, hi)

    # -- inspection (tests and the simulator's summary) -------------------------------

    def durable_bytes(self, path: str) -> bytes:
        """The durable contents of `path` (full path on this disk)."""
        inode = self._durable[path]
        return inode.durable.read(0, inode.durable.size)

    def durable_paths(self) -> list[str]:
        """Every file that survives a crash, sorted (the simulator picks what to damage)."""
        return sorted(self._durable)

    def corrupt_sector(self, path: str, rng: random.Random) -> int | None:
        """Flip one random bit of `path`'s durable bytes (a latent sector error) and
        return its byte offset; None if the file is empty. The running node's reads see
        the damage unless an unsynced write holds newer bytes at that place."""
        inode = self._durable[path]
        durable = inode.durable
        if durable.size == 0:
            return None
        bit = rng.randrange(0, durable.size * 8)
        position = bit // 8
        mask = 1 << (bit % 8)
        before = durable.read(position, 1)
        cached = inode.volatile.read(position, 1)
        durable.write(position, bytes([before[0] ^ mask]))
        if cached == before:
            inode.volatile.write(position, bytes([cached[0] ^ mask]))
        assert durable.read(position, 1) != before
        self._fault("corrupt_sector", path, position)
        return position

    def flip_bit(self, path: str, bit_index: int) -> None:
        """Flip one bit of `path` in both images (a deterministic fault for tests)."""
        inode = self._volatile[path]
        for image in (inode.durable, inode.volatile):
            position = bit_index // 8
            assert position < image.size
            current = image.read(position, 1)
            image.write(position, bytes([current[0] ^ (1 << (bit_index % 8))]))
        self._fault("bit_flip_at_rest", path, bit_index // 8)


class SimFile:
    """A handle on a simulated file; dead (EBADF) after the disk crashes."""

    def __init__(self, disk: SimDisk, path: str, inode: _Inode) -> None:
        self._disk = disk
        self._path = path
        self._inode = inode
        self._generation = disk.generation
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    def _check(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "file is closed", self._path)
        if self._generation != self._disk.generation:
            raise OSError(errno.EBADF, "file handle lost in a crash", self._path)

    def size(self) -> int:
        self._check()
        return self._inode.volatile.size

    def pread(self, offset: int, length: int) -> bytes:
        assert offset >= 0
        assert length >= 0
        self._check()
        data = self._inode.volatile.read(offset, length)
        return self._disk._maybe_flip_on_read(self._path, offset, data)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        assert offset >= 0
        self._check()
        payload = bytes(data)
        if not payload:
            return
        target = self._disk._maybe_misdirect(self._path, self._inode, offset, len(payload))
        self._inode.volatile.write(target, payload)
        self._inode.pending.append(("write", target, payload))

    async def sync(self) -> None:
        self._check()
        # Only operations issued before the call are promised durable.
        count = len(self._inode.pending)
        await asyncio.sleep(self._disk._latency_s())
        self._check()
        inode = self._inode
        for op in inode.pending[:count]:
            inode.durable.apply(op)
        del inode.pending[:count]

    async def write_sync(self, writes: Sequence[tuple[int, bytes | memoryview]]) -> None:
        for offset, data in writes:
            self.pwrite(offset, data)
        await self.sync()

    def truncate(self, size: int) -> None:
        assert size >= 0
        self._check()
        self._inode.volatile.truncate(size)
        self._inode.pending.append(("truncate", size, b""))

    def allocate(self, size: int) -> None:
        assert size >= 0
        self._check()
        self._inode.volatile.allocate(size)
        self._inode.pending.append(("allocate", size, b""))

    def close(self) -> None:
        self._closed = True


class SimFileSystem:
    """The files of one node under `root` on a `SimDisk`."""

    def __init__(self, disk: SimDisk, root: str = "") -> None:
        self._disk = disk
        self._root = root.strip("/")
        self.mkdir("")

    @property
    def root(self) -> str:
        return self._root

    @property
    def blocking_sync(self) -> bool:
        # Simulated durable writes suspend for their latency in virtual time.
        return False

    @property
    def disk(self) -> SimDisk:
        return self._disk

    def _full(self, name: str) -> str:
        assert not name.startswith("/"), name
        assert ".." not in name.split("/"), name
        parts = [p for p in (self._root, name.strip("/")) if p]
        return "/".join(parts)

    def open(self, name: str, *, create: bool = False) -> SimFile:
        assert name
        path = self._full(name)
        inode = self._disk._volatile.get(path)
        if inode is None:
            if not create:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            parent = posixpath.dirname(path)
            if parent not in self._disk._directories:
                raise FileNotFoundError(errno.ENOENT, "no such directory", parent)
            inode = _Inode()
            self._disk._log_dir_op("link", path, inode)
        return SimFile(self._disk, path, inode)

    def exists(self, name: str) -> bool:
        path = self._full(name)
        return path in self._disk._volatile or path in self._disk._directories

    def listdir(self, name: str = "") -> list[str]:
        directory = self._full(name)
        if directory not in self._disk._directories:
            raise FileNotFoundError(errno.ENOENT, "no such directory", directory)
        prefix = directory + "/" if directory else ""
        names = {
            p[len(prefix) :].split("/", 1)[0] for p in self._disk._volatile if p.startswith(prefix)
        }
        names.update(
            d[len(prefix) :].split("/", 1)[0]
            for d in self._disk._directories
            if d.startswith(prefix) and d != directory
        )
        return sorted(names)

    def mkdir(self, name: str) -> None:
        # Directories are durable at once: Mox creates them only at setup, before any data.
        path = self._full(name)
        parts = path.split("/") if path else []
        for i in range(len(parts) + 1):
            self._disk._directories.setdefault("/".join(parts[:i]), None)

    def remove(self, name: str) -> None:
        path = self._full(name)
        if path not in self._disk._volatile:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        self._disk._log_dir_op("unlink", path, None)

    def rename(self, src: str, dst: str) -> None:
        src_path, dst_path = self._full(src), self._full(dst)
        inode = self._disk._volatile.get(src_path)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", src_path)
        if posixpath.dirname(dst_path) not in self._disk._directories:
            raise FileNotFoundError(errno.ENOENT, "no such directory", posixpath.dirname(dst_path))
        self._disk._log_dir_op("link", dst_path, inode)
        self._disk._log_dir_op("unlink", src_path, None)

    async def sync_dir(self, name: str = "") -> None:
        directory = self._full(name)
        generation = self._disk.generation
        count = len(self._disk._dir_logs.get(directory, []))
        await asyncio.sleep(self._disk._latency_s())
        if generation != self._disk.generation:
            raise OSError(errno.EBADF, "directory sync lost in a crash", directory)
        log = self._disk._dir_logs.get(directory, [])
        for kind, path, inode in log[:count]:
            SimDisk._apply_dir_op(self._disk._durable, kind, path, inode)
        del log[:count]


class SimClock:
    """Virtual time from the running loop (VirtualTimeLoop in the simulator), with drift.

    `drift_ppm` stretches this node's view of time (a node whose clock runs fast times out
    early); `wall_start_ns` is the wall-clock reading at virtual time zero.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        drift_ppm: float = 0.0,
        wall_start_ns: int = 1_800_000_000 * 10**9,
    ) -> None:
        assert -1_000_000 < drift_ppm < 1_000_000
        self._loop = loop
        self._rate = 1.0 + drift_ppm / 1_000_000
        self._wall_start_ns = wall_start_ns
        self._last_ns = 0

    def _loop_time_s(self) -> float:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return loop.time()

    def monotonic_ns(self) -> int:
        now_ns = max(self._last_ns, int(self._loop_time_s() * self._rate * 1e9))
        self._last_ns = now_ns
        return now_ns

    def wall_ns(self) -> int:
        return self._wall_start_ns + self.monotonic_ns()


class SimRandom(StdRandom):
    """The `Random` protocol over a seeded `random.Random` (a child of the run's RNG)."""
