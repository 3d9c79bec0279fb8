"""Join mode (cluster.initial_state = "existing"): an empty node joining a running cluster
starts a member of nothing, never campaigns, and catches up once a leader adds it.

Real Mox nodes (RaftCore, Wal, Superblock, LsmStore) over SimDisks and a SimNetwork, in
virtual time. The trace of every core is watched: a joiner that times out, pre-votes,
campaigns or leads shows up there even if it lasts a single step.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import test_node_runtime as runtime_harness
from test_node_runtime import create_tenant, get, register, run

from mox.consensus.raft.core import ConfChange
from mox.node.errors import NotLeader
from mox.node.runtime import Node, NodeConfig
from mox.statemachine.commands import (
    decode_result,
)

TENANT = "t1"
SCOPES = ["tenant:admin", "talents:read", "talents:write"]
# Actions of a node that tries to lead (spec StartPreVote/Timeout/BecomeCandidate/...).
CAMPAIGN_ACTIONS = {"StartPreVote", "Timeout", "BecomeCandidate", "BecomeLeader"}
CAMPAIGN_ROLES = {"pre_candidate", "candidate", "leader"}
# Long enough for dozens of election timeouts (30 ticks of 10 ms at most).
WAIT_S = 3.0


class Cluster(runtime_harness.Cluster):
    """The node-runtime harness, with every core's trace events collected and nodes that
    bootstrapped the cluster (`founders`, whose cluster.nodes lists only them) apart from
    joiners (whose cluster.nodes lists every id)."""

    def __init__(self, ids: tuple[int, ...], seed: int, founders: tuple[int, ...] = ()) -> None:
        assert ids == tuple(range(1, len(ids) + 1)), ids
        self.events: list[dict[str, Any]] = []
        super().__init__(
            len(ids),
            seed,
            trace_observer=self.events.append,
            snapshot_threshold_entries=100_000,
        )
        self.founders = founders or ids

    async def start(self, node_id: int, **overrides: Any) -> Node:
        """`join=True` starts `node_id` as a joiner (cluster.nodes lists every id)."""
        join = bool(overrides.pop("join", False))
        members = self.founders if node_id in self.founders and not join else self.ids
        return await super().start(node_id, members=members, join=join, **overrides)

    async def caught_up(self, node: Node, leader: Node, timeout_s: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + timeout_s
        while loop.time() < deadline_s:
            if node.status().applied_index >= leader.status().commit_index > 0:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{node.node_id} behind: {node.status()} vs {leader.status()}")

    def campaigns_of(self, node_ids: set[int]) -> list[dict[str, Any]]:
        """Trace events showing one of `node_ids` trying to lead (or leading)."""
        return [
            event
            for event in self.events
            if event["node"] in node_ids
            and (
                event["action"] in CAMPAIGN_ACTIONS
                or event["state"]["role"] in CAMPAIGN_ROLES
            )
        ]



def test_join_config_keeps_the_joiner_out_of_its_initial_configuration() -> None:
    config = NodeConfig(node_id=4, members=(1, 2, 3, 4), join=True)
    assert config.new_directory_members() == (1, 2, 3)
    # The joiner need not be listed at all.
    assert NodeConfig(node_id=4, members=(1, 2), join=True).new_directory_members() == (1, 2)
    assert NodeConfig(node_id=2, members=(1, 2, 3)).new_directory_members() == (1, 2, 3)
    with pytest.raises(AssertionError):
        NodeConfig(node_id=1, members=(1,), join=True)  # nobody to join
    with pytest.raises(AssertionError):
        NodeConfig(node_id=4, members=(1, 2, 3))  # bootstrapping a cluster without itself


def test_a_joiner_stays_silent_survives_a_restart_and_catches_up_once_added() -> None:
    async def body() -> None:
        cluster = Cluster((1, 2, 3, 4), seed=11, founders=(1, 2, 3))
        for node_id in (1, 2, 3):
            await cluster.start(node_id)
        leader = await cluster.leader((1, 2, 3))
        assert decode_result(await leader.submit(create_tenant())).ok
        term = leader.status().term
        joiner = await cluster.start(4, join=True)
        assert 4 not in joiner.members()
        await asyncio.sleep(WAIT_S)
        assert cluster.campaigns_of({4}) == []
        assert joiner.status().role == "follower"
        assert joiner.status().term == 0, "nobody sent it anything: it must not invent terms"
        assert leader.is_leader and leader.status().term == term
        with pytest.raises(NotLeader):
            await joiner.submit(register("x", 2))

        # Restarted before it was added, even without the flag: the superblock recorded it
        # as a joiner, so it does not bootstrap into cluster.nodes.
        cluster.crash(4)
        joiner = await cluster.start(4, join=False)
        assert 4 not in joiner.members()
        await asyncio.sleep(WAIT_S)
        assert cluster.campaigns_of({4}) == []
        assert leader.is_leader and leader.status().term == term

        assert decode_result(await leader.submit(register("a", 2))).ok
        index = await leader.propose_conf_change(ConfChange("add", 4))
        await cluster.caught_up(joiner, leader)
        assert joiner.status().applied_index >= index
        assert 4 in joiner.members()
        assert joiner.leader_id == leader.node_id
        assert joiner.status().term == leader.status().term == term
        raw = await joiner.read(get("a"), linearizable=False)
        assert decode_result(raw).ok
        # A member now, it would campaign if the leader went away (it is no joiner any more).
        assert joiner.core.promotable()
        await cluster.stop()

    run(body)


def test_two_empty_joiners_cannot_form_a_majority_of_the_old_configuration() -> None:
    """The reported split brain: two of three removed, wiped and started at once. As
    bootstrapping nodes they are a majority of {1, 2, 3}; as joiners they are nothing."""

    async def body() -> None:
        cluster = Cluster((1, 2, 3), seed=12)
        for node_id in (1, 2, 3):
            await cluster.start(node_id)
        leader = await cluster.leader((1, 2, 3))
        assert decode_result(await leader.submit(create_tenant())).ok
        for seq, talent in enumerate(("a", "b", "c"), start=2):
            assert decode_result(await leader.submit(register(talent, seq))).ok
        others = tuple(n for n in cluster.ids if n != leader.node_id)
        for node_id in others:
            await leader.propose_conf_change(ConfChange("remove", node_id))
        assert leader.members() == (leader.node_id,)
        for node_id in others:
            cluster.crash(node_id)
            cluster.wipe(node_id)
        term = leader.status().term
        joiners = [await cluster.start(node_id, join=True) for node_id in others]
        await asyncio.sleep(WAIT_S)
        assert cluster.campaigns_of(set(others)) == []
        for joiner in joiners:
            status = joiner.status()
            assert (status.role, status.term, status.last_index) == ("follower", 0, 0)
            with pytest.raises(NotLeader):
                await joiner.submit(register("lost", 9))
        assert leader.is_leader and leader.status().term == term
        assert decode_result(await leader.submit(register("d", 5))).ok

        for joiner in joiners:  # one server at a time, as `mox members add` does
            await leader.propose_conf_change(ConfChange("add", joiner.node_id))
            await cluster.caught_up(joiner, leader)
        assert sorted(leader.members()) == [1, 2, 3]
        assert decode_result(await leader.submit(register("e", 6))).ok
        for joiner in joiners:
            await cluster.caught_up(joiner, leader)
            assert sorted(joiner.members()) == [1, 2, 3]
            assert joiner.leader_id == leader.node_id
            for talent in ("a", "d", "e"):
                assert decode_result(await joiner.read(get(talent), linearizable=False)).ok
        assert cluster.campaigns_of(set(others)) == []
        assert leader.status().term == term
        await cluster.stop()

    run(body)


def test_without_join_two_wiped_nodes_do_elect_one_of_them() -> None:
    """The hole itself, so that the test above is known to be able to fail: bootstrapping
    empty nodes take cluster.nodes as their configuration and campaign."""

    async def body() -> None:
        cluster = Cluster((1, 2, 3), seed=12)
        for node_id in (1, 2, 3):
            await cluster.start(node_id)
        leader = await cluster.leader((1, 2, 3))
        assert decode_result(await leader.submit(create_tenant())).ok
        others = tuple(n for n in cluster.ids if n != leader.node_id)
        for node_id in others:
            await leader.propose_conf_change(ConfChange("remove", node_id))
        # The survivor is cut off from the wiped pair, so that its own reaction to their
        # leader does not enter the picture: only whether they campaign.
        for node_id in others:
            cluster.crash(node_id)
            cluster.wipe(node_id)
            cluster.network.partition([[leader.node_id], list(others)])
        for node_id in others:
            await cluster.start(node_id)
        await asyncio.sleep(WAIT_S)
        assert cluster.campaigns_of(set(others)) != []
        assert any(cluster.nodes[n].is_leader for n in others)
        await cluster.stop()

    run(body)


class ListLogger:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, /, **fields: Any) -> None:
        self.events.append((event, fields))

    def error(self, event: str, /, **fields: Any) -> None:
        self.events.append((event, fields))


def test_a_node_with_data_ignores_join_and_says_so() -> None:
    async def body() -> None:
        cluster = Cluster((1,), seed=13)
        node = await cluster.start(1)
        await cluster.leader((1,))
        assert decode_result(await node.submit(create_tenant())).ok
        cluster.crash(1)
        logger = ListLogger()
        config = NodeConfig(node_id=1, members=(1, 2), join=True)
        node = await Node.open(
            config,
            fs=cluster.disks[1].filesystem(),
            transport=cluster.network.endpoint(1),
            clock=cluster.clock,
            rng=cluster.rngs[1],
            logger=logger,
        )
        names = [name for name, _ in logger.events]
        assert "node.join_ignored" in names and "node.joining" not in names, names
        # Still the one-member cluster it was created as: it leads again on its own.
        assert node.members() == (1,)
        node.start()
        cluster.nodes[1] = node
        await cluster.leader((1,))
        await cluster.stop()

    run(body)
