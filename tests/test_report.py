"""The auditor's report on hand-made facts: JSON and HTML say the same things, the HTML is
self-contained, and headless Chromium renders every section and the space-time diagram."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from checker.report import (
    SECTION_IDS,
    ConformanceSummary,
    Invariant,
    ReportData,
    SimulationCoverage,
    TlcModelResult,
    TraceResult,
    counterexample_from_events,
    extract_invariants,
    render_html,
    render_space_time_svg,
    report_json,
    write_report,
)

RV = {"type": "RequestVote", "src": 1, "dst": 2, "term": 1, "last_log_term": 0, "last_log_index": 0}
RVR = {"type": "RequestVoteResponse", "src": 2, "dst": 1, "term": 1, "vote_granted": True}
AE = {"type": "AppendEntries", "src": 1, "dst": 3, "term": 1, "prev_log_index": 0, "prev_log_term": 0, "entries": [], "leader_commit": 0}
EVENTS = [
    {"node": 1, "action": "Timeout", "state": {"term": 1, "role": "candidate"}},
    {"node": 1, "action": "RequestVote", "msg": RV, "state": {"term": 1}},
    {"node": 2, "action": "UpdateTerm", "msg": RV, "state": {"term": 1}},
    {"node": 2, "action": "HandleRequestVoteRequest", "msg": RV, "state": {"term": 1, "voted_for": 1}},
    {"node": 1, "action": "HandleRequestVoteResponse", "msg": RVR, "state": {"term": 1}},
    {"node": 1, "action": "BecomeLeader", "state": {"term": 1, "role": "leader"}},
    {"node": 1, "action": "AppendEntries", "msg": AE, "state": {"term": 1}},
    {"node": 3, "action": "DropMessage", "msg": AE},
]


def _data() -> ReportData:
    cx = counterexample_from_events(
        "rejected: traces/x.ndjson", "line 7: <script>alert(1)</script>", [1, 2, 3], EVENTS, highlight_index=5
    )
    return ReportData(
        title="Mox invariant report",
        generated="2026-11-29T00:00:00Z",
        invariants=(Invariant("Raft", "ElectionSafety", "At most one leader per term."),),
        tlc=(
            TlcModelResult("Raft", "MCRaftElection", "ok", 1200, 345, 17, 3.5, 345),
            TlcModelResult("Raft", "MCRaftBroken", "violation", 10, 9, 4, 1.0, None, "ElectionSafety"),
        ),
        conformance=ConformanceSummary(
            traces=(
                TraceResult("a.ndjson", 120, True, seed=1),
                TraceResult("b.ndjson", 30, False, seed=2, line_no=7, action="BecomeLeader", reason="term"),
            ),
            tlc_runs=2,
            duration_s=4.25,
        ),
        simulation=SimulationCoverage(
            seeds=(1, 2, 3), faults_by_kind={"drop": 17, "crash": 2}, invariant_checks=9001,
            events_by_action={"Timeout": 5},
        ),
        failures=(cx,),
    )


def test_counterexample_links_sends_to_receipts() -> None:
    cx = counterexample_from_events("t", "r", [1, 2, 3], EVENTS)
    assert cx.nodes == (1, 2, 3)
    assert len(cx.steps) == len(EVENTS)
    assert cx.steps[7].node is None  # the network's step
    by_label = {(m.label, m.received_at): m for m in cx.messages}
    # The request is drawn from its send (step index 1) to its handling (index 3).
    assert by_label[("RequestVote", 3)].sent_at == 1
    # The response's send is not a line of its own: it starts at the handler of the request.
    assert by_label[("RequestVoteResponse", 4)].sent_at == 3
    dropped = by_label[("AppendEntries", 7)]
    assert dropped.dropped and dropped.sent_at == 6


def test_json_carries_the_facts() -> None:
    facts = report_json(_data())
    assert facts["conformance"]["traces_checked"] == 2
    assert facts["conformance"]["events"] == 150
    assert (facts["conformance"]["accepted"], facts["conformance"]["rejected"]) == (1, 1)
    assert facts["simulation"]["seeds"] == 3
    assert facts["simulation"]["faults_by_kind"] == {"drop": 17, "crash": 2}
    assert facts["tlc"][1]["result"] == "violation"
    assert facts["failures"][0]["steps"][5]["highlight"] is True
    json.dumps(facts)  # plain JSON values only


def test_html_is_self_contained_and_escaped() -> None:
    page = render_html(_data())
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page
    assert "<script>" not in page  # user text is escaped
    assert "&lt;script&gt;" in page
    # Nothing is fetched: no src/href attributes, no url() except the SVG's own marker.
    assert not re.search(r"\s(src|href)=", page)
    assert re.findall(r"url\(([^)]*)\)", page) == ["#arrow"] * page.count('marker-end="url(#arrow)"')
    assert "9,001" in page  # invariant checks, formatted


def test_svg_has_a_lane_per_node_and_marks_the_failing_step() -> None:
    svg = render_space_time_svg(counterexample_from_events("t", "r", [1, 2, 3], EVENTS, highlight_index=5))
    assert svg.count(">node ") == 3
    assert 'fill="#b00"' in svg  # failing step and the lost message
    assert svg.count('marker-end="url(#arrow)"') == 2  # RequestVote and its response
    assert "stroke-dasharray" in svg  # the dropped AppendEntries


def test_extract_invariants_reads_the_comment_above(tmp_path: Path) -> None:
    spec = tmp_path / "S.tla"
    spec.write_text(
        "---- MODULE S ----\n"
        "\\* At most one leader per term. More words here.\n"
        "ElectionSafety == TRUE\n"
        "(* Logs agree\n   up to a common entry. *)\n"
        "LogMatching == TRUE\n"
        "Bare == TRUE\n====\n"
    )
    found = {i.name: i.meaning for i in extract_invariants(spec, ["ElectionSafety", "LogMatching", "Bare"])}
    assert found["ElectionSafety"] == "At most one leader per term."
    assert found["LogMatching"] == "Logs agree up to a common entry."
    assert found["Bare"] == "(no comment in the spec)"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian package chromium is not installed")
def test_chromium_renders_every_section(tmp_path: Path) -> None:
    html_path, json_path = write_report(_data(), tmp_path / "out")
    assert json.loads(json_path.read_text())["title"] == "Mox invariant report"
    dom = _chromium_dom(html_path, tmp_path / "profile")
    # The parsed DOM (not our source text) has every section, the table rows and the SVG.
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in dom
    assert "<svg" in dom and "</svg>" in dom
    assert 'class="hl"' in dom
    assert dom.count("<tr>") + dom.count('<tr class="hl">') >= len(EVENTS) + 6
    assert "MCRaftElection" in dom


def _chromium_dom(html_path: Path, profile: Path) -> str:
    """The DOM headless Chromium built from the page. /dev/shm is small in CI containers
    (64 MiB in Docker) and Chromium crashes its renderer when it runs out: use /tmp."""
    chromium = _chromium()
    assert chromium is not None
    result = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
            "--dump-dom", html_path.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_tlc_counterexample_becomes_steps_and_arrows() -> None:
    """A real TLC error trace (the manifest's broken-quorum model) read into a counterexample."""
    from checker.conformance import specs_dir
    from checker.report import counterexample_from_states
    from checker.tlc import load_manifest, parse_value, run_model

    [entry] = [e for e in load_manifest(specs_dir() / "manifest.json") if e.name == "MCRaftBugQuorum"]
    result = run_model(entry)
    assert result.violated == "ElectionSafety"
    states = [(s.action, {k: parse_value(v) for k, v in s.variables.items()}) for s in result.counterexample]
    cx = counterexample_from_states("TLC", "ElectionSafety", states)
    assert cx.nodes == (1, 2, 3)
    assert len(cx.steps) == len(result.counterexample)
    assert cx.steps[0].action == "Initial predicate"
    assert cx.steps[-1].highlight
    # Every step after the first is done by some server (a term, role or vote changed).
    assert all(step.node in (1, 2, 3) for step in cx.steps[1:])
    assert "currentTerm=" in cx.steps[1].state
    svg = render_space_time_svg(cx)
    assert svg.count(">node ") == 3


def _mox(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "mox.cli", *args], capture_output=True, text=True, check=False, timeout=600)


