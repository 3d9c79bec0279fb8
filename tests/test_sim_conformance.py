"""Simulated runs are behaviours of the spec: their traces pass TLC trace validation.

Real TLC over real traces of whole simulated clusters with every fault on (crashes and
restarts, lost and duplicated messages, partitions, snapshots sent to lagging nodes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checker.conformance import check_traces
from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig


def _write_traces(directory: Path, seeds: range, faults: str) -> list[Path]:
    paths = []
    for seed in seeds:
        world = World(WorldConfig(seed=seed, faults=FaultPlan.parse(faults), duration_s=1.0))
        result = world.run()
        assert result.ok, result.summary_line()
        assert world.trace is not None
        path = directory / f"seed-{seed}.ndjson"
        path.write_text(world.trace.text())
        paths.append(path)
    return paths


@pytest.mark.slow
def test_simulated_traces_with_every_fault_are_accepted_by_tlc(tmp_path: Path) -> None:
    paths = _write_traces(tmp_path, range(56, 62), "all")
    actions = set()
    for path in paths:
        for line in path.read_text().splitlines()[1:]:
            actions.add(json.loads(line)["action"])
    # The runs exercised the network and fault actions, not only the happy path.
    assert {"DropMessage", "DuplicateMessage", "Restart", "Snapshot"} <= actions
    verdicts = check_traces([str(p) for p in paths], diagnose=False)
    assert [v.describe() for v in verdicts if not v.accepted] == []
    assert len(verdicts) == len(paths)


@pytest.mark.slow
def test_a_tampered_simulated_trace_is_rejected(tmp_path: Path) -> None:
    (path,) = _write_traces(tmp_path, range(60, 61), "none")
    lines = path.read_text().splitlines()
    # Claim a commit index one higher than the node reached at some AdvanceCommitIndex.
    for k, line in enumerate(lines[1:], start=1):
        event = json.loads(line)
        if event["action"] == "AdvanceCommitIndex":
            event["state"]["commit_index"] += 1
            lines[k] = json.dumps(event, separators=(",", ":"))
            break
    else:
        raise AssertionError("no AdvanceCommitIndex in the trace")
    path.write_text("\n".join(lines) + "\n")
    (verdict,) = check_traces([str(path)], diagnose=False)
    assert not verdict.accepted
    assert verdict.line_no is not None and verdict.line_no <= k + 1
