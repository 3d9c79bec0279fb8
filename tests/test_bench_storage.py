"""`mox bench storage --quick --json` runs through the CLI and reports every row (not speeds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def test_bench_storage_quick_writes_every_row(tmp_path: Any) -> None:
    out = tmp_path / "bench.json"
    env = dict(os.environ, COLUMNS="200")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mox.cli",
            "bench",
            "storage",
            "--quick",
            "--json",
            str(out),
            "--dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    metrics = [row["metric"] for row in document["rows"]]
    backends = document["facts"]["backends"]
    assert "pwrite" in backends
    for size in (128, 4096):
        for batch in (1, 32, 256):
            for backend in backends:
                assert f"wal append {size} B batch {batch} ({backend})" in metrics
    assert any(m.startswith("wal recovery 20000 records") for m in metrics)
    for row in document["rows"]:
        assert row["value"] > 0, row
        if row["metric"].startswith("wal append"):
            assert row["unit"] == "records/s"
            assert row["baseline"] > 0 and row["ratio"] > 0
    if document["facts"]["lsm"] == "mox.bench.lsm_bench":
        assert any(m.startswith("lsm ") for m in metrics)
    assert "mox bench storage" in result.stdout
    assert "baseline" in result.stdout


def test_bench_storage_rejects_bad_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mox.cli", "bench", "storage", "--records", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--records" in result.stderr
    assert "Traceback" not in result.stderr
