"""Fail-stop on damaged data as a user and an operator see it: real files, real TCP.

* The API of a node that met damaged data answers 503 with a STORAGE_FAULT problem naming
  the file and offset (and /metrics says so), instead of serving anything.
* `mox start` on a data directory with a damaged WAL record exits with code 3 and one
  line naming the file and offset, after a `node.storage_fault` log event; no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_api_support import Cluster, bearer, bootstrap
from test_cluster_support import ProcCluster, child_env, mox_command

from mox.storage.record import SEGMENT_HEADER_SIZE_BYTES


def _flip_every(path: Path, step_bytes: int) -> list[int]:
    """Flip one bit every `step_bytes` bytes of a real file; the offsets flipped."""
    data = bytearray(path.read_bytes())
    offsets = list(range(3, len(data), step_bytes))
    for offset in offsets:
        data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    return offsets


def test_api_answers_503_storage_fault_naming_file_and_offset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mox.node")
    seen: dict[str, Any] = {}

    async def main() -> None:
        cluster = await Cluster(tmp_path, 1).start()
        try:
            async with aiohttp.ClientSession() as session:
                running = cluster.nodes[1]
                url = running.url
                key, _ = await bootstrap(session, url, "acme")
                async with session.get(f"{url}/api/tenant", headers=bearer(key)) as resp:
                    assert resp.status == 200, await resp.text()
                # The tenant and its key go from the memtable into a table on disk.
                await running.node.lsm.flush()
                tables = sorted((tmp_path / "node1" / "lsm").glob("*.sst"))
                assert tables
                flipped = {str(t): _flip_every(t, 256) for t in tables}
                # Authentication reads the key from the damaged table.
                async with session.get(f"{url}/api/tenant", headers=bearer(key)) as resp:
                    seen["status"] = resp.status
                    seen["content_type"] = resp.headers.get("Content-Type", "")
                    seen["body"] = json.loads(await resp.text())
                    seen["retry_after"] = resp.headers.get("Retry-After")
                async with session.get(f"{url}/health") as resp:
                    seen["health"] = (resp.status, json.loads(await resp.text()))
                async with session.get(f"{url}/metrics") as resp:
                    seen["metrics"] = (resp.status, await resp.text())
                seen["flipped"] = flipped
                seen["stopped"] = running.node.stopped
        finally:
            await cluster.stop()

    asyncio.run(main())
    assert seen["status"] == 503
    assert str(seen["content_type"]).startswith("application/problem+json")
    body = seen["body"]
    assert isinstance(body, dict)
    assert body["code"] == "STORAGE_FAULT"
    assert body["path"].endswith(".sst")
    flipped = seen["flipped"]
    assert isinstance(flipped, dict)
    assert any(
        path.endswith(body["path"]) and any(0 <= o - body["offset"] < 5120 for o in offsets)
        for path, offsets in flipped.items()
    ), (body, flipped)
    assert f"at offset {body['offset']}" in body["detail"]
    assert "stopped on a storage fault" in body["detail"]
    assert seen["retry_after"] is None  # retrying this node will not help
    assert seen["stopped"] is True
    health_status, health_body = seen["health"]
    assert health_status == 503
    assert health_body["code"] == "STORAGE_FAULT"
    metrics_status, metrics_text = seen["metrics"]
    assert metrics_status == 200
    assert "mox_node_storage_fault 1.0" in metrics_text
    assert "mox_snapshots_taken_total 0.0" in metrics_text
    assert "mox_snapshots_installed_total 0.0" in metrics_text
    logged = [r.getMessage() for r in caplog.records if r.name == "mox.node"]
    assert any(m.startswith("node.storage_fault ") and body["path"] in m for m in logged)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"node exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200 and json.loads(resp.read())["role"] == "leader":
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError("node did not become a healthy leader")


def test_start_on_a_damaged_wal_record_exits_3_naming_file_and_offset(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path, size=1)
    # Two runs: each election appends a no-op in its own flush, so the first record is not
    # in the final flush (where damage would look like a torn write).
    for _ in range(2):
        cluster.start_node(1)
        _wait_healthy(cluster.url(1), cluster.processes[1])
        assert cluster.stop_node(1) == 0
    wal_dir = cluster.data_dir(1) / "wal"
    segments = sorted(wal_dir.glob("*.seg"))
    assert segments
    first = segments[0]
    data = bytearray(first.read_bytes())
    data[SEGMENT_HEADER_SIZE_BYTES + 20] ^= 0x01  # inside the first record's header
    first.write_bytes(bytes(data))

    done = subprocess.run(
        mox_command("start", "--config", str(cluster.config_path(1))),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith("mox: node 1 stopped on a storage fault: ")
    assert f"{first} at offset {SEGMENT_HEADER_SIZE_BYTES}" in last or (
        f"{first.name} at offset {SEGMENT_HEADER_SIZE_BYTES}" in last
    )
    events = [json.loads(line) for line in lines if line.startswith("{")]
    (fault,) = [e for e in events if e.get("event") == "node.storage_fault"]
    assert fault["offset"] == SEGMENT_HEADER_SIZE_BYTES
    assert fault["path"].endswith(first.name)
    assert fault["during"] == "recovery"
    # The damage stays: starting again fails the same way (no silent repair, no skip).
    again = subprocess.run(
        mox_command("start", "--config", str(cluster.config_path(1))),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert again.returncode == 3
    assert again.stderr.strip().splitlines()[-1] == last
