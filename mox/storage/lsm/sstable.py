"""SSTables: immutable, sorted, checksummed files of key versions.

Layout (all integers little-endian)::

    data block 0 | data block 1 | ... | index block | bloom block | props block | footer

* Every block is a msgpack payload followed by its xxh3_64 checksum (8 bytes). The checksum
  is seeded with the table's file number and the block's offset, so a block that is intact
  but sits in the wrong file or at the wrong place (a misdirected write) fails verification.
* A data block is `[keys, seqs, values]` (three parallel arrays; value nil = tombstone),
  sorted by key, then seq ascending. All versions of one key are in one block, so the index
  can map a key to exactly one block. Blocks are cut at the first key boundary past
  `block_size_bytes`.
* The index block is `[last_keys, offsets, lengths]`, one entry per data block.
* The bloom block is an rbloom filter over the table's keys (`bloom.py`).
* The props block is `TableProps`.
* The footer (56 bytes) is magic, format version, (offset, length) of index, bloom and
  props blocks, and an xxh3_64 of the footer's first 48 bytes.

A reader verifies the checksum of every block it reads and raises `CorruptionError` naming the
file and offset; it never returns bytes that failed verification.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence

import msgspec
import xxhash
from rbloom import Bloom

from mox.errors import CorruptionError, FormatError
from mox.io.interfaces import File, FileSystem
from mox.storage.lsm.bloom import build_bloom, load_bloom
from mox.storage.lsm.versions import Version

__all__ = ["BlockCache", "Table", "TableProps", "TableWriter"]

TABLE_MAGIC = b"MOXSSTB\x00"
TABLE_VERSION = 1
_FOOTER = struct.Struct("<8sIQIQIQI")  # magic, version, (offset, length) x3
FOOTER_SIZE_BYTES = _FOOTER.size + 8  # + checksum
_CHECKSUM = struct.Struct("<Q")
CHECKSUM_SIZE_BYTES = _CHECKSUM.size
# Per-entry msgpack framing (array headers, bin headers, the seq int), for block cutting.
ENTRY_OVERHEAD_BYTES = 12
_ENTRY_OVERHEAD_BYTES = ENTRY_OVERHEAD_BYTES

_DecodedBlock = tuple[list[bytes], list[int], list[bytes | None]]


class TableProps(msgspec.Struct, array_like=True, frozen=True):
    """What a table holds; written in the table and repeated in the manifest."""

    file_number: int
    entry_count: int
    key_count: int
    min_key: bytes
    max_key: bytes
    seq_min: int
    seq_max: int
    data_size_bytes: int


_props_decoder = msgspec.msgpack.Decoder(TableProps)
_index_decoder = msgspec.msgpack.Decoder(tuple[list[bytes], list[int], list[int]])
_block_decoder = msgspec.msgpack.Decoder()
_encoder = msgspec.msgpack.Encoder()


def block_seed(file_number: int, offset: int) -> int:
    """The checksum seed of the block at `offset` in table `file_number`."""
    assert 0 <= offset < 1 << 40
    assert 0 <= file_number < 1 << 23
    return (file_number << 40) | offset


def seal_block(payload: bytes, file_number: int, offset: int) -> bytes:
    """`payload` followed by its checksum for position (file_number, offset)."""
    checksum = xxhash.xxh3_64_intdigest(payload, seed=block_seed(file_number, offset))
    return payload + _CHECKSUM.pack(checksum)


def table_name(directory: str, file_number: int) -> str:
    return f"{directory}/{file_number:06d}.sst"


class TableWriter:
    """Builds one table: `add` keys in ascending order, then `await finish()`.

    Blocks are written with `pwrite` as they fill; `finish` writes index, bloom, props and
    footer and syncs the file. The table is not live until a manifest names it.
    """

    def __init__(
        self,
        fs: FileSystem,
        name: str,
        file_number: int,
        *,
        block_size_bytes: int,
        bloom_false_positive_rate: float,
    ) -> None:
        assert block_size_bytes > 0
        self.name = name
        self.file_number = file_number
        self._file: File = fs.open(name, create=True)
        self._file.truncate(0)
        self._block_size_bytes = block_size_bytes
        self._bloom_fp_rate = bloom_false_positive_rate
        self._offset = 0
        self._keys: list[bytes] = []
        self._seqs: list[int] = []
        self._values: list[bytes | None] = []
        self._block_bytes = 0
        self._last_keys: list[bytes] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._all_keys: list[bytes] = []
        self._entry_count = 0
        self._seq_min: int | None = None
        self._seq_max = 0
        self._finished = False

    @property
    def key_count(self) -> int:
        return len(self._all_keys)

    @property
    def size_bytes(self) -> int:
        """Bytes written so far plus the block being built (an estimate before `finish`)."""
        return self._offset + self._block_bytes

    def add(self, key: bytes, versions: Sequence[Version]) -> None:
        """Append every version of `key` (ascending seq); keys come in ascending order."""
        assert not self._finished
        assert versions, "a key is added with at least one version"
        all_keys = self._all_keys
        assert not all_keys or key > all_keys[-1], "keys are added in strictly ascending order"
        all_keys.append(key)
        if len(versions) == 1:  # the common case, kept lean: flush and compaction call this per key
            seq, value = versions[0]
            self._keys.append(key)
            self._seqs.append(seq)
            self._values.append(value)
            self._block_bytes += (
                len(key) + (len(value) if value is not None else 0) + _ENTRY_OVERHEAD_BYTES
            )
        else:
            previous_seq = -1
            for seq, value in versions:
                assert seq > previous_seq, "versions in ascending seq"
                previous_seq = seq
                self._keys.append(key)
                self._seqs.append(seq)
                self._values.append(value)
                self._block_bytes += (
                    len(key) + (len(value) if value is not None else 0) + _ENTRY_OVERHEAD_BYTES
                )
        self._entry_count += len(versions)
        if self._block_bytes >= self._block_size_bytes:
            self._write_block()

    def add_many(self, entries: Sequence[tuple[bytes, Sequence[Version]]]) -> None:
        """`add` for each (key, versions), with the single-version case kept tight."""
        add = self.add
        all_keys = self._all_keys
        keys, seqs, values = self._keys, self._seqs, self._values
        block_size_bytes = self._block_size_bytes
        for key, versions in entries:
            if len(versions) != 1:
                add(key, versions)
                keys, seqs, values = self._keys, self._seqs, self._values
                continue
            assert not all_keys or key > all_keys[-1], "keys are added in strictly ascending order"
            all_keys.append(key)
            seq, value = versions[0]
            keys.append(key)
            seqs.append(seq)
            values.append(value)
            self._entry_count += 1
            self._block_bytes += (
                len(key) + (len(value) if value is not None else 0) + _ENTRY_OVERHEAD_BYTES
            )
            if self._block_bytes >= block_size_bytes:
                self._write_block()
                keys, seqs, values = self._keys, self._seqs, self._values

    def _write_block(self) -> None:
        assert self._keys
        block_seq_min = min(self._seqs)
        if self._seq_min is None or block_seq_min < self._seq_min:
            self._seq_min = block_seq_min
        self._seq_max = max(self._seq_max, max(self._seqs))
        payload = _encoder.encode((self._keys, self._seqs, self._values))
        sealed = seal_block(payload, self.file_number, self._offset)
        self._file.pwrite(self._offset, sealed)
        self._last_keys.append(self._keys[-1])
        self._offsets.append(self._offset)
        self._lengths.append(len(sealed))
        self._offset += len(sealed)
        self._keys = []
        self._seqs = []
        self._values = []
        self._block_bytes = 0

    def _write_meta_block(self, payload: bytes) -> tuple[int, int]:
        offset = self._offset
        sealed = seal_block(payload, self.file_number, offset)
        self._file.pwrite(offset, sealed)
        self._offset += len(sealed)
        return offset, len(sealed)

    async def finish(self) -> TableProps:
        """Write the trailing blocks and footer, fsync, close; return the table's props."""
        assert not self._finished
        assert self._all_keys, "an empty table is never written"
        if self._keys:
            self._write_block()
        data_size_bytes = self._offset
        index = self._write_meta_block(
            _encoder.encode((self._last_keys, self._offsets, self._lengths))
        )
        bloom = build_bloom(self._all_keys, self._bloom_fp_rate)
        bloom_block = self._write_meta_block(bloom.save_bytes())
        assert self._seq_min is not None
        props = TableProps(
            file_number=self.file_number,
            entry_count=self._entry_count,
            key_count=len(self._all_keys),
            min_key=self._all_keys[0],
            max_key=self._all_keys[-1],
            seq_min=self._seq_min,
            seq_max=self._seq_max,
            data_size_bytes=data_size_bytes,
        )
        props_block = self._write_meta_block(_encoder.encode(props))
        footer = _FOOTER.pack(TABLE_MAGIC, TABLE_VERSION, *index, *bloom_block, *props_block)
        footer += _CHECKSUM.pack(xxhash.xxh3_64_intdigest(footer))
        assert len(footer) == FOOTER_SIZE_BYTES
        self._file.pwrite(self._offset, footer)
        self._offset += len(footer)
        await self._file.sync()
        self._file.close()
        self._finished = True
        return props

    def abandon(self) -> None:
        """Close without finishing (the caller removes the file)."""
        if not self._finished:
            self._finished = True
            self._file.close()


