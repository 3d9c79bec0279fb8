"""The rules of Figure 2 of the Raft paper (Ongaro & Ousterhout 2014), one test per rule.

Where Mox deviates on purpose it is the spec's choice (specs/README.md): a message from an
older term is dropped rather than answered with `false` (DropStaleMessage), and a new leader
appends a no-op entry instead of sending an empty heartbeat.

Figure 2 describes elections without pre-vote and leaders without check-quorum (Ongaro's
thesis 9.6 and 6.2 add them later), so the cores here run with `pre_vote=False,
check_quorum=False`; tests/test_raft_prevote.py checks the two extensions.
"""

from __future__ import annotations

import itertools

from mox.consensus.raft.core import RaftConfig, RaftCore, Ready, RestoredState, Role
from mox.consensus.raft.messages import (
    NOOP,
    NORMAL,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from mox.consensus.raft.trace import ListTraceSink


def role_of(core: RaftCore) -> Role:
    """The role read anew (a plain `core.role` stays narrowed by an earlier assert for mypy)."""
    return core.role


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(t, start + k, NORMAL, [f"e{start + k}".encode()]) for k, t in enumerate(terms)]


def make(
    node_id: int = 1,
    members: tuple[int, ...] = (1, 2, 3),
    term: int = 0,
    vote: int = 0,
    log: list[Entry] | None = None,
    timeout: int = 10,
) -> RaftCore:
    restored = RestoredState(hard_state=HardState(term, vote, 0), entries=log or [])
    config = RaftConfig(node_id=node_id, members=members, pre_vote=False, check_quorum=False)
    return RaftCore(config, restored, itertools.repeat(timeout), ListTraceSink())


def drain(core: RaftCore) -> Ready:
    rd = core.ready()
    core.advance(rd)
    return rd


def sent(rd: Ready) -> list[object]:
    return [*rd.messages_now, *rd.messages_after_persist]


def elect(core: RaftCore) -> None:
    """Makes `core` (node 1 of three) leader of its next term."""
    core.campaign()
    drain(core)
    core.step(RequestVoteResponse(core.term, 2, 1, True))
    assert core.role is Role.LEADER


# -- Rules for all servers -------------------------------------------------------------------


def test_committed_entries_are_applied_in_order() -> None:
    core = make(node_id=2, term=1, log=entries(1, 1, 1))
    core.step(AppendEntries(1, 1, 2, 3, 1, [], 2))
    rd = drain(core)
    assert [e.index for e in rd.committed_entries] == [1, 2]
    core.step(AppendEntries(1, 1, 2, 3, 1, [], 3))
    assert [e.index for e in drain(core).committed_entries] == [3]


def test_higher_term_in_any_message_makes_a_follower() -> None:
    messages: list[Message] = [
        AppendEntries(7, 2, 1, 0, 0, [], 0),
        AppendEntriesResponse(7, 2, 1, False, 0),
        RequestVote(7, 2, 1, 0, 0),
        RequestVoteResponse(7, 2, 1, False),
        InstallSnapshotResponse(7, 2, 1, 0),
    ]
    for msg in messages:
        core = make(term=3)
        elect(core)
        assert core.term == 4
        core.step(msg)
        assert core.term == 7, msg
        assert core.role is Role.FOLLOWER, msg


# -- Followers -------------------------------------------------------------------------------


def test_follower_times_out_into_candidate_without_leader_contact() -> None:
    core = make(timeout=5)
    for _ in range(4):
        core.tick()
    assert core.role is Role.FOLLOWER
    core.tick()
    assert role_of(core) is Role.CANDIDATE


def test_leader_contact_resets_the_election_timer() -> None:
    core = make(node_id=2, term=1, timeout=5)
    for _ in range(20):
        core.tick()
        core.tick()
        core.step(AppendEntries(1, 1, 2, 0, 0, [], 0))
    assert core.role is Role.FOLLOWER


def test_granting_a_vote_resets_the_election_timer() -> None:
    core = make(node_id=2, timeout=5)
    for _ in range(4):
        core.tick()
    core.step(RequestVote(1, 3, 2, 0, 0))
    assert core.voted_for == 3
    for _ in range(4):
        core.tick()
    assert core.role is Role.FOLLOWER


