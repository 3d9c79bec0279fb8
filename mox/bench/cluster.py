"""`mox bench cluster`: a 3-node Mox cluster against a 3-member etcd cluster, same load, same run.

Both clusters run on 127.0.0.1 as child processes started by the bench, with fsync on (etcd
fsyncs its WAL by default; Mox runs with `[storage] fsync = true`). One load generator (this
process, asyncio + aiohttp, uvloop when installed) drives both through HTTP/JSON:

* writes: `value_size_bytes`-byte values under distinct keys, sent to the leader, with 1 and
  64 (by default) concurrent clients, each a closed loop (one request in flight per client);
* linearizable reads: the keys written, spread over every node.

Mox is driven through its REST API, etcd through its v3 JSON gateway (`/v3/kv/put`,
`/v3/kv/range` with base64 keys and values; a range is linearizable unless `serializable`).
The load generator is the same code for both, so its own cost is in both columns; a ratio
column compares them. When etcd is not installed the bench says so and prints Mox alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import click

from mox.io.ports import free_ports

__all__ = [
    "EtcdCluster",
    "LoadResult",
    "MoxCluster",
    "command",
    "free_ports",
    "run_load",
]

Request = tuple[str, str, bytes | None]  # method, url, body
RequestFactory = Callable[[int, int], Request]  # (client index, sequence number) -> request


@attrs.frozen
class LoadResult:
    """One load run: completed operations, failures, and latency percentiles in ms."""

    system: str
    workload: str
    clients: int
    ops: int
    errors: int
    elapsed_s: float
    latency_ms_p50: float
    latency_ms_p99: float
    first_error: str

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "workload": self.workload,
            "clients": self.clients,
            "ops": self.ops,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "ops_per_s": round(self.ops_per_s, 1),
            "latency_ms_p50": round(self.latency_ms_p50, 3),
            "latency_ms_p99": round(self.latency_ms_p99, 3),
            "first_error": self.first_error,
        }


def _percentile(sorted_values: Sequence[int], fraction: float) -> float:
    assert 0.0 <= fraction <= 1.0
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index] / 1e6


async def run_load(
    system: str,
    workload: str,
    factory: RequestFactory,
    *,
    clients: int,
    duration_s: float,
    warmup_s: float,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """`clients` closed-loop clients issue requests from `factory` for warmup + duration.

    Only requests that start after the warm-up and finish before the deadline are measured.
    A non-2xx answer or a connection error counts as an error (the first one is kept).
    """
    import aiohttp

    assert clients >= 1
    assert duration_s > 0
    latencies_ns: list[int] = []
    errors = 0
    first_error = ""
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup_s
    deadline = measure_from + duration_s

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors, first_error
        seq = 0
        while loop.time() < deadline:
            method, url, body = factory(index, seq)
            seq += 1
            began = loop.time()
            t0 = time.perf_counter_ns()
            try:
                async with session.request(method, url, data=body, headers=headers) as response:
                    answer = await response.read()
                    ok = 200 <= response.status < 300
                    problem = "" if ok else f"HTTP {response.status} from {url}: {answer[:300]!r}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                ok = False
                problem = f"{type(exc).__name__}: {exc} ({url})"
            t1 = time.perf_counter_ns()
            if began < measure_from or loop.time() > deadline:
                continue
            if ok:
                latencies_ns.append(t1 - t0)
            else:
                errors += 1
                first_error = first_error or problem
                await asyncio.sleep(0.01)  # do not spin on a node that refuses

    connector = aiohttp.TCPConnector(limit=clients + 4, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    latencies_ns.sort()
    return LoadResult(
        system=system,
        workload=workload,
        clients=clients,
        ops=len(latencies_ns),
        errors=errors,
        elapsed_s=duration_s,
        latency_ms_p50=_percentile(latencies_ns, 0.50),
        latency_ms_p99=_percentile(latencies_ns, 0.99),
        first_error=first_error,
    )


# -- child processes -------------------------------------------------------------------------


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = 10) -> None:
    """SIGTERM every process we started, then SIGKILL the ones still running after timeout."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            process.wait(remaining)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_http(url: str, ok: Callable[[int, bytes], bool], timeout_s: float) -> None:
    """Poll `url` (GET) until `ok(status, body)`; raise click.ClickException on timeout."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    if ok(response.status, body):
                        return
                    last = f"HTTP {response.status}: {body[:200]!r}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
    raise click.ClickException(f"{url} not ready after {timeout_s:.0f} s ({last})")


async def _find_leader(
    urls: Sequence[str],
    is_leader: Callable[[Any, str], Any],
    timeout_s: float,
    failure: str,
    *,
    between_rounds: Callable[[], None] | None = None,
) -> str:
    """Poll `urls` every 0.1 s until `await is_leader(session, url)` holds for one of them."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            for url in urls:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    if await is_leader(session, url):
                        return url
            if between_rounds is not None:
                between_rounds()
            await asyncio.sleep(0.1)
    raise click.ClickException(f"{failure}: none after {timeout_s:.0f} s")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class EtcdCluster:
    """A 3-member etcd cluster on 127.0.0.1, in a scratch directory, fsync on (etcd's default)."""

    def __init__(self, root: Path, members: int = 3, etcd_binary: str = "etcd") -> None:
        assert members >= 1
        self.root = root
        self.members = members
        self.etcd_binary = etcd_binary
        ports = free_ports(2 * members)
        self.client_ports = ports[:members]
        self.peer_ports = ports[members:]
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    @staticmethod
    def find_binary() -> str | None:
        return shutil.which("etcd")

    @property
    def client_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.client_ports]

    def start(self) -> None:
        initial = ",".join(
            f"m{i + 1}=http://127.0.0.1:{port}" for i, port in enumerate(self.peer_ports)
        )
        for i in range(self.members):
            data_dir = self.root / f"m{i + 1}"
            data_dir.mkdir(parents=True, exist_ok=True)
            log = (self.root / f"m{i + 1}.log").open("wb")
            self._logs.append(log)
            args = [
                self.etcd_binary,
                "--name", f"m{i + 1}",
                "--data-dir", str(data_dir),
                "--listen-client-urls", self.client_urls[i],
                "--advertise-client-urls", self.client_urls[i],
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", "mox-bench",
                "--log-level", "warn",
            ]  # fmt: skip
            self.processes.append(
                subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )

    def stop(self) -> None:
        stop_processes(self.processes)
        for log in self._logs:
            log.close()

    async def leader_url(self, timeout_s: float = 20) -> str:
        """The client URL of the current leader (from /v3/maintenance/status of each member)."""

        async def is_leader(session: Any, url: str) -> bool:
            async with session.post(f"{url}/v3/maintenance/status", json={}) as r:
                status = await r.json(content_type=None)
            leader = status.get("leader")
            return bool(leader) and leader == status.get("header", {}).get("member_id")

        return await _find_leader(
            self.client_urls, is_leader, timeout_s, f"etcd elected no leader (logs: {self.root})"
        )

    def write_factory(self, leader_url: str, value: bytes) -> RequestFactory:
        url = f"{leader_url}/v3/kv/put"
        value_b64 = _b64(value)

        def factory(client: int, seq: int) -> Request:
            key = _b64(f"bench/{client}/{seq}".encode())
            return "POST", url, json.dumps({"key": key, "value": value_b64}).encode()

        return factory

    def read_factory(self, keys_per_client: int) -> RequestFactory:
        urls = [f"{url}/v3/kv/range" for url in self.client_urls]

        def factory(client: int, seq: int) -> Request:
            key = _b64(f"bench/{client % 64}/{seq % max(1, keys_per_client)}".encode())
            return "POST", urls[client % len(urls)], json.dumps({"key": key}).encode()

        return factory


