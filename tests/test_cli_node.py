"""`mox start` and `mox dev` as a user runs them: real processes, exit codes, messages."""

from __future__ import annotations

import asyncio
import fcntl
import signal
import socket
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_cluster_support import (
    ADMIN_TOKEN,
    TEST_WAL_SEGMENT_SIZE,
    ProcCluster,
    bootstrap_tenant,
    child_env,
    health,
    mox_command,
    request,
)

from mox.io.ports import free_ports, port_is_free
from mox.node.cli import dump_toml, load_default_template, node_config_documents


def run_mox(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mox_command(*args),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout_s,
        check=False,
    )


def single_node_config(tmp_path: Path, **sections: dict[str, Any]) -> tuple[Path, str]:
    """A one-node cluster's config file and the node's API URL."""
    client, cluster = free_ports(2)
    document = node_config_documents(load_default_template(), [client], [cluster])[1]
    document["storage"]["wal_segment_size"] = TEST_WAL_SEGMENT_SIZE
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    path = tmp_path / "mox.toml"
    path.write_text(dump_toml(document))
    return path, f"http://127.0.0.1:{client}"


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("consensus", {"heartbeat_interval": "500ms"}, "consensus.heartbeat_interval"),
        ("storage", {"fsync": False}, "storage.fsync"),
        ("consensus", {"protocol": "vsr"}, "consensus.protocol"),
        ("limits", {"max_message_siz": "1MB"}, "limits.max_message_siz"),
        ("cluster", {"node_id": 7}, "cluster.node_id"),
    ],
)
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, section: str, values: dict[str, Any], key: str
) -> None:
    path, _ = single_node_config(tmp_path, **{section: values})
    result = run_mox("start", "--config", str(path))
    assert result.returncode == 2, result
    assert key in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_or_malformed_config_file_exits_2(tmp_path: Path) -> None:
    missing = run_mox("start", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2
    assert "absent.toml" in missing.stderr and "cannot read" in missing.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[cluster\nnode_id = 1\n")
    result = run_mox("start", "--config", str(broken))
    assert result.returncode == 2
    assert "broken.toml" in result.stderr and "not valid TOML" in result.stderr
    assert "Traceback" not in missing.stderr + result.stderr


@pytest.mark.parametrize("which", ["client", "cluster"])
def test_busy_port_exits_2_naming_the_key(tmp_path: Path, which: str) -> None:
    path, _ = single_node_config(tmp_path)
    document = tomllib.loads(path.read_text())
    node = document["cluster"]["nodes"][0]
    port = node["client_port"] if which == "client" else node["cluster_port"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = run_mox("start", "--config", str(path))
    assert result.returncode == 2, result
    key = "api.bind_address" if which == "client" else "cluster.nodes[0].cluster_port"
    assert key in result.stderr and str(port) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_config_durations_become_runtime_ticks() -> None:
    from mox.config import parse_config
    from mox.node.cli import node_config_from

    document = node_config_documents(load_default_template(), [8080], [8180])[1]
    document["consensus"].update(
        election_timeout_min="200ms", election_timeout_max="400ms", heartbeat_interval="20ms"
    )
    document["storage"].update(wal_segment_size="1MiB", cache_size="8MiB")
    node = node_config_from(parse_config(document))
    assert node.tick_interval_s == pytest.approx(0.004)
    assert (node.heartbeat_ticks, node.election_timeout_ticks_min) == (5, 50)
    assert node.election_timeout_ticks_max == 100
    assert node.wal_segment_size_bytes == 1024 * 1024
    assert node.lsm_options.block_cache_blocks == 8 * 1024 * 1024 // 4096
    # A heartbeat just under the election timeout still leaves the election above it.
    document["consensus"].update(
        election_timeout_min="150ms", election_timeout_max="151ms", heartbeat_interval="149ms"
    )
    tight = node_config_from(parse_config(document))
    assert tight.heartbeat_ticks < tight.election_timeout_ticks_min
    assert tight.election_timeout_ticks_min < tight.election_timeout_ticks_max


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    async def poll() -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert process.poll() is None, f"exited with {process.returncode}"
                if await health(session, url) is not None:
                    return
                await asyncio.sleep(0.05)
        raise AssertionError(f"{url} not healthy in {timeout_s} s")

    asyncio.run(poll())


def test_data_dir_of_another_cluster_or_in_use_is_refused(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path, size=1)
    cluster.start_node(1)
    try:
        wait_healthy(cluster.url(1), cluster.processes[1])
        # A second process on the same data directory is refused while the first runs.
        twin = run_mox("start", "--config", str(cluster.config_path(1)))
        assert twin.returncode == 2, twin
        assert "in use by another running node" in twin.stderr
        assert str(cluster.data_dir(1)) in twin.stderr
    finally:
        assert cluster.stop_node(1) == 0
    # The same directory under another cluster id: refused, naming the directory.
    document = dict(cluster.documents[1])
    document["cluster"] = {**document["cluster"], "cluster_id": "someone-else"}
    other = tmp_path / "other.toml"
    other.write_text(dump_toml(document))
    result = run_mox("start", "--config", str(other))
    assert result.returncode == 2, result
    assert "data directory" in result.stderr and "someone-else" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_start_on_each_event_loop_and_clean_sigterm(tmp_path: Path, loop_name: str) -> None:
    path, url = single_node_config(tmp_path)
    process = subprocess.Popen(
        [*mox_command("start", "--config", str(path), "--loop", loop_name)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env(),
    )
    try:
        wait_healthy(url, process)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=20)[0].decode()
    assert process.returncode == 0, output
    assert f'"event_loop": "{loop_name}"' in output
    assert '"event": "node.stopped"' in output
    assert "Traceback" not in output


def dev_process(data_dir: Path, base_port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        mox_command("dev", "--data-dir", str(data_dir), "--base-port", str(base_port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        start_new_session=True,
    )


class OutputReader:
    """Drains a process's stdout in a thread (a full pipe would stall the process) and
    lets the test wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        self._stream = process.stdout
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def wait_for(self, marker: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(marker in line for line in list(self.lines)):
                return
            if not self._thread.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{marker!r} not seen; output:\n{self.text()}")

    def finish(self, timeout_s: float = 30) -> str:
        self._thread.join(timeout_s)
        return self.text()

    def text(self) -> str:
        return "".join(self.lines)


def free_base_port() -> int:
    """A base port whose API and cluster port ranges (base..+2, base+100..+102) are free,
    below the ephemeral range (see test_cluster_support.free_ports)."""
    for _ in range(100):
        base = free_ports(1, span=3)[0]
        if all(port_is_free(port) for port in range(base + 100, base + 103)):
            return base
    raise AssertionError("no free port range")


def test_dev_serves_three_nodes_stops_on_sigint_and_resumes(tmp_path: Path) -> None:
    data_dir = tmp_path / "mox-data"
    base = free_base_port()
    urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]

    async def write_one() -> tuple[str, str]:
        async with aiohttp.ClientSession() as session:
            for url in urls:
                assert await health(session, url) is not None, url
            key = await bootstrap_tenant(session, urls[1], "devco")
            status, body = await request(
                session,
                "POST",
                f"{urls[2]}/api/talents",
                json={"displayName": "kept"},
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "dev-kept"},
            )
            assert status == 201, body
            return key, body["id"]

    first = dev_process(data_dir, base)
    output = OutputReader(first)
    try:
        output.wait_for("Ctrl-C stops the cluster")
        for node_id, url in enumerate(urls, start=1):
            assert f"node {node_id}: {url}" in output.text(), output.text()
        # MOX_ADMIN_TOKEN from the environment reaches the children (bootstrap uses it).
        assert child_env()["MOX_ADMIN_TOKEN"] == ADMIN_TOKEN
        assert not (data_dir / "admin-token").exists()
        try:
            key, talent_id = asyncio.run(write_one())
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{output.text()}") from None
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(30)
    text = output.finish()
    assert first.returncode == 0, text
    assert "mox dev: stopped" in text
    for node_id in (1, 2, 3):
        assert f'node{node_id} | {{"node": {node_id}' in text
    assert "Traceback" not in text

    async def read_back() -> None:
        async with aiohttp.ClientSession() as session:
            for url in urls:
                status, body = await request(
                    session,
                    "GET",
                    f"{url}/api/talents/{talent_id}",
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert status == 200, (url, body)
                assert body["displayName"] == "kept"

    second = dev_process(data_dir, base)
    output = OutputReader(second)
    try:
        output.wait_for("Ctrl-C stops the cluster")
        asyncio.run(read_back())
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(30)
    text = output.finish()
    assert second.returncode == 0, text
    assert "Traceback" not in text


def test_nodes_stop_when_dev_is_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "mox-data"
    supervisor = dev_process(data_dir, free_base_port())
    output = OutputReader(supervisor)
    try:
        output.wait_for("Ctrl-C stops the cluster")
    finally:
        supervisor.kill()  # SIGKILL: no chance to stop its nodes
        supervisor.wait(10)
    locks = [data_dir / f"node{i}" / "mox.lock" for i in (1, 2, 3)]
    # Nodes poll for their parent every 0.5 s, then stop cleanly; generous for loaded CI.
    deadline = time.monotonic() + 60
    held = locks
    while held and time.monotonic() < deadline:
        held = [lock for lock in locks if lock_is_held(lock)]
        time.sleep(0.1)
    assert held == [], f"nodes still running after their supervisor died: {held}"


def test_dev_stops_promptly_on_sigint_during_startup(tmp_path: Path) -> None:
    data_dir = tmp_path / "mox-data"
    supervisor = dev_process(data_dir, free_base_port())
    output = OutputReader(supervisor)
    output.wait_for("mox dev: 3 nodes")
    started = time.monotonic()
    supervisor.send_signal(signal.SIGINT)
    supervisor.wait(20)
    text = output.finish()
    assert supervisor.returncode == 0, text
    assert time.monotonic() - started < 15, text
    assert "mox dev: stopped" in text
    for node_id in (1, 2, 3):
        lock = data_dir / f"node{node_id}" / "mox.lock"
        assert not lock.exists() or not lock_is_held(lock), text


def lock_is_held(path: Path) -> bool:
    """True while a running node holds its data directory's lock."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def test_dev_refuses_a_data_dir_of_another_size(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "dev-cluster.json").write_text('{"nodes": 5}\n')
    result = run_mox("dev", "--data-dir", str(data_dir), "--nodes", "3")
    assert result.returncode == 2
    assert "--nodes 3" in result.stderr and "5-node" in result.stderr
