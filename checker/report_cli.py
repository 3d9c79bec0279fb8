"""`mox report`: the auditor's invariant report, as HTML (self-contained) and JSON.

    mox report --sim-seeds 1..20 --traces traces/raft --tlc --out report/

Collects, in this order:
* the invariants: every INVARIANT/PROPERTY the bounded models check (specs/raft/MC*.cfg),
  with the one-sentence meaning from the comment above its definition in the spec, and the
  simulator's checks;
* TLC: each model of specs/manifest.json with its expected result and state count; with
  `--tlc` the CI models are run now and compared with the manifest;
* simulation (`--sim-seeds A..B`): each seed run in simulated time with `--faults`, its
  faults by kind and the invariant checks it performed; its trace goes to OUT/traces/;
* conformance: the traces under `--traces` (repeatable) and those of the simulated seeds,
  checked against Raft.tla by TLC;
* failures: a step table and a space-time diagram for each rejected trace, failed seed and
  unexpected TLC result.

Exit status: 0 when nothing failed, 1 when something did (the report is written either way),
2 for bad flags or paths.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import click

from checker.conformance import CheckStats, TraceVerdict, check_loaded, specs_dir
from checker.report import (
    ConformanceSummary,
    Counterexample,
    Invariant,
    ReportData,
    SimulationCoverage,
    TlcModelResult,
    TraceResult,
    counterexample_from_events,
    counterexample_from_states,
    extract_invariants,
    write_report,
)
from checker.trace import Trace, find_traces, load_trace

__all__ = ["command", "spec_invariants"]

# One sentence per simulator check (mox/sim/invariants.py names them).
SIM_INVARIANTS: dict[str, str] = {
    "election_safety": "At most one node is leader in any term.",
    "log_matching": "Two logs with an entry of the same index and term hold the same entry there and agree on everything before it.",
    "committed_entry_kept": "An entry once committed stays in every log that reaches its index, unchanged.",
    "leader_completeness": "A new leader holds every entry committed before it was elected.",
    "state_machine_safety": "Every replica applies the same entry at the same index.",
    "convergence": "After faults stop, the cluster agrees on one leader, one log and one commit index within a bound.",
    "acknowledged_writes_applied": "Every write acknowledged to a client is applied on every replica.",
    "replica_state_equal": "All replicas end with byte-identical state stores.",
    "linearizability": "The history of client operations is linearizable.",
    "stale_reads": "A read never returns a value older than one the client already saw.",
    "recovery": "A node that restarts recovers from its disk without error.",
    "node_failure": "No node dies of an exception (a failed assertion in the core or storage).",
}

_SECTION_KEYWORDS = frozenset({"INVARIANT", "INVARIANTS", "PROPERTY", "PROPERTIES"})
_OTHER_KEYWORDS = frozenset(
    {"CONSTANT", "CONSTANTS", "INIT", "NEXT", "SPECIFICATION", "CONSTRAINT", "CONSTRAINTS",
     "ACTION_CONSTRAINT", "ACTION_CONSTRAINTS", "SYMMETRY", "VIEW", "ALIAS", "POSTCONDITION",
     "CHECK_DEADLOCK"}
)
_EVENTS_BEFORE_FAILURE = 40


def spec_invariants(spec_root: Path) -> list[Invariant]:
    """Every invariant and property named in specs/raft/MC*.cfg, in first-seen order."""
    names: list[str] = []
    for cfg in sorted((spec_root / "raft").glob("MC*.cfg")):
        in_section = False
        for raw in cfg.read_text(encoding="utf-8").splitlines():
            words = raw.split("\\*", 1)[0].split()
            if not words:
                continue
            if words[0] in _SECTION_KEYWORDS:
                in_section, words = True, words[1:]
            elif words[0] in _OTHER_KEYWORDS:
                in_section = False
            if in_section:
                names.extend(w for w in words if w not in names)
    spec = spec_root / "raft" / "Raft.tla"
    found = extract_invariants(spec, names)
    # Definitions of the bounded models (MC wrappers) live in MCRaft.tla.
    mc = spec_root / "raft" / "MCRaft.tla"
    out: list[Invariant] = []
    for inv in found:
        if inv.meaning.startswith("(no comment") and mc.is_file():
            inv = extract_invariants(mc, [inv.name])[0]
        if inv.meaning.startswith("(no comment") and inv.name == "TypeOK":
            inv = Invariant(inv.spec, inv.name, "Every variable holds a value of its declared type.")
        if inv.name.startswith("NR_"):
            # Reachability checks (specs/raft/Raft.tla): a model must report them violated.
            inv = Invariant(inv.spec, inv.name, f"Reachability check, expected to be violated: {inv.meaning}")
        out.append(inv)
    return out


def _tlc_rows(spec_root: Path, run: bool, failures: list[Counterexample]) -> list[TlcModelResult]:
    from checker.tlc import compare_with_manifest, load_manifest, parse_value, run_model

    manifest = spec_root / "manifest.json"
    if not manifest.is_file():
        return []
    rows: list[TlcModelResult] = []
    # What the manifest recorded of its last run (states generated, depth), shown when TLC
    # is not run now.
    measured: dict[str, dict[str, Any]] = {}
    raw = json.loads(manifest.read_text(encoding="utf-8"))
    for model in raw.get("models", []):
        if isinstance(model, dict) and isinstance(model.get("measured"), dict):
            measured[str(model.get("name"))] = model["measured"]
    for entry in load_manifest(manifest):
        expected = "ok" if entry.expected_result == "ok" else f"violates {entry.expected_violated}"
        if not run or not entry.ci:
            recorded = measured.get(entry.name, {})
            rows.append(
                TlcModelResult(
                    spec=entry.module,
                    model=entry.name,
                    result="not run",
                    states_generated=recorded.get("states_generated"),
                    distinct_states=entry.expected_distinct_states,
                    depth=recorded.get("depth"),
                    expected_distinct_states=entry.expected_distinct_states,
                    detail=f"expected: {expected}; numbers as recorded in the manifest; {entry.description}",
                )
            )
            continue
        result = run_model(entry)
        problems = compare_with_manifest(entry, result)
        outcome = "as expected" if not problems else "UNEXPECTED"
        rows.append(
            TlcModelResult(
                spec=entry.module,
                model=entry.name,
                result="ok" if not problems else "failed",
                states_generated=result.states_generated,
                distinct_states=result.distinct_states,
                depth=result.depth,
                duration_s=round(result.duration_s, 2),
                expected_distinct_states=entry.expected_distinct_states,
                detail=f"{outcome} ({expected}); " + ("; ".join(problems) or entry.description),
            )
        )
        if problems and result.counterexample:
            states = [
                (s.action, {name: _parse(parse_value, text) for name, text in s.variables.items()})
                for s in result.counterexample
            ]
            failures.append(
                counterexample_from_states(
                    f"TLC: model {entry.name}", "; ".join(problems), states
                )
            )
    return rows


def _parse(parse_value: Any, text: str) -> Any:
    try:
        return parse_value(text)
    except ValueError:
        return text


def _simulate(
    seeds: range, faults_text: str, duration_s: float, trace_dir: Path, failures: list[Counterexample]
) -> tuple[SimulationCoverage, list[Path]]:
    from mox.sim.faults import FaultPlan
    from mox.sim.world import World, WorldConfig

    faults = FaultPlan.parse(faults_text)
    trace_dir.mkdir(parents=True, exist_ok=True)
    faults_by_kind: dict[str, int] = {}
    events_by_action: dict[str, int] = {}
    checks = 0
    failed: list[int] = []
    paths: list[Path] = []
    for seed in seeds:
        path = trace_dir / f"seed-{seed}.ndjson"
        with path.open("w", encoding="utf-8") as out:
            result = World(WorldConfig(seed=seed, faults=faults, duration_s=duration_s), trace_out=out).run()
        paths.append(path)
        for kind, count in result.faults_injected.items():
            faults_by_kind[kind] = faults_by_kind.get(kind, 0) + count
        checks += sum(result.checks.values())
        if not result.ok:
            failed.append(seed)
            trace = load_trace(path)
            events = [_event_dict(e) for e in trace.events[-_EVENTS_BEFORE_FAILURE:]]
            failures.append(
                counterexample_from_events(
                    f"Simulation seed {seed} ({result.faults})",
                    result.violation.describe() if result.violation else "the run failed",
                    trace.header.nodes,
                    events,
                    highlight_index=len(events) - 1,
                )
            )
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            action = json.loads(line).get("action", "?")
            events_by_action[action] = events_by_action.get(action, 0) + 1
    coverage = SimulationCoverage(
        seeds=tuple(seeds),
        faults_by_kind=dict(sorted(faults_by_kind.items())),
        invariant_checks=checks,
        events_by_action=events_by_action,
        failed_seeds=tuple(failed),
    )
    return coverage, paths


def _event_dict(event: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"node": event.node, "action": event.action}
    if event.msg is not None:
        out["msg"] = dict(event.msg)
    if event.state is not None:
        out["state"] = dict(event.state)
    return out


def _rejection(trace: Trace, verdict: TraceVerdict) -> Counterexample:
    assert verdict.event_index is not None
    first = max(0, verdict.event_index - _EVENTS_BEFORE_FAILURE + 1)
    events = [_event_dict(e) for e in trace.events[first : verdict.event_index + 1]]
    return counterexample_from_events(
        f"Trace {trace.path} rejected at line {verdict.line_no} ({verdict.action})",
        verdict.reason + (f" (showing lines from {trace.events[first].line_no})" if first else ""),
        trace.header.nodes,
        events,
        highlight_index=len(events) - 1,
    )


@click.command("report")
@click.option("--sim-seeds", "sim_seeds", default=None, metavar="A..B", help="Simulate these seeds.")
@click.option("--faults", default="swarm", show_default=True, help="Fault plan of the simulated seeds.")
@click.option(
    "--duration-s",
    type=click.FloatRange(min=0.05, max=600.0),
    default=1.0,
    show_default=True,
    help="Virtual seconds of faults per simulated seed.",
)
@click.option(
    "--traces",
    "trace_paths",
    multiple=True,
    type=click.Path(path_type=str),
    help="Trace files or directories to check (repeat the flag for several).",
)
@click.option("--tlc", "run_tlc", is_flag=True, help="Run the CI models of specs/manifest.json now.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output directory.")
def command(
    sim_seeds: str | None,
    faults: str,
    duration_s: float,
    trace_paths: tuple[str, ...],
    run_tlc: bool,
    out_dir: Path,
) -> None:
    """Write an invariant report (report.html and report.json) for an auditor."""
    from mox.sim.cli import parse_seed_range
    from mox.sim.faults import FaultPlan, FaultPlanError

    seeds: range | None = None
    if sim_seeds is not None:
        try:
            seeds = parse_seed_range(sim_seeds)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--sim-seeds") from None
        try:
            FaultPlan.parse(faults)
        except FaultPlanError as exc:
            raise click.BadParameter(str(exc), param_hint="--faults") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(f"{out_dir} exists and is not a directory", param_hint="--out")
    # Paths first: a bad one stops here (exit 2), before any long work.
    trace_files = find_traces(trace_paths) if trace_paths else []

    spec_root = specs_dir()
    failures: list[Counterexample] = []
    invariants = [*spec_invariants(spec_root)]
    invariants += [Invariant("simulator", name, meaning) for name, meaning in SIM_INVARIANTS.items()]
    tlc_rows = _tlc_rows(spec_root, run_tlc, failures)

    simulation: SimulationCoverage | None = None
    sim_paths: list[Path] = []
    if seeds is not None:
        simulation, sim_paths = _simulate(seeds, faults, duration_s, out_dir / "traces", failures)

    conformance: ConformanceSummary | None = None
    traces = [load_trace(p) for p in [*trace_files, *sim_paths]]
    if traces:
        stats = CheckStats()
        verdicts = check_loaded(traces, stats=stats)
        results = []
        for trace, verdict in zip(traces, verdicts, strict=True):
            results.append(
                TraceResult(
                    path=trace.path,
                    events=verdict.events,
                    accepted=verdict.accepted,
                    seed=verdict.seed,
                    line_no=verdict.line_no,
                    action=verdict.action,
                    reason=verdict.reason,
                )
            )
            if not verdict.accepted:
                failures.append(_rejection(trace, verdict))
        conformance = ConformanceSummary(tuple(results), stats.tlc_runs, round(stats.tlc_seconds, 2))

    data = ReportData(
        title="Mox invariant report",
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        invariants=tuple(invariants),
        tlc=tuple(tlc_rows),
        conformance=conformance,
        simulation=simulation,
        failures=tuple(failures),
    )
    html_path, json_path = write_report(data, out_dir)
    click.echo(f"wrote {html_path} and {json_path}")
    if conformance is not None:
        click.echo(
            f"traces: {len(conformance.traces)} checked, {conformance.events} events, "
            f"{conformance.accepted} accepted, {conformance.rejected} rejected"
        )
    if simulation is not None:
        click.echo(f"simulation: {len(simulation.seeds)} seeds, {len(simulation.failed_seeds)} failed")
    if tlc_rows and run_tlc:
        failed = sum(1 for r in tlc_rows if r.result == "failed")
        click.echo(f"TLC: {sum(1 for r in tlc_rows if r.result != 'not run')} models run, {failed} unexpected")
    if failures:
        click.echo(f"{len(failures)} failure(s): see the report's Failures section")
        sys.exit(1)
