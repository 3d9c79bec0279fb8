"""The node's durable Raft snapshot: metadata plus the state store's contents at its index.

One file, `snapshot`, replaced atomically (write `snapshot.tmp`, fdatasync, rename, fsync the
directory). Layout: `magic (8) | body length (u64) | body | xxh3_64(body) (u64)`, the body
being msgpack `[index, term, config, data]`. `data` is what the core ships in
InstallSnapshot: the msgpack list of every (key, value) of the LSM at `index`.

The file is the truth about the snapshot after a restart: it is written before the WAL
prefix it replaces is dropped, and before a snapshot received from the leader is installed
into the LSM, so a crash at any point leaves either the old snapshot with its log, or the
new one (and the runtime reconciles the LSM and the WAL with it at open).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import msgspec
import xxhash

from mox.consensus.raft.messages import SnapshotMeta
from mox.errors import CorruptionError, FormatError
from mox.io.interfaces import FileSystem

__all__ = ["SNAPSHOT_FILE", "decode_items", "encode_items", "read_snapshot", "write_snapshot"]

SNAPSHOT_FILE = "snapshot"
_TMP_FILE = "snapshot.tmp"
_MAGIC = b"MOXSNAP1"
_U64 = struct.Struct("<Q")
_HEADER_BYTES = len(_MAGIC) + _U64.size

_Body = tuple[int, int, list[int], bytes]
_body_decoder = msgspec.msgpack.Decoder(tuple[int, int, list[int], bytes])
_items_decoder = msgspec.msgpack.Decoder(list[tuple[bytes, bytes]])
_encoder = msgspec.msgpack.Encoder()


def encode_items(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The snapshot payload for `items` (ascending keys, as `LsmStore.iter_all` yields)."""
    return _encoder.encode(list(items))


def decode_items(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs of a snapshot payload; raises ValueError if malformed."""
    try:
        items = _items_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"malformed snapshot payload ({len(data)} bytes): {exc}") from None
    previous: bytes | None = None
    for key, value in items:
        if previous is not None and not previous < key:
            raise ValueError("snapshot payload keys are not strictly ascending")
        previous = key
        yield key, value


async def write_snapshot(fs: FileSystem, meta: SnapshotMeta, data: bytes) -> None:
    """Durably replace the node's snapshot file."""
    assert meta.index >= 1
    assert meta.config, "a snapshot carries its configuration"
    body = _encoder.encode((meta.index, meta.term, list(meta.config), data))
    blob = _MAGIC + _U64.pack(len(body)) + body + _U64.pack(xxhash.xxh3_64_intdigest(body))
    if fs.exists(_TMP_FILE):
        fs.remove(_TMP_FILE)
    file = fs.open(_TMP_FILE, create=True)
    try:
        file.truncate(0)
        await file.write_sync([(0, blob)])
    finally:
        file.close()
    fs.rename(_TMP_FILE, SNAPSHOT_FILE)
    await fs.sync_dir()


def read_snapshot(fs: FileSystem) -> tuple[SnapshotMeta, bytes] | None:
    """The snapshot on disk, or None if the node never had one. Verifies the checksum."""
    if not fs.exists(SNAPSHOT_FILE):
        return None
    file = fs.open(SNAPSHOT_FILE)
    try:
        size = file.size()
        blob = file.pread(0, size)
    finally:
        file.close()
    path = f"{fs.root}/{SNAPSHOT_FILE}"
    if len(blob) < _HEADER_BYTES or blob[: len(_MAGIC)] != _MAGIC:
        raise FormatError(path, "not a Mox snapshot file (bad magic)")
    (body_bytes,) = _U64.unpack_from(blob, len(_MAGIC))
    end = _HEADER_BYTES + body_bytes
    if end + _U64.size != len(blob):
        raise CorruptionError(path, len(_MAGIC), f"body length {body_bytes} does not fit the file")
    body = blob[_HEADER_BYTES:end]
    (checksum,) = _U64.unpack_from(blob, end)
    if checksum != xxhash.xxh3_64_intdigest(body):
        raise CorruptionError(path, _HEADER_BYTES, "snapshot checksum mismatch")
    try:
        index, term, config, data = _body_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptionError(path, _HEADER_BYTES, f"undecodable body: {exc}") from None
    return SnapshotMeta(index=index, term=term, config=config), data
