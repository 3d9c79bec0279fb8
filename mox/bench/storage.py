"""`mox bench storage`: durable WAL appends and recovery beside plain-syscall baselines.

Appends: for record bodies of 128 B and 4 KiB and batches of 1, 32 and 256, the WAL appends a
batch and awaits `commit()` (one write_sync per flush), for each backend (pwrite, io_uring).
The baseline, measured in the same run, is the floor for the same durable work: a loop that
writes each batch's bytes (already encoded: record header + body) with one `os.pwrite` into
a preallocated file, then one `os.fdatasync`. Same bytes synced per batch, same number of
fdatasyncs: the WAL's segment is sized to hold the whole cell, as the baseline's file is
preallocated to, so no segment roll (file creation, header and directory syncs) falls
inside a cell.

Interleaving: on a shared machine the fsync rate swings by 10x from second to second with
other processes' I/O, so a cell's variants (baseline, io_uring floor, WAL over pwrite, WAL
over io_uring) take turns in chunks of a few batches (a tenth of a round each), `rounds`
times over (5 by default); each variant's rate is its records over its summed time. Every
variant thus sees the same disk and load, moment by moment. Ratio = WAL / baseline; the
goal is 0.9 or better.

Beside them, per cell: the **io_uring floor**, a bare liburing loop (one linked writev +
fdatasync, `io_uring_submit_and_wait`, no asyncio, no WAL) over the same bytes, which shows
what the kernel and the binding allow before any of our code runs; and the **CPU time per
record** (`time.process_time`, summed like the time) of the WAL and of the baseline, which separates
the Python work per record from the fsync wait (and is much less disturbed by other
processes' disk I/O than the rates are).

Recovery: the time `Wal.open` takes to verify and index N records (1M by default), beside a
floor that reads the same segment files and hashes them with xxh3 in 4 KiB blocks.

LSM rows come from `mox.bench.lsm_bench.run_lsm_bench` when that module is present.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import click
import liburing
import xxhash
from rich.console import Console
from rich.table import Table

from mox.io.real import RealFileSystem
from mox.io.uring import probe_ring
from mox.storage.record import RECORD_HEADER_SIZE_BYTES
from mox.storage.wal import Wal

__all__ = ["Row", "command", "run_storage_bench"]

Row = tuple[str, float, str, float | None]

RECORD_SIZES_BYTES = (128, 4096)
BATCH_SIZES = (1, 32, 256)
SEGMENT_SIZE_BYTES = 64 * 1000**2
CHUNKS_PER_ROUND = 10


def _cell_records(records: int, batch: int, quick: bool) -> int:
    """Records per cell: `records`, bounded so a cell does at most a fixed number of fsyncs."""
    max_flushes = 60 if quick else 400
    count = min(records, batch * max_flushes)
    return max(batch, count - count % batch)


def _fresh_dir(base: str, name: str) -> str:
    path = os.path.join(base, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _preallocated(path: str, size_bytes: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    os.posix_fallocate(fd, 0, size_bytes)
    os.fsync(fd)
    return fd


def _segment_size_bytes(body_bytes: int, count: int) -> int:
    """A segment (or baseline file) that holds `count` records: no roll inside a cell."""
    return max(SEGMENT_SIZE_BYTES, count * (RECORD_HEADER_SIZE_BYTES + body_bytes) + 2 * 4096)


class _Variant(abc.ABC):
    """One way of making batches durable; `flush(n)` makes n more batches durable. Time and
    CPU time add up over every chunk it runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.elapsed_s = 0.0
        self.cpu_s = 0.0
        self.records = 0

    @abc.abstractmethod
    def flush(self, batches: int) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def timed(self, batches: int, batch: int) -> None:
        started = time.perf_counter()
        cpu_started = time.process_time()
        self.flush(batches)
        self.cpu_s += time.process_time() - cpu_started
        self.elapsed_s += time.perf_counter() - started
        self.records += batches * batch


