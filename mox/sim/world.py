"""A whole Mox cluster in simulated time, disk and network, with faults, checks and a trace.

Theory of operation. `World(config).run()` builds N `mox.node.Node`s, the same class
`mox start` runs, each over its own `SimDisk`, all on one `SimNetwork`, on a fresh
`VirtualTimeLoop`. Every source of randomness is a child of one `random.Random(seed)`,
derived in a fixed order, so the seed decides everything: the fault plan (swarm), each
disk's faults, each node's election timeouts and clock drift, the network's delays and
losses, when faults strike, and what the clients do.

A run has three phases:

1. faults: clients write and read while fault tasks crash and restart nodes and cut links,
   for `duration_s` of virtual time or `steps_max` node steps;
2. heal: faults stop, every link heals, every crashed node restarts, clients finish;
   the cluster must converge (one leader, every log, commit and applied index equal)
   within `converge_bound_s`;
3. final checks: every acknowledged write is applied on every replica (each client's
   session record on every replica covers its highest acknowledged request), replicas'
   state store checksums are equal, final reads agree, and the history is linearizable.

After every step of every node (one Ready handled) the `InvariantChecker` checks election
safety, log matching, committed-entry persistence, leader completeness and state machine
safety; log prefixes are compared across nodes every `prefix_check_every_steps` steps.
The first violation stops the run. A node that dies of an exception (an assertion in the
core or storage, a recovery that fails) is a violation too.

Disk corruption (`corrupt_sector`, `misdirected_write`) strikes only the disks of at most
f = (n-1)/2 nodes, chosen per seed (`corrupt_nodes`), so a majority always stays healthy.
Such a node that meets damaged data fail-stops (`Node.fail_stop`): it is recorded in
`failed`, never restarted (there is no repair yet), and left out of convergence and of the
final replica comparisons; everything it did before it stopped was checked like any
node's steps. A storage fault on a node outside `corrupt_nodes` is a violation (its disk
never lies). Before the final checks, every corrupt node still running is scrubbed (its
whole state store, WAL and snapshot file read and verified), so that damage it never read
during the run cannot slip into the comparisons either.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import math
import random
import time
from collections.abc import Callable
from typing import IO, Any

import attrs
import msgspec
import xxhash

import mox
from checker.lin import HistoryRecorder, check_kv, check_stale_reads
from mox.consensus.raft.core import ConfChange, RaftCore
from mox.consensus.raft.messages import AppendEntriesResponse, Message, decode_message
from mox.consensus.raft.trace import message_to_trace
from mox.errors import StorageFaultError
from mox.io.interfaces import FileSystem
from mox.io.sim import DiskFaults, SimClock, SimDisk, SimRandom
from mox.io.simloop import VirtualTimeLoop
from mox.node.errors import RequestError
from mox.node.runtime import STORAGE_FAULTS, Node, NodeConfig
from mox.node.snapshot_file import read_snapshot
from mox.node.trace import TraceLog
from mox.sim.faults import FaultPlan
from mox.sim.invariants import InvariantChecker, Violation
from mox.sim.network import NetworkFaults, SimNetwork
from mox.sim.workload import TENANT_ID, Workload, WorkloadConfig, talent_id
from mox.statemachine import keys
from mox.statemachine.commands import GetTalent, decode_result, encode_query
from mox.statemachine.model import Session
from mox.storage.lsm import LsmOptions
from mox.storage.lsm.manifest import read_manifest
from mox.storage.lsm.sstable import BlockCache, Table, table_name
from mox.storage.wal import WAL_DIR

__all__ = ["CORRUPTION_DISK_FAULTS", "SimResult", "World", "WorldConfig", "run_seed"]

# The SimDisk fault kinds that damage data (the others lose or tear unsynced writes).
CORRUPTION_DISK_FAULTS = ("corrupt_sector", "misdirected_write", "bit_flip_on_read")

_session_decoder = msgspec.msgpack.Decoder(Session)


@attrs.frozen
class WorldConfig:
    seed: int
    nodes: int = 3
    faults: FaultPlan = attrs.field(factory=FaultPlan.none)
    # The fault phase lasts this much virtual time, or until this many node steps.
    duration_s: float = 3.0
    steps_max: int | None = None
    converge_bound_s: float = 30.0
    workload: WorkloadConfig = attrs.field(factory=WorkloadConfig)
    tick_interval_s: float = 0.010
    heartbeat_ticks: int = 5
    election_timeout_ticks_min: int = 15
    election_timeout_ticks_max: int = 30
    snapshot_threshold_entries: int = 48
    wal_segment_size_bytes: int = 64 * 1024
    prefix_check_every_steps: int = 50
    trace: bool = True
    # The memtable of nodes whose disks corrupt data. The default (the healthy nodes' size)
    # keeps a seed's run unchanged until a fault is injected; a small one puts their state
    # in SSTables read from disk while they run, so damage there is met during the run.
    corrupt_node_memtable_size_bytes: int = 256 * 1024

    def __attrs_post_init__(self) -> None:
        if self.nodes not in (1, 3, 5):
            raise ValueError(f"nodes must be 1, 3 or 5, got {self.nodes}")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.steps_max is not None and self.steps_max < 1:
            raise ValueError(f"steps_max must be >= 1, got {self.steps_max}")
        if self.corrupt_node_memtable_size_bytes < 1024:
            raise ValueError(
                "corrupt_node_memtable_size_bytes must be >= 1024, got "
                f"{self.corrupt_node_memtable_size_bytes}"
            )


@attrs.frozen
class SimResult:
    seed: int
    nodes: int
    faults: str
    ok: bool
    violation: Violation | None
    steps: int
    simulated_s: float
    wall_s: float
    faults_injected: dict[str, int]
    checks: dict[str, int]
    operations: dict[str, int]
    state_hash: str
    trace_sha256: str
    trace_lines: int
    linearizability: str
    # Messages the cores dropped as impossible from a correct peer, by reason (RaftCore.rejected).
    messages_rejected: dict[str, int] = attrs.field(factory=dict)
    # Nodes whose disks may corrupt data, and those that fail-stopped on it: node id ->
    # "<during>: <path> at offset <n>: <problem>".
    corrupt_nodes: tuple[int, ...] = ()
    failed_nodes: dict[int, str] = attrs.field(factory=dict)
    # Corruption faults injected per corrupt node (sectors, misdirected writes, read flips).
    corruption_injected: dict[int, int] = attrs.field(factory=dict)

    def summary_line(self) -> str:
        verdict = (
            "ok" if self.ok else f"VIOLATION {self.violation.describe() if self.violation else ''}"
        )
        return (
            f"seed {self.seed}: {verdict}; {self.steps} steps, {self.simulated_s:.1f} s simulated, "
            f"faults {self.faults}"
        )

    def to_json(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=True)
        return out


class _Stop(Exception):
    """Raised inside the run to end it at a violation."""


class World:
    """One simulated cluster run. `run()` executes it on a fresh VirtualTimeLoop."""

    def __init__(
        self,
        config: WorldConfig,
        *,
        trace_out: IO[str] | None = None,
        core_class: type[RaftCore] = RaftCore,
    ) -> None:
        self.config = config
        self._core_class = core_class
        root = random.Random(config.seed)

        def child() -> random.Random:
            return random.Random(root.getrandbits(64))

        self._plan_rng = SimRandom(child())
        self._net_rng = SimRandom(child())
        self._workload_rng = SimRandom(child())
        self._fault_rng = SimRandom(child())
        self.node_ids: tuple[int, ...] = tuple(range(1, config.nodes + 1))
        self._disk_rngs = {n: child() for n in self.node_ids}
        self._node_rngs = {n: SimRandom(child()) for n in self.node_ids}
        # Derived last, so that every stream above is what it was before corruption faults.
        self._corrupt_rng = random.Random(root.getrandbits(64))
        self._drift_draws = {n: self._plan_rng.random() for n in self.node_ids}
        self.plan = config.faults.resolve(self._plan_rng)
        self._trace_out = trace_out

        self.clock = SimClock()  # true virtual time, for the trace and the history
        self.trace = TraceLog(self.clock, out=trace_out) if config.trace else None
        plan = self.plan
        self.network = SimNetwork(
            self._net_rng,
            _network_faults(plan),
            describe=_describe if config.trace else None,
            trace=self.trace.emit if self.trace is not None else None,
        )
        disk_faults = DiskFaults(
            torn_write_probability=0.5 * plan.intensity("disk"),
            sync_latency_s_min=0.0001,
            sync_latency_s_max=0.001 + 0.01 * plan.intensity("disk"),
        )
        self.corrupt_nodes = _choose_corrupt_nodes(plan, self.node_ids, self._corrupt_rng)
        corrupt_faults = attrs.evolve(
            disk_faults,
            # Rare: the storage re-reads a block that fails verification, so a transient
            # flip is masked unless it strikes every attempt.
            bit_flip_on_read_probability=0.01 * plan.intensity("corrupt_sector"),
            misdirected_write_probability=0.05 * plan.intensity("misdirected_write"),
            # A misdirected WAL write of the final flush before a crash would look like a
            # torn write and be truncated (wal.py's known limit): an acknowledged entry
            # forgotten, which Raft does not survive. Not injected: see docs/simulation.md.
            misdirect_excluded_prefixes=(f"{WAL_DIR}/",),
        )
        # Corruption draws come from their own RNG: a corrupt node's latencies and torn
        # writes are what they would be without corruption, until something is injected.
        self.disks = {
            n: SimDisk(
                self._disk_rngs[n],
                corrupt_faults,
                fault_rng=random.Random(self._corrupt_rng.getrandbits(64)),
            )
            if n in self.corrupt_nodes
            else SimDisk(self._disk_rngs[n], disk_faults)
            for n in self.node_ids
        }
        # Nodes that fail-stopped on damaged data: node id -> what and where. Never restarted.
        self.failed: dict[int, str] = {}
        self.storage_fault_events: list[dict[str, Any]] = []
        self.snapshot_install_events: list[dict[str, Any]] = []
        self.drift_ppm = {
            n: (2 * self._drift_draws[n] - 1) * 50_000 * plan.intensity("clock_drift")
            for n in self.node_ids
        }
        self.nodes: dict[int, Node | None] = {n: None for n in self.node_ids}
        self.checker = InvariantChecker()
        self.history = HistoryRecorder()
        self.workload = Workload(
            self, self._workload_rng, self.clock, config.workload, self.history
        )
        self.faults_injected: dict[str, int] = {}
        self._restart_tasks: dict[int, asyncio.Task[None]] = {}
        # Nodes being opened now: a restart task and the healing may both start a node.
        self._starting: set[int] = set()
        self._phase_over: asyncio.Event | None = None
        self._steps_since_prefix_check = 0
        self.steps = 0
        self.unexpected_errors: list[str] = []
        self.messages_rejected: dict[str, int] = {}
        self._scheduled: list[tuple[float, Callable[[World], None]]] = []
        # election_storm: every node times out within a few ticks of the others during the
        # fault phase (split votes, concurrent candidates in one term, where vote-durability
        # bugs show); the normal range returns at the heal, so the cluster can converge.
        self._healing = False
        self._setup_stop: asyncio.Event | None = None
        # Members removed by the membership fault and shut down until added back (a dict
        # used as an ordered set).
        self._storm_range_ticks: tuple[int, int] | None = None
        if plan.enabled("election_storm") and config.nodes > 1:
            low_ticks = config.election_timeout_ticks_min
            spread_ticks = 2 + round(3 * (1 - plan.intensity("election_storm")))
            self._storm_range_ticks = (low_ticks, low_ticks + spread_ticks)

    def at(self, time_s: float, action: Callable[[World], None]) -> None:
        """Run `action(world)` `time_s` virtual seconds into the fault phase (tests use this to
        break a replica on purpose and show that a check catches it)."""
        assert time_s >= 0
        self._scheduled.append((time_s, action))

    # -- ClusterAccess (workload) ------------------------------------------------------

    def running_node(self, node_id: int) -> Node | None:
        node = self.nodes.get(node_id)
        if node is None or node.stopped:
            return None
        return node

    # -- running -----------------------------------------------------------------------

    def run(self) -> SimResult:
        wall_start_s = time.perf_counter()
        loop = VirtualTimeLoop()
        loop.set_exception_handler(self._loop_exception)
        try:
            linearizability = loop.run_until_complete(self._main())
        finally:
            _cancel_all(loop)
            loop.close()
        wall_s = time.perf_counter() - wall_start_s
        trace_text = self.trace.text() if self.trace is not None else ""
        net = self.network.stats
        injected = dict(self.faults_injected)
        for kind, count in (
            ("net_dropped_loss", net.dropped_loss),
            ("net_dropped_partition", net.dropped_partition),
            ("net_dropped_down", net.dropped_down),
            ("net_duplicated", net.duplicated),
        ):
            if count:
                injected[kind] = count
        for disk in self.disks.values():
            for kind, count in disk.fault_counts.items():
                if count:
                    injected[f"disk_{kind}"] = injected.get(f"disk_{kind}", 0) + count
        violation = self.checker.violation
        return SimResult(
            seed=self.config.seed,
            nodes=self.config.nodes,
            faults=self.plan.describe(),
            ok=violation is None,
            violation=violation,
            steps=self.steps,
            simulated_s=round(self._end_s, 6),
            wall_s=wall_s,
            faults_injected=dict(sorted(injected.items())),
            checks=dict(self.checker.checks),
            operations=self.history.counts(),
            messages_rejected=dict(sorted(self.messages_rejected.items())),
            state_hash=self._state_hash,
            trace_sha256=xxhash.xxh3_128_hexdigest(trace_text.encode()),
            trace_lines=len(self.trace.lines) if self.trace is not None else 0,
            linearizability=linearizability,
            corrupt_nodes=self.corrupt_nodes,
            failed_nodes=dict(sorted(self.failed.items())),
            corruption_injected={
                n: sum(self.disks[n].fault_counts[kind] for kind in CORRUPTION_DISK_FAULTS)
                for n in self.corrupt_nodes
            },
        )

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Background tasks of a crashed node (a WAL flush in flight) fail on the dead disk's
        file handles: expected after a crash. Anything else is a finding."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno == errno.EBADF:
            return
        self.unexpected_errors.append(f"{context.get('message')}: {exc!r}")

    async def _main(self) -> str:
        loop = asyncio.get_running_loop()
        self._phase_over = asyncio.Event()
        self._stop_clients = asyncio.Event()
        self._end_s = 0.0
        self._state_hash = ""
        if self.trace is not None:
            self.trace.header(
                {
                    "nodes": list(self.node_ids),
                    "config": list(self.node_ids),
                    "seed": self.config.seed,
                    "faults": self.plan.to_json(),
                    "mox_version": mox.__version__,
                }
            )
        linearizability = "not checked"
        try:
            for node_id in self.node_ids:
                await self._start_node(node_id)
            # Bootstrap (tenant, talents) before any fault: every seed then spends its
            # fault phase on client operations, not on a setup that faults keep stalling.
            await self._setup()
            stop_clients = self._stop_clients
            clients = [
                loop.create_task(self.workload.run_client(k, stop_clients), name=f"client-{k}")
                for k in range(self.config.workload.clients)
            ]
            fault_tasks = [loop.create_task(t) for t in self._fault_tasks()]
            start_s = loop.time()
            for time_s, action in self._scheduled:
                loop.call_at(start_s + time_s, action, self)
            timer = loop.call_later(self.config.duration_s, self._phase_over.set)
            await self._phase_over.wait()
            timer.cancel()
            self._raise_if_violated()
            # Phase 2: heal.
            for task in fault_tasks:
                task.cancel()
            await asyncio.gather(*fault_tasks, return_exceptions=True)
            self.network.heal()
            self.network.faults = NetworkFaults()
            for node_id in self.corrupt_nodes:
                # Corruption stops with the other faults (damage already done stays).
                disk = self.disks[node_id]
                disk.faults = attrs.evolve(
                    disk.faults, bit_flip_on_read_probability=0.0, misdirected_write_probability=0.0
                )
            self._healing = True
            for node_or_none in self.nodes.values():
                if node_or_none is not None:
                    node_or_none.set_election_timeouts(
                        self.config.election_timeout_ticks_min,
                        self.config.election_timeout_ticks_max,
                    )
            for node_id in self.node_ids:
                restart = self._restart_tasks.pop(node_id, None)
                if restart is not None:
                    restart.cancel()
                if self.nodes[node_id] is None and node_id not in self.failed:
                    await self._start_node(node_id)
            stop_clients.set()
            await asyncio.gather(*clients)
            self._raise_if_violated()
            if self.plan.enabled("membership") and self.config.nodes >= 5:
                await self._ensure_full_membership()
                self._raise_if_violated()
            await self._scrub_corrupt_nodes()
            self._raise_if_violated()
            await self._converge()
            self._raise_if_violated()
            # Phase 3: final checks.
            linearizability = await self._final_checks()
        except _Stop:
            pass
        finally:
            # Clients end at their next operation; nodes stop now (no more writes).
            self._stop_clients.set()
            self._end_s = loop.time()
            self._state_hash = self._compute_state_hash()
            for node in self.nodes.values():
                if node is not None:
                    self._collect_rejected(node)
                    if not node.stopped:
                        node.crash()
        return linearizability

    def _collect_rejected(self, node: Node) -> None:
        for reason, count in node.core.rejected.items():
            self.messages_rejected[reason] = self.messages_rejected.get(reason, 0) + count

    async def _setup(self) -> None:
        stop = asyncio.Event()
        self._setup_stop = stop  # a violation during the setup ends it at once
        handle = asyncio.get_running_loop().call_later(self.config.converge_bound_s, stop.set)
        await self.workload.setup(stop)
        handle.cancel()
        self._raise_if_violated()
        if not self.workload.setup_done:
            self._violate(
                "convergence",
                None,
                f"no fault yet, but the tenant and talents were not created within "
                f"{self.config.converge_bound_s} s",
            )
            raise _Stop()

    def _raise_if_violated(self) -> None:
        if self.checker.failed:
            raise _Stop()

    def _violate(self, invariant: str, node_id: int | None, detail: str) -> None:
        self.checker.fail(invariant, node_id, detail)
        assert self._phase_over is not None
        self._phase_over.set()
        if self._setup_stop is not None:
            self._setup_stop.set()

    # -- nodes -------------------------------------------------------------------------

    def _node_config(self, node_id: int) -> NodeConfig:
        config = self.config
        rate = 1.0 + self.drift_ppm[node_id] / 1_000_000
        plan = self.plan
        batch_entries = 1000
        if plan.enabled("small_batches"):
            # Followers then ack a new leader's log an entry or two at a time, so an entry
            # of an earlier term can reach a majority before the leader's own (Figure 8).
            batch_entries = 1 + round(2 * (1 - plan.intensity("small_batches")))
        return NodeConfig(
            node_id=node_id,
            members=self.node_ids,
            cluster_id="sim",
            # A fast clock ticks more often in true time.
            tick_interval_s=config.tick_interval_s / rate,
            heartbeat_ticks=config.heartbeat_ticks,
            election_timeout_ticks_min=config.election_timeout_ticks_min,
            election_timeout_ticks_max=config.election_timeout_ticks_max,
            max_batch_size=batch_entries,
            snapshot_threshold_entries=config.snapshot_threshold_entries,
            wal_segment_size_bytes=config.wal_segment_size_bytes,
            lsm_options=self._lsm_options(node_id),
        )

    def _lsm_options(self, node_id: int) -> LsmOptions:
        if node_id in self.corrupt_nodes:
            # A small block cache: table reads go to the disk (where the damage is). Reads
            # take no simulated time, so this changes no schedule.
            return LsmOptions(
                memtable_size_bytes=self.config.corrupt_node_memtable_size_bytes,
                block_cache_blocks=8,
                verify_blocks_on_open=True,
            )
        return LsmOptions(memtable_size_bytes=256 * 1024, verify_blocks_on_open=True)

    async def _start_node(self, node_id: int) -> None:
        if node_id in self._starting:
            return  # another task is opening it (a restart racing the healing): one instance
        assert self.nodes[node_id] is None
        if node_id in self.failed:
            return  # fail-stopped on damaged data: stays down (no repair yet)
        disk = self.disks[node_id]
        endpoint = self.network.endpoint(node_id)
        self._starting.add(node_id)
        try:
            node = await Node.open(
                self._node_config(node_id),
                fs=disk.filesystem(),
                transport=endpoint,
                clock=SimClock(drift_ppm=self.drift_ppm[node_id]),
                rng=self._node_rngs[node_id],
                trace=self.trace,
                observer=self._on_step,
                core_class=self._core_class,
                logger=_EventSink(self.storage_fault_events, self.snapshot_install_events),
            )
        except StorageFaultError as fault:
            endpoint.close_now()
            self._fail_stopped(node_id, fault, "recovery")
            return
        except Exception as exc:  # a recovery that fails is a finding, not a crash of the sim
            endpoint.close_now()
            self._violate("recovery", node_id, f"node {node_id} failed to open: {exc!r}")
            raise _Stop() from exc
        finally:
            self._starting.discard(node_id)
        self.nodes[node_id] = node
        node.on_send = self._on_send
        if self._storm_range_ticks is not None and not self._healing:
            node.set_election_timeouts(*self._storm_range_ticks)
        if self.plan.enabled("vote_crash") and self.config.nodes > 1:
            node.on_persist_vote = self._on_persist_vote
        task = node.start()
        task.add_done_callback(functools.partial(self._on_node_done, node_id, node))

    def _on_node_done(self, node_id: int, node: Node, task: asyncio.Task[None]) -> None:
        if node.storage_fault is not None:
            if self.nodes[node_id] is node:
                self._node_failed(node, "run")
            return
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._violate(
                "node_failure", node_id, f"node {node_id} died: {type(exc).__name__}: {exc}"
            )

    def _node_failed(self, node: Node, during: str) -> None:
        """`node` fail-stopped on damaged data: it is down for the rest of the run."""
        node_id = node.node_id
        assert node.storage_fault is not None
        assert self.nodes[node_id] is node
        self._collect_rejected(node)
        self.nodes[node_id] = None
        self._fail_stopped(node_id, node.storage_fault, during)

    def _fail_stopped(self, node_id: int, fault: StorageFaultError, during: str) -> None:
        assert self.nodes[node_id] is None
        assert node_id not in self.failed
        restart = self._restart_tasks.pop(node_id, None)
        if restart is not None:
            restart.cancel()
        # An outcome, not an injected fault: reported in `failed_nodes`, not `faults_injected`.
        self.failed[node_id] = f"{during}: {fault.path} at offset {fault.offset}: {fault.problem}"
        if node_id not in self.corrupt_nodes:
            # This disk never corrupts anything: damage it reports is a storage bug (or a
            # torn or lost write the storage should have handled).
            self._violate(
                "recovery" if during == "recovery" else "node_failure",
                node_id,
                f"corruption reported by node {node_id}, whose disk injects none: {fault}",
            )

    def crash(
        self, node_id: int, *, restart_after_s: float | None = None, count: bool = True
    ) -> None:
        """Crash `node_id` now (its disk keeps only synced writes); restart it later."""
        node = self.nodes[node_id]
        assert node is not None
        node.crash()
        self._collect_rejected(node)
        self.disks[node_id].crash()
        self.nodes[node_id] = None
        if count:
            self._count("crash")
        if restart_after_s is not None:
            self._restart_tasks[node_id] = asyncio.get_running_loop().create_task(
                self._restart_after(node_id, restart_after_s)
            )

    def _on_step(
        self, node: Node, appended: list[tuple[int, int, int]], applied: list[tuple[int, int]]
    ) -> None:
        self.steps += 1
        checker = self.checker
        checker.on_step(node, appended, applied)
        self._steps_since_prefix_check += 1
        if self._steps_since_prefix_check >= self.config.prefix_check_every_steps:
            self._steps_since_prefix_check = 0
            checker.check_log_prefixes([n for n in self.nodes.values() if n is not None])
        if checker.failed or (
            self.config.steps_max is not None and self.steps >= self.config.steps_max
        ):
            assert self._phase_over is not None
            self._phase_over.set()
            if checker.failed and self._setup_stop is not None:
                self._setup_stop.set()

    def _on_send(self, node: Node, msg: Message) -> None:
        """A follower acknowledges only entries it holds: a successful AppendEntriesResponse
        names a match index within the sender's log (the leader counts it toward commit, so
        a false claim can commit an entry a majority lacks)."""
        if not isinstance(msg, AppendEntriesResponse) or not msg.success:
            return
        self.checker.checks["ack_holds_entries"] += 1
        log = node.core.log
        if msg.match_index > log.last_index():
            self._violate(
                "ack_holds_entries",
                node.node_id,
                f"node {node.node_id} acknowledged index {msg.match_index} to node {msg.dst} "
                f"but its log ends at {log.last_index()}",
            )

    def _on_persist_vote(self, node: Node) -> None:
        """A node starts persisting a new term or vote, its early messages already sent.
        With probability, crash it before the persist completes and restart it within
        milliseconds: candidates of the same term are still asking for votes then."""
        if self._phase_over is None or self._phase_over.is_set():
            return
        if self._fault_rng.random() >= 0.5 * self.plan.intensity("vote_crash"):
            return
        restart_after_s = self._uniform(0.001, 0.02)
        # After the node's own task yields to the disk, not inside its step.
        asyncio.get_running_loop().call_soon(self._vote_crash, node, restart_after_s)

    def _vote_crash(self, node: Node, restart_after_s: float) -> None:
        node_id = node.node_id
        if self.nodes[node_id] is not node or node.stopped or not node.persisting_vote:
            return
        assert self._phase_over is not None
        if self._phase_over.is_set():
            return
        down = sum(1 for n in self.node_ids if self.nodes[n] is None)
        if down >= (self.config.nodes - 1) // 2:
            return
        self._count("vote_crash")
        self.crash(node_id, restart_after_s=restart_after_s)

    def _count(self, kind: str) -> None:
        self.faults_injected[kind] = self.faults_injected.get(kind, 0) + 1

    # -- faults ------------------------------------------------------------------------

    def _fault_tasks(self) -> list[Any]:
        plan = self.plan
        tasks: list[Any] = []
        if plan.enabled("crash") and self.config.nodes > 1:
            tasks.append(self._crash_loop(plan.intensity("crash")))
        if plan.enabled("partition") and self.config.nodes > 1:
            tasks.append(self._partition_loop(plan.intensity("partition")))
        if plan.enabled("asymmetric") and self.config.nodes > 1:
            tasks.append(self._asymmetric_loop(plan.intensity("asymmetric")))
        if plan.enabled("isolate_leader") and self.config.nodes > 1:
            tasks.append(self._isolate_leader_loop(plan.intensity("isolate_leader")))
        if plan.enabled("flapping") and self.config.nodes > 1:
            tasks.append(self._flapping_loop(plan.intensity("flapping")))
        if plan.enabled("membership") and self.config.nodes >= 5:
            tasks.append(self._membership_loop(plan.intensity("membership")))
        if plan.enabled("election_storm") and self.config.nodes > 1:
            tasks.append(self._election_storm_loop(plan.intensity("election_storm")))
        if plan.enabled("corrupt_sector") and self.corrupt_nodes:
            tasks.append(self._corrupt_sector_loop(plan.intensity("corrupt_sector")))
        return tasks

    def _exp_s(self, mean_s: float) -> float:
        return -math.log(1.0 - self._fault_rng.random()) * mean_s

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self._fault_rng.random()

    def _pick(self, items: list[int]) -> int:
        return items[self._fault_rng.randrange(0, len(items))]

    async def _crash_loop(self, intensity: float) -> None:
        down_max = (self.config.nodes - 1) // 2
        while True:
            await asyncio.sleep(self._exp_s(2.0 / intensity))
            running = [n for n in self.node_ids if self.nodes[n] is not None]
            down = len(self.node_ids) - len(running)
            if down >= down_max or not running:
                continue
            if self._fault_rng.random() < 0.5:
                # Aimed: crash a node while a Ready of it is being persisted (its messages
                # that may leave early are out, its state not yet durable), and bring it
                # back soon, while messages of the same election are still in flight.
                victim_or_none = await self._await_persisting(2.0)
                if victim_or_none is None:
                    continue
                self._count("crash_during_persist")
                self.crash(victim_or_none, restart_after_s=self._uniform(0.005, 0.1))
                continue
            victim = self._pick(running)
            self.crash(victim, restart_after_s=self._uniform(0.05, 1.5))

    async def _corrupt_sector_loop(self, intensity: float) -> None:
        """Now and then, flip a bit at rest in a file of a corrupt node that still runs.

        A file is picked uniformly (not by size, or the preallocated WAL segments would
        take nearly every hit), except the newest WAL segment: damage in its final flush
        looks like a torn write to recovery and would be truncated, forgetting an
        acknowledged entry (wal.py's known limit), which Raft does not survive."""
        rng = self._corrupt_rng
        while True:
            await asyncio.sleep(-math.log(1.0 - rng.random()) * 0.15 / intensity)
            candidates = [n for n in self.corrupt_nodes if n not in self.failed]
            if not candidates:
                return
            node_id = candidates[rng.randrange(0, len(candidates))]
            disk = self.disks[node_id]
            paths = disk.durable_paths()
            segments = [p for p in paths if p.startswith(f"{WAL_DIR}/") and p.endswith(".seg")]
            newest_segment = max(segments) if segments else None
            paths = [p for p in paths if p != newest_segment and not p.endswith(".tmp")]
            if paths:
                disk.corrupt_sector(paths[rng.randrange(0, len(paths))], rng)

    async def _await_persisting(self, timeout_s: float) -> int | None:
        """The first running node seen persisting a term or vote within `timeout_s` (polled
        each 0.5 ms), else one persisting anything at the end, else None."""
        down_max = (self.config.nodes - 1) // 2
        for _ in range(int(timeout_s / 0.0005)):
            await asyncio.sleep(0.0005)
            running = [n for n in self.node_ids if self.nodes[n] is not None]
            if len(self.node_ids) - len(running) >= down_max:
                return None
            for node_id in running:
                node = self.nodes[node_id]
                if node is not None and node.persisting_vote:
                    return node_id
        for node_id in self.node_ids:
            node = self.nodes[node_id]
            if node is not None and node.persisting:
                return node_id
        return None

    async def _restart_after(self, node_id: int, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._restart_tasks.pop(node_id, None)
        if self.nodes[node_id] is None and node_id not in self.failed:
            self._count("restart")
            try:
                await self._start_node(node_id)
            except _Stop:
                return

    async def _partition_loop(self, intensity: float) -> None:
        minority_max = (self.config.nodes - 1) // 2
        while True:
            await asyncio.sleep(self._exp_s(2.0 / intensity))
            ids = list(self.node_ids)
            minority: list[int] = []
            size = 1 + self._fault_rng.randrange(0, minority_max)
            for _ in range(size):
                node = self._pick(ids)
                ids.remove(node)
                minority.append(node)
            self.network.partition([sorted(minority), ids])
            self._count("partition")
            await asyncio.sleep(self._uniform(0.2, 2.0))
            self.network.clear_cut("partition")

    async def _asymmetric_loop(self, intensity: float) -> None:
        while True:
            await asyncio.sleep(self._exp_s(2.0 / intensity))
            src = self._pick(list(self.node_ids))
            dst = self._pick([n for n in self.node_ids if n != src])
            self.network.block(src, dst, name="asymmetric")
            self._count("asymmetric")
            await asyncio.sleep(self._uniform(0.2, 2.0))
            self.network.clear_cut("asymmetric")

    async def _isolate_leader_loop(self, intensity: float) -> None:
        while True:
            await asyncio.sleep(self._exp_s(2.0 / intensity))
            leaders = [
                n for n in self.node_ids if (node := self.nodes[n]) is not None and node.is_leader
            ]
            if not leaders:
                continue
            leader = max(leaders, key=lambda n: (self.nodes[n].core.term, n))  # type: ignore[union-attr]
            self.network.isolate(leader, self.node_ids, name="isolate_leader")
            self._count("isolate_leader")
            await asyncio.sleep(self._uniform(0.3, 2.0))
            self.network.clear_cut("isolate_leader")

    async def _election_storm_loop(self, intensity: float) -> None:
        """Depose the leader again and again (cut off just longer than an election
        timeout): with the narrow timeouts of `election_storm` the others then campaign
        almost together, in the same term."""
        timeout_s = self.config.tick_interval_s * self.config.election_timeout_ticks_min
        while True:
            await asyncio.sleep(self._exp_s(0.5 / intensity))
            leader = await self._await_leader_with_tail(0.1)
            if leader is None:
                continue
            self.network.isolate(leader, self.node_ids, name="election_storm")
            self._count("election_storm")
            await asyncio.sleep(self._uniform(1.2 * timeout_s, 3.0 * timeout_s))
            self.network.clear_cut("election_storm")

    async def _membership_loop(self, intensity: float) -> None:
        """Remove a random member (the leader too, at times), then add it back: the
        cluster runs single-server changes under whatever other faults are on. A removed
        node keeps running (it does not campaign: it is not in its own configuration) and
        is brought up to date by the leader once added back."""
        while True:
            await asyncio.sleep(self._exp_s(1.5 / intensity))
            member = self._pick(list(self.node_ids))
            if not await self._change_membership(ConfChange("remove", member), 1.0):
                continue
            self._count("member_removed")
            # The removed node keeps running. The leader stops sending to it at once, so it
            # may never learn of its removal; its election timeouts cannot depose the
            # leader: its pre-votes are refused (lease) and its stale term is answered
            # (HandleStaleAppendEntries), and a removed leader steps down by check-quorum.
            await asyncio.sleep(self._uniform(0.1, 1.0))
            # Added back however long it takes: a cluster of four for the rest of the
            # run would leave one replica out of the convergence checks.
            while not await self._change_membership(ConfChange("add", member), 1.0):
                await asyncio.sleep(0.05)
            self._count("member_added")

    async def _change_membership(self, change: ConfChange, timeout_s: float) -> bool:
        """Propose `change` at the newest leader; True once it is applied there, or once
        the configuration already reflects it (an earlier attempt's entry committed)."""
        leader = self._newest_leader()
        if leader is None:
            await asyncio.sleep(0.05)
            return False
        node = self.nodes[leader]
        assert node is not None
        members = node.members()
        if (change.op == "add") == (change.node_id in members):
            return node.core.log.last_config_index() <= node.core.log.commit_index
        if change.op == "remove" and len(members) <= self.config.nodes - 1:
            return False  # one change at a time: keep at least nodes-1 members
        if change.op == "remove":
            remaining = [m for m in members if m != change.node_id]
            healthy = [m for m in remaining if m not in self.failed]
            if 2 * len(healthy) <= len(remaining):
                return False  # the fail-stopped nodes would leave no healthy majority
        try:
            await asyncio.wait_for(node.propose_conf_change(change), timeout_s)
        except (RequestError, TimeoutError):
            return False
        return True

    async def _ensure_full_membership(self) -> None:
        """At the heal: add back a member a cancelled membership task left out."""
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + self.config.converge_bound_s
        for node_id in self.node_ids:
            while not await self._change_membership(ConfChange("add", node_id), 1.0):
                if loop.time() >= deadline_s:
                    self._violate(
                        "convergence", None, f"node {node_id} could not be added back in time"
                    )
                    raise _Stop()
                await asyncio.sleep(0.05)

    async def _await_leader_with_tail(self, timeout_s: float) -> int | None:
        """The newest leader, as soon as (polled each ms, up to `timeout_s`) it holds
        entries not yet committed: cut off then, it keeps a tail that a later leader must
        replace or, if it comes back and wins, finish (Raft Figure 8). At the timeout, the
        newest leader whatever its log; None if there is none."""
        leader: int | None = None
        for _ in range(max(1, int(timeout_s / 0.001))):
            leader = self._newest_leader()
            if leader is not None:
                view = self.nodes[leader].raft_view()  # type: ignore[union-attr]
                if view.last_index > view.commit_index:
                    return leader
            await asyncio.sleep(0.001)
        return self._newest_leader()

    def _newest_leader(self) -> int | None:
        leaders = [
            n for n in self.node_ids if (node := self.nodes[n]) is not None and node.is_leader
        ]
        if not leaders:
            return None
        return max(leaders, key=lambda n: (self.nodes[n].core.term, n))  # type: ignore[union-attr]

    async def _flapping_loop(self, intensity: float) -> None:
        while True:
            await asyncio.sleep(self._exp_s(3.0 / intensity))
            a = self._pick(list(self.node_ids))
            b = self._pick([n for n in self.node_ids if n != a])
            self._count("flapping")
            end_s = asyncio.get_running_loop().time() + self._uniform(0.5, 2.0)
            down = False
            while asyncio.get_running_loop().time() < end_s:
                down = not down
                if down:
                    self.network.set_cut("flapping", [(a, b), (b, a)])
                else:
                    self.network.clear_cut("flapping")
                await asyncio.sleep(self._uniform(0.02, 0.15))
            self.network.clear_cut("flapping")

    # -- convergence and final checks --------------------------------------------------

    def _converged(self) -> bool:
        # Fail-stopped nodes are out for good; the healthy majority must converge.
        nodes = [self.nodes[n] for n in self.node_ids if n not in self.failed]
        if any(node is None for node in nodes):
            return False
        statuses = [node.status() for node in nodes if node is not None]
        leaders = [s for s in statuses if s.role == "leader"]
        if len(leaders) != 1:
            return False
        leader = leaders[0]
        return all(
            s.term == leader.term
            and s.leader_id == leader.node_id
            and s.last_index == leader.last_index
            and s.commit_index == leader.last_index
            and s.applied_index == leader.last_index
            for s in statuses
        )

    async def _converge(self) -> None:
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + self.config.converge_bound_s
        while not self._converged():
            if loop.time() >= deadline_s:
                statuses = "; ".join(
                    repr(node.status()) if node is not None else f"node {n} down"
                    for n, node in self.nodes.items()
                )
                self._violate(
                    "convergence",
                    None,
                    f"not converged {self.config.converge_bound_s} s after healing: {statuses}",
                )
                raise _Stop()
            await asyncio.sleep(0.05)
            self._raise_if_violated()
        self.checker.checks["convergence"] += 1

    async def _scrub_corrupt_nodes(self) -> None:
        """Read and verify everything a corrupt node still running holds (state store,
        WAL, snapshot file), as a scrubber would: damage it met fail-stops it now, so the
        final comparisons never read unverified bytes. Healthy nodes are not scrubbed."""
        for node_id in self.corrupt_nodes:
            node = self.nodes[node_id]
            if node is None:
                continue
            try:
                _scrub(node, self.disks[node_id].filesystem(), self._lsm_options(node_id))
            except STORAGE_FAULTS as exc:
                node.fail_stop(exc, during="final scrub")
                self._node_failed(node, "final scrub")

    async def _final_checks(self) -> str:
        checker = self.checker
        nodes = [node for node in self.nodes.values() if node is not None]
        checker.check_log_prefixes(nodes)
        self._raise_if_violated()
        checksums = {node.node_id: node.lsm.checksum() for node in nodes}
        checker.checks["replica_state_equal"] += 1
        if len(set(checksums.values())) != 1:
            self._violate("replica_state_equal", None, f"state store checksums differ: {checksums}")
            raise _Stop()
        # Every acknowledged write is applied on every replica: each client's session on
        # every replica has seen at least its highest acknowledged request.
        acked_seq: dict[str, int] = {}
        for op in self.history.operations:
            if op.kind == "write" and op.status == "ok":
                client = str(op.client)
                seq = int(str(op.value).rsplit("-", 1)[1])
                acked_seq[client] = max(acked_seq.get(client, 0), seq)
        for node in nodes:
            for client, seq in sorted(acked_seq.items()):
                checker.checks["acknowledged_writes_applied"] += 1
                raw = node.lsm.get(keys.session_key(TENANT_ID, client))
                last_seq = _session_decoder.decode(raw).last_seq if raw is not None else 0
                if last_seq < seq:
                    self._violate(
                        "acknowledged_writes_applied",
                        node.node_id,
                        f"client {client}'s request {seq} was acknowledged, but node "
                        f"{node.node_id} applied only up to {last_seq}",
                    )
                    raise _Stop()
        # Final reads: linearizable through the leader (into the history), and every
        # replica's local state must agree with them.
        leader = next(node for node in nodes if node.is_leader)
        for k in range(self.config.workload.keys):
            key = talent_id(k)
            query = encode_query(TENANT_ID, GetTalent(talent_id=key))
            op = self.history.invoke("final", "read", key, None, self.clock.monotonic_ns())
            try:
                raw = await asyncio.wait_for(leader.read(query), 5.0)
            except (RequestError, TimeoutError) as exc:
                self._violate("convergence", leader.node_id, f"final read failed: {exc!r}")
                raise _Stop() from exc
            value = decode_result(raw).decode_value(dict[str, Any])["displayName"]
            self.history.ok(op, self.clock.monotonic_ns(), value)
            for node in nodes:
                checker.checks["replica_state_equal"] += 1
                local = decode_result(await node.read(query, linearizable=False))
                local_value = local.decode_value(dict[str, Any])["displayName"]
                if local_value != value:
                    self._violate(
                        "replica_state_equal",
                        node.node_id,
                        f"{key} is {local_value!r} on node {node.node_id}, {value!r} on the leader",
                    )
                    raise _Stop()
        if self.unexpected_errors:
            self._violate("node_failure", None, self.unexpected_errors[0])
            raise _Stop()
        initial = self.workload.initial_values
        problems = check_stale_reads(self.history.operations, initial=initial, absent_ok=True)
        checker.checks["stale_reads"] += 1
        if problems:
            self._violate("stale_reads", None, problems[0])
            raise _Stop()
        result = check_kv(self.history.operations, initial=initial)
        checker.checks["linearizability"] += 1
        if result.ok is False:
            self._violate("linearizability", None, result.explanation)
            raise _Stop()
        verdict = "linearizable" if result.ok else result.explanation
        return f"{verdict} ({result.operations_checked} operations, {result.keys_checked} keys)"

    def _compute_state_hash(self) -> str:
        digest = xxhash.xxh3_128()
        for node_id in self.node_ids:
            node = self.nodes[node_id]
            if node is None:
                digest.update(f"{node_id}:down;".encode())
                continue
            status = node.status()
            try:
                store: int | str = node.lsm.checksum()
            except STORAGE_FAULTS:
                store = "damaged"  # a corrupt node the run ended before scrubbing
            digest.update(
                f"{node_id}:{status.role}:{status.term}:{status.commit_index}:"
                f"{status.applied_index}:{status.last_index}:{store};".encode()
            )
        for node_id, what in sorted(self.failed.items()):
            digest.update(f"failed {node_id}: {what};".encode())
        return digest.hexdigest()


def _scrub(node: Node, fs: FileSystem, options: LsmOptions) -> None:
    """Read and verify from the disk (not from caches) what `node` may read later: the
    manifest, every block of every live table, every WAL record, the snapshot file.
    Raises CorruptionError or FormatError at the first damage."""
    manifest = read_manifest(fs, options.directory)
    cache = BlockCache(0)  # nothing cached: every block comes from the disk
    for level in manifest.levels:
        for props in level:
            name = table_name(options.directory, props.file_number)
            table = Table.open(fs, name, props.file_number, cache)
            try:
                table.verify_blocks()
            finally:
                table.close()
    wal = node.wal
    if wal.first_seq <= wal.last_seq:
        wal.read(wal.first_seq, wal.last_seq)
    read_snapshot(fs)
    # The memtable and block cache hold only bytes verified when they were read or
    # written; the checksum reads through them what the final checks will compare.
    node.lsm.checksum()


def _choose_corrupt_nodes(
    plan: FaultPlan, node_ids: tuple[int, ...], rng: random.Random
) -> tuple[int, ...]:
    """The nodes whose disks corrupt data in this run: 1 to f = (n-1)/2 of them, so that a
    majority is always healthy; one fewer with membership changes, which take a healthy
    member out of the configuration for a while. The draws are made whatever the plan."""
    count_max = (len(node_ids) - 1) // 2
    if plan.enabled("membership") and len(node_ids) >= 5:
        count_max -= 1
    shuffled = list(node_ids)
    rng.shuffle(shuffled)
    count = 1 + rng.randrange(0, max(1, count_max))
    if count_max < 1 or not (plan.enabled("corrupt_sector") or plan.enabled("misdirected_write")):
        return ()
    chosen = tuple(sorted(shuffled[:count]))
    assert 1 <= len(chosen) <= count_max
    assert 2 * (len(node_ids) - len(chosen)) > len(node_ids)
    return chosen


class _EventSink:
    """The simulated nodes' event logger: keeps errors (storage faults) and snapshot
    installs, drops the rest (printing them would slow every run)."""

    def __init__(self, errors: list[dict[str, Any]], installs: list[dict[str, Any]]) -> None:
        self._errors = errors
        self._installs = installs

    def info(self, event: str, /, **fields: Any) -> None:
        if event == "node.snapshot_installed":
            self._installs.append(fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self._errors.append({"event": event, **fields})


def _network_faults(plan: FaultPlan) -> NetworkFaults:
    return NetworkFaults(
        loss_probability=0.15 * plan.intensity("loss"),
        duplicate_probability=0.1 * plan.intensity("duplicate"),
        reorder_probability=0.5 * plan.intensity("reorder"),
        # Long tails: a stale AppendEntries of a deposed leader can arrive after a new
        # leader's, and a duplicate long after its original.
        reorder_delay_max_ms=50.0 + 250.0 * plan.intensity("reorder"),
    )


def _describe(payload: bytes) -> dict[str, Any] | None:
    try:
        return message_to_trace(decode_message(payload))
    except ValueError:
        return None


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on the loop (node tasks of a stopped run) and let it unwind."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        # Bounded in virtual time: a task that ignores cancellation cannot hang the run.
        loop.run_until_complete(asyncio.wait(tasks, timeout=60.0))


def run_seed(config: WorldConfig, *, trace_out: IO[str] | None = None) -> SimResult:
    """Run one seed and return its result."""
    return World(config, trace_out=trace_out).run()
