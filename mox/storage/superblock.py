"""The superblock: a replica's small durable state (term, vote, view, commit, members, ...).

One file holds `copies` fixed-size slots. Each slot is a checksummed copy of the state with
its own `sequence`. A write gives the state the next sequence and writes the first half of
the slots, syncs, then the second half, syncs (as TigerBeetle does). A crash or a torn write
during the first half leaves the second half holding the previous state intact; during the
second half the first half already holds the new one. `load` takes the valid copy with the
highest sequence, so damage to any one copy, or a torn write of any one half, loses nothing
that a completed `write` promised.

Slot layout (little-endian): magic 8s "MOXSUPER" | version u32 | copy index u32 |
sequence u64 | body length u32 | reserved u32 | checksum u64, then the msgspec body.
The checksum (xxh3_64) covers the 32 header bytes before it and the body.
"""

from __future__ import annotations

import asyncio
import struct

import msgspec
import xxhash

from mox.errors import CorruptionError, DataDirError, FormatError
from mox.io.interfaces import File, FileSystem

__all__ = ["SUPERBLOCK_FORMAT_VERSION", "Superblock", "SuperblockState"]

SUPERBLOCK_FORMAT_VERSION = 1
_MAGIC = b"MOXSUPER"
_HEADER = struct.Struct("<8sIIQII")
_CHECKSUM = struct.Struct("<Q")
_HEADER_SIZE_BYTES = _HEADER.size + _CHECKSUM.size
SLOT_SIZE_BYTES_DEFAULT = 4096
READ_ATTEMPTS = 3


class SuperblockState(msgspec.Struct, frozen=True, array_like=True):
    """What a replica must not forget. Fields are positional on disk: append new ones last,
    with defaults. `vote` 0 means no vote; `view`/`log_view` are VSR's, `term` Raft's."""

    cluster_id: str
    node_id: int
    sequence: int = 0
    term: int = 0
    vote: int = 0
    view: int = 0
    log_view: int = 0
    commit: int = 0
    members: list[int] = []
    snapshot_index: int = 0
    snapshot_term: int = 0
    extra: bytes = b""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(SuperblockState)


