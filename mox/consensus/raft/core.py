"""The sans-IO Raft core: `tick`, `step`, `propose`, then `ready`/`advance` (etcd-raft style).

Theory of operation. Every public call performs one or more actions of specs/raft/Raft.tla,
in order, and emits one trace event per action (specs/README.md). The core never touches a
clock, a file, a socket or a random number: time is `tick()`, randomized election timeouts are
drawn by the caller and handed in through the `timeouts` iterator, and everything the outside
world must do comes out of `ready()`:

    rd = core.ready()
    send rd.messages_now
    persist rd.snapshot, rd.entries (truncating the stable log at rd.entries[0].index if it
        overlaps), rd.hard_state; sync if rd.must_sync
    send rd.messages_after_persist
    apply rd.committed_entries; serve rd.read_states once applied
    core.advance(rd)

Durability rules encoded in the Ready: a message leaves before the persist only if the term and
vote it depends on are already durable and it acknowledges nothing (responses always wait); a
leader counts its own entries toward a commit only once `advance` reports them persisted.
`advance(rd)` first emits `PersistState` (the spec's durable := volatile, outbox released)
when `rd` made spec state durable or released messages; that is exact only if the core is
not stepped between `ready()` and `advance()`, which the runtime and the harness guarantee.

Bad input never raises out of `step`: a message that no correct peer could send is dropped and
counted in `rejected[reason]` (and logged), exactly as if the network had lost it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Literal

import msgspec

from mox.consensus.raft.log import RaftLog
from mox.consensus.raft.messages import (
    CONFIG,
    ENTRY_KINDS,
    INDEX_LIMIT,
    MESSAGE_OVERHEAD_BYTES,
    NO_VOTE,
    NOOP,
    NORMAL,
    READ_CTX_SIZE_BYTES_MAX,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    PreVote,
    PreVoteResponse,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    entry_size_bytes,
)
from mox.consensus.raft.quorum import committed_index, is_quorum
from mox.consensus.raft.read_only import LOCAL_READ, ForwardedReads, ReadOnly, ReadState
from mox.consensus.raft.trace import TraceSink, message_to_trace, tracing_enabled
from mox.consensus.raft.tracker import Progress, ProgressState

__all__ = [
    "ConfChange",
    "RaftConfig",
    "RaftConfigError",
    "RaftCore",
    "Ready",
    "RestoreError",
    "RestoredState",
    "Role",
    "SnapshotInstall",
]

_log = logging.getLogger("mox.consensus.raft")

# Responses acknowledge persisted state (a vote, entries, a snapshot): never before the persist.
_RESPONSE_TYPES: Final = (
    RequestVoteResponse,
    AppendEntriesResponse,
    InstallSnapshotResponse,
    PreVoteResponse,
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    # Asking for pre-votes (Ongaro's thesis 9.6): term and vote unchanged until a quorum grants.
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class RaftConfigError(ValueError):
    """A RaftConfig field is out of range. Names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"raft config {field}: {problem}")


class RestoreError(ValueError):
    """The durable state handed to RaftCore is inconsistent. Names the field (and entry)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"restored raft state {field}: {problem}")


class RaftConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Static parameters of one core. Limits bound every queue and message."""

    node_id: int
    # The initial configuration (used until a snapshot or a config entry says otherwise).
    # A node that joins later gets the cluster's initial members and is not among them.
    members: tuple[int, ...]
    heartbeat_ticks: int = 1
    # Commands per entry, and entries per AppendEntries.
    max_batch_size: int = 64
    max_message_size_bytes: int = 1 << 20
    # AppendEntries with entries in flight per follower (optimistic pipelining).
    max_inflight_appends: int = 16
    # Applied entries after which the runtime should snapshot (see RaftCore.snapshot_due).
    snapshot_threshold: int = 1024
    # Entries appended by this leader but not committed; propose returns None beyond it.
    max_uncommitted_entries: int = 8192
    # Read-index requests waiting for confirmation; more fail at once.
    max_pending_reads: int = 1024
    # A follower's read asked of its leader fails after this many ticks without an answer.
    read_timeout_ticks: int = 100
    # Committed entries handed out per Ready.
    max_apply_entries: int = 1024
    # An election starts with a pre-vote: the term goes up only once a quorum would vote, so a
    # node that cannot win (a stale log, a partition) does not depose a healthy leader.
    pre_vote: bool = True
    # A leader steps down when a quorum was not heard from within an election timeout, and a
    # node that heard from a leader within its election timeout ignores vote requests of a
    # higher term (the lease: etcd's checkQuorum / inLease).
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if not _is_node_id(self.node_id):
            raise RaftConfigError("node_id", f"must be an integer >= 1, got {self.node_id!r}")
        if not self.members:
            raise RaftConfigError("members", "must name at least one node")
        for k, member in enumerate(self.members):
            if not _is_node_id(member):
                raise RaftConfigError(f"members[{k}]", f"must be an integer >= 1, got {member!r}")
        if len(set(self.members)) != len(self.members):
            raise RaftConfigError("members", f"duplicate node id in {list(self.members)}")
        positive = (
            "heartbeat_ticks",
            "max_batch_size",
            "max_inflight_appends",
            "snapshot_threshold",
            "max_uncommitted_entries",
            "max_pending_reads",
            "max_apply_entries",
            "read_timeout_ticks",
        )
        for name in positive:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise RaftConfigError(name, f"must be an integer >= 1, got {value!r}")
        for flag in ("pre_vote", "check_quorum"):
            value = getattr(self, flag)
            if type(value) is not bool:
                raise RaftConfigError(flag, f"must be true or false, got {value!r}")
        size = self.max_message_size_bytes
        if type(size) is not int or size < 4 * MESSAGE_OVERHEAD_BYTES:
            raise RaftConfigError(
                "max_message_size_bytes",
                f"must be an integer >= {4 * MESSAGE_OVERHEAD_BYTES}, got {size!r}",
            )


class RestoredState(msgspec.Struct, frozen=True, kw_only=True):
    """What a node recovered from disk. Empty for a brand-new node."""

    hard_state: HardState = HardState()
    # None: no snapshot yet (index 0, the initial configuration).
    snapshot: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    # The log after the snapshot, contiguous from snapshot.index + 1.
    entries: list[Entry] = []
    # What the state machine has applied durably (entries up to it are not handed out again).
    applied_index: int = 0


class ConfChange(msgspec.Struct, frozen=True):
    """Add or remove one server (single-server membership change)."""

    op: Literal["add", "remove"]
    node_id: int


class SnapshotInstall(msgspec.Struct, frozen=True):
    """A snapshot received from the leader: persist it and load it into the state machine.

    With `keep_log_suffix` the stable log entries after meta.index stay (drop those up to
    it); without, the whole stable log is discarded and the log restarts at meta.index + 1.
    """

    meta: SnapshotMeta
    data: bytes
    keep_log_suffix: bool


class Ready(msgspec.Struct):
    """Everything the runtime must do, in the order of the module docstring."""

    hard_state: HardState | None
    entries: list[Entry]
    snapshot: SnapshotInstall | None
    messages_now: list[Message]
    messages_after_persist: list[Message]
    committed_entries: list[Entry]
    read_states: list[ReadState]
    must_sync: bool


def _is_nat(value: object) -> bool:
    return type(value) is int and 0 <= value < INDEX_LIMIT


def _is_node_id(value: object) -> bool:
    return type(value) is int and 1 <= value < INDEX_LIMIT


def _config_problem(members: object) -> str | None:
    if not isinstance(members, list) or not members:
        return "empty_config"
    if not all(_is_node_id(m) for m in members):
        return "bad_config_member"
    if len(set(members)) != len(members):
        return "duplicate_config_member"
    return None


