"""Each check fires on a deliberately broken scenario, and stays quiet on a healthy one.

First the checker alone, fed hand-made node views; then whole simulated runs in which the
test breaks one replica on purpose (a corrupted log entry, a corrupted state store, a
damaged WAL record) and the run must end in the matching violation.
"""

from __future__ import annotations

import msgspec

from mox.consensus.raft.core import RaftCore
from mox.consensus.raft.messages import AppendEntriesResponse, Entry, Message
from mox.node.runtime import RaftView
from mox.sim.faults import FaultPlan
from mox.sim.invariants import InvariantChecker
from mox.sim.workload import TENANT_ID
from mox.sim.world import World, WorldConfig
from mox.statemachine import keys


class FakeNode:
    def __init__(
        self,
        node_id: int,
        *,
        role: str = "follower",
        term: int = 1,
        commit: int = 0,
        snapshot: tuple[int, int] = (0, 0),
        log: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        self._node_id = node_id
        self.role = role
        self.term = term
        self.commit = commit
        self.snapshot = snapshot
        self.log: dict[int, tuple[int, int]] = dict(log or {})

    @property
    def node_id(self) -> int:
        return self._node_id

    def raft_view(self) -> RaftView:
        return RaftView(
            role=self.role,
            term=self.term,
            commit_index=self.commit,
            snapshot_index=self.snapshot[0],
            snapshot_term=self.snapshot[1],
            last_index=max(self.log, default=self.snapshot[0]),
        )

    def entry_digest(self, index: int) -> tuple[int, int] | None:
        return self.log.get(index)


LOG = {1: (1, 0xA1), 2: (1, 0xA2), 3: (2, 0xA3)}


def test_healthy_steps_raise_nothing_and_count_checks() -> None:
    checker = InvariantChecker()
    leader = FakeNode(1, role="leader", term=2, commit=3, log=LOG)
    follower = FakeNode(2, term=2, commit=3, log=LOG)
    checker.on_step(leader, appended=[(i, t, d) for i, (t, d) in LOG.items()])
    checker.on_step(
        follower, appended=[(i, t, d) for i, (t, d) in LOG.items()], applied=[(1, 0xA1)]
    )
    checker.check_log_prefixes([leader, follower])
    assert checker.violation is None
    assert checker.checks["election_safety"] == 1
    assert checker.checks["log_matching"] == 6 + 3
    assert checker.checks["committed_entry_kept"] == 6
    assert checker.checks["state_machine_safety"] == 1


def test_two_leaders_in_one_term_violate_election_safety() -> None:
    checker = InvariantChecker()
    checker.on_step(FakeNode(1, role="leader", term=4))
    checker.on_step(FakeNode(2, role="leader", term=5))
    assert checker.violation is None
    checker.on_step(FakeNode(3, role="leader", term=4))
    assert checker.violation is not None
    assert checker.violation.invariant == "election_safety"
    assert checker.violation.node_id == 3
    assert checker.violation.step == 3


def test_two_entries_with_same_index_and_term_violate_log_matching() -> None:
    checker = InvariantChecker()
    checker.on_step(FakeNode(1), appended=[(5, 2, 0xAA)])
    checker.on_step(FakeNode(2), appended=[(5, 2, 0xBB)])
    assert checker.violation is not None
    assert checker.violation.invariant == "log_matching"


def test_differing_prefix_below_a_common_entry_violates_log_matching() -> None:
    checker = InvariantChecker()
    a = FakeNode(1, log=LOG)
    b = FakeNode(2, log={**LOG, 2: (1, 0xFF)})
    checker.check_log_prefixes([a, b])
    assert checker.violation is not None
    assert checker.violation.invariant == "log_matching"
    assert "differ at index 2" in checker.violation.detail


def test_logs_that_diverge_only_after_the_last_common_entry_are_fine() -> None:
    checker = InvariantChecker()
    a = FakeNode(1, log={1: (1, 1), 2: (1, 2), 3: (2, 3)})
    b = FakeNode(2, log={1: (1, 1), 2: (1, 2), 3: (3, 9)})
    checker.check_log_prefixes([a, b])
    assert checker.violation is None


def test_a_committed_entry_that_changes_violates_committed_entry_kept() -> None:
    checker = InvariantChecker()
    checker.on_step(FakeNode(1, commit=3, log=LOG))
    checker.on_step(FakeNode(2, commit=3, log={**LOG, 3: (3, 0xEE)}))
    assert checker.violation is not None
    assert checker.violation.invariant == "committed_entry_kept"


def test_a_commit_index_beyond_the_log_violates_committed_entry_kept() -> None:
    checker = InvariantChecker()
    checker.on_step(FakeNode(1, commit=5, log=LOG))
    assert checker.violation is not None
    assert checker.violation.invariant == "committed_entry_kept"
    assert "missing" in checker.violation.detail


def test_a_leader_without_a_committed_entry_violates_leader_completeness() -> None:
    checker = InvariantChecker()
    checker.on_step(FakeNode(1, role="leader", term=2, commit=3, log=LOG))
    new_leader = FakeNode(2, role="leader", term=3, commit=1, log={1: LOG[1], 2: LOG[2]})
    checker.on_step(new_leader)
    assert checker.violation is not None
    assert checker.violation.invariant == "leader_completeness"


def test_entries_below_a_snapshot_are_not_required_of_a_leader() -> None:
    checker = InvariantChecker()
    checker.on_step(FakeNode(1, role="leader", term=2, commit=3, log=LOG))
    new_leader = FakeNode(2, role="leader", term=3, commit=3, snapshot=(3, 2), log={})
    checker.on_step(new_leader)
    assert checker.violation is None


def test_replicas_applying_different_entries_violate_state_machine_safety() -> None:
    checker = InvariantChecker()
    checker.on_step(FakeNode(1), applied=[(7, 0x1)])
    checker.on_step(FakeNode(2), applied=[(7, 0x1)])
    assert checker.violation is None
    checker.on_step(FakeNode(3), applied=[(7, 0x2)])
    assert checker.violation is not None
    assert checker.violation.invariant == "state_machine_safety"


def test_first_violation_wins() -> None:
    checker = InvariantChecker()
    checker.on_step(FakeNode(1), applied=[(1, 0x1)])
    checker.on_step(FakeNode(2), applied=[(1, 0x2)])
    checker.on_step(FakeNode(3, role="leader", term=1))
    checker.on_step(FakeNode(4, role="leader", term=1))
    assert checker.violation is not None
    assert checker.violation.invariant == "state_machine_safety"


# -- whole runs, broken on purpose ---------------------------------------------------------


def _world(seed: int = 5, duration_s: float = 1.5) -> World:
    return World(WorldConfig(seed=seed, faults=FaultPlan.none(), duration_s=duration_s))


def _follower(world: World) -> int:
    for node_id in world.node_ids:
        node = world.nodes[node_id]
        if node is not None and not node.is_leader:
            return node_id
    raise AssertionError("no follower")


def test_healthy_run_has_no_violation() -> None:
    result = _world().run()
    assert result.ok, result.summary_line()


def test_corrupted_replica_log_is_caught() -> None:
    world = _world()
    corrupted: list[int] = []

    def corrupt(w: World) -> None:
        if corrupted:
            return
        node = w.nodes[_follower(w)]
        assert node is not None
        log = node.core.log
        index = log.last_index()
        if index <= node.applied_index:
            return  # try again later: the entry must still be ahead of the state machine
        # Replace an entry the follower holds but has not applied by a different one with
        # the same index and term: what a disk that returns wrong data would do. (An entry
        # already applied could be compacted away before any check reads it again.)
        offset = index - log.snapshot.index - 1
        assert offset >= 0
        old = log.entries[offset]
        log.entries[offset] = Entry(old.term, old.index, "normal", [b"corrupted command"])
        corrupted.append(index)

    for step in range(100):
        world.at(0.4 + step * 0.01, corrupt)
    result = world.run()
    assert corrupted
    assert not result.ok
    assert result.violation is not None
    assert result.violation.invariant in (
        "log_matching",
        "committed_entry_kept",
        "state_machine_safety",
    ), result.violation.describe()


def test_corrupted_replica_state_store_is_caught() -> None:
    world = _world()

    def corrupt(w: World) -> None:
        node = w.nodes[_follower(w)]
        assert node is not None
        # A record no command wrote (clients never touch it, so nothing overwrites it).
        key = keys.talent_key(TENANT_ID, "phantom")
        node.lsm.write_batch(
            [(key, msgspec.msgpack.encode({"id": "phantom"}))], node.lsm.applied_index
        )

    world.at(0.5, corrupt)
    result = world.run()
    assert result.violation is not None
    assert result.violation.invariant == "replica_state_equal", result.violation.describe()


def test_damaged_wal_record_is_caught_at_recovery() -> None:
    world = _world()

    def damage_and_crash(w: World) -> None:
        node_id = _follower(w)
        disk = w.disks[node_id]
        segment = "wal/00000000000000000001.seg"
        # A bit inside the first record's body: durable, and not in the final flush.
        disk.flip_bit(segment, (4096 + 48 + 4) * 8)
        w.crash(node_id, restart_after_s=0.1)

    world.at(0.8, damage_and_crash)
    result = world.run()
    assert result.violation is not None
    assert result.violation.invariant == "recovery", result.violation.describe()
    assert "corruption" in result.violation.detail


class _AcksEntriesItLacks(RaftCore):
    """A follower that acknowledges two entries more than it holds."""

    def _send(self, msg: Message) -> None:
        if isinstance(msg, AppendEntriesResponse) and msg.success:
            msg = msgspec.structs.replace(msg, match_index=msg.match_index + 2)
        super()._send(msg)


def test_an_acknowledgement_of_entries_a_follower_lacks_is_caught() -> None:
    config = WorldConfig(seed=1, faults=FaultPlan.none(), duration_s=1.0, trace=False)
    result = World(config, core_class=_AcksEntriesItLacks).run()
    assert result.violation is not None
    assert result.violation.invariant == "ack_holds_entries", result.violation
    clean = World(config).run()
    assert clean.ok, clean.summary_line()
    assert clean.checks["ack_holds_entries"] > 0