class MoxCluster:
    """A 3-node Mox cluster of `mox start` processes on 127.0.0.1, from the embedded default
    config (fsync on), in a scratch directory; the bench bootstraps one tenant in it."""

    def __init__(self, root: Path, size: int = 3, io_backend: str = "auto") -> None:
        from mox.node.cli import dump_toml, load_default_template, node_config_documents

        assert size >= 1
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * size)
        self.client_ports = ports[:size]
        template = load_default_template()
        template.setdefault("storage", {})["io_backend"] = io_backend
        documents = node_config_documents(template, ports[:size], ports[size:])
        self.config_paths: list[Path] = []
        for node_id, document in documents.items():
            path = root / f"node{node_id}.toml"
            path.write_text(dump_toml(document))
            self.config_paths.append(path)
        self.admin_token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    @property
    def client_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.client_ports]

    def start(self, loop_name: str = "auto") -> None:
        env = {**os.environ, "MOX_ADMIN_TOKEN": self.admin_token}
        for path in self.config_paths:
            log = path.with_suffix(".log").open("wb")
            self._logs.append(log)
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "mox.cli",
                        "start",
                        "--config",
                        str(path),
                        "--loop",
                        loop_name,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        stop_processes(self.processes)
        for log in self._logs:
            log.close()

    def io_backends(self) -> list[str]:
        """The WAL backend each node runs on (from its `node.recovered` log line; `auto`
        races the backends at start, so nodes of one cluster may differ)."""
        found: list[str] = []
        for path in self.config_paths:
            backend = "?"
            for line in path.with_suffix(".log").read_text(errors="replace").splitlines():
                if '"node.recovered"' in line:
                    with contextlib.suppress(ValueError):
                        backend = str(json.loads(line).get("io_backend", "?"))
            found.append(backend)
        return found

    def check_alive(self) -> None:
        """Raise (with the end of its log) if a node has exited."""
        for path, process in zip(self.config_paths, self.processes, strict=True):
            if process.poll() is not None:
                tail = path.with_suffix(".log").read_text(errors="replace").splitlines()[-5:]
                raise click.ClickException(
                    f"Mox node {path.stem} exited with code {process.returncode}; its log ends:\n"
                    + "\n".join(line[:2000] for line in tail)
                )

    async def leader_url(self, timeout_s: float = 30) -> str:
        """The API URL of a leader that has applied an entry of its term (can serve)."""

        async def is_serving_leader(session: Any, url: str) -> bool:
            async with session.get(f"{url}/health") as r:
                status = await r.json(content_type=None)
            return bool(
                status.get("role") == "leader"
                and status["appliedIndex"] >= status["commitIndex"] >= 1
            )

        return await _find_leader(
            self.client_urls,
            is_serving_leader,
            timeout_s,
            f"Mox elected no leader (logs: {self.root})",
            between_rounds=self.check_alive,
        )

    async def bootstrap(self, leader_url: str, reads: int, name: str) -> tuple[str, list[str]]:
        """Create the bench tenant, then `reads` talents to read back: (API key, their ids)."""
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.post(
                f"{leader_url}/api/tenants",
                json={"slug": "bench", "name": "Bench"},
                headers={"Authorization": f"Bearer {self.admin_token}"},
            ) as r:
                body = await r.json(content_type=None)
                if r.status != 201:
                    raise click.ClickException(f"tenant bootstrap failed: HTTP {r.status} {body}")
                key: str = body["apiKey"]["key"]
            ids: list[str] = []
            for n in range(reads):
                async with session.post(
                    f"{leader_url}/api/talents",
                    json={"displayName": f"{name[:90]} {n}"},
                    headers={"Authorization": f"Bearer {key}"},
                ) as r:
                    body = await r.json(content_type=None)
                    if r.status != 201:
                        raise click.ClickException(f"seeding failed: HTTP {r.status} {body}")
                    ids.append(body["id"])
        return key, ids

    @staticmethod
    def write_factory(leader_url: str, name: str) -> RequestFactory:
        url = f"{leader_url}/api/talents"
        body = json.dumps({"displayName": name}).encode()

        def factory(_client: int, _seq: int) -> Request:
            return "POST", url, body

        return factory

    def read_factory(self, ids: list[str]) -> RequestFactory:
        urls = self.client_urls

        def factory(client: int, seq: int) -> Request:
            talent_id = ids[(client + seq) % len(ids)]
            return "GET", f"{urls[client % len(urls)]}/api/talents/{talent_id}", None

        return factory