class RaftCore:
    """One Raft node's protocol state. See the module docstring for the calling contract."""

    def __init__(
        self,
        config: RaftConfig,
        restored: RestoredState,
        timeouts: Iterator[int],
        trace: TraceSink | None = None,
    ) -> None:
        _check_restored(restored)
        self.cfg = config
        self.id = config.node_id
        snapshot = restored.snapshot or SnapshotMeta(0, 0, list(config.members))
        self.log = RaftLog(snapshot, restored.snapshot_data, restored.entries)
        self.log.applied_index = max(restored.applied_index, snapshot.index)
        self.term = restored.hard_state.term
        self.voted_for = restored.hard_state.vote
        if self.log.last_term() > self.term:
            # A crash between persisting entries (or a snapshot) and the hard state: the node
            # had adopted their term. Its vote in that term, if any, never left (votes leave
            # only after the hard state is durable), so it restarts with none.
            self.term = self.log.last_term()
            self.voted_for = NO_VOTE
        self.role = Role.FOLLOWER
        self.leader_id = 0
        # Bad messages dropped, by reason.
        self.rejected: dict[str, int] = {}

        self._timeouts = timeouts
        self._election_timeout_ticks = 0
        self._election_elapsed_ticks = 0
        self._heartbeat_elapsed_ticks = 0

        self._votes_responded: set[int] = set()
        self._votes_granted: set[int] = set()
        self._progress: dict[int, Progress] = {}
        self._leader_start_next_index = 1
        self._read_only = ReadOnly(config.max_pending_reads)
        self._read_round = 0
        # Reads are queued for round _read_round + 1, whose heartbeats leave at the next
        # ready(): every read asked until then shares one round (one message per follower).
        self._read_round_pending = False
        # A follower's reads asked of its leader (read index at the follower).
        self._forwarded = ForwardedReads(config.max_pending_reads, config.read_timeout_ticks)
        # Ticks since construction: the clock of forwarded reads' timeouts.
        self._ticks = 0
        # (index, term) of a config entry this node appended as leader removing itself.
        self._self_removal: tuple[int, int] | None = None
        # This node, outside its own configuration, denied a vote to a less up-to-date log.
        self._holds_needed_entries = False

        # Node ids this node has seen in any configuration; others may only send leader
        # requests (AppendEntries, InstallSnapshot), which is how a lagging node learns them.
        self._known: set[int] = set(config.members) | set(snapshot.config)
        for entry in restored.entries:
            if entry.kind == CONFIG:
                self._known.update(entry.config)

        # The durable (term, vote, commit): what a Ready's hard_state is compared against.
        hs = restored.hard_state
        self._persisted: tuple[int, int, int] = (hs.term, hs.vote, self.log.commit_index)
        self._msgs_now: list[Message] = []
        self._msgs_after: list[Message] = []
        self._read_states: list[ReadState] = []
        self._pending_install: SnapshotInstall | None = None
        self._outstanding: Ready | None = None
        # New entries on the leader not yet offered to followers (sent at the next ready()).
        self._append_pending = False
        # The commit index moved; followers hear of it at the next ready() (even without entries).
        self._commit_broadcast_pending = False

        self._trace = trace
        self._tracing = tracing_enabled(trace)
        self._reset_election_timer()
        if self._tracing:
            self._emit("Restart")
        self._assert_invariants()

    # -- state for callers -------------------------------------------------------------------

    @property
    def commit_index(self) -> int:
        return self.log.commit_index

    @property
    def applied_index(self) -> int:
        return self.log.applied_index

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        return self.log.snapshot

    @property
    def snapshot_data(self) -> bytes:
        return self.log.snapshot_data

    def config(self) -> tuple[int, ...]:
        """The configuration in effect (the last config entry in the log, else the snapshot's)."""
        return self.log.config()

    def progress(self, node_id: int) -> Progress | None:
        """The leader's replication progress of `node_id` (None if not leader or unknown)."""
        return self._progress.get(node_id) if self.role is Role.LEADER else None

    def snapshot_due(self) -> bool:
        """Whether snapshot_threshold entries were applied since the last snapshot."""
        applied = min(self.log.applied_index, self.log.commit_index, self.log.stable_index)
        return applied - self.log.snapshot.index >= self.cfg.snapshot_threshold

    # -- inputs ------------------------------------------------------------------------------

    def tick(self) -> None:
        """One logical clock tick: a leader's heartbeat timer, else the election timer."""
        self._ticks += 1
        if self._forwarded.pending:
            self._read_states.extend(self._forwarded.expire(self._ticks))
            if self.role is Role.FOLLOWER and self.leader_id != 0:
                self._forwarded.resend_due(self._ticks)
        if self.role is Role.LEADER:
            if self.cfg.check_quorum:
                self._election_elapsed_ticks += 1
                if self._election_elapsed_ticks >= self._election_timeout_ticks:
                    self._election_elapsed_ticks = 0
                    if not self.check_quorum():
                        self._assert_invariants()
                        return
            self._heartbeat_elapsed_ticks += 1
            if self._heartbeat_elapsed_ticks >= self.cfg.heartbeat_ticks:
                self._heartbeat_elapsed_ticks = 0
                self.broadcast_append(send_if_empty=True)
        else:
            self._election_elapsed_ticks = min(
                self._election_elapsed_ticks + 1, self._election_timeout_ticks
            )
            if self._election_elapsed_ticks >= self._election_timeout_ticks:
                self.campaign()
        self._assert_invariants()

    def promotable(self) -> bool:
        """Whether this node may time out.

        The spec's guard is `i in Config(i)`. The core also lets a node run whose removal from
        the configuration is not committed yet (it is a member of the configuration at its
        commit index) if it has evidence that it holds entries others need: it appended the
        removal itself as leader, or it denied a vote because its log is more up to date.
        Without this, a leader deposed right after appending its own removal holds the most
        up-to-date log, nobody can win without its vote, and it could never run: the cluster
        would be stuck. Its own vote does not count toward the quorum of its new configuration,
        so safety rests on BecomeLeader's quorum check. A removed follower without such
        evidence stays silent, so it does not disrupt the remaining members.
        """
        log = self.log
        if self.id in log.config():
            return True
        if self.id not in log.config_at(log.commit_index):
            return False
        if self._holds_needed_entries:
            return True
        removal = self._self_removal
        return removal is not None and log.term_at(removal[0]) == removal[1]

    def campaign(self) -> bool:
        """Spec StartPreVote (with pre_vote) or Timeout: start an election now. False if not
        allowed (leader, or not a member)."""
        if self.role is Role.LEADER or not self.promotable():
            return False
        if self.term + 1 >= INDEX_LIMIT:
            # Terms end at 2**63 - 1 (reachable only through a hostile peer): stay put.
            _log.error("raft node %d cannot campaign: term %d is the last one", self.id, self.term)
            return False
        if not self.cfg.pre_vote:
            self._run_election()
            return True
        self.become_pre_candidate()
        if is_quorum(self._votes_granted, self.log.config()):
            # A single-member configuration: its own pre-vote is a quorum.
            self._run_election()
        else:
            self._send_to_peers(self.send_pre_vote)
        return True

    def _run_election(self) -> None:
        """Spec Timeout or BecomeCandidate, then RequestVote to every peer (or BecomeLeader)."""
        self.become_candidate()
        if is_quorum(self._votes_granted, self.log.config()):
            self.become_leader()
        else:
            self._send_to_peers(self.send_request_vote)

    def _send_to_peers(self, send: Callable[[int], None]) -> None:
        """`send(peer)` for every other member of the latest configuration, in id order."""
        for peer in self.log.config():
            if peer != self.id:
                send(peer)

    def check_quorum(self) -> bool:
        """Spec StepDown (check-quorum): once per election timeout a leader checks that a quorum
        of its configuration was heard from since the last check; else it steps down to
        follower, so a leader cut off from its quorum (or removed while it led an older term)
        stops believing it leads. Returns whether it is still leader."""
        assert self.role is Role.LEADER and self.cfg.check_quorum
        config = self.log.config()
        # is_quorum counts members of `config` only: a leader outside its configuration
        # (its removal not committed yet) and removed followers do not count.
        active = {self.id}
        for node in sorted(self._progress):
            pr = self._progress[node]
            if pr.recent_active:
                active.add(node)
            pr.recent_active = False
        if is_quorum(active, config):
            return True
        _log.info("raft node %d steps down: heard from %s of %s", self.id, sorted(active), list(config))
        self.become_follower(self.term, 0)
        if self._tracing:
            self._emit("StepDown")
        assert self.leader_id == 0
        return False

    def _in_lease(self) -> bool:
        """Whether this node heard from a current leader within its election timeout (a
        leader: is one). Such a node ignores vote requests of a higher term (etcd's inLease)."""
        return (
            self.cfg.check_quorum
            and self.leader_id != 0
            and self._election_elapsed_ticks < self._election_timeout_ticks
        )

    def step(self, msg: Message) -> None:
        """Handles one message from another node. Never raises for bad input."""
        if isinstance(msg, ReadIndex | ReadIndexResponse):
            # Outside the spec: no term update, no trace event (see step_read).
            self.step_read(msg)
            return
        reason = self._check_message(msg)
        if reason is not None:
            self._reject(reason, msg)
            return
        if msg.term > self.term:
            if isinstance(msg, RequestVote | PreVote) and self._in_lease():
                # Spec DropVoteRequestInLease: a leader was heard from within the election
                # timeout, so this candidate cannot be needed; answering would let a node
                # with a stale view depose a healthy leader (the term change) or waste a vote.
                if self._tracing:
                    self._emit("DropVoteRequestInLease", msg)
                return
            if not (isinstance(msg, PreVote) or (isinstance(msg, PreVoteResponse) and msg.vote_granted)):
                # A pre-vote asks about a future term and a granted answer carries it: neither
                # moves this node's term.
                self.become_follower(msg.term, 0)
                if self._tracing:
                    self._emit("UpdateTerm", msg)
        elif msg.term < self.term and not isinstance(msg, PreVote):
            # A stale pre-vote is answered (a rejection carrying this term, so the sender
            # catches up); so is a stale AppendEntries (below); the rest is dropped.
            if isinstance(msg, AppendEntries) and (self.cfg.pre_vote or self.cfg.check_quorum):
                self.handle_stale_append_entries(msg)
                return
            if self._tracing:
                self._emit("DropStaleMessage", msg)
            return
        if isinstance(msg, PreVote):
            self.handle_pre_vote(msg)
        elif isinstance(msg, PreVoteResponse):
            self.handle_pre_vote_response(msg)
        elif self.role is Role.LEADER:
            pr = self._progress.get(msg.src)
            if pr is not None:
                pr.recent_active = True
            self.step_leader(msg)
        elif self.role is Role.CANDIDATE:
            self.step_candidate(msg)
        else:
            self.step_follower(msg)
        self._assert_invariants()

    # -- per-role dispatch (msg.term == self.term) ---------------------------------------------

    def step_leader(self, msg: Message) -> None:
        """A leader replicates: responses drive replication; votes are denied (it voted)."""
        assert self.role is Role.LEADER and msg.term == self.term
        if isinstance(msg, AppendEntriesResponse):
            self.handle_append_entries_response(msg)
        elif isinstance(msg, InstallSnapshotResponse):
            self.handle_install_snapshot_response(msg)
        elif isinstance(msg, RequestVote):
            self.handle_request_vote(msg)
        else:
            # Requests of another leader of this term were rejected by _check_message.
            assert isinstance(msg, RequestVoteResponse), type(msg)
            self.handle_request_vote_response(msg)

    def step_candidate(self, msg: Message) -> None:
        """A candidate counts votes; a leader of its term makes it a follower."""
        assert self.role is Role.CANDIDATE and msg.term == self.term
        if isinstance(msg, RequestVoteResponse):
            self.handle_request_vote_response(msg)
        else:
            self._step_common(msg)

    def step_follower(self, msg: Message) -> None:
        """A follower (or pre-candidate) obeys its leader and votes."""
        assert self.role in (Role.FOLLOWER, Role.PRE_CANDIDATE) and msg.term == self.term
        if isinstance(msg, RequestVoteResponse):
            self.handle_request_vote_response(msg)
        else:
            self._step_common(msg)

    def _step_common(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries):
            self.handle_append_entries(msg)
        elif isinstance(msg, InstallSnapshot):
            self.handle_install_snapshot(msg)
        elif isinstance(msg, RequestVote):
            self.handle_request_vote(msg)
        elif isinstance(msg, AppendEntriesResponse):
            self.handle_append_entries_response(msg)
        else:
            assert isinstance(msg, InstallSnapshotResponse), type(msg)
            self.handle_install_snapshot_response(msg)

    def propose(self, commands: list[bytes]) -> int | None:
        """Spec ClientRequest: appends `commands` as entries of at most max_batch_size commands
        and max_message_size_bytes each. Returns the index of the last entry (all commands
        are committed once it is), or None if not leader or max_uncommitted_entries is reached.
        Raises ValueError for an empty list or a command that cannot fit in one message."""
        if not commands:
            raise ValueError("propose: commands must not be empty")
        entry_limit_bytes = self.cfg.max_message_size_bytes - MESSAGE_OVERHEAD_BYTES
        for k, command in enumerate(commands):
            if not isinstance(command, bytes):
                raise ValueError(f"propose: commands[{k}] must be bytes, got {type(command).__name__}")
            if len(command) + 5 + 24 > entry_limit_bytes:
                raise ValueError(
                    f"propose: commands[{k}] is {len(command)} bytes, more than fits in "
                    f"max_message_size_bytes={self.cfg.max_message_size_bytes}"
                )
        if self.role is not Role.LEADER:
            return None
        batches: list[list[bytes]] = [[]]
        batch_bytes = 24
        for command in commands:
            size = len(command) + 5
            batch = batches[-1]
            if batch and (len(batch) >= self.cfg.max_batch_size or batch_bytes + size > entry_limit_bytes):
                batches.append([])
                batch_bytes = 24
            batches[-1].append(command)
            batch_bytes += size
        uncommitted = self.log.last_index() - self.log.commit_index
        if uncommitted + len(batches) > self.cfg.max_uncommitted_entries:
            return None
        for batch in batches:
            entry = Entry(self.term, self.log.last_index() + 1, NORMAL, batch)
            assert entry_size_bytes(entry) <= entry_limit_bytes
            self.log.append(entry)
            if self._tracing:
                self._emit(
                    "ClientRequest", args={"index": entry.index, "commands": [c.hex() for c in batch]}
                )
        # Replication waits for the next ready(): proposals until then share messages. No
        # commit here: new entries are not persisted, and committing in advance() (where the
        # leader's persisted index is its last index) is what the spec's AdvanceCommitIndex,
        # which counts the leader at its last index, can follow.
        self._append_pending = True
        self._assert_invariants()
        return self.log.last_index()

    def propose_conf_change(self, change: ConfChange) -> int | None:
        """Spec ChangeMembership: appends a config entry adding or removing one server.

        Returns its index, or None if not leader, if a config entry is still uncommitted, or if
        no entry of this term is committed yet (retry later). Raises ValueError for a change
        that makes no sense (adding a member, removing a non-member or the last member).
        """
        if change.op not in ("add", "remove"):
            raise ValueError(f"conf change: op must be 'add' or 'remove', got {change.op!r}")
        if not _is_node_id(change.node_id):
            raise ValueError(f"conf change: node_id must be an integer >= 1, got {change.node_id!r}")
        if self.role is not Role.LEADER:
            return None
        old = self.log.config()
        node = change.node_id
        if change.op == "add":
            if node in old:
                raise ValueError(f"conf change: node {node} is already a member of {list(old)}")
            new = sorted((*old, node))
        else:
            if node not in old:
                raise ValueError(f"conf change: node {node} is not a member of {list(old)}")
            if len(old) == 1:
                raise ValueError(f"conf change: cannot remove node {node}, the last member")
            new = sorted(m for m in old if m != node)
        if self.log.last_config_index() > self.log.commit_index:
            return None
        if self.log.term_at(self.log.commit_index) != self.term:
            return None
        entry = Entry(self.term, self.log.last_index() + 1, CONFIG, [], new)
        self.log.append(entry)
        self._known.add(node)
        if node == self.id:
            self._self_removal = (entry.index, entry.term)
        if node != self.id and change.op == "add":
            # Forget what this leader knew of the node before it was removed: it may come
            # back with an empty log (a replaced disk, a joiner), and a stale match index
            # would have the leader probe from it forever while the node rejects.
            self._progress[node] = Progress(self._leader_start_next_index)
        if self._tracing:
            self._emit("ChangeMembership", args={change.op: node, "config": new, "index": entry.index})
        # A smaller quorum may commit more: that happens in advance(), after the persist
        # (see propose). Reads may be confirmed by the new quorum at once.
        self._append_pending = True
        self._maybe_confirm_reads()
        self._assert_invariants()
        return entry.index

    def read_index(self, ctx: bytes) -> None:
        """Requests a linearizable read; the answer comes in a later Ready's read_states.

        A leader records its commit index (once it has committed an entry of its term) and
        confirms its leadership with a heartbeat round to a quorum. A follower that knows a
        leader asks it for that index (ReadIndex, answered by ReadIndexResponse) and hands the
        answer out; it fails the read (index None) if it loses that leader or gets no answer
        within read_timeout_ticks. Anything else (a candidate, a follower without a leader, a
        full queue) answers ReadState(ctx, None) at once: retry later or elsewhere.
        `ctx` identifies the read: at most READ_CTX_SIZE_BYTES_MAX bytes (else ValueError);
        on a follower, a ctx still pending there fails at once (None), so make ctxs unique.
        """
        if not isinstance(ctx, bytes) or len(ctx) > READ_CTX_SIZE_BYTES_MAX:
            raise ValueError(f"read_index: ctx must be at most {READ_CTX_SIZE_BYTES_MAX} bytes, got {ctx!r:.80}")
        if self.role is Role.FOLLOWER and self.leader_id != 0:
            self._forward_read(ctx)
            return
        if self.role is not Role.LEADER or self._read_only.is_full():
            self._read_states.append(ReadState(ctx, None))
            return
        if self.log.term_at(self.log.commit_index) != self.term:
            self._read_only.waiting_for_commit.append((ctx, LOCAL_READ))
            return
        self._start_read_round([(ctx, LOCAL_READ)])

    def _forward_read(self, ctx: bytes) -> None:
        """A follower's read: asked of its leader at the next ready() (one ReadIndex for all
        the reads asked until then); answered by a ReadIndexResponse (see step_read)."""
        assert self.role is Role.FOLLOWER and self.leader_id != 0
        forwarded = self._forwarded
        # A ctx already asked would make its answer ambiguous: that read fails instead.
        if ctx in forwarded.pending or forwarded.is_full():
            self._read_states.append(ReadState(ctx, None))
            return
        forwarded.add(ctx, self.leader_id, self.term, self._ticks)

    def compact(self, index: int, data: bytes) -> bool:
        """Spec Snapshot: the state machine has a snapshot at `index`; drop the log up to it.

        Returns False (and changes nothing) unless snapshot_index < index <= commit_index and
        the entry is applied and persisted. The runtime drops its own log prefix after True.
        """
        log = self.log
        if not (log.snapshot.index < index <= log.commit_index):
            return False
        if index > log.applied_index or index > log.stable_index:
            return False
        log.compact(index, data)
        if self._tracing:
            self._emit("Snapshot", args={"index": index})
        self._assert_invariants()
        return True

    # -- output ------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        log = self.log
        return bool(
            self._append_pending
            or self._commit_broadcast_pending
            or self._msgs_now
            or self._msgs_after
            or self._read_states
            or self._read_round_pending
            or self._forwarded.unsent
            or self._pending_install is not None
            or log.stable_index < log.last_index()
            or log.applied_index < log.commit_index
            or (self.term, self.voted_for, log.commit_index) != self._persisted
        )

    def ready(self) -> Ready:
        """What to persist, send and apply now. Call `advance(rd)` before the next `ready()`."""
        assert self._outstanding is None, "ready() called again before advance()"
        if self._read_round_pending:
            self._read_round_pending = False
            assert self.role is Role.LEADER  # stepping down clears it
            # The round becomes visible only now: every AppendEntries that carries it leaves
            # after all of its reads were queued, so an acknowledgement proves leadership
            # after each of them arrived (an earlier message could be acknowledged before).
            self._read_round += 1
            self.broadcast_append(send_if_empty=True)
            # That broadcast offered every follower its entries and the commit index.
            self._append_pending = False
            self._commit_broadcast_pending = False
            self._maybe_confirm_reads()
        if self._append_pending or self._commit_broadcast_pending:
            if self.role is Role.LEADER:
                self.broadcast_append(send_if_empty=self._commit_broadcast_pending)
            self._append_pending = False
            self._commit_broadcast_pending = False
        if self._forwarded.unsent:
            # Losing the leader fails (and unqueues) every forwarded read: these are for it.
            assert self.role is Role.FOLLOWER and self.leader_id != 0
            ctxs = self._forwarded.take_unsent()
            # Not through _send: it depends on nothing durable and is no spec message.
            self._msgs_now.append(ReadIndex(self.term, self.id, self.leader_id, ctxs))
        log = self.log
        hard: HardState | None = None
        if (self.term, self.voted_for, log.commit_index) != self._persisted:
            hard = HardState(self.term, self.voted_for, log.commit_index)
        entries = log.unstable_entries()
        install = self._pending_install
        self._pending_install = None
        committed: list[Entry] = []
        if log.applied_index < log.commit_index:
            hi = min(log.commit_index, log.applied_index + self.cfg.max_apply_entries)
            committed = log.slice(log.applied_index + 1, hi + 1)
            log.applied_index = hi
        must_sync = (
            bool(entries)
            or install is not None
            or (hard is not None and (hard.term, hard.vote) != self._persisted[:2])
        )
        rd = Ready(
            hard_state=hard,
            entries=entries,
            snapshot=install,
            messages_now=self._msgs_now,
            messages_after_persist=self._msgs_after,
            committed_entries=committed,
            read_states=self._read_states,
            must_sync=must_sync,
        )
        self._msgs_now = []
        self._msgs_after = []
        self._read_states = []
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The runtime has done everything `rd` asked (persisted, sent, applied)."""
        assert rd is self._outstanding, "advance() with a Ready that is not the outstanding one"
        self._outstanding = None
        if self._tracing and _persists_spec_state(rd, self._persisted):
            # Spec PersistState: durable := volatile, the outbox (messages_after_persist)
            # released. Emitted here, before the Ready's effects are recorded: the runtime
            # sends messages_after_persist right before advance() with no await between, so
            # no peer can have received one before this event is in the trace.
            self._emit("PersistState")
        if rd.hard_state is not None:
            hs = rd.hard_state
            self._persisted = (hs.term, hs.vote, hs.commit)
        if rd.entries:
            last = rd.entries[-1]
            # Unless a conflict replaced it meanwhile (then the next Ready rewrites it).
            if self.log.term_at(last.index) == last.term:
                self.log.stable_index = max(self.log.stable_index, last.index)
        if self.role is Role.LEADER:
            self.maybe_commit()
        self._assert_invariants()

    # -- roles -------------------------------------------------------------------------------

    def become_follower(self, term: int, leader_id: int) -> None:
        """Follower of `term` (a higher term forgets the vote: spec UpdateTerm)."""
        assert term >= self.term
        old_term = self.term
        if term > self.term:
            self.term = term
            self.voted_for = NO_VOTE
        if term > old_term or leader_id != self.leader_id:
            # The leader the forwarded reads were asked of is gone (or was never confirmed).
            self._read_states.extend(self._forwarded.fail_all())
        was_leader = self.role is Role.LEADER
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self._votes_responded.clear()
        self._votes_granted.clear()
        if was_leader:
            self._append_pending = False
            self._commit_broadcast_pending = False
            self._progress.clear()
            self._read_round_pending = False
            failed = [(ctx, src, None) for ctx, src in self._read_only.fail_all()]
            self._answer_reads(failed, old_term)
        self._reset_election_timer()

    def become_pre_candidate(self) -> None:
        """Spec StartPreVote: ask for pre-votes for term + 1; term and vote stay as they are."""
        assert self.role is not Role.LEADER
        assert self.promotable()
        assert self.cfg.pre_vote
        self.role = Role.PRE_CANDIDATE
        self.leader_id = 0
        # No leader to ask any more: forwarded reads fail, as on becoming a candidate.
        self._read_states.extend(self._forwarded.fail_all())
        self._votes_responded = {self.id}
        self._votes_granted = {self.id}
        self._reset_election_timer()
        if self._tracing:
            self._emit("StartPreVote")
        assert self.role is Role.PRE_CANDIDATE and not self._in_lease()

    def become_candidate(self) -> None:
        """Spec Timeout (without pre-vote), or BecomeCandidate (a pre-candidate with a quorum
        of pre-votes): term + 1, vote for itself."""
        assert self.role is not Role.LEADER
        assert self.promotable()
        assert self.term + 1 < INDEX_LIMIT, "term overflow"
        action = "BecomeCandidate" if self.role is Role.PRE_CANDIDATE else "Timeout"
        if action == "BecomeCandidate":
            assert is_quorum(self._votes_granted, self.log.config())
        self.term += 1
        self.voted_for = self.id
        self.role = Role.CANDIDATE
        self.leader_id = 0
        self._read_states.extend(self._forwarded.fail_all())
        self._votes_responded = {self.id}
        self._votes_granted = {self.id}
        self._reset_election_timer()
        if self._tracing:
            self._emit(action)

    def become_leader(self) -> None:
        """Spec BecomeLeader: nextIndex after the last entry, matchIndex 0, then a no-op."""
        assert self.role is Role.CANDIDATE
        assert is_quorum(self._votes_granted, self.log.config())
        self.role = Role.LEADER
        self.leader_id = self.id
        self._leader_start_next_index = self.log.last_index() + 1
        self._progress = {
            node: Progress(self._leader_start_next_index)
            for node in sorted(self._known)
            if node != self.id
        }
        self._read_round = 0
        assert not self._read_round_pending
        self._heartbeat_elapsed_ticks = 0
        # The check-quorum period starts now.
        self._election_elapsed_ticks = 0
        self.log.append(Entry(self.term, self.log.last_index() + 1, NOOP))
        if self._tracing:
            self._emit("BecomeLeader")
        self.broadcast_append(send_if_empty=True)

    # -- sending -----------------------------------------------------------------------------

    def send_pre_vote(self, peer: int) -> None:
        """Spec PreVote: asks `peer` whether it would vote in term + 1."""
        assert self.role is Role.PRE_CANDIDATE and peer != self.id
        msg = PreVote(self.term + 1, self.id, peer, self.log.last_index(), self.log.last_term())
        self._send(msg)
        if self._tracing:
            self._emit("PreVote", msg)

    def send_request_vote(self, peer: int) -> None:
        """Spec RequestVote."""
        assert self.role is Role.CANDIDATE and peer != self.id
        msg = RequestVote(self.term, self.id, peer, self.log.last_index(), self.log.last_term())
        self._send(msg)
        if self._tracing:
            self._emit("RequestVote", msg)

    def broadcast_append(self, *, send_if_empty: bool) -> None:
        """Sends every follower what it lacks, up to its in-flight window (a heartbeat if
        `send_if_empty` and there is nothing to send)."""
        for peer in self.log.config():
            if peer != self.id and self.send_append(peer, send_if_empty=send_if_empty):
                self._send_pipeline(peer)

    def send_append(self, peer: int, *, send_if_empty: bool) -> bool:
        """Spec AppendEntries (or SendSnapshot if the entries are compacted). Returns whether
        a message was sent."""
        assert self.role is Role.LEADER and peer != self.id
        pr = self._progress_of(peer)
        log = self.log
        if pr.next_index <= log.snapshot.index:
            self.send_snapshot(peer)
            return True
        assert pr.next_index <= log.last_index() + 1, (peer, pr)
        entries: list[Entry] = []
        if pr.next_index <= log.last_index() and pr.can_send_entries(self.cfg.max_inflight_appends):
            entries = log.slice_limited(
                pr.next_index,
                self.cfg.max_batch_size,
                self.cfg.max_message_size_bytes - MESSAGE_OVERHEAD_BYTES,
            )
        if not entries and not send_if_empty:
            return False
        prev_index = pr.next_index - 1
        prev_term = log.term_at(prev_index)
        assert prev_term is not None
        last_sent = prev_index + len(entries)
        msg = AppendEntries(
            self.term,
            self.id,
            peer,
            prev_index,
            prev_term,
            entries,
            min(log.commit_index, last_sent),
            self._read_round,
        )
        pr.next_index = last_sent + 1
        if entries:
            pr.sent_entries(last_sent)
        self._send(msg)
        if self._tracing:
            self._emit("AppendEntries", msg)
        return True

    def send_snapshot(self, peer: int) -> None:
        """Spec SendSnapshot: the follower needs entries this leader has compacted away."""
        pr = self._progress_of(peer)
        snap = self.log.snapshot
        assert pr.next_index <= snap.index
        msg = InstallSnapshot(
            self.term, self.id, peer, snap.index, snap.term, list(snap.config), self.log.snapshot_data
        )
        pr.next_index = snap.index + 1
        pr.sent_snapshot()
        self._send(msg)
        if self._tracing:
            self._emit("SendSnapshot", msg)

    # -- handlers (m.term == self.term here) ---------------------------------------------------

    def handle_request_vote(self, m: RequestVote) -> None:
        """Spec HandleRequestVoteRequest."""
        grant = self.voted_for in (NO_VOTE, m.src) and self.log.is_up_to_date(
            m.last_log_term, m.last_log_index
        )
        if grant:
            self.voted_for = m.src
            self._election_elapsed_ticks = 0
        elif self.voted_for in (NO_VOTE, m.src) and self.id not in self.log.config():
            self._holds_needed_entries = True
        self._send(RequestVoteResponse(self.term, self.id, m.src, grant))
        if self._tracing:
            self._emit("HandleRequestVoteRequest", m, {"granted": grant})

    def handle_stale_append_entries(self, m: AppendEntries) -> None:
        """Spec HandleStaleAppendEntries: answer a leader of an older term with this term.

        With pre-vote and the lease a node can be stuck at a term above the leader's (its
        election went as far as term + 1 and then lost, e.g. its vote requests were dropped
        in lease): it drops the leader's messages as stale, and its own vote requests never
        move anyone. The answer makes the old leader adopt the term, so a new election can
        include this node (etcd answers MsgApp/MsgHeartbeat of a lower term the same way).
        """
        assert m.term < self.term
        self._send(AppendEntriesResponse(self.term, self.id, m.src, False, 0))
        if self._tracing:
            self._emit("HandleStaleAppendEntries", m)

    def handle_pre_vote(self, m: PreVote) -> None:
        """Spec HandlePreVoteRequest (any term, any role): grant iff the request is for a
        term above ours and the sender's log is at least as up to date. Neither term nor vote
        changes. The answer carries the request's term if granted, else ours."""
        up_to_date = self.log.is_up_to_date(m.last_log_term, m.last_log_index)
        grant = m.term > self.term and up_to_date
        if m.term > self.term and not up_to_date and self.id not in self.log.config():
            # As for a vote (handle_request_vote): evidence that this node holds entries others
            # need, so it may run although its removal is appended (RaftCore.promotable).
            self._holds_needed_entries = True
        term_before, vote_before = self.term, self.voted_for
        self._send(PreVoteResponse(m.term if grant else self.term, self.id, m.src, grant))
        if self._tracing:
            self._emit("HandlePreVoteRequest", m, {"granted": grant})
        assert (self.term, self.voted_for) == (term_before, vote_before)

    def handle_pre_vote_response(self, m: PreVoteResponse) -> None:
        """Spec HandlePreVoteResponse: a pre-candidate counts a grant for term + 1 or a
        rejection in its term; any other answer is consumed with no effect. A quorum of grants
        starts the real election (BecomeCandidate)."""
        assert m.term >= self.term
        assert m.term == self.term or m.vote_granted, "a higher-term rejection is UpdateTerm first"
        won = False
        if self.role is Role.PRE_CANDIDATE:
            if m.vote_granted and m.term == self.term + 1:
                self._votes_responded.add(m.src)
                self._votes_granted.add(m.src)
            elif not m.vote_granted:
                self._votes_responded.add(m.src)
            won = is_quorum(self._votes_granted, self.log.config()) and self.promotable()
        if self._tracing:
            self._emit("HandlePreVoteResponse", m)
        if won:
            self._run_election()

    def handle_request_vote_response(self, m: RequestVoteResponse) -> None:
        """Spec HandleRequestVoteResponse (a non-candidate just consumes it)."""
        won = False
        if self.role is Role.CANDIDATE:
            self._votes_responded.add(m.src)
            if m.vote_granted:
                self._votes_granted.add(m.src)
            won = is_quorum(self._votes_granted, self.log.config())
        if self._tracing:
            self._emit("HandleRequestVoteResponse", m)
        if won:
            self.become_leader()

    def handle_append_entries(self, m: AppendEntries) -> None:
        """Spec HandleAppendEntriesRequest: the whole message in one step."""
        assert self.role is not Role.LEADER
        if self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self.become_follower(self.term, m.src)
        self.leader_id = m.src
        self._election_elapsed_ticks = 0
        self._holds_needed_entries = False
        log = self.log
        prev = m.prev_log_index
        if prev > log.last_index() or (
            prev >= log.snapshot.index and log.term_at(prev) != m.prev_log_term
        ):
            hint = min(prev - 1, log.last_index()) if prev > 0 else 0
            self._send(AppendEntriesResponse(self.term, self.id, m.src, False, hint, m.read_round))
        else:
            for k, entry in enumerate(m.entries):
                if entry.index <= log.snapshot.index:
                    continue
                term = log.term_at(entry.index)
                if term == entry.term:
                    continue
                if term is not None:
                    log.truncate_from(entry.index)
                for new in m.entries[k:]:
                    log.append(new)
                    if new.kind == CONFIG:
                        self._known.update(new.config)
                break
            last_new = prev + len(m.entries)
            log.commit_index = max(log.commit_index, min(m.leader_commit, last_new))
            self._send(AppendEntriesResponse(self.term, self.id, m.src, True, last_new, m.read_round))
        if self._tracing:
            self._emit("HandleAppendEntriesRequest", m)

    def handle_append_entries_response(self, m: AppendEntriesResponse) -> None:
        """Spec HandleAppendEntriesResponse (a non-leader just consumes it)."""
        if self.role is not Role.LEADER:
            if self._tracing:
                self._emit("HandleAppendEntriesResponse", m)
            return
        pr = self._progress_of(m.src)
        # A reject while a snapshot is in flight answers a message sent before it: back off
        # as the spec says, but resend nothing until the snapshot is acknowledged or the next
        # heartbeat finds it still missing.
        snapshot_in_flight = pr.state is ProgressState.SNAPSHOT
        if m.success:
            self._progress_acknowledged(pr, m.match_index)
        else:
            pr.next_index = max(min(pr.next_index - 1, m.match_index + 1), pr.match_index + 1)
            if not snapshot_in_flight:
                pr.rejected()
        in_config = m.src in self.log.config()
        if in_config:
            pr.read_round_acked = max(pr.read_round_acked, m.read_round)
        if self._tracing:
            self._emit("HandleAppendEntriesResponse", m)
        if m.success:
            self.maybe_commit()
        self._maybe_confirm_reads()
        if self.role is Role.LEADER and in_config and (m.success or not snapshot_in_flight):
            self._send_pipeline(m.src)

    def handle_install_snapshot(self, m: InstallSnapshot) -> None:
        """Spec HandleInstallSnapshotRequest."""
        assert self.role is not Role.LEADER
        if self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self.become_follower(self.term, m.src)
        self.leader_id = m.src
        self._election_elapsed_ticks = 0
        log = self.log
        if m.snapshot_index <= log.commit_index:
            match = log.commit_index
        else:
            meta = SnapshotMeta(m.snapshot_index, m.snapshot_term, list(m.config))
            keep = log.install(meta, m.data)
            self._known.update(m.config)
            previous = self._pending_install
            if previous is not None:
                keep = keep and previous.keep_log_suffix
            self._pending_install = SnapshotInstall(meta, m.data, keep)
            match = m.snapshot_index
        self._send(InstallSnapshotResponse(self.term, self.id, m.src, match))
        if self._tracing:
            self._emit("HandleInstallSnapshotRequest", m)

    def handle_install_snapshot_response(self, m: InstallSnapshotResponse) -> None:
        """Spec HandleInstallSnapshotResponse: a successful AppendEntries response."""
        if self.role is not Role.LEADER:
            if self._tracing:
                self._emit("HandleInstallSnapshotResponse", m)
            return
        pr = self._progress_of(m.src)
        self._progress_acknowledged(pr, m.match_index)
        if self._tracing:
            self._emit("HandleInstallSnapshotResponse", m)
        self.maybe_commit()
        if self.role is Role.LEADER and m.src in self.log.config():
            self._send_pipeline(m.src)

    # -- helpers -----------------------------------------------------------------------------

    def _progress_of(self, peer: int) -> Progress:
        pr = self._progress.get(peer)
        if pr is None:
            # A server the leader had not heard of when elected: the spec's nextIndex for it is
            # still the one BecomeLeader set.
            pr = Progress(self._leader_start_next_index)
            self._progress[peer] = pr
        return pr

    def _progress_acknowledged(self, pr: Progress, match_index: int) -> None:
        assert match_index <= self.log.last_index()
        pr.match_index = max(pr.match_index, match_index)
        pr.next_index = max(pr.next_index, match_index + 1)
        if pr.state is ProgressState.SNAPSHOT and pr.match_index < self.log.snapshot.index:
            return
        pr.acknowledged(pr.match_index)

    def _send_pipeline(self, peer: int) -> None:
        """After a response: fill the follower's in-flight window (after a reject: one probe)."""
        pr = self._progress_of(peer)
        if pr.next_index <= self.log.snapshot.index and pr.state is ProgressState.SNAPSHOT:
            return
        for _ in range(self.cfg.max_inflight_appends):
            if self.role is not Role.LEADER:
                return
            pr = self._progress_of(peer)
            if pr.next_index <= self.log.snapshot.index:
                self.send_snapshot(peer)
                return
            if pr.next_index > self.log.last_index():
                return
            if not self.send_append(peer, send_if_empty=False):
                return

    def maybe_commit(self) -> None:
        """Spec AdvanceCommitIndex, counting the leader's own entries only once persisted."""
        if self.role is not Role.LEADER:
            return
        log = self.log
        config = log.config()
        stable = log.stable_index

        def match_of(node: int) -> int:
            if node == self.id:
                return stable
            return self._progress_of(node).match_index

        index = committed_index(config, match_of)
        if index <= log.commit_index or log.term_at(index) != self.term:
            return
        assert index <= log.last_index()
        log.commit_index = index
        if self.id not in config and log.last_config_index() <= index:
            # Removed from the configuration, and the removal is committed: step down.
            self.become_follower(self.term, 0)
        if self._tracing:
            self._emit("AdvanceCommitIndex", args={"index": index})
        if self.role is not Role.LEADER:
            return
        if self._read_only.waiting_for_commit:
            waiting = list(self._read_only.waiting_for_commit)
            self._read_only.waiting_for_commit.clear()
            self._start_read_round(waiting)
        else:
            # Followers learn the new commit index at the next ready(), in one message each
            # however many responses advanced it meanwhile.
            self._commit_broadcast_pending = True

    def _start_read_round(self, requests: list[tuple[bytes, int]]) -> None:
        """Queues `requests` ((ctx, src): LOCAL_READ or the follower that asked) at the
        commit index, for the heartbeat round that the next ready() starts."""
        assert self.role is Role.LEADER
        assert self.log.term_at(self.log.commit_index) == self.term
        self._read_round_pending = True
        for ctx, src in requests:
            self._read_only.add(ctx, self.log.commit_index, self._read_round + 1, src)
        assert self._read_only.queue[-1].round == self._read_round + 1

    def _maybe_confirm_reads(self) -> None:
        if self.role is not Role.LEADER or not self._read_only.queue:
            return
        round_now = self._read_round

        def acked(node: int) -> int:
            if node == self.id:
                return round_now
            return self._progress_of(node).read_round_acked

        confirmed = committed_index(self.log.config(), acked)
        answers = [(r.ctx, r.src, r.index) for r in self._read_only.pop_confirmed(confirmed)]
        self._answer_reads(answers, self.term)

    def _answer_reads(self, answers: Sequence[tuple[bytes, int, int | None]], term: int) -> None:
        """Hands out (ctx, src, index) answers of a leader's read queue: its own reads as
        read states, a follower's in one ReadIndexResponse per (follower, index) of `term`."""
        by_dst: dict[tuple[int, int | None], list[bytes]] = {}
        for ctx, src, index in answers:
            if src == LOCAL_READ:
                self._read_states.append(ReadState(ctx, index))
            else:
                by_dst.setdefault((src, index), []).append(ctx)
        for (dst, index), ctxs in by_dst.items():
            assert dst != self.id
            self._msgs_now.append(ReadIndexResponse(term, self.id, dst, ctxs, index))

    # -- read index at a follower (not in the spec: never traced) ------------------------------

    def step_read(self, msg: ReadIndex | ReadIndexResponse) -> None:
        """A read-index message. Only one of the current term counts: an older one is stale
        (dropped), a newer one no correct peer sends (it asks or answers in the term the
        asker knows its leader in). No term update, so the spec's state never changes here."""
        reason = self._check_read_message(msg)
        if reason is not None:
            self._reject(reason, msg)
            return
        if msg.term < self.term:
            return
        if isinstance(msg, ReadIndex):
            self.handle_read_index(msg)
        else:
            self.handle_read_index_response(msg)
        self._assert_invariants()

    def handle_read_index(self, m: ReadIndex) -> None:
        """A follower's reads: queued as this leader's own, answered once confirmed."""
        assert m.term == self.term
        if self.role is not Role.LEADER:
            # It thinks this node leads (this node stepped down or restarted): refuse now.
            self._msgs_now.append(ReadIndexResponse(self.term, self.id, m.src, list(m.ctxs), None))
            return
        free_count = self._read_only.free_count()
        accepted = [(ctx, m.src) for ctx in m.ctxs[:free_count]]
        refused = m.ctxs[free_count:]
        if refused:
            self._msgs_now.append(ReadIndexResponse(self.term, self.id, m.src, list(refused), None))
        if not accepted:
            return
        if self.log.term_at(self.log.commit_index) != self.term:
            self._read_only.waiting_for_commit.extend(accepted)
        else:
            self._start_read_round(accepted)
        assert self._read_only.pending_count() <= self._read_only.max_pending

    def handle_read_index_response(self, m: ReadIndexResponse) -> None:
        """The leader's answer to this follower's ReadIndex: read states for the reads."""
        assert m.term == self.term
        if m.src != self.leader_id:
            self._reject("read_response_not_from_leader", m)
            return
        unknown_count = 0
        for ctx in m.ctxs:
            if self._forwarded.answer(ctx, m.src, m.term):
                self._read_states.append(ReadState(ctx, m.index))
            else:
                # Answered already (a duplicate), expired, or never asked.
                unknown_count += 1
        if unknown_count:
            self._reject("read_response_unknown_ctx", m)

    def _check_read_message(self, msg: ReadIndex | ReadIndexResponse) -> str | None:
        """Why a read-index message cannot come from a correct peer, or None."""
        if msg.dst != self.id:
            return "wrong_dst"
        if not _is_node_id(msg.src):
            return "bad_src"
        if msg.src == self.id:
            return "from_self"
        if not _is_node_id(msg.term) or msg.term >= INDEX_LIMIT - 1:
            return "bad_term"
        if msg.src not in self._known:
            return "unknown_src"
        if msg.term > self.term:
            return "read_term_ahead"
        ctxs = msg.ctxs
        if (
            not isinstance(ctxs, list)
            or not ctxs
            or len(ctxs) > self.cfg.max_pending_reads
            or not all(isinstance(c, bytes) and len(c) <= READ_CTX_SIZE_BYTES_MAX for c in ctxs)
        ):
            return "bad_read_ctxs"
        if isinstance(msg, ReadIndexResponse) and msg.index is not None and not _is_nat(msg.index):
            return "bad_read_index"
        return None

    def _send(self, msg: Message) -> None:
        if isinstance(msg, _RESPONSE_TYPES) or (self.term, self.voted_for) != self._persisted[:2]:
            self._msgs_after.append(msg)
        else:
            self._msgs_now.append(msg)

    def _reset_election_timer(self) -> None:
        timeout = next(self._timeouts)
        assert type(timeout) is int and timeout >= 1, f"election timeout must be >= 1 tick: {timeout!r}"
        self._election_timeout_ticks = timeout
        self._election_elapsed_ticks = 0
        self._heartbeat_elapsed_ticks = 0

    def _reject(self, reason: str, msg: object) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        _log.warning("raft node %d rejected a message (%s): %.200r", self.id, reason, msg)

    def _check_message(self, msg: object) -> str | None:
        """Why `msg` cannot come from a correct peer, or None. Checks everything `step` relies on."""
        if not isinstance(
            msg,
            AppendEntries
            | AppendEntriesResponse
            | RequestVote
            | RequestVoteResponse
            | InstallSnapshot
            | InstallSnapshotResponse
            | PreVote
            | PreVoteResponse,
        ):
            return "unknown_type"
        if msg.dst != self.id:
            return "wrong_dst"
        if not _is_node_id(msg.src):
            return "bad_src"
        if msg.src == self.id:
            return "from_self"
        # The highest term is kept free so that a node that adopted a term can still run.
        if not _is_node_id(msg.term) or msg.term >= INDEX_LIMIT - 1:
            return "bad_term"
        if msg.src not in self._known and not isinstance(msg, AppendEntries | InstallSnapshot):
            return "unknown_src"
        if isinstance(msg, AppendEntries):
            return self._check_append(msg)
        if isinstance(msg, AppendEntriesResponse | InstallSnapshotResponse):
            if isinstance(msg, AppendEntriesResponse) and type(msg.success) is not bool:
                return "bad_success"
            if not _is_nat(msg.match_index):
                return "bad_match_index"
            success = msg.success if isinstance(msg, AppendEntriesResponse) else True
            if (
                msg.term == self.term
                and self.role is Role.LEADER
                and success
                and msg.match_index > self.log.last_index()
            ):
                return "match_beyond_log"
            if isinstance(msg, AppendEntriesResponse) and not _is_nat(msg.read_round):
                return "bad_read_round"
            return None
        if isinstance(msg, RequestVote | PreVote):
            if not _is_nat(msg.last_log_index) or not _is_nat(msg.last_log_term):
                return "bad_last_log"
            if msg.last_log_term > msg.term:
                return "last_log_term_beyond_term"
            return None
        if isinstance(msg, RequestVoteResponse | PreVoteResponse):
            return None if type(msg.vote_granted) is bool else "bad_vote_granted"
        assert isinstance(msg, InstallSnapshot)
        if not _is_node_id(msg.snapshot_index) or not _is_node_id(msg.snapshot_term):
            return "bad_snapshot_index"
        if msg.snapshot_term > msg.term:
            return "snapshot_term_beyond_term"
        if not isinstance(msg.data, bytes):
            return "bad_snapshot_data"
        problem = _config_problem(msg.config)
        if problem is not None:
            return problem
        if msg.term == self.term and self.role is Role.LEADER:
            return "snapshot_to_leader_same_term"
        return None

    def _check_append(self, m: AppendEntries) -> str | None:
        if not (_is_nat(m.prev_log_index) and _is_nat(m.prev_log_term) and _is_nat(m.leader_commit)):
            return "bad_index"
        if not _is_nat(m.read_round):
            return "bad_read_round"
        if m.prev_log_term > m.term or (m.prev_log_index == 0 and m.prev_log_term != 0):
            return "bad_prev_log_term"
        if not isinstance(m.entries, list):
            return "bad_entries"
        if m.prev_log_index + len(m.entries) >= INDEX_LIMIT:
            return "index_overflow"
        if m.leader_commit > m.prev_log_index + len(m.entries):
            return "commit_beyond_entries"
        term = m.prev_log_term
        for k, entry in enumerate(m.entries):
            if not isinstance(entry, Entry):
                return "bad_entry"
            if entry.index != m.prev_log_index + 1 + k:
                return "entry_index_gap"
            if not _is_nat(entry.term) or entry.term < term or entry.term > m.term or entry.term == 0:
                return "bad_entry_term"
            term = entry.term
            if entry.kind not in ENTRY_KINDS:
                return "bad_entry_kind"
            if entry.kind == CONFIG:
                problem = _config_problem(entry.config)
                if problem is not None or entry.commands:
                    return problem or "bad_config_entry"
            elif entry.config or (entry.kind == NOOP and entry.commands):
                return "bad_entry_payload"
            if not isinstance(entry.commands, list) or not all(
                isinstance(c, bytes) for c in entry.commands
            ):
                return "bad_entry_commands"
        if m.term == self.term and self.role is Role.LEADER:
            return "append_to_leader_same_term"
        # A correct leader (Leader Completeness) never contradicts a committed entry.
        log = self.log
        snap = log.snapshot
        # Entries up to the snapshot are skipped, but the one at its index must be its last.
        if (
            m.prev_log_index < snap.index <= m.prev_log_index + len(m.entries)
            and m.entries[snap.index - m.prev_log_index - 1].term != snap.term
        ):
            return "conflicts_with_committed"
        last_checked = min(log.commit_index, m.prev_log_index + len(m.entries))
        first = max(log.snapshot.index + 1, m.prev_log_index + 1)
        for index in range(first, last_checked + 1):
            if m.entries[index - m.prev_log_index - 1].term != log.term_at(index):
                return "conflicts_with_committed"
        return None

    def _emit(
        self, action: str, msg: Message | None = None, args: dict[str, object] | None = None
    ) -> None:
        assert self._trace is not None
        log = self.log
        event: dict[str, object] = {"node": self.id, "action": action}
        if msg is not None:
            event["msg"] = message_to_trace(msg)
        event["args"] = args if args is not None else {}
        event["state"] = {
            "term": self.term,
            "role": self.role.value,
            "voted_for": self.voted_for if self.voted_for != NO_VOTE else None,
            "commit_index": log.commit_index,
            "last_index": log.last_index(),
            "last_term": log.last_term(),
            "snapshot_index": log.snapshot.index,
            "snapshot_term": log.snapshot.term,
            "config": list(log.config()),
        }
        self._trace.emit(event)

    def _assert_invariants(self) -> None:
        log = self.log
        assert log.snapshot.index <= log.commit_index <= log.last_index()
        assert log.snapshot.index <= log.stable_index <= log.last_index()
        assert log.applied_index >= log.snapshot.index
        assert self.term >= log.last_term()
        if self.role is Role.LEADER:
            assert self.leader_id == self.id
            assert self.voted_for == self.id
        if self.role is Role.CANDIDATE:
            assert self.voted_for == self.id
            assert self.leader_id == 0
        if self.role is Role.PRE_CANDIDATE:
            assert self.cfg.pre_vote
            assert self.leader_id == 0
            assert self.id in self._votes_granted


