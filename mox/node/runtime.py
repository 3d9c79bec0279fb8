"""The node runtime: one Raft core driven over the IO seam, with its storage and state machine.

Theory of operation. One task (`run`) owns the core: every mutation of the core (tick, step,
propose, read_index, compact, ready/advance) happens in it, so nothing changes the core while
a Ready is being persisted. Everything from outside (messages from the transport, commands
from `submit`, reads from `read`) is queued and the task is woken; while it awaits
durability, new work piles up and goes into the next Ready together (group commit: many
entries, one WAL commit).

The Ready loop, in the order of docs/ARCHITECTURE.md:

1. send `messages_now`;
2. persist: an installed snapshot (snapshot file, then the LSM, then the WAL), the new
   entries (truncating the WAL's suffix first when they overlap it), the hard state in the
   superblock; await durability;
3. send `messages_after_persist`;
4. apply `committed_entries` through the state machine (one command per entry; no-ops and
   configuration entries only advance the applied index) and resolve waiting `submit`s;
5. serve read states whose index is applied;
6. `advance`.

Every `snapshot_threshold` applied entries the node snapshots: LSM flush (so the WAL prefix
is no longer needed for replay), the snapshot file, `core.compact`, `wal.drop_prefix`.

Recovery (`open`): superblock -> hard state; snapshot file -> snapshot; LSM -> durable applied
index; WAL -> entries after the snapshot; entries between the LSM's durable index and the
snapshot are replayed into the state machine at once (they are committed), later ones come
back from the core as committed entries once it learns the commit index again.

Storage faults (fail-stop). Every byte the node reads back from disk is verified (WAL
records, superblock copies, SSTable blocks, the manifest, the snapshot file). When a read
fails verification (`CorruptionError`, or `FormatError` for a damaged header) while the
node recovers, runs (an LSM read for a client, a snapshot, compaction) or serves a stale
read, the node stops for good: it logs `node.storage_fault` with the file and offset, fails
everything pending with NodeStopped, closes its endpoint and never steps the core again (no
message, vote, acknowledgement or read leaves it). `storage_fault` then holds the
`StorageFaultError`. Nothing read from a damaged place is applied or returned. A damaged
node is not repaired here: it stays down until an operator replaces its data (see
docs/operations.md); the cluster carries on while a majority is healthy.

Time: a tick every `tick_interval_s` of the loop's clock (virtual under the simulator).
Randomness: election timeouts drawn from the node's `Random`, handed to the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import msgspec
import xxhash

from mox.consensus.raft.core import (
    ConfChange,
    RaftConfig,
    RaftCore,
    Ready,
    RestoredState,
    Role,
    SnapshotInstall,
)
from mox.consensus.raft.messages import (
    CONFIG,
    NOOP,
    NORMAL,
    Entry,
    HardState,
    MalformedMessage,
    Message,
    SnapshotMeta,
    decode_message,
    encode_message,
)
from mox.consensus.raft.trace import TraceSink
from mox.errors import CorruptionError, DataDirError, FormatError, StorageFaultError
from mox.io.interfaces import Clock, FileSystem, Random, Transport
from mox.node.errors import NodeStopped, NotLeader, Overloaded, ProposalDropped, RequestError
from mox.node.snapshot_file import decode_items, encode_items, read_snapshot, write_snapshot
from mox.statemachine.machine import StateMachine
from mox.storage.lsm import LsmOptions, LsmStore
from mox.storage.superblock import Superblock, SuperblockState
from mox.storage.wal import Wal

# The WAL record type of a Raft log entry (body: the msgpack Entry).
RTYPE_ENTRY = 1
# How early a timer may fire and still count as the tick it was set for: asyncio fires
# timers within its clock resolution, uvloop up to a millisecond early.
_TICK_TOLERANCE_S_MAX = 0.001

__all__ = [
    "STORAGE_FAULTS",
    "ConfChangeRefused",
    "EventLogger",
    "Node",
    "NodeConfig",
    "NodeStats",
    "NodeStatus",
    "RaftView",
    "StepObserver",
    "entry_digest",
]

# Errors that mean "the disk returned bytes that failed verification": the node fail-stops.
STORAGE_FAULTS: tuple[type[CorruptionError], type[FormatError]] = (CorruptionError, FormatError)

_log = logging.getLogger("mox.node")

_entry_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(Entry)


def entry_digest(entry: Entry) -> int:
    """A digest of everything in an entry (term, index, kind, commands, config)."""
    return xxhash.xxh3_64_intdigest(_entry_encoder.encode(entry))


class EventLogger(Protocol):
    """Where the node writes its structured events (a structlog bound logger fits)."""

    def info(self, event: str, /, **fields: Any) -> Any: ...

    def error(self, event: str, /, **fields: Any) -> Any: ...


class _StdlibEventLogger:
    """The default: events as JSON on the `mox.node` stdlib logger (`mox start` passes its
    structlog logger instead)."""

    def info(self, event: str, /, **fields: Any) -> None:
        if _log.isEnabledFor(logging.INFO):
            _log.info("%s %s", event, json.dumps(fields, sort_keys=True, default=str))

    def error(self, event: str, /, **fields: Any) -> None:
        _log.error("%s %s", event, json.dumps(fields, sort_keys=True, default=str))


class StepObserver(Protocol):
    """Called after every Ready the node handled (the simulator's invariant checker)."""

    def __call__(
        self,
        node: Node,
        appended: list[tuple[int, int, int]],
        applied: list[tuple[int, int]],
    ) -> None: ...


@attrs.frozen
class NodeConfig:
    """One node's identity, timing and limits."""

    node_id: int
    # The cluster's nodes (cluster.nodes). Without `join`, the initial configuration of a
    # new data directory, which must include this node.
    members: tuple[int, ...]
    cluster_id: str = "mox"
    tick_interval_s: float = 0.010
    heartbeat_ticks: int = 5
    election_timeout_ticks_min: int = 15
    election_timeout_ticks_max: int = 30
    snapshot_threshold_entries: int = 100_000
    # Raft extensions (docs/raft.md); off only to run classic Raft.
    pre_vote: bool = True
    check_quorum: bool = True
    wal_segment_size_bytes: int = 64 * 1000**2
    max_batch_size: int = 1000
    max_message_size_bytes: int = 16 * 1000**2
    # Bounds on queued work: beyond them a request is refused (Overloaded), a message dropped.
    pending_requests_max: int = 4096
    inbox_max: int = 8192
    # Ticks to catch up at most after the loop was late (a long persist), not all of them.
    ticks_catch_up_max: int = 4
    compaction_step_bytes: int = 1024 * 1024
    lsm_options: LsmOptions = attrs.field(factory=LsmOptions)
    # cluster.initial_state = "existing": a new data directory starts outside every
    # configuration (see join_members); an existing one ignores this.
    join: bool = False

    def __attrs_post_init__(self) -> None:
        if self.join:
            # The joiner's own id may or may not be listed; the others are whom it joins.
            assert self.join_members(), (self.node_id, self.members)
        else:
            assert self.node_id in self.members, (self.node_id, self.members)
        assert len(set(self.members)) == len(self.members)
        assert self.tick_interval_s > 0
        assert 1 <= self.heartbeat_ticks < self.election_timeout_ticks_min
        assert self.election_timeout_ticks_min < self.election_timeout_ticks_max
        assert self.snapshot_threshold_entries >= 1

    def join_members(self) -> tuple[int, ...]:
        """A joiner's initial configuration: the other nodes, never itself.

        The core has no empty configuration (a quorum of nothing is undefined), so a node
        that is a member of nothing starts with a configuration it is not in: outside it,
        the core never times out (promotable() is false), so it never pre-votes or
        campaigns and its term stays where the leaders put it. It becomes a member only
        through a config entry or a snapshot from a leader that added it.
        """
        return tuple(member for member in self.members if member != self.node_id)

    def new_directory_members(self) -> tuple[int, ...]:
        """The initial configuration recorded in a new data directory's superblock."""
        members = self.join_members() if self.join else self.members
        assert members
        assert self.join == (self.node_id not in members)
        return members


@attrs.frozen
class RaftView:
    """What the simulator's invariant checker reads of a node's Raft state after a step."""

    role: str
    term: int
    commit_index: int
    snapshot_index: int
    snapshot_term: int
    last_index: int


@attrs.frozen
class NodeStatus:
    node_id: int
    role: str
    term: int
    leader_id: int | None
    commit_index: int
    applied_index: int
    last_index: int
    snapshot_index: int
    # follower id -> its match index as this leader knows it (empty unless leader)
    match_index: dict[int, int] = attrs.field(factory=dict)


@attrs.define
class NodeStats:
    ticks: int = 0
    readies: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    messages_malformed: int = 0
    messages_dropped_inbox_full: int = 0
    entries_persisted: int = 0
    wal_commits: int = 0
    entries_applied: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    proposals: int = 0
    reads_linearizable: int = 0
    reads_stale: int = 0


class ConfChangeRefused(RequestError):
    """The leader did not append the configuration change now (a change is still
    uncommitted, or no entry of its term is committed yet): retry later. Not applied."""

    def __init__(self, node_id: int, change: ConfChange) -> None:
        self.node_id = node_id
        self.change = change
        super().__init__(
            f"node {node_id}: conf change {change.op} {change.node_id} refused for now "
            "(a change is pending or the leader has not committed an entry of its term)"
        )


@attrs.define(eq=False)
class _Proposal:
    command: bytes
    future: asyncio.Future[bytes]
    # The change, for a configuration change (command then empty).
    conf_change: ConfChange | None = None
    index: int | None = None


@attrs.define(eq=False)
class _Read:
    query: bytes
    future: asyncio.Future[bytes]
    index: int | None = None


def ticks_due(next_tick_s: float, now_s: float, interval_s: float) -> tuple[int, float]:
    """How many ticks are due at `now_s` when the next was due at `next_tick_s` (<= now_s),
    and when the one after them is due (> now_s, at most one interval later)."""
    assert interval_s > 0
    assert next_tick_s <= now_s
    due = int((now_s - next_tick_s) / interval_s) + 1
    after_s = next_tick_s + due * interval_s
    # The division rounds down by one interval when `now_s` lies on a tick boundary up to
    # floating-point error (seen in production: the node stopped on the assertion below).
    while after_s <= now_s:
        due += 1
        after_s += interval_s
    assert due >= 1
    assert now_s < after_s
    return due, after_s


class Node:
    """One replica: use `await Node.open(...)`, then `start()`; `stop()` or `crash()`."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        fs: FileSystem,
        transport: Transport,
        clock: Clock,
        rng: Random,
        core: RaftCore,
        wal: Wal,
        superblock: Superblock,
        superblock_state: SuperblockState,
        lsm: LsmStore,
        machine: StateMachine,
        applied_index: int,
        observer: StepObserver | None,
        election_timeout_range_ticks: list[int] | None = None,
        logger: EventLogger | None = None,
    ) -> None:
        self.config = config
        self._fs = fs
        self._transport = transport
        self._clock = clock
        self._rng = rng
        self.core = core
        self.wal = wal
        self.superblock = superblock
        self._superblock_state = superblock_state
        self.lsm = lsm
        self.machine = machine
        self.applied_index = applied_index
        self._observer = observer
        # [low, high) election timeout ticks, read by the core's timeout iterator at each draw.
        self._timeout_range_ticks = (
            election_timeout_range_ticks
            if election_timeout_range_ticks is not None
            else [config.election_timeout_ticks_min, config.election_timeout_ticks_max]
        )
        # Called with the duration in seconds of each WAL group commit (the API's histogram).
        self.on_wal_sync: Callable[[float], None] | None = None
        # Called when a Ready that changes the term or vote starts persisting, after its
        # early messages left (the simulator aims crashes at this window).
        self.on_persist_vote: Callable[[Node], None] | None = None
        # Called with every message as it leaves (the simulator checks what a node claims).
        self.on_send: Callable[[Node, Message], None] | None = None
        self.stats = NodeStats()
        self.logger: EventLogger = logger if logger is not None else _StdlibEventLogger()
        # Set once the node stopped on damaged data (fail-stop); never cleared.
        self.storage_fault: StorageFaultError | None = None
        self._closed = False
        self._inbox: deque[tuple[int, bytes]] = deque()
        self._proposals: deque[_Proposal] = deque()
        # Log index -> (term, proposal) of entries this node appended as leader.
        self._waiting_apply: dict[int, tuple[int, _Proposal]] = {}
        self._reads_to_start: deque[tuple[bytes, _Read]] = deque()
        self._reads_by_ctx: dict[bytes, _Read] = {}
        self._reads_ready: list[_Read] = []
        self._read_ctx = itertools.count(1)
        # Read contexts are unique across restarts too: a follower's leader may answer a
        # read the previous incarnation asked, and that answer (an older index) must not
        # serve a newer read that reused its number. The opening time tells incarnations
        # apart without drawing from the rng (which times elections).
        self._read_ctx_prefix = (clock.wall_ns() & (2**64 - 1)).to_bytes(8, "big")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_tick_s = 0.0
        self._stopping = False
        self.stopped = False
        self.persisting = False
        self.persisting_vote = False
        self.failure: BaseException | None = None
        transport.set_receiver(self._receive)

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        config: NodeConfig,
        *,
        fs: FileSystem,
        transport: Transport,
        clock: Clock,
        rng: Random,
        trace: TraceSink | None = None,
        observer: StepObserver | None = None,
        core_class: type[RaftCore] = RaftCore,
        logger: EventLogger | None = None,
    ) -> Node:
        """Open (or create) the node's storage in `fs` and recover its state.

        `core_class` is RaftCore; tests pass deliberately broken subclasses
        (`checker.mutants`) to show that the simulator catches them. `logger` receives the
        node's structured events (default: the `mox.node` stdlib logger).

        Raises DataDirError (another node's or cluster's data) and StorageFaultError (a
        file failed verification: logged as `node.storage_fault`, the node must not run).
        """
        events: EventLogger = logger if logger is not None else _StdlibEventLogger()
        # Closers of what was opened so far, to release the files if recovery fails.
        opened: list[Callable[[], Any]] = []
        try:
            node = await cls._open(
                config,
                fs=fs,
                transport=transport,
                clock=clock,
                rng=rng,
                trace=trace,
                observer=observer,
                core_class=core_class,
                logger=events,
                opened=opened,
            )
        except STORAGE_FAULTS as exc:
            fault = StorageFaultError.from_error(config.node_id, exc)
            _log_storage_fault(events, fault, "recovery")
            for close in reversed(opened):
                with contextlib.suppress(Exception):
                    result = close()
                    if asyncio.iscoroutine(result):
                        await result
            raise fault from exc
        return node

    @classmethod
    async def _open(
        cls,
        config: NodeConfig,
        *,
        fs: FileSystem,
        transport: Transport,
        clock: Clock,
        rng: Random,
        trace: TraceSink | None,
        observer: StepObserver | None,
        core_class: type[RaftCore],
        logger: EventLogger,
        opened: list[Callable[[], Any]],
    ) -> Node:
        superblock = Superblock.open(fs, cluster_id=config.cluster_id, node_id=config.node_id)
        opened.append(superblock.close)
        # recover(), not load(): a write interrupted halfway leaves the newest state in only
        # some copies; recover() rewrites the others so one more fault cannot bring back an
        # older term or vote.
        state = await superblock.recover()
        if state is None:
            # Recorded now, so that a joiner restarted before it is added stays outside.
            new_members = config.new_directory_members()
            state = await superblock.write(
                SuperblockState(
                    cluster_id=config.cluster_id,
                    node_id=config.node_id,
                    members=list(new_members),
                )
            )
            if config.join:
                logger.info(
                    "node.joining",
                    node=config.node_id,
                    waiting_for=list(new_members),
                    note="a member of no configuration until a leader adds it",
                )
        elif config.join:
            logger.info(
                "node.join_ignored",
                node=config.node_id,
                members=list(state.members),
                note="cluster.initial_state only matters for an empty data directory",
            )
        hard_state = HardState(term=state.term, vote=state.vote, commit=state.commit)
        stored = read_snapshot(fs)
        snapshot: SnapshotMeta | None = None
        snapshot_data = b""
        if stored is not None:
            snapshot, snapshot_data = stored
        snapshot_index = snapshot.index if snapshot is not None else 0
        lsm = await LsmStore.open(fs, config.lsm_options)
        opened.append(lsm.close)
        if lsm.durable_applied_index < snapshot_index:
            # A crash between writing a received snapshot and installing it into the LSM.
            await lsm.replace_all(decode_items(snapshot_data), snapshot_index)
        wal = await Wal.open(
            fs,
            segment_size_bytes=config.wal_segment_size_bytes,
            cluster_id=config.cluster_id,
            node_id=config.node_id,
        )
        opened.append(wal.close)
        entries = await _reconcile_wal(wal, snapshot, lsm.durable_applied_index, fs.root)
        machine = StateMachine(lsm)
        applied_index = lsm.durable_applied_index
        # Entries the LSM lost in the crash that the snapshot covers: committed, and the core
        # will not hand them out again (it restarts with commit = snapshot index).
        for entry in entries:
            if applied_index < entry.index <= snapshot_index:
                _apply_entry(machine, entry)
                applied_index = entry.index
        assert applied_index >= snapshot_index
        restored = RestoredState(
            hard_state=hard_state,
            snapshot=snapshot,
            snapshot_data=snapshot_data,
            entries=[e for e in entries if e.index > snapshot_index],
            applied_index=applied_index,
        )
        # The configuration before any in the log or the snapshot is the one this data
        # directory was created with, not today's config.members: a node restarted after
        # an edit of cluster.nodes must not count quorums over ids the others do not.
        initial_members = tuple(state.members) if state.members else tuple(config.members)
        assert len(set(initial_members)) == len(initial_members), initial_members
        raft_config = RaftConfig(
            node_id=config.node_id,
            members=initial_members,
            heartbeat_ticks=config.heartbeat_ticks,
            max_batch_size=config.max_batch_size,
            max_message_size_bytes=config.max_message_size_bytes,
            snapshot_threshold=config.snapshot_threshold_entries,
            pre_vote=config.pre_vote,
            check_quorum=config.check_quorum,
            # A leader that has not answered a follower's read within an election timeout
            # is likely gone: fail the read so the client retries elsewhere.
            read_timeout_ticks=config.election_timeout_ticks_max,
        )
        timeout_range = [config.election_timeout_ticks_min, config.election_timeout_ticks_max]
        timeouts = _timeouts(rng, timeout_range)
        core = core_class(raft_config, restored, timeouts, trace)
        return cls(
            config,
            fs=fs,
            transport=transport,
            clock=clock,
            rng=rng,
            core=core,
            wal=wal,
            superblock=superblock,
            superblock_state=state,
            lsm=lsm,
            machine=machine,
            applied_index=applied_index,
            observer=observer,
            election_timeout_range_ticks=timeout_range,
            logger=logger,
        )

    # -- public API --------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        return self.config.node_id

    def start(self) -> asyncio.Task[None]:
        """Start the run task on the running loop."""
        assert self._task is None, "already started"
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"node-{self.node_id}")
        return self._task

    async def submit(self, command: bytes) -> bytes:
        """Propose `command`; return the state machine's result once it is applied here.

        Raises NotLeader (not proposed), Overloaded (not proposed), ProposalDropped or
        NodeStopped (outcome unknown).
        """
        return await self.submit_nowait(command)

    def submit_nowait(self, command: bytes) -> asyncio.Future[bytes]:
        """`submit` as a future: raises NotLeader or Overloaded now; the future gets the
        result or the other errors. A caller that gives up sets the future's exception
        (or cancels it): a proposal not yet handed to the core is then skipped.
        """
        self._check_running()
        if not self.is_leader:
            raise NotLeader(self.node_id, self.leader_id)
        if len(self._proposals) + len(self._waiting_apply) >= self.config.pending_requests_max:
            raise Overloaded(self.node_id, self.config.pending_requests_max)
        proposal = _Proposal(command, asyncio.get_running_loop().create_future())
        self._proposals.append(proposal)
        self._wake.set()
        return proposal.future

    async def propose_conf_change(self, change: ConfChange) -> int:
        """Propose a single-server membership change; return the index of its
        configuration entry once applied here (the change is then committed).

        Raises NotLeader or ConfChangeRefused (not appended), ProposalDropped or
        NodeStopped (outcome unknown), ValueError for a change that makes no sense (adding
        a member, removing a non-member or the last member).
        """
        self._check_running()
        if not self.is_leader:
            raise NotLeader(self.node_id, self.leader_id)
        if len(self._proposals) + len(self._waiting_apply) >= self.config.pending_requests_max:
            raise Overloaded(self.node_id, self.config.pending_requests_max)
        proposal = _Proposal(b"", asyncio.get_running_loop().create_future(), change)
        self._proposals.append(proposal)
        self._wake.set()
        await proposal.future
        assert proposal.index is not None
        return proposal.index

    def members(self) -> tuple[int, ...]:
        """The latest configuration in this node's log (committed or not)."""
        return tuple(self.core.log.config())

    async def read(self, query: bytes, *, linearizable: bool = True) -> bytes:
        """Answer `query` from the state machine.

        Linearizable (default): a read index round on the leader (a follower asks its
        leader for the index), answered here once this node has applied up to it. Raises
        NotLeader if no leader is known, or if the read failed (leadership lost, the
        leader's read queue full, no answer in time): nothing was read, retry. Stale: from
        the local state now.
        A read that meets damaged data stops the node (see the module doc) and raises
        NodeStopped: it never returns unverified bytes.
        """
        self._check_running()
        if not linearizable:
            return self.read_stale(query)
        return await self.read_nowait(query)

    def read_stale(self, query: bytes) -> bytes:
        """`read(query, linearizable=False)`, which never waits."""
        self._check_running()
        self.stats.reads_stale += 1
        try:
            return self.machine.query(query)
        except STORAGE_FAULTS as exc:
            self.fail_stop(exc, during="stale read")
            raise NodeStopped(self.node_id) from None

    def read_nowait(self, query: bytes) -> asyncio.Future[bytes]:
        """A linearizable `read` as a future: raises NotLeader or Overloaded now; the
        future gets the answer or the other errors (as `submit_nowait`)."""
        self._check_running()
        if self.leader_id is None:
            raise NotLeader(self.node_id, None)
        if len(self._reads_by_ctx) + len(self._reads_to_start) >= self.config.pending_requests_max:
            raise Overloaded(self.node_id, self.config.pending_requests_max)
        ctx = self._read_ctx_prefix + next(self._read_ctx).to_bytes(8, "big")
        read = _Read(query, asyncio.get_running_loop().create_future())
        self._reads_to_start.append((ctx, read))
        self._wake.set()
        return read.future

    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    @property
    def api_keys_epoch(self) -> int:
        """Changes whenever an applied command may have changed an API key record here
        (the API's cache of verified keys is valid while it stays the same)."""
        return self.machine.api_keys_epoch

    @property
    def leader_id(self) -> int | None:
        """The leader this node knows of (itself when leading), or None."""
        return self.core.leader_id or None

    def status(self) -> NodeStatus:
        core = self.core
        match_index: dict[int, int] = {}
        if core.role.value == "leader":
            for member in core.config():
                progress = core.progress(member) if member != self.node_id else None
                if progress is not None:
                    match_index[member] = progress.match_index
        return NodeStatus(
            node_id=self.node_id,
            role=core.role.value,
            term=core.term,
            leader_id=self.leader_id,
            commit_index=core.log.commit_index,
            applied_index=self.applied_index,
            last_index=core.log.last_index(),
            snapshot_index=core.log.snapshot.index,
            match_index=match_index,
        )

    def fail_stop(self, error: CorruptionError | FormatError, *, during: str) -> StorageFaultError:
        """Stop for good because `error` (damaged data) was met `during` some activity.

        Logs `node.storage_fault` once (file, offset, problem), fails everything pending,
        closes the endpoint, and ends the run task, which never steps the core again.
        Returns the node's `StorageFaultError` (the first one, if it had stopped already).
        Files stay open until `stop()`.
        """
        assert during
        if self.storage_fault is None:
            self.storage_fault = StorageFaultError.from_error(self.node_id, error)
            _log_storage_fault(self.logger, self.storage_fault, during)
        fault = self.storage_fault
        self._stopping = True
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            # Met outside the run task (a stale read): the task may be mid-Ready; it must
            # not send what that Ready holds.
            task.cancel()
        self._shut_down()
        assert self.stopped
        return fault

    async def stop(self) -> None:
        """Stop gracefully: finish the Ready in progress, fail what is pending, close files.

        After a storage fault this closes the files and the endpoint (nothing is written).
        """
        if self._closed or (self.stopped and self.storage_fault is None):
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # A run task that died has its exception in `self.failure` (the caller saw it
            # through the task); stopping must still close everything.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._shut_down()
        await self._transport.close()
        await self.lsm.close()
        self.wal.close()
        self.superblock.close()

    def set_election_timeouts(self, low_ticks: int, high_ticks: int) -> None:
        """Draw later election timeouts uniformly from [low_ticks, high_ticks) (the
        simulator narrows them for a while to provoke concurrent candidacies)."""
        if not 1 <= low_ticks < high_ticks:
            raise ValueError(
                f"election timeouts: need 1 <= low < high, got [{low_ticks}, {high_ticks})"
            )
        if low_ticks <= self.config.heartbeat_ticks:
            raise ValueError(
                f"election timeouts: low {low_ticks} must exceed heartbeat_ticks "
                f"{self.config.heartbeat_ticks}"
            )
        self._timeout_range_ticks[0] = low_ticks
        self._timeout_range_ticks[1] = high_ticks

    def crash(self) -> None:
        """Stop at once, as a power cut would (simulator): nothing more is written."""
        if self.stopped:
            return
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._shut_down()

    # -- NodeView (invariant checker) --------------------------------------------------

    def raft_view(self) -> RaftView:
        log = self.core.log
        return RaftView(
            role=self.core.role.value,
            term=self.core.term,
            commit_index=log.commit_index,
            snapshot_index=log.snapshot.index,
            snapshot_term=log.snapshot.term,
            last_index=log.last_index(),
        )

    def entry_digest(self, index: int) -> tuple[int, int] | None:
        log = self.core.log
        if not log.snapshot.index < index <= log.last_index():
            return None
        entry = log.entry(index)
        return entry.term, entry_digest(entry)

    # -- the run task ------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_tick_s = loop.time() + self.config.tick_interval_s
        self._schedule_tick(loop)
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    break
                # Messages before ticks: after a stall of this process (GC, a slow fsync, a
                # loaded CPU) the leader's heartbeats that arrived meanwhile reset the
                # election timer before the stalled ticks can fire it.
                self._feed_core()
                self._do_ticks(loop)
                self._feed_core()
                while self.core.has_ready() and not self._stopping:
                    await self._handle_ready(self.core.ready())
                    self._feed_core()
                await self._maybe_snapshot()
                await self._maintain_lsm()
        except asyncio.CancelledError:
            raise
        except STORAGE_FAULTS as exc:
            # Damaged data: fail-stop. The task ends normally; `storage_fault` says why.
            self.fail_stop(exc, during="run")
        except BaseException as exc:
            # A bug: the node stops; the simulator reports it, `mox start` exits with 1.
            self.failure = exc
            self._shut_down()
            raise
        finally:
            if self._tick_handle is not None:
                self._tick_handle.cancel()

    def _schedule_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tick_handle = loop.call_at(self._next_tick_s, self._on_tick_timer)

    def _on_tick_timer(self) -> None:
        self._tick_handle = None
        self._wake.set()

    def _do_ticks(self, loop: asyncio.AbstractEventLoop) -> None:
        # asyncio runs a timer up to one clock resolution early: a tick is due within it.
        now_s = loop.time() + min(_TICK_TOLERANCE_S_MAX, self.config.tick_interval_s / 10)
        if now_s >= self._next_tick_s:
            due, next_tick_s = ticks_due(self._next_tick_s, now_s, self.config.tick_interval_s)
            for _ in range(min(due, self.config.ticks_catch_up_max)):
                self.core.tick()
                self.stats.ticks += 1
            self._next_tick_s = next_tick_s
            assert self._next_tick_s > now_s
            if self._tick_handle is not None:
                self._tick_handle.cancel()
                self._tick_handle = None
        # Exactly one tick timer is pending whenever the loop waits: without it an idle
        # node (a partitioned follower) would never time out.
        if self._tick_handle is None:
            self._schedule_tick(loop)

    def _receive(self, src: int, payload: bytes) -> None:
        if self._stopping:
            return
        if len(self._inbox) >= self.config.inbox_max:
            self.stats.messages_dropped_inbox_full += 1
            return
        self._inbox.append((src, payload))
        self._wake.set()

    def _feed_core(self) -> None:
        """Hand queued messages, proposals and reads to the core (never mid-Ready)."""
        core = self.core
        while self._inbox:
            src, payload = self._inbox.popleft()
            try:
                msg = decode_message(payload)
            except MalformedMessage:
                self.stats.messages_malformed += 1
                continue
            if msg.src != src or msg.dst != self.node_id:
                self.stats.messages_malformed += 1
                continue
            self.stats.messages_received += 1
            core.step(msg)
        while self._proposals:
            proposal = self._proposals.popleft()
            if proposal.future.done():
                continue  # the submitter gave up before it was proposed
            if proposal.conf_change is not None:
                try:
                    index = core.propose_conf_change(proposal.conf_change)
                except ValueError as exc:
                    proposal.future.set_exception(exc)
                    continue
                if index is None:
                    refusal: RequestError = (
                        ConfChangeRefused(self.node_id, proposal.conf_change)
                        if core.role is Role.LEADER
                        else NotLeader(self.node_id, self.leader_id)
                    )
                    proposal.future.set_exception(refusal)
                    continue
                proposal.index = index
            else:
                index = core.propose([proposal.command])
            if index is None:
                proposal.future.set_exception(NotLeader(self.node_id, self.leader_id))
                continue
            self.stats.proposals += 1
            self._waiting_apply[index] = (core.term, proposal)
        while self._reads_to_start:
            ctx, read = self._reads_to_start.popleft()
            if read.future.done():
                continue
            self._reads_by_ctx[ctx] = read
            core.read_index(ctx)

    async def _handle_ready(self, rd: Ready) -> None:
        self.stats.readies += 1
        for msg in rd.messages_now:
            self._send(msg)
        # True while this Ready's state is on its way to disk: the simulator aims crashes
        # at this window, where durability-ordering bugs live.
        self.persisting = bool(rd.must_sync)
        old = self._superblock_state
        self.persisting_vote = rd.hard_state is not None and (
            (rd.hard_state.term, rd.hard_state.vote) != (old.term, old.vote)
        )
        if self.persisting_vote and self.on_persist_vote is not None:
            self.on_persist_vote(self)
        if rd.snapshot is not None:
            await self._install_snapshot(rd.snapshot)
        appended: list[tuple[int, int, int]] = []
        if rd.entries:
            first = rd.entries[0].index
            if first <= self.wal.last_seq:
                await self.wal.truncate_suffix(first)
            for entry in rd.entries:
                seq = self.wal.append(RTYPE_ENTRY, _entry_encoder.encode(entry))
                assert seq == entry.index, (seq, entry.index)
                appended.append((entry.index, entry.term, entry_digest(entry)))
            self.stats.entries_persisted += len(rd.entries)
            started_ns = self._clock.monotonic_ns()
            await self.wal.commit()
            self.stats.wal_commits += 1
            if self.on_wal_sync is not None:
                self.on_wal_sync((self._clock.monotonic_ns() - started_ns) / 1e9)
        if rd.hard_state is not None:
            await self._persist_hard_state(rd.hard_state)
        self.persisting = False
        self.persisting_vote = False
        for msg in rd.messages_after_persist:
            self._send(msg)
        applied: list[tuple[int, int]] = []
        for entry in rd.committed_entries:
            if entry.index <= self.applied_index:
                continue  # already in the LSM before a restart
            assert entry.index == self.applied_index + 1, (entry.index, self.applied_index)
            _index, result = _apply_entry(self.machine, entry)
            self.applied_index = entry.index
            self.stats.entries_applied += 1
            applied.append((entry.index, entry_digest(entry)))
            self._resolve_proposal(entry, result)
        for state in rd.read_states:
            read = self._reads_by_ctx.pop(state.ctx, None)
            if read is None or read.future.done():
                continue
            if state.index is None:
                read.future.set_exception(NotLeader(self.node_id, self.leader_id))
            else:
                read.index = state.index
                self._reads_ready.append(read)
        self._serve_reads()
        self.core.advance(rd)
        if self._observer is not None:
            self._observer(self, appended, applied)

    def _resolve_proposal(self, entry: Entry, result: bytes | None) -> None:
        waiting = self._waiting_apply.pop(entry.index, None)
        if waiting is None:
            return
        term, proposal = waiting
        if proposal.future.done():
            return
        if entry.term == term and entry.kind == NORMAL and proposal.conf_change is None:
            assert result is not None
            proposal.future.set_result(result)
        elif entry.term == term and entry.kind == CONFIG and proposal.conf_change is not None:
            proposal.future.set_result(b"")
        else:
            proposal.future.set_exception(
                ProposalDropped(self.node_id, entry.index, f"index taken by term {entry.term}")
            )

    def _serve_reads(self) -> None:
        if not self._reads_ready:
            return
        still: list[_Read] = []
        for read in self._reads_ready:
            assert read.index is not None
            if read.future.done():
                continue
            if read.index <= self.applied_index:
                self.stats.reads_linearizable += 1
                read.future.set_result(self.machine.query(read.query))
            else:
                still.append(read)
        self._reads_ready = still

    def _send(self, msg: Message) -> None:
        if self.on_send is not None:
            self.on_send(self, msg)
        self.stats.messages_sent += 1
        self._transport.send(msg.dst, encode_message(msg))

    async def _persist_hard_state(self, hs: HardState) -> None:
        """Term and vote must be durable before anything of the term leaves; the commit
        index alone is informational (the core restarts from the snapshot's), so a change of
        commit only is written with the next term or vote change, not on its own."""
        old = self._superblock_state
        if (hs.term, hs.vote) == (old.term, old.vote):
            return
        self._superblock_state = await self.superblock.write(
            msgspec.structs.replace(old, term=hs.term, vote=hs.vote, commit=hs.commit)
        )

    async def _install_snapshot(self, install: SnapshotInstall) -> None:
        """A snapshot from the leader: file first, then the LSM, then the WAL."""
        meta = install.meta
        await write_snapshot(self._fs, meta, install.data)
        await self.lsm.replace_all(decode_items(install.data), meta.index)
        self.machine.note_store_replaced()
        if install.keep_log_suffix:
            await self.wal.drop_prefix(meta.index + 1)
        else:
            await self.wal.reset(meta.index + 1)
        self.applied_index = meta.index
        self.stats.snapshots_installed += 1
        # The sender is the leader this node follows: only a leader sends InstallSnapshot,
        # and the core records it as leader when it steps the message.
        self.logger.info(
            "node.snapshot_installed",
            node=self.node_id,
            index=meta.index,
            term=meta.term,
            size_bytes=len(install.data),
            from_node=self.core.leader_id or None,
        )
        # Proposals at or below the snapshot can no longer be matched to their entries.
        for index in [i for i in self._waiting_apply if i <= meta.index]:
            _term, proposal = self._waiting_apply.pop(index)
            if not proposal.future.done():
                proposal.future.set_exception(
                    ProposalDropped(self.node_id, index, "replaced by an installed snapshot")
                )

    async def _maybe_snapshot(self) -> None:
        """Spec Snapshot, every snapshot_threshold applied entries (RaftCore.snapshot_due)."""
        core = self.core
        if not core.snapshot_due() or core.has_ready():
            return
        index = min(self.applied_index, core.log.commit_index, core.log.stable_index)
        if index <= core.log.snapshot.index:
            return
        # Make the LSM durable at `index` first: after the WAL prefix is gone, recovery
        # can only replay from the LSM's durable applied index.
        assert self.lsm.applied_index == self.applied_index
        await self.lsm.flush()
        index = self.applied_index
        assert self.lsm.durable_applied_index == index
        term = core.log.term_at(index)
        assert term is not None
        config = list(core.log.config_at(index))
        data = encode_items(self.lsm.iter_all())
        await write_snapshot(self._fs, SnapshotMeta(index=index, term=term, config=config), data)
        compacted = core.compact(index, data)
        assert compacted, (index, core.log.snapshot.index, core.log.commit_index)
        await self.wal.drop_prefix(index + 1)
        self.stats.snapshots_taken += 1
        self.logger.info(
            "node.snapshot_taken", node=self.node_id, index=index, term=term, size_bytes=len(data)
        )

    async def _maintain_lsm(self) -> None:
        if self.lsm.needs_flush:
            await self.lsm.flush()
        if self.lsm.needs_compaction:
            await self.lsm.compact_step(self.config.compaction_step_bytes)

    def _check_running(self) -> None:
        if self._stopping or self.stopped:
            raise NodeStopped(self.node_id)

    def _shut_down(self) -> None:
        """Fail everything pending; close the endpoint at once."""
        if self.stopped:
            return
        self.stopped = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        error = NodeStopped(self.node_id)
        pending: list[asyncio.Future[bytes]] = [p.future for p in self._proposals]
        pending += [p.future for _t, p in self._waiting_apply.values()]
        pending += [r.future for _c, r in self._reads_to_start]
        pending += [r.future for r in self._reads_by_ctx.values()]
        pending += [r.future for r in self._reads_ready]
        for future in pending:
            if not future.done():
                future.set_exception(error)
        self._proposals.clear()
        self._waiting_apply.clear()
        self._reads_to_start.clear()
        self._reads_by_ctx.clear()
        self._reads_ready.clear()
        self._inbox.clear()
        close_now = getattr(self._transport, "close_now", None)
        if close_now is not None:
            close_now()


def _log_storage_fault(logger: EventLogger, fault: StorageFaultError, during: str) -> None:
    logger.error(
        "node.storage_fault",
        node=fault.node_id,
        path=fault.path,
        offset=fault.offset,
        problem=fault.problem,
        during=during,
        action="stopped (fail-stop): no messages, votes, acknowledgements or reads from now on",
    )


def _timeouts(rng: Random, range_ticks: list[int]) -> Iterator[int]:
    """Election timeouts in ticks, uniform in [low, high) of `range_ticks` as it is at each
    draw (`Node.set_election_timeouts` changes it), drawn from the node's Random."""
    while True:
        low_ticks, high_ticks = range_ticks
        assert 1 <= low_ticks < high_ticks, range_ticks
        yield rng.randrange(low_ticks, high_ticks)


def _apply_entry(machine: StateMachine, entry: Entry) -> tuple[int, bytes | None]:
    """Apply one committed entry; the state machine's result for a normal entry."""
    if entry.kind == NORMAL and entry.commands:
        assert len(entry.commands) == 1, "the node proposes one command per entry"
        return entry.index, machine.apply(entry.index, entry.commands[0])
    assert entry.kind in (NORMAL, NOOP, CONFIG), entry.kind
    machine.apply_noop(entry.index)
    return entry.index, None


async def _reconcile_wal(
    wal: Wal, snapshot: SnapshotMeta | None, lsm_applied_index: int, root: str
) -> list[Entry]:
    """The WAL's entries after making it agree with the snapshot file (see module doc).

    Returns every entry the WAL holds from the one after min(LSM durable applied index,
    snapshot index) on: those to replay into the state machine, then the core's log.
    """
    if snapshot is not None and snapshot.index > 0:
        index = snapshot.index
        if wal.last_seq < index or _wal_term_at(wal, index) not in (None, snapshot.term):
            # A received snapshot whose log reset did not happen before the crash.
            await wal.reset(index + 1)
        elif wal.first_seq > index + 1:
            raise DataDirError(root, f"WAL starts at {wal.first_seq}, after snapshot {index} + 1")
    snapshot_index = snapshot.index if snapshot is not None else 0
    needed = min(lsm_applied_index, snapshot_index) + 1
    first = max(wal.first_seq, needed)
    if first > wal.last_seq:
        return []
    if first > needed:
        raise DataDirError(
            root,
            f"WAL starts at {wal.first_seq}, but the state store is durable only to "
            f"{lsm_applied_index} and the snapshot is at {snapshot_index}: entries lost",
        )
    entries = [_entry_decoder.decode(record.body) for record in wal.read(first, wal.last_seq)]
    for offset, entry in enumerate(entries):
        assert entry.index == first + offset, (entry.index, first + offset)
    return entries


def _wal_term_at(wal: Wal, index: int) -> int | None:
    """The term of the WAL's entry at `index`, None if the WAL does not hold it."""
    if not wal.first_seq <= index <= wal.last_seq:
        return None
    (record,) = wal.read(index, index)
    return _entry_decoder.decode(record.body).term
