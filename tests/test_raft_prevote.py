"""Pre-vote and check-quorum (Ongaro's thesis 9.6 and 6.2; etcd's PreVote and CheckQuorum).

Each defect they close is checked with the extensions on, and again with them off to show
that the situation is real (the same schedule then does go wrong), so the check can fail.
"""

from __future__ import annotations

import itertools

import pytest

from mox.consensus.raft.core import RaftConfig, RaftCore, RestoredState, Role
from mox.consensus.raft.messages import (
    CONFIG,
    NOOP,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    PreVote,
    PreVoteResponse,
    RequestVote,
)
from mox.consensus.raft.rafttest import InteractionEnv
from mox.consensus.raft.trace import ListTraceSink


def role_of(env: InteractionEnv, node_id: int) -> Role:
    return env.nodes[node_id].core.role


def elected_cluster(extensions: bool) -> InteractionEnv:
    """Three nodes, node 1 leader of term 1, everything delivered."""
    env = InteractionEnv()
    env.add_nodes(3, pre_vote=extensions, check_quorum=extensions)
    env.nodes[1].core.campaign()
    env.stabilize()
    assert role_of(env, 1) is Role.LEADER and env.nodes[1].core.term == 1
    return env


@pytest.mark.parametrize("extensions", [True, False], ids=["prevote", "classic"])
def test_restarted_follower_does_not_depose_a_healthy_leader(extensions: bool) -> None:
    # Defect (a), tests/test_cluster_snapshot.py in CI: a follower restarted after a kill
    # times out before it hears from the leader and starts an election.
    env = elected_cluster(extensions)
    env.nodes[3].restart()
    env.nodes[3].core.tick()
    for _ in range(12):
        env.nodes[3].core.tick()
    env.stabilize({2, 3})
    env.stabilize()
    leader = env.nodes[1].core
    if extensions:
        # Node 2 is in lease and drops the pre-vote; the leader keeps its term and role.
        assert leader.role is Role.LEADER and leader.term == 1
        assert [env.nodes[n].core.term for n in (1, 2, 3)] == [1, 1, 1]
    else:
        # Classic Raft: the restarted node's RequestVote of term 2 deposes the leader.
        assert leader.term == 2


@pytest.mark.parametrize("check_quorum", [True, False])
def test_leader_cut_off_steps_down_within_two_election_timeouts(check_quorum: bool) -> None:
    env = InteractionEnv()
    env.add_nodes(3, check_quorum=check_quorum)
    env.nodes[1].core.campaign()
    env.stabilize()
    env.handle("partition 1")
    timeout_ticks = 10  # node 1's election timeout in the harness
    ticks = 0
    while role_of(env, 1) is Role.LEADER and ticks < 5 * timeout_ticks:
        env.nodes[1].core.tick()
        env.stabilize()
        ticks += 1
    if check_quorum:
        assert role_of(env, 1) is Role.FOLLOWER
        assert timeout_ticks < ticks <= 2 * timeout_ticks
        assert env.nodes[1].core.term == 1  # stepping down moves no term
    else:
        assert role_of(env, 1) is Role.LEADER


@pytest.mark.parametrize("extensions", [True, False], ids=["prevote", "classic"])
def test_member_removed_while_it_led_an_older_term_steps_down(extensions: bool) -> None:
    # Defect (b), docs/raft.md: tests/testdata/raft/removed_leader.txt step by step, with
    # pre-vote and check-quorum on and off.
    env = InteractionEnv()
    env.add_nodes(3, pre_vote=extensions, check_quorum=extensions)
    for command in [
        "campaign 1", "stabilize", "partition 1", "tick 2 11", "stabilize 2 3", "tick 3 12",
        "stabilize 2 3", "conf-change 3 remove 1", "stabilize 2 3", "drop-msgs 1", "heal",
    ]:  # fmt: skip
        env.handle(command)
    assert env.nodes[3].core.role is Role.LEADER and env.nodes[3].core.config() == (2, 3)
    for _ in range(40):
        env.nodes[1].core.tick()
        env.nodes[3].core.tick()
        env.stabilize()
    leaders = [n for n in (1, 2, 3) if role_of(env, n) is Role.LEADER]
    if extensions:
        assert leaders == [3]
        assert env.nodes[1].core.term == 2  # caught up through the refused pre-vote
        assert env.nodes[3].core.term == 2  # nobody was disturbed
    else:
        assert leaders == [1, 3]  # node 1 believes it leads term 1 forever


def fresh_role(core: RaftCore) -> Role:
    """The role read anew (a plain `core.role` stays narrowed by an earlier assert for mypy)."""
    return core.role


def make(node_id: int = 2, term: int = 0, **cfg: bool) -> RaftCore:
    return RaftCore(
        RaftConfig(node_id=node_id, members=(1, 2, 3), **cfg),
        RestoredState(hard_state=HardState(term, 0, 0)),
        itertools.repeat(10),
        ListTraceSink(),
    )


def answers(core: RaftCore) -> list[object]:
    rd = core.ready()
    core.advance(rd)
    return [*rd.messages_now, *rd.messages_after_persist]


def test_pre_vote_request_changes_no_term_or_vote() -> None:
    core = make()
    core.step(PreVote(5, 1, 2, 0, 0))
    assert (core.term, core.voted_for, core.role) == (0, 0, Role.FOLLOWER)
    assert answers(core) == [PreVoteResponse(5, 2, 1, True)]


