"""The trace corpus under traces/raft/: what it holds and how it is (re)generated.

    python -m checker.corpus traces/raft

* `accepted/`: traces of simulated runs (`sim-*.ndjson`: seed, fault set and version in the
  header line) and of the core's scenario harness with the real core (`scenario-*.ndjson`).
  Together they cover elections, split votes, log conflicts, snapshots and their transfer,
  membership changes, partitions, crashes and restarts, message loss and duplication.
* `rejected/`: traces of deliberately broken cores (`mutant-*`, see `checker.mutants`) and
  hand-edited copies of accepted traces (`edited-*`), each with a `.md` note saying what is
  wrong and where the checker must reject it. The mutants' scenarios are classic-Raft
  schedules: the stored `mutant-*` traces were made with pre-vote and check-quorum off
  (`add-nodes ... prevote=off checkquorum=off`; tests/test_corpus.py runs them live the same
  way). Until checker/mutants.py's scenarios say so themselves, regenerating overwrites
  them with default-core runs in which some mutants have nothing to get wrong: keep the
  stored ones.

`simulate_traces` is also what the corpus test uses to check fresh seeds on every run.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs

from checker.mutants import SCENARIOS, run_scenario
from checker.mutants import write_corpus as write_mutant_corpus

__all__ = ["CORPUS_SIM_RUNS", "SimRun", "simulate_trace", "simulate_traces", "write_corpus"]


@attrs.frozen
class SimRun:
    """One simulated run for the corpus: a seed, a fault plan and the run's size."""

    seed: int
    faults: str
    duration_s: float = 0.6
    snapshot_threshold_entries: int = 16


# Chosen to cover the fault kinds; each is accepted today (tests/test_corpus.py checks it).
CORPUS_SIM_RUNS: tuple[SimRun, ...] = (
    SimRun(1, "none"),
    SimRun(2, "crash"),
    SimRun(3, "partition,isolate_leader"),
    SimRun(4, "loss,duplicate,reorder"),
    SimRun(5, "asymmetric,flapping,clock_drift"),
    SimRun(6, "crash,partition,loss"),
)


def simulate_trace(run: SimRun) -> str:
    """The NDJSON trace of one simulated run; the header also records the run's sizes."""
    from mox.sim.faults import FaultPlan
    from mox.sim.world import WorldConfig, run_seed

    config = WorldConfig(
        seed=run.seed,
        faults=FaultPlan.parse(run.faults),
        duration_s=run.duration_s,
        snapshot_threshold_entries=run.snapshot_threshold_entries,
    )
    out = io.StringIO()
    run_seed(config, trace_out=out)
    text = out.getvalue()
    first, _, rest = text.partition("\n")
    header = json.loads(first)
    header["header"]["sim"] = {
        "faults_requested": run.faults,
        "duration_s": run.duration_s,
        "snapshot_threshold_entries": run.snapshot_threshold_entries,
    }
    return json.dumps(header, separators=(",", ":")) + "\n" + rest


def simulate_traces(runs: Sequence[SimRun], out_dir: Path) -> list[Path]:
    """Writes `seed-N.ndjson` for each run into `out_dir`; returns the paths in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for run in runs:
        path = out_dir / f"seed-{run.seed}.ndjson"
        path.write_text(simulate_trace(run), encoding="utf-8")
        paths.append(path)
    return paths


def _edit_reorder(trace: str) -> tuple[str, str]:
    """Moves the first receive of a RequestVote to just before the line that sent it."""
    lines = trace.splitlines()
    for k in range(2, len(lines)):
        event = json.loads(lines[k])
        msg = event.get("msg", {})
        if event["action"] == "UpdateTerm" and msg.get("type") == "RequestVote":
            send = next(
                j
                for j in range(1, k)
                if json.loads(lines[j])["action"] == "RequestVote" and json.loads(lines[j])["msg"] == msg
            )
            lines.insert(send, lines.pop(k))
            note = (
                f"Line {k + 1} of the accepted trace (node {event['node']} receives a RequestVote "
                f"from node {msg['src']}) is moved to line {send + 1}, before line {send + 2} where "
                f"node {msg['src']} sends it. Expected verdict: rejected at line {send + 1}, "
                "UpdateTerm, its message not in flight."
            )
            return "\n".join(lines) + "\n", note
    raise AssertionError("no RequestVote receive to reorder")


def _edit_term(trace: str) -> tuple[str, str]:
    """Raises the term in the state of the first BecomeLeader line."""
    lines = trace.splitlines()
    for k in range(1, len(lines)):
        event = json.loads(lines[k])
        if event["action"] == "BecomeLeader":
            event["state"]["term"] += 1
            lines[k] = json.dumps(event, separators=(",", ":"))
            note = (
                f"Line {k + 1} (BecomeLeader by node {event['node']}) says term "
                f"{event['state']['term']}; the node was a candidate of term "
                f"{event['state']['term'] - 1}, and becoming leader does not change the term. "
                f"Expected verdict: rejected at line {k + 1}, BecomeLeader, observed term."
            )
            return "\n".join(lines) + "\n", note
    raise AssertionError("no BecomeLeader to edit")


def write_corpus(out_dir: Path, scenario_dir: Path | None) -> list[Path]:
    """Regenerates the whole corpus under `out_dir` (accepted/ and rejected/)."""
    written = write_mutant_corpus(out_dir, scenario_dir)
    accepted = out_dir / "accepted"
    rejected = out_dir / "rejected"
    for run in CORPUS_SIM_RUNS:
        name = f"sim-seed-{run.seed}-{run.faults.replace(',', '+')}.ndjson"
        path = accepted / name
        path.write_text(simulate_trace(run), encoding="utf-8")
        written.append(path)
    base = run_scenario(SCENARIOS["log_conflict"])
    for name, edit in (("reordered-line", _edit_reorder), ("changed-term", _edit_term)):
        text, note = edit(base)
        path = rejected / f"edited-{name}.ndjson"
        path.write_text(text, encoding="utf-8")
        (rejected / f"edited-{name}.md").write_text(
            f"# edited: {name}\n\nA hand edit of the accepted trace of scenario `log_conflict` "
            f"(`checker/mutants.py`).\n\n{note}\n",
            encoding="utf-8",
        )
        written.extend([path, rejected / f"edited-{name}.md"])
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the trace corpus.")
    parser.add_argument("out_dir", type=Path, help="corpus directory, e.g. traces/raft")
    parser.add_argument(
        "--scenarios", type=Path, default=Path("tests/testdata/raft"), help="harness scenario files"
    )
    args = parser.parse_args(argv)
    for path in write_corpus(args.out_dir, args.scenarios if args.scenarios.is_dir() else None):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