class _Baseline(_Variant):
    """os.pwrite of the batch's pre-encoded bytes + os.fdatasync, into a preallocated file."""

    def __init__(self, directory: str, body_bytes: int, batch: int, total: int) -> None:
        super().__init__("baseline")
        self._buffer = os.urandom(RECORD_HEADER_SIZE_BYTES + body_bytes) * batch
        self._fd = _preallocated(
            os.path.join(directory, "baseline"), _segment_size_bytes(body_bytes, total)
        )
        self._offset = 4096

    def flush(self, batches: int) -> None:
        fd, buffer, offset = self._fd, self._buffer, self._offset
        for _ in range(batches):
            os.pwrite(fd, buffer, offset)
            os.fdatasync(fd)
            offset += len(buffer)
        self._offset = offset

    def close(self) -> None:
        os.close(self._fd)


class _UringFloor(_Variant):
    """A bare liburing loop: per batch one writev linked to one fdatasync, submitted and
    waited for with one io_uring_submit_and_wait (no asyncio, no WAL)."""

    def __init__(self, directory: str, body_bytes: int, batch: int, total: int) -> None:
        super().__init__("io_uring floor")
        self._buffer = os.urandom(RECORD_HEADER_SIZE_BYTES + body_bytes) * batch
        self._iov = liburing.Iovec([self._buffer])
        self._ring = liburing.Ring()
        self._cqe = liburing.Cqe()
        liburing.io_uring_queue_init(8, self._ring, 0)
        self._fd = _preallocated(
            os.path.join(directory, "uring-floor"), _segment_size_bytes(body_bytes, total)
        )
        self._offset = 4096

    def flush(self, batches: int) -> None:
        ring, cqe, fd = self._ring, self._cqe, self._fd
        for _ in range(batches):
            sqe = liburing.io_uring_get_sqe(ring)
            liburing.io_uring_prep_writev(sqe, fd, self._iov, self._offset)
            liburing.io_uring_sqe_set_flags(sqe, liburing.IOSQE_IO_LINK)
            sqe = liburing.io_uring_get_sqe(ring)
            liburing.io_uring_prep_fsync(sqe, fd, liburing.IORING_FSYNC_DATASYNC)
            liburing.io_uring_submit_and_wait(ring, 2)
            for _ in range(2):
                liburing.io_uring_wait_cqe(ring, cqe)
                try:
                    result = cqe[0].res  # raises OSError for a failed operation
                finally:
                    liburing.io_uring_cq_advance(ring, 1)
                assert result >= 0
            self._offset += len(self._buffer)

    def close(self) -> None:
        os.close(self._fd)
        liburing.io_uring_queue_exit(self._ring)


