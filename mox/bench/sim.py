"""`mox bench sim`: how fast the simulator runs, beside two baselines measured in the same run.

Rows (each over the same seeds):

* **swarm**: the standard configuration: 3 nodes, `--duration` virtual seconds of the fault
  phase with swarm faults, clients, every invariant checked after every step, the history
  checked for linearizability at the end (what `mox simulate` and the test suite run);
* **faults off** (baseline 1): the same worlds with no faults: the cost of the fault
  machinery and of the extra recovery work faults cause;
* **core alone** (baseline 2): three `RaftCore`s over an in-memory message queue, no
  runtime, storage, state machine, asyncio or checks, committing the same number of
  commands as the swarm row did: the floor set by the consensus core itself.

A step is one Ready handled by one node. Numbers: steps per wall second, simulated seconds
per wall second, seeds per minute (rows 1 and 2).
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

import attrs
import click

from mox.consensus.raft.core import RaftConfig, RaftCore, RestoredState, Role
from mox.consensus.raft.messages import Message
from mox.sim.faults import FaultPlan
from mox.sim.world import World, WorldConfig

__all__ = ["BenchRow", "command", "run_core_alone", "run_worlds"]


@attrs.frozen
class BenchRow:
    name: str
    seeds: int
    steps: int
    commands: int
    simulated_s: float
    wall_s: float
    # CPU time of this process: robust to other load on a shared machine.
    cpu_s: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steps_per_cpu_s(self) -> float:
        return self.steps / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def seeds_per_min(self) -> float:
        return 60.0 * self.seeds / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def sim_speed(self) -> float:
        return self.simulated_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **attrs.asdict(self),
            "steps_per_s": round(self.steps_per_s, 1),
            "steps_per_cpu_s": round(self.steps_per_cpu_s, 1),
            "seeds_per_min": round(self.seeds_per_min, 2),
            "simulated_s_per_wall_s": round(self.sim_speed, 3),
        }


def run_worlds(name: str, seeds: range, faults: FaultPlan, duration_s: float) -> BenchRow:
    steps = commands = 0
    simulated_s = wall_s = cpu_s = 0.0
    for seed in seeds:
        world = World(WorldConfig(seed=seed, faults=faults, duration_s=duration_s))
        started_s = time.perf_counter()
        started_cpu_s = time.process_time()
        result = world.run()
        wall_s += time.perf_counter() - started_s
        cpu_s += time.process_time() - started_cpu_s
        if not result.ok:
            raise click.ClickException(f"{name}: {result.summary_line()}")
        steps += result.steps
        simulated_s += result.simulated_s
        commands += result.operations.get("write", 0)
    return BenchRow(name, len(seeds), steps, commands, simulated_s, wall_s, cpu_s)


def run_core_alone(commands_total: int, seed: int = 1) -> BenchRow:
    """Three cores, messages delivered in FIFO order in memory, one command per proposal."""
    rng = random.Random(seed)
    members = (1, 2, 3)

    def timeouts() -> Any:
        while True:
            yield rng.randrange(15, 30)

    cores = {
        n: RaftCore(
            RaftConfig(node_id=n, members=members, heartbeat_ticks=5), RestoredState(), timeouts()
        )
        for n in members
    }
    queue: deque[Message] = deque()
    steps = 0
    committed = 0
    started_s = time.perf_counter()
    started_cpu_s = time.process_time()
    ticks = 0
    command = b"x" * 120
    while committed < commands_total:
        ticks += 1
        assert ticks < 10_000_000
        for core in cores.values():
            core.tick()
        leader = next((c for c in cores.values() if c.role is Role.LEADER), None)
        if leader is not None:
            leader.propose([command])
        for _ in range(10_000):
            for core in cores.values():
                if core.has_ready():
                    rd = core.ready()
                    queue.extend(rd.messages_now)
                    queue.extend(rd.messages_after_persist)
                    if core is leader:
                        committed += sum(len(e.commands) for e in rd.committed_entries)
                    core.advance(rd)
                    steps += 1
            if not queue:
                break
            while queue:
                msg = queue.popleft()
                cores[msg.dst].step(msg)
    wall_s = time.perf_counter() - started_s
    cpu_s = time.process_time() - started_cpu_s
    # Virtual time: one tick is 10 ms in the simulator's standard configuration.
    return BenchRow("core alone", 0, steps, committed, ticks * 0.010, wall_s, cpu_s)


@click.command(name="sim")
@click.option(
    "--seeds",
    "seed_count",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Seeds per row.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0.1, 600.0),
    default=3.0,
    show_default=True,
    help="Virtual seconds of each world's fault phase.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the rows as JSON here.",
)
def command(seed_count: int, duration: float, json_path: Path | None) -> None:
    """Simulated steps per wall second and seeds per minute, beside faults-off and core-alone."""
    seeds = range(1, seed_count + 1)
    swarm = run_worlds("swarm", seeds, FaultPlan.parse("swarm"), duration)
    quiet = run_worlds("faults off", seeds, FaultPlan.none(), duration)
    core = run_core_alone(max(swarm.commands, 1))
    rows = [swarm, quiet, core]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mox bench sim: {seed_count} seeds x {duration:g} s fault phase, 3 nodes")
    columns = (
        "row",
        "seeds",
        "steps",
        "writes",
        "wall s",
        "cpu s",
        "steps/s",
        "steps/cpu s",
        "sim s/wall s",
        "seeds/min",
        "steps/cpu s vs swarm",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row.name,
            str(row.seeds) if row.seeds else "-",
            f"{row.steps:,}",
            f"{row.commands:,}",
            f"{row.wall_s:.2f}",
            f"{row.cpu_s:.2f}",
            f"{row.steps_per_s:,.0f}",
            f"{row.steps_per_cpu_s:,.0f}",
            f"{row.sim_speed:.2f}",
            f"{row.seeds_per_min:.1f}" if row.seeds else "-",
            f"{row.steps_per_cpu_s / swarm.steps_per_cpu_s:.2f}x" if swarm.steps_per_cpu_s else "-",
        )
    Console(width=170).print(table)
    if json_path is not None:
        json_path.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