@pytest.mark.skipif(_chromium() is None, reason="Debian package chromium is not installed")
def test_report_command_end_to_end(tmp_path: Path) -> None:
    corpus = Path(__file__).resolve().parent.parent / "traces" / "raft"
    rejected = corpus / "rejected" / "mutant-no_step_down_on_higher_term.ndjson"
    accepted = corpus / "accepted" / "scenario-election.ndjson"
    out = tmp_path / "report"
    result = _mox(
        "report", "--sim-seeds", "1..2", "--faults", "loss,duplicate", "--duration-s", "0.2",
        "--traces", str(rejected), "--traces", str(accepted), "--out", str(out),
    )
    # A rejected trace is a failure: exit 1, report written anyway.
    assert result.returncode == 1, result.stderr
    assert "1 failure(s)" in result.stdout
    facts = json.loads((out / "report.json").read_text())
    assert facts["conformance"]["traces_checked"] == 4  # 2 given + 2 simulated
    assert facts["conformance"]["rejected"] == 1
    assert facts["simulation"]["seeds"] == 2
    assert facts["simulation"]["invariant_checks"] > 0
    assert any(i["name"] == "ElectionSafety" and "leader" in i["meaning"] for i in facts["invariants"])
    assert any(row["model"] == "MCRaftElection" for row in facts["tlc"])
    [failure] = facts["failures"]
    assert "UpdateTerm" in failure["title"]
    assert failure["steps"][-1]["action"] == "UpdateTerm" and failure["steps"][-1]["highlight"]
    dom = _chromium_dom(out / "report.html", tmp_path / "profile")
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in dom
    assert "mutant-no_step_down_on_higher_term.ndjson" in dom
    assert "<svg" in dom


def test_report_command_bad_flags(tmp_path: Path) -> None:
    result = _mox("report", "--sim-seeds", "5..1", "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "--sim-seeds" in result.stderr and "empty" in result.stderr
    result = _mox("report", "--traces", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr
