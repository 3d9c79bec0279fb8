"""Linearizable reads served by followers of a real 3-process cluster (read index through
the leader over TCP; no HTTP forwarding of GETs).

A write acknowledged by the leader is seen by a linearizable GET on every follower started
right after it; concurrent writers (at the leader) and readers (at the followers) form a
linearizable history (checker.lin); with no leader left, a follower answers 503.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
from test_cluster_support import ProcCluster, bootstrap_tenant, health, request, wait_for_leader

from checker.lin import HistoryRecorder, check_kv


async def _wait_for_followers(
    session: aiohttp.ClientSession, cluster: ProcCluster, followers: list[int], leader: int
) -> None:
    """Until every follower serves its API and knows the leader (a process that started
    late has no leader yet, and would rightly answer 503 NO_LEADER)."""
    deadline = time.monotonic() + 30
    for follower in followers:
        while True:
            status = await health(session, cluster.url(follower))
            if status is not None and status.get("leaderId") == leader:
                break
            assert time.monotonic() < deadline, (follower, status)
            await asyncio.sleep(0.05)


async def _follower_read(
    session: aiohttp.ClientSession, url: str, talent: str, headers: dict[str, str]
) -> dict[str, Any]:
    """A linearizable GET that the node at `url` serves itself (never forwarded). While
    there is no leader (an election: a loaded machine can deschedule the leader past the
    election timeout) it rightly answers 503 NO_LEADER: that is retried, for up to 30 s;
    any other answer is final."""
    deadline = time.monotonic() + 30
    while True:
        async with session.get(f"{url}/api/talents/{talent}", headers=headers) as response:
            got: dict[str, Any] = await response.json()
            no_leader = response.status == 503 and got.get("code") == "NO_LEADER"
            if not (no_leader and time.monotonic() < deadline):
                assert response.status == 200, got
                assert "X-Mox-Leader" not in response.headers  # not forwarded
                return got
        await asyncio.sleep(0.05)


# Bounds on the concurrent phase's history, so that the linearizability check stays quick
# (one register per talent, each checked on its own).
TALENTS = 4
OPS_PER_CLIENT_MAX = 80


def _forwarded_count(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith("mox_http_forwarded_requests_total"):
            return float(line.split()[-1])
    return 0.0


async def _reader(
    session: aiohttp.ClientSession,
    urls: list[str],
    headers: dict[str, str],
    talents: list[str],
    index: int,
    deadline_s: float,
    history: HistoryRecorder,
) -> None:
    rng = random.Random(index)
    for _ in range(OPS_PER_CLIENT_MAX):
        if time.monotonic() >= deadline_s:
            return
        talent = rng.choice(talents)
        op = history.invoke(index, "read", talent, None, time.monotonic_ns())
        try:
            async with session.get(
                f"{rng.choice(urls)}/api/talents/{talent}", headers=headers
            ) as response:
                body: Any = await response.json(content_type=None)
                if response.status == 200:
                    history.ok(op, time.monotonic_ns(), body["displayName"])
                    continue
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        history.fail(op, time.monotonic_ns())


async def _writer(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    talents: list[str],
    deadline_s: float,
    history: HistoryRecorder,
) -> None:
    for n in range(1, OPS_PER_CLIENT_MAX + 1):
        if time.monotonic() >= deadline_s:
            return
        talent = talents[n % len(talents)]
        value = f"w{n}"
        op = history.invoke("writer", "write", talent, value, time.monotonic_ns())
        try:
            async with session.patch(
                f"{url}/api/talents/{talent}",
                json={"displayName": value},
                headers={**headers, "Idempotency-Key": f"fw-{n}"},
            ) as response:
                await response.read()
                if response.status == 200:
                    history.ok(op, time.monotonic_ns())
                    continue
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        history.unknown(op, time.monotonic_ns())


def test_followers_serve_linearizable_reads(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path)

    async def scenario() -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            leader, _term = await wait_for_leader(session, cluster, cluster.ids)
            followers = [n for n in cluster.ids if n != leader]
            await _wait_for_followers(session, cluster, followers, leader)
            key = await bootstrap_tenant(session, cluster.url(leader), "freads")
            headers = {"Authorization": f"Bearer {key}"}
            status, body = await request(
                session,
                "POST",
                f"{cluster.url(leader)}/api/talents",
                json={"displayName": "v0"},
                headers={**headers, "Idempotency-Key": "create"},
            )
            assert status == 201, body
            talent = body["id"]

            # Read-your-writes on every follower, with no waiting for replication.
            for k in range(1, 21):
                status, body = await request(
                    session,
                    "PATCH",
                    f"{cluster.url(leader)}/api/talents/{talent}",
                    json={"displayName": f"v{k}"},
                    headers={**headers, "Idempotency-Key": f"patch-{k}"},
                )
                assert status == 200, body
                for follower in followers:
                    got = await _follower_read(session, cluster.url(follower), talent, headers)
                    assert got["displayName"] == f"v{k}", (follower, k, got)
            for follower in followers:
                async with session.get(f"{cluster.url(follower)}/metrics") as response:
                    assert _forwarded_count(await response.text()) == 0.0

            # Concurrent writes at the leader, linearizable reads at the followers.
            initial = {talent: "v20"}
            for n in range(1, TALENTS):
                status, body = await request(
                    session,
                    "POST",
                    f"{cluster.url(leader)}/api/talents",
                    json={"displayName": "init"},
                    headers={**headers, "Idempotency-Key": f"create-{n}"},
                )
                assert status == 201, body
                initial[body["id"]] = "init"
            talents = sorted(initial)
            history = HistoryRecorder()
            deadline_s = time.monotonic() + 3.0
            urls = [cluster.url(n) for n in followers]
            await asyncio.gather(
                _writer(session, cluster.url(leader), headers, talents, deadline_s, history),
                *(
                    _reader(session, urls, headers, talents, i, deadline_s, history)
                    for i in range(4)
                ),
            )
            counts = history.counts()
            assert counts["ok"] >= 50, counts
            reads_ok = [
                op for op in history.operations if op.kind == "read" and op.status == "ok"
            ]
            assert len(reads_ok) >= 20, counts
            result = check_kv(history.operations, initial=initial)
            assert result.ok is True, result.explanation

            # No leader left: the surviving follower answers 503 (never a stale 200).
            survivor = followers[0]
            cluster.kill_node(leader)
            cluster.kill_node(followers[1])
            deadline = time.monotonic() + 10
            codes: list[str] = []
            while time.monotonic() < deadline:
                async with session.get(
                    f"{cluster.url(survivor)}/api/talents/{talent}", headers=headers
                ) as response:
                    body = await response.json(content_type=None)
                    assert response.status == 503, body
                    assert response.headers.get("Retry-After") == "1"
                    codes.append(body["code"])
                    if body["code"] == "NO_LEADER":
                        break
            assert codes and codes[-1] == "NO_LEADER", codes
            assert set(codes) <= {"NO_LEADER", "NOT_LEADER", "TIMEOUT"}, codes

    cluster.run(scenario, timeout_s=120)
