"""The write-ahead log: segmented, preallocated, checksummed, group-committed.

Theory of operation.

* Records get contiguous sequence numbers (Raft uses them as log indexes). `append` only
  queues a record; `commit` makes everything queued durable with one `write_sync` per segment
  touched, and concurrent committers share that flush (group commit). At most one flush is
  in flight, so a crash can tear only the last flush.
* Where the file system's durable writes block instead of suspending (`blocking_sync`, the
  real pwrite backend), the committer that starts a flush yields one loop iteration (so that
  committers of the same iteration join it), then runs the flush itself: no task, no second
  wakeup (~5 us of a ~10 us commit path, measured). Elsewhere (io_uring, the simulator) the
  flush runs in its own task, as it always did, so simulated runs keep their interleaving.
* Segments are `wal/<first_seq:020d>.seg`. A segment is created under a `.tmp` name, its
  header synced, then renamed and the directory synced: a `.seg` name never points at a
  header that is not durable. A segment is rolled only after the previous one's records are
  durable, so every segment but the last is complete.
* A segment's records end where the next segment starts: `truncate_suffix(seq)` with `seq`
  inside a segment writes nothing into it; it starts a new segment at `seq`, which fences off
  the old records after it. Records chain by checksum (`parent`), so stale bytes never join
  the live log.
* Recovery verifies every record. In the last segment, a bad record is a torn tail if every
  valid record after it belongs to the same flush (`batch_first_seq`); the tail is then
  zeroed durably. A valid record of a later flush after it, a bad record in an earlier
  segment, or a broken chain is corruption: CorruptionError(path, offset).
* A bad read is re-read (a flipped bit on the bus or in a cache is transient); bytes that
  still fail raise CorruptionError. Nothing unverified is ever returned.

Known limit: a record damaged at rest in the final flush is indistinguishable from a torn
write of that flush and is truncated like one (the replica then re-fetches it from its peers).
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import functools
import itertools
import re
from array import array
from collections.abc import Callable, Coroutine
from typing import Any

from mox.errors import CorruptionError, DataDirError, FormatError
from mox.io.interfaces import File, FileSystem
from mox.storage.record import (
    FLAG_LOG_START,
    RECORD_HEADER_SIZE_BYTES,
    RECORD_MAGIC_BYTES,
    SEGMENT_HEADER_SIZE_BYTES,
    WAL_FORMAT_VERSION,
    Record,
    SegmentHeader,
    decode_record_header,
    decode_segment_header,
    encode_run,
    encode_segment_header,
    scan_chain,
)

__all__ = ["WAL_DIR", "Wal"]

WAL_DIR = "wal"
READ_ATTEMPTS = 3
SEGMENT_SIZE_BYTES_MIN = SEGMENT_HEADER_SIZE_BYTES + RECORD_HEADER_SIZE_BYTES + 1
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")


def _segment_name(first_seq: int) -> str:
    return f"{WAL_DIR}/{first_seq:020d}.seg"


class _Segment:
    """One open segment and the in-memory index of its live records."""

    __slots__ = (
        "checksums",
        "file",
        "first_seq",
        "header",
        "offsets",
        "size_bytes",
        "write_offset",
    )

    def __init__(self, file: File, header: SegmentHeader) -> None:
        self.file = file
        self.header = header
        self.first_seq = header.first_seq
        self.size_bytes = header.segment_size_bytes
        self.offsets = array("Q")  # record start offset, by seq - first_seq
        self.checksums = array("Q")  # record checksum, by seq - first_seq
        self.write_offset = SEGMENT_HEADER_SIZE_BYTES  # end of the last live record

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.offsets) - 1

    def end_of(self, seq: int) -> int:
        index = seq - self.first_seq
        assert 0 <= index < len(self.offsets)
        return self.offsets[index + 1] if index + 1 < len(self.offsets) else self.write_offset

    def checksum_before(self, seq: int) -> int:
        """The checksum of record seq - 1 (the header's parent for the first record)."""
        index = seq - 1 - self.first_seq
        assert -1 <= index < len(self.checksums)
        return self.header.parent if index < 0 else self.checksums[index]

    def trim(self, seq: int) -> None:
        """Forget records >= seq (they stay on disk, fenced off by the next segment)."""
        index = seq - self.first_seq
        assert 0 <= index <= len(self.offsets)
        if index < len(self.offsets):
            self.write_offset = self.offsets[index]
            del self.offsets[index:]
            del self.checksums[index:]


class Wal:
    """A node's write-ahead log. Build it with `await Wal.open(...)`."""

    def __init__(
        self, fs: FileSystem, *, segment_size_bytes: int, cluster_id: str, node_id: int
    ) -> None:
        if segment_size_bytes < SEGMENT_SIZE_BYTES_MIN:
            raise ValueError(
                f"segment_size_bytes must be at least {SEGMENT_SIZE_BYTES_MIN}, "
                f"got {segment_size_bytes}"
            )
        if not cluster_id or len(cluster_id.encode()) > 64:
            raise ValueError(f"cluster_id must be 1..64 bytes of utf-8, got {cluster_id!r}")
        assert node_id >= 0
        self._fs = fs
        self._segment_size_bytes = segment_size_bytes
        self._max_body_size_bytes = (
            segment_size_bytes - SEGMENT_HEADER_SIZE_BYTES - RECORD_HEADER_SIZE_BYTES
        )
        self._cluster_id = cluster_id
        self._node_id = node_id
        self._segments: list[_Segment] = []
        self._segment_firsts: list[int] = []  # first_seq of each segment, for bisect
        self._next_seq = 1
        self._durable_seq = 0
        self._tail_checksum = 0
        self._epoch = 0  # truncations and resets so far; stamped on every new segment
        # Queued and in-flight records: (seq, rtype, body), seqs durable_seq+1 .. next_seq-1.
        self._pending: list[tuple[int, int, bytes]] = []
        self._lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_done: asyncio.Event | None = None  # set when the running flush ends
        self._failure: BaseException | None = None
        self._closed = False
        # True when fs.write_sync never suspends (see the module docstring).
        self._flush_inline = fs.blocking_sync
        self.flush_count = 0  # flushes that wrote records (for benchmarks and tests)
        self.torn_tail_bytes_zeroed = 0  # bytes zeroed by the last recovery

    # -- properties -------------------------------------------------------------------

    @property
    def first_seq(self) -> int:
        """The oldest readable sequence number (== next seq when the log is empty)."""
        return self._segments[0].first_seq if self._segments else self._next_seq

    @property
    def last_seq(self) -> int:
        """The newest appended sequence number (durable or not); first_seq - 1 if empty."""
        return self._next_seq - 1

    @property
    def durable_seq(self) -> int:
        """The newest sequence number that is on stable storage."""
        return self._durable_seq

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def max_body_size_bytes(self) -> int:
        return self._max_body_size_bytes

    # -- open and recover -------------------------------------------------------------

    @classmethod
    async def open(
        cls, fs: FileSystem, *, segment_size_bytes: int, cluster_id: str, node_id: int
    ) -> Wal:
        """Open (creating if absent) the WAL under `fs`, verify it, repair a torn tail.

        Raises DataDirError if it belongs to another node or cluster, FormatError for
        a file that is not a WAL segment of this version, CorruptionError for damage that
        is not a torn tail.
        """
        wal = cls(fs, segment_size_bytes=segment_size_bytes, cluster_id=cluster_id, node_id=node_id)
        await wal._recover()
        return wal

    async def _recover(self) -> None:
        fs = self._fs
        fs.mkdir(WAL_DIR)
        names: list[tuple[int, str]] = []
        leftovers: list[str] = []
        for entry in fs.listdir(WAL_DIR):
            if entry.endswith(".tmp"):
                leftovers.append(f"{WAL_DIR}/{entry}")
                continue
            match = _SEGMENT_NAME.match(entry)
            if match:
                names.append((int(match.group(1)), f"{WAL_DIR}/{entry}"))
        names.sort()
        segments: list[_Segment] = []
        try:
            for first_seq, name in names:  # checks format and owner before changing anything
                segments.append(self._open_segment(first_seq, name))
        except BaseException:
            for segment in segments:
                segment.file.close()
            raise
        if leftovers:
            # Segments whose creation never finished: their headers may not be durable.
            for name in leftovers:
                fs.remove(name)
            await fs.sync_dir(WAL_DIR)
        if not segments:
            await self._start_log(1)
            return
        # Obsolete segments a crash left behind: everything before the newest log start (a
        # reset that did not finish), and every segment with a lower epoch than one before
        # it (a truncation that did not finish removing what it cut off).
        starts = [i for i, segment in enumerate(segments) if segment.header.log_start]
        keep_from = starts[-1] if starts else 0
        kept: list[_Segment] = []
        obsolete = segments[:keep_from]
        for segment in segments[keep_from:]:
            if kept and segment.header.epoch < max(k.header.epoch for k in kept):
                obsolete.append(segment)
            else:
                kept.append(segment)
        if obsolete:
            for segment in obsolete:
                segment.file.close()
                fs.remove(_segment_name(segment.first_seq))
            await fs.sync_dir(WAL_DIR)
        segments = kept
        self._epoch = max(segment.header.epoch for segment in segments)
        for index, segment in enumerate(segments):
            is_last = index == len(segments) - 1
            limit_seq = None if is_last else segments[index + 1].first_seq
            await self._scan(segment, limit_seq)
            if not is_last:
                following = segments[index + 1]
                if following.header.parent != segment.checksum_before(following.first_seq):
                    raise CorruptionError(
                        following.file.path,
                        0,
                        f"segment does not chain onto record {following.first_seq - 1}",
                    )
        self._segments = segments
        self._segment_firsts = [segment.first_seq for segment in segments]
        last = segments[-1]
        self._next_seq = last.last_seq + 1
        self._durable_seq = last.last_seq
        self._tail_checksum = last.checksum_before(self._next_seq)
        self._check_invariants()

    def _open_segment(self, first_seq: int, name: str) -> _Segment:
        file = self._fs.open(name)
        header: SegmentHeader | str = "unread"
        for _attempt in range(READ_ATTEMPTS):
            header = decode_segment_header(file.pread(0, SEGMENT_HEADER_SIZE_BYTES))
            if not isinstance(header, str):
                break
            if "magic" in header or "version" in header:
                file.close()
                raise FormatError(file.path, header)
        if isinstance(header, str):
            file.close()
            raise CorruptionError(file.path, 0, header)
        if header.cluster_id != self._cluster_id or header.node_id != self._node_id:
            file.close()
            raise DataDirError(
                self._fs.root,
                f"{file.path} belongs to node {header.node_id} of cluster "
                f"{header.cluster_id!r}, not node {self._node_id} of cluster {self._cluster_id!r}",
            )
        if header.first_seq != first_seq:
            file.close()
            raise CorruptionError(
                file.path, 0, f"header says first seq {header.first_seq}, name says {first_seq}"
            )
        if header.segment_size_bytes < SEGMENT_SIZE_BYTES_MIN:
            file.close()
            raise CorruptionError(file.path, 0, f"segment size {header.segment_size_bytes}")
        return _Segment(file, header)

    async def _scan(self, segment: _Segment, limit_seq: int | None) -> None:
        """Index the segment's records; repair a torn tail (last segment only)."""
        verdict = ""
        bad_offset = 0
        for _attempt in range(READ_ATTEMPTS):
            data = segment.file.pread(0, segment.size_bytes)
            verdict, bad_offset = self._scan_bytes(segment, data, limit_seq)
            if verdict == "clean":
                return
        path = segment.file.path
        if verdict == "corrupt" or limit_seq is not None:
            expected = segment.last_seq + 1
            raise CorruptionError(path, bad_offset, f"record {expected} failed verification")
        assert verdict.startswith("torn:")
        # Zero the torn flush so that its leftovers can never be mistaken for records.
        end = int(verdict[len("torn:") :])
        assert end > bad_offset
        await segment.file.write_sync([(bad_offset, bytes(end - bad_offset))])
        self.torn_tail_bytes_zeroed = end - bad_offset

    def _scan_bytes(self, segment: _Segment, data: bytes, limit_seq: int | None) -> tuple[str, int]:
        """("clean", end) | ("torn:<end of garbage>", bad offset) | ("corrupt", bad offset)."""
        size = len(data)
        offsets, checksums, offset, seq, _parent = scan_chain(
            data, SEGMENT_HEADER_SIZE_BYTES, segment.first_seq, segment.header.parent, limit_seq
        )
        segment.offsets = offsets
        segment.checksums = checksums
        segment.write_offset = offset
        if limit_seq is not None:
            return ("clean" if seq == limit_seq else "corrupt"), offset
        if data.count(0, offset) == size - offset:
            return "clean", offset  # only zeros (preallocated space) after the last record
        garbage_end = len(data.rstrip(b"\x00"))
        assert garbage_end > offset
        # Something follows the last good record. A valid record from a later flush proves
        # the bad record was durable before (corruption); otherwise it is a torn flush.
        position = data.find(RECORD_MAGIC_BYTES, offset + 1, garbage_end)
        while position != -1:
            candidate = decode_record_header(data, position, size)
            if candidate is not None and (candidate.seq < seq or candidate.batch_first_seq > seq):
                return "corrupt", offset
            position = data.find(RECORD_MAGIC_BYTES, position + 1, garbage_end)
        return f"torn:{garbage_end}", offset

    async def _create_segment(self, first_seq: int, parent: int, *, log_start: bool) -> _Segment:
        """Create a segment durably: header synced under a .tmp name, renamed, dir synced."""
        header = SegmentHeader(
            version=WAL_FORMAT_VERSION,
            flags=FLAG_LOG_START if log_start else 0,
            node_id=self._node_id,
            first_seq=first_seq,
            segment_size_bytes=self._segment_size_bytes,
            parent=parent,
            epoch=self._epoch,
            cluster_id=self._cluster_id,
        )
        name = _segment_name(first_seq)
        tmp = name + ".tmp"
        if self._fs.exists(tmp):
            self._fs.remove(tmp)
        file = self._fs.open(tmp, create=True)
        file.truncate(0)
        file.allocate(self._segment_size_bytes)
        await file.write_sync([(0, encode_segment_header(header))])
        file.close()
        self._fs.rename(tmp, name)
        await self._fs.sync_dir(WAL_DIR)
        return _Segment(self._fs.open(name), header)

    async def _start_log(self, next_seq: int) -> None:
        """An empty log whose next append gets next_seq (state first, then the segment)."""
        assert not self._pending
        self._segments = []
        self._segment_firsts = []
        self._next_seq = next_seq
        self._durable_seq = next_seq - 1
        self._tail_checksum = 0
        segment = await self._create_segment(next_seq, 0, log_start=True)
        self._segments = [segment]
        self._segment_firsts = [next_seq]
        self._check_invariants()

    # -- append and group commit -------------------------------------------------------

    def append(self, rtype: int, body: bytes) -> int:
        """Queue a record; return its sequence number. Durable after `commit` covers it."""
        if self._failure is not None or self._closed:
            self._check_usable()
        if not 0 <= rtype < 65536:
            raise ValueError(f"record type must be in [0, 65535], got {rtype}")
        if len(body) > self._max_body_size_bytes:
            raise ValueError(
                f"record body of {len(body)} bytes exceeds the segment's room of "
                f"{self.max_body_size_bytes} bytes (raise wal_segment_size)"
            )
        seq = self._next_seq
        # bytes() copies a bytearray/memoryview (the caller may reuse it); bytes pass as is.
        self._pending.append((seq, rtype, bytes(body)))
        self._next_seq = seq + 1
        return seq

    async def commit(self, seq: int | None = None) -> None:
        """Return once every record up to `seq` (default: all appended) is durable.

        If a concurrent `truncate_suffix`/`reset` removes the awaited records first, this
        returns as soon as nothing at or below `seq` is left to flush.

        Callers that arrive while a flush runs wait for it and share the next one. A
        cancelled caller never interrupts a flush: it runs in its own task, or (blocking
        file systems) in the caller without a suspension point, handed to a task if it
        ever suspends. Each waiter waits on the flush's event (one wakeup, no shield).
        """
        target = self._next_seq - 1 if seq is None else seq
        while self._durable_seq < target:
            self._check_usable()
            if target >= self._next_seq:
                return  # truncated away while we waited: nothing left to make durable
            done = self._flush_done
            if done is None:
                done = self._flush_done = asyncio.Event()
                if self._flush_inline:
                    await self._flush_here(done)
                    continue
                self._flush_task = asyncio.get_running_loop().create_task(self._flush(done))
            await done.wait()
        assert self._durable_seq >= target

    async def _flush_here(self, done: asyncio.Event) -> None:
        """Run the flush `done` stands for in the calling task (blocking file systems)."""
        assert self._flush_done is done
        try:
            # One iteration for the committers of this iteration to append and join.
            await asyncio.sleep(0)
        except BaseException:
            # Cancelled before the flush began: the waiters that joined still get it.
            self._flush_task = asyncio.get_running_loop().create_task(self._flush(done))
            raise
        flush = self._flush(done)
        try:
            yielded = flush.send(None)
        except StopIteration:
            return  # done without suspending: the usual case
        # It suspended (the lock was held across an await): a task finishes it, so that
        # cancelling this caller cannot cut the flush short.
        self._flush_task = asyncio.get_running_loop().create_task(_run_on(flush, yielded))

    async def _flush(self, done: asyncio.Event) -> None:
        try:
            async with self._lock:
                self._check_usable()
                if self._pending:
                    await self._write_pending(len(self._pending))
        except BaseException as exc:
            # After a failed fdatasync the page cache state is unknown: stop using the WAL.
            # Waiters see the failure through _check_usable; the task does not re-raise
            # (nobody awaits it) unless it was cancelled.
            self._failure = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if self._flush_done is done:
                self._flush_done = None
            done.set()

    async def _write_pending(self, count: int) -> None:
        batch = self._pending[:count]
        batch_first_seq = batch[0][0]
        assert batch_first_seq == self._durable_seq + 1
        segment = self._segments[-1]
        parent = self._tail_checksum
        index = 0
        while True:
            start = segment.write_offset
            chunks, offsets, checksums, index, parent = encode_run(
                batch, index, batch_first_seq, parent, start, segment.size_bytes
            )
            await self._write_chunk(segment, start, chunks, offsets, checksums)
            if index == len(batch):
                break
            # The segment is full: roll only now that its part of the flush is durable.
            seq = batch[index][0]
            segment = await self._create_segment(seq, parent, log_start=False)
            self._segments.append(segment)
            self._segment_firsts.append(seq)
        del self._pending[:count]
        self.flush_count += 1
        assert self._durable_seq == batch[-1][0]
        self._check_invariants(tail_only=True)

    async def _write_chunk(
        self,
        segment: _Segment,
        start: int,
        pieces: list[bytes],
        offsets: list[int],
        checksums: list[int],
    ) -> None:
        if not pieces:
            return
        assert start == segment.write_offset
        # One buffer, one write: the pieces joined once (a pwritev of many small iovecs
        # measured slower than join + pwrite for 128-byte records).
        data = b"".join(pieces)
        await segment.file.write_sync([(start, data)])
        segment.offsets.extend(offsets)
        segment.checksums.extend(checksums)
        segment.write_offset = start + len(data)
        self._durable_seq = segment.last_seq
        self._tail_checksum = checksums[-1]
        assert segment.offsets[-1] + RECORD_HEADER_SIZE_BYTES <= segment.write_offset

    # -- read --------------------------------------------------------------------------

    def read(self, first_seq: int, last_seq: int) -> list[Record]:
        """Records first_seq..last_seq inclusive, each verified against its checksum."""
        self._check_usable()
        if first_seq > last_seq:
            return []
        if first_seq < self.first_seq or last_seq > self.last_seq:
            raise ValueError(
                f"read({first_seq}, {last_seq}) outside the log [{self.first_seq}, {self.last_seq}]"
            )
        records: list[Record] = []
        seq = first_seq
        while seq <= min(last_seq, self._durable_seq):
            segment = self._segments[bisect.bisect_right(self._segment_firsts, seq) - 1]
            high = min(last_seq, self._durable_seq, segment.last_seq)
            records.extend(self._read_segment(segment, seq, high))
            seq = high + 1
        if seq <= last_seq:
            base = self._pending[0][0]
            for item in self._pending[seq - base : last_seq - base + 1]:
                records.append(Record(seq=item[0], rtype=item[1], body=item[2]))
        assert len(records) == last_seq - first_seq + 1
        assert records[0].seq == first_seq
        return records

    def _read_segment(self, segment: _Segment, first_seq: int, last_seq: int) -> list[Record]:
        assert segment.first_seq <= first_seq <= last_seq <= segment.last_seq
        start = segment.offsets[first_seq - segment.first_seq]
        end = segment.end_of(last_seq)
        bad_offset = start
        for _attempt in range(READ_ATTEMPTS):
            data = segment.file.pread(start, end - start)
            records: list[Record] = []
            offset = 0
            for seq in range(first_seq, last_seq + 1):
                header = decode_record_header(data, offset, len(data))
                if header is None or header.checksum != segment.checksums[seq - segment.first_seq]:
                    bad_offset = start + offset
                    break
                body_start = offset + RECORD_HEADER_SIZE_BYTES
                body = data[body_start : body_start + header.length]
                records.append(Record(seq=seq, rtype=header.rtype, body=body))
                offset = body_start + header.length
            else:
                return records
        raise CorruptionError(segment.file.path, bad_offset, "record failed verification on read")

    # -- truncation, compaction, reset ------------------------------------------------

    async def truncate_suffix(self, seq: int) -> None:
        """Drop every record >= seq, durably. The next append gets `seq`."""
        self._check_usable()
        if seq < self.first_seq:
            raise ValueError(
                f"truncate_suffix({seq}) is before the log's first seq {self.first_seq}"
            )
        async with self._lock:
            self._check_usable()
            if seq >= self._next_seq:
                return
            if seq > self._durable_seq:
                del self._pending[seq - self._durable_seq - 1 :]
                self._next_seq = seq
                return
            self._pending.clear()
            if seq == self._segments[0].first_seq:
                await self._replace_log(seq)
                return
            # 1. A fence segment at seq, of a new epoch, appears atomically (replacing a
            #    segment of that name): it hides the owner's records from seq on, and makes
            #    every later segment obsolete. 2. Those later segments go. A crash before 1
            #    leaves the old log; after 1, recovery finishes 2 itself. The in-memory log
            #    changes first, so that reads and appends during the I/O see the new log.
            doomed = [s for s in self._segments if s.first_seq >= seq]
            kept = self._segments[: len(self._segments) - len(doomed)]
            owner = kept[-1]
            assert owner.first_seq < seq <= owner.last_seq + 1
            parent = owner.checksum_before(seq)
            for segment in doomed:
                segment.file.close()
            owner.trim(seq)
            self._segments = kept
            self._segment_firsts = [s.first_seq for s in kept]
            self._next_seq = seq
            self._durable_seq = seq - 1
            self._tail_checksum = parent
            self._epoch += 1
            fence = await self._create_segment(seq, parent, log_start=False)
            self._segments.append(fence)
            self._segment_firsts.append(seq)
            later = [s for s in doomed if s.first_seq > seq]
            for segment in later:
                self._fs.remove(_segment_name(segment.first_seq))
            if later:
                await self._fs.sync_dir(WAL_DIR)
            self._check_invariants()

    async def drop_prefix(self, seq: int) -> None:
        """Delete whole segments whose records are all < seq (the last segment stays)."""
        self._check_usable()
        async with self._lock:
            self._check_usable()
            count = 0
            while count + 1 < len(self._segments) and self._segments[count + 1].first_seq <= seq:
                count += 1
            if count == 0:
                return
            dropped = self._segments[:count]
            del self._segments[:count]
            del self._segment_firsts[:count]
            assert self.first_seq <= seq
            for segment in dropped:  # oldest first: a crash keeps a suffix
                segment.file.close()
                self._fs.remove(_segment_name(segment.first_seq))
            await self._fs.sync_dir(WAL_DIR)
            self._check_invariants()

    async def reset(self, next_seq: int) -> None:
        """Make the log empty, durably; its next append gets `next_seq` (after a snapshot)."""
        self._check_usable()
        if next_seq < 1:
            raise ValueError(f"reset next_seq must be >= 1, got {next_seq}")
        async with self._lock:
            self._check_usable()
            self._pending.clear()
            await self._replace_log(next_seq)

    async def _replace_log(self, next_seq: int) -> None:
        """Replace the whole log by an empty one starting at next_seq, crash-safely: a
        LOG_START segment of a new epoch appears atomically (replacing a segment of that
        name), then every other segment goes. Recovery treats what a crash leaves of the
        old segments as obsolete; a crash before the new segment appears leaves the old log.
        """
        old = self._segments
        for segment in old:
            segment.file.close()
        self._epoch += 1
        await self._start_log(next_seq)
        others = [s for s in old if s.first_seq != next_seq]
        for segment in others:
            self._fs.remove(_segment_name(segment.first_seq))
        if others:
            await self._fs.sync_dir(WAL_DIR)
        self._check_invariants()

    # -- housekeeping ------------------------------------------------------------------

    def close(self) -> None:
        """Close the segment files and abandon an in-flight flush (its records may or may
        not be durable). Queued records that were not committed are dropped."""
        self._closed = True
        if self._flush_task is not None and not self._flush_task.done():
            self._flush_task.cancel()
        for segment in self._segments:
            segment.file.close()
        self._pending.clear()

    def _check_usable(self) -> None:
        if self._closed:
            # Also ends a commit whose flush had not begun: close() dropped its records.
            raise OSError(errno.EBADF, "WAL is closed")
        if self._failure is not None:
            raise OSError(f"WAL unusable after a failed flush: {self._failure!r}")

    def _check_invariants(self, *, tail_only: bool = False) -> None:
        """The WAL's shape. `tail_only` (after a flush) checks what a flush can change."""
        assert self._segments, "a WAL always has a segment to append to"
        checked = self._segments[-2:] if tail_only else self._segments
        for before, after in itertools.pairwise(checked):
            assert before.last_seq + 1 == after.first_seq
        if not tail_only:
            assert self._segment_firsts == [s.first_seq for s in self._segments]
        assert len(self._segment_firsts) == len(self._segments)
        assert self._durable_seq == self._segments[-1].last_seq
        assert self._next_seq == self._durable_seq + 1 + len(self._pending)
        if self._pending:
            assert self._pending[0][0] == self._durable_seq + 1


async def _run_on(coro: Coroutine[Any, Any, None], yielded: object) -> None:
    """Drive `coro` on from the suspension where it yielded `yielded`, as the asyncio.Task
    it was never wrapped in would: wait for the future, then resume it. A cancellation of
    this task is delivered into `coro` at its suspension point."""
    while True:
        step: Callable[[], object]
        try:
            if isinstance(yielded, asyncio.Future):
                await asyncio.wait((yielded,))
            else:
                await asyncio.sleep(0)  # a bare yield
        except BaseException as exc:  # delivered into coro, which decides
            step = functools.partial(coro.throw, exc)
        else:
            step = functools.partial(coro.send, None)
        try:
            yielded = step()
        except StopIteration:
            return
