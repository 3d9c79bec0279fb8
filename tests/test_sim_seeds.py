"""Many short simulated runs with swarm faults: every seed must pass every check.

Seeds run in batches (one pytest item per batch), so pytest-xdist spreads them over cores.
A failure names the seed, the invariant and the command that replays it.
"""

from __future__ import annotations

import pytest

from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig

BATCH_SEEDS = 10
BATCHES = 30  # 300 seeds


def _run(seed: int, faults: str, nodes: int = 3, duration_s: float = 1.0) -> None:
    world = World(
        WorldConfig(seed=seed, nodes=nodes, faults=FaultPlan.parse(faults), duration_s=duration_s)
    )
    result = world.run()
    assert result.ok, (
        f"{result.summary_line()}\nreplay: mox simulate --seed {seed} --nodes {nodes} "
        f"--faults {faults} --duration {duration_s:g}"
    )
    # The run did something: the cluster elected, took client operations, checked them.
    assert result.steps > 0
    assert result.checks["linearizability"] == 1
    assert result.checks["convergence"] == 1
    assert result.operations["ok"] > 0


@pytest.mark.parametrize("batch", range(BATCHES))
def test_swarm_seeds_pass_every_check(batch: int) -> None:
    for seed in range(batch * BATCH_SEEDS, (batch + 1) * BATCH_SEEDS):
        _run(seed, "swarm")


@pytest.mark.parametrize("seed", range(5))
def test_five_node_clusters_with_every_fault(seed: int) -> None:
    _run(10_000 + seed, "all", nodes=5)


def test_heavy_faults_on_three_nodes() -> None:
    for seed in range(20_000, 20_005):
        _run(seed, "all=1", duration_s=2.0)


def test_single_node_cluster() -> None:
    _run(30_000, "disk,clock_drift")


def test_swarm_turns_on_different_fault_sets_per_seed() -> None:
    described = {
        World(WorldConfig(seed=s, faults=FaultPlan.parse("swarm"))).plan.describe()
        for s in range(20)
    }
    assert len(described) > 10
    assert all(d != "swarm" for d in described)


def test_faults_are_actually_injected_across_seeds() -> None:
    totals: dict[str, int] = {}
    for seed in range(40_000, 40_006):
        result = World(
            WorldConfig(seed=seed, faults=FaultPlan.parse("all=1"), duration_s=2.0)
        ).run()
        assert result.ok, result.summary_line()
        for kind, count in result.faults_injected.items():
            totals[kind] = totals.get(kind, 0) + count
    for kind in ("crash", "restart", "partition", "net_dropped_loss", "net_duplicated"):
        assert totals.get(kind, 0) > 0, (kind, totals)


@pytest.mark.soak
@pytest.mark.parametrize("batch", range(20))
def test_soak_long_swarm_runs(batch: int) -> None:
    for seed in range(100_000 + batch * 50, 100_000 + (batch + 1) * 50):
        _run(seed, "swarm", nodes=5 if seed % 2 else 3, duration_s=20.0)
