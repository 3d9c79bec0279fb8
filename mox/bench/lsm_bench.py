"""Benchmark of the LSM state store on real files, beside in-memory baselines.

`run_lsm_bench(data_dir, n_keys)` loads `n_keys` keys (100-byte values, tenant-scoped keys,
random order) in write batches of 100, then measures point gets of present and absent keys,
prefix scans of one tenant, and reopening the store. Baselines run the same operations on a
`dict` (gets) and a `SortedDict` (puts, scans) in the same process, so the numbers say what
the storage engine costs over plain memory. `mox bench storage` prints these rows; running
this module directly does too (`python -m mox.bench.lsm_bench --keys 1000000 DIR`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time

from sortedcontainers import SortedDict

from mox.io.real import RealFileSystem
from mox.storage.lsm import LsmOptions, LsmStore

__all__ = ["run_lsm_bench"]

Row = tuple[str, float, str, float | None]

_BATCH_KEYS = 100
_TENANTS = 100
_VALUE_BYTES = 100
_GET_SAMPLES = 20_000
_SCAN_TENANTS = 10
# Compaction work done after each batch, as a node's background task would interleave it.
_COMPACT_STEP_BYTES = 256 * 1024


def _key(i: int) -> bytes:
    return b"t/%04d/talent/%010d" % (i % _TENANTS, i)


def _percentile_us(samples_ns: list[int], fraction: float) -> float:
    ordered = sorted(samples_ns)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000.0


def run_lsm_bench(data_dir: str, n_keys: int) -> list[Row]:
    """Rows of (metric, value, unit, baseline or None). `data_dir` should be empty."""
    if n_keys < _BATCH_KEYS:
        raise ValueError(f"n_keys must be at least {_BATCH_KEYS}, got {n_keys}")
    return asyncio.run(_run(data_dir, n_keys))


async def _run(data_dir: str, n_keys: int) -> list[Row]:
    rng = random.Random(42)
    order = list(range(n_keys))
    rng.shuffle(order)
    value = bytes(rng.randrange(256) for _ in range(_VALUE_BYTES))
    batches = [
        [(_key(i), value) for i in order[start : start + _BATCH_KEYS]]
        for start in range(0, n_keys, _BATCH_KEYS)
    ]
    rows: list[Row] = []

    # Baseline puts: the same batches into a SortedDict.
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    sorted_model: SortedDict = SortedDict()
    for batch in batches:
        for k, v in batch:
            sorted_model[k] = v
    baseline_put_s = time.perf_counter() - t0
    baseline_put_cpu_s = time.process_time() - cpu0

    fs = RealFileSystem(data_dir)
    options = LsmOptions()
    store = await LsmStore.open(fs, options)
    memtable_s = 0.0
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for index, batch in enumerate(batches, start=1):
        t_batch = time.perf_counter()
        store.write_batch(batch, index)
        memtable_s += time.perf_counter() - t_batch
        if store.needs_flush:
            await store.flush()
        if store.needs_compaction:
            await store.compact_step(_COMPACT_STEP_BYTES)
    await store.flush()
    while await store.compact_step(4 * 1024 * 1024):
        pass
    load_s = time.perf_counter() - t0
    load_cpu_s = time.process_time() - cpu0
    rows.append(
        (
            "lsm put, write_batch of 100, memtable only",
            n_keys / memtable_s,
            "keys/s",
            n_keys / baseline_put_s,
        )
    )
    rows.append(
        ("lsm put incl. flush + compaction", n_keys / load_s, "keys/s", n_keys / baseline_put_s)
    )
    # Per CPU second too: on a shared machine wall-clock rates say as much about the
    # neighbours as about the engine.
    rows.append(
        (
            "lsm put incl. flush + compaction, per CPU second",
            n_keys / load_cpu_s,
            "keys/s",
            n_keys / baseline_put_cpu_s,
        )
    )
    rows.append(
        (
            "lsm size on disk",
            sum(store.level_sizes_bytes()) / 1e6,
            "MB",
            n_keys * (len(_key(0)) + _VALUE_BYTES) / 1e6,
        )
    )

    plain = dict(sorted_model.items())
    present = [_key(rng.randrange(n_keys)) for _ in range(_GET_SAMPLES)]
    absent = [
        b"t/%04d/talent/x%09d" % (rng.randrange(_TENANTS), rng.randrange(n_keys))
        for _ in range(_GET_SAMPLES)
    ]
    for label, keys in (("present", present), ("absent", absent)):
        lsm_ns: list[int] = []
        base_ns: list[int] = []
        for k in keys:
            t = time.perf_counter_ns()
            got = store.get(k)
            lsm_ns.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            expected = plain.get(k)
            base_ns.append(time.perf_counter_ns() - t)
            assert got == expected
        for name, fraction in (("p50", 0.50), ("p99", 0.99)):
            rows.append(
                (
                    f"lsm get {label} key {name}",
                    _percentile_us(lsm_ns, fraction),
                    "us",
                    _percentile_us(base_ns, fraction),
                )
            )

    tenants = [b"t/%04d/" % t for t in range(_SCAN_TENANTS)]
    t0 = time.perf_counter()
    lsm_rows = sum(1 for prefix in tenants for _ in store.scan_prefix(prefix))
    lsm_scan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base_rows = 0
    for prefix in tenants:
        for k in sorted_model.irange(prefix, prefix[:-1] + b"0"):
            _ = sorted_model[k]
            base_rows += 1
    base_scan_s = time.perf_counter() - t0
    assert lsm_rows == base_rows
    rows.append(("lsm prefix scan", lsm_rows / lsm_scan_s, "rows/s", base_rows / base_scan_s))

    rows.append(
        (
            "lsm levels (tables per level)",
            float(sum(1 for n in store.level_table_counts() if n)),
            "levels",
            None,
        )
    )
    await store.close()
    for verify, label in ((True, "every block verified"), (False, "footers and indexes only")):
        t0 = time.perf_counter()
        reopened = await LsmStore.open(fs, LsmOptions(verify_blocks_on_open=verify))
        open_s = time.perf_counter() - t0
        assert reopened.durable_applied_index == len(batches)
        await reopened.close()
        rows.append((f"lsm open with {n_keys} keys, {label}", open_s * 1000.0, "ms", None))
    fs.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("data_dir", help="an empty directory for the store's files")
    parser.add_argument("--keys", type=int, default=100_000, help="number of keys to load")
    args = parser.parse_args(argv)
    if os.path.exists(args.data_dir) and os.listdir(args.data_dir):
        print(f"error: data_dir {args.data_dir} is not empty", file=sys.stderr)
        return 2
    if args.keys < _BATCH_KEYS:
        print(f"error: --keys must be at least {_BATCH_KEYS}", file=sys.stderr)
        return 2
    print(f"{'metric':<52} {'value':>14} {'unit':<7} {'baseline':>14}")
    for metric, value, unit, baseline in run_lsm_bench(args.data_dir, args.keys):
        base = f"{baseline:14.2f}" if baseline is not None else f"{'-':>14}"
        print(f"{metric:<52} {value:14.2f} {unit:<7} {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
