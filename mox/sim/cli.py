"""`mox simulate`: run simulated clusters over many seeds, check them, summarise.

    mox simulate --seed 7
    mox simulate --seeds 1..200 --faults swarm --nodes 5
    mox simulate --seeds 1..50 --faults crash,partition=0.9 --trace-dir traces/sim --json out.json

Exit status: 0 when every seed passed, 1 on any violation (each one printed with its seed,
invariant, step, trace file and the command that replays it), 2 on bad flags.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from mox.sim.faults import FAULT_KINDS, FaultPlan, FaultPlanError
from mox.sim.world import SimResult, World, WorldConfig

__all__ = ["command", "parse_seed_range"]

_SEED_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")
SEEDS_MAX = 1_000_000


def parse_seed_range(text: str) -> range:
    """`A..B` (inclusive) -> range(A, B + 1). Raises ValueError with the reason."""
    match = _SEED_RANGE.match(text)
    if match is None:
        raise ValueError(f"expected A..B (e.g. 1..100), got {text!r}")
    first, last = int(match.group(1)), int(match.group(2))
    if last < first:
        raise ValueError(f"the range {text!r} is empty (B < A)")
    if last - first + 1 > SEEDS_MAX:
        raise ValueError(f"at most {SEEDS_MAX} seeds per run")
    return range(first, last + 1)


def _faults_option(_ctx: click.Context, _param: click.Parameter, value: str) -> FaultPlan:
    try:
        return FaultPlan.parse(value)
    except FaultPlanError as exc:
        raise click.BadParameter(str(exc)) from None


def _seeds_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> range | None:
    if value is None:
        return None
    try:
        return parse_seed_range(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _replay_command(result: SimResult, args: dict[str, Any]) -> str:
    parts = ["mox simulate", f"--seed {result.seed}"]
    if args["nodes"] != 3:
        parts.append(f"--nodes {args['nodes']}")
    parts.append(f"--faults {args['faults_text']}")
    if args["steps"] is not None:
        parts.append(f"--steps {args['steps']}")
    if args["duration"] != _DEFAULT_DURATION_S:
        parts.append(f"--duration {args['duration']:g}")
    return " ".join(parts)


_DEFAULT_DURATION_S = 3.0


@click.command(name="simulate")
@click.option("--seed", type=click.IntRange(min=0), help="Run this one seed.")
@click.option("--seeds", "seeds", callback=_seeds_option, help="Run the seeds A..B (inclusive).")
@click.option(
    "--nodes",
    type=click.Choice(["1", "3", "5"]),
    default="3",
    show_default=True,
    help="Cluster size.",
)
@click.option(
    "--faults",
    "faults",
    default="swarm",
    show_default=True,
    callback=_faults_option,
    help=f"none, swarm, all, or a comma list of kind[=intensity] from: {', '.join(FAULT_KINDS)}.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    help="End the fault phase after this many node steps (Readies handled).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1, max=3600.0),
    default=_DEFAULT_DURATION_S,
    show_default=True,
    help="Virtual seconds of the fault phase (if --steps is not reached first).",
)
@click.option(
    "--trace-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write every seed's NDJSON trace here (violations' traces always go somewhere).",
)
@click.option(
    "--check",
    "check_traces",
    is_flag=True,
    help="Also validate every seed's trace against specs/raft/Raft.tla with TLC (mox check).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the per-seed results and the totals as JSON to this file.",
)
def command(
    seed: int | None,
    seeds: range | None,
    nodes: str,
    faults: FaultPlan,
    steps: int | None,
    duration: float,
    trace_dir: Path | None,
    check_traces: bool,
    json_path: Path | None,
) -> None:
    """Run whole Mox clusters in simulated time, disk and network, with faults and checks."""
    if (seed is None) == (seeds is None):
        raise click.UsageError("give exactly one of --seed N or --seeds A..B")
    seed_list = [seed] if seed is not None else list(seeds or [])
    # The core logs every message it rejects; the summary counts them by reason instead
    # of a flood of warnings over hundreds of seeds.
    logging.getLogger("mox.consensus.raft").setLevel(logging.ERROR)
    faults_text = faults.describe()
    args = {"nodes": int(nodes), "faults_text": faults_text, "steps": steps, "duration": duration}
    results: list[SimResult] = []
    failures: list[tuple[SimResult, Path]] = []
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    progress = Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("violations: {task.fields[violations]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stdout.isatty(),
    )
    if check_traces and trace_dir is None:
        # TLC reads the traces from files: keep them for the check (and the user).
        trace_dir = Path(tempfile.mkdtemp(prefix="mox-sim-traces-"))
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
    with progress:
        task = progress.add_task("seeds", total=len(seed_list), violations=0)
        for current in seed_list:
            config = WorldConfig(
                seed=current,
                nodes=int(nodes),
                faults=faults,
                duration_s=duration,
                steps_max=steps,
            )
            world = World(config)
            result = world.run()
            results.append(result)
            trace_path: Path | None = None
            if trace_dir is not None or not result.ok:
                directory = trace_dir
                if directory is None:
                    directory = Path(tempfile.mkdtemp(prefix="mox-sim-"))
                trace_path = directory / f"seed-{current}.ndjson"
                assert world.trace is not None
                trace_path.write_text(world.trace.text())
            if not result.ok:
                assert trace_path is not None
                failures.append((result, trace_path))
                progress.console.print(
                    f"[red]seed {current}: {result.violation.describe() if result.violation else ''}"
                )
            progress.update(task, advance=1, violations=len(failures))
    rejected: list[str] = []
    if check_traces:
        rejected = _check_conformance(console, results, failures, trace_dir)
    _print_summary(console, results, faults_text)
    for line in rejected:
        click.echo(f"TRACE REJECTED {line}")
    for result, trace_path in failures:
        assert result.violation is not None
        click.echo(
            f"VIOLATION seed={result.seed} invariant={result.violation.invariant} "
            f"step={result.violation.step} trace={trace_path}\n"
            f"  {result.violation.detail}\n"
            f"  replay: {_replay_command(result, args)}"
        )
    if json_path is not None:
        json_path.write_text(json.dumps(_json_report(results), indent=2, sort_keys=True) + "\n")
    if failures or rejected:
        sys.exit(1)


def _check_conformance(
    console: Any,
    results: list[SimResult],
    failures: list[tuple[SimResult, Path]],
    trace_dir: Path | None,
) -> list[str]:
    """TLC over the traces of the seeds that passed (a failed run's trace ends mid-way)."""
    from checker.conformance import CheckStats, check_traces

    assert trace_dir is not None
    failed = {result.seed for result, _ in failures}
    paths = [trace_dir / f"seed-{r.seed}.ndjson" for r in results if r.seed not in failed]
    if not paths:
        return []
    stats = CheckStats()
    console.print(f"checking {len(paths)} traces with TLC ...")
    verdicts = check_traces([str(p) for p in paths], stats=stats)
    console.print(
        f"trace conformance: {sum(v.accepted for v in verdicts)} of {len(verdicts)} accepted "
        f"({stats.events} events, {stats.tlc_runs} TLC runs, {stats.tlc_seconds:.1f} s)"
    )
    return [v.describe() for v in verdicts if not v.accepted]


def _totals(results: list[SimResult]) -> dict[str, Any]:
    faults: dict[str, int] = {}
    checks: dict[str, int] = {}
    rejected: dict[str, int] = {}
    enabled: dict[str, int] = {}
    for result in results:
        for kind in _plan_kinds(result.faults):
            enabled[kind] = enabled.get(kind, 0) + 1
        for reason, count in result.messages_rejected.items():
            rejected[reason] = rejected.get(reason, 0) + count
        for kind, count in result.faults_injected.items():
            faults[kind] = faults.get(kind, 0) + count
        for name, count in result.checks.items():
            checks[name] = checks.get(name, 0) + count
    return {
        "seeds": len(results),
        "violations": sum(1 for r in results if not r.ok),
        "simulated_s": round(sum(r.simulated_s for r in results), 3),
        "wall_s": round(sum(r.wall_s for r in results), 3),
        "steps": sum(r.steps for r in results),
        "operations": sum(
            r.operations.get("write", 0)
            + r.operations.get("read", 0)
            + r.operations.get("stale_read", 0)
            for r in results
        ),
        "faults_injected": dict(sorted(faults.items())),
        "checks": dict(sorted(checks.items())),
        "messages_rejected": dict(sorted(rejected.items())),
        "seeds_with_fault_enabled": {k: enabled[k] for k in FAULT_KINDS if k in enabled},
        "corruption": _corruption_totals(results),
    }


def _corruption_totals(results: list[SimResult]) -> dict[str, Any]:
    """Disk corruption: how much was injected, on how many nodes, and how many of those
    nodes detected it and fail-stopped (by when: run, recovery, final scrub)."""
    struck = 0
    detected = 0
    by_phase: dict[str, int] = {}
    for result in results:
        for node_id, count in result.corruption_injected.items():
            if count > 0:
                struck += 1
                if node_id in result.failed_nodes:
                    detected += 1
        for what in result.failed_nodes.values():
            phase = what.split(":", 1)[0]
            by_phase[phase] = by_phase.get(phase, 0) + 1
    return {
        "faults_injected": sum(sum(r.corruption_injected.values()) for r in results),
        "nodes_with_corrupt_disk": sum(len(r.corrupt_nodes) for r in results),
        "nodes_struck": struck,
        "nodes_fail_stopped": sum(len(r.failed_nodes) for r in results),
        "nodes_struck_and_fail_stopped": detected,
        "fail_stopped_during": dict(sorted(by_phase.items())),
    }


def _plan_kinds(described: str) -> list[str]:
    """The kinds of a resolved plan as `FaultPlan.describe` wrote it (`none`, `a=0.5,b=1`)."""
    if described == "none":
        return []
    return [item.split("=", 1)[0] for item in described.split(",")]


def _json_report(results: list[SimResult]) -> dict[str, Any]:
    per_seed = []
    for result in results:
        item = result.to_json()
        item.pop("wall_s", None)
        item["wall_s"] = round(result.wall_s, 4)
        per_seed.append(item)
    return {"totals": _totals(results), "seeds": per_seed}


def _print_summary(console: Any, results: list[SimResult], faults_text: str) -> None:
    from rich.table import Table

    totals = _totals(results)
    table = Table(title=f"mox simulate — faults: {faults_text}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right", overflow="fold")
    table.add_row("seeds run", str(totals["seeds"]))
    table.add_row("violations", str(totals["violations"]))
    table.add_row("simulated time", f"{totals['simulated_s']:.1f} s")
    table.add_row("wall time", f"{totals['wall_s']:.1f} s")
    table.add_row("node steps", str(totals["steps"]))
    table.add_row("client operations", str(totals["operations"]))
    if len(results) == 1:
        table.add_row("fault plan", results[0].faults)
    else:
        for kind, count in totals["seeds_with_fault_enabled"].items():
            table.add_row(f"seeds with {kind} on", str(count))
    for kind, count in totals["faults_injected"].items():
        table.add_row(f"fault: {kind}", str(count))
    corruption = totals["corruption"]
    if corruption["nodes_with_corrupt_disk"]:
        table.add_row("corruption faults injected", str(corruption["faults_injected"]))
        table.add_row(
            "nodes struck by corruption",
            f"{corruption['nodes_struck']} (of {corruption['nodes_with_corrupt_disk']} "
            "with a corrupting disk)",
        )
        table.add_row(
            "nodes fail-stopped on a storage fault",
            f"{corruption['nodes_fail_stopped']} ({corruption['nodes_struck_and_fail_stopped']} "
            f"of {corruption['nodes_struck']} struck detected it)",
        )
        for phase, count in corruption["fail_stopped_during"].items():
            table.add_row(f"fail-stopped during {phase}", str(count))
    for name, count in totals["checks"].items():
        table.add_row(f"check: {name}", str(count))
    for reason, count in totals["messages_rejected"].items():
        table.add_row(f"core rejected message: {reason}", str(count))
    console.print(table)
