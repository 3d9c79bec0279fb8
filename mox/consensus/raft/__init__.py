"""The sans-IO Raft core (docs/raft.md). The public surface, re-exported from its modules."""

from mox.consensus.raft.core import (
    ConfChange,
    RaftConfig,
    RaftConfigError,
    RaftCore,
    Ready,
    RestoredState,
    RestoreError,
    Role,
    SnapshotInstall,
)
from mox.consensus.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    MalformedMessage,
    Message,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    decode_message,
    encode_message,
)
from mox.consensus.raft.read_only import ReadState
from mox.consensus.raft.trace import ListTraceSink, NullTraceSink, TraceSink

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "ConfChange",
    "Entry",
    "HardState",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "ListTraceSink",
    "MalformedMessage",
    "Message",
    "NullTraceSink",
    "RaftConfig",
    "RaftConfigError",
    "RaftCore",
    "ReadState",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "RestoreError",
    "RestoredState",
    "Role",
    "SnapshotInstall",
    "SnapshotMeta",
    "TraceSink",
    "decode_message",
    "encode_message",
]
