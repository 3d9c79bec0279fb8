"""`mox check PATH...`: validate traces against the Raft spec with TLC.

Prints one line per trace (accepted, or rejected with the line, the action and the
observations the spec could not produce) and a summary. Exit status: 0 when every trace is
accepted, 1 when any is rejected, 2 for a bad path or a malformed trace (the message names
the file and line).
"""

from __future__ import annotations

import sys
import time

import click

from checker.conformance import BATCH_SIZE_DEFAULT, CheckStats, check_loaded
from checker.trace import find_traces, load_trace

__all__ = ["check_command"]


@click.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=10_000),
    default=BATCH_SIZE_DEFAULT,
    show_default=True,
    help="Traces checked per TLC run (one JVM start per batch).",
)
@click.option(
    "--diagnose/--no-diagnose",
    default=True,
    show_default=True,
    help="Run TLC again on rejected traces to name the observations no spec action produces.",
)
def check_command(paths: tuple[str, ...], batch_size: int, diagnose: bool) -> None:
    """Check NDJSON traces (files, or directories searched for *.ndjson) against Raft.tla."""
    started = time.perf_counter()
    # Loading first: a bad path or a malformed line stops here with exit code 2.
    traces = [load_trace(p) for p in find_traces(paths)]
    stats = CheckStats()
    verdicts = check_loaded(traces, batch_size=batch_size, diagnose=diagnose, stats=stats)
    for verdict in verdicts:
        click.echo(verdict.describe())
    rejected = sum(1 for v in verdicts if not v.accepted)
    elapsed_s = time.perf_counter() - started
    click.echo(
        f"{len(verdicts)} traces, {stats.events} events: {len(verdicts) - rejected} accepted, "
        f"{rejected} rejected ({stats.tlc_runs} TLC runs, {elapsed_s:.1f} s)"
    )
    if rejected:
        sys.exit(1)
