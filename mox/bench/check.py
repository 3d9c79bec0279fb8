"""`mox bench check`: trace validation throughput (events per second, per-trace overhead).

The traces are synthetic but valid Raft behaviours written by `steady_state_trace`: a 3-node
cluster elects node 1, then each round the leader appends one client entry, replicates it to
both followers and commits it (8 events per round). Synthetic traces keep the bench
independent of the simulator's speed and make sizes exact; `mox check` on simulator traces
costs the same per event (the same TLC spec, the same actions).

Rows, all measured in this run:
* baseline: one TLC run per trace (what a checker without batching pays, as CCF's per-scenario
  runs do), on `--traces` short traces;
* batched: the same traces in one TLC run (`Init` picks the trace);
* long: one trace of `--events` events (throughput once the JVM is warm).
Loading and schema validation alone are reported too, so the TLC share is visible.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from checker.conformance import CheckStats, check_loaded
from checker.trace import Trace, load_trace

__all__ = ["command", "steady_state_trace"]


def _state(node: dict[str, Any]) -> dict[str, Any]:
    return {
        "term": node["term"],
        "role": node["role"],
        "voted_for": node["voted_for"],
        "commit_index": node["commit"],
        "last_index": node["last"],
        "last_term": node["last_term"],
        "snapshot_index": 0,
        "snapshot_term": 0,
        "config": [1, 2, 3],
    }


def steady_state_trace(events_min: int, seed: int = 0) -> list[str]:
    """NDJSON lines (header first) of a valid 3-node run with at least `events_min` events."""
    assert events_min >= 1
    nodes: dict[int, dict[str, Any]] = {
        n: {"term": 0, "role": "follower", "voted_for": None, "commit": 0, "last": 0, "last_term": 0}
        for n in (1, 2, 3)
    }
    lines = [
        json.dumps(
            {"header": {"version": 1, "protocol": "raft", "nodes": [1, 2, 3], "config": [1, 2, 3], "seed": seed}}
        )
    ]

    def emit(node: int, action: str, msg: dict[str, Any] | None = None) -> None:
        line: dict[str, Any] = {"i": len(lines), "t_ns": len(lines) * 1000, "node": node, "action": action}
        if msg is not None:
            line["msg"] = msg
        line["state"] = _state(nodes[node])
        lines.append(json.dumps(line))

    leader = nodes[1]
    leader.update(term=1, role="candidate", voted_for=1)
    emit(1, "Timeout")
    for j in (2, 3):
        rv = {"type": "RequestVote", "src": 1, "dst": j, "term": 1, "last_log_term": 0, "last_log_index": 0}
        emit(1, "RequestVote", rv)
        nodes[j].update(term=1)
        emit(j, "UpdateTerm", rv)
        nodes[j].update(voted_for=1)
        emit(j, "HandleRequestVoteRequest", rv)
    emit(1, "HandleRequestVoteResponse", {"type": "RequestVoteResponse", "src": 2, "dst": 1, "term": 1, "vote_granted": True})
    leader.update(role="leader", last=1, last_term=1)
    emit(1, "BecomeLeader")
    # Node 3's vote arrives after the election: a leader just consumes it.
    emit(1, "HandleRequestVoteResponse", {"type": "RequestVoteResponse", "src": 3, "dst": 1, "term": 1, "vote_granted": True})
    next_index = {2: 1, 3: 1}
    while len(lines) - 1 < events_min:
        leader.update(last=leader["last"] + 1)
        emit(1, "ClientRequest")
        for j in (2, 3):
            prev = next_index[j] - 1
            count = leader["last"] - prev
            entries = [[1, "noop" if index == 1 else "normal"] for index in range(prev + 1, leader["last"] + 1)]
            ae: dict[str, Any] = {
                "type": "AppendEntries",
                "src": 1,
                "dst": j,
                "term": 1,
                "prev_log_index": prev,
                "prev_log_term": 0 if prev == 0 else 1,
                "entries": entries,
                "leader_commit": min(leader["commit"], prev + count),
            }
            next_index[j] = leader["last"] + 1
            emit(1, "AppendEntries", ae)
            follower = nodes[j]
            follower.update(
                last=prev + count,
                last_term=1,
                commit=max(follower["commit"], min(ae["leader_commit"], prev + count)),
            )
            emit(j, "HandleAppendEntriesRequest", ae)
            aer = {"type": "AppendEntriesResponse", "src": j, "dst": 1, "term": 1, "success": True, "match_index": prev + count}
            emit(1, "HandleAppendEntriesResponse", aer)
        leader.update(commit=leader["last"])
        emit(1, "AdvanceCommitIndex")
    return [line + "\n" for line in lines]


def _write(directory: Path, name: str, lines: list[str]) -> Path:
    path = directory / name
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(traces: list[Trace], batch_size: int) -> tuple[float, float, CheckStats]:
    """Wall seconds and TLC's CPU seconds (the machine may be shared: CPU time is steadier)."""
    stats = CheckStats()
    cpu_before_s = _child_cpu_s()
    start = time.perf_counter()
    verdicts = check_loaded(traces, batch_size=batch_size, diagnose=False, stats=stats)
    elapsed_s = time.perf_counter() - start
    cpu_s = _child_cpu_s() - cpu_before_s
    rejected = [v for v in verdicts if not v.accepted]
    if rejected:
        raise click.ClickException(f"a synthetic trace was rejected: {rejected[0].describe()}")
    return elapsed_s, cpu_s, stats


