"""Trace conformance with the real TLC: hand-made traces of a 3-node election and commit are
accepted; hand-edited ones (a reordered line, a changed term, a lost send, a commit without a
quorum) are rejected at the right line, naming what no spec action could produce."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from checker.conformance import CheckStats, check_loaded, check_traces, trace_data_module
from checker.trace import parse_trace


def _st(term: int, role: str, voted_for: int | None, commit: int = 0, last: int = 0, last_term: int = 0) -> dict[str, Any]:
    return {
        "term": term,
        "role": role,
        "voted_for": voted_for,
        "commit_index": commit,
        "last_index": last,
        "last_term": last_term,
        "snapshot_index": 0,
        "snapshot_term": 0,
        "config": [1, 2, 3],
    }


RV = {"type": "RequestVote", "src": 1, "dst": 2, "term": 1, "last_log_term": 0, "last_log_index": 0}
RVR = {"type": "RequestVoteResponse", "src": 2, "dst": 1, "term": 1, "vote_granted": True}
AE = {
    "type": "AppendEntries",
    "src": 1,
    "dst": 2,
    "term": 1,
    "prev_log_index": 0,
    "prev_log_term": 0,
    "entries": [[1, "noop"]],
    "leader_commit": 0,
}
AER = {"type": "AppendEntriesResponse", "src": 2, "dst": 1, "term": 1, "success": True, "match_index": 1}

# (node, action, msg, state after): node 1 is elected with node 2's vote, replicates its
# no-op to node 2 and commits it; the network duplicates one AppendEntries and node 2
# drops the copy later as a matching-prefix no-op. PersistState lines release what waited
# for a persist: the RequestVote of a term not yet durable, every response; the leader
# counts its own entry only once it is durable.
ELECTION: list[tuple[int, str, dict[str, Any] | None, dict[str, Any] | None]] = [
    (1, "Timeout", None, _st(1, "candidate", 1)),
    (1, "RequestVote", RV, _st(1, "candidate", 1)),
    (1, "PersistState", None, _st(1, "candidate", 1)),
    (2, "UpdateTerm", RV, _st(1, "follower", None)),
    (2, "HandleRequestVoteRequest", RV, _st(1, "follower", 1)),
    (2, "PersistState", None, _st(1, "follower", 1)),
    (1, "HandleRequestVoteResponse", RVR, _st(1, "candidate", 1)),
    (1, "BecomeLeader", None, _st(1, "leader", 1, 0, 1, 1)),
    (1, "AppendEntries", AE, _st(1, "leader", 1, 0, 1, 1)),
    (1, "PersistState", None, _st(1, "leader", 1, 0, 1, 1)),
    (2, "DuplicateMessage", AE, None),
    (2, "HandleAppendEntriesRequest", AE, _st(1, "follower", 1, 0, 1, 1)),
    (2, "PersistState", None, _st(1, "follower", 1, 0, 1, 1)),
    (1, "HandleAppendEntriesResponse", AER, _st(1, "leader", 1, 0, 1, 1)),
    (1, "AdvanceCommitIndex", None, _st(1, "leader", 1, 1, 1, 1)),
    (2, "HandleAppendEntriesRequest", AE, _st(1, "follower", 1, 0, 1, 1)),
    (1, "DropMessage", AER, None),
]


Event = tuple[int, str, dict[str, Any] | None, dict[str, Any] | None]


def _lines(events: list[Event]) -> str:
    out = [json.dumps({"header": {"version": 1, "protocol": "raft", "nodes": [1, 2, 3], "config": [1, 2, 3], "seed": 1}})]
    for k, (node, action, msg, state) in enumerate(events):
        line: dict[str, Any] = {"i": k + 1, "t_ns": k * 1000, "node": node, "action": action}
        if msg is not None:
            line["msg"] = msg
        if state is not None:
            line["state"] = state
        out.append(json.dumps(line))
    return "\n".join(out) + "\n"


def _write(tmp_path: Path, name: str, events: list[Any]) -> Path:
    path = tmp_path / f"{name}.ndjson"
    path.write_text(_lines(events))
    return path


def _variants(tmp_path: Path) -> dict[str, Path]:
    good = _write(tmp_path, "good", ELECTION)
    reordered = list(ELECTION)
    reordered[3], reordered[4] = reordered[4], reordered[3]  # vote before adopting the term
    changed_term = list(ELECTION)
    changed_term[7] = (1, "BecomeLeader", None, _st(2, "leader", 1, 0, 1, 2))
    lost_send = [e for k, e in enumerate(ELECTION) if k != 1]  # RequestVote line missing
    no_quorum = [e for k, e in enumerate(ELECTION) if k not in (11, 12, 13)]  # commit with no ack
    return {
        "good": good,
        "reordered": _write(tmp_path, "reordered", reordered),
        "changed_term": _write(tmp_path, "changed_term", changed_term),
        "lost_send": _write(tmp_path, "lost_send", lost_send),
        "no_quorum": _write(tmp_path, "no_quorum", no_quorum),
    }


def test_batch_verdicts_name_line_action_and_observation(tmp_path: Path) -> None:
    paths = _variants(tmp_path)
    stats = CheckStats()
    verdicts = {Path(v.path).stem: v for v in check_traces(sorted(paths.values()), stats=stats)}
    # One run for the batch, one for the diagnosis of the four rejected traces.
    assert stats.tlc_runs == 2
    assert stats.traces == 5
    assert verdicts["good"].accepted
    assert verdicts["good"].events == len(ELECTION)

    reordered = verdicts["reordered"]
    assert not reordered.accepted
    assert (reordered.line_no, reordered.action, reordered.node) == (5, "HandleRequestVoteRequest", 2)

    changed = verdicts["changed_term"]
    assert not changed.accepted
    assert (changed.line_no, changed.action) == (9, "BecomeLeader")
    assert changed.mismatches == ("term", "last_term")

    lost = verdicts["lost_send"]
    assert (lost.line_no, lost.action) == (4, "UpdateTerm")
    assert "not in flight" in lost.reason

    no_quorum = verdicts["no_quorum"]
    assert (no_quorum.line_no, no_quorum.action) == (13, "AdvanceCommitIndex")
    assert "not enabled" in no_quorum.reason


def test_single_trace_uses_exit_code_12(tmp_path: Path) -> None:
    """A batch of one runs TraceRaft.cfg (NotAccepted violated = accepted)."""
    paths = _variants(tmp_path)
    stats = CheckStats()
    [good] = check_traces([paths["good"]], stats=stats)
    assert good.accepted
    assert stats.tlc_runs == 1
    [bad] = check_traces([paths["changed_term"]], diagnose=False)
    assert not bad.accepted
    assert bad.line_no == 9
    assert bad.mismatches == ()


def test_data_module_layout() -> None:
    """Flat integer tables: one row per line, each distinct message and config once."""
    trace = parse_trace(_lines(ELECTION), "x.ndjson")
    files = trace_data_module([trace, trace])
    text = files["TraceData.tla"]
    assert text.startswith("---- MODULE TraceData ----")
    assert "TraceServer == {1, 2, 3}" in text
    assert "TraceStarts == <<0, 17>>" in text
    assert "TraceLens == <<17, 17>>" in text
    assert "TraceConfigs == <<{1, 2, 3}>>" in text
    chunks = {name: body for name, body in files.items() if name != "TraceData.tla"}
    # Events: 2 traces x 17 lines x 3 ints; distinct states: 6 x 7 ints; messages: RV, RVR,
    # AE, AER (4 x 9 ints); entries: 1 x 3.
    ints = [
        sorted(int(v) for v in body.split("V == <<")[1].split(">>")[0].replace("\n", "").split(","))
        for body in chunks.values()
    ]
    assert sorted(len(v) for v in ints) == [3, 36, 42, 2 * 17 * 3]
    first_event = next(body for body in chunks.values() if "events" in body)
    # Line 1: Timeout (action 3) by node 1 (3 + 32 * 1), no message, state 1.
    assert "V == <<\n35,0,1,36,1,1," in first_event  # line 2: RequestVote (4 + 32), message 1, state 1
    states = next(body for body in chunks.values() if "states" in body)
    # State 1: term 1, candidate (2) + 8 * voted for 1 + 8 * 1024 * config 1, zeros.
    assert "V == <<\n1,8202,0,0,0,0,0," in states


def test_batches_split_by_servers(tmp_path: Path) -> None:
    """Traces with different servers cannot share TLC's constants: separate runs."""
    two: list[Event] = [(1, "Timeout", None, {**_st(1, "candidate", 1), "config": [1, 2]})]
    three: list[Event] = [(1, "Timeout", None, _st(1, "candidate", 1))]
    p2 = tmp_path / "two.ndjson"
    p2.write_text(_lines(two).replace('"nodes": [1, 2, 3], "config": [1, 2, 3]', '"nodes": [1, 2], "config": [1, 2]'))
    p3 = _write(tmp_path, "three", three)
    stats = CheckStats()
    verdicts = check_loaded([parse_trace(p2.read_text(), str(p2)), parse_trace(p3.read_text(), str(p3))], stats=stats)
    assert [v.accepted for v in verdicts] == [True, True]
    assert stats.tlc_runs == 2