# -- the cluster transport alone ---------------------------------------------------------------


class _QuietLogger:
    def info(self, event: str, /, **fields: Any) -> None:
        pass

    def warning(self, event: str, /, **fields: Any) -> None:
        pass

    def error(self, event: str, /, **fields: Any) -> None:
        pass


_BURST_FRAMES = 1000


async def _transport_mox(payload: bytes, duration_s: float) -> tuple[float, float]:
    """(round trip µs, one-way frames/s) between two TcpTransports on 127.0.0.1."""
    import random

    from mox.io.tcp import TcpTransport

    port_a, port_b = free_ports(2)

    def make(node_id: int, listen: int, peer: int, peer_port: int) -> TcpTransport:
        return TcpTransport(
            node_id,
            ("127.0.0.1", listen),
            {peer: ("127.0.0.1", peer_port)},
            1 << 20,
            4 * _BURST_FRAMES,
            _QuietLogger(),
            cluster_id="bench",
            random=random.Random(node_id),
        )

    a, b = make(1, port_a, 2, port_b), make(2, port_b, 1, port_a)
    await a.start()
    await b.start()
    try:
        while a.connected_peers() != [2] or b.connected_peers() != [1]:
            await asyncio.sleep(0.01)
        # Round trips: B echoes every frame back.
        answered = asyncio.Event()
        a.set_receiver(lambda _src, _payload: answered.set())
        b.set_receiver(lambda _src, data: b.send(1, data))
        round_trips = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s / 2:
            answered.clear()
            a.send(2, payload)
            await answered.wait()
            round_trips += 1
        rtt_us = (time.perf_counter() - started) / round_trips * 1e6
        # Throughput: bursts of frames A -> B, each burst waited for before the next.
        received = 0
        burst_done = asyncio.Event()

        def count(_src: int, _data: bytes) -> None:
            nonlocal received
            received += 1
            if received % _BURST_FRAMES == 0:
                burst_done.set()

        b.set_receiver(count)
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s / 2:
            burst_done.clear()
            for _ in range(_BURST_FRAMES):
                a.send(2, payload)
            await burst_done.wait()
        frames_per_s = received / (time.perf_counter() - started)
        assert a.stats.send_dropped_queue_full == {}
        return rtt_us, frames_per_s
    finally:
        await a.close()
        await b.close()