# -- Candidates ------------------------------------------------------------------------------


def test_candidate_increments_term_votes_for_itself_and_asks_everyone() -> None:
    core = make(term=4)
    core.campaign()
    assert core.role is Role.CANDIDATE and core.term == 5 and core.voted_for == 1
    rd = drain(core)
    votes = [m for m in sent(rd) if isinstance(m, RequestVote)]
    assert sorted(m.dst for m in votes) == [2, 3]
    # A vote leaves only after the term and vote are durable.
    assert rd.hard_state == HardState(5, 1, 0)
    assert rd.must_sync
    assert not [m for m in rd.messages_now if isinstance(m, RequestVote)]


def test_candidate_with_majority_becomes_leader() -> None:
    core = make(members=(1, 2, 3, 4, 5))
    core.campaign()
    core.step(RequestVoteResponse(1, 2, 1, True))
    assert core.role is Role.CANDIDATE
    core.step(RequestVoteResponse(1, 3, 1, False))
    assert core.role is Role.CANDIDATE
    core.step(RequestVoteResponse(1, 4, 1, True))
    assert role_of(core) is Role.LEADER


def test_candidate_receiving_append_from_new_leader_becomes_follower() -> None:
    core = make()
    core.campaign()
    core.step(AppendEntries(1, 2, 1, 0, 0, [], 0))
    assert core.role is Role.FOLLOWER
    assert core.leader_id == 2
    assert core.term == 1 and core.voted_for == 1


def test_candidate_starts_a_new_election_after_timeout() -> None:
    core = make(timeout=5)
    core.campaign()
    for _ in range(5):
        core.tick()
    assert core.role is Role.CANDIDATE and core.term == 2


# -- Leaders ---------------------------------------------------------------------------------


def test_new_leader_appends_noop_and_sends_it_to_everyone() -> None:
    core = make()
    elect(core)
    assert core.log.entry(1).kind == NOOP and core.log.entry(1).term == 1
    appends = [m for m in sent(drain(core)) if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in appends) == [2, 3]


def test_leader_sends_heartbeats_when_idle() -> None:
    core = make()
    elect(core)
    drain(core)
    core.tick()
    appends = [m for m in sent(drain(core)) if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in appends) == [2, 3]


def test_leader_appends_client_commands_and_replicates_from_next_index() -> None:
    core = make()
    elect(core)
    drain(core)
    core.step(AppendEntriesResponse(1, 2, 1, True, 1))
    core.step(AppendEntriesResponse(1, 3, 1, True, 1))
    drain(core)
    index = core.propose([b"a", b"b"])
    assert index == 2
    assert core.log.entry(2).commands == [b"a", b"b"]
    appends = [m for m in sent(drain(core)) if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in appends) == [2, 3]
    assert all(m.prev_log_index == 1 and m.entries[-1].index == 2 for m in appends)


def test_leader_retries_with_lower_next_index_after_reject() -> None:
    core = make(term=2, log=entries(1, 1, 2))
    elect(core)  # term 3, noop at 4
    drain(core)
    core.step(AppendEntriesResponse(3, 2, 1, False, 1))  # hint: follower has up to 1
    appends = [m for m in sent(drain(core)) if isinstance(m, AppendEntries) and m.dst == 2]
    assert appends and appends[-1].prev_log_index == 1


def test_leader_commits_only_entries_of_its_term_by_counting_replicas() -> None:
    core = make(term=2, log=entries(1, 2))
    elect(core)  # term 3, noop at 3
    drain(core)
    core.step(AppendEntriesResponse(3, 2, 1, True, 2))
    assert core.commit_index == 0  # index 2 is of term 2: not committed by counting
    core.step(AppendEntriesResponse(3, 2, 1, True, 3))
    assert core.commit_index == 3  # the noop of term 3 commits, and everything before it


def test_leader_counts_its_own_entries_only_once_persisted() -> None:
    core = make()
    elect(core)
    core.step(AppendEntriesResponse(1, 2, 1, True, 1))
    assert core.commit_index == 0
    drain(core)  # the noop is now persisted on the leader
    assert core.commit_index == 1


