"""The auditor's report: the facts as JSON, and the same facts as one self-contained HTML page.

The page loads nothing from anywhere (inline CSS, inline SVG, no script), so it opens in a
closed network and can be archived as one file. It has five sections, each with a stable
`id` (tests and readers find them by it): `invariants`, `tlc`, `conformance`, `simulation`,
`failures`. A failure (a rejected trace, a TLC counterexample) is shown twice: as a step table
(one row per action: node, action, message, state after) and as a space-time diagram (one
vertical lane per node, time downwards, an arrow per message from its sender to its receiver,
a cross for a message the network lost).

Building the facts (running TLC, simulating, checking) is `checker.report_cli`'s job; this
module only turns `ReportData` into JSON and HTML, so it can be tested on hand-made inputs.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "ConformanceSummary",
    "Counterexample",
    "Invariant",
    "Message",
    "ReportData",
    "SimulationCoverage",
    "Step",
    "TlcModelResult",
    "TraceResult",
    "counterexample_from_events",
    "counterexample_from_states",
    "extract_invariants",
    "render_html",
    "render_space_time_svg",
    "report_json",
    "write_report",
]

SECTION_IDS: tuple[str, ...] = ("invariants", "tlc", "conformance", "simulation", "failures")


@attrs.frozen
class Invariant:
    """One invariant of a spec, with its meaning in one sentence (the comment above it)."""

    spec: str
    name: str
    meaning: str


@attrs.frozen
class TlcModelResult:
    """One TLC run of one model: what was expected (manifest) and what happened."""

    spec: str
    model: str
    result: str  # "ok", "violation", "error", or "not run"
    states_generated: int | None = None
    distinct_states: int | None = None
    depth: int | None = None
    duration_s: float | None = None
    expected_distinct_states: int | None = None
    detail: str = ""


@attrs.frozen
class TraceResult:
    """The verdict on one trace."""

    path: str
    events: int
    accepted: bool
    seed: int | None = None
    # For a rejection: the first line no behaviour of the spec can take, and why.
    line_no: int | None = None
    action: str | None = None
    reason: str = ""


@attrs.frozen
class ConformanceSummary:
    traces: tuple[TraceResult, ...]
    tlc_runs: int = 0
    duration_s: float = 0.0

    @property
    def events(self) -> int:
        return sum(t.events for t in self.traces)

    @property
    def accepted(self) -> int:
        return sum(1 for t in self.traces if t.accepted)

    @property
    def rejected(self) -> int:
        return sum(1 for t in self.traces if not t.accepted)


@attrs.frozen
class SimulationCoverage:
    """What the simulated runs exercised."""

    seeds: tuple[int, ...]
    faults_by_kind: Mapping[str, int]
    invariant_checks: int
    events_by_action: Mapping[str, int] = attrs.field(factory=dict)
    failed_seeds: tuple[int, ...] = ()


@attrs.frozen
class Message:
    """A message between two steps of a counterexample (indexes into `Counterexample.steps`).

    `sent_at` is None when the sending step is not in the trace (e.g. a response whose
    sender does not log sends): the arrow then starts at the top of the sender's lane.
    `received_at` is None for a message still in flight at the end; `dropped` marks a loss.
    """

    src: int
    dst: int
    label: str
    sent_at: int | None
    received_at: int | None
    dropped: bool = False


@attrs.frozen
class Step:
    """One row of a step table: a node (None for the network) performs an action."""

    node: int | None
    action: str
    message: str = ""
    state: str = ""
    highlight: bool = False


@attrs.frozen
class Counterexample:
    """A failure made readable: a title, why, the steps, and the messages between nodes."""

    title: str
    reason: str
    nodes: tuple[int, ...]
    steps: tuple[Step, ...]
    messages: tuple[Message, ...]


@attrs.frozen
class ReportData:
    title: str
    generated: str
    invariants: tuple[Invariant, ...] = ()
    tlc: tuple[TlcModelResult, ...] = ()
    conformance: ConformanceSummary | None = None
    simulation: SimulationCoverage | None = None
    failures: tuple[Counterexample, ...] = ()


# -- facts from the specs -------------------------------------------------------------------

_DEF_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?\s*==")


def extract_invariants(spec_path: Path, names: Sequence[str]) -> list[Invariant]:
    """Finds each named definition in a .tla file and takes its meaning from the comment
    right above it (`\\* ...` lines or a `(* ... *)` block), first sentence only.

    A name without a comment gets an honest "(no comment in the spec)".
    """
    lines = spec_path.read_text(encoding="utf-8").splitlines()
    found: list[Invariant] = []
    for name in names:
        meaning = "(no comment in the spec)"
        for index, line in enumerate(lines):
            m = _DEF_RE.match(line)
            if m is None or m.group(1) != name:
                continue
            comment = _comment_above(lines, index)
            if comment:
                meaning = _first_sentence(comment)
            break
        found.append(Invariant(spec=spec_path.stem, name=name, meaning=meaning))
    return found


def _comment_above(lines: list[str], index: int) -> str:
    parts: list[str] = []
    k = index - 1
    if k >= 0 and lines[k].rstrip().endswith("*)"):
        while k >= 0:
            parts.insert(0, lines[k])
            if "(*" in lines[k]:
                break
            k -= 1
        text = " ".join(parts)
        text = text.replace("(*", " ").replace("*)", " ")
        return " ".join(text.replace("*", " ").split())
    while k >= 0 and lines[k].lstrip().startswith("\\*"):
        parts.insert(0, lines[k].lstrip()[2:].strip())
        k -= 1
    return " ".join(p for p in parts if p)


def _first_sentence(text: str) -> str:
    m = re.search(r"(.+?[.!?])(\s|$)", text)
    return (m.group(1) if m else text).strip()


# -- counterexamples from traces ------------------------------------------------------------

_SEND_ACTIONS = {"RequestVote", "PreVote", "AppendEntries", "SendSnapshot"}
_RECEIVE_ACTIONS = {
    "HandleRequestVoteRequest",
    "HandleRequestVoteResponse",
    "HandleAppendEntriesRequest",
    "HandleAppendEntriesResponse",
    "HandleInstallSnapshotRequest",
    "HandleInstallSnapshotResponse",
    "DropStaleMessage",
    "HandlePreVoteRequest",
    "HandlePreVoteResponse",
    "DropVoteRequestInLease",
    "HandleStaleAppendEntries",
}


def _message_label(msg: Mapping[str, Any]) -> str:
    skip = {"type", "src", "dst"}
    fields = ", ".join(f"{k}={_compact(v)}" for k, v in msg.items() if k not in skip)
    return f"{msg.get('type', '?')} {msg.get('src', '?')}→{msg.get('dst', '?')} ({fields})"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def _state_label(state: Mapping[str, Any] | None) -> str:
    if state is None:
        return ""
    return ", ".join(f"{k}={_compact(v)}" for k, v in state.items())


def _msg_key(msg: Mapping[str, Any]) -> str:
    return json.dumps(msg, sort_keys=True, separators=(",", ":"))


def counterexample_from_events(
    title: str,
    reason: str,
    nodes: Sequence[int],
    events: Sequence[Mapping[str, Any]],
    highlight_index: int | None = None,
) -> Counterexample:
    """Builds the step table and the message arrows from trace events (dicts shaped like
    NDJSON trace lines: node, action, msg, state).

    A received message is matched to the latest earlier send of an identical message; a
    response (whose send is not an action of its own) to the sender's latest earlier step
    that handled a request from the receiver.
    """
    steps: list[Step] = []
    messages: list[Message] = []
    sends: dict[str, int] = {}
    last_request_from: dict[tuple[int, int], int] = {}
    for index, event in enumerate(events):
        action = str(event.get("action", "?"))
        node = event.get("node")
        msg = event.get("msg")
        network = action in ("DropMessage", "DuplicateMessage")
        steps.append(
            Step(
                node=None if network else (int(node) if node is not None else None),
                action=action,
                message=_message_label(msg) if isinstance(msg, Mapping) else "",
                state=_state_label(event.get("state")),
                highlight=index == highlight_index,
            )
        )
        if not isinstance(msg, Mapping) or "src" not in msg or "dst" not in msg:
            continue
        src, dst = int(msg["src"]), int(msg["dst"])
        key = _msg_key(msg)
        if action in _SEND_ACTIONS:
            sends[key] = index
            continue
        if action in _RECEIVE_ACTIONS or network or action == "UpdateTerm":
            if action == "UpdateTerm":
                # The message is handled by the next line; draw its arrow there.
                continue
            sent_at = sends.get(key)
            if sent_at is None:
                sent_at = last_request_from.get((src, dst))
            messages.append(
                Message(
                    src=src,
                    dst=dst,
                    label=str(msg.get("type", "?")),
                    sent_at=sent_at,
                    received_at=index,
                    dropped=action == "DropMessage",
                )
            )
            if action.endswith("Request"):
                last_request_from[(dst, src)] = index
    node_ids = tuple(sorted(set(nodes)))
    return Counterexample(
        title=title,
        reason=reason,
        nodes=node_ids,
        steps=tuple(steps),
        messages=tuple(messages),
    )


def _node_number(key: Any, order: Mapping[str, int]) -> int:
    return order.get(str(key), 0)


def counterexample_from_states(
    title: str,
    reason: str,
    states: Sequence[tuple[str, Mapping[str, Any]]],
) -> Counterexample:
    """Builds a counterexample from a TLC error trace of Raft.tla (or a model over it).

    `states` are (action name, parsed variables) in order. A step's node is the server whose
    per-server variables changed (else the sender of a new message, else the receiver of a
    consumed one); messages are read off the `messages` bag: a message appears when sent
    and disappears when received or lost.
    """
    per_server = ("currentTerm", "state", "votedFor", "log", "commitIndex", "snapshotIndex")
    servers: list[str] = []
    if states and isinstance(states[0][1].get("currentTerm"), Mapping):
        servers = sorted(str(k) for k in states[0][1]["currentTerm"])
    order = {name: k + 1 for k, name in enumerate(servers)}
    steps: list[Step] = []
    messages: list[Message] = []
    in_flight: dict[str, tuple[int, int, str, int]] = {}  # key -> (src, dst, type, sent step)
    previous: Mapping[str, Any] | None = None
    for index, (action, variables) in enumerate(states):
        bag = variables.get("messages")
        current: dict[str, tuple[int, int, str]] = {}
        if isinstance(bag, Mapping):
            for msg in bag:
                if isinstance(msg, Mapping):
                    current[repr(sorted((str(k), repr(v)) for k, v in msg.items()))] = (
                        _node_number(msg.get("msource"), order),
                        _node_number(msg.get("mdest"), order),
                        str(msg.get("mtype", "?")),
                    )
        actor: int | None = None
        if previous is not None:
            for server in servers:
                changed = any(
                    isinstance(variables.get(v), Mapping)
                    and isinstance(previous.get(v), Mapping)
                    and _lookup(variables[v], server) != _lookup(previous[v], server)
                    for v in per_server
                )
                if changed:
                    actor = order[server]
                    break
        sent = [key for key in current if key not in in_flight]
        gone = [key for key in in_flight if key not in current]
        for key in sent:
            src, dst, mtype = current[key]
            in_flight[key] = (src, dst, mtype, index)
            if actor is None:
                actor = src
        for key in gone:
            src, dst, mtype, sent_at = in_flight.pop(key)
            messages.append(Message(src, dst, mtype, sent_at, index))
            if actor is None:
                actor = dst
        summary = ""
        if previous is not None:
            changes = [
                f"{name}={_short(value)}"
                for name, value in variables.items()
                if name != "messages" and previous.get(name) != value
            ]
            summary = "; ".join(changes)
        steps.append(
            Step(
                node=actor,
                action=action,
                message=", ".join(f"sent {current[k][2]} {current[k][0]}→{current[k][1]}" for k in sent),
                state=summary,
                highlight=index == len(states) - 1,
            )
        )
        previous = variables
    for src, dst, mtype, sent_at in in_flight.values():
        messages.append(Message(src, dst, mtype, sent_at, None))
    return Counterexample(
        title=title,
        reason=reason,
        nodes=tuple(range(1, len(servers) + 1)),
        steps=tuple(steps),
        messages=tuple(messages),
    )


def _lookup(function: Mapping[Any, Any], server: str) -> Any:
    for key, value in function.items():
        if str(key) == server:
            return value
    return None


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."


# -- JSON -----------------------------------------------------------------------------------


def report_json(data: ReportData) -> dict[str, Any]:
    """The report's facts as plain JSON values (the HTML shows exactly these)."""
    out: dict[str, Any] = {
        "title": data.title,
        "generated": data.generated,
        "invariants": [attrs.asdict(i) for i in data.invariants],
        "tlc": [attrs.asdict(r) for r in data.tlc],
        "conformance": None,
        "simulation": None,
        "failures": [attrs.asdict(f) for f in data.failures],
    }
    if data.conformance is not None:
        c = data.conformance
        out["conformance"] = {
            "traces_checked": len(c.traces),
            "events": c.events,
            "accepted": c.accepted,
            "rejected": c.rejected,
            "tlc_runs": c.tlc_runs,
            "duration_s": c.duration_s,
            "traces": [attrs.asdict(t) for t in c.traces],
        }
    if data.simulation is not None:
        s = data.simulation
        out["simulation"] = {
            "seeds": len(s.seeds),
            "seed_min": min(s.seeds) if s.seeds else None,
            "seed_max": max(s.seeds) if s.seeds else None,
            "faults_by_kind": dict(s.faults_by_kind),
            "invariant_checks": s.invariant_checks,
            "events_by_action": dict(s.events_by_action),
            "failed_seeds": list(s.failed_seeds),
        }
    return out


