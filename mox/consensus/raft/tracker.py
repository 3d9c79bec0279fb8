"""The leader's view of each follower: match/next index and flow control (etcd's tracker).

Flow control does not change what the spec allows, only when the leader sends:

* PROBE: the follower's log is unknown; at most one AppendEntries with entries is in flight.
* REPLICATE: the follower is known to match; up to `max_inflight_appends` messages with
  entries are in flight (optimistic pipelining: nextIndex moves on send).
* SNAPSHOT: an InstallSnapshot is in flight; only heartbeats until it is acknowledged.

Heartbeats (no entries) are never limited: they keep followers' election timers quiet and
carry read-index rounds. A rejection resets to PROBE and forgets the in-flight window.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = ("inflights", "match_index", "next_index", "read_round_acked", "recent_active", "state")

    def __init__(self, next_index: int) -> None:
        assert next_index >= 1
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        # Last index of each in-flight AppendEntries with entries, ascending.
        self.inflights: deque[int] = deque()
        # The highest read-index round the follower acknowledged in the current term.
        self.read_round_acked = 0
        # Whether the follower sent anything in this term since the leader's last check-quorum
        # (etcd's RecentActive); reset at every check.
        self.recent_active = False

    def can_send_entries(self, max_inflight_appends: int) -> bool:
        if self.state is ProgressState.SNAPSHOT:
            return False
        if self.state is ProgressState.PROBE:
            return not self.inflights
        return len(self.inflights) < max_inflight_appends

    def sent_entries(self, last_index: int) -> None:
        assert not self.inflights or self.inflights[-1] < last_index
        self.inflights.append(last_index)

    def acknowledged(self, match_index: int) -> None:
        """A success up to `match_index`: frees the in-flight messages it covers."""
        while self.inflights and self.inflights[0] <= match_index:
            self.inflights.popleft()
        if self.state is not ProgressState.REPLICATE:
            self.state = ProgressState.REPLICATE
            self.inflights.clear()

    def rejected(self) -> None:
        self.state = ProgressState.PROBE
        self.inflights.clear()

    def sent_snapshot(self) -> None:
        self.state = ProgressState.SNAPSHOT
        self.inflights.clear()

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match_index}, next={self.next_index}, "
            f"state={self.state.value}, inflight={len(self.inflights)})"
        )