def _mox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mox.cli", *args], capture_output=True, text=True, check=False)


def test_cli_exit_codes(tmp_path: Path) -> None:
    paths = _variants(tmp_path)
    ok = _mox("check", str(paths["good"]))
    assert ok.returncode == 0, ok.stderr
    assert "good.ndjson: accepted (17 events)" in ok.stdout
    assert "1 traces, 17 events: 1 accepted, 0 rejected" in ok.stdout

    bad = _mox("check", "--no-diagnose", str(tmp_path))
    assert bad.returncode == 1
    assert "rejected at line 9 (BecomeLeader by node 1)" in bad.stdout
    assert "5 traces" in bad.stdout and "4 rejected" in bad.stdout

    missing = _mox("check", str(tmp_path / "nope.ndjson"))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr

    malformed = tmp_path / "malformed.ndjson"
    malformed.write_text('{"i": 1, "node": 1, "action": "Timeout", "state": {"term": 1}}\n')
    result = _mox("check", str(malformed))
    assert result.returncode == 2
    assert f"{malformed}:1: state.role: missing" in result.stderr


def test_batch_size_does_not_change_verdicts(tmp_path: Path) -> None:
    paths = _variants(tmp_path)
    chosen = [paths["good"], paths["reordered"]]
    verdicts = check_traces(chosen, batch_size=1, diagnose=False)
    assert [v.accepted for v in verdicts] == [True, False]
    assert verdicts[1].line_no == 5
