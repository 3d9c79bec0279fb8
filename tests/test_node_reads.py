"""Linearizable reads served by followers (read index through the leader), at the Node level.

Real Mox parts (RaftCore, Wal, LsmStore, StateMachine) on SimDisks and the SimNetwork, in
virtual time; the cluster helper is the runtime tests'.
"""

from __future__ import annotations

import asyncio

import pytest
from test_node_runtime import Cluster, create_tenant, display_name, get, register, rename, run

from mox.node.errors import NotLeader, Overloaded
from mox.node.runtime import Node
from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig
from mox.statemachine.commands import decode_result


def _followers(cluster: Cluster, leader: Node) -> list[Node]:
    return [n for n in cluster.nodes.values() if n is not leader]


def test_a_follower_read_sees_every_write_acknowledged_before_it_started() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=11)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        assert decode_result(await leader.submit(register("a", 2, "v0"))).ok
        for k in range(1, 30):
            # No settling: the follower may not have applied the write yet, so a read of
            # its local state could be stale; the read index makes it wait.
            assert decode_result(await leader.submit(rename("a", 2 + k, f"v{k}"))).ok
            for follower in _followers(cluster, leader):
                assert display_name(await follower.read(get("a"))) == f"v{k}"
        for follower in _followers(cluster, leader):
            assert follower.stats.reads_linearizable == 29
            assert not follower.core.rejected
        await cluster.stop()

    run(body)


def test_concurrent_follower_reads_are_batched_into_few_requests() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=12)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        assert decode_result(await leader.submit(register("a", 2, "x"))).ok
        await cluster.settle()
        follower = _followers(cluster, leader)[0]
        sent_before = follower.stats.messages_sent
        names = await asyncio.gather(*(follower.read(get("a")) for _ in range(200)))
        assert {display_name(raw) for raw in names} == {"x"}
        # 200 reads queued together leave in a handful of ReadIndex messages (plus the
        # heartbeat responses the follower sends meanwhile), not 200.
        assert follower.stats.messages_sent - sent_before < 50
        await cluster.stop()

    run(body)


def test_a_follower_without_a_leader_refuses_with_no_hint() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=13)
        node = await cluster.start(1)  # alone: no leader can be elected
        await asyncio.sleep(0.5)
        with pytest.raises(NotLeader) as refused:
            await node.read(get("a"))
        assert refused.value.leader_id is None
        await cluster.stop()

    run(body)


def test_a_cut_off_follower_bounds_pending_reads_and_fails_them_never_stale() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=14, pending_requests_max=4)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        assert decode_result(await leader.submit(register("a", 2, "old"))).ok
        await cluster.settle()
        follower = _followers(cluster, leader)[0]
        cluster.network.isolate(follower.node_id, cluster.ids)
        # The rest of the cluster moves on; the follower cannot know.
        assert decode_result(await leader.submit(rename("a", 3, "new"))).ok
        reads = [asyncio.ensure_future(follower.read(get("a"))) for _ in range(4)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await follower.read(get("a"))
        done, pending = await asyncio.wait(reads, timeout=5.0)
        assert not pending
        for read in done:
            # Failed (retry elsewhere), never answered from the stale local state.
            assert isinstance(read.exception(), NotLeader), read
        assert display_name(await follower.read(get("a"), linearizable=False)) == "old"
        cluster.network.heal()
        await cluster.settle()
        assert display_name(await follower.read(get("a"))) == "new"
        await cluster.stop()

    run(body)


def test_the_simulator_checks_linearizability_of_reads_served_by_followers() -> None:
    for seed in (1, 2):
        world = World(WorldConfig(seed=seed, faults=FaultPlan.parse("none"), duration_s=1.0))
        result = world.run()
        assert result.ok, result.summary_line()
        assert result.linearizability.startswith("linearizable"), result.linearizability
        served = {
            node_id: node.stats.reads_linearizable
            for node_id, node in world.nodes.items()
            if node is not None and not node.is_leader
        }
        assert len(served) == 2, served
        # The workload's history (checked above) includes reads answered by followers.
        assert all(count > 0 for count in served.values()), served
