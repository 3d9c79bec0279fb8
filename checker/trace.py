"""Loading NDJSON Raft traces, with schema validation.

A trace file is NDJSON: an optional header line, then one line per spec action (the format
is in `specs/README.md`). The header is an object with a single key `header`:

    {"header": {"version": 1, "protocol": "raft", "nodes": [1, 2, 3], "config": [1, 2, 3],
                "seed": 7, "faults": {...}, "mox_version": "0.1.0"}}

`nodes` are the servers of the run, `config` the initial configuration. Without them (or
without a header) both default to every node id that appears in the trace, which is wrong
for a run that adds a server later: simulators should write both.

Validation is strict about what the checker reads (types, ranges, enumerations) and lenient
about extra keys (a core may log more than the spec needs). A malformed line is a
`TraceFormatError` naming the file, the line number and the field, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import msgspec

from mox.errors import MoxError

__all__ = [
    "ACTIONS",
    "MESSAGE_FIELDS",
    "NETWORK_ACTIONS",
    "ROLES",
    "STATE_FIELDS",
    "Trace",
    "TraceEvent",
    "TraceFormatError",
    "TraceHeader",
    "TracePathError",
    "find_traces",
    "load_trace",
    "load_traces",
    "parse_trace",
]

TRACE_FORMAT_VERSION = 1

# Every trace action, in the order of specs/README.md.
ACTIONS: tuple[str, ...] = (
    "Restart",
    "PersistState",
    "Timeout",
    "RequestVote",
    "BecomeLeader",
    "ClientRequest",
    "ChangeMembership",
    "AdvanceCommitIndex",
    "AppendEntries",
    "SendSnapshot",
    "Snapshot",
    "UpdateTerm",
    "HandleRequestVoteRequest",
    "HandleRequestVoteResponse",
    "HandleAppendEntriesRequest",
    "HandleAppendEntriesResponse",
    "HandleInstallSnapshotRequest",
    "HandleInstallSnapshotResponse",
    "DropStaleMessage",
    "StartPreVote",
    "PreVote",
    "BecomeCandidate",
    "HandlePreVoteRequest",
    "HandlePreVoteResponse",
    "StepDown",
    "DropVoteRequestInLease",
    "HandleStaleAppendEntries",
    "DropMessage",
    "DuplicateMessage",
)

# Actions the network performs: they carry a message but no node state.
NETWORK_ACTIONS: frozenset[str] = frozenset({"DropMessage", "DuplicateMessage"})

# Actions without a message (specs/README.md: "absent for ...").
_NO_MESSAGE_ACTIONS: frozenset[str] = frozenset(
    {
        "Timeout",
        "Restart",
        "PersistState",
        "BecomeLeader",
        "ClientRequest",
        "AdvanceCommitIndex",
        "Snapshot",
        "ChangeMembership",
        "StartPreVote",
        "BecomeCandidate",
        "StepDown",
    }
)

ROLES: tuple[str, ...] = ("follower", "candidate", "leader", "pre_candidate")
ENTRY_KINDS: tuple[str, ...] = ("normal", "noop", "config")

# Field name -> expected kind, for the `state` object (the node's state after the step).
STATE_FIELDS: dict[str, str] = {
    "term": "nat",
    "role": "role",
    "voted_for": "node_or_null",
    "commit_index": "nat",
    "last_index": "nat",
    "last_term": "nat",
    "snapshot_index": "nat",
    "snapshot_term": "nat",
    "config": "nodes",
}

_COMMON_MESSAGE_FIELDS: dict[str, str] = {"src": "node", "dst": "node", "term": "nat"}

# Message type -> its fields beyond src/dst/term.
MESSAGE_FIELDS: dict[str, dict[str, str]] = {
    "RequestVote": {"last_log_term": "nat", "last_log_index": "nat"},
    "RequestVoteResponse": {"vote_granted": "bool"},
    "PreVote": {"last_log_term": "nat", "last_log_index": "nat"},
    "PreVoteResponse": {"vote_granted": "bool"},
    "AppendEntries": {
        "prev_log_index": "nat",
        "prev_log_term": "nat",
        "entries": "entries",
        "leader_commit": "nat",
    },
    "AppendEntriesResponse": {"success": "bool", "match_index": "nat"},
    "InstallSnapshot": {"snapshot_index": "nat", "snapshot_term": "nat", "config": "nodes"},
    "InstallSnapshotResponse": {"match_index": "nat"},
}


class TraceFormatError(MoxError):
    """A trace line does not follow the schema. Names the file, the line and the field."""

    exit_code = 2

    def __init__(self, path: str, line_no: int, field: str, problem: str) -> None:
        self.path = path
        self.line_no = line_no
        self.field = field
        self.problem = problem
        where = f"{path}:{line_no}"
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class TracePathError(MoxError):
    """A path given to the checker does not exist or holds no traces."""

    exit_code = 2

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@attrs.frozen
class TraceHeader:
    """What the run that wrote the trace was: protocol, servers, initial config, seed, faults."""

    version: int
    protocol: str
    nodes: tuple[int, ...]
    config: tuple[int, ...]
    seed: int | None = None
    faults: Any = None
    mox_version: str | None = None
    # The header object as written, for reports (seed, fault set, anything else logged).
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False)


@attrs.frozen
class TraceEvent:
    """One validated trace line. `msg`, `args` and `state` are the JSON objects as written."""

    line_no: int
    seq: int
    t_ns: int
    node: int
    action: str
    msg: Mapping[str, Any] | None
    args: Mapping[str, Any]
    state: Mapping[str, Any] | None


@attrs.frozen
class Trace:
    """A loaded trace: where it came from, its header, its events in file order."""

    path: str
    header: TraceHeader
    events: tuple[TraceEvent, ...]
    # True when the file had a header line (else nodes/config were inferred).
    has_header: bool = True


class _Checker:
    """Validates one decoded line; every failure names the field by its JSON path."""

    def __init__(self, path: str, line_no: int) -> None:
        self.path = path
        self.line_no = line_no

    def fail(self, field: str, problem: str) -> TraceFormatError:
        return TraceFormatError(self.path, self.line_no, field, problem)

    def obj(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected an object, got {_kind(value)}")
        return value

    def get(self, obj: Mapping[str, Any], key: str, prefix: str) -> Any:
        if key not in obj:
            raise self.fail(f"{prefix}{key}", "missing")
        return obj[key]

    def value(self, value: Any, kind: str, field: str) -> Any:
        if kind == "nat":
            return self.nat(value, field)
        if kind == "node":
            return self.node(value, field)
        if kind == "node_or_null":
            return None if value is None else self.node(value, field)
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.fail(field, f"expected true or false, got {_kind(value)}")
            return value
        if kind == "role":
            if value not in ROLES:
                raise self.fail(field, f"expected one of {', '.join(ROLES)}, got {value!r}")
            return value
        if kind == "nodes":
            return self.nodes(value, field)
        if kind == "entries":
            return self.entries(value, field)
        raise AssertionError(f"unknown schema kind {kind}")

    def nat(self, value: Any, field: str) -> int:
        # bool is an int in Python; a JSON true where a number belongs is a schema error.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, f"expected a non-negative integer, got {_kind(value)}")
        if value < 0:
            raise self.fail(field, f"expected a non-negative integer, got {value}")
        return value

    def node(self, value: Any, field: str) -> int:
        node = self.nat(value, field)
        if node < 1:
            raise self.fail(field, f"node ids start at 1, got {node}")
        return node

    def nodes(self, value: Any, field: str) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise self.fail(field, f"expected a list of node ids, got {_kind(value)}")
        nodes = tuple(self.node(v, f"{field}[{k}]") for k, v in enumerate(value))
        if len(set(nodes)) != len(nodes):
            raise self.fail(field, f"duplicate node id in {list(nodes)}")
        return nodes

    def entries(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(field, f"expected a list of entries, got {_kind(value)}")
        for k, entry in enumerate(value):
            where = f"{field}[{k}]"
            if not isinstance(entry, list) or len(entry) < 2:
                raise self.fail(where, "expected [term, kind] or [term, \"config\", members]")
            self.nat(entry[0], f"{where}[0]")
            if entry[1] not in ENTRY_KINDS:
                raise self.fail(
                    f"{where}[1]", f"expected one of {', '.join(ENTRY_KINDS)}, got {entry[1]!r}"
                )
            if entry[1] == "config":
                if len(entry) < 3:
                    raise self.fail(where, "a config entry carries its member list third")
                self.nodes(entry[2], f"{where}[2]")
        return value

    def message(self, value: Any, field: str) -> dict[str, Any]:
        msg = self.obj(value, field)
        mtype = self.get(msg, "type", f"{field}.")
        if mtype not in MESSAGE_FIELDS:
            raise self.fail(
                f"{field}.type", f"expected one of {', '.join(MESSAGE_FIELDS)}, got {mtype!r}"
            )
        for key, kind in (_COMMON_MESSAGE_FIELDS | MESSAGE_FIELDS[mtype]).items():
            self.value(self.get(msg, key, f"{field}."), kind, f"{field}.{key}")
        return msg


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _nat_ok(value: Any) -> bool:
    return type(value) is int and value >= 0


def _state_is_valid(state: dict[str, Any]) -> bool:
    """The fast path of state validation (most lines are valid): True iff every field is
    present and of its kind; False sends the line to the checks that name the field."""
    try:
        voted_for = state["voted_for"]
        config = state["config"]
        return (
            _nat_ok(state["term"])
            and state["role"] in ROLES
            and (voted_for is None or (type(voted_for) is int and voted_for >= 1))
            and _nat_ok(state["commit_index"])
            and _nat_ok(state["last_index"])
            and _nat_ok(state["last_term"])
            and _nat_ok(state["snapshot_index"])
            and _nat_ok(state["snapshot_term"])
            and type(config) is list
            and all(type(n) is int and n >= 1 for n in config)
            and len(set(config)) == len(config)
        )
    except (KeyError, TypeError):
        return False


def _parse_event(c: _Checker, line: dict[str, Any]) -> TraceEvent:
    action = c.get(line, "action", "")
    if action not in ACTIONS:
        raise c.fail("action", f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    seq = c.nat(c.get(line, "i", ""), "i")
    t_ns = c.nat(line.get("t_ns", 0), "t_ns")
    node = c.node(c.get(line, "node", ""), "node")
    msg: dict[str, Any] | None = None
    if action not in _NO_MESSAGE_ACTIONS:
        msg = c.message(c.get(line, "msg", ""), "msg")
    elif line.get("msg") is not None:
        raise c.fail("msg", f"action {action} carries no message")
    args = c.obj(line.get("args", {}), "args")
    state: dict[str, Any] | None = None
    if action not in NETWORK_ACTIONS:
        state = c.obj(c.get(line, "state", ""), "state")
        if not _state_is_valid(state):
            # The slow path names the first bad field.
            for key, kind in STATE_FIELDS.items():
                c.value(c.get(state, key, "state."), kind, f"state.{key}")
    _check_args(c, action, args)
    return TraceEvent(
        line_no=c.line_no,
        seq=seq,
        t_ns=t_ns,
        node=node,
        action=action,
        msg=msg,
        args=args,
        state=state,
    )


def _check_args(c: _Checker, action: str, args: dict[str, Any]) -> None:
    """Validates the `args` keys the report shows, when present (the spec does not need them:
    the state after the step says the same)."""
    if "index" in args:
        c.nat(args["index"], "args.index")
    if action == "ChangeMembership" and "config" in args:
        c.nodes(args["config"], "args.config")


def _parse_header(c: _Checker, body: Any) -> TraceHeader:
    header = c.obj(body, "header")
    version = c.nat(c.get(header, "version", "header."), "header.version")
    if version != TRACE_FORMAT_VERSION:
        raise c.fail(
            "header.version", f"trace format {version} is not supported (expected {TRACE_FORMAT_VERSION})"
        )
    protocol = header.get("protocol", "raft")
    if protocol != "raft":
        raise c.fail("header.protocol", f"only raft traces are checked, got {protocol!r}")
    # nodes/config may be left out: they are then inferred from the events (parse_trace).
    nodes = c.nodes(header.get("nodes", []), "header.nodes")
    config = c.nodes(header.get("config", list(nodes)), "header.config")
    if nodes and not set(config) <= set(nodes):
        raise c.fail("header.config", f"{list(config)} is not a subset of nodes {list(nodes)}")
    seed = header.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise c.fail("header.seed", f"expected an integer, got {_kind(seed)}")
    mox_version = header.get("mox_version")
    if mox_version is not None and not isinstance(mox_version, str):
        raise c.fail("header.mox_version", f"expected a string, got {_kind(mox_version)}")
    return TraceHeader(
        version=version,
        protocol=protocol,
        nodes=nodes,
        config=config,
        seed=seed,
        faults=header.get("faults"),
        mox_version=mox_version,
        raw=header,
    )


def _nodes_seen(events: Iterable[TraceEvent]) -> tuple[int, ...]:
    seen: set[int] = set()
    for event in events:
        seen.add(event.node)
        if event.msg is not None:
            seen.add(event.msg["src"])
            seen.add(event.msg["dst"])
        if event.state is not None:
            seen.update(event.state["config"])
    return tuple(sorted(seen))


_decoder = msgspec.json.Decoder()


def parse_trace(text: str | bytes, path: str) -> Trace:
    """Parses and validates a whole trace; `path` is only used in error messages."""
    lines = text.splitlines() if isinstance(text, bytes) else text.encode().splitlines()
    header: TraceHeader | None = None
    events: list[TraceEvent] = []
    for index, raw in enumerate(lines):
        line_no = index + 1
        c = _Checker(path, line_no)
        if not raw.strip():
            continue
        try:
            decoded = _decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise c.fail("", f"not valid JSON ({exc})") from None
        line = c.obj(decoded, "line")
        if "header" in line:
            if header is not None or events:
                raise c.fail("header", "a header is allowed only as the first line")
            header = _parse_header(c, line["header"])
            continue
        event = _parse_event(c, line)
        if header is not None and header.nodes:
            _check_known_nodes(c, event, header)
        events.append(event)
    if not events:
        raise TraceFormatError(path, max(len(lines), 1), "", "the trace has no events")
    has_header = header is not None
    if header is None:
        nodes = _nodes_seen(events)
        header = TraceHeader(version=TRACE_FORMAT_VERSION, protocol="raft", nodes=nodes, config=nodes)
    elif not header.nodes:
        nodes = _nodes_seen(events)
        header = attrs.evolve(header, nodes=nodes, config=header.config or nodes)
    if not set(header.config) <= set(header.nodes):
        raise TraceFormatError(path, 1, "header.config", "names a node that never appears in the trace")
    return Trace(path=path, header=header, events=tuple(events), has_header=has_header)


def _check_known_nodes(c: _Checker, event: TraceEvent, header: TraceHeader) -> None:
    """Every node id a line names must be a server of the run (the spec's `Server`)."""
    known = set(header.nodes)
    if event.node not in known:
        raise c.fail("node", f"node {event.node} is not in header.nodes {list(header.nodes)}")
    if event.msg is not None:
        for key in ("src", "dst"):
            if event.msg[key] not in known:
                raise c.fail(f"msg.{key}", f"node {event.msg[key]} is not in header.nodes")


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Reads and validates one trace file."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TracePathError(name, exc.strerror or str(exc)) from None
    return parse_trace(data, name)


def find_traces(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expands files and directories (recursively, `*.ndjson`) into a sorted list of files.

    Raises `TracePathError` for a path that does not exist or a directory without traces.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*.ndjson") if p.is_file())
            if not inside:
                raise TracePathError(str(path), "directory holds no *.ndjson traces")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise TracePathError(str(path), "no such file or directory")
    return found


def load_traces(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Trace]:
    """Loads every trace under `paths` (see `find_traces`), in sorted order."""
    for path in find_traces(paths):
        yield load_trace(path)