def _persists_spec_state(rd: Ready, persisted: tuple[int, int, int]) -> bool:
    """Whether `rd` makes state of the spec durable (term, vote, log, snapshot) or releases
    messages: a commit index alone is not spec state (the spec's commitIndex is volatile)."""
    hs = rd.hard_state
    term_vote_changed = hs is not None and (hs.term, hs.vote) != persisted[:2]
    return bool(
        rd.entries or rd.snapshot is not None or term_vote_changed or rd.messages_after_persist
    )


def _check_restored(restored: RestoredState) -> None:
    hs = restored.hard_state
    if not _is_nat(hs.term) or hs.term >= INDEX_LIMIT - 1:
        raise RestoreError("hard_state.term", f"must be an integer in [0, 2**63 - 1), got {hs.term!r}")
    if not _is_nat(hs.vote):
        raise RestoreError("hard_state.vote", f"must be 0 (none) or a node id, got {hs.vote!r}")
    snap = restored.snapshot
    base_index = 0
    base_term = 0
    if snap is not None:
        if not _is_nat(snap.index) or not _is_nat(snap.term):
            raise RestoreError("snapshot", f"index and term must be non-negative, got {snap!r}")
        if snap.term >= INDEX_LIMIT - 1:
            raise RestoreError("snapshot.term", f"must be below 2**63 - 1, got {snap.term}")
        problem = _config_problem(snap.config)
        if problem is not None:
            raise RestoreError("snapshot.config", f"{problem}: {snap.config!r}")
        base_index = snap.index
        base_term = snap.term
    term = base_term
    for k, entry in enumerate(restored.entries):
        expected = base_index + 1 + k
        if entry.index != expected:
            raise RestoreError(f"entries[{k}].index", f"expected {expected}, got {entry.index}")
        if entry.term < term or entry.term >= INDEX_LIMIT - 1:
            raise RestoreError(
                f"entries[{k}].term", f"{entry.term} breaks the order (previous term {term})"
            )
        if entry.kind not in ENTRY_KINDS:
            raise RestoreError(f"entries[{k}].kind", f"unknown kind {entry.kind!r}")
        if entry.kind == CONFIG and _config_problem(entry.config) is not None:
            raise RestoreError(f"entries[{k}].config", f"invalid members {entry.config!r}")
        term = entry.term
    if not _is_nat(restored.applied_index):
        raise RestoreError("applied_index", f"must be non-negative, got {restored.applied_index!r}")
    last_index = base_index + len(restored.entries)
    if restored.applied_index > last_index:
        raise RestoreError(
            "applied_index", f"{restored.applied_index} is beyond the last log index {last_index}"
        )
