"""The node runtime over simulated disks and network: recovery, snapshots, errors, group commit.

Everything here runs real Mox parts (RaftCore, Wal, Superblock, LsmStore, StateMachine) on
`SimDisk`s, in virtual time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mox.consensus.raft.core import ConfChange
from mox.io.sim import SimClock, SimDisk, SimRandom
from mox.io.simloop import run_virtual
from mox.node.errors import NodeStopped, NotLeader
from mox.node.runtime import ConfChangeRefused, Node, NodeConfig
from mox.node.snapshot_file import SNAPSHOT_FILE
from mox.node.trace import TraceLog
from mox.sim.network import SimNetwork
from mox.statemachine.commands import (
    CreateTenant,
    GetTalent,
    NewApiKey,
    RegisterTalent,
    UpdateProfile,
    decode_result,
    encode_command,
    encode_query,
    make_command,
)
from mox.storage.lsm import LsmOptions

TENANT = "t1"
SCOPES = ["tenant:admin", "talents:read", "talents:write"]


def create_tenant(seq: int = 1) -> bytes:
    body = CreateTenant(
        slug="acme",
        name="Acme",
        owner_key=NewApiKey(key_id="k1", secret_sha256="0" * 64, scopes=SCOPES),
    )
    return encode_command(make_command(body, tenant_id=TENANT, client_id="c", request_seq=seq))


def register(talent: str, seq: int, name: str = "X") -> bytes:
    body = RegisterTalent(talent_id=talent, display_name=name)
    return encode_command(make_command(body, tenant_id=TENANT, client_id="c", request_seq=seq))


def rename(talent: str, seq: int, name: str, client: str = "c") -> bytes:
    body = UpdateProfile(talent_id=talent, display_name=name)
    return encode_command(make_command(body, tenant_id=TENANT, client_id=client, request_seq=seq))


def get(talent: str) -> bytes:
    return encode_query(TENANT, GetTalent(talent_id=talent))


def display_name(raw: bytes) -> str | None:
    result = decode_result(raw)
    if result.code == "NOT_FOUND":
        return None
    assert result.ok, result
    value: dict[str, Any] = result.decode_value(dict[str, Any])
    return str(value["displayName"])


class Cluster:
    """Nodes over SimDisks and one SimNetwork; crash, restart, wait for a leader."""

    def __init__(
        self,
        size: int,
        seed: int = 1,
        *,
        trace_observer: Callable[[dict[str, Any]], None] | None = None,
        **config: Any,
    ) -> None:
        self.root = random.Random(seed)
        self.ids = tuple(range(1, size + 1))
        self.network = SimNetwork(SimRandom(random.Random(self.root.getrandbits(64))))
        self.disks = {n: SimDisk(random.Random(self.root.getrandbits(64))) for n in self.ids}
        self.rngs = {n: SimRandom(random.Random(self.root.getrandbits(64))) for n in self.ids}
        self.nodes: dict[int, Node] = {}
        self.clock = SimClock()
        self.trace = (
            TraceLog(self.clock)
            if trace_observer is None
            else TraceLog(self.clock, keep_lines=False, observer=trace_observer)
        )
        self.config = {
            "wal_segment_size_bytes": 64 * 1024,
            "snapshot_threshold_entries": 1000,
            "lsm_options": LsmOptions(memtable_size_bytes=64 * 1024),
            **config,
        }

    async def start(self, node_id: int, **overrides: Any) -> Node:
        """Open and start node `node_id` (NodeConfig fields in `overrides` replace the
        cluster's: e.g. `members`, `join`)."""
        fields = {"members": self.ids, **self.config, **overrides}
        config = NodeConfig(node_id=node_id, **fields)
        node = await Node.open(
            config,
            fs=self.disks[node_id].filesystem(),
            transport=self.network.endpoint(node_id),
            clock=self.clock,
            rng=self.rngs[node_id],
            trace=self.trace,
        )
        node.start()
        self.nodes[node_id] = node
        return node

    async def start_all(self) -> None:
        for node_id in self.ids:
            await self.start(node_id)

    def crash(self, node_id: int) -> None:
        self.nodes.pop(node_id).crash()
        self.disks[node_id].crash()

    def wipe(self, node_id: int) -> None:
        """The node lost its disk: a new, empty one in its place."""
        assert node_id not in self.nodes
        self.disks[node_id] = SimDisk(random.Random(self.root.getrandbits(64)))

    async def leader(
        self, among: tuple[int, ...] | None = None, timeout_s: float = 10.0
    ) -> Node:
        """The one running node of `among` (default: all) that leads, once there is one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            running = [self.nodes[n] for n in (among or self.ids) if n in self.nodes]
            leaders = [n for n in running if n.is_leader]
            if len(leaders) == 1:
                return leaders[0]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no single leader: {[n.status() for n in self.nodes.values()]}")

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every running node has applied the leader's last index."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            statuses = [n.status() for n in self.nodes.values()]
            last = max(s.last_index for s in statuses)
            if all(s.applied_index == last and s.commit_index == last for s in statuses):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not settled: {[n.status() for n in self.nodes.values()]}")

    async def stop(self) -> None:
        for node in list(self.nodes.values()):
            await node.stop()


def run(body: Callable[[], Awaitable[None]]) -> None:
    run_virtual(body())


def test_single_node_recovers_acknowledged_writes_after_crash() -> None:
    async def body() -> None:
        cluster = Cluster(1)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        for k in range(20):
            assert decode_result(await leader.submit(register(f"a{k}", 2 + k, f"name{k}"))).ok
        checksum = leader.lsm.checksum()
        cluster.crash(1)
        node = await cluster.start(1)
        leader = await cluster.leader()
        assert leader is node
        await cluster.settle()
        for k in range(20):
            assert display_name(await node.read(get(f"a{k}"))) == f"name{k}"
        assert node.lsm.checksum() == checksum
        await cluster.stop()

    run(body)


def test_recovery_after_snapshots_uses_snapshot_and_log_suffix() -> None:
    async def body() -> None:
        cluster = Cluster(1, snapshot_threshold_entries=8, wal_segment_size_bytes=8192)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        for k in range(40):
            assert decode_result(await leader.submit(register(f"a{k}", 2 + k))).ok
        await asyncio.sleep(0.1)
        assert leader.stats.snapshots_taken >= 3
        assert leader.core.log.snapshot.index >= 24
        assert leader.wal.first_seq > 1, "the WAL prefix covered by the snapshot was dropped"
        assert cluster.disks[1].filesystem().exists(SNAPSHOT_FILE)
        checksum = leader.lsm.checksum()
        applied = leader.applied_index
        cluster.crash(1)
        node = await cluster.start(1)
        assert node.core.log.snapshot.index >= 24
        await cluster.leader()
        await cluster.settle()
        assert node.applied_index >= applied
        assert node.lsm.checksum() == checksum
        await cluster.stop()

    run(body)


def test_three_nodes_keep_acknowledged_writes_when_the_leader_crashes() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=2)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        for k in range(10):
            assert decode_result(await leader.submit(register(f"a{k}", 2 + k, f"v{k}"))).ok
        old = leader.node_id
        cluster.crash(old)
        new_leader = await cluster.leader()
        assert new_leader.node_id != old
        for k in range(10):
            assert display_name(await new_leader.read(get(f"a{k}"))) == f"v{k}"
        assert decode_result(await new_leader.submit(rename("a0", 12, "after"))).ok
        await cluster.start(old)
        await cluster.settle()
        checksums = {n.node_id: n.lsm.checksum() for n in cluster.nodes.values()}
        assert len(set(checksums.values())) == 1, checksums
        assert display_name(await cluster.nodes[old].read(get("a0"), linearizable=False)) == "after"
        await cluster.stop()

    run(body)


def test_lagging_follower_catches_up_through_a_snapshot() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=3, snapshot_threshold_entries=8)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        lagging = next(n for n in cluster.ids if n != leader.node_id)
        cluster.network.isolate(lagging, cluster.ids)
        for k in range(40):
            assert decode_result(await leader.submit(register(f"a{k}", 2 + k))).ok
        await asyncio.sleep(0.2)
        assert leader.core.log.snapshot.index > cluster.nodes[lagging].status().last_index
        cluster.network.heal()
        await cluster.settle()
        assert cluster.nodes[lagging].stats.snapshots_installed >= 1
        checksums = {n.node_id: n.lsm.checksum() for n in cluster.nodes.values()}
        assert len(set(checksums.values())) == 1, checksums
        # ...and the installed snapshot survives a crash of the follower.
        cluster.crash(lagging)
        node = await cluster.start(lagging)
        await cluster.settle()
        assert node.lsm.checksum() == leader.lsm.checksum()
        await cluster.stop()

    run(body)


def test_follower_refuses_writes_naming_the_leader_and_serves_reads() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=4)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        assert decode_result(await leader.submit(register("a", 2, "first"))).ok
        await cluster.settle()
        follower = next(n for n in cluster.nodes.values() if not n.is_leader)
        with pytest.raises(NotLeader) as refused:
            await follower.submit(rename("a", 3, "x"))
        assert refused.value.leader_id == leader.node_id
        # Linearizable reads go through the leader's read index (tests/test_node_reads.py).
        assert display_name(await follower.read(get("a"))) == "first"
        assert display_name(await follower.read(get("a"), linearizable=False)) == "first"
        status = follower.status()
        assert status.role == "follower"
        assert status.leader_id == leader.node_id
        await cluster.stop()

    run(body)


def test_malformed_payloads_are_counted_and_dropped() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=5)
        await cluster.start_all()
        leader = await cluster.leader()
        rogue = cluster.network.endpoint(99)
        for payload in (b"", b"\xff\x00garbage", b"\x93\x01\x02"):
            rogue.send(leader.node_id, payload)
        await asyncio.sleep(0.1)
        assert leader.stats.messages_malformed == 3
        assert decode_result(await leader.submit(create_tenant())).ok
        await cluster.stop()

    run(body)


def test_group_commit_persists_many_entries_per_wal_commit() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=6)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        before_entries = leader.stats.entries_persisted
        before_commits = leader.stats.wal_commits
        # 200 concurrent clients, one request each.
        commands = [
            encode_command(
                make_command(
                    RegisterTalent(talent_id=f"g{k}", display_name="x"),
                    tenant_id=TENANT,
                    client_id=f"client{k}",
                    request_seq=1,
                )
            )
            for k in range(200)
        ]
        replies = await asyncio.gather(*(leader.submit(c) for c in commands))
        assert all(decode_result(r).ok for r in replies)
        entries = leader.stats.entries_persisted - before_entries
        commits = leader.stats.wal_commits - before_commits
        assert entries >= 200
        assert commits < entries / 4, (commits, entries)
        await cluster.stop()

    run(body)


def test_stop_fails_pending_requests_with_node_stopped() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=7)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        cluster.network.isolate(leader.node_id, cluster.ids)
        pending = asyncio.ensure_future(leader.submit(register("z", 2)))
        await asyncio.sleep(0.05)
        assert not pending.done()
        await leader.stop()
        with pytest.raises(NodeStopped):
            await pending
        with pytest.raises(NodeStopped):
            await leader.submit(register("z", 3))
        cluster.nodes.pop(leader.node_id)
        await cluster.stop()

    run(body)


def test_restart_is_traced_with_the_durable_term() -> None:
    async def body() -> None:
        cluster = Cluster(1, seed=8)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        term = leader.core.term
        cluster.crash(1)
        before = len(cluster.trace.lines)
        await cluster.start(1)
        restart = cluster.trace.lines[before]
        assert '"action":"Restart"' in restart
        assert f'"term":{term}' in restart
        await cluster.stop()

    run(body)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_single_node_on_real_files_and_a_real_loop(tmp_path: Any, loop_kind: str) -> None:
    """Real files with fdatasync and the real clock; uvloop fires timers early, which must
    not stop the tick timer (the node would never elect itself)."""
    from mox.io.real import RealClock, RealFileSystem, RealRandom

    async def body() -> None:
        fs = RealFileSystem(str(tmp_path), backend="pwrite")
        config = NodeConfig(
            node_id=1,
            members=(1,),
            tick_interval_s=0.005,
            heartbeat_ticks=2,
            election_timeout_ticks_min=4,
            election_timeout_ticks_max=8,
        )
        network = SimNetwork(RealRandom(1))
        node = await Node.open(
            config, fs=fs, transport=network.endpoint(1), clock=RealClock(), rng=RealRandom(2)
        )
        node.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while not node.is_leader and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert node.is_leader, node.status()
        assert decode_result(await node.submit(create_tenant())).ok
        assert decode_result(await node.submit(register("r", 2, "real"))).ok
        ticks = node.stats.ticks
        await asyncio.sleep(0.1)
        assert node.stats.ticks > ticks
        await node.stop()
        reopened = await Node.open(
            config, fs=fs, transport=network.endpoint(1), clock=RealClock(), rng=RealRandom(3)
        )
        reopened.start()
        deadline = loop.time() + 5.0
        while not reopened.is_leader and loop.time() < deadline:
            await asyncio.sleep(0.01)
        # The acknowledged write came back from the WAL on real files.
        assert display_name(await reopened.read(get("r"))) == "real"
        await reopened.stop()

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(body())
    finally:
        loop.close()


# -- membership changes (Node.propose_conf_change) ------------------------------------


def test_remove_then_add_back_a_member() -> None:
    async def body() -> None:
        cluster = Cluster(5, seed=5)
        await cluster.start_all()
        leader = await cluster.leader()
        assert decode_result(await leader.submit(create_tenant())).ok
        removed = next(n for n in cluster.ids if n != leader.node_id)
        index = await leader.propose_conf_change(ConfChange("remove", removed))
        assert leader.status().applied_index >= index
        assert removed not in leader.members()
        assert list(leader.core.log.config_at(index)) == [n for n in cluster.ids if n != removed]
        # The removed node no longer gets entries: the cluster of four goes on without it.
        # The removed node no longer gets entries (it may never learn of its removal: the
        # leader stopped sending to it), so it is shut down, as an operator would.
        await leader.submit(register("a", 2, "while-removed"))
        assert cluster.nodes[removed].status().last_index < leader.status().last_index
        cluster.crash(removed)
        await asyncio.sleep(0.5)
        assert leader.is_leader
        out = await cluster.start(removed)
        index = await leader.propose_conf_change(ConfChange("add", removed))
        assert removed in leader.members()
        await cluster.settle()
        assert out.status().applied_index >= index
        assert display_name(await out.read(get("a"), linearizable=False)) == "while-removed"
        await cluster.stop()

    run(body)


def test_removing_the_leader_hands_leadership_over() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=6)
        await cluster.start_all()
        leader = await cluster.leader()
        await leader.submit(create_tenant())
        old = leader.node_id
        await leader.propose_conf_change(ConfChange("remove", old))
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + 5.0
        while loop.time() < deadline_s:
            leaders = [n for n in cluster.nodes.values() if n.is_leader and n.node_id != old]
            if leaders:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError([n.status() for n in cluster.nodes.values()])
        assert not cluster.nodes[old].is_leader
        assert old not in leaders[0].members()
        await cluster.stop()

    run(body)


def test_conf_change_errors() -> None:
    async def body() -> None:
        cluster = Cluster(3, seed=7)
        await cluster.start_all()
        leader = await cluster.leader()
        await leader.submit(create_tenant())
        follower = next(n for n in cluster.nodes.values() if not n.is_leader)
        with pytest.raises(NotLeader):
            await follower.propose_conf_change(ConfChange("remove", leader.node_id))
        with pytest.raises(ValueError, match="already a member"):
            await leader.propose_conf_change(ConfChange("add", follower.node_id))
        with pytest.raises(ValueError, match="not a member"):
            await leader.propose_conf_change(ConfChange("remove", 9))
        # A second change while the first is uncommitted is refused, not queued.
        first = asyncio.ensure_future(
            leader.propose_conf_change(ConfChange("remove", follower.node_id))
        )
        await asyncio.sleep(0)
        with pytest.raises(ConfChangeRefused):
            await leader.propose_conf_change(ConfChange("add", 4))
        await first
        with pytest.raises(ValueError, match="low"):
            leader.set_election_timeouts(3, 9)
        await cluster.stop()

    run(body)