async def _transport_raw(payload: bytes, duration_s: float) -> tuple[float, float]:
    """The same two measurements over bare asyncio streams: a 4-byte length prefix, no
    header, checksum, handshake or queue (the floor the transport's framing costs against)."""
    mode = {"echo": True}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = 0
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = int.from_bytes(await reader.readexactly(4), "little")
                data = await reader.readexactly(size)
                if mode["echo"]:
                    writer.write(size.to_bytes(4, "little") + data)
                else:
                    frames += 1
                    if frames % _BURST_FRAMES == 0:
                        writer.write(b"k")

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frame = len(payload).to_bytes(4, "little") + payload
    try:
        round_trips = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s / 2:
            writer.write(frame)
            size = int.from_bytes(await reader.readexactly(4), "little")
            await reader.readexactly(size)
            round_trips += 1
        rtt_us = (time.perf_counter() - started) / round_trips * 1e6
        mode["echo"] = False
        sent = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s / 2:
            writer.writelines([frame] * _BURST_FRAMES)
            sent += _BURST_FRAMES
            await reader.readexactly(1)
        frames_per_s = sent / (time.perf_counter() - started)
        return rtt_us, frames_per_s
    finally:
        writer.close()
        server.close()


_LARGE_MESSAGE_BYTES = 16 << 20
_LARGE_FRAME_LIMIT_BYTES = 1 << 20


