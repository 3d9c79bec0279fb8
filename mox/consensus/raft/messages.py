"""Raft's wire types: log entries, durable state and the eight messages.

Every type is a frozen, array-like msgspec Struct: fields are positional on the wire, so new
fields may only be appended, with defaults. Messages form a tagged union (the tag is the class
name, which is also the `type` of a trace event's `msg`), so one decoder reads any of them.

Range checks on decode (`Meta(ge=..., lt=2**63)`) turn a negative or overflowing number into a
`MalformedMessage` naming the field; `RaftCore.step` checks the same limits again for messages
built in-process, plus everything that depends on the receiver's state.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

# Terms and indexes are unsigned 63-bit: they fit an int64 on every other implementation and a
# term overflow is rejected instead of wrapping.
INDEX_LIMIT: Final = 2**63

Nat = Annotated[int, msgspec.Meta(ge=0, le=INDEX_LIMIT - 1)]
NodeId = Annotated[int, msgspec.Meta(ge=1, le=INDEX_LIMIT - 1)]

EntryKind = Literal["normal", "noop", "config"]
NORMAL: Final = "normal"
NOOP: Final = "noop"
CONFIG: Final = "config"
ENTRY_KINDS: Final = (NORMAL, NOOP, CONFIG)

# No vote in this term (node ids start at 1).
NO_VOTE: Final = 0
# No read-index round attached to an AppendEntries.
NO_READ_ROUND: Final = 0


class MalformedMessage(ValueError):
    """Bytes that do not decode to a Raft message. The text names the field or offset."""


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One log entry. `commands` only for `normal`, `config` (the new members) only for `config`."""

    term: Nat
    index: Nat
    kind: EntryKind
    commands: list[bytes] = []
    config: list[NodeId] = []


class HardState(msgspec.Struct, frozen=True, array_like=True):
    """What must be durable before a node acts on it. `vote` is NO_VOTE (0) for none.

    `commit` is persisted for the runtime's information (it may use it to bound replay); the
    core restarts with commitIndex = snapshot index, as the spec's Restart says.
    """

    term: Nat = 0
    vote: Nat = NO_VOTE
    commit: Nat = 0


class SnapshotMeta(msgspec.Struct, frozen=True, array_like=True):
    """The last index and term a snapshot covers, and the configuration in effect there."""

    index: Nat = 0
    term: Nat = 0
    config: list[NodeId] = []


class RequestVote(msgspec.Struct, frozen=True, array_like=True, tag=True):
    term: Nat
    src: NodeId
    dst: NodeId
    last_log_index: Nat
    last_log_term: Nat


class RequestVoteResponse(msgspec.Struct, frozen=True, array_like=True, tag=True):
    term: Nat
    src: NodeId
    dst: NodeId
    vote_granted: bool


class PreVote(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """A pre-vote request (Ongaro's thesis 9.6): would the receiver vote for the sender in
    `term` (the sender's current term + 1)? The sender's term does not change by asking."""

    term: Nat
    src: NodeId
    dst: NodeId
    last_log_index: Nat
    last_log_term: Nat


class PreVoteResponse(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """`term` is the request's term when granted, the responder's current term when not (so a
    sender behind learns the current term)."""

    term: Nat
    src: NodeId
    dst: NodeId
    vote_granted: bool


class AppendEntries(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """Entries from prev_log_index + 1 on (none: a heartbeat).

    `read_round` is the leader's read-index round this message confirms leadership for
    (NO_READ_ROUND: none); the response echoes it.
    """

    term: Nat
    src: NodeId
    dst: NodeId
    prev_log_index: Nat
    prev_log_term: Nat
    entries: list[Entry]
    leader_commit: Nat
    read_round: Nat = NO_READ_ROUND


class AppendEntriesResponse(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """On success `match_index` is the last index the request covered; on reject, a hint."""

    term: Nat
    src: NodeId
    dst: NodeId
    success: bool
    match_index: Nat
    read_round: Nat = NO_READ_ROUND


class InstallSnapshot(msgspec.Struct, frozen=True, array_like=True, tag=True):
    term: Nat
    src: NodeId
    dst: NodeId
    snapshot_index: Nat
    snapshot_term: Nat
    config: list[NodeId]
    data: bytes


class InstallSnapshotResponse(msgspec.Struct, frozen=True, array_like=True, tag=True):
    term: Nat
    src: NodeId
    dst: NodeId
    match_index: Nat


class ReadIndex(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """A follower asks its leader of `term` for a read index for each of `ctxs` (Raft
    thesis 6.4, read index at a follower). Not a message of specs/raft/Raft.tla: reads are
    checked on client histories (checker/lin.py), so no trace event ever names it."""

    term: Nat
    src: NodeId
    dst: NodeId
    ctxs: list[bytes]


class ReadIndexResponse(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """The leader's answer to a ReadIndex, for some or all of its `ctxs`: `index` is the
    commit index every one of them must wait for, confirmed by a quorum in `term`; None:
    refused (not leader, read queue full, leadership lost), retry. Not traced (see ReadIndex)."""

    term: Nat
    src: NodeId
    dst: NodeId
    ctxs: list[bytes]
    index: Nat | None


# At most this many bytes per read context (the runtime uses 8).
READ_CTX_SIZE_BYTES_MAX: Final = 64

Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | PreVote
    | PreVoteResponse
    | ReadIndex
    | ReadIndexResponse
)
# The messages outside specs/raft/Raft.tla: never traced, stepped outside the spec's actions.
READ_MESSAGE_TYPES: Final = (ReadIndex, ReadIndexResponse)
MESSAGE_TYPES: Final = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    PreVote,
    PreVoteResponse,
    ReadIndex,
    ReadIndexResponse,
)

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Message)


def encode_message(msg: Message) -> bytes:
    """The msgpack bytes of `msg` (an array whose first element is the type tag)."""
    return _encoder.encode(msg)


def decode_message(data: bytes) -> Message:
    """Decodes one message; raises MalformedMessage (a ValueError) naming what is wrong."""
    try:
        msg: Message = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        # msgspec lets a UnicodeDecodeError through for invalid UTF-8 in a string (the tag).
        raise MalformedMessage(f"malformed raft message ({len(data)} bytes): {exc}") from None
    return msg


def entry_size_bytes(entry: Entry) -> int:
    """An upper estimate of an entry's encoded size, for message size limits."""
    size = 24 + 9 * len(entry.config)
    for command in entry.commands:
        size += len(command) + 5
    return size


# What a message costs on the wire beside its entries (header fields, tag, framing slack).
MESSAGE_OVERHEAD_BYTES: Final = 96