class BlockCache:
    """An LRU of decoded, verified data blocks keyed by (file number, block index)."""

    def __init__(self, capacity_blocks: int) -> None:
        assert capacity_blocks >= 0
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[tuple[int, int], _DecodedBlock] = OrderedDict()

    def get(self, file_number: int, block_index: int) -> _DecodedBlock | None:
        block = self._blocks.get((file_number, block_index))
        if block is not None:
            self._blocks.move_to_end((file_number, block_index))
        return block

    def put(self, file_number: int, block_index: int, block: _DecodedBlock) -> None:
        if self.capacity_blocks == 0:
            return
        self._blocks[(file_number, block_index)] = block
        self._blocks.move_to_end((file_number, block_index))
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)

    def evict_table(self, file_number: int) -> None:
        """Forget every block of a deleted table (its file number is never reused)."""
        for key in [k for k in self._blocks if k[0] == file_number]:
            del self._blocks[key]


class Table:
    """An open, verified table. `open` checks footer, index, bloom and props."""

    def __init__(
        self,
        file: File,
        props: TableProps,
        size_bytes: int,
        last_keys: list[bytes],
        offsets: list[int],
        lengths: list[int],
        bloom: Bloom,
        cache: BlockCache,
    ) -> None:
        self.file = file
        self.props = props
        self.file_number = props.file_number
        self.size_bytes = size_bytes
        self._last_keys = last_keys
        self._offsets = offsets
        self._lengths = lengths
        self._bloom = bloom
        self._cache = cache

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def block_count(self) -> int:
        return len(self._offsets)

    @classmethod
    def open(cls, fs: FileSystem, name: str, file_number: int, cache: BlockCache) -> Table:
        """Open and verify the table `name`, which must be table number `file_number`."""
        file = fs.open(name)
        try:
            return cls._open(file, file_number, cache)
        except BaseException:
            file.close()
            raise

    @classmethod
    def _open(cls, file: File, file_number: int, cache: BlockCache) -> Table:
        # Retried once with fresh reads: a transient read error is not damage at rest
        # (data blocks retry inside `read_block`).
        for _attempt in range(READ_ATTEMPTS - 1):
            try:
                return cls._open_once(file, file_number, cache)
            except (CorruptionError, FormatError):
                pass
        return cls._open_once(file, file_number, cache)

    @classmethod
    def _open_once(cls, file: File, file_number: int, cache: BlockCache) -> Table:
        path = file.path
        size_bytes = file.size()
        if size_bytes < FOOTER_SIZE_BYTES:
            raise FormatError(
                path, f"not an SSTable: {size_bytes} bytes is shorter than the footer"
            )
        footer_offset = size_bytes - FOOTER_SIZE_BYTES
        footer = file.pread(footer_offset, FOOTER_SIZE_BYTES)
        fields = _FOOTER.unpack_from(footer)
        magic, version = fields[0], fields[1]
        if magic != TABLE_MAGIC:
            if near_miss(magic, TABLE_MAGIC):
                raise CorruptionError(path, footer_offset, f"damaged magic {magic!r}")
            raise FormatError(path, f"not an SSTable: magic {magic!r}, expected {TABLE_MAGIC!r}")
        (checksum,) = _CHECKSUM.unpack_from(footer, _FOOTER.size)
        if checksum != xxhash.xxh3_64_intdigest(footer[: _FOOTER.size]):
            raise CorruptionError(path, footer_offset, "footer checksum mismatch")
        if version != TABLE_VERSION:
            raise FormatError(
                path, f"SSTable format version {version}, this build reads {TABLE_VERSION}"
            )
        index_off, index_len, bloom_off, bloom_len, props_off, props_len = fields[2:]
        for what, offset, length in (
            ("index", index_off, index_len),
            ("bloom", bloom_off, bloom_len),
            ("props", props_off, props_len),
        ):
            if length < CHECKSUM_SIZE_BYTES or offset + length > footer_offset:
                raise CorruptionError(
                    path, footer_offset, f"{what} block ({offset}, {length}) out of bounds"
                )
        props_payload = read_block(file, file_number, props_off, props_len)
        try:
            props = _props_decoder.decode(props_payload)
        except msgspec.DecodeError as exc:
            raise CorruptionError(path, props_off, f"props block undecodable: {exc}") from None
        if props.file_number != file_number:
            raise CorruptionError(
                path, props_off, f"table says it is number {props.file_number}, not {file_number}"
            )
        index_payload = read_block(file, file_number, index_off, index_len)
        try:
            last_keys, offsets, lengths = _index_decoder.decode(index_payload)
        except msgspec.DecodeError as exc:
            raise CorruptionError(path, index_off, f"index block undecodable: {exc}") from None
        if not (len(last_keys) == len(offsets) == len(lengths)) or not last_keys:
            raise CorruptionError(path, index_off, "index block arrays disagree")
        bloom = load_bloom(read_block(file, file_number, bloom_off, bloom_len))
        table = cls(file, props, size_bytes, last_keys, offsets, lengths, bloom, cache)
        assert table.block_count > 0
        return table

    def verify_blocks(self) -> None:
        """Read every data block and check its checksum (raises CorruptionError)."""
        for offset, length in zip(self._offsets, self._lengths, strict=True):
            read_block(self.file, self.file_number, offset, length)

    def _block(self, block_index: int, *, fill_cache: bool = True) -> _DecodedBlock:
        cached = self._cache.get(self.file_number, block_index)
        if cached is not None:
            return cached
        offset = self._offsets[block_index]
        payload = read_block(self.file, self.file_number, offset, self._lengths[block_index])
        try:
            decoded = _block_decoder.decode(payload)
            keys, seqs, values = decoded
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            raise CorruptionError(self.path, offset, f"data block undecodable: {exc}") from None
        block: _DecodedBlock = (keys, seqs, values)
        assert len(keys) == len(seqs) == len(values)
        if fill_cache:
            self._cache.put(self.file_number, block_index, block)
        return block

    def may_contain(self, key: bytes) -> bool:
        return self.props.min_key <= key <= self.props.max_key and key in self._bloom

    def get(self, key: bytes, read_seq: int) -> Version | None:
        """The version of `key` a reader at `read_seq` sees in this table, or None."""
        if not self.may_contain(key):
            return None
        block_index = bisect_left(self._last_keys, key)
        if block_index >= len(self._last_keys):
            return None
        keys, seqs, values = self._block(block_index)
        first = bisect_left(keys, key)
        if first >= len(keys) or keys[first] != key:
            return None
        end = first
        while end < len(keys) and keys[end] == key:
            end += 1
        # Versions are ascending: the last one at or below read_seq is the visible one.
        for index in range(end - 1, first - 1, -1):
            if seqs[index] <= read_seq:
                return (seqs[index], values[index])
        return None

    def scan(
        self, start: bytes, end: bytes | None, *, fill_cache: bool = True
    ) -> Iterator[tuple[bytes, list[Version]]]:
        """Keys in [start, end) with all their versions (ascending seq).

        Compaction passes `fill_cache=False`: a one-pass merge must not evict hot blocks.
        """
        block_index = bisect_left(self._last_keys, start)
        while block_index < len(self._last_keys):
            keys, seqs, values = self._block(block_index, fill_cache=fill_cache)
            index = bisect_left(keys, start)
            count = len(keys)
            while index < count:
                key = keys[index]
                if end is not None and key >= end:
                    return
                versions: list[Version] = []
                while index < count and keys[index] == key:
                    versions.append((seqs[index], values[index]))
                    index += 1
                yield key, versions
            block_index += 1

    def close(self) -> None:
        self.file.close()


