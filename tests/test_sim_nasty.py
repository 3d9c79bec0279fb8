"""Nasty simulator seeds: fault plans aimed at where Raft bugs live (a crash inside a vote's
persist, storms of concurrent candidacies, a leader cut off holding an uncommitted tail,
piecemeal replication, long reorder delays, duplicates, membership changes). The real core
must pass every check; this module is also the simulation half of the mutmut kill command
(setup.cfg [mutmut], docs/simulation.md "Mutation testing")."""

from __future__ import annotations

import pytest

from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig

PLANS: list[tuple[int, str]] = [
    (3, "vote_crash=1,election_storm=1,reorder=0.5"),
    (3, "election_storm=0.8,small_batches=1,isolate_leader=0.8,crash=0.5"),
    (3, "duplicate=1,reorder=1,loss=0.5,asymmetric=0.7"),
    (3, "crash=1,disk=1,partition=0.7,flapping=0.7"),
    (5, "vote_crash=1,election_storm=1,small_batches=1,reorder=1,duplicate=1"),
    (5, "membership=1,crash=0.5,partition=0.5,isolate_leader=0.5"),
]
SEEDS = range(1, 5)


@pytest.mark.parametrize("nodes, faults", PLANS, ids=[f"{n}n-{f}" for n, f in PLANS])
def test_real_core_passes_nasty_seeds(nodes: int, faults: str) -> None:
    injected = 0
    for seed in SEEDS:
        config = WorldConfig(
            seed=seed, nodes=nodes, faults=FaultPlan.parse(faults), duration_s=2.0, trace=False
        )
        result = World(config).run()
        assert result.ok, result.summary_line()
        injected += sum(result.faults_injected.values())
    assert injected > 0, f"no fault struck in seeds {SEEDS}"


def test_real_core_passes_swarm_seeds_21_to_25() -> None:
    """Plain swarm seeds, in the kill command for mutmut: seed 23 (3 nodes) delivers an
    AppendEntries overlapping a follower's fresh snapshot, which `ack_holds_entries` needs to
    catch a follower that stops at its snapshot yet acknowledges the whole request."""
    for seed in range(21, 26):
        config = WorldConfig(
            seed=seed, faults=FaultPlan.parse("swarm"), duration_s=2.0, trace=False
        )
        result = World(config).run()
        assert result.ok, result.summary_line()