async def _transport_large_mox(duration_s: float) -> float:
    """MB/s of 16 MiB messages between two TcpTransports whose frame limit is 1 MiB: each
    message goes as 17 fragments and is reassembled (a snapshot transfer's path)."""
    import random

    from mox.io.tcp import TcpTransport

    port_a, port_b = free_ports(2)

    def make(node_id: int, listen: int, peer: int, peer_port: int) -> TcpTransport:
        return TcpTransport(
            node_id,
            ("127.0.0.1", listen),
            {peer: ("127.0.0.1", peer_port)},
            _LARGE_FRAME_LIMIT_BYTES,
            16,
            _QuietLogger(),
            cluster_id="bench",
            random=random.Random(node_id),
        )

    payload = random.Random(1).randbytes(_LARGE_MESSAGE_BYTES)
    a, b = make(1, port_a, 2, port_b), make(2, port_b, 1, port_a)
    arrived = asyncio.Event()
    b.set_receiver(lambda _src, data: arrived.set())
    await a.start()
    await b.start()
    try:
        while a.connected_peers() != [2]:
            await asyncio.sleep(0.01)
        messages = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s or messages == 0:
            arrived.clear()
            a.send(2, payload)  # one at a time: a second large message would replace it
            await arrived.wait()
            messages += 1
        assert b.stats.messages_reassembled == messages
        return messages * _LARGE_MESSAGE_BYTES / (time.perf_counter() - started) / 1e6
    finally:
        await a.close()
        await b.close()


async def _transport_large_raw(duration_s: float) -> float:
    """The same over bare asyncio streams: one 4-byte length prefix and the 16 MiB, a 1-byte
    acknowledgement back (no frames, checksums or reassembly)."""
    import random

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = int.from_bytes(await reader.readexactly(4), "little")
                await reader.readexactly(size)
                writer.write(b"k")

    payload = random.Random(1).randbytes(_LARGE_MESSAGE_BYTES)
    frame = len(payload).to_bytes(4, "little") + payload
    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=_LARGE_MESSAGE_BYTES + 8)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        messages = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s or messages == 0:
            writer.write(frame)
            await reader.readexactly(1)
            messages += 1
        return messages * _LARGE_MESSAGE_BYTES / (time.perf_counter() - started) / 1e6
    finally:
        writer.close()
        server.close()


async def _bench_transport(payload_size_bytes: int, duration_s: float) -> list[dict[str, Any]]:
    payload = bytes(payload_size_bytes)
    raw_rtt_us, raw_fps = await _transport_raw(payload, duration_s)
    mox_rtt_us, mox_fps = await _transport_mox(payload, duration_s)
    raw_large_mb_s = await _transport_large_raw(duration_s / 2)
    mox_large_mb_s = await _transport_large_mox(duration_s / 2)
    return [
        {
            "metric": f"round trip, {payload_size_bytes} B",
            "unit": "us",
            "mox": round(mox_rtt_us, 1),
            "baseline": round(raw_rtt_us, 1),
            "ratio": round(raw_rtt_us / mox_rtt_us, 2),
        },
        {
            "metric": f"one-way frames, {payload_size_bytes} B",
            "unit": "frames/s",
            "mox": round(mox_fps),
            "baseline": round(raw_fps),
            "ratio": round(mox_fps / raw_fps, 2),
        },
        {
            "metric": "16 MiB msgs, 1 MiB frames",
            "unit": "MB/s",
            "mox": round(mox_large_mb_s),
            "baseline": round(raw_large_mb_s),
            "ratio": round(mox_large_mb_s / raw_large_mb_s, 2),
        },
    ]


def _print_transport(rows: list[dict[str, Any]]) -> None:
    click.echo(
        f"{'transport':<26} {'TcpTransport':>12} {'raw streams':>12} {'unit':<9} ratio (>1 better)"
    )
    for row in rows:
        click.echo(
            f"{row['metric']:<26} {row['mox']:>12,} {row['baseline']:>12,} {row['unit']:<9} "
            f"{row['ratio']:.2f}x"
        )


