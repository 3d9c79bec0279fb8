"""Trace loading and schema validation (checker.trace): every malformed line is an error that
names the file, the line and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from checker.trace import TraceFormatError, TracePathError, find_traces, load_trace, parse_trace


def _state(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "term": 1,
        "role": "candidate",
        "voted_for": 1,
        "commit_index": 0,
        "last_index": 0,
        "last_term": 0,
        "snapshot_index": 0,
        "snapshot_term": 0,
        "config": [1, 2, 3],
    }
    base.update(over)
    return base


HEADER = {"header": {"version": 1, "protocol": "raft", "nodes": [1, 2, 3], "config": [1, 2, 3], "seed": 9}}
TIMEOUT = {"i": 1, "t_ns": 10, "node": 1, "action": "Timeout", "state": _state()}
REQUEST_VOTE = {
    "i": 2,
    "t_ns": 20,
    "node": 1,
    "action": "RequestVote",
    "msg": {"type": "RequestVote", "src": 1, "dst": 2, "term": 1, "last_log_term": 0, "last_log_index": 0},
    "state": _state(),
}


def _text(*lines: dict[str, Any]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def test_valid_trace_loads_with_header() -> None:
    trace = parse_trace(_text(HEADER, TIMEOUT, REQUEST_VOTE), "t.ndjson")
    assert trace.has_header
    assert trace.header.seed == 9
    assert trace.header.nodes == (1, 2, 3)
    assert [e.action for e in trace.events] == ["Timeout", "RequestVote"]
    assert [e.line_no for e in trace.events] == [2, 3]
    assert trace.events[1].msg is not None
    assert trace.events[1].msg["dst"] == 2


def test_headerless_trace_infers_nodes() -> None:
    trace = parse_trace(_text(TIMEOUT, REQUEST_VOTE), "t.ndjson")
    assert not trace.has_header
    assert trace.header.nodes == (1, 2, 3)
    assert trace.header.config == (1, 2, 3)


def _error(*lines: dict[str, Any] | str) -> TraceFormatError:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    with pytest.raises(TraceFormatError) as info:
        parse_trace(text, "bad.ndjson")
    return info.value


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        ({**TIMEOUT, "action": "Elect"}, "action", "unknown action 'Elect'"),
        ({k: v for k, v in TIMEOUT.items() if k != "node"}, "node", "missing"),
        ({**TIMEOUT, "node": 0}, "node", "node ids start at 1"),
        ({**TIMEOUT, "i": -1}, "i", "non-negative"),
        ({**TIMEOUT, "state": _state(term="3")}, "state.term", "got the string '3'"),
        ({**TIMEOUT, "state": _state(term=True)}, "state.term", "a boolean"),
        ({**TIMEOUT, "state": _state(role="boss")}, "state.role", "'boss'"),
        ({**TIMEOUT, "state": _state(config=[1, 1])}, "state.config", "duplicate"),
        ({**TIMEOUT, "msg": REQUEST_VOTE["msg"]}, "msg", "carries no message"),
        ({k: v for k, v in REQUEST_VOTE.items() if k != "msg"}, "msg", "missing"),
        ({**REQUEST_VOTE, "msg": {**REQUEST_VOTE["msg"], "type": "Vote"}}, "msg.type", "'Vote'"),
        (
            {**REQUEST_VOTE, "msg": {k: v for k, v in REQUEST_VOTE["msg"].items() if k != "last_log_index"}},
            "msg.last_log_index",
            "missing",
        ),
        ({**REQUEST_VOTE, "msg": {**REQUEST_VOTE["msg"], "dst": 7}}, "msg.dst", "not in header.nodes"),
    ],
)
def test_malformed_line_names_file_line_and_field(line: dict[str, Any], field: str, problem: str) -> None:
    err = _error(HEADER, TIMEOUT, line)
    assert err.path == "bad.ndjson"
    assert err.line_no == 3
    assert err.field == field
    assert problem in err.problem
    assert str(err).startswith(f"bad.ndjson:3: {field}: ")


def test_append_entries_entries_are_checked() -> None:
    msg = {
        "type": "AppendEntries",
        "src": 1,
        "dst": 2,
        "term": 1,
        "prev_log_index": 0,
        "prev_log_term": 0,
        "entries": [[1, "noop"], [1, "config"]],
        "leader_commit": 0,
    }
    line = {"i": 1, "node": 1, "action": "AppendEntries", "msg": msg, "state": _state(role="leader")}
    err = _error(line)
    assert err.line_no == 1
    assert err.field == "msg.entries[1]"
    assert "member list" in err.problem


def test_not_json_and_not_object() -> None:
    err = _error(TIMEOUT, "{not json")
    assert (err.line_no, err.field) == (2, "")
    assert "not valid JSON" in str(err)
    err = _error(TIMEOUT, "[1, 2]")
    assert (err.line_no, err.field) == (2, "line")


def test_header_only_first_and_supported_version() -> None:
    err = _error(TIMEOUT, HEADER)
    assert (err.line_no, err.field) == (2, "header")
    err = _error({"header": {"version": 99, "nodes": [1]}}, TIMEOUT)
    assert (err.line_no, err.field) == (1, "header.version")


def test_empty_trace_is_an_error() -> None:
    err = _error(HEADER)
    assert "no events" in err.problem


def test_network_events_have_no_state() -> None:
    drop = {"i": 3, "node": 2, "action": "DropMessage", "msg": REQUEST_VOTE["msg"]}
    trace = parse_trace(_text(HEADER, TIMEOUT, REQUEST_VOTE, drop), "t.ndjson")
    assert trace.events[-1].state is None


def test_paths(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.ndjson").write_text(_text(HEADER, TIMEOUT))
    (tmp_path / "a" / "two.ndjson").write_text(_text(TIMEOUT))
    (tmp_path / "a" / "notes.md").write_text("not a trace")
    found = find_traces([tmp_path / "a"])
    assert [p.name for p in found] == ["one.ndjson", "two.ndjson"]
    assert load_trace(found[0]).header.seed == 9
    with pytest.raises(TracePathError, match="no such file"):
        find_traces([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TracePathError, match="holds no"):
        find_traces([tmp_path / "empty"])
