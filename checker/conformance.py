"""Trace conformance: is a trace a behaviour of the Raft spec? TLC decides.

Theory of operation.

1. Traces are loaded and schema-checked (`checker.trace`).
2. Traces with the same servers and initial configuration form a batch. Each batch becomes
   one generated TLA+ module, `TraceData.tla`, holding `TraceLogs == << log_1, ..., log_n >>`
   (one record per line, fields translated to the spec's vocabulary here, once), the
   servers and the initial configuration. `TraceRaft.tla` picks `t \\in 1..Len(TraceLogs)`
   in `Init`, so one TLC run (one JVM start) checks the whole batch.
3. TLC explores breadth-first with one worker. Each reachable state records how far its
   trace got; the invariant `Progress` keeps, per trace, the furthest line index in a
   `TLCSet` register and prints `<<"reached", t, l>>` when it grows, and `AcceptedReport`
   prints `<<"accepted", t>>` for a state past the last line. A trace no behaviour of the
   spec can follow to the end gets stuck: it is rejected at the line after the furthest
   one reached.
   A batch of one short trace is checked the documented single-trace way instead:
   invariant `NotAccepted == l <= Len(TraceLog)`, TLC exit code 12 (violated) = every line
   matched, exit 0 = stuck = rejected. (A violation makes TLC print the whole behaviour,
   which for long traces costs more than the check: those go the batch way.)
   The batch run fingerprints states by their position in the trace only (`VIEW TraceView`:
   exact, because following a trace is deterministic; see TraceRaft.tla).
4. For rejected traces a second run (`TraceRaftDiag.cfg`: no VIEW, `TraceStuckAt` set to the
   stuck line of each) confirms the rejection with a search that merges no states, evaluates
   the spec action the stuck line names without the trace's constraints, and prints which
   observed variables it could not produce (or that the action is not enabled at all, e.g.
   because its message is not in flight).

Public entry points: `check_traces(paths) -> list[TraceVerdict]` (for `mox check` and
`mox simulate --check`) and `check_loaded(traces)`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from checker.tlc import find_java, tla2tools_jar
from checker.trace import (
    ACTIONS,
    ENTRY_KINDS,
    MESSAGE_FIELDS,
    NETWORK_ACTIONS,
    ROLES,
    Trace,
    TraceEvent,
    find_traces,
    load_trace,
)
from mox.errors import MoxError

__all__ = [
    "BATCH_SIZE_DEFAULT",
    "CheckStats",
    "ConformanceError",
    "TraceVerdict",
    "check_loaded",
    "check_traces",
    "specs_dir",
    "tla_value",
    "trace_data_module",
]

BATCH_SIZE_DEFAULT = 64
# A lone trace up to this many events is checked the single-trace way (exit code 12).
SINGLE_MODE_EVENTS_MAX = 300
TLC_TIMEOUT_S_DEFAULT = 600.0

# Names of the observed variables, as TraceRaft.tla's diagnosis prints them.
OBSERVED_VARIABLES: tuple[str, ...] = (
    "term",
    "role",
    "voted_for",
    "commit_index",
    "last_index",
    "last_term",
    "snapshot_index",
    "snapshot_term",
    "config",
    "msg",
)


class ConformanceError(MoxError):
    """TLC could not run or ended in an error that is not a verdict (a spec or setup fault)."""

    def __init__(self, problem: str, output: str = "") -> None:
        self.problem = problem
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-25:])
        super().__init__(f"trace check failed to run: {problem}" + (f"\n{tail}" if tail else ""))


@attrs.frozen
class TraceVerdict:
    """The verdict on one trace.

    `accepted`: TLC matched every line to a step of the spec. Otherwise `line_no` (1-based
    line in the file), `event_index` (0-based index among the events) and `action` name the
    first line no behaviour could take, and `mismatches` the observed variables the spec
    action could not produce (empty with `reason` set when the action was not enabled).
    """

    path: str
    events: int
    accepted: bool
    seed: int | None = None
    line_no: int | None = None
    event_index: int | None = None
    action: str | None = None
    node: int | None = None
    mismatches: tuple[str, ...] = ()
    reason: str = ""

    def describe(self) -> str:
        """One line for humans: `path: accepted (N events)` or where and why it was rejected."""
        if self.accepted:
            return f"{self.path}: accepted ({self.events} events)"
        return f"{self.path}: rejected at line {self.line_no} ({self.action} by node {self.node}): {self.reason}"


@attrs.define
class CheckStats:
    """Counters of a `check_loaded` call, for benchmarks."""

    traces: int = 0
    events: int = 0
    tlc_runs: int = 0
    tlc_seconds: float = 0.0
    distinct_states: int = 0


# -- locating the specs and TLC -------------------------------------------------------------


def specs_dir() -> Path:
    """The repository's `specs/` directory (next to the `checker` package)."""
    here = Path(__file__).resolve().parent.parent / "specs"
    if not (here / "raft").is_dir():
        raise ConformanceError(f"specs directory not found at {here}")
    return here


