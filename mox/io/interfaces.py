"""Protocols of the IO seam.

Rules every implementation follows:

* Reads and buffered writes are synchronous (`pread`, `pwrite`): they touch the page cache
  (real) or the simulated disk's volatile buffer (sim). Durability is asynchronous: `sync`
  and `write_sync` return only when the bytes are on stable storage. A crash loses every
  write that was not followed by a completed `sync` of the same file.
* Time is read from a `Clock`; sleeping uses asyncio (`asyncio.sleep`), whose loop is the
  real one in production and `mox.io.simloop.VirtualTimeLoop` in the simulator, so the same
  `await asyncio.sleep(x)` is virtual in simulation.
* Randomness comes only from a `Random` handed in. In the simulator every `Random` is
  derived from the one seeded RNG of the run.
* Nothing here iterates a `set` of `str` in a way that affects behaviour (string hashes are
  salted per process and would break seed reproducibility).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

NodeId = int


@runtime_checkable
class Clock(Protocol):
    """Monotonic and wall time. In simulation both are virtual (the wall clock may drift)."""

    def monotonic_ns(self) -> int:
        """Nanoseconds on a clock that never goes backwards."""
        ...

    def wall_ns(self) -> int:
        """Nanoseconds since the Unix epoch (for timestamps users see, never for ordering)."""
        ...


@runtime_checkable
class Random(Protocol):
    """A source of randomness. Seeded and derived from the run's RNG in simulation."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...

    def randrange(self, start: int, stop: int) -> int:
        """An int in [start, stop)."""
        ...

    def randbytes(self, n: int) -> bytes:
        """n random bytes (nonces, ids)."""
        ...


@runtime_checkable
class File(Protocol):
    """One open file. Offsets are bytes from the start of the file."""

    @property
    def path(self) -> str:
        """The file's path as given to `FileSystem.open` (for error messages)."""
        ...

    def size(self) -> int:
        """The file's current size in bytes (including unsynced writes)."""
        ...

    def pread(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset` (fewer only at end of file)."""
        ...

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write `data` at `offset`. Not durable until a later `sync` completes."""
        ...

    async def sync(self) -> None:
        """fdatasync: every write issued before this call is durable when it returns."""
        ...

    async def write_sync(self, writes: Sequence[tuple[int, bytes | memoryview]]) -> None:
        """Issue every (offset, data) write, then one fdatasync; durable when it returns.

        On io_uring this is one submission: the writes linked to the fsync.
        """
        ...

    def truncate(self, size: int) -> None:
        """Set the file's size (durable after the next `sync`)."""
        ...

    def allocate(self, size: int) -> None:
        """Preallocate the file to at least `size` bytes (fallocate; zero-filled)."""
        ...

    def close(self) -> None:
        """Close the file. Unsynced writes are not made durable by closing."""
        ...


@runtime_checkable
class FileSystem(Protocol):
    """A directory that holds one node's files. Names are relative paths inside it."""

    @property
    def root(self) -> str:
        """The directory this file system is rooted at (for error messages)."""
        ...

    @property
    def blocking_sync(self) -> bool:
        """True if durable writes (`write_sync`, `sync`) complete without suspending the
        caller (pwrite + fdatasync): the WAL then flushes in the committing task itself."""
        ...

    def open(self, name: str, *, create: bool = False) -> File:
        """Open `name` for reading and writing; create it empty if `create` and absent.

        Raises FileNotFoundError if it does not exist and `create` is false.
        """
        ...

    def exists(self, name: str) -> bool: ...

    def listdir(self, name: str = "") -> list[str]:
        """The names in directory `name`, sorted."""
        ...

    def mkdir(self, name: str) -> None:
        """Create directory `name` (and parents); no error if it exists."""
        ...

    def remove(self, name: str) -> None:
        """Delete file `name` (durable after `sync_dir`)."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace `dst` with `src` (durable after `sync_dir`)."""
        ...

    async def sync_dir(self, name: str = "") -> None:
        """fsync directory `name`, making creates, removes and renames in it durable."""
        ...


Receiver = Callable[[NodeId, bytes], None]


@runtime_checkable
class Transport(Protocol):
    """Messages between the nodes of one cluster. Unreliable: may drop, delay, reorder.

    The real transport frames payloads over TCP (length, checksum); the simulated one
    delivers them after a simulated delay, or not at all, under the run's fault plan.
    """

    @property
    def node_id(self) -> NodeId:
        """The node this endpoint belongs to."""
        ...

    def send(self, dst: NodeId, payload: bytes) -> None:
        """Queue `payload` for `dst`. Never blocks; may silently drop (bounded queues)."""
        ...

    def set_receiver(self, receiver: Receiver) -> None:
        """Call `receiver(src, payload)` for every payload delivered to this node."""
        ...

    async def close(self) -> None:
        """Stop sending and receiving."""
        ...
