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
from mox.io.interfaces import File, FileSystem
from mox.storage.lsm.sstable import READ_ATTEMPTS, WRITE_ATTEMPTS, TableProps, near_miss

__all__ = ["MANIFEST_MAGIC", "MANIFEST_VERSION", "ManifestState", "read_manifest", "write_manifest"]

MANIFEST_MAGIC = b"MOXMANIF"
MANIFEST_VERSION = 1
_HEADER = struct.Struct("<8sIIQ")
_PREFIX = struct.Struct("<8sII")  # the header before its checksum
_CHECKSUM = struct.Struct("<Q")
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
    prefix = _PREFIX.pack(MANIFEST_MAGIC, MANIFEST_VERSION, len(body))
    header = prefix + _CHECKSUM.pack(xxhash.xxh3_64_intdigest(prefix + body))
    image = header + body
    temp_name = f"{directory}/MANIFEST.tmp"
    for attempt in range(WRITE_ATTEMPTS):
        file = fs.open(temp_name, create=True)
        try:
            file.truncate(0)
            await file.write_sync([(0, image)])
            # Read back before the rename: a write the disk put elsewhere must not become
            # the only manifest.
            intact = file.size() == len(image) and file.pread(0, len(image)) == image
        finally:
            file.close()
        if intact:
            break
        if attempt == WRITE_ATTEMPTS - 1:
            raise CorruptionError(f"{fs.root}/{temp_name}", 0, "manifest did not read back intact")
    fs.rename(temp_name, manifest_name(directory))
    await fs.sync_dir(directory)


def read_manifest(fs: FileSystem, directory: str) -> ManifestState:
    """The manifest's state. FormatError for a foreign file, CorruptionError for damage.

    A failed verification is retried once with fresh reads: a transient read error (the
    bytes at rest are fine) is not reported as damage.
    """
    file = fs.open(manifest_name(directory))
    try:
        for _attempt in range(READ_ATTEMPTS - 1):
            try:
                return _read_manifest_once(file)
            except (CorruptionError, FormatError):
                pass
        return _read_manifest_once(file)
    finally:
        file.close()


def _read_manifest_once(file: File) -> ManifestState:
    path = file.path
    size_bytes = file.size()
    header = file.pread(0, _HEADER.size)
    if len(header) < _HEADER.size:
        raise FormatError(path, f"not a manifest: {size_bytes} bytes is shorter than the header")
    magic, version, body_len, checksum = _HEADER.unpack(header)
    if magic != MANIFEST_MAGIC:
        if near_miss(magic, MANIFEST_MAGIC):
            raise CorruptionError(path, 0, f"damaged magic {magic!r}")
        raise FormatError(path, f"not a manifest: magic {magic!r}, expected {MANIFEST_MAGIC!r}")
    if body_len > _BODY_SIZE_BYTES_MAX or _HEADER.size + body_len != size_bytes:
        raise CorruptionError(
            path, 8 + 4, f"body length {body_len} does not match file size {size_bytes}"
        )
    body = file.pread(_HEADER.size, body_len)
    # The checksum covers magic, version and length too, so a damaged version field is
    # reported as damage; a version we do not read is reported only on intact bytes.
    if len(body) != body_len or checksum != xxhash.xxh3_64_intdigest(header[: _PREFIX.size] + body):
        raise CorruptionError(path, 0, "manifest checksum mismatch")
    if version != MANIFEST_VERSION:
        raise FormatError(
            path, f"manifest format version {version}, this build reads {MANIFEST_VERSION}"
        )
    try:
        state = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CorruptionError(path, _HEADER.size, f"manifest body undecodable: {exc}") from None
    if state.next_file_number <= 0 or state.applied_index < 0 or state.last_seq < 0:
        raise CorruptionError(path, _HEADER.size, "manifest counters out of range")
    return state