# Reads of a block before a checksum mismatch is reported as damage at rest.
READ_ATTEMPTS = 3
# Tries at writing a table that reads back intact. A disk that misplaces writes this often
# is broken; fewer tries would turn a merely bad disk into a failed flush.
WRITE_ATTEMPTS = 10


async def write_verified_table(
    fs: FileSystem,
    directory: str,
    allocate_file_number: Callable[[], int],
    fill: Callable[[TableWriter], Awaitable[None]],
    cache: BlockCache,
    *,
    block_size_bytes: int,
    bloom_false_positive_rate: float,
) -> Table:
    """Write one table with `fill`, read all of it back, and try again if it does not verify.

    Reading back catches a write the disk put in the wrong place while the data is still in
    memory. `fill` must add the same keys on every call. A failed attempt's file is removed;
    after `WRITE_ATTEMPTS` failures CorruptionError names the last one.
    """
    last_error: CorruptionError | FormatError | None = None
    for _attempt in range(WRITE_ATTEMPTS):
        number = allocate_file_number()
        name = table_name(directory, number)
        writer = TableWriter(
            fs,
            name,
            number,
            block_size_bytes=block_size_bytes,
            bloom_false_positive_rate=bloom_false_positive_rate,
        )
        try:
            await fill(writer)
            await writer.finish()
        except BaseException:
            writer.abandon()
            fs.remove(name)
            raise
        try:
            table = Table.open(fs, name, number, cache)
            try:
                table.verify_blocks()
            except BaseException:
                table.close()
                raise
            return table
        except (CorruptionError, FormatError) as exc:
            last_error = exc
            cache.evict_table(number)
            fs.remove(name)
    assert last_error is not None
    raise CorruptionError(
        last_error.path,
        getattr(last_error, "offset", 0),
        f"table did not read back intact in {WRITE_ATTEMPTS} attempts; last: {last_error.problem}",
    )