# -- AppendEntries receiver ------------------------------------------------------------------


def test_append_from_older_term_is_dropped() -> None:
    core = make(node_id=2, term=5)
    core.step(AppendEntries(4, 1, 2, 0, 0, entries(4), 0))
    assert core.last_index == 0
    assert core.has_ready() is False or sent(drain(core)) == []


def test_append_rejected_without_matching_prev_entry() -> None:
    core = make(node_id=2, term=2, log=entries(1, 1))
    core.step(AppendEntries(2, 1, 2, 2, 2, entries(2, start=3), 0))
    reply = sent(drain(core))
    assert reply == [AppendEntriesResponse(2, 2, 1, False, 1)]
    core.step(AppendEntries(2, 1, 2, 5, 2, [], 0))
    assert sent(drain(core)) == [AppendEntriesResponse(2, 2, 1, False, 2)]


def test_conflicting_entries_are_deleted_and_replaced() -> None:
    core = make(node_id=2, term=3, log=entries(1, 2, 2))
    core.step(AppendEntries(3, 1, 2, 1, 1, entries(3, start=2), 0))
    assert [core.log.term_at(i) for i in range(1, core.last_index + 1)] == [1, 3]
    rd = drain(core)
    assert rd.entries[0].index == 2  # overlaps the stable log: the runtime truncates there


def test_matching_prefix_never_truncates() -> None:
    core = make(node_id=2, term=2, log=entries(1, 2, 2, 2))
    core.step(AppendEntries(2, 1, 2, 1, 1, entries(2, start=2), 0))  # an old, reordered request
    assert core.last_index == 4


def test_commit_index_is_min_of_leader_commit_and_last_new_entry() -> None:
    core = make(node_id=2, term=1)
    core.step(AppendEntries(1, 1, 2, 0, 0, entries(1, 1), 2))
    assert core.commit_index == 2
    core2 = make(node_id=2, term=1, log=entries(1, 1, 1, 1))
    core2.step(AppendEntries(1, 1, 2, 0, 0, entries(1), 1))
    assert core2.commit_index == 1


def test_append_ack_waits_for_persist() -> None:
    core = make(node_id=2, term=1)
    core.step(AppendEntries(1, 1, 2, 0, 0, entries(1), 0))
    rd = drain(core)
    assert rd.entries and rd.must_sync
    assert not rd.messages_now
    assert rd.messages_after_persist == [AppendEntriesResponse(1, 2, 1, True, 1)]


# -- RequestVote receiver --------------------------------------------------------------------


def test_vote_request_from_older_term_is_dropped() -> None:
    core = make(node_id=2, term=5)
    core.step(RequestVote(4, 1, 2, 9, 4))
    assert core.voted_for == 0


def test_vote_granted_once_per_term() -> None:
    core = make(node_id=2)
    core.step(RequestVote(1, 1, 2, 0, 0))
    core.step(RequestVote(1, 3, 2, 0, 0))
    core.step(RequestVote(1, 1, 2, 0, 0))  # the same candidate again: granted again
    replies = [m for m in sent(drain(core)) if isinstance(m, RequestVoteResponse)]
    assert [(m.dst, m.vote_granted) for m in replies] == [(1, True), (3, False), (1, True)]


def test_vote_only_for_an_up_to_date_log() -> None:
    cases = [
        ((2, 3), True),  # (last_log_term, last_log_index) vs our log ending 2@2
        ((2, 2), True),
        ((2, 1), False),
        ((1, 9), False),
        ((3, 1), True),
    ]
    for (last_term, last_index), granted in cases:
        core = make(node_id=2, term=2, log=entries(1, 2))
        core.step(RequestVote(3, 1, 2, last_index, last_term))
        reply = [m for m in sent(drain(core)) if isinstance(m, RequestVoteResponse)]
        assert reply[0].vote_granted is granted, (last_term, last_index)


def test_granted_vote_is_persisted_before_the_reply_leaves() -> None:
    core = make(node_id=2)
    core.step(RequestVote(1, 1, 2, 0, 0))
    rd = drain(core)
    assert rd.hard_state == HardState(1, 1, 0) and rd.must_sync
    assert not rd.messages_now and len(rd.messages_after_persist) == 1
