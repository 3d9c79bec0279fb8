"""Read index at a follower: the core's ReadIndex / ReadIndexResponse exchange.

Driven through the in-memory harness (mox.consensus.raft.rafttest), every message through
the wire codec. The golden scenarios are tests/testdata/raft/follower_read*.txt.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from checker.trace import parse_trace
from mox.consensus.raft.messages import (
    MalformedMessage,
    ReadIndex,
    ReadIndexResponse,
    decode_message,
    encode_message,
)
from mox.consensus.raft.rafttest import InteractionEnv
from mox.consensus.raft.trace import UntracedMessage, is_traced, message_to_trace


def _cluster(**cfg: int) -> InteractionEnv:
    # Elections here are forced with campaign(): classic Raft, so that a campaign at a
    # chosen moment wins (pre-vote and check-quorum have tests of their own).
    cfg.setdefault("pre_vote", False)
    cfg.setdefault("check_quorum", False)
    env = InteractionEnv(trace=False)
    env.add_nodes(3, None, **cfg)
    assert env.nodes[1].core.campaign()
    env.stabilize()
    assert env.nodes[1].core.role.value == "leader"
    assert env.nodes[1].core.propose([b"w1"]) is not None
    env.stabilize()
    return env


def _reads(env: InteractionEnv, node_id: int) -> dict[bytes, int | None]:
    return dict(env.nodes[node_id].read_results)


def test_follower_read_gets_the_leaders_commit_index_in_one_batched_request() -> None:
    env = _cluster()
    leader_commit = env.nodes[1].core.commit_index
    assert leader_commit == 2
    env.nodes[2].core.read_index(b"a")
    env.nodes[2].core.read_index(b"b")
    assert env.process_ready(2)
    asks = [m for m in env.queue if isinstance(m, ReadIndex)]
    assert asks == [ReadIndex(1, 2, 1, [b"a", b"b"])]
    env.stabilize()
    assert _reads(env, 2) == {b"a": leader_commit, b"b": leader_commit}
    assert env.nodes[2].core.applied_index >= leader_commit
    assert all(not n.core.rejected for n in env.nodes.values())


def test_follower_read_waits_for_a_quorum_round_at_the_leader() -> None:
    env = _cluster()
    env.nodes[2].core.read_index(b"a")
    env.process_ready(2)
    env.deliver_all({1})  # the leader gets the ReadIndex and starts a heartbeat round
    env.process_ready(1)
    assert not any(isinstance(m, ReadIndexResponse) for m in env.queue)
    # Only once a follower acknowledged the round does the answer leave.
    env.deliver_all({2, 3})
    env.process_ready(2)
    env.process_ready(3)
    env.deliver_all({1})
    env.process_ready(1)
    answers = [m for m in env.queue if isinstance(m, ReadIndexResponse)]
    assert answers == [ReadIndexResponse(1, 1, 2, [b"a"], 2)]


def test_a_follower_without_leader_or_a_candidate_fails_the_read_at_once() -> None:
    env = InteractionEnv(trace=False)
    env.add_nodes(3)
    env.nodes[2].core.read_index(b"x")
    env.process_ready(2)
    assert _reads(env, 2) == {b"x": None}
    assert not env.queue
    env.nodes[3].core.campaign()
    env.nodes[3].core.read_index(b"y")
    env.process_ready(3)
    assert _reads(env, 3) == {b"y": None}


def test_a_read_across_a_leader_change_fails_and_the_late_answer_is_dropped() -> None:
    env = _cluster()
    env.nodes[2].core.read_index(b"x")
    env.process_ready(2)
    asked = env.queue
    env.queue = []
    # 3 is elected in term 2 without 1; 2 learns the new term: x fails.
    env.handle("partition 1 2,3")
    assert env.nodes[3].core.campaign()
    env.stabilize({2, 3})
    assert env.nodes[3].core.role.value == "leader"
    assert _reads(env, 2) == {b"x": None}
    # The old leader answers the old request now, with an index of term 1: ignored.
    env.handle("heal")
    stale = ReadIndexResponse(1, 1, 2, [b"x"], 2)
    assert asked == [ReadIndex(1, 2, 1, [b"x"])]
    env.nodes[2].core.step(stale)
    env.process_ready(2)
    assert env.nodes[2].read_results == [(b"x", None)]
    assert not env.nodes[2].core.rejected


def test_a_partitioned_follower_never_returns_an_index() -> None:
    env = _cluster()
    env.handle("partition 2 1,3")
    env.nodes[2].core.read_index(b"p")
    for _ in range(200):
        env.nodes[2].core.tick()
        env.stabilize()
        if _reads(env, 2):
            break
    assert _reads(env, 2) == {b"p": None}


def test_a_follower_that_starts_a_pre_vote_fails_its_forwarded_reads() -> None:
    # Found by tests/test_raft_props.py when pre-vote met follower reads: a pre-candidate
    # has no leader, so nothing can answer the reads it forwarded (read_timeout_ticks is
    # set far off so that only the role change can fail them).
    env = _cluster(pre_vote=True, read_timeout_ticks=10_000)
    env.handle("partition 2 1,3")
    core = env.nodes[2].core
    core.read_index(b"q")
    env.process_ready(2)
    for _ in range(200):
        core.tick()
        if core.role.value == "pre_candidate":
            break
    assert core.role.value == "pre_candidate"
    assert core.term == 1  # pre-vote: the term does not move
    env.process_ready(2)
    assert _reads(env, 2) == {b"q": None}


def test_an_unanswered_read_is_resent_then_expires_after_read_timeout_ticks() -> None:
    env = _cluster(read_timeout_ticks=6)
    core = env.nodes[2].core
    core.read_index(b"r")
    env.process_ready(2)
    sent = [m for m in env.queue if isinstance(m, ReadIndex)]
    env.queue = []
    assert len(sent) == 1
    resent = 0
    for tick in range(1, 7):
        core.tick()
        env.process_ready(2)
        resent += sum(isinstance(m, ReadIndex) for m in env.queue)
        env.queue = []
        if tick < 6:
            assert _reads(env, 2) == {}, tick
    assert resent == 2  # every timeout // 3 = 2 ticks: at ticks 2 and 4
    assert _reads(env, 2) == {b"r": None}


def test_a_duplicate_ctx_on_a_follower_fails_at_once_and_keeps_the_first() -> None:
    env = _cluster()
    env.nodes[2].core.read_index(b"d")
    env.nodes[2].core.read_index(b"d")
    env.stabilize()
    assert env.nodes[2].read_results == [(b"d", None), (b"d", 2)]
    with pytest.raises(ValueError, match="ctx must be at most 64 bytes"):
        env.nodes[2].core.read_index(b"z" * 65)


def test_the_leader_refuses_what_its_read_queue_cannot_hold() -> None:
    env = _cluster(max_pending_reads=2)
    leader = env.nodes[1].core
    leader.read_index(b"own")  # pending until its heartbeat round is acknowledged
    heartbeats = env.queue
    env.queue = []
    env.nodes[2].core.read_index(b"a")
    env.nodes[2].core.read_index(b"b")
    env.process_ready(2)
    env.deliver_all({1})
    env.process_ready(1)
    answers = [m for m in env.queue if isinstance(m, ReadIndexResponse)]
    assert answers == [ReadIndexResponse(1, 1, 2, [b"b"], None)]
    env.queue.extend(heartbeats)
    env.stabilize()
    assert _reads(env, 2) == {b"b": None, b"a": 2}
    assert _reads(env, 1) == {b"own": 2}


@pytest.mark.parametrize(
    "msg, reason",
    [
        (ReadIndexResponse(1, 9, 2, [b"a"], 2), "unknown_src"),
        (ReadIndexResponse(1, 3, 2, [b"a"], 2), "read_response_not_from_leader"),
        (ReadIndexResponse(1, 1, 2, [b"never-asked"], 2), "read_response_unknown_ctx"),
        (ReadIndexResponse(5, 1, 2, [b"a"], 2), "read_term_ahead"),
        (ReadIndexResponse(1, 1, 3, [b"a"], 2), "wrong_dst"),
        (ReadIndexResponse(1, 2, 2, [b"a"], 2), "from_self"),
        (ReadIndex(1, 3, 2, []), "bad_read_ctxs"),
        (ReadIndex(1, 3, 2, [b"x" * 65]), "bad_read_ctxs"),
        (ReadIndex(0, 3, 2, [b"a"]), "bad_term"),
        (ReadIndexResponse(1, 1, 2, [b"a"], -1), "bad_read_index"),
    ],
)
def test_bad_read_messages_are_counted_never_raised(msg: object, reason: str) -> None:
    env = _cluster()
    core = env.nodes[2].core
    term_before = core.term
    core.step(msg)  # type: ignore[arg-type]
    assert core.rejected == {reason: 1}
    assert core.term == term_before
    assert core.role.value == "follower"
    env.process_ready(2)
    assert _reads(env, 2) == {}


def test_a_read_index_sent_to_a_follower_is_refused_not_rejected() -> None:
    env = _cluster()
    env.nodes[3].core.step(ReadIndex(1, 2, 3, [b"a"]))
    rd = env.nodes[3].core.ready()
    assert rd.messages_now == [ReadIndexResponse(1, 3, 2, [b"a"], None)]
    assert not env.nodes[3].core.rejected


def test_read_messages_roundtrip_and_bad_bytes_name_the_field() -> None:
    for msg in (ReadIndex(3, 2, 1, [b"a", b"b"]), ReadIndexResponse(3, 1, 2, [b"a"], None)):
        assert decode_message(encode_message(msg)) == msg
    bad = msgspec.msgpack.encode(["ReadIndexResponse", 1, 1, 2, [b"a"], -5])
    with pytest.raises(MalformedMessage, match=r"\$\[5\]"):
        decode_message(bad)


def test_read_messages_are_invisible_to_the_trace() -> None:
    msg = ReadIndex(1, 2, 1, [b"a"])
    assert not is_traced(msg)
    with pytest.raises(UntracedMessage):
        message_to_trace(msg)
    env = InteractionEnv(keep_history=True)
    env.handle("add-nodes 3")
    env.handle("campaign 1")
    env.handle("stabilize")
    env.handle("read-index 2 a")
    env.handle("read-index 3 b")
    out = env.handle("stabilize")
    assert "receive 2->1 ReadIndex" in out
    env.handle("partition 2 1,3")
    env.handle("read-index 2 c")
    assert "DropMessage 2->1 ReadIndex" in env.handle("stabilize")
    assert _reads(env, 2)[b"a"] == 1
    ndjson = env.trace_ndjson()
    assert "ReadIndex" not in ndjson
    events = [json.loads(line) for line in ndjson.splitlines()[1:]]
    assert len(events) > 20
    trace = parse_trace(ndjson, "follower-reads.ndjson")  # the checker's schema accepts it
    assert len(trace.events) == len(events)