# -- the generated data module --------------------------------------------------------------
#
# SANY parses TLA+ text slowly (measured here: ~1,000 trace lines a second as nested records,
# and a single big module in superlinear time). So traces are handed to TLC as flat tuples of
# integers, split into modules of about CHUNK_INTS integers, with every distinct message and
# configuration written once. TraceRaft.tla decodes them (once, as a constant) into records
# in the spec's own vocabulary. The layouts below are the contract with TraceRaft.tla.

CHUNK_INTS = 2400

# One event: action + ACTION_RADIX * node, message (0: none), state after the step (0: none,
# for the network's events). Messages, states and member sets are tables of distinct rows.
EVENT_WIDTH = 3
ACTION_RADIX = 32
# One state: term, role + ROLE_RADIX * voted_for (0: null) + ROLE_RADIX * VOTE_RADIX * config
# (an index into TraceConfigs), commit_index, last_index, last_term, snapshot_index,
# snapshot_term.
STATE_WIDTH = 7
ROLE_RADIX = 8
VOTE_RADIX = 1024
CONFIGS_MAX = (2**31 - 1) // (ROLE_RADIX * VOTE_RADIX)
# One message: type, src, dst, term, then five fields whose meaning depends on the type:
#   RequestVote, PreVote     last_log_term, last_log_index
#   RequestVoteResponse,
#   PreVoteResponse          vote_granted (0/1)
#   AppendEntries            prev_log_index, prev_log_term, leader_commit, first entry, count
#   AppendEntriesResponse    success (0/1), match_index
#   InstallSnapshot          snapshot_index, snapshot_term, config
#   InstallSnapshotResponse  match_index
MESSAGE_WIDTH = 9
# One entry: term, kind, config (members of a config entry; 0 otherwise).
ENTRY_WIDTH = 3