class _WalAppends(_Variant):
    """The WAL: `batch` appends, then `await wal.commit()`, per batch."""

    def __init__(
        self,
        directory: str,
        backend: str,
        body_bytes: int,
        batch: int,
        total: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(backend)
        self._loop = loop
        self._batch = batch
        self._body = os.urandom(body_bytes)
        self._fs = RealFileSystem(_fresh_dir(directory, f"wal-{backend}"), backend=backend)
        self._wal = loop.run_until_complete(
            Wal.open(
                self._fs,
                segment_size_bytes=_segment_size_bytes(body_bytes, total),
                cluster_id="bench",
                node_id=1,
            )
        )

    async def _appends(self, batches: int) -> None:
        wal, body, batch = self._wal, self._body, self._batch
        for _ in range(batches):
            for _ in range(batch):
                wal.append(1, body)
            await wal.commit()

    def flush(self, batches: int) -> None:
        self._loop.run_until_complete(self._appends(batches))

    def close(self) -> None:
        assert self._wal.durable_seq == self.records
        assert self._wal.segment_count == 1, "a segment roll inside the cell"
        self._wal.close()
        self._fs.close()


def _append_cell(
    base: str, backends: list[str], body_bytes: int, batch: int, count: int, rounds: int
) -> dict[str, _Variant]:
    """Every variant of one cell, interleaved in chunks of a few batches: each round runs
    `count` records through each variant, CHUNKS_PER_ROUND chunks at a time in turn, so that
    every variant sees the same disk and the same load from moment to moment."""
    directory = _fresh_dir(base, "cell")
    total = count * rounds
    batches = count // batch
    chunk = max(1, batches // CHUNKS_PER_ROUND)
    loop = asyncio.new_event_loop()
    variants: list[_Variant] = []
    try:
        variants.append(_Baseline(directory, body_bytes, batch, total))
        if "io_uring" in backends:
            variants.append(_UringFloor(directory, body_bytes, batch, total))
        for backend in backends:
            variants.append(_WalAppends(directory, backend, body_bytes, batch, total, loop))
        for _ in range(rounds):
            done = 0
            while done < batches:
                n = min(chunk, batches - done)
                for variant in variants:
                    variant.timed(n, batch)
                done += n
        assert all(v.records == variants[0].records for v in variants)
    finally:
        for variant in variants:
            variant.close()
        loop.close()
        shutil.rmtree(directory, ignore_errors=True)
    return {variant.name: variant for variant in variants}


async def _fill_wal(directory: str, count: int, body_bytes: int) -> None:
    fs = RealFileSystem(directory, backend="pwrite")
    body = os.urandom(body_bytes)
    wal = await Wal.open(fs, segment_size_bytes=SEGMENT_SIZE_BYTES, cluster_id="bench", node_id=1)
    batch = 4096
    done = 0
    while done < count:
        n = min(batch, count - done)
        for _ in range(n):
            wal.append(1, body)
        await wal.commit()
        done += n
    wal.close()
    fs.close()


async def _open_wal(directory: str) -> int:
    fs = RealFileSystem(directory, backend="pwrite")
    wal = await Wal.open(fs, segment_size_bytes=SEGMENT_SIZE_BYTES, cluster_id="bench", node_id=1)
    last = wal.last_seq
    wal.close()
    fs.close()
    return last


def _hash_floor(directory: str) -> float:
    """Seconds to read every segment and xxh3 it in 4 KiB blocks."""
    wal_dir = os.path.join(directory, "wal")
    started = time.perf_counter()
    digest = 0
    for name in sorted(os.listdir(wal_dir)):
        with open(os.path.join(wal_dir, name), "rb") as handle:
            data = handle.read()
        view = memoryview(data)
        for start in range(0, len(data), 4096):
            digest ^= xxhash.xxh3_64_intdigest(view[start : start + 4096])
    elapsed = time.perf_counter() - started
    assert digest >= 0
    return elapsed


def _recovery(base: str, count: int) -> tuple[float, float]:
    directory = _fresh_dir(base, "recovery")
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_fill_wal(directory, count, 100))
        _hash_floor(directory)  # warm the page cache for both measurements alike
        started = time.perf_counter()
        last = loop.run_until_complete(_open_wal(directory))
        recovery_s = time.perf_counter() - started
        assert last == count, (last, count)
    finally:
        loop.close()
    return recovery_s, _hash_floor(directory)


def run_storage_bench(
    data_dir: str,
    *,
    records: int = 20_000,
    recovery_records: int = 1_000_000,
    rounds: int = 5,
    quick: bool = False,
    lsm_keys: int = 100_000,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """Run every measurement under `data_dir`; return the rows and facts about the run."""
    say = progress or (lambda _msg: None)
    ring, reason = probe_ring(data_dir)
    backends = ["pwrite"]
    if ring is not None:
        ring.close()
        backends.append("io_uring")
    facts: dict[str, Any] = {
        "io_uring": reason,
        "backends": backends,
        "load_average_before": os.getloadavg(),
    }
    rows: list[Row] = []
    for body_bytes in RECORD_SIZES_BYTES:
        for batch in BATCH_SIZES:
            count = _cell_records(records, batch, quick)
            say(f"appends: {body_bytes} B records, batch {batch}, {count} records x {rounds}")
            cell = _append_cell(data_dir, backends, body_bytes, batch, count, rounds)
            baseline = cell["baseline"]
            baseline_rate = baseline.records / baseline.elapsed_s
            for backend in backends:
                wal = cell[backend]
                metric = f"wal append {body_bytes} B batch {batch} ({backend})"
                rows.append((metric, wal.records / wal.elapsed_s, "records/s", baseline_rate))
            if "io_uring floor" in cell:
                floor = cell["io_uring floor"]
                metric = f"io_uring floor {body_bytes} B batch {batch} (liburing loop)"
                rows.append((metric, floor.records / floor.elapsed_s, "records/s", baseline_rate))
            for backend in backends:
                wal = cell[backend]
                metric = f"wal cpu {body_bytes} B batch {batch} ({backend})"
                rows.append(
                    (
                        metric,
                        wal.cpu_s / wal.records * 1e6,
                        "us/record",
                        baseline.cpu_s / baseline.records * 1e6,
                    )
                )
    facts["load_average_after_appends"] = os.getloadavg()
    say(f"recovery: {recovery_records} records")
    recovery_s, floor_s = _recovery(data_dir, recovery_records)
    rows.append((f"wal recovery {recovery_records} records", recovery_s, "s", floor_s))
    rows.append(
        (
            f"wal recovery {recovery_records} records rate",
            recovery_records / recovery_s,
            "records/s",
            recovery_records / floor_s,
        )
    )
    if importlib.util.find_spec("mox.bench.lsm_bench") is not None:
        module = importlib.import_module("mox.bench.lsm_bench")
        lsm_dir = _fresh_dir(data_dir, "lsm")
        say(f"lsm: {lsm_keys} keys")
        rows.extend(module.run_lsm_bench(lsm_dir, lsm_keys))
        facts["lsm"] = "mox.bench.lsm_bench"
    else:
        facts["lsm"] = "mox.bench.lsm_bench not present: no LSM rows"
    return rows, facts


def _ratio(value: float, baseline: float | None, unit: str) -> float | None:
    if baseline is None or baseline == 0 or value == 0:
        return None
    # For times, smaller is better: express the ratio as speed relative to the baseline.
    return baseline / value if unit in ("s", "ms", "us", "us/record") else value / baseline


def _format(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


@click.command("storage")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write the rows as JSON to this file.",
)
@click.option(
    "--records",
    type=click.IntRange(min=256),
    default=20_000,
    show_default=True,
    help="Records per append cell (cells also stop at a fixed number of fsyncs).",
)
@click.option(
    "--recovery-records",
    type=click.IntRange(min=1000),
    default=1_000_000,
    show_default=True,
    help="Records written, then recovered, for the recovery rows.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 50),
    default=None,
    help="Interleaved rounds per append cell; the best counts (default 5, 1 with --quick).",
)
@click.option("--quick", is_flag=True, help="Small counts, one round: a smoke run (CI).")
@click.option(
    "--dir",
    "base_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to put the benchmark files (default: a temporary directory).",
)
def command(
    json_path: str | None,
    records: int,
    recovery_records: int,
    rounds: int | None,
    quick: bool,
    base_dir: str | None,
) -> None:
    """Durable WAL appends/s (group commit) and recovery time, beside baselines; LSM rows."""
    console = Console(stderr=True)
    if quick:
        records = min(records, 2048)
        recovery_records = min(recovery_records, 20_000)
    if rounds is None:
        rounds = 1 if quick else 5
    lsm_keys = 5_000 if quick else 100_000
    created = base_dir is None
    data_dir = tempfile.mkdtemp(prefix="mox-bench-storage-") if base_dir is None else base_dir
    os.makedirs(data_dir, exist_ok=True)
    try:
        rows, facts = run_storage_bench(
            data_dir,
            records=records,
            recovery_records=recovery_records,
            rounds=rounds,
            quick=quick,
            lsm_keys=lsm_keys,
            progress=lambda msg: console.log(msg) if sys.stderr.isatty() else None,
        )
    finally:
        if created:
            with contextlib.suppress(OSError):
                shutil.rmtree(data_dir)
    table = Table(title="mox bench storage")
    for column in ("metric", "value", "unit", "baseline", "ratio"):
        table.add_column(column, justify="left" if column in ("metric", "unit") else "right")
    out_rows: list[dict[str, Any]] = []
    for metric, value, unit, baseline in rows:
        ratio = _ratio(value, baseline, unit)
        table.add_row(
            metric,
            _format(value),
            unit,
            "-" if baseline is None else _format(baseline),
            "-" if ratio is None else f"{ratio:.2f}x",
        )
        out_rows.append(
            {"metric": metric, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio}
        )
    Console().print(table)
    click.echo(f"io_uring: {facts['io_uring']}; lsm: {facts['lsm']}")
    before = ", ".join(f"{x:.2f}" for x in facts["load_average_before"])
    after = ", ".join(f"{x:.2f}" for x in facts["load_average_after_appends"])
    click.echo(f"load average (1, 5, 15 min): {before} before the appends, {after} after")
    if json_path is not None:
        document = {
            "command": "mox bench storage" + (" --quick" if quick else ""),
            "records": records,
            "recovery_records": recovery_records,
            "rounds": rounds,
            "facts": facts,
            "rows": out_rows,
        }
        with open(json_path, "w") as handle:
            json.dump(document, handle, indent=2)
