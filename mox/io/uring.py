"""An io_uring ring for durable writes: linked writes + fdatasync in one submission.

Theory of operation. `write_sync(fd, path, writes)` prepares one `writev` SQE per
(offset, data) pair, each flagged `IOSQE_IO_LINK`, then an `fsync` SQE with
`IORING_FSYNC_DATASYNC` that ends the chain, and submits them with one `io_uring_enter`.
Because the chain is linked, the fdatasync starts only after every write completed, and a
failed write cancels the rest of the chain (the caller sees the first real error).

Completions reach asyncio through an eventfd registered with the ring and watched with
`loop.add_reader`; the reader drains the completion queue and resolves one future per
batch. Without a running loop (benchmarks, tools) `write_sync_blocking` submits and waits.

Pitfalls of the `liburing` binding this code avoids (see the project's LIBRARIES notes):
* a `prep_*` that raises after `io_uring_get_sqe` leaves the slot queued, and the next
  submit would run it again: every argument is validated before a slot is taken, and a
  slot whose prep fails is turned into a NOP;
* reading a negative `res` raises OSError: the CQ is advanced in `finally`;
* buffers must stay alive until their completion: each batch keeps its `Iovec`s and data.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tempfile
from collections.abc import Sequence

import liburing

_ENTRIES_DEFAULT = 256
_IOV_MAX = 1024


class _Batch:
    """One submitted chain: its completions, its first error, and its buffers."""

    __slots__ = ("error", "future", "keepalive", "ops", "path", "remaining")

    def __init__(self, path: str, ops: list[tuple[str, int, int]], keepalive: list[object]) -> None:
        self.path = path
        # (kind, offset, length) per SQE, to name what failed in an error.
        self.ops = ops
        self.keepalive = keepalive
        self.remaining = len(ops)
        self.error: OSError | None = None
        self.future: asyncio.Future[None] | None = None

    def complete(self, index: int, res: int | None, exc: OSError | None) -> None:
        assert 0 <= index < len(self.ops)
        assert self.remaining > 0
        kind, offset, length = self.ops[index]
        problem: OSError | None = None
        if exc is not None:
            problem = OSError(
                exc.errno,
                f"io_uring {kind} of {self.path} at offset {offset}: {exc.strerror}",
                self.path,
            )
        elif kind == "write" and res != length:
            problem = OSError(
                errno.EIO,
                f"io_uring short write of {self.path} at offset {offset}: {res} of {length} bytes",
                self.path,
            )
        if problem is not None:
            # A linked chain cancels everything after a failure: keep the first real error.
            cancelled = problem.errno == errno.ECANCELED
            if self.error is None or (self.error.errno == errno.ECANCELED and not cancelled):
                self.error = problem
        self.remaining -= 1
        if self.remaining == 0:
            self.keepalive.clear()
            future = self.future
            if future is not None and not future.done() and not future.get_loop().is_closed():
                if self.error is not None:
                    future.set_exception(self.error)
                else:
                    future.set_result(None)


class UringRing:
    """One io_uring instance shared by the files of a `RealFileSystem`.

    Raises OSError at construction if the kernel refuses a ring (seccomp, old kernel).
    """

    def __init__(self, entries: int = _ENTRIES_DEFAULT) -> None:
        assert entries >= 2
        self._entries = entries
        self._ring = liburing.Ring()
        self._cqe = liburing.Cqe()
        liburing.io_uring_queue_init(entries, self._ring, 0)
        self._eventfd = -1
        try:
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            liburing.io_uring_register_eventfd(self._ring, self._eventfd)
        except BaseException:
            if self._eventfd >= 0:
                os.close(self._eventfd)
            liburing.io_uring_queue_exit(self._ring)
            raise
        self._next_user_data = 1
        # user_data -> (batch, index of the op inside the batch)
        self._inflight: dict[int, tuple[_Batch, int]] = {}
        self._queued_nops = 0  # NOPs left in the SQ by a failed preparation
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def inflight_count(self) -> int:
        return len(self._inflight)

    def close(self) -> None:
        """Tear the ring down, first waiting for batches still in flight: the kernel may
        still read their buffers, which must outlive it."""
        if self._closed:
            return
        while self._inflight:
            liburing.io_uring_wait_cqe(self._ring, self._cqe)
            self._drain()
        self._closed = True
        self._detach_loop()
        liburing.io_uring_queue_exit(self._ring)
        os.close(self._eventfd)

    # -- submission --------------------------------------------------------------------

    def _prepare(
        self,
        fd: int,
        path: str,
        writes: Sequence[tuple[int, bytes | memoryview]],
        sync: bool,
    ) -> list[_Batch]:
        """Queue SQEs for `writes` (+ fdatasync) and return the batches they form."""
        assert not self._closed
        assert fd >= 0
        # Validate everything before taking a slot (see the module docstring).
        for offset, data in writes:
            if not isinstance(offset, int) or offset < 0:
                raise ValueError(f"write offset must be a non-negative int, got {offset!r}")
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"write data must be bytes-like, got {type(data).__name__}")
        # Coalesce contiguous writes into one writev: fewer SQEs, same bytes.
        runs: list[tuple[int, list[bytes | memoryview], int]] = []
        for offset, data in writes:
            length = len(data)
            if length == 0:
                continue
            if runs and runs[-1][0] + runs[-1][2] == offset and len(runs[-1][1]) < _IOV_MAX:
                start, bufs, total = runs[-1]
                bufs.append(data)
                runs[-1] = (start, bufs, total + length)
            else:
                runs.append((offset, [data], length))
        # A link chain cannot span submissions: split into chains that fit the SQ; only
        # the last chain ends with the fdatasync (earlier chains are waited for first).
        per_chain = self._entries - 1
        chains = [runs[i : i + per_chain] for i in range(0, len(runs), per_chain)] or [[]]
        batches: list[_Batch] = []
        for chain_index, chain in enumerate(chains):
            last = chain_index == len(chains) - 1
            ops: list[tuple[str, int, int]] = []
            keep: list[object] = []
            for start, bufs, total in chain:
                ops.append(("write", start, total))
                keep.append(bufs)
            if last and sync:
                ops.append(("fdatasync", 0, 0))
            if not ops:
                continue
            batches.append(_Batch(path, ops, keep))
        return batches

    def _submit(self, fd: int, batch: _Batch) -> None:
        assert liburing.io_uring_sq_space_left(self._ring) >= len(batch.ops)
        assert liburing.io_uring_sq_ready(self._ring) == self._queued_nops
        write_index = 0
        runs = list(batch.keepalive)  # the buffer lists, before the Iovecs join them
        prepared: list[tuple[object, int]] = []
        for index, (kind, offset, _length) in enumerate(batch.ops):
            sqe = liburing.io_uring_get_sqe(self._ring)
            assert sqe is not None, "SQ full although space was checked"
            user_data = self._next_user_data
            self._next_user_data += 1
            try:
                if kind == "write":
                    bufs = runs[write_index]
                    write_index += 1
                    iov = liburing.Iovec(bufs)
                    batch.keepalive.append(iov)
                    liburing.io_uring_prep_writev(sqe, fd, iov, offset)
                else:
                    liburing.io_uring_prep_fsync(sqe, fd, liburing.IORING_FSYNC_DATASYNC)
            except BaseException:
                # Never leave a half-prepared slot behind: it would run on the next submit.
                # This slot and the ones before it in the batch become NOPs with user_data
                # 0, which no batch uses (the drain ignores it).
                for earlier, earlier_user_data in [*prepared, (sqe, 0)]:
                    liburing.io_uring_prep_nop(earlier)
                    liburing.io_uring_sqe_set_flags(earlier, 0)
                    liburing.io_uring_sqe_set_data64(earlier, 0)
                    self._inflight.pop(earlier_user_data, None)
                self._queued_nops += len(prepared) + 1
                raise
            prepared.append((sqe, user_data))
            if index < len(batch.ops) - 1:
                liburing.io_uring_sqe_set_flags(sqe, liburing.IOSQE_IO_LINK)
            liburing.io_uring_sqe_set_data64(sqe, user_data)
            self._inflight[user_data] = (batch, index)
        submitted = liburing.io_uring_submit(self._ring)
        assert submitted == len(batch.ops) + self._queued_nops, (submitted, len(batch.ops))
        self._queued_nops = 0

    # -- completion --------------------------------------------------------------------

    def _drain(self) -> None:
        """Hand every completion in the CQ to its batch."""
        while liburing.io_uring_cq_ready(self._ring):
            liburing.io_uring_peek_cqe(self._ring, self._cqe)
            entry = self._cqe[0]
            assert entry is not None
            user_data = entry.user_data
            res: int | None = None
            exc: OSError | None = None
            try:
                res = entry.res
            except OSError as error:
                exc = error
            finally:
                liburing.io_uring_cq_advance(self._ring, 1)
            owner = self._inflight.pop(user_data, None)
            if owner is None:
                assert user_data == 0, f"completion for unknown user_data {user_data}"
                continue  # the NOP of a slot whose preparation failed
            batch, index = owner
            batch.complete(index, res, exc)

    def _on_eventfd(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._eventfd)
        self._drain()

    def _attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        self._detach_loop()
        loop.add_reader(self._eventfd, self._on_eventfd)
        self._loop = loop

    def _detach_loop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._eventfd)
        self._loop = None

    # -- public operations -------------------------------------------------------------

    async def write_sync(
        self,
        fd: int,
        path: str,
        writes: Sequence[tuple[int, bytes | memoryview]],
        *,
        sync: bool = True,
    ) -> None:
        """Write every (offset, data), then fdatasync `fd`; returns once durable.

        Raises OSError naming `path` and the offset if any write or the sync fails.
        """
        loop = asyncio.get_running_loop()
        self._attach_loop(loop)
        for batch in self._prepare(fd, path, writes, sync):
            batch.future = loop.create_future()
            self._submit(fd, batch)
            # The completion may already be in the CQ; the eventfd wakes the reader anyway.
            await batch.future
            assert batch.remaining == 0

    async def fsync(self, fd: int, path: str) -> None:
        """fdatasync `fd` through the ring."""
        await self.write_sync(fd, path, [], sync=True)

    def write_sync_blocking(
        self,
        fd: int,
        path: str,
        writes: Sequence[tuple[int, bytes | memoryview]],
        *,
        sync: bool = True,
    ) -> None:
        """`write_sync` without an event loop: submit, then wait in the kernel."""
        for batch in self._prepare(fd, path, writes, sync):
            self._submit(fd, batch)
            while batch.remaining > 0:
                liburing.io_uring_wait_cqe(self._ring, self._cqe)
                self._drain()
            if batch.error is not None:
                raise batch.error


def probe_ring(directory: str) -> tuple[UringRing | None, str]:
    """Create a ring and push one write + fdatasync through it in `directory`.

    Returns (ring, reason) on success and (None, reason) when the kernel or the file
    system refuses; the reason is logged by the caller.
    """
    try:
        ring = UringRing()
    except OSError as exc:
        return None, f"kernel refused an io_uring ring: {exc}"
    except Exception as exc:  # the binding raises its own types on odd kernels
        return None, f"io_uring unavailable: {exc!r}"
    try:
        with tempfile.TemporaryFile(dir=directory) as probe:
            ring.write_sync_blocking(probe.fileno(), "<io_uring probe>", [(0, b"\0" * 512)])
    except OSError as exc:
        ring.close()
        return None, f"io_uring write+fdatasync probe failed: {exc}"
    return ring, "io_uring write+fdatasync probe succeeded"
