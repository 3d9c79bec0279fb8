"""Linearizability of a real 3-process cluster under kill -9, checked with checker.lin.

Clients overwrite the display names of a few talents (PATCH) and read them back
(linearizable GET) through random nodes while the leader is killed with SIGKILL and
restarted. Each talent is a register: the history of writes and reads must be
linearizable. A write that failed or timed out has an unknown outcome (it may take effect
at any later time, or never); a read without an answer is left out.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
from test_cluster_chaos import chaos
from test_cluster_support import ProcCluster, bootstrap_tenant, request, wait_for_leader

from checker.lin import HistoryRecorder, check_kv

KEYS = 8
CLIENTS = 4
INITIAL = "initial"
# Problem codes the API returns only before a command is proposed: definitely not applied.
NOT_PROPOSED = ("NO_LEADER", "NOT_LEADER", "OVERLOADED")


async def client(
    session: aiohttp.ClientSession,
    cluster: ProcCluster,
    key: str,
    talent_ids: list[str],
    index: int,
    rng: random.Random,
    deadline_s: float,
    history: HistoryRecorder,
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    n = 0
    while time.monotonic() < deadline_s:
        n += 1
        talent = rng.choice(talent_ids)
        url = f"{cluster.url(rng.choice(cluster.ids))}/api/talents/{talent}"
        timeout = aiohttp.ClientTimeout(total=3)
        if rng.random() < 0.5:
            value = f"c{index}-{n}"
            op = history.invoke(index, "write", talent, value, time.monotonic_ns())
            try:
                async with session.patch(
                    url,
                    json={"displayName": value},
                    headers={**headers, "Idempotency-Key": f"lin-{index}-{n}"},
                    timeout=timeout,
                ) as response:
                    body: Any = await response.json(content_type=None)
                    if response.status == 200:
                        assert body["displayName"] == value
                        history.ok(op, time.monotonic_ns())
                        continue
                    if response.status < 500 or body.get("code") in NOT_PROPOSED:
                        history.fail(op, time.monotonic_ns())
                        continue
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            history.unknown(op, time.monotonic_ns())
        else:
            op = history.invoke(index, "read", talent, None, time.monotonic_ns())
            try:
                async with session.get(url, headers=headers, timeout=timeout) as response:
                    body = await response.json(content_type=None)
                    if response.status == 200:
                        history.ok(op, time.monotonic_ns(), body["displayName"])
                        continue
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            history.fail(op, time.monotonic_ns())  # a read without an answer changed nothing
        await asyncio.sleep(0.02)


def test_registers_stay_linearizable_across_leader_kills(tmp_path: Path) -> None:
    rng = random.Random(7)
    cluster = ProcCluster(tmp_path, overrides={"consensus": {"snapshot_threshold": 64}})
    history = HistoryRecorder()
    duration_s = 6.0

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            leader, _ = await wait_for_leader(session, cluster, cluster.ids)
            key = await bootstrap_tenant(session, cluster.url(leader), "lin")
            talent_ids: list[str] = []
            for n in range(KEYS):
                status, body = await request(
                    session,
                    "POST",
                    f"{cluster.url(leader)}/api/talents",
                    json={"displayName": INITIAL},
                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"k{n}"},
                )
                assert status == 201, body
                talent_ids.append(body["id"])
            deadline_s = time.monotonic() + duration_s
            clients = [
                client(
                    session,
                    cluster,
                    key,
                    talent_ids,
                    i,
                    random.Random(rng.random()),
                    deadline_s,
                    history,
                )
                for i in range(CLIENTS)
            ]
            await asyncio.gather(chaos(session, cluster, rng, deadline_s, period_s=3.0), *clients)
            cluster.assert_alive()
            initial = {talent: INITIAL for talent in talent_ids}
            result = check_kv(history.operations, initial=initial)
            counts = history.counts()
            print(f"history {counts}; {result.explanation[:200]}")
            assert counts["ok"] >= 50, counts
            assert result.ok is True, result.explanation

    cluster.run(scenario, timeout_s=duration_s + 120)