@click.command("check")
@click.option("--traces", "traces_count", type=click.IntRange(1, 2000), default=50, show_default=True,
              help="Short traces for the per-trace overhead rows.")
@click.option("--trace-events", type=click.IntRange(10, 10_000), default=40, show_default=True,
              help="Events per short trace.")
@click.option("--events", "long_events", type=click.IntRange(100, 1_000_000), default=20_000, show_default=True,
              help="Events in the one long trace.")
@click.option("--baseline-traces", type=click.IntRange(1, 200), default=5, show_default=True,
              help="How many of the short traces the one-run-per-trace baseline checks.")
@click.option("--sim-seeds", type=click.IntRange(0, 10_000), default=200, show_default=True,
              help="Fresh simulation seeds to generate and check, as the corpus test does (0: skip).")
def command(traces_count: int, trace_events: int, long_events: int, baseline_traces: int, sim_seeds: int) -> None:
    """Trace validation throughput: batched TLC runs against one run per trace."""
    with tempfile.TemporaryDirectory(prefix="mox-bench-check-") as tmp:
        directory = Path(tmp)
        paths = [
            _write(directory, f"short-{k:04d}.ndjson", steady_state_trace(trace_events, seed=k))
            for k in range(traces_count)
        ]
        long_path = _write(directory, "long.ndjson", steady_state_trace(long_events))

        start = time.perf_counter()
        short = [load_trace(p) for p in paths]
        long_trace = load_trace(long_path)
        load_s = time.perf_counter() - start
        loaded_events = sum(len(t.events) for t in short) + len(long_trace.events)

        rows: list[tuple[str, int, int, int, float, float]] = []
        baseline = short[: min(baseline_traces, len(short))]
        base_s, base_cpu_s, base_stats = _measure(baseline, batch_size=1)
        rows.append(("baseline: 1 TLC run per trace", len(baseline), base_stats.events, base_stats.tlc_runs, base_s, base_cpu_s))
        batch_s, batch_cpu_s, batch_stats = _measure(short, batch_size=len(short))
        rows.append(("batched: 1 TLC run for all", len(short), batch_stats.events, batch_stats.tlc_runs, batch_s, batch_cpu_s))
        long_s, long_cpu_s, long_stats = _measure([long_trace], batch_size=1)
        rows.append(("one long trace", 1, long_stats.events, long_stats.tlc_runs, long_s, long_cpu_s))
        sim_s = 0.0
        if sim_seeds:
            # The same runs as tests/test_corpus.py's fresh seeds: 0.2 s of faults each.
            from checker.corpus import SimRun, simulate_traces

            start = time.perf_counter()
            sim_paths = simulate_traces(
                [SimRun(seed, "loss,duplicate,reorder,partition", duration_s=0.2) for seed in range(1, sim_seeds + 1)],
                directory / "sim",
            )
            sim_s = time.perf_counter() - start
            sim_traces = [load_trace(p) for p in sim_paths]
            seeds_s, seeds_cpu_s, seeds_stats = _measure(sim_traces, batch_size=len(sim_traces))
            rows.append((f"{sim_seeds} fresh sim seeds, batched", len(sim_traces), seeds_stats.events,
                         seeds_stats.tlc_runs, seeds_s, seeds_cpu_s))

    click.echo(f"load + schema validation: {loaded_events} events in {load_s:.3f} s "
               f"({loaded_events / load_s:,.0f} events/s)")
    click.echo(f"{'run':32} {'traces':>7} {'events':>8} {'TLC runs':>9} {'wall s':>7} {'TLC cpu s':>9} "
               f"{'events/s':>9} {'ev/cpu-s':>9} {'s/trace':>8}")
    for name, n_traces, n_events, runs, seconds, cpu_s in rows:
        click.echo(f"{name:32} {n_traces:>7} {n_events:>8} {runs:>9} {seconds:>7.2f} {cpu_s:>9.2f} "
                   f"{n_events / seconds:>9,.0f} {n_events / max(cpu_s, 1e-9):>9,.0f} {seconds / n_traces:>8.3f}")
    if sim_seeds:
        click.echo(f"simulating the {sim_seeds} seeds took {sim_s:.1f} s (not in the table)")
    speedup = (base_s / len(baseline)) / (batch_s / len(short))
    click.echo(f"per-trace wall time, batched vs one run per trace: {speedup:.1f}x lower")
    load1, _, _ = os.getloadavg()
    click.echo(f"machine: {os.cpu_count()} cores, load average {load1:.1f} (wall times grow with load)")
