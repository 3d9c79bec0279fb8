"""Membership changes in the simulator: 5-node worlds where a member is removed (and shut
down) and added back while other faults strike; every safety check runs as usual, and the
trace holds the ChangeMembership actions."""

from __future__ import annotations

import pytest

from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig


@pytest.mark.parametrize(
    "seed, faults",
    [
        (1, "membership=1"),
        (2, "membership=1,crash=0.5,partition=0.5"),
        (3, "membership=1,loss=0.5,duplicate=0.5,reorder=0.5"),
        (4, "membership=1,isolate_leader=0.7,vote_crash=0.5,election_storm=0.5"),
    ],
)
def test_members_are_removed_and_added_back_under_faults(seed: int, faults: str) -> None:
    world = World(WorldConfig(seed=seed, nodes=5, faults=FaultPlan.parse(faults), duration_s=3.0))
    result = world.run()
    assert result.ok, result.summary_line()
    assert result.faults_injected.get("member_removed", 0) >= 1, result.faults_injected
    assert world.trace is not None
    changes = [line for line in world.trace.lines if '"ChangeMembership"' in line]
    assert len(changes) >= 2, changes
    # Converged with every member back: the final configuration holds all five nodes.
    for node in world.nodes.values():
        assert node is not None
        assert node.members() == (1, 2, 3, 4, 5)


def test_membership_needs_five_nodes() -> None:
    """A 3-node world ignores the kind: removing one of three leaves no fault tolerance."""
    world = World(WorldConfig(seed=1, nodes=3, faults=FaultPlan.parse("membership=1")))
    result = world.run()
    assert result.ok, result.summary_line()
    assert "member_removed" not in result.faults_injected
