"""A harness for clusters of real `mox start` processes on 127.0.0.1 (no test in this file).

Each node is a child process with its own config file, data directory and log file under
the test's tmp_path; ports come from `free_ports` (below the kernel's ephemeral range, see
there). Nodes are started and stopped one by one (SIGTERM: clean stop; SIGKILL: crash), so
tests can kill the leader, restart a node and watch it catch up.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from mox.io.ports import free_ports
from mox.node.cli import dump_toml, load_default_template, node_config_documents

ADMIN_TOKEN = "cluster-test-admin-token"
REPO = Path(__file__).resolve().parent.parent

# Test servers listen on ports outside the kernel's ephemeral range. A port the kernel
# handed out by bind(0) and released lies inside that range, where any outgoing connection
# on the machine (the tests' own HTTP clients, the transports' dialers, the other xdist
# worker, other users of the machine) may take it as its local port before the child
# process binds it: the child then fails with "address in use". Below the range, only
# another listener could take it.
# A node stops within its 5 s shutdown timeout; a loaded machine may stretch that.
STOP_TIMEOUT_S = 30.0
# Test nodes write far less than the default 64 MB WAL segment, which is preallocated on
# disk: at the default, one run of the suite leaves ~2.5 GB of segments in its tmp dirs.
TEST_WAL_SEGMENT_SIZE = "4MiB"


def mox_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mox.cli", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MOX_ADMIN_TOKEN"] = ADMIN_TOKEN
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class ProcCluster:
    """`size` nodes, configs from the embedded default with `overrides` merged per section."""

    def __init__(
        self, root: Path, size: int = 3, overrides: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.root = root
        self.size = size
        ports = free_ports(2 * size)
        self.client_ports = ports[:size]
        self.cluster_ports = ports[size:]
        template = load_default_template()
        template.setdefault("storage", {})["wal_segment_size"] = TEST_WAL_SEGMENT_SIZE
        for section, values in (overrides or {}).items():
            template.setdefault(section, {}).update(values)
        self.documents = node_config_documents(template, self.client_ports, self.cluster_ports)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, Any] = {}
        root.mkdir(parents=True, exist_ok=True)
        for node_id, document in self.documents.items():
            self.config_path(node_id).write_text(dump_toml(document))

    @property
    def ids(self) -> list[int]:
        return sorted(self.documents)

    def config_path(self, node_id: int) -> Path:
        return self.root / f"node{node_id}.toml"

    def data_dir(self, node_id: int) -> Path:
        return self.root / f"node{node_id}"

    def log_path(self, node_id: int) -> Path:
        return self.root / f"node{node_id}.log"

    def url(self, node_id: int) -> str:
        return f"http://127.0.0.1:{self.client_ports[node_id - 1]}"

    def start_node(self, node_id: int) -> None:
        assert node_id not in self.processes or self.processes[node_id].poll() is not None
        log = self.log_path(node_id).open("ab")
        self.logs[node_id] = log
        self.processes[node_id] = subprocess.Popen(
            mox_command("start", "--config", str(self.config_path(node_id))),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,
        )

    def start(self) -> ProcCluster:
        for node_id in self.ids:
            self.start_node(node_id)
        return self

    def kill_node(self, node_id: int) -> None:
        """SIGKILL: a crash. Nothing is flushed or closed."""
        process = self.processes[node_id]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.logs[node_id].close()

    def stop_node(self, node_id: int, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait: a clean stop. Returns the exit code."""
        process = self.processes[node_id]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"node {node_id} did not stop within {timeout_s} s") from None
        finally:
            self.logs[node_id].close()
        return code

    def stop(self) -> None:
        for node_id, process in self.processes.items():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for node_id, process in self.processes.items():
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.logs[node_id].close()

    def run(self, scenario: Callable[[], Awaitable[None]], timeout_s: float) -> None:
        """Start every node, run `scenario` within `timeout_s`, stop every node. On any
        failure the tail of each node's log is printed first (pytest shows it with the
        failure): a flake on CI can then be read, not only retried."""
        self.start()
        pauser = NodePauser(self, PAUSE_NODES_SEED) if PAUSE_NODES_SEED is not None else None
        try:
            try:
                asyncio.run(asyncio.wait_for(scenario(), timeout_s))
            except TimeoutError:
                raise AssertionError(f"scenario did not finish within {timeout_s} s") from None
        except BaseException:
            self.print_log_tails()
            raise
        finally:
            if pauser is not None:
                pauser.finish()
                print(f"paused nodes {pauser.pauses} times (--pause-nodes {PAUSE_NODES_SEED})")
            self.stop()

    def print_log_tails(self, lines: int = 40) -> None:
        """The last `lines` log lines of each node, leaving out per-request access lines
        (they crowd out elections, snapshots, failures)."""
        for node_id in self.ids:
            if self.log_path(node_id).exists():
                kept = [
                    line
                    for line in self.log_text(node_id).splitlines()
                    if '"event": "request"' not in line
                ]
                tail = kept[-lines:]
                print(f"--- node {node_id} ({self.log_path(node_id)}), last {len(tail)} lines")
                print("\n".join(tail))

    def assert_alive(self) -> None:
        """Every started node still runs (a node that died on its own shows its log)."""
        for node_id, process in self.processes.items():
            if process.poll() is not None:
                tail = "\n".join(self.log_text(node_id).splitlines()[-30:])
                raise AssertionError(f"node {node_id} exited with {process.returncode}:\n{tail}")

    def log_text(self, node_id: int) -> str:
        return self.log_path(node_id).read_text(errors="replace")

    def log_events(self, node_id: int, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_text(node_id).splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found


# Set by conftest from `--pause-nodes SEED`: ProcCluster.run then deschedules nodes at random.
PAUSE_NODES_SEED: int | None = None


class NodePauser:
    """Stops a random running node (SIGSTOP) for 0.2-0.8 s every 0.5-2 s, then resumes it
    (SIGCONT): what a loaded CI machine does to a process, past the election timeout.
    Tests must hold whichever node leads; this finds the ones that assume a stable leader."""

    def __init__(self, cluster: ProcCluster, seed: int) -> None:
        self._cluster = cluster
        self._rng = random.Random(seed)
        self._done = threading.Event()
        self.pauses = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(0.5 + 1.5 * self._rng.random()):
            live = [p for p in self._cluster.processes.values() if p.poll() is None]
            if not live:
                continue
            victim = self._rng.choice(live)
            try:
                os.kill(victim.pid, signal.SIGSTOP)
                self.pauses += 1
                time.sleep(0.2 + 0.6 * self._rng.random())
            except ProcessLookupError:
                pass
            finally:
                try:
                    os.kill(victim.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def finish(self) -> None:
        self._done.set()
        self._thread.join()


async def health(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=3)) as r:
            if r.status != 200:
                return None
            body: dict[str, Any] = await r.json()
            return body
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


async def wait_for_leader(
    session: aiohttp.ClientSession,
    cluster: ProcCluster,
    among: list[int],
    *,
    min_term: int = 0,
    timeout_s: float = 60,
) -> tuple[int, int]:
    """(leader id, term) once a node of `among` reports itself leader in a term > min_term
    and has applied everything it knows committed. Its commit index may still be one an
    earlier leader taught it (its own no-op may be uncommitted): use `max_commit_index`
    or a write of your own, not this node's commitIndex, as a bound on acknowledged writes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for node_id in among:
            status = await health(session, cluster.url(node_id))
            if (
                status is not None
                and status["role"] == "leader"
                and status["term"] > min_term
                and status["appliedIndex"] >= status["commitIndex"] >= 1
            ):
                return node_id, int(status["term"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"no leader among {among} within {timeout_s} s")


async def max_commit_index(
    session: aiohttp.ClientSession, cluster: ProcCluster, among: list[int]
) -> int:
    """The highest commitIndex any node of `among` reports. A write acknowledged by a node
    that has run ever since is at or below it, whichever node leads now: the node that
    acknowledged it knew it committed, and a commit index only grows while a node runs."""
    found: list[int] = []
    for node_id in among:
        status = await health(session, cluster.url(node_id))
        if status is not None:
            found.append(int(status["commitIndex"]))
    assert found, f"no node of {among} answered /health"
    return max(found)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    retries_s: float = 30,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One API call; retried (same Idempotency-Key, if the caller set one) on 503 or no
    answer, for up to `retries_s` (an election on a loaded machine can take seconds)."""
    deadline = time.monotonic() + retries_s
    while True:
        try:
            async with session.request(method, url, **kwargs) as r:
                text = await r.text()
                status = r.status
        except (aiohttp.ClientError, OSError, TimeoutError):
            status, text = 599, ""
        if status not in (503, 599) or time.monotonic() > deadline:
            return status, json.loads(text) if text else None
        await asyncio.sleep(0.05)


async def bootstrap_tenant(session: aiohttp.ClientSession, url: str, slug: str) -> str:
    """Create a tenant through `url`; return its owner API key."""
    status, body = await request(
        session,
        "POST",
        f"{url}/api/tenants",
        json={"slug": slug, "name": slug.title()},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": f"boot-{slug}"},
    )
    assert status == 201, (status, body)
    key: str = body["apiKey"]["key"]
    return key
