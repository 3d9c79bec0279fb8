"""`mox bench cluster` end to end, short: real processes, numbers in the JSON, etcd optional."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_cluster_support import child_env, mox_command


def run_bench(tmp_path: Path, *extra: str, path_env: str | None = None) -> tuple[str, dict]:  # type: ignore[type-arg]
    out = tmp_path / "bench.json"
    env = child_env()
    if path_env is not None:
        env["PATH"] = path_env
    result = subprocess.run(
        mox_command(
            "bench", "cluster", "--duration", "0.5", "--clients", "1,4", "--json", str(out), *extra
        ),
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, json.loads(out.read_text())


def check_rows(document: dict, system: str) -> None:  # type: ignore[type-arg]
    rows = [r for r in document["results"] if r["system"] == system]
    assert [(r["workload"], r["clients"]) for r in rows] == [
        ("write", 1),
        ("write", 4),
        ("read", 4),
    ]
    for row in rows:
        assert row["ops"] > 0, row
        # On a loaded machine an election can happen mid-run (default timeouts 150-300 ms):
        # a few requests then get 503 (no leader yet). Any other error, or errors rivalling
        # the successes, is a broken bench or node.
        if row["errors"]:
            assert row["first_error"].startswith("HTTP 503"), row
            assert row["errors"] < row["ops"], row
        else:
            assert row["first_error"] == "", row
        assert 0 < row["latency_ms_p50"] <= row["latency_ms_p99"], row


def test_bench_without_etcd_says_so_and_measures_mox(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    stdout, document = run_bench(tmp_path, path_env=str(empty))
    assert "etcd: not installed" in stdout
    check_rows(document, "mox")
    assert not [r for r in document["results"] if r["system"] == "etcd"]


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
@pytest.mark.soak
def test_bench_beside_etcd(tmp_path: Path) -> None:
    stdout, document = run_bench(tmp_path)
    check_rows(document, "mox")
    check_rows(document, "etcd")
    assert "x" in stdout and "throughput" in stdout  # the ratio column
