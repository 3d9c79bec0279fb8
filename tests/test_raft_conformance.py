"""The core's traces are behaviours of the spec: TLC checks them against specs/raft/TraceRaft.tla.

Traces come from the scenario files (all but restart.txt, whose crash loses an unpersisted vote:
see docs/raft.md, the spec's Restart keeps it) and from random schedules over a faulty network
without restarts. One TLC run checks the batch. A tampered copy of a trace must be rejected,
so the check can fail.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_raft_scenarios import DATA, parse_blocks

from checker.conformance import check_loaded
from checker.trace import Trace, parse_trace
from mox.consensus.raft.core import ConfChange
from mox.consensus.raft.rafttest import InteractionEnv

# Scenarios whose runs the spec can express (see the module docstring).
SCENARIOS = [
    "election",
    "split_vote",
    "log_conflict",
    "partitioned_leader",
    "snapshot",
    "membership",
    "read_index",
    "prevote",
    "prevote_refused",
    "check_quorum",
    "removed_leader",
]
# The actions of pre-vote and check-quorum: the batch below must exercise every one.
PRE_VOTE_ACTIONS = {
    "StartPreVote",
    "PreVote",
    "HandlePreVoteRequest",
    "HandlePreVoteResponse",
    "BecomeCandidate",
    "StepDown",
    "DropVoteRequestInLease",
}


def scenario_trace(name: str) -> Trace:
    path = DATA / f"{name}.txt"
    env = InteractionEnv(keep_history=True)
    for _comments, command, _expected in parse_blocks(path.read_text(), path):
        if command:
            env.handle(command)
    return parse_trace(env.trace_ndjson(), f"{name}.ndjson")


def random_trace(seed: int, steps: int = 500, membership: bool = False) -> Trace:
    rng = random.Random(seed)

    def timeouts(node_id: int) -> Iterator[int]:
        own = random.Random(seed * 10 + node_id)
        while True:
            yield own.randrange(10, 20)

    env = InteractionEnv(timeouts=timeouts, keep_history=True)
    env.add_nodes(3, max_batch_size=2, heartbeat_ticks=3, max_inflight_appends=2)
    if membership:
        env.add_nodes(1, members=(1, 2, 3), max_batch_size=2, heartbeat_ticks=3)
    ids = sorted(env.nodes)
    for step in range(steps):
        node = env.nodes[rng.choice(ids)]
        roll = rng.random()
        if roll < 0.3:
            node.core.tick()
        elif roll < 0.55:
            env.process_ready(node.config.node_id)
        elif roll < 0.85:
            env.deliver_one_at_random(rng)
        elif roll < 0.93:
            node.core.propose([f"c{step}".encode()])
        elif roll < 0.96:
            core = node.core
            upper = min(core.applied_index, core.commit_index, core.log.stable_index)
            if upper > core.snapshot_meta.index:
                assert node.compact(upper)
        elif roll < 0.98 or not membership:
            # A ctx unique per read: a follower forwards reads by ctx (read_only.py).
            node.core.read_index(f"r{step}".encode())
        elif roll < 0.99:
            # A clean restart (everything persisted): the spec's Restart keeps exactly that.
            if not node.core.has_ready():
                node.restart()
        else:
            target = rng.choice(ids)
            config = node.core.config()
            # Never down to one member: see docs/raft.md on AdvanceCommitIndex.
            if target in config and len(config) > 2:
                node.core.propose_conf_change(ConfChange("remove", target))
            elif target not in config:
                node.core.propose_conf_change(ConfChange("add", target))
    return parse_trace(env.trace_ndjson(), f"seed{seed}.ndjson")


def tampered(trace: Trace, tmp_path: Path) -> Trace:
    """The same trace with one node's term after its first election bumped by one."""
    lines = []
    done = False
    for event in trace.events:
        line: dict[str, object] = {"i": event.seq, "t_ns": event.t_ns, "node": event.node, "action": event.action}
        if event.msg is not None:
            line["msg"] = dict(event.msg)
        line["args"] = dict(event.args)
        if event.state is not None:
            state = dict(event.state)
            if not done and event.action == "BecomeLeader":
                state["term"] = int(state["term"]) + 1
                done = True
            line["state"] = state
        lines.append(json.dumps(line))
    assert done
    header = {"version": 1, "protocol": "raft", "nodes": list(trace.header.nodes), "config": list(trace.header.config)}
    return parse_trace("\n".join([json.dumps({"header": header}), *lines]), "tampered.ndjson")


@pytest.mark.slow
def test_scenario_and_random_traces_conform(tmp_path: Path) -> None:
    traces = [scenario_trace(name) for name in SCENARIOS]
    traces += [random_trace(seed) for seed in range(4)]
    traces.append(tampered(traces[0], tmp_path))
    verdicts = check_loaded(traces, diagnose=False)
    rejected = [v for v in verdicts[:-1] if not v.accepted]
    assert not rejected, rejected
    assert not verdicts[-1].accepted, "a trace with a wrong term must be rejected"
    assert all(len(t.events) > 20 for t in traces)
    seen = {e.action for t in traces[:-1] for e in t.events}
    assert PRE_VOTE_ACTIONS <= seen, PRE_VOTE_ACTIONS - seen


@pytest.mark.soak
def test_many_random_traces_conform() -> None:
    traces = [random_trace(seed, steps=1500, membership=seed % 2 == 1) for seed in range(100, 140)]
    verdicts = check_loaded(traces, diagnose=True)
    rejected = [v for v in verdicts if not v.accepted]
    assert not rejected, rejected
