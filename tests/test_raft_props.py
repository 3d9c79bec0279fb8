"""Property tests: several Raft cores over a randomly scheduled in-memory network.

Each example is a seed; the schedule it draws ticks nodes, runs their Readys (sometimes
crashing between sending messages_now and persisting, or between persisting the entries
and the hard state), delivers messages in random order,
drops and duplicates them, cuts one node off for a while, restarts nodes from their persisted state only, proposes, compacts,
asks for reads and (in one variant) changes the membership. After every step the safety
properties of the Raft paper are checked against the whole cluster:

* ElectionSafety: at most one leader per term (over the whole history).
* LogMatching: two logs with an entry of the same index and term agree on everything before.
* StateMachineSafety: no two nodes apply different entries at the same index.
* LeaderCompleteness: a leader holds every entry committed in its term or before.
* Committed entries are never lost: a quorum of durable storages holds each one (static config).
* Read index: a read is served at an index no lower than any commit index when it was asked.

At the end the network heals and the cluster must elect a leader and commit a new command.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mox.consensus.raft.core import ConfChange, Role
from mox.consensus.raft.messages import Entry
from mox.consensus.raft.rafttest import InteractionEnv, SimNode
from mox.consensus.raft.trace import CORE_ACTIONS, STATE_FIELDS


class Checker:
    def __init__(self, env: InteractionEnv, static_config: bool) -> None:
        self.env = env
        self.static_config = static_config
        self.leader_of_term: dict[int, int] = {}
        # index -> (term, kind, commands) of the committed entry; and the lowest term a node
        # knew it committed in (LeaderCompleteness applies to leaders of that term or later).
        self.committed: dict[int, tuple[int, str, tuple[bytes, ...]]] = {}
        self.committed_term: dict[int, int] = {}
        self.applied: dict[int, tuple[int, str, tuple[bytes, ...]]] = {}
        # Read ctx -> the highest commit index anywhere when the read was asked: a linearizable
        # read must be served at or after it.
        self.read_floor: dict[bytes, int] = {}
        self.reads_served = 0

    def check(self) -> None:
        nodes = self.env.nodes
        for node_id, node in nodes.items():
            core = node.core
            if core.role is Role.LEADER:
                holder = self.leader_of_term.setdefault(core.term, node_id)
                assert holder == node_id, f"ElectionSafety: {holder} and {node_id} lead term {core.term}"
            log = core.log
            for index in range(max(log.snapshot.index + 1, 1), log.commit_index + 1):
                entry = log.entry(index)
                ident = (entry.term, entry.kind, tuple(entry.commands))
                known = self.committed.setdefault(index, ident)
                assert known == ident, f"committed entry {index} differs on node {node_id}"
                self.committed_term[index] = min(self.committed_term.get(index, core.term), core.term)
            for index, term, kind, commands in node.applied:
                known_applied = self.applied.setdefault(index, (term, kind, commands))
                assert known_applied == (term, kind, commands), (
                    f"StateMachineSafety: node {node_id} applied a different entry at {index}"
                )
        for node in nodes.values():
            for ctx, read_index in node.read_results:
                if read_index is not None:
                    assert read_index >= self.read_floor[ctx], (
                        f"read {ctx!r} served at {read_index}, below commit {self.read_floor[ctx]} when asked"
                    )
                    self.reads_served += 1
            node.read_results.clear()
        self._check_log_matching()
        self._check_leader_completeness()
        if self.static_config:
            self._check_durable_quorum()
        self._check_trace()

    def _check_log_matching(self) -> None:
        cores = [n.core for n in self.env.nodes.values()]
        for a_pos, a in enumerate(cores):
            for b in cores[a_pos + 1 :]:
                lo = max(a.log.snapshot.index, b.log.snapshot.index) + 1
                hi = min(a.log.last_index(), b.log.last_index())
                top = None
                for index in range(hi, lo - 1, -1):
                    if a.log.term_at(index) == b.log.term_at(index):
                        top = index
                        break
                if top is None:
                    continue
                for index in range(lo, top + 1):
                    ea: Entry = a.log.entry(index)
                    eb: Entry = b.log.entry(index)
                    assert ea == eb, f"LogMatching: nodes {a.id} and {b.id} differ at {index} below {top}"

    def _check_leader_completeness(self) -> None:
        for node in self.env.nodes.values():
            core = node.core
            if core.role is not Role.LEADER:
                continue
            for index, (term, _kind, _cmds) in self.committed.items():
                if self.committed_term[index] > core.term or index <= core.log.snapshot.index:
                    continue
                assert core.log.term_at(index) == term, (
                    f"LeaderCompleteness: leader {core.id} of term {core.term} lacks committed {index}"
                )

    def _check_durable_quorum(self) -> None:
        nodes = list(self.env.nodes.values())
        for index, (term, _kind, _cmds) in self.committed.items():
            holders = sum(1 for n in nodes if _durably_holds(n, index, term))
            assert 2 * holders > len(nodes), f"committed entry {index} is durable on {holders} nodes only"

    def _check_trace(self) -> None:
        sink = self.env.sink
        assert sink is not None
        for event in sink.events:
            if event["action"] in ("DropMessage", "DuplicateMessage"):
                assert "state" not in event
                continue
            assert event["action"] in CORE_ACTIONS, event["action"]
            state = event["state"]
            assert isinstance(state, dict) and set(STATE_FIELDS) <= set(state), event
        sink.events.clear()


def _durably_holds(node: SimNode, index: int, term: int) -> bool:
    storage = node.storage
    base = storage.snapshot.index if storage.snapshot else 0
    if index <= base:
        return True
    offset = index - base - 1
    return offset < len(storage.entries) and storage.entries[offset].term == term


def _timeouts(rng: random.Random) -> object:
    def make(node_id: int) -> Iterator[int]:
        own = random.Random(rng.random())
        while True:
            yield own.randrange(10, 20)

    return make


def run_schedule(seed: int, steps: int, members: int, extra_nodes: int, conf_changes: bool) -> None:
    rng = random.Random(seed)
    env = InteractionEnv(timeouts=_timeouts(rng))  # type: ignore[arg-type]
    env.add_nodes(members, max_batch_size=3, max_inflight_appends=3, heartbeat_ticks=3)
    if extra_nodes:
        env.add_nodes(extra_nodes, members=tuple(range(1, members + 1)), max_batch_size=3)
    ids = sorted(env.nodes)
    checker = Checker(env, static_config=not conf_changes)
    proposal = 0
    for _ in range(steps):
        roll = rng.random()
        node_id = rng.choice(ids)
        node = env.nodes[node_id]
        if roll < 0.30:
            node.core.tick()
        elif roll < 0.55:
            crash = rng.random()
            env.process_ready(node_id, crash_before_persist=crash < 0.02, crash_mid_persist=0.02 <= crash < 0.04)
        elif roll < 0.80:
            env.deliver_one_at_random(rng)
        elif roll < 0.88:
            proposal += 1
            node.core.propose([f"c{proposal}".encode()])
        elif roll < 0.90:
            node.restart()
        elif roll < 0.93:
            core = node.core
            upper = min(core.applied_index, core.commit_index, core.log.stable_index)
            if upper > core.snapshot_meta.index:
                assert node.compact(rng.randint(core.snapshot_meta.index + 1, upper))
        elif roll < 0.93 + 0.005:
            # Cut one node off (a partition), or heal.
            env.groups = None if env.groups is not None else {n: int(n == node_id) for n in ids}
        elif roll < 0.96:
            ctx = f"r{len(checker.read_floor)}".encode()
            checker.read_floor[ctx] = max(n.core.commit_index for n in env.nodes.values())
            node.core.read_index(ctx)
        elif conf_changes:
            target = rng.choice(ids)
            try:
                if target in node.core.config():
                    node.core.propose_conf_change(ConfChange("remove", target))
                else:
                    node.core.propose_conf_change(ConfChange("add", target))
            except ValueError:
                pass  # removing the last member
        checker.check()
    # Heal: no more faults; the cluster must make progress.
    env.groups = None
    for _ in range(400):
        for node_id in ids:
            env.nodes[node_id].core.tick()
        env.stabilize()
        checker.check()
        # Every node that believes it leads: with check-quorum a leader that no quorum hears
        # (a member removed while it led an older term: nobody sends to it and its messages
        # are stale) steps down within an election timeout, so once the network is healed
        # exactly one leader remains and it must commit (docs/raft.md, liveness).
        leaders = [n for n in env.nodes.values() if n.core.role is Role.LEADER]
        if len(leaders) == 1 and leaders[0].core.propose([b"final"]) is not None:
            env.stabilize()
            checker.check()
            leader = leaders[0].core
            if leader.commit_index == leader.last_index:
                for n in env.nodes.values():
                    if n.core.id in leader.config():
                        env.stabilize()
                break
    else:
        raise AssertionError(f"seed {seed}: no leader committed a command after healing")
    checker.check()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_safety_static_config(seed: int) -> None:
    run_schedule(seed, steps=1500, members=3, extra_nodes=0, conf_changes=False)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_safety_five_nodes(seed: int) -> None:
    run_schedule(seed, steps=1500, members=5, extra_nodes=0, conf_changes=False)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
@example(seed=25212)  # a member removed while it led an older term must step down (check-quorum)
def test_safety_membership_changes(seed: int) -> None:
    run_schedule(seed, steps=1500, members=3, extra_nodes=2, conf_changes=True)


@pytest.mark.soak
@pytest.mark.parametrize("variant", ["three", "five", "membership"])
def test_safety_many_seeds(variant: str) -> None:
    members, extra, changes = {"three": (3, 0, False), "five": (5, 0, False), "membership": (3, 2, True)}[variant]
    for seed in range(500):
        run_schedule(seed, steps=3000, members=members, extra_nodes=extra, conf_changes=changes)