# -- the command -----------------------------------------------------------------------------


def _parse_clients(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not counts or any(count < 1 or count > 1024 for count in counts):
        raise click.BadParameter(f"{value!r}: each client count must be in 1..1024")
    return counts


@contextlib.contextmanager
def _scratch_dir(path: str | None) -> Iterator[Path]:
    if path is not None:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="mox-bench-cluster-") as tmp:
        yield Path(tmp)


def _print_results(results: list[LoadResult]) -> None:
    click.echo(
        f"{'workload':<10} {'clients':>7} {'system':<6} {'ops/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6}   mox/etcd"
    )
    by_key = {(r.system, r.workload, r.clients): r for r in results}
    for r in results:
        ratio = ""
        other = by_key.get(("etcd", r.workload, r.clients))
        if r.system == "mox" and other is not None and other.ops_per_s > 0:
            ratio = (
                f"   x{r.ops_per_s / other.ops_per_s:.2f} throughput, "
                f"x{r.latency_ms_p50 / max(other.latency_ms_p50, 1e-9):.2f} p50"
            )
        click.echo(
            f"{r.workload:<10} {r.clients:>7} {r.system:<6} {r.ops_per_s:>10.0f} "
            f"{r.latency_ms_p50:>8.2f} {r.latency_ms_p99:>8.2f} {r.errors:>6}{ratio}"
        )
        if r.first_error:
            click.echo(f"{'':<10} first error: {r.first_error}")


async def _bench_etcd(
    root: Path, client_counts: list[int], duration_s: float, value: bytes
) -> list[LoadResult]:
    binary = EtcdCluster.find_binary()
    if binary is None:
        click.echo(
            "etcd: not installed (apt-get install -y etcd-server etcd-client): "
            "no etcd baseline in this run"
        )
        return []
    cluster = EtcdCluster(root / "etcd", etcd_binary=binary)
    results: list[LoadResult] = []
    cluster.start()
    try:
        leader = await cluster.leader_url()
        click.echo(f"etcd: 3 members up, leader {leader}")
        for clients in client_counts:
            results.append(
                await run_load(
                    "etcd",
                    "write",
                    cluster.write_factory(leader, value),
                    clients=clients,
                    duration_s=duration_s,
                    warmup_s=min(1.0, duration_s / 5),
                )
            )
        results.append(
            await run_load(
                "etcd",
                "read",
                cluster.read_factory(keys_per_client=100),
                clients=max(client_counts),
                duration_s=duration_s,
                warmup_s=min(1.0, duration_s / 5),
            )
        )
    finally:
        cluster.stop()
    return results