class Superblock:
    """Copies of a SuperblockState in one file. Build with `Superblock.open(fs, ...)`."""

    def __init__(
        self,
        fs: FileSystem,
        file: File,
        *,
        name: str,
        copies: int,
        slot_size_bytes: int,
        created: bool,
        cluster_id: str | None,
        node_id: int | None,
    ) -> None:
        self._fs = fs
        self._file = file
        self._name = name
        self._copies = copies
        self._slot_size_bytes = slot_size_bytes
        self._needs_dir_sync = created
        self._cluster_id = cluster_id
        self._node_id = node_id
        self._sequence = 0
        self._loaded = False
        self._intact = True  # every copy holds the newest state (as of the last load/write)
        self._lock = asyncio.Lock()

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        name: str = "superblock",
        copies: int = 4,
        *,
        slot_size_bytes: int = SLOT_SIZE_BYTES_DEFAULT,
        cluster_id: str | None = None,
        node_id: int | None = None,
    ) -> Superblock:
        """Open (creating if absent) the superblock file `name` under `fs`.

        With `cluster_id`/`node_id` given, `load` refuses a superblock of another cluster
        or node with DataDirError.
        """
        if copies < 2 or copies % 2:
            raise ValueError(f"copies must be an even number >= 2, got {copies}")
        if slot_size_bytes < 512 or slot_size_bytes % 512:
            raise ValueError(f"slot_size_bytes must be a multiple of 512, got {slot_size_bytes}")
        created = not fs.exists(name)
        file = fs.open(name, create=True)
        return cls(
            fs,
            file,
            name=name,
            copies=copies,
            slot_size_bytes=slot_size_bytes,
            created=created,
            cluster_id=cluster_id,
            node_id=node_id,
        )

    @property
    def path(self) -> str:
        return self._file.path

    @property
    def sequence(self) -> int:
        """The sequence of the newest state loaded or written (0 if none)."""
        return self._sequence

    # -- load --------------------------------------------------------------------------

    def load(self) -> SuperblockState | None:
        """The newest valid copy, or None if the superblock was never written.

        Raises FormatError (wrong magic or version), CorruptionError (no valid copy),
        DataDirError (another node's or cluster's superblock).
        """
        best: SuperblockState | None = None
        valid: list[SuperblockState] = []
        invalid: list[tuple[int, str]] = []
        wrong_magic = 0
        empty = 0
        for index in range(self._copies):
            offset = index * self._slot_size_bytes
            outcome: SuperblockState | str = "unread"
            for _attempt in range(READ_ATTEMPTS):
                outcome = self._decode_slot(index, self._file.pread(offset, self._slot_size_bytes))
                if not isinstance(outcome, str) or outcome in ("empty", "version"):
                    break
            if isinstance(outcome, SuperblockState):
                valid.append(outcome)
                if best is None or outcome.sequence > best.sequence:
                    best = outcome
                continue
            if outcome == "empty":
                empty += 1
            elif outcome == "magic":
                wrong_magic += 1
            elif outcome == "version":
                raise FormatError(
                    self.path,
                    f"copy {index} has an unsupported superblock version "
                    f"(this build reads {SUPERBLOCK_FORMAT_VERSION})",
                )
            invalid.append((offset, outcome))
        if best is None:
            if empty == self._copies:
                self._loaded = True
                return None
            if wrong_magic == self._copies:
                # Every slot holds foreign bytes: some other file, not a damaged superblock.
                raise FormatError(self.path, "not a Mox superblock (wrong magic)")
            offset, problem = next((o, p) for o, p in invalid if p != "empty")
            raise CorruptionError(self.path, offset, f"no valid superblock copy ({problem})")
        self._check_owner(best)
        self._sequence = best.sequence
        self._loaded = True
        self._intact = sum(1 for state in valid if state == best) == self._copies
        return best

    @property
    def intact(self) -> bool:
        """Whether every copy held the newest state at the last `load` (or after `write`)."""
        return self._intact

    async def recover(self) -> SuperblockState | None:
        """`load`, then rewrite every copy if some copy is damaged or older.

        Call this at start, before acting on the state: a state found in fewer than all
        copies (a write that a crash interrupted after its first half, or a damaged copy) has
        lost its redundancy, and one more fault could silently bring back an older state the
        node already acted against. The rewrite gives it the next sequence number.
        """
        state = self.load()
        if state is not None and not self._intact:
            state = await self.write(state)
        assert state is None or self._intact
        return state

    def _decode_slot(self, index: int, data: bytes) -> SuperblockState | str:
        if len(data) < _HEADER_SIZE_BYTES or not any(data):
            return "empty"
        magic, version, copy_index, sequence, length, _reserved = _HEADER.unpack_from(data, 0)
        if magic != _MAGIC:
            return "magic"
        if _HEADER_SIZE_BYTES + length > len(data):
            return "length out of range"
        (checksum,) = _CHECKSUM.unpack_from(data, _HEADER.size)
        hasher = xxhash.xxh3_64(data[: _HEADER.size])
        hasher.update(data[_HEADER_SIZE_BYTES : _HEADER_SIZE_BYTES + length])
        if hasher.intdigest() != checksum:
            return "checksum mismatch"
        if version != SUPERBLOCK_FORMAT_VERSION:
            return "version"
        if copy_index != index:
            return f"copy {copy_index} found in slot {index} (misdirected write)"
        try:
            state = _DECODER.decode(data[_HEADER_SIZE_BYTES : _HEADER_SIZE_BYTES + length])
        except msgspec.DecodeError as exc:
            return f"undecodable body: {exc}"
        if state.sequence != sequence:
            return "sequence mismatch between header and body"
        return state

    def _check_owner(self, state: SuperblockState) -> None:
        if (self._cluster_id is not None and state.cluster_id != self._cluster_id) or (
            self._node_id is not None and state.node_id != self._node_id
        ):
            raise DataDirError(
                self._fs.root,
                f"{self.path} belongs to node {state.node_id} of cluster {state.cluster_id!r}, "
                f"not node {self._node_id} of cluster {self._cluster_id!r}",
            )

    # -- write -------------------------------------------------------------------------

    async def write(self, state: SuperblockState) -> SuperblockState:
        """Make `state` durable under the next sequence number; return it as written."""
        if self._cluster_id is not None and state.cluster_id != self._cluster_id:
            raise ValueError(f"state.cluster_id {state.cluster_id!r} != {self._cluster_id!r}")
        if self._node_id is not None and state.node_id != self._node_id:
            raise ValueError(f"state.node_id {state.node_id} != {self._node_id}")
        async with self._lock:
            if not self._loaded:
                # The next sequence must exceed every copy on disk, or an old copy would win.
                self.load()
            written = msgspec.structs.replace(state, sequence=self._sequence + 1)
            body = _ENCODER.encode(written)
            if _HEADER_SIZE_BYTES + len(body) > self._slot_size_bytes:
                raise ValueError(
                    f"superblock state of {len(body)} bytes does not fit a slot of "
                    f"{self._slot_size_bytes} bytes (raise slot_size_bytes)"
                )
            half = self._copies // 2
            for copies in (range(half), range(half, self._copies)):
                writes = [
                    (index * self._slot_size_bytes, self._encode_slot(index, written, body))
                    for index in copies
                ]
                await self._file.write_sync(writes)
            if self._needs_dir_sync:
                await self._fs.sync_dir(_parent(self._name))
                self._needs_dir_sync = False
            self._sequence = written.sequence
            self._intact = True
            assert self._sequence == written.sequence
            return written

    def _encode_slot(self, index: int, state: SuperblockState, body: bytes) -> bytes:
        assert 0 <= index < self._copies
        header = _HEADER.pack(
            _MAGIC, SUPERBLOCK_FORMAT_VERSION, index, state.sequence, len(body), 0
        )
        hasher = xxhash.xxh3_64(header)
        hasher.update(body)
        slot = header + _CHECKSUM.pack(hasher.intdigest()) + body
        return slot + bytes(self._slot_size_bytes - len(slot))

    def close(self) -> None:
        self._file.close()


def _parent(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""
