"""The simulator catches known Raft bugs: deliberately broken cores (`checker.mutants`) run
in ordinary swarm worlds until an invariant fires; the real core passes the same seeds."""

from __future__ import annotations

import pytest

from checker import mutants
from mox.consensus.raft.core import RaftCore
from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig

SEEDS = range(1, 21)


def _first_violation(core_class: type[RaftCore]) -> tuple[int, str] | None:
    for seed in SEEDS:
        config = WorldConfig(seed=seed, faults=FaultPlan.parse("swarm"), duration_s=2.0)
        result = World(config, core_class=core_class).run()
        if not result.ok:
            assert result.violation is not None
            return seed, result.violation.invariant
    return None


@pytest.mark.parametrize(
    "mutant, invariants",
    [
        (mutants.NoStepDownOnHigherTerm, {"election_safety", "node_failure"}),
        (
            mutants.NoTruncateConflict,
            {"committed_entry_kept", "log_matching", "state_machine_safety"},
        ),
    ],
)
def test_known_bug_is_caught(mutant: type[RaftCore], invariants: set[str]) -> None:
    found = _first_violation(mutant)
    assert found is not None, f"{mutant.__name__} survived seeds {SEEDS}"
    assert found[1] in invariants, found


def test_real_core_passes_the_seeds_that_catch_the_mutants() -> None:
    for seed in (2, 7):
        config = WorldConfig(seed=seed, faults=FaultPlan.parse("swarm"), duration_s=2.0)
        result = World(config).run()
        assert result.ok, result.summary_line()


def test_a_violation_replays_exactly() -> None:
    """The same seed stops at the same step with the same trace: `--seed N` replays it."""
    runs = []
    for _ in range(2):
        config = WorldConfig(seed=7, faults=FaultPlan.parse("swarm"), duration_s=2.0)
        world = World(config, core_class=mutants.NoTruncateConflict)
        result = world.run()
        assert result.violation is not None
        assert world.trace is not None
        runs.append((result.violation, result.steps, world.trace.text()))
    assert runs[0] == runs[1]
