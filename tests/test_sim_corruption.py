"""Disk corruption in the simulator: injected on at most f nodes, detected, fail-stopped,
and the healthy majority stays correct and live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mox.cli import cli
from mox.node.runtime import Node
from mox.sim.faults import FaultPlan
from mox.sim.world import SimResult, World, WorldConfig

CORRUPTION = "corrupt_sector=1,misdirected_write=1,crash=1"


def _run(seed: int, faults: str, *, nodes: int = 3, duration_s: float = 1.0) -> SimResult:
    config = WorldConfig(
        seed=seed, nodes=nodes, faults=FaultPlan.parse(faults), duration_s=duration_s
    )
    return World(config).run()


def _assert_correct_and_live(result: SimResult) -> None:
    assert result.ok, result.summary_line()
    # Liveness and the end-to-end checks ran over the healthy nodes.
    assert result.checks["convergence"] == 1
    assert result.checks["linearizability"] == 1
    assert result.checks["acknowledged_writes_applied"] > 0
    assert result.operations["ok"] > 0


def test_corruption_is_injected_on_at_most_f_nodes_and_detected() -> None:
    injected = 0
    fail_stopped = 0
    for seed in range(0, 8):
        result = _run(seed, CORRUPTION)
        _assert_correct_and_live(result)
        assert 1 <= len(result.corrupt_nodes) <= 1  # f = 1 of 3
        assert set(result.failed_nodes) <= set(result.corrupt_nodes)
        assert set(result.corruption_injected) == set(result.corrupt_nodes)
        injected += sum(result.corruption_injected.values())
        fail_stopped += len(result.failed_nodes)
        for what in result.failed_nodes.values():
            assert " at offset " in what
    assert injected > 0
    assert fail_stopped > 0


def test_five_nodes_get_at_most_two_corrupt_disks_one_with_membership_changes() -> None:
    sizes = set()
    for seed in range(6, 11):
        result = _run(seed, "corrupt_sector=1,crash=0.5", nodes=5)
        _assert_correct_and_live(result)
        assert 1 <= len(result.corrupt_nodes) <= 2
        sizes.add(len(result.corrupt_nodes))
    assert sizes == {1, 2}  # the seed chooses how many
    with_membership = _run(1, "corrupt_sector=1,membership=1", nodes=5)
    _assert_correct_and_live(with_membership)
    assert len(with_membership.corrupt_nodes) == 1


def test_single_node_and_corruption_off_get_no_corrupt_disk() -> None:
    assert _run(1, "corrupt_sector=1", nodes=1).corrupt_nodes == ()
    result = _run(1, "crash,loss")
    assert result.corrupt_nodes == ()
    assert result.failed_nodes == {}
    assert not any(
        k.startswith(("disk_corrupt", "disk_misdirected")) for k in result.faults_injected
    )


def test_a_node_failing_at_recovery_stays_down_and_the_others_converge() -> None:
    """Seed 3: a crash, then the corrupt node's manifest fails verification at reopen."""
    result = _run(3, CORRUPTION)
    _assert_correct_and_live(result)
    ((node_id, what),) = result.failed_nodes.items()
    assert node_id in result.corrupt_nodes
    assert what.startswith("recovery: ")


def test_damage_met_while_running_fail_stops_that_node_only() -> None:
    """Damage every SSTable of the corrupt node at once: it meets it at its next read of
    a table (a client's stale read, a snapshot, a compaction, or the final scrub), stops,
    takes no more steps, and the other two finish the run correct and live."""
    world = World(
        WorldConfig(
            seed=5,
            faults=FaultPlan.parse("misdirected_write=0.01"),
            duration_s=2.0,
            corrupt_node_memtable_size_bytes=16 * 1024,
        )
    )
    (victim,) = world.corrupt_nodes
    kept: list[Node] = []

    def damage(w: World) -> None:
        node = w.nodes[victim]
        assert node is not None
        kept.append(node)
        disk = w.disks[victim]
        fs = disk.filesystem()
        tables = [p for p in disk.durable_paths() if p.endswith(".sst") and fs.exists(p)]
        assert tables
        for path in tables:
            for position in range(3, fs.open(path).size(), 256):
                disk.flip_bit(path, position * 8)

    world.at(0.5, damage)
    steps: dict[int, int] = {}
    original = world._on_step

    def counting(
        node: Node, appended: list[tuple[int, int, int]], applied: list[tuple[int, int]]
    ) -> None:
        steps[node.node_id] = steps.get(node.node_id, 0) + 1
        if node.stopped:
            raise AssertionError(f"node {node.node_id} took a step after it stopped")
        original(node, appended, applied)

    world._on_step = counting  # type: ignore[method-assign]
    result = world.run()
    _assert_correct_and_live(result)
    assert list(result.failed_nodes) == [victim]
    assert result.failed_nodes[victim].startswith("run: ")
    assert ".sst at offset " in result.failed_nodes[victim]
    (node,) = kept
    assert node.stopped
    assert node.storage_fault is not None
    assert world.storage_fault_events[0]["node"] == victim
    assert world.storage_fault_events[0]["path"] == node.storage_fault.path
    # The healthy nodes went on stepping after the victim stopped.
    assert all(steps.get(n, 0) > 0 for n in world.node_ids if n != victim)


