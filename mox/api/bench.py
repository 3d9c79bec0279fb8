"""Benchmark of the REST API on one real node (real files, fsync, 127.0.0.1), in-process.

    python -m mox.api.bench [--requests 2000] [--concurrency 32] [--dir PATH]

Baseline: `GET /health` (HTTP + middleware, no node work). Measured: `POST /api/talents`
(auth read, Raft propose, WAL fsync, apply), `GET /api/talents/{id}` linearizable (read
index) and stale. The client runs in the same process and shares the CPU with the server,
so absolute numbers are lower than with an external load generator; compare the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from mox.api.app import create_app
from mox.api.logs import make_logger
from mox.config import parse_config
from mox.io.real import RealClock, RealFileSystem, RealRandom
from mox.io.tcp import TcpTransport
from mox.node.runtime import Node, NodeConfig

_TOKEN = "bench-admin-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _measure(
    label: str,
    total: int,
    concurrency: int,
    one: Callable[[int], Awaitable[None]],
    baseline_s: float | None,
) -> tuple[str, float]:
    latencies_s: list[float] = []
    next_n = 0

    async def worker() -> None:
        nonlocal next_n
        while next_n < total:
            n = next_n
            next_n += 1
            started = time.perf_counter()
            await one(n)
            latencies_s.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed_s = time.perf_counter() - started
    latencies_s.sort()
    p50_ms = statistics.median(latencies_s) * 1000
    p99_ms = latencies_s[min(len(latencies_s) - 1, int(len(latencies_s) * 0.99))] * 1000
    line = (
        f"{label:<32} {total / elapsed_s:>8,.0f} req/s  p50 {p50_ms:6.2f} ms  p99 {p99_ms:6.2f} ms"
    )
    if baseline_s is not None:
        line += f"   x{elapsed_s / baseline_s:.2f} of baseline time"
    return line, elapsed_s


async def _run(total: int, concurrency: int, root: str) -> list[str]:
    client_port, cluster_port = _free_port(), _free_port()
    config = parse_config(
        {
            "cluster": {
                "node_id": 1,
                "nodes": [
                    {
                        "id": 1,
                        "host": "127.0.0.1",
                        "client_port": client_port,
                        "cluster_port": cluster_port,
                    }
                ],
            }
        }
    )
    logger = make_logger(io.StringIO())
    # structlog's logger satisfies the transport's EventLogger at runtime; its stub is wider.
    transport_logger: Any = logger
    transport = TcpTransport(
        1,
        ("127.0.0.1", cluster_port),
        {},
        16 * 1000**2,
        1024,
        transport_logger,
        cluster_id="mox",
        random=RealRandom(),
    )
    await transport.start()
    node = await Node.open(
        NodeConfig(node_id=1, members=(1,)),
        fs=RealFileSystem(root, backend="auto"),
        transport=transport,
        clock=RealClock(),
        rng=RealRandom(),
    )
    node.start()
    runner = web.AppRunner(
        create_app(node, config, CollectorRegistry(), logger, admin_token=_TOKEN), access_log=None
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", client_port).start()
    url = f"http://127.0.0.1:{client_port}"
    lines: list[str] = []
    try:
        while node.status().role != "leader":
            await asyncio.sleep(0.01)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(
                f"{url}/api/tenants",
                json={"slug": "bench", "name": "Bench"},
                headers={"Authorization": f"Bearer {_TOKEN}"},
            ) as resp:
                assert resp.status == 201, await resp.text()
                key = (await resp.json())["apiKey"]["key"]
            auth = {"Authorization": f"Bearer {key}"}
            ids: list[str] = []

            async def health(_n: int) -> None:
                async with session.get(f"{url}/health") as r:
                    await r.read()
                    assert r.status == 200

            async def create(n: int) -> None:
                async with session.post(
                    f"{url}/api/talents", json={"displayName": f"T{n}"}, headers=auth
                ) as r:
                    body = await r.json()
                    assert r.status == 201, body
                    ids.append(body["id"])

            def get(consistency: str) -> Callable[[int], Awaitable[None]]:
                async def one(n: int) -> None:
                    talent_id = ids[n % len(ids)]
                    async with session.get(
                        f"{url}/api/talents/{talent_id}?consistency={consistency}", headers=auth
                    ) as r:
                        await r.read()
                        assert r.status == 200

                return one

            line, baseline_s = await _measure(
                "baseline: GET /health", total, concurrency, health, None
            )
            lines.append(line)
            for label, one in (
                ("POST /api/talents", create),
                ("GET talent (linearizable)", get("linearizable")),
                ("GET talent (stale)", get("stale")),
            ):
                line, _ = await _measure(label, total, concurrency, one, baseline_s)
                lines.append(line)
            lines.append(
                f"wal commits {node.stats.wal_commits} for {node.stats.entries_persisted} entries"
            )
    finally:
        await runner.cleanup()
        await node.stop()
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument(
        "--dir", default=None, help="directory for the node's files (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        for line in asyncio.run(_run(args.requests, args.concurrency, root)):
            print(line)


if __name__ == "__main__":
    main()
