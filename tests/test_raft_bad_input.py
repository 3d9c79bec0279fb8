"""Bad input: malformed bytes, impossible messages, bad configuration and bad restored state.

A message no correct peer could send is dropped and counted under a reason in
`core.rejected`; it never raises out of `step` and never changes the node's state.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mox.consensus.raft.core import (
    ConfChange,
    RaftConfig,
    RaftConfigError,
    RaftCore,
    RestoredState,
    RestoreError,
)
from mox.consensus.raft.messages import (
    NORMAL,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    InstallSnapshot,
    MalformedMessage,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    decode_message,
    encode_message,
)

LIMIT = 2**63


def make(node_id: int = 2, term: int = 3) -> RaftCore:
    # Classic elections (campaign -> candidate at once) keep the setups below one step long.
    return RaftCore(
        RaftConfig(node_id=node_id, members=(1, 2, 3), pre_vote=False, check_quorum=False),
        RestoredState(hard_state=HardState(term, 0, 0)),
        itertools.repeat(10),
    )


def state(core: RaftCore) -> tuple[object, ...]:
    return (core.term, core.voted_for, core.role, core.commit_index, core.last_index, core.leader_id)


BAD = [
    ("wrong_dst", RequestVote(3, 1, 3, 0, 0)),
    ("from_self", RequestVote(3, 2, 2, 0, 0)),
    ("bad_src", RequestVote(3, 0, 2, 0, 0)),
    ("unknown_src", RequestVote(3, 9, 2, 0, 0)),
    ("bad_term", RequestVote(LIMIT, 1, 2, 0, 0)),
    ("bad_term", RequestVote(-1, 1, 2, 0, 0)),
    ("bad_term", RequestVote(LIMIT - 1, 1, 2, 0, 0)),
    ("bad_term", RequestVote(0, 1, 2, 0, 0)),
    ("bad_last_log", RequestVote(3, 1, 2, -5, 0)),
    ("last_log_term_beyond_term", RequestVote(3, 1, 2, 1, 4)),
    ("bad_vote_granted", RequestVoteResponse(3, 1, 2, 1)),  # type: ignore[arg-type]
    ("unknown_src", PreVote(4, 9, 2, 0, 0)),
    ("bad_term", PreVote(LIMIT - 1, 1, 2, 0, 0)),
    ("bad_last_log", PreVote(4, 1, 2, -5, 0)),
    ("last_log_term_beyond_term", PreVote(4, 1, 2, 1, 5)),
    ("bad_vote_granted", PreVoteResponse(4, 1, 2, "yes")),  # type: ignore[arg-type]
    ("bad_index", AppendEntries(3, 1, 2, -1, 0, [], 0)),
    ("bad_index", AppendEntries(3, 1, 2, LIMIT, 0, [], 0)),
    ("bad_prev_log_term", AppendEntries(3, 1, 2, 0, 1, [], 0)),
    ("bad_prev_log_term", AppendEntries(3, 1, 2, 4, 5, [], 0)),
    ("entry_index_gap", AppendEntries(3, 1, 2, 0, 0, [Entry(1, 2, NORMAL)], 0)),
    ("bad_entry_term", AppendEntries(3, 1, 2, 0, 0, [Entry(4, 1, NORMAL)], 0)),
    ("bad_entry_term", AppendEntries(3, 1, 2, 0, 0, [Entry(2, 1, NORMAL), Entry(1, 2, NORMAL)], 0)),
    ("bad_entry_kind", AppendEntries(3, 1, 2, 0, 0, [Entry(1, 1, "weird")], 0)),  # type: ignore[arg-type]
    ("empty_config", AppendEntries(3, 1, 2, 0, 0, [Entry(1, 1, "config", [], [])], 0)),
    ("duplicate_config_member", AppendEntries(3, 1, 2, 0, 0, [Entry(1, 1, "config", [], [1, 1])], 0)),
    ("commit_beyond_entries", AppendEntries(3, 1, 2, 0, 0, [], 5)),
    ("index_overflow", AppendEntries(3, 1, 2, LIMIT - 1, 1, [Entry(1, LIMIT, NORMAL)], 0)),
    ("bad_match_index", AppendEntriesResponse(3, 1, 2, True, -1)),
    ("bad_snapshot_index", InstallSnapshot(3, 1, 2, 0, 1, [1], b"")),
    ("snapshot_term_beyond_term", InstallSnapshot(3, 1, 2, 5, 4, [1, 2, 3], b"")),
    ("bad_config_member", InstallSnapshot(3, 1, 2, 5, 2, [0], b"")),
    ("unknown_type", "not a message"),
]


@pytest.mark.parametrize(("reason", "msg"), BAD, ids=[f"{r}-{k}" for k, (r, _) in enumerate(BAD)])
def test_bad_message_is_rejected_with_reason(reason: str, msg: object) -> None:
    core = make()
    before = state(core)
    core.step(msg)  # type: ignore[arg-type]
    assert core.rejected == {reason: 1}
    assert state(core) == before
    assert not core.has_ready()


def test_match_beyond_log_rejected_by_leader() -> None:
    core = make(node_id=1, term=0)
    core.campaign()
    core.advance(core.ready())
    core.step(RequestVoteResponse(1, 2, 1, True))
    core.step(AppendEntriesResponse(1, 2, 1, True, 99))
    assert core.rejected == {"match_beyond_log": 1}
    assert core.commit_index == 0


def test_append_to_leader_of_same_term_rejected() -> None:
    core = make(node_id=1, term=0)
    core.campaign()
    core.step(RequestVoteResponse(1, 2, 1, True))
    core.step(AppendEntries(1, 3, 1, 0, 0, [], 0))
    assert core.rejected == {"append_to_leader_same_term": 1}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_raises_anything_but_malformed(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except MalformedMessage as exc:
        assert "malformed raft message" in str(exc)
        return
    core = make()
    core.step(msg)  # anything that decodes is stepped without an exception


def test_decode_names_the_field() -> None:
    good = encode_message(RequestVote(3, 1, 2, 0, 0))
    with pytest.raises(MalformedMessage, match=r"\$\[1\]"):
        decode_message(encode_message(RequestVote(-1, 1, 2, 0, 0)))
    with pytest.raises(MalformedMessage):
        decode_message(good[:-1])
    assert isinstance(decode_message(good), RequestVote)
    assert issubclass(MalformedMessage, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"node_id": 0, "members": (1,)}, "node_id"),
        ({"node_id": 1, "members": ()}, "members"),
        ({"node_id": 1, "members": (1, 1)}, "members"),
        ({"node_id": 1, "members": (1, -2)}, "members[1]"),
        ({"node_id": 1, "members": (1,), "heartbeat_ticks": 0}, "heartbeat_ticks"),
        ({"node_id": 1, "members": (1,), "max_inflight_appends": 0}, "max_inflight_appends"),
        ({"node_id": 1, "members": (1,), "max_message_size_bytes": 10}, "max_message_size_bytes"),
        ({"node_id": 1, "members": (1,), "pre_vote": 1}, "pre_vote"),
        ({"node_id": 1, "members": (1,), "check_quorum": "yes"}, "check_quorum"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(RaftConfigError) as info:
        RaftConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("restored", "field"),
    [
        (RestoredState(hard_state=HardState(1), entries=[Entry(1, 2, NORMAL)]), "entries[0].index"),
        (RestoredState(hard_state=HardState(3), entries=[Entry(2, 1, NORMAL), Entry(1, 2, NORMAL)]), "entries[1].term"),
        (RestoredState(hard_state=HardState(2), snapshot=SnapshotMeta(3, LIMIT - 1, [1])), "snapshot.term"),
        (RestoredState(hard_state=HardState(2), snapshot=SnapshotMeta(3, 1, [])), "snapshot.config"),
        (RestoredState(hard_state=HardState(1), applied_index=4), "applied_index"),
    ],
)
def test_bad_restored_state_names_the_field(restored: RestoredState, field: str) -> None:
    with pytest.raises(RestoreError) as info:
        RaftCore(RaftConfig(node_id=1, members=(1,)), restored, itertools.repeat(10))
    assert info.value.field == field


def test_highest_accepted_term_can_still_run() -> None:
    core = make(term=0)
    core.step(RequestVote(LIMIT - 2, 1, 2, 0, 0))
    assert core.term == LIMIT - 2
    assert core.campaign()
    assert core.term == LIMIT - 1
    assert not core.campaign()  # the last term: no further election, no crash
    for _ in range(30):
        core.tick()
    assert core.term == LIMIT - 1


def test_bad_proposals() -> None:
    core = RaftCore(RaftConfig(node_id=1, members=(1,), max_message_size_bytes=1024), RestoredState(), itertools.repeat(10))
    core.campaign()
    with pytest.raises(ValueError, match="empty"):
        core.propose([])
    with pytest.raises(ValueError, match=r"commands\[1\] is 2000 bytes"):
        core.propose([b"x", b"y" * 2000])
    with pytest.raises(ValueError, match="not a member"):
        core.propose_conf_change(ConfChange("remove", 7))
    assert core.last_index == 1  # only the leader's no-op


def test_append_contradicting_a_committed_entry_is_rejected() -> None:
    core = make(term=1)
    core.step(AppendEntries(2, 1, 2, 0, 0, [Entry(2, 1, NORMAL, [b"a"])], 1))
    assert core.commit_index == 1
    core.step(AppendEntries(3, 3, 2, 0, 0, [Entry(3, 1, NORMAL, [b"b"])], 0))
    assert core.rejected == {"conflicts_with_committed": 1}
    assert core.log.entry(1).commands == [b"a"]


def _hostile_message(data: st.DataObject) -> object:
    term = data.draw(st.integers(1, 6))
    src = data.draw(st.sampled_from([1, 3]))
    kind = data.draw(st.integers(0, 7))
    index = st.integers(0, 8)
    if kind == 0:
        prev = data.draw(index)
        prev_term = 0 if prev == 0 else data.draw(st.integers(1, term))
        terms = sorted(data.draw(st.lists(st.integers(max(prev_term, 1), term), max_size=4)))
        kinds = data.draw(st.lists(st.sampled_from(["normal", "noop", "config"]), min_size=len(terms), max_size=len(terms)))
        entries = [
            Entry(t, prev + 1 + k, kd, [b"c"] if kd == "normal" else [], [1, 2, 3] if kd == "config" else [])  # type: ignore[arg-type]
            for k, (t, kd) in enumerate(zip(terms, kinds, strict=True))
        ]
        commit = data.draw(st.integers(0, prev + len(entries)))
        return AppendEntries(term, src, 2, prev, prev_term, entries, commit, data.draw(index))
    if kind == 1:
        return AppendEntriesResponse(term, src, 2, data.draw(st.booleans()), data.draw(index), data.draw(index))
    if kind == 2:
        return RequestVote(term, src, 2, data.draw(index), data.draw(st.integers(0, term)))
    if kind == 3:
        return RequestVoteResponse(term, src, 2, data.draw(st.booleans()))
    if kind == 6:
        return PreVote(term, src, 2, data.draw(index), data.draw(st.integers(0, term)))
    if kind == 7:
        return PreVoteResponse(term, src, 2, data.draw(st.booleans()))
    if kind == 4:
        config = data.draw(st.sampled_from([[1, 2, 3], [1, 2], [2, 3], [1]]))
        return InstallSnapshot(term, src, 2, data.draw(st.integers(1, 8)), data.draw(st.integers(1, term)), config, b"")
    from mox.consensus.raft.messages import InstallSnapshotResponse

    return InstallSnapshotResponse(term, src, 2, data.draw(index))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_hostile_peers_never_crash_the_core(data: st.DataObject) -> None:
    # Two peers that each claim leadership in any term: whatever they send, step() only
    # answers, rejects or drops, and the core's own assertions keep holding.
    core = make(term=0)
    if data.draw(st.booleans()):
        # The default configuration: pre-vote and check-quorum on.
        core = RaftCore(RaftConfig(node_id=2, members=(1, 2, 3)), RestoredState(), itertools.repeat(3))
    for _ in range(data.draw(st.integers(1, 40))):
        op = data.draw(st.integers(0, 10))
        if op == 10:
            core.campaign()
        elif op < 6:
            core.step(_hostile_message(data))  # type: ignore[arg-type]
        elif op == 6:
            core.tick()
        elif op == 7 and core.has_ready():
            core.advance(core.ready())
        elif op == 8:
            core.propose([b"p"])
        else:
            core.compact(min(core.applied_index, core.commit_index, core.log.stable_index), b"")


def test_restore_after_crash_between_entries_and_hard_state() -> None:
    # Entries of term 5 reached the disk, the hard state (term 5, no vote) did not.
    restored = RestoredState(hard_state=HardState(4, 3, 0), entries=[Entry(5, 1, NORMAL, [b"a"])])
    core = RaftCore(RaftConfig(node_id=1, members=(1, 2, 3)), restored, itertools.repeat(10))
    assert core.term == 5
    assert core.voted_for == 0  # the vote of term 4 is not a vote of term 5
    rd = core.ready()
    assert rd.hard_state == HardState(5, 0, 0) and rd.must_sync