def test_pre_vote_of_an_older_or_equal_term_is_refused_with_the_current_term() -> None:
    core = make(term=3)
    core.step(RequestVote(4, 3, 2, 0, 0))  # term 4, voted for 3
    answers(core)
    core.step(PreVote(3, 1, 2, 0, 0))
    core.step(PreVote(4, 1, 2, 0, 0))
    assert answers(core) == [PreVoteResponse(4, 2, 1, False), PreVoteResponse(4, 2, 1, False)]
    assert (core.term, core.voted_for) == (4, 3)


def test_pre_candidate_needs_a_quorum_of_grants_for_the_next_term() -> None:
    core = make(node_id=1)
    core.campaign()
    assert core.role is Role.PRE_CANDIDATE and core.term == 0
    sent = answers(core)
    assert sent == [PreVote(1, 1, 2, 0, 0), PreVote(1, 1, 3, 0, 0)]
    # A grant for another term and a rejection do not count.
    core.step(PreVoteResponse(0, 3, 1, False))
    assert core.role is Role.PRE_CANDIDATE
    core.step(PreVoteResponse(1, 2, 1, True))
    assert fresh_role(core) is Role.CANDIDATE and core.term == 1 and core.voted_for == 1
    assert answers(core) == [RequestVote(1, 1, 2, 0, 0), RequestVote(1, 1, 3, 0, 0)]


def test_a_grant_for_another_term_does_not_count() -> None:
    core = make(node_id=1, term=3)
    core.campaign()
    assert answers(core) == [PreVote(4, 1, 2, 0, 0), PreVote(4, 1, 3, 0, 0)]
    core.step(PreVoteResponse(3, 2, 1, True))  # answers a pre-vote of an earlier round
    assert fresh_role(core) is Role.PRE_CANDIDATE and core.term == 3
    core.step(PreVoteResponse(5, 3, 1, True))  # a grant of a later round moves no term
    assert fresh_role(core) is Role.PRE_CANDIDATE and core.term == 3
    core.step(PreVoteResponse(4, 3, 1, True))
    assert fresh_role(core) is Role.CANDIDATE and core.term == 4


@pytest.mark.parametrize(("pre_vote", "check_quorum"), itertools.product([True, False], repeat=2))
def test_stale_append_entries_is_answered_with_the_current_term(
    pre_vote: bool, check_quorum: bool
) -> None:
    core = make(term=5, pre_vote=pre_vote, check_quorum=check_quorum)
    core.step(AppendEntries(3, 1, 2, 0, 0, [], 0))
    assert core.term == 5 and fresh_role(core) is Role.FOLLOWER
    # Either extension can leave a node at a term above the leader's (see core.py).
    expected = [AppendEntriesResponse(5, 2, 1, False, 0)] if pre_vote or check_quorum else []
    assert answers(core) == expected


def test_check_quorum_period_starts_when_the_leader_is_elected() -> None:
    # Node 1 spends 5 ticks as a candidate before it wins; its checks still come every
    # 10 ticks from the election on: the second one, 20 ticks after, steps it down.
    env = InteractionEnv()
    env.add_nodes(3)
    env.nodes[1].core.campaign()
    env.process_ready(1)
    env.deliver_all()
    env.process_ready(2)
    env.process_ready(3)
    env.deliver_all()  # the grants: node 1 becomes candidate and asks for votes
    assert fresh_role(env.nodes[1].core) is Role.CANDIDATE
    for _ in range(5):
        env.nodes[1].core.tick()
    env.stabilize()
    assert fresh_role(env.nodes[1].core) is Role.LEADER
    env.handle("partition 1")
    ticks = 0
    while fresh_role(env.nodes[1].core) is Role.LEADER and ticks < 50:
        env.nodes[1].core.tick()
        env.stabilize()
        ticks += 1
    assert ticks == 20


def test_denying_a_pre_vote_for_a_stale_log_is_evidence_to_run() -> None:
    # Node 1 holds its own (uncommitted) removal: it may run only with evidence that others
    # need its entries (RaftCore.promotable), such as denying a less up-to-date pre-vote.
    log = [Entry(1, 1, NOOP), Entry(1, 2, CONFIG, [], [2, 3])]
    core = RaftCore(
        RaftConfig(node_id=1, members=(1, 2, 3)),
        RestoredState(hard_state=HardState(1, 0, 0), entries=log),
        itertools.repeat(10),
    )
    assert not core.promotable()
    core.step(PreVote(2, 2, 1, 1, 1))
    assert answers(core) == [PreVoteResponse(1, 1, 2, False)]
    assert core.promotable()


def test_refusal_of_a_higher_term_makes_the_pre_candidate_follow_it() -> None:
    core = make(node_id=1)
    core.campaign()
    answers(core)
    core.step(PreVoteResponse(7, 2, 1, False))
    assert (fresh_role(core), core.term) == (Role.FOLLOWER, 7)


def test_lease_drops_higher_term_votes_only_while_a_leader_is_heard() -> None:
    env = elected_cluster(extensions=True)
    follower = env.nodes[2].core
    follower.step(RequestVote(5, 3, 2, 9, 1))
    assert follower.term == 1 and follower.leader_id == 1  # dropped in lease
    for _ in range(11):
        follower.tick()  # its election timer runs out: no longer in lease
    assert fresh_role(follower) is Role.PRE_CANDIDATE
    follower.step(RequestVote(5, 3, 2, 9, 1))
    assert follower.term == 5 and follower.voted_for == 3


def test_single_member_campaign_goes_through_pre_vote_to_leader() -> None:
    sink = ListTraceSink()
    core = RaftCore(RaftConfig(node_id=1, members=(1,)), RestoredState(), itertools.repeat(3), sink)
    assert core.campaign()
    assert core.role is Role.LEADER and core.term == 1
    assert [e["action"] for e in sink.events] == [
        "Restart",
        "StartPreVote",
        "BecomeCandidate",
        "BecomeLeader",
    ]