# -- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 1.5em;max-width:70em;color:#222;line-height:1.4}
h1{font-size:1.6em} h2{border-bottom:2px solid #ccd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#070;font-weight:bold} .bad{color:#b00;font-weight:bold}
tr.hl td{background:#fdd}
.small{font-size:.8em;color:#555}
code,td.mono{font-family:ui-monospace,monospace;font-size:.85em}
.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{border:1px solid #ccd;border-radius:6px;padding:.5em 1em;min-width:9em}
.card b{display:block;font-size:1.5em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if k in numeric else f"<td>{c}</td>" for k, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _card(label: str, value: str, cls: str = "") -> str:
    return f'<div class="card"><b class="{cls}">{value}</b>{_e(label)}</div>'


def _section_invariants(data: ReportData) -> str:
    if not data.invariants:
        return "<p>No invariants were found (no spec given).</p>"
    rows = [[f"<code>{_e(i.name)}</code>", _e(i.spec), _e(i.meaning)] for i in data.invariants]
    return _table(["invariant", "spec", "meaning"], rows)


def _section_tlc(data: ReportData) -> str:
    if not data.tlc:
        return "<p>TLC was not run for this report (pass <code>--tlc</code>).</p>"
    rows = []
    for r in data.tlc:
        cls = {"ok": "ok", "failed": "bad", "violation": "bad", "error": "bad"}.get(r.result, "")
        rows.append(
            [
                _e(r.spec),
                _e(r.model),
                f'<span class="{cls}">{_e(r.result)}</span>',
                _num(r.states_generated),
                _num(r.distinct_states),
                _num(r.expected_distinct_states),
                _num(r.depth),
                _num(r.duration_s),
                _e(r.detail),
            ]
        )
    return _table(
        ["spec", "model", "result", "states", "distinct", "expected distinct", "depth", "time (s)", "detail"],
        rows,
        numeric={3, 4, 5, 6, 7},
    )


def _section_conformance(data: ReportData) -> str:
    c = data.conformance
    if c is None:
        return "<p>No traces were checked for this report.</p>"
    cards = "".join(
        [
            _card("traces checked", _num(len(c.traces))),
            _card("events", _num(c.events)),
            _card("accepted", _num(c.accepted), "ok"),
            _card("rejected", _num(c.rejected), "bad" if c.rejected else ""),
            _card("TLC runs", _num(c.tlc_runs)),
            _card("seconds", _num(c.duration_s)),
        ]
    )
    rows = []
    for t in c.traces:
        verdict = '<span class="ok">accepted</span>' if t.accepted else '<span class="bad">rejected</span>'
        where = "" if t.accepted else f"line {_num(t.line_no)} ({_e(t.action or '?')}): {_e(t.reason)}"
        rows.append([f"<code>{_e(t.path)}</code>", _num(t.seed), _num(t.events), verdict, where])
    return f'<div class="cards">{cards}</div>' + _table(
        ["trace", "seed", "events", "verdict", "where"], rows, numeric={1, 2}
    )


def _section_simulation(data: ReportData) -> str:
    s = data.simulation
    if s is None:
        return "<p>No simulation was run for this report (pass <code>--sim-seeds A..B</code>).</p>"
    seed_range = f"{min(s.seeds)}..{max(s.seeds)}" if s.seeds else "—"
    cards = "".join(
        [
            _card("seeds", _num(len(s.seeds))),
            _card("seed range", _e(seed_range)),
            _card("invariant checks", _num(s.invariant_checks)),
            _card("failed seeds", _num(len(s.failed_seeds)), "bad" if s.failed_seeds else "ok"),
        ]
    )
    faults = _table(
        ["fault kind", "count"],
        [[_e(k), _num(v)] for k, v in sorted(s.faults_by_kind.items())],
        numeric={1},
    )
    actions = ""
    if s.events_by_action:
        actions = "<h3>Spec actions exercised</h3>" + _table(
            ["action", "events"],
            [[_e(k), _num(v)] for k, v in sorted(s.events_by_action.items())],
            numeric={1},
        )
    return f'<div class="cards">{cards}</div><h3>Faults injected, by kind</h3>{faults}{actions}'


def _section_failures(data: ReportData) -> str:
    if not data.failures:
        return '<p class="ok">No failures: nothing to show.</p>'
    parts = []
    for n, f in enumerate(data.failures):
        rows = []
        for k, step in enumerate(f.steps):
            node = "network" if step.node is None else str(step.node)
            rows.append(
                [_num(k + 1), _e(node), f"<b>{_e(step.action)}</b>", _e(step.message), _e(step.state)]
            )
        table = _table(["step", "node", "action", "message", "state after"], rows, numeric={0})
        # Mark the failing row (the table helper has no row classes; patch the nth <tr>).
        for k, step in enumerate(f.steps):
            if step.highlight:
                table = _mark_row(table, k)
        parts.append(
            f'<div class="failure" id="failure-{n + 1}"><h3>{_e(f.title)}</h3>'
            f'<p class="bad">{_e(f.reason)}</p>{render_space_time_svg(f)}{table}</div>'
        )
    return "".join(parts)


def _mark_row(table: str, row_index: int) -> str:
    body_start = table.index("<tbody>")
    pos = body_start
    for _ in range(row_index + 1):
        pos = table.index("<tr>", pos + 1)
    return table[:pos] + '<tr class="hl">' + table[pos + 4 :]


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document with inline CSS and SVG (no external files)."""
    sections = {
        "invariants": ("Invariants", _section_invariants(data)),
        "tlc": ("TLC model checking", _section_tlc(data)),
        "conformance": ("Trace conformance", _section_conformance(data)),
        "simulation": ("Simulation coverage", _section_simulation(data)),
        "failures": ("Failures and counterexamples", _section_failures(data)),
    }
    body = "".join(
        f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>'
        for sid, (title, content) in sections.items()
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{_e(data.title)}</h1><p class="small">generated {_e(data.generated)}</p>'
        f"{body}</body></html>\n"
    )


# -- SVG space-time diagram -----------------------------------------------------------------

_LANE_GAP_PX = 140
_ROW_GAP_PX = 26
_MARGIN_PX = 40


def render_space_time_svg(cx: Counterexample) -> str:
    """One lane per node, one row per step; messages as arrows from send to receipt.

    The network's own steps (drops, duplicates) sit on the lane of the message's receiver.
    The failing step is circled in red.
    """
    lanes = {node: k for k, node in enumerate(cx.nodes)}
    width = _MARGIN_PX * 2 + _LANE_GAP_PX * max(len(lanes) - 1, 1)
    height = _MARGIN_PX * 2 + _ROW_GAP_PX * (len(cx.steps) + 1)

    def x(node: int) -> int:
        return _MARGIN_PX + _LANE_GAP_PX * lanes.get(node, 0)

    def y(step: int | None) -> int:
        return _MARGIN_PX + _ROW_GAP_PX * ((step + 1) if step is not None else 0)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spacetime" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="space-time diagram">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#336"/></marker></defs>',
    ]
    for node in cx.nodes:
        out.append(
            f'<text x="{x(node)}" y="{_MARGIN_PX - 16}" text-anchor="middle" '
            f'font-weight="bold" font-size="13">node {node}</text>'
        )
        out.append(
            f'<line x1="{x(node)}" y1="{_MARGIN_PX - 8}" x2="{x(node)}" y2="{height - 10}" '
            'stroke="#999" stroke-width="2"/>'
        )
    for m in cx.messages:
        if m.src not in lanes or m.dst not in lanes:
            continue
        # A message still in flight at the end runs to the bottom of the picture.
        y_end = y(m.received_at) if m.received_at is not None else height - 12
        x1, y1, x2, y2 = x(m.src), y(m.sent_at), x(m.dst), y_end
        if m.dropped:
            out.append(
                f'<line x1="{x1}" y1="{y1}" x2="{(x1 + x2) // 2}" y2="{(y1 + y2) // 2}" '
                'stroke="#b00" stroke-width="1.5" stroke-dasharray="4 3"/>'
            )
            cx_, cy_ = (x1 + x2) // 2, (y1 + y2) // 2
            out.append(
                f'<path d="M {cx_ - 5} {cy_ - 5} L {cx_ + 5} {cy_ + 5} M {cx_ - 5} {cy_ + 5} '
                f'L {cx_ + 5} {cy_ - 5}" stroke="#b00" stroke-width="2"/>'
            )
            continue
        out.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#336" stroke-width="1.2" '
            f'marker-end="url(#arrow)"><title>{_e(m.label)} {m.src}→{m.dst}</title></line>'
        )
    for k, step in enumerate(cx.steps):
        actor = step.node
        if actor is None:
            continue
        fill = "#b00" if step.highlight else "#336"
        out.append(f'<circle cx="{x(actor)}" cy="{y(k)}" r="{6 if step.highlight else 4}" fill="{fill}"/>')
        out.append(
            f'<text x="{x(actor) + 8}" y="{y(k) + 4}" font-size="10" fill="{fill}">'
            f"{k + 1}. {_e(step.action)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def write_report(data: ReportData, out_dir: Path) -> tuple[Path, Path]:
    """Writes `report.html` and `report.json` into `out_dir` (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "report.html"
    json_path = out_dir / "report.json"
    html_path.write_text(render_html(data), encoding="utf-8")
    json_path.write_text(json.dumps(report_json(data), indent=2) + "\n", encoding="utf-8")
    return html_path, json_path