def near_miss(magic: bytes, expected: bytes) -> bool:
    """A magic a bit or two away from ours is our file damaged, not someone else's file."""
    assert len(magic) == len(expected)
    differing_bits = sum((a ^ b).bit_count() for a, b in zip(magic, expected, strict=True))
    return differing_bits <= 2


def read_block(file: File, file_number: int, offset: int, length: int) -> bytes:
    """The verified payload of the block at (offset, length); CorruptionError otherwise."""
    assert length >= CHECKSUM_SIZE_BYTES
    seed = block_seed(file_number, offset)
    # Reading again tells a transient error (bus, cable: the bytes at rest are fine) from
    # damage at rest; only the latter is reported.
    for _attempt in range(READ_ATTEMPTS):
        data = file.pread(offset, length)
        if len(data) != length:
            raise CorruptionError(file.path, offset, f"short read: {len(data)} of {length} bytes")
        payload = data[:-CHECKSUM_SIZE_BYTES]
        (checksum,) = _CHECKSUM.unpack_from(data, length - CHECKSUM_SIZE_BYTES)
        if checksum == xxhash.xxh3_64_intdigest(payload, seed=seed):
            return payload
    raise CorruptionError(file.path, offset, "block checksum mismatch")


__all__ += [
    "READ_ATTEMPTS",
    "TABLE_MAGIC",
    "TABLE_VERSION",
    "WRITE_ATTEMPTS",
    "near_miss",
    "read_block",
    "table_name",
    "write_verified_table",
]
