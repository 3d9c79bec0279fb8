"""The manifest: which tables are live at which level, and how far the store has applied.

One small file, `<dir>/MANIFEST`, replaced atomically on every change: the new state is
written to `MANIFEST.tmp`, fsynced, renamed over `MANIFEST`, and the directory is fsynced.
A crash leaves either the old or the new manifest, never a mix. Layout::

    magic (8) | version u32 | body length u32 | xxh3_64 of body u64 | body (msgpack)

The body is `ManifestState`. `applied_index` is the highest Raft log index whose writes are
all in live tables: recovery replays the Raft log from the entry after it.
"""

from __future__ import annotations

import struct

import msgspec
import xxhash

from mox.errors import CorruptionError, FormatError
from mox.io.interfaces import FileSystem
from mox.storage.lsm.sstable import TableProps

__all__ = ["MANIFEST_MAGIC", "MANIFEST_VERSION", "ManifestState", "read_manifest", "write_manifest"]

MANIFEST_MAGIC = b"MOXMANIF"
MANIFEST_VERSION = 1
_HEADER = struct.Struct("<8sIIQ")
# A manifest lists table metadata only; anything near this size is damage, not data.
_BODY_SIZE_BYTES_MAX = 64 * 1024 * 1024


class ManifestState(msgspec.Struct, array_like=True, frozen=True):
    """The durable state of the store, apart from the tables' contents."""

    next_file_number: int
    last_seq: int
    applied_index: int
    # levels[i] lists the props of level i's tables; level 0 newest first, deeper levels by
    # ascending key range.
    levels: list[list[TableProps]]


_decoder = msgspec.msgpack.Decoder(ManifestState)
_encoder = msgspec.msgpack.Encoder()


def manifest_name(directory: str) -> str:
    return f"{directory}/MANIFEST"


async def write_manifest(fs: FileSystem, directory: str, state: ManifestState) -> None:
    """Durably replace the manifest with `state` (write temp, fsync, rename, fsync dir)."""
    assert state.next_file_number > 0
    assert state.applied_index >= 0 and state.last_seq >= 0
    body = _encoder.encode(state)
    assert len(body) < _BODY_SIZE_BYTES_MAX
    header = _HEADER.pack(MANIFEST_MAGIC, MANIFEST_VERSION, len(body), xxhash.xxh3_64_intdigest(body))
    temp_name = f"{directory}/MANIFEST.tmp"
    file = fs.open(temp_name, create=True)
    try:
        file.truncate(0)
        await file.write_sync([(0, header + body)])
    finally:
        file.close()
    fs.rename(temp_name, manifest_name(directory))
    await fs.sync_dir(directory)


def read_manifest(fs: FileSystem, directory: str) -> ManifestState:
    """The manifest's state. FormatError for a foreign file, CorruptionError for damage."""
    file = fs.open(manifest_name(directory))
    try:
        path = file.path
        size_bytes = file.size()
        header = file.pread(0, _HEADER.size)
        if len(header) < _HEADER.size:
            raise FormatError(path, f"not a manifest: {size_bytes} bytes is shorter than the header")
        magic, version, body_len, checksum = _HEADER.unpack(header)
        if magic != MANIFEST_MAGIC:
            raise FormatError(path, f"not a manifest: magic {magic!r}, expected {MANIFEST_MAGIC!r}")
        if version != MANIFEST_VERSION:
            raise FormatError(
                path, f"manifest format version {version}, this build reads {MANIFEST_VERSION}"
            )
        if body_len > _BODY_SIZE_BYTES_MAX or _HEADER.size + body_len != size_bytes:
            raise CorruptionError(
                path, 8 + 4, f"body length {body_len} does not match file size {size_bytes}"
            )
        body = file.pread(_HEADER.size, body_len)
        if len(body) != body_len or xxhash.xxh3_64_intdigest(body) != checksum:
            raise CorruptionError(path, _HEADER.size, "manifest body checksum mismatch")
        try:
            state = _decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise CorruptionError(path, _HEADER.size, f"manifest body undecodable: {exc}") from None
    finally:
        file.close()
    if state.next_file_number <= 0 or state.applied_index < 0 or state.last_seq < 0:
        raise CorruptionError(path, _HEADER.size, "manifest counters out of range")
    return state
