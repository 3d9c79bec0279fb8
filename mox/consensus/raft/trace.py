"""Trace sinks and the rendering of messages into trace events (specs/README.md).

The core emits one event per spec action: `node`, `action`, `msg` (the message received or
sent, where the action has one), `args` (what the action chose that the message does not show)
and `state` (the node's state after the step). The runtime adds `i` and `t_ns`. The core checks
`tracing_enabled(sink)` once, at construction: with tracing off no event dict is ever built.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from mox.consensus.raft.messages import (
    CONFIG,
    READ_MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
)

# Every action the core performs (specs/README.md, "spec action" column, minus the network's
# DropMessage and DuplicateMessage).
CORE_ACTIONS: Final = (
    "Restart",
    "PersistState",
    "Timeout",
    "RequestVote",
    "BecomeLeader",
    "ClientRequest",
    "ChangeMembership",
    "AdvanceCommitIndex",
    "AppendEntries",
    "SendSnapshot",
    "Snapshot",
    "UpdateTerm",
    "HandleRequestVoteRequest",
    "HandleRequestVoteResponse",
    "HandleAppendEntriesRequest",
    "HandleAppendEntriesResponse",
    "HandleInstallSnapshotRequest",
    "HandleInstallSnapshotResponse",
    "DropStaleMessage",
    "StartPreVote",
    "PreVote",
    "HandlePreVoteRequest",
    "HandlePreVoteResponse",
    "BecomeCandidate",
    "StepDown",
    "DropVoteRequestInLease",
    "HandleStaleAppendEntries",
)

# The `state` object of every event carries exactly these keys.
STATE_FIELDS: Final = (
    "term",
    "role",
    "voted_for",
    "commit_index",
    "last_index",
    "last_term",
    "snapshot_index",
    "snapshot_term",
    "config",
)


@runtime_checkable
class TraceSink(Protocol):
    """Receives trace events, one per spec action, in the order the core performs them.

    A sink may also have a boolean attribute `enabled`; when it is False the core never builds
    an event (NullTraceSink). The core reads it once, at construction.
    """

    def emit(self, event: dict[str, object]) -> None: ...


def tracing_enabled(sink: TraceSink | None) -> bool:
    """Whether the core should build events for `sink`."""
    return sink is not None and bool(getattr(sink, "enabled", True))


class NullTraceSink:
    """Tracing off: the core builds no events at all."""

    @property
    def enabled(self) -> bool:
        return False

    def emit(self, event: dict[str, object]) -> None:
        raise AssertionError("NullTraceSink.emit called: the core must check `enabled` first")


class ListTraceSink:
    """Keeps every event in memory, in order (tests, the scenario harness)."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    @property
    def enabled(self) -> bool:
        return True

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)


def entry_to_trace(entry: Entry) -> list[object]:
    """`[term, kind]`, or `[term, "config", members]` for a configuration entry."""
    if entry.kind == CONFIG:
        return [entry.term, entry.kind, list(entry.config)]
    return [entry.term, entry.kind]


class UntracedMessage(ValueError):
    """A message outside the spec (ReadIndex, ReadIndexResponse): no trace event names it."""


def is_traced(msg: Message) -> bool:
    """Whether `msg` is a message of specs/raft/Raft.tla (read-index messages are not: reads
    are checked on client histories, so a trace writer skips every event about them)."""
    return not isinstance(msg, READ_MESSAGE_TYPES)


def message_to_trace(msg: Message) -> dict[str, object]:
    """The `msg` object of a trace event: `type`, `src`, `dst`, `term` and the type's fields.

    Payloads (commands, snapshot data) are left out: the spec does not model them. Raises
    UntracedMessage (a ValueError) for a message outside the spec (see `is_traced`).
    """
    if not is_traced(msg):
        raise UntracedMessage(f"{type(msg).__name__} is not a message of the spec")
    out: dict[str, object] = {"type": type(msg).__name__, "src": msg.src, "dst": msg.dst, "term": msg.term}
    if isinstance(msg, AppendEntries):
        out["prev_log_index"] = msg.prev_log_index
        out["prev_log_term"] = msg.prev_log_term
        out["entries"] = [entry_to_trace(e) for e in msg.entries]
        out["leader_commit"] = msg.leader_commit
    elif isinstance(msg, AppendEntriesResponse):
        out["success"] = msg.success
        out["match_index"] = msg.match_index
    elif isinstance(msg, RequestVote | PreVote):
        out["last_log_term"] = msg.last_log_term
        out["last_log_index"] = msg.last_log_index
    elif isinstance(msg, RequestVoteResponse | PreVoteResponse):
        out["vote_granted"] = msg.vote_granted
    elif isinstance(msg, InstallSnapshot):
        out["snapshot_index"] = msg.snapshot_index
        out["snapshot_term"] = msg.snapshot_term
        out["config"] = list(msg.config)
    else:
        assert isinstance(msg, InstallSnapshotResponse), type(msg)
        out["match_index"] = msg.match_index
    return out
