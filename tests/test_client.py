"""MoxClient and SyncMoxClient against real nodes on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_api_support import ADMIN_TOKEN, Cluster, free_port

from mox.client import MoxApiError, MoxClient, SyncMoxClient
from mox.statemachine import LocationIn


def test_client_finds_the_leader_past_dead_and_follower_nodes(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = await Cluster(tmp_path, 3).start()
        try:
            leader, follower = cluster.leader(), cluster.follower()
            dead = f"http://127.0.0.1:{free_port()}"
            urls = [dead, follower.url, leader.url]
            async with MoxClient(urls, admin_token=ADMIN_TOKEN, backoff_s=0.01) as admin:
                created = await admin.create_tenant("client-co", "Client Co")
            assert created.api_key.key is not None
            assert created.tenant.slug == "client-co"
            async with MoxClient(urls, api_key=created.api_key.key, backoff_s=0.01) as client:
                ann = await client.register_talent(
                    "Ann",
                    emails=["ann@example.com"],
                    location=LocationIn(country="GB"),
                    niches=["skincare"],
                )
                assert client.leader_url == leader.url
                assert ann.location is not None and ann.location.country == "GB"
                assert await client.get_talent(ann.id) == ann
                bob = await client.register_talent(
                    "Bob", accounts=[{"platform": "tiktok", "handle": "bob"}]
                )
                names = [t.display_name async for t in client.iter_talents(page_size=1)]
                assert names == ["Ann", "Bob"]
                renamed = await client.update_talent(
                    ann.id, expected_version=1, display_name="Anna", legal_name=None
                )
                assert (renamed.version, renamed.display_name) == (2, "Anna")
                with pytest.raises(MoxApiError) as conflict:
                    await client.update_talent(ann.id, expected_version=1, display_name="Lost")
                assert (conflict.value.status, conflict.value.code, conflict.value.field) == (
                    409,
                    "VERSION_CONFLICT",
                    "expectedVersion",
                )
                with pytest.raises(MoxApiError) as invalid:
                    await client.register_talent("Eve", emails=["nope"])
                assert (invalid.value.status, invalid.value.field) == (422, "emails[0]")
                with pytest.raises(MoxApiError) as dup:
                    await client.register_talent(
                        "Bob 2", accounts=[{"platform": "tiktok", "handle": "BOB"}]
                    )
                assert dup.value.code == "DUPLICATE_HANDLE"
                archived = await client.archive_talent(bob.id, expected_version=1)
                assert archived.status == "archived"
                events = await client.talent_events(ann.id)
                assert [e["type"] for e in events] == ["TalentRegistered", "ProfileUpdated"]
                reader = await client.issue_api_key("reader", ["talents:read"])
                assert reader.key is not None
                tenant = await client.get_tenant()
                assert tenant.id == created.tenant.id
                health = await client.health(follower.url)
                assert health["role"] == "follower"
        finally:
            await cluster.stop()

    asyncio.run(main())


def test_client_retries_a_write_across_a_leader_failure_exactly_once(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = await Cluster(tmp_path, 3).start()
        try:
            urls = [running.url for running in cluster.nodes.values()]
            async with MoxClient(
                urls, admin_token=ADMIN_TOKEN, backoff_s=0.02, retries=30
            ) as admin:
                created = await admin.create_tenant("failover", "Failover")
            async with MoxClient(
                urls, api_key=created.api_key.key, backoff_s=0.02, retries=30
            ) as client:
                first = await client.register_talent("Before")
                old_leader = cluster.leader()
                assert client.leader_url == old_leader.url
                for node_id, running in list(cluster.nodes.items()):
                    if running is old_leader:
                        await running.stop()
                        del cluster.nodes[node_id]
                # The remembered leader is gone: the client moves on, waits out the
                # election (503 NO_LEADER), and lands the write once.
                after = await client.register_talent("After", idempotency_key="after-1")
                again = await client.register_talent("After", idempotency_key="after-1")
                assert again == after
                assert client.leader_url != old_leader.url
                ids = [t.id async for t in client.iter_talents()]
                assert ids == [first.id, after.id]
        finally:
            await cluster.stop()

    asyncio.run(main())


def test_unreachable_cluster_raises_after_retries() -> None:
    async def main() -> None:
        async with MoxClient(
            [f"http://127.0.0.1:{free_port()}"], api_key="x", retries=2, backoff_s=0.001
        ) as client:
            with pytest.raises(MoxApiError) as error:
                await client.get_tenant()
        assert (error.value.status, error.value.code) == (503, "UNREACHABLE")

    asyncio.run(main())


def test_client_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="at least one node URL"):
        MoxClient([])
    with pytest.raises(ValueError):
        MoxClient(["http://127.0.0.1:1"], retries=-1)


def test_sync_client(tmp_path: Path) -> None:
    def use_sync(urls: list[str]) -> None:
        with SyncMoxClient(urls, admin_token=ADMIN_TOKEN) as admin:
            created = admin.create_tenant("sync-co", "Sync Co", idempotency_key="boot")
            replay = admin.create_tenant("sync-co", "Sync Co", idempotency_key="boot")
        assert created.api_key.key is not None
        assert replay.tenant == created.tenant and replay.api_key.key is None
        with SyncMoxClient(urls, api_key=created.api_key.key) as client:
            talent = client.register_talent("Sam")
            assert client.get_talent(talent.id, consistency="stale") == talent
            updated = client.update_talent(talent.id, display_name="Samantha")
            assert updated.version == 2
            page = client.list_talents(limit=10)
            assert [t.id for t in page.items] == [talent.id] and page.next_cursor is None
            with pytest.raises(MoxApiError) as error:
                client.update_talent(talent.id, commission_bps=-5)
            assert (error.value.status, error.value.field) == (422, "commissionBps")
            key = client.issue_api_key("temp", ["talents:read"])
            assert client.revoke_api_key(key.id).revoked_at is not None
            assert client.archive_talent(talent.id).status == "archived"

    async def main() -> None:
        cluster = await Cluster(tmp_path, 1).start()
        try:
            await asyncio.to_thread(use_sync, [cluster.leader().url])
        finally:
            await cluster.stop()

    asyncio.run(main())


def test_concurrent_writes_through_a_leader_crash_apply_exactly_once(tmp_path: Path) -> None:
    writes = 30

    async def main() -> None:
        cluster = await Cluster(tmp_path, 3).start()
        try:
            urls = [running.url for running in cluster.nodes.values()]
            async with MoxClient(urls, admin_token=ADMIN_TOKEN, backoff_s=0.02) as admin:
                created = await admin.create_tenant("crashy", "Crashy")
            done = 0
            crashed = asyncio.Event()

            async def write(n: int) -> str:
                nonlocal done
                # One client per writer, as separate processes would have.
                async with MoxClient(
                    urls, api_key=created.api_key.key, backoff_s=0.02, retries=40, timeout_s=3
                ) as client:
                    talent = await client.register_talent(f"W{n}", idempotency_key=f"w-{n}")
                    again = await client.register_talent(f"W{n}", idempotency_key=f"w-{n}")
                    assert again.id == talent.id
                done += 1
                return talent.id

            async def crash_leader() -> None:
                while done < writes // 3:
                    await asyncio.sleep(0.005)
                leader = cluster.leader()
                await leader.power_cut()
                for node_id, running in list(cluster.nodes.items()):
                    if running is leader:
                        del cluster.nodes[node_id]
                crashed.set()

            crasher = asyncio.create_task(crash_leader())
            ids = await asyncio.gather(*(write(n) for n in range(writes)))
            await crasher
            assert crashed.is_set()
            assert len(set(ids)) == writes
            async with MoxClient(
                urls, api_key=created.api_key.key, backoff_s=0.02, retries=40
            ) as reader:
                names = sorted([t.display_name async for t in reader.iter_talents()])
            assert names == sorted(f"W{n}" for n in range(writes))
        finally:
            await cluster.stop()

    asyncio.run(main())