async def _bench_mox(
    root: Path,
    client_counts: list[int],
    duration_s: float,
    value_size_bytes: int,
    loop_name: str,
    io_backend: str,
    backends_out: list[str],
) -> list[LoadResult]:
    # A talent whose display name is the value: a `value_size_bytes`-character string.
    name = ("mox-bench-" * (value_size_bytes // 10 + 1))[:value_size_bytes]
    cluster = MoxCluster(root / "mox", io_backend=io_backend)
    results: list[LoadResult] = []
    cluster.start(loop_name)
    try:
        leader = await cluster.leader_url()
        key, ids = await cluster.bootstrap(leader, reads=100, name=name)
        headers = {"Authorization": f"Bearer {key}"}
        backends_out.extend(cluster.io_backends())
        click.echo(f"mox: 3 nodes up, leader {leader}, WAL backends {','.join(backends_out)}")
        for clients in client_counts:
            results.append(
                await run_load(
                    "mox",
                    "write",
                    cluster.write_factory(leader, name),
                    clients=clients,
                    duration_s=duration_s,
                    warmup_s=min(1.0, duration_s / 5),
                    headers=headers,
                )
            )
            cluster.check_alive()
        results.append(
            await run_load(
                "mox",
                "read",
                cluster.read_factory(ids),
                clients=max(client_counts),
                duration_s=duration_s,
                warmup_s=min(1.0, duration_s / 5),
                headers=headers,
            )
        )
        cluster.check_alive()
    finally:
        cluster.stop()
    return results


async def _bench(
    root: Path,
    client_counts: list[int],
    duration_s: float,
    value_size_bytes: int,
    etcd: bool,
    loop_name: str,
    io_backend: str,
    backends_out: list[str],
) -> list[LoadResult]:
    value = bytes(range(256)) * (value_size_bytes // 256 + 1)
    value = value[:value_size_bytes]
    results = await _bench_mox(
        root, client_counts, duration_s, value_size_bytes, loop_name, io_backend, backends_out
    )
    if etcd:
        results.extend(await _bench_etcd(root, client_counts, duration_s, value))
    return results


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    uvloop.install()
    return "uvloop"


@click.command("cluster")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results here.")
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=0.5, max=3600),
    default=5.0,
    show_default=True,
    help="Seconds of measured load per workload (after a short warm-up).",
)
@click.option(
    "--clients",
    "client_counts",
    default="1,64",
    show_default=True,
    callback=_parse_clients,
    help="Comma-separated concurrent client counts for the write workloads.",
)
@click.option(
    "--value-size",
    "value_size_bytes",
    type=click.IntRange(1, 1 << 20),
    default=100,
    show_default=True,
    help="Bytes per written value.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the clusters' data and logs here (default: a temporary directory).",
)
@click.option("--no-etcd", is_flag=True, help="Skip the etcd baseline.")
@click.option(
    "--node-loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",  # mox.node.cli.DEFAULT_LOOP (not imported: keep --help fast)
    show_default=True,
    help="Event loop of the Mox nodes (mox start --loop).",
)
@click.option(
    "--io-backend",
    type=click.Choice(["auto", "io_uring", "pwrite"]),
    default="auto",
    show_default=True,
    help="WAL backend of the Mox nodes ([storage] io_backend); auto races them at start.",
)
def command(
    json_path: str | None,
    duration_s: float,
    client_counts: list[int],
    value_size_bytes: int,
    data_dir: str | None,
    no_etcd: bool,
    node_loop: str,
    io_backend: str,
) -> None:
    """Write and read throughput and latency of a 3-node cluster, beside etcd."""
    loop_name = _install_uvloop()
    click.echo(
        f"bench cluster: 3 nodes on 127.0.0.1, fsync on, {value_size_bytes}-byte values, "
        f"{duration_s:g} s per workload, clients {client_counts}, load generator on {loop_name}, "
        f"nodes on {node_loop}, "
        f"{os.cpu_count()} CPUs"
    )
    load_before = os.getloadavg()[0]
    transport = asyncio.run(_bench_transport(value_size_bytes, min(duration_s, 4.0)))
    _print_transport(transport)
    backends: list[str] = []
    with _scratch_dir(data_dir) as root:
        results = asyncio.run(
            _bench(
                root,
                client_counts,
                duration_s,
                value_size_bytes,
                not no_etcd,
                node_loop,
                io_backend,
                backends,
            )
        )
    load_after = os.getloadavg()[0]
    _print_results(results)
    # Both clusters and the load generator share this machine's CPUs: a busy machine moves
    # every number, so the load average is printed beside them.
    click.echo(f"1-minute load average: {load_before:.1f} before, {load_after:.1f} after")
    if json_path is not None:
        document = {
            "command": " ".join(["mox", "bench", "cluster", *sys.argv[3:]]),
            "value_size_bytes": value_size_bytes,
            "cpus": os.cpu_count(),
            "load_average_1m": [round(load_before, 2), round(load_after, 2)],
            "duration_s": duration_s,
            "mox_io_backends": backends,
            "results": [r.as_json() for r in results],
            "transport": transport,
        }
        Path(json_path).write_text(json.dumps(document, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
