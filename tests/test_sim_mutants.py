"""The simulator catches known Raft bugs: deliberately broken cores (`checker.mutants`) run
in ordinary swarm worlds until an invariant fires; the real core passes the same seeds.

Seed ranges are bounded. Each range holds the first catching seed measured over 1..100 or
1..150 (docs/simulation.md "Known bugs caught"); the soak test runs every range from seed 1.
"""

from __future__ import annotations

import pytest

from checker import mutants
from mox.consensus.raft.core import RaftCore
from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig

# Swarm worlds; a mutant whose bug needs a rarer schedule names the faults it needs.
SWARM = "swarm"
# Crashes while a vote is being persisted and narrow election timeouts (many candidacies).
VOTE_STORM = "vote_crash=1,election_storm=1"
# Leaders cut off while messages are reordered and elections are frequent: deposed leaders'
# delayed AppendEntries.
STALE_LEADERS = "isolate_leader=1,reorder=1,election_storm=1"

# mutant, nodes, faults, default-suite seeds, soak seeds, invariants that may catch it.
# Seeds re-measured when elections gained pre-vote and check-quorum and the workload gained
# follower reads (the same seeds take other paths): any change of the core's or the world's
# behaviour can move them; re-measure with the soak ranges.
KNOWN_BUGS: list[tuple[type[RaftCore], int, str, range, range, set[str]]] = [
    (
        # Over 1..120: seed 13 (convergence, slow), 22 (election_safety), 59, 74.
        mutants.NoStepDownOnHigherTerm,
        3,
        SWARM,
        range(20, 23),
        range(1, 41),
        # Two leaders of a term, or (seed 13) a cluster that never settles.
        {"election_safety", "node_failure", "convergence"},
    ),
    (
        # First caught at seed 3 (also 4, 7, 10).
        mutants.NoTruncateConflict,
        3,
        SWARM,
        range(1, 11),
        range(1, 41),
        {"committed_entry_kept", "log_matching", "state_machine_safety"},
    ),
    (
        # Needs a crash between the vote leaving and the vote being durable, then a second
        # candidate of the same term asking the restarted voter. With pre-vote no swarm seed
        # of 1..400 on 3 nodes had that; under VOTE_STORM it is caught at seed 18 (also 25,
        # 38, 65 over 1..150).
        mutants.VoteSentBeforePersist,
        3,
        VOTE_STORM,
        range(16, 19),
        range(1, 101),
        {
            "election_safety",
            "committed_entry_kept",
            "leader_completeness",
            "log_matching",
            "state_machine_safety",
            "node_failure",
        },
    ),
    (
        # A follower keeps obeying a deposed leader's delayed AppendEntries. With pre-vote
        # and check-quorum (a deposed leader steps down) no swarm seed of 1..100 on 5 nodes
        # catches it any more; under STALE_LEADERS seeds 31 and 42 of 1..60 do.
        mutants.AcceptStaleAppendEntries,
        5,
        STALE_LEADERS,
        range(31, 32),
        range(1, 61),
        {
            "convergence",
            "committed_entry_kept",
            "leader_completeness",
            "log_matching",
            "state_machine_safety",
            "node_failure",
        },
    ),
]


def _first_violation(
    core_class: type[RaftCore], nodes: int, faults: str, seeds: range
) -> tuple[int, str] | None:
    for seed in seeds:
        config = WorldConfig(
            seed=seed, nodes=nodes, faults=FaultPlan.parse(faults), duration_s=2.0, trace=False
        )
        result = World(config, core_class=core_class).run()
        if not result.ok:
            assert result.violation is not None
            return seed, result.violation.invariant
    return None


@pytest.mark.parametrize(
    "mutant, nodes, faults, seeds, invariants",
    [(m, n, f, seeds, inv) for m, n, f, seeds, _soak, inv in KNOWN_BUGS if seeds],
    ids=[m.__name__ for m, _n, _f, seeds, *_ in KNOWN_BUGS if seeds],
)
def test_known_bug_is_caught(
    mutant: type[RaftCore], nodes: int, faults: str, seeds: range, invariants: set[str]
) -> None:
    found = _first_violation(mutant, nodes, faults, seeds)
    assert found is not None, f"{mutant.__name__} survived seeds {seeds} on {nodes} nodes"
    assert found[1] in invariants, found


@pytest.mark.soak
@pytest.mark.parametrize(
    "mutant, nodes, faults, seeds, invariants",
    [(m, n, f, soak, inv) for m, n, f, _seeds, soak, inv in KNOWN_BUGS],
    ids=[m.__name__ for m, *_ in KNOWN_BUGS],
)
def test_known_bug_is_caught_from_seed_1(
    mutant: type[RaftCore], nodes: int, faults: str, seeds: range, invariants: set[str]
) -> None:
    found = _first_violation(mutant, nodes, faults, seeds)
    assert found is not None, f"{mutant.__name__} survived seeds {seeds} on {nodes} nodes"
    assert found[1] in invariants, found


@pytest.mark.parametrize(
    "nodes, faults, seeds",
    [
        (3, SWARM, range(20, 23)),
        (3, SWARM, range(1, 4)),
        (3, VOTE_STORM, range(16, 19)),
        (5, STALE_LEADERS, range(31, 32)),
    ],
)
def test_real_core_passes_the_seeds_that_catch_the_mutants(
    nodes: int, faults: str, seeds: range
) -> None:
    for seed in seeds:
        config = WorldConfig(
            seed=seed, nodes=nodes, faults=FaultPlan.parse(faults), duration_s=2.0, trace=False
        )
        result = World(config).run()
        assert result.ok, result.summary_line()


def test_a_violation_replays_exactly() -> None:
    """The same seed stops at the same step with the same trace: `--seed N` replays it."""
    runs = []
    for _ in range(2):
        config = WorldConfig(seed=3, faults=FaultPlan.parse("swarm"), duration_s=2.0)
        world = World(config, core_class=mutants.NoTruncateConflict)
        result = world.run()
        assert result.violation is not None
        assert world.trace is not None
        runs.append((result.violation, result.steps, world.trace.text()))
    assert runs[0] == runs[1]
