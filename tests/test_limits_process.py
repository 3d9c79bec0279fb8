"""The admission limits of a real 3-process cluster: `limits.max_tenants`,
`limits.max_events_per_second` and `api.max_connections` (docs/configuration.md)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp
from test_api_limits import raw_get
from test_cluster_support import (
    ADMIN_TOKEN,
    ProcCluster,
    bootstrap_tenant,
    request,
    wait_for_leader,
)

from mox.client import MoxClient

MAX_TENANTS = 2
WRITES_PER_SECOND = 5
MAX_CONNECTIONS = 8


async def counter(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name}_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in {url}/metrics"
    return float(found.group(1))


async def get_health_raw(port: int) -> tuple[int, bytes, asyncio.StreamWriter]:
    """GET /health on a new keep-alive connection, left open; (status, body, writer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status, body = await raw_get(reader, writer, "/health")
    return status, body, writer


def test_tenant_write_rate_and_connection_limits(tmp_path: Path) -> None:
    cluster = ProcCluster(
        tmp_path,
        overrides={
            "limits": {
                "max_tenants": MAX_TENANTS,
                "max_events_per_second": WRITES_PER_SECOND,
            },
            "api": {"max_connections": MAX_CONNECTIONS},
        },
    )

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            leader, _ = await wait_for_leader(session, cluster, cluster.ids)
            url = cluster.url(leader)

            # limits.max_tenants: the third tenant is refused, through any node.
            key = await bootstrap_tenant(session, url, "first")
            await bootstrap_tenant(session, url, "second")
            follower = next(i for i in cluster.ids if i != leader)
            status, body = await request(
                session,
                "POST",
                f"{cluster.url(follower)}/api/tenants",
                json={"slug": "third", "name": "Third"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": "t3"},
            )
            assert status == 409, (status, body)
            assert body["code"] == "TENANT_LIMIT", body
            assert "limits.max_tenants" in body["detail"], body
            await asyncio.sleep(1.2)  # the bucket refills after the tenant writes

            # limits.max_events_per_second: a burst beyond a second's worth gets 429s. Over
            # a burst of `elapsed_s`, the bucket admits at most a second's worth plus what
            # it refilled. (A client of its own, with fewer connections than the node's cap.)
            limited_client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4))

            async def write(n: int) -> tuple[int, dict[str, str], object]:
                async with limited_client.post(
                    f"{url}/api/talents",
                    json={"displayName": f"talent {n}"},
                    headers={"Authorization": f"Bearer {key}"},
                ) as response:
                    return response.status, dict(response.headers), await response.json()

            burst = 8 * WRITES_PER_SECOND
            async with limited_client:
                started_s = time.monotonic()
                results = await asyncio.gather(*(write(n) for n in range(burst)))
                elapsed_s = time.monotonic() - started_s
            statuses = [status for status, _, _ in results]
            assert set(statuses) <= {201, 429}, [r for r in results if r[0] not in (201, 429)]
            admitted_max = WRITES_PER_SECOND * (1 + elapsed_s) + 1
            assert 1 <= statuses.count(201) <= admitted_max, (statuses, elapsed_s)
            refused = [(h, b) for status, h, b in results if status == 429]
            assert len(refused) >= 1, (statuses, elapsed_s)
            headers, problem = refused[0]
            assert isinstance(problem, dict) and problem["code"] == "RATE_LIMITED", problem
            assert "limits.max_events_per_second" in problem["detail"]
            assert int(headers["Retry-After"]) >= 1
            limited = await counter(session, url, "mox_http_rate_limited_requests")
            assert limited >= len(refused)
            await asyncio.sleep(1.2)
            status, _ = await request(
                session,
                "POST",
                f"{url}/api/talents",
                json={"displayName": "after the burst"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert status == 201  # the bucket refilled

            # The Python client waits out a 429 (Retry-After) and its writes all land.
            async with MoxClient(
                [cluster.url(i) for i in cluster.ids], api_key=key, retries=20
            ) as client:
                names = [f"client write {n}" for n in range(2 * WRITES_PER_SECOND)]
                for name in names:
                    await client.register_talent(display_name=name)

            # api.max_connections: connections beyond the cap get a 503 problem at once.
            port = cluster.client_ports[cluster.ids.index(follower)]
            writers: list[asyncio.StreamWriter] = []
            refusal: bytes | None = None
            for _ in range(MAX_CONNECTIONS + 1):
                status, body_bytes, writer = await get_health_raw(port)
                writers.append(writer)
                if status == 503:
                    refusal = body_bytes
                    break
                assert status == 200, (status, body_bytes)
            assert refusal is not None, "no connection was refused"
            assert b"TOO_MANY_CONNECTIONS" in refusal and b"api.max_connections" in refusal
            assert len(writers) <= MAX_CONNECTIONS + 1
            for writer in writers:
                writer.close()
            # Once they are closed the node serves new connections again.
            for _ in range(200):
                status, _, writer = await get_health_raw(port)
                writer.close()
                if status == 200:
                    break
                await asyncio.sleep(0.02)
            assert status == 200
            refused_count = await counter(
                session, cluster.url(follower), "mox_http_connections_refused"
            )
            assert refused_count >= 1
            cluster.assert_alive()

    cluster.run(scenario, 120)