def tla_value(value: Any) -> str:
    """A JSON-like value as TLA+: objects as records, lists as tuples, null as `"null"`."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "<<" + ", ".join(tla_value(v) for v in value) + ">>"
    if isinstance(value, dict):
        if not value:
            return "[none |-> TRUE]"
        return "[" + ", ".join(f"{k} |-> {tla_value(v)}" for k, v in value.items()) + "]"
    raise AssertionError(f"no TLA+ form for {type(value).__name__}")


def _tla_set(nodes: Iterable[int]) -> str:
    return "{" + ", ".join(str(n) for n in sorted(nodes)) + "}"


_MESSAGE_TYPES: tuple[str, ...] = tuple(MESSAGE_FIELDS)
_ACTION_CODE = {name: k + 1 for k, name in enumerate(ACTIONS)}
_ROLE_CODE = {name: k + 1 for k, name in enumerate(ROLES)}
assert len(ROLES) < ROLE_RADIX and len(ACTIONS) < ACTION_RADIX
_TYPE_CODE = {name: k + 1 for k, name in enumerate(_MESSAGE_TYPES)}
_KIND_CODE = {name: k + 1 for k, name in enumerate(ENTRY_KINDS)}


class _Encoder:
    """Flattens a batch of traces into the integer tables described above."""

    def __init__(self) -> None:
        self.events: list[int] = []
        self.messages: list[int] = []
        self.entries: list[int] = []
        self.states: list[int] = []
        self._state_ids: dict[tuple[int, ...], int] = {}
        self.configs: dict[tuple[int, ...], int] = {}
        self._message_ids: dict[tuple[int, ...], int] = {}

    def config(self, nodes: Iterable[int]) -> int:
        key = tuple(sorted(nodes))
        if key not in self.configs:
            self.configs[key] = len(self.configs) + 1
        return self.configs[key]

    def message(self, msg: Mapping[str, Any]) -> int:
        """The message's 1-based index in the table, adding it unless an equal one is there."""
        mtype = msg["type"]
        entries: tuple[int, ...] = ()
        fields: list[int]
        if mtype in ("RequestVote", "PreVote"):
            fields = [msg["last_log_term"], msg["last_log_index"]]
        elif mtype in ("RequestVoteResponse", "PreVoteResponse"):
            fields = [int(msg["vote_granted"])]
        elif mtype == "AppendEntries":
            flat: list[int] = []
            for entry in msg["entries"]:
                members = self.config(entry[2]) if entry[1] == "config" else 0
                flat.extend((entry[0], _KIND_CODE[entry[1]], members))
            entries = tuple(flat)
            fields = [msg["prev_log_index"], msg["prev_log_term"], msg["leader_commit"]]
        elif mtype == "AppendEntriesResponse":
            fields = [int(msg["success"]), msg["match_index"]]
        elif mtype == "InstallSnapshot":
            fields = [msg["snapshot_index"], msg["snapshot_term"], self.config(msg["config"])]
        else:
            assert mtype == "InstallSnapshotResponse", mtype
            fields = [msg["match_index"]]
        head = (_TYPE_CODE[mtype], msg["src"], msg["dst"], msg["term"], *fields)
        key = (*head, -1, *entries)
        known = self._message_ids.get(key)
        if known is not None:
            return known
        row = list(head)
        if mtype == "AppendEntries":
            row.extend((len(self.entries) // ENTRY_WIDTH + 1, len(entries) // ENTRY_WIDTH))
            self.entries.extend(entries)
        row.extend([0] * (MESSAGE_WIDTH - len(row)))
        assert len(row) == MESSAGE_WIDTH
        self.messages.extend(row)
        index = len(self.messages) // MESSAGE_WIDTH
        self._message_ids[key] = index
        return index

    def state(self, state: Mapping[str, Any]) -> int:
        """The state's 1-based index in the table, adding it unless an equal one is there."""
        voted_for = state["voted_for"]
        vote = 0 if voted_for is None else voted_for
        if vote >= VOTE_RADIX:
            raise ConformanceError(f"node id {vote} is above the checker's limit {VOTE_RADIX - 1}")
        config = self.config(state["config"])
        if config > CONFIGS_MAX:
            raise ConformanceError(f"more than {CONFIGS_MAX} distinct configurations in one batch")
        row = (
            state["term"],
            _ROLE_CODE[state["role"]] + ROLE_RADIX * vote + ROLE_RADIX * VOTE_RADIX * config,
            state["commit_index"],
            state["last_index"],
            state["last_term"],
            state["snapshot_index"],
            state["snapshot_term"],
        )
        assert len(row) == STATE_WIDTH
        known = self._state_ids.get(row)
        if known is not None:
            return known
        self.states.extend(row)
        index = len(self.states) // STATE_WIDTH
        self._state_ids[row] = index
        return index

    def event(self, event: TraceEvent) -> None:
        if event.node >= 2**31 // ACTION_RADIX:
            raise ConformanceError(f"node id {event.node} is above the checker's limit")
        msg = self.message(event.msg) if event.msg is not None else 0
        if event.state is None:
            assert event.action in NETWORK_ACTIONS
            state = 0
        else:
            state = self.state(event.state)
        self.events.extend((_ACTION_CODE[event.action] + ACTION_RADIX * event.node, msg, state))


def _chunked(name: str, ints: list[int], files: dict[str, str]) -> str:
    """Writes `ints` as chunk modules; returns the TLA+ expression that concatenates them."""
    if not ints:
        return "<< >>"
    parts: list[str] = []
    for start in range(0, len(ints), CHUNK_INTS):
        module = f"TraceData{len(files) + 1}"
        body = ",".join(str(v) for v in ints[start : start + CHUNK_INTS])
        # Line breaks every 40 values keep SANY's line-oriented scans cheap.
        lines = []
        values = body.split(",")
        for k in range(0, len(values), 40):
            lines.append(",".join(values[k : k + 40]))
        files[f"{module}.tla"] = (
            f"---- MODULE {module} ----\n\\* {name}, generated; do not edit.\n"
            f"{module}V == <<\n" + ",\n".join(lines) + "\n>>\n====\n"
        )
        parts.append(f"{module}V")
    return " \\o ".join(parts)


def _names(values: Iterable[str]) -> str:
    return "<<" + ", ".join(f'"{v}"' for v in values) + ">>"


def trace_data_module(traces: Sequence[Trace], stuck_at: Sequence[int] | None = None) -> dict[str, str]:
    """The generated modules for one batch (all traces share servers and config), as
    file name -> text: `TraceData.tla` and the chunks `TraceDataK.tla` it extends.

    `stuck_at[k]` (1-based event index, 0 = none) turns on the diagnosis of trace k+1.
    """
    assert traces, "a batch holds at least one trace"
    servers = traces[0].header.nodes
    config = traces[0].header.config
    for trace in traces:
        assert set(trace.header.nodes) == set(servers), "a batch shares its servers"
        assert set(trace.header.config) == set(config), "a batch shares its initial config"
    if stuck_at is None:
        stuck_at = [0] * len(traces)
    assert len(stuck_at) == len(traces)
    encoder = _Encoder()
    starts: list[int] = []
    for trace in traces:
        assert trace.events, "a trace has at least one event"
        starts.append(len(encoder.events) // EVENT_WIDTH)
        for event in trace.events:
            encoder.event(event)
    files: dict[str, str] = {}
    events = _chunked("events", encoder.events, files)
    messages = _chunked("messages", encoder.messages, files)
    entries = _chunked("entries", encoder.entries, files)
    states = _chunked("states", encoder.states, files)
    configs = "<<" + ", ".join(_tla_set(c) for c in encoder.configs) + ">>"
    extends = ", ".join(["Sequences", *(n.removesuffix(".tla") for n in files)])
    files["TraceData.tla"] = (
        "---- MODULE TraceData ----\n"
        "\\* Generated by checker/conformance.py from NDJSON traces; do not edit.\n"
        f"EXTENDS {extends}\n"
        f"TraceServer == {_tla_set(servers)}\n"
        f"TraceInitConfig == {_tla_set(config)}\n"
        f"TraceStuckAt == <<{', '.join(str(s) for s in stuck_at)}>>\n"
        f"TraceStarts == <<{', '.join(str(s) for s in starts)}>>\n"
        f"TraceLens == <<{', '.join(str(len(t.events)) for t in traces)}>>\n"
        f"TraceEventInts == {events}\n"
        f"TraceMsgInts == {messages}\n"
        f"TraceEntryInts == {entries}\n"
        f"TraceStateInts == {states}\n"
        f"TraceConfigs == {configs}\n"
        f"TraceActionNames == {_names(ACTIONS)}\n"
        f"TraceRoleNames == {_names(ROLES)}\n"
        f"TraceMsgTypeNames == {_names(_MESSAGE_TYPES)}\n"
        f"TraceKindNames == {_names(ENTRY_KINDS)}\n"
        f"TraceEventWidth == {EVENT_WIDTH}\n"
        f"TraceStateWidth == {STATE_WIDTH}\n"
        f"TraceActionRadix == {ACTION_RADIX}\n"
        f"TraceVoteRadix == {VOTE_RADIX}\n"
        f"TraceRoleRadix == {ROLE_RADIX}\n"
        f"TraceMsgWidth == {MESSAGE_WIDTH}\n"
        f"TraceEntryWidth == {ENTRY_WIDTH}\n"
        "====\n"
    )
    return files


# -- running TLC ----------------------------------------------------------------------------

_REACHED_RE = re.compile(r'^<<"reached", (\d+), (\d+)>>$')
_ACCEPTED_RE = re.compile(r'^<<"accepted", (\d+)>>$')
_DIAG_RE = re.compile(r'^<<"diag", (\d+), (\d+), (.*)>>$')
_DISABLED_RE = re.compile(r'^<<"disabled", (\d+), (\d+), "([^"]*)">>$')
_DISTINCT_RE = re.compile(r"(\d[\d,]*) states generated, (\d[\d,]*) distinct states found")


@attrs.frozen
class _RunResult:
    exit_code: int
    output: str
    reached: dict[int, int]
    accepted: frozenset[int]
    diag: dict[int, list[str]]
    disabled: dict[int, str]
    distinct_states: int
    seconds: float


def _spec_files(workdir: Path) -> None:
    """Copies the Raft specs (and shared modules) into the run's directory."""
    root = specs_dir()
    for folder in (root / "raft", root / "common"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.tla")):
            shutil.copyfile(path, workdir / path.name)
        for path in sorted(folder.glob("Trace*.cfg")):
            shutil.copyfile(path, workdir / path.name)


def _run_tlc(workdir: Path, cfg: str, timeout_s: float) -> _RunResult:
    """Runs TLC on TraceRaft.tla in `workdir`. Java and the jar are found by checker.tlc;
    the run itself is ours because its JVM flags matter here (see below) and
    `checker.tlc.run_tlc` fixes them."""
    metadir = tempfile.mkdtemp(prefix="states-", dir=workdir)
    cmd = [
        find_java(),
        # Measured on trace batches: C1 only and the serial collector halve TLC's CPU time
        # (C2's compile threads and parallel GC cost more than they return in a short run).
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Xss16m",
        "-cp",
        str(tla2tools_jar()),
        "tlc2.TLC",
        "-deadlock",
        "-workers",
        "1",
        "-metadir",
        metadir,
        "-config",
        cfg,
        "TraceRaft.tla",
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        raise ConformanceError(f"TLC did not finish within {timeout_s:.0f} s", out) from None
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    reached: dict[int, int] = {}
    accepted: set[int] = set()
    diag: dict[int, list[str]] = {}
    disabled: dict[int, str] = {}
    distinct = 0
    for line in output.splitlines():
        line = line.strip()
        if m := _REACHED_RE.match(line):
            t, lvl = int(m.group(1)), int(m.group(2))
            reached[t] = max(reached.get(t, 0), lvl)
        elif m := _ACCEPTED_RE.match(line):
            accepted.add(int(m.group(1)))
        elif m := _DIAG_RE.match(line):
            names = re.findall(r'"([a-z_]+)"', m.group(3))
            diag.setdefault(int(m.group(1)), []).append(",".join(names))
        elif m := _DISABLED_RE.match(line):
            disabled[int(m.group(1))] = m.group(3)
        elif m := _DISTINCT_RE.search(line):
            distinct = int(m.group(2).replace(",", ""))
    return _RunResult(
        exit_code=proc.returncode,
        output=output,
        reached=reached,
        accepted=frozenset(accepted),
        diag=diag,
        disabled=disabled,
        distinct_states=distinct,
        seconds=seconds,
    )


def _run_batch(
    traces: Sequence[Trace], stuck_at: Sequence[int] | None, timeout_s: float, stats: CheckStats
) -> _RunResult:
    with tempfile.TemporaryDirectory(prefix="mox-trace-") as tmp:
        workdir = Path(tmp)
        _spec_files(workdir)
        for name, text in trace_data_module(traces, stuck_at).items():
            (workdir / name).write_text(text, encoding="utf-8")
        # The single-trace mode's "violation" makes TLC print the whole behaviour, which
        # costs more than checking it for long traces: long ones go the batch way.
        single = len(traces) == 1 and stuck_at is None and len(traces[0].events) <= SINGLE_MODE_EVENTS_MAX
        if single:
            cfg = "TraceRaft.cfg"
        elif stuck_at is None:
            cfg = "TraceRaftBatch.cfg"
        else:
            cfg = "TraceRaftDiag.cfg"
        if not (workdir / cfg).is_file():
            raise ConformanceError(f"specs/raft/{cfg} is missing")
        result = _run_tlc(workdir, cfg, timeout_s)
    stats.tlc_runs += 1
    stats.tlc_seconds += result.seconds
    stats.distinct_states += result.distinct_states
    if single:
        # Exit 12: NotAccepted violated = the trace reached its end. Exit 0: stuck.
        if result.exit_code == 12 and "NotAccepted" in result.output:
            return attrs.evolve(result, accepted=frozenset({1}))
        if result.exit_code == 0:
            return attrs.evolve(result, accepted=frozenset())
    elif result.exit_code == 0:
        return result
    raise ConformanceError(f"TLC exited with code {result.exit_code}", result.output)


# -- verdicts -------------------------------------------------------------------------------


def _verdict_accepted(trace: Trace) -> TraceVerdict:
    return TraceVerdict(path=trace.path, events=len(trace.events), accepted=True, seed=trace.header.seed)


def _verdict_rejected(trace: Trace, stuck: int, mismatches: Sequence[str], disabled: str | None) -> TraceVerdict:
    """`stuck` is the 1-based index of the first event no behaviour could take."""
    assert 1 <= stuck <= len(trace.events)
    event = trace.events[stuck - 1]
    if mismatches:
        reason = (
            f"the spec's {event.action} cannot produce the observed "
            + ", ".join(mismatches)
        )
    elif disabled is not None:
        reason = f"the spec's {event.action} is not enabled here ({disabled})"
    else:
        reason = (
            f"the spec's {event.action} is not enabled in any state the trace reaches "
            "before this line (one of its preconditions is false)"
        )
    return TraceVerdict(
        path=trace.path,
        events=len(trace.events),
        accepted=False,
        seed=trace.header.seed,
        line_no=event.line_no,
        event_index=stuck - 1,
        action=event.action,
        node=event.node,
        mismatches=tuple(mismatches),
        reason=reason,
    )


def _smallest_mismatch(candidates: list[str]) -> list[str]:
    """Among the spec's possible successors, the one closest to the observation explains best."""
    best: list[str] | None = None
    for candidate in candidates:
        names = [n for n in candidate.split(",") if n]
        if best is None or len(names) < len(best):
            best = names
    return best or []


def _check_batch(
    traces: Sequence[Trace], timeout_s: float, stats: CheckStats, diagnose: bool
) -> list[TraceVerdict]:
    result = _run_batch(traces, None, timeout_s, stats)
    rejected = [k for k in range(len(traces)) if (k + 1) not in result.accepted]
    # `reached` is the index of the next line to match in the furthest state.
    stuck = {k: max(1, min(result.reached.get(k + 1, 1), len(traces[k].events))) for k in rejected}
    diag: dict[int, list[str]] = {}
    disabled: dict[int, str] = {}
    if diagnose and rejected:
        # Only the rejected traces, without VIEW: confirms each rejection by a search that
        # merges no states, and prints what the stuck line's action could not produce.
        again = [traces[k] for k in rejected]
        second = _run_batch(again, [stuck[k] for k in rejected], timeout_s, stats)
        confirmed = []
        for position, k in enumerate(rejected):
            t = position + 1
            if t in second.accepted:
                continue
            confirmed.append(k)
            stuck[k] = max(stuck[k], min(second.reached.get(t, 1), len(traces[k].events)))
            diag[k] = second.diag.get(t, [])
            if t in second.disabled:
                disabled[k] = second.disabled[t]
        rejected = confirmed
    verdicts = []
    for k, trace in enumerate(traces):
        if k not in stuck or k not in rejected:
            verdicts.append(_verdict_accepted(trace))
            continue
        verdicts.append(_verdict_rejected(trace, stuck[k], _smallest_mismatch(diag.get(k, [])), disabled.get(k)))
    return verdicts


def check_loaded(
    traces: Sequence[Trace],
    *,
    batch_size: int = BATCH_SIZE_DEFAULT,
    timeout_s: float = TLC_TIMEOUT_S_DEFAULT,
    diagnose: bool = True,
    stats: CheckStats | None = None,
) -> list[TraceVerdict]:
    """Checks loaded traces with TLC, one run per batch; verdicts in the order given."""
    assert batch_size >= 1
    stats = stats if stats is not None else CheckStats()
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = {}
    for index, trace in enumerate(traces):
        key = (tuple(sorted(trace.header.nodes)), tuple(sorted(trace.header.config)))
        groups.setdefault(key, []).append(index)
    verdicts: list[TraceVerdict | None] = [None] * len(traces)
    for indexes in groups.values():
        for start in range(0, len(indexes), batch_size):
            chunk = indexes[start : start + batch_size]
            batch = [traces[k] for k in chunk]
            for k, verdict in zip(chunk, _check_batch(batch, timeout_s, stats, diagnose), strict=True):
                verdicts[k] = verdict
    stats.traces += len(traces)
    stats.events += sum(len(t.events) for t in traces)
    out = [v for v in verdicts if v is not None]
    assert len(out) == len(traces)
    return out


def check_traces(
    paths: Iterable[str | os.PathLike[str]],
    *,
    batch_size: int = BATCH_SIZE_DEFAULT,
    diagnose: bool = True,
    stats: CheckStats | None = None,
) -> list[TraceVerdict]:
    """Loads (schema-checks) and checks every trace under `paths` (files or directories).

    Raises `TracePathError` for a missing path, `TraceFormatError` for a malformed line
    (naming file and line), `ConformanceError` if TLC cannot run. Verdicts are in sorted
    path order.
    """
    traces = [load_trace(p) for p in find_traces(paths)]
    return check_loaded(traces, batch_size=batch_size, diagnose=diagnose, stats=stats)