def test_corruption_runs_are_deterministic() -> None:
    first = _run(4, CORRUPTION)
    second = _run(4, CORRUPTION)
    assert first.trace_sha256 == second.trace_sha256
    assert first.state_hash == second.state_hash
    assert first.failed_nodes == second.failed_nodes
    assert first.corruption_injected == second.corruption_injected


def test_simulate_summary_counts_corruption(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        cli,
        ["simulate", "--seeds", "0..3", "--faults", CORRUPTION, "--duration", "1",
         "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "corruption faults injected" in result.output
    assert "nodes fail-stopped on a storage fault" in result.output
    totals = json.loads(out.read_text())["totals"]["corruption"]
    assert totals["nodes_with_corrupt_disk"] == 4
    assert totals["faults_injected"] > 0
    assert 0 < totals["nodes_fail_stopped"] <= totals["nodes_struck"] <= 4
    assert sum(totals["fail_stopped_during"].values()) == totals["nodes_fail_stopped"]


@pytest.mark.parametrize("text", ["corrupt_sector=2", "misdirected_write=x"])
def test_bad_corruption_intensity_is_refused(text: str) -> None:
    result = CliRunner().invoke(cli, ["simulate", "--seed", "1", "--faults", text])
    assert result.exit_code == 2
    assert text.split("=")[0] in result.output


@pytest.mark.slow
def test_a_run_with_a_node_fail_stopped_mid_run_conforms_to_the_spec(tmp_path: Path) -> None:
    """For the spec a fail-stopped node is one that takes no more steps: TLC accepts the
    trace of a run where a node stopped on damaged data while running."""
    from checker.conformance import check_traces

    world = World(
        WorldConfig(
            seed=1,
            faults=FaultPlan.parse(CORRUPTION),
            duration_s=1.0,
            corrupt_node_memtable_size_bytes=16 * 1024,
        )
    )
    result = world.run()
    _assert_correct_and_live(result)
    ((node_id, what),) = result.failed_nodes.items()
    assert node_id in result.corrupt_nodes
    assert what.startswith("run: "), what
    assert world.trace is not None
    path = tmp_path / "seed-1.ndjson"
    path.write_text(world.trace.text())
    (verdict,) = check_traces([str(path)])
    assert verdict.accepted, verdict.describe()


def test_snapshot_installs_are_logged_with_index_term_size_and_sender() -> None:
    """A node that was down while the others compacted catches up by a snapshot: the
    runtime logs `node.snapshot_installed` with what and from whom."""
    installs: list[dict[str, object]] = []
    for seed in range(0, 6):
        world = World(
            WorldConfig(seed=seed, faults=FaultPlan.parse("crash=1,partition=1"), duration_s=2.0)
        )
        result = world.run()
        assert result.ok, result.summary_line()
        for event in world.snapshot_install_events:
            assert isinstance(event["index"], int) and event["index"] >= 1
            assert isinstance(event["term"], int) and event["term"] >= 1
            assert isinstance(event["size_bytes"], int) and event["size_bytes"] > 0
            assert event["from_node"] in world.node_ids
            assert event["from_node"] != event["node"]
        installs += world.snapshot_install_events
    assert installs, "no snapshot was installed in these seeds"
