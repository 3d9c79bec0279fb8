"""One seed, one run: byte-identical traces and final state, in-process and across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig

SCRIPT = """
import json, sys
from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig
out = []
for seed in range(int(sys.argv[1]), int(sys.argv[2])):
    world = World(WorldConfig(seed=seed, faults=FaultPlan.parse("swarm"), duration_s=1.0))
    result = world.run()
    out.append([seed, result.ok, result.trace_sha256, result.state_hash, result.steps,
                len(world.trace.lines)])
print(json.dumps(out))
"""


def _run(seed: int, faults: str = "swarm") -> tuple[str, str, int]:
    world = World(WorldConfig(seed=seed, faults=FaultPlan.parse(faults), duration_s=1.0))
    result = world.run()
    assert world.trace is not None
    return world.trace.text(), result.state_hash, result.steps


@pytest.mark.parametrize("seed", range(12))
def test_same_seed_gives_identical_trace_and_state(seed: int) -> None:
    first = _run(seed)
    second = _run(seed)
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert first[2] == second[2]
    assert first[0].count("\n") > 100


def test_different_seeds_give_different_runs() -> None:
    traces = {_run(seed, "all")[0] for seed in range(4)}
    assert len(traces) == 4


def test_trace_header_names_the_run() -> None:
    text, _, _ = _run(3, "crash,loss=0.2")
    header = json.loads(text.splitlines()[0])["header"]
    assert header["seed"] == 3
    assert header["nodes"] == [1, 2, 3]
    assert header["faults"] == {"crash": 0.5, "loss": 0.2}
    assert header["protocol"] == "raft"
    first_event = json.loads(text.splitlines()[1])
    assert first_event["i"] == 1
    assert first_event["action"] == "Restart"


def test_across_processes_with_different_hash_seeds() -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, "0", "4"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert all(row[1] for row in outputs[0])
