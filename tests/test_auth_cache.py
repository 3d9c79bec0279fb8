"""The API's cache of verified API keys (mox/api/app.py `_authenticate`).

A write authenticates from a cache keyed by (tenant, key id), valid while the node's
`api_keys_epoch` is unchanged. These tests hold it to the guarantee of the uncached path: a
revoked key is refused once the revocation is applied on the node that serves the request,
a new key works at once on every node, and a wrong secret never rides on a cached key.
Real nodes, real files, real TCP (test_api_support).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
from test_api_support import Cluster, RunningNode, bearer, bootstrap
from test_statemachine import Harness, open_store

from mox.statemachine import (
    IssueApiKey,
    NewApiKey,
    RegisterTalent,
    RevokeApiKey,
)

WRITE_SCOPES = ["talents:read", "talents:write"]


async def post_talent(
    s: aiohttp.ClientSession, node: RunningNode, key: str, expect: int
) -> dict[str, Any]:
    async with s.post(
        f"{node.url}/api/talents", headers=bearer(key), json={"displayName": "A"}
    ) as resp:
        body: dict[str, Any] = json.loads(await resp.text())
        assert resp.status == expect, (resp.status, body)
        return body


async def issue_key(s: aiohttp.ClientSession, url: str, owner: str) -> dict[str, Any]:
    async with s.post(
        f"{url}/api/keys", headers=bearer(owner), json={"name": "w", "scopes": WRITE_SCOPES}
    ) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 201, body
        return body


async def caught_up(follower: RunningNode, leader: RunningNode, timeout_s: float = 20) -> None:
    """Wait until `follower` has applied everything `leader` has."""
    target = leader.node.status().applied_index
    deadline = asyncio.get_running_loop().time() + timeout_s
    while follower.node.status().applied_index < target:
        assert asyncio.get_running_loop().time() < deadline, "follower did not catch up"
        await asyncio.sleep(0.01)


def test_revoked_key_is_refused_once_the_revocation_is_applied(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = await Cluster(tmp_path, 3).start()
        try:
            async with aiohttp.ClientSession() as s:
                leader, follower = cluster.leader(), cluster.follower()
                owner, _ = await bootstrap(s, leader.url, "revoking")
                info = await issue_key(s, leader.url, owner)
                writer = info["key"]
                await caught_up(follower, leader)
                for node in (leader, follower):
                    await post_talent(s, node, writer, 201)  # verified, cached
                    stale_reads = node.node.stats.reads_stale
                    await post_talent(s, node, writer, 201)
                    # From the cache: no key lookup in the state machine this time.
                    assert node.node.stats.reads_stale == stale_reads
                    # A wrong secret for a cached key id is checked, never cached through.
                    wrong = writer[: writer.rindex(".") + 1] + "x" * 20
                    async with s.post(
                        f"{node.url}/api/talents",
                        headers=bearer(wrong),
                        json={"displayName": "A"},
                    ) as resp:
                        body = await resp.json()
                        assert resp.status == 401 and body["code"] == "UNAUTHENTICATED", body
                epoch_before = follower.node.api_keys_epoch
                async with s.delete(
                    f"{leader.url}/api/keys/{info['id']}", headers=bearer(owner)
                ) as resp:
                    assert resp.status == 200, await resp.text()
                # Applied on the leader before its answer: refused there at once.
                refused = await post_talent(s, leader, writer, 403)
                assert refused["code"] == "FORBIDDEN" and "revoked" in refused["detail"]
                await caught_up(follower, leader)
                assert follower.node.api_keys_epoch > epoch_before
                refused = await post_talent(s, follower, writer, 403)
                assert refused["code"] == "FORBIDDEN" and "revoked" in refused["detail"]
                # The owner key (cached too) still works: the epoch change only re-checks.
                await post_talent(s, follower, owner, 201)
        finally:
            await cluster.stop()

    asyncio.run(main())


def test_a_new_key_works_at_once_on_every_node(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = await Cluster(tmp_path, 3).start()
        try:
            async with aiohttp.ClientSession() as s:
                leader = cluster.leader()
                followers = [n for n in cluster.nodes.values() if n is not leader]
                owner, _ = await bootstrap(s, leader.url, "issuing")
                for node in cluster.nodes.values():
                    await post_talent(s, node, owner, 201)  # every node caches the owner key
                for _ in range(3):
                    # Used on a follower right after the leader answered: the follower may
                    # not have applied the key yet, and must still accept it.
                    fresh = (await issue_key(s, leader.url, owner))["key"]
                    for node in [*followers, leader]:
                        await post_talent(s, node, fresh, 201)
        finally:
            await cluster.stop()

    asyncio.run(main())


def test_api_keys_epoch_moves_only_with_key_writes(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    try:
        h = Harness(store)
        epoch = h.sm.api_keys_epoch
        assert h.create_tenant().ok
        assert h.sm.api_keys_epoch > epoch
        epoch = h.sm.api_keys_epoch
        assert h.register("t1", actor="apikey:k1").ok
        assert h.sm.api_keys_epoch == epoch  # talent writes leave the cache valid
        secret_sha256 = hashlib.sha256(b"s2").hexdigest()
        new_key = NewApiKey(key_id="k2", secret_sha256=secret_sha256, scopes=WRITE_SCOPES)
        assert h.apply(IssueApiKey(key=new_key), actor="apikey:k1").ok
        assert h.sm.api_keys_epoch == epoch + 1
        assert h.apply(RevokeApiKey(key_id="k2"), actor="apikey:k1").ok
        assert h.sm.api_keys_epoch == epoch + 2
        # Rejected (the key is already revoked) still moves it: conservative.
        h.apply(RevokeApiKey(key_id="k2"), actor="apikey:k1")
        assert h.sm.api_keys_epoch == epoch + 3
        assert not h.apply(RegisterTalent(talent_id="t2", display_name="B"), actor="apikey:k2").ok
        assert h.sm.api_keys_epoch == epoch + 3
        h.sm.note_store_replaced()
        assert h.sm.api_keys_epoch == epoch + 4
    finally:
        asyncio.run(store.close())
