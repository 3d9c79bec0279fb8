"""Linearizable reads by read index (Raft thesis 6.4), without leases.

The leader records its commit index for a request, then confirms it is still leader by a
heartbeat round: every AppendEntries carries the round number, every response (success or
reject: either proves the follower accepted this leader's term) echoes it. When a quorum of the
configuration has acknowledged round r (the leader counts itself while a member), every request
of round <= r is confirmed. Rounds only grow within a term, so requests leave in order.
"""

from __future__ import annotations

from collections import deque

import msgspec


class ReadState(msgspec.Struct, frozen=True):
    """The answer to `read_index(ctx)`.

    `index` is the commit index the read must wait for (serve it once applied_index >= index);
    None means the read failed here (not leader, leadership lost, queue full): retry, on the
    leader (`RaftCore.leader_id`) or later.
    """

    ctx: bytes
    index: int | None


class ReadRequest(msgspec.Struct):
    ctx: bytes
    index: int
    round: int


class ReadOnly:
    """The queue of read requests waiting for a leadership confirmation."""

    __slots__ = ("max_pending", "queue", "waiting_for_commit")

    def __init__(self, max_pending: int) -> None:
        assert max_pending >= 1
        self.max_pending = max_pending
        # Confirmed in order of round.
        self.queue: deque[ReadRequest] = deque()
        # Received before the leader committed an entry of its term: they get a commit index
        # and a round once it has.
        self.waiting_for_commit: deque[bytes] = deque()

    def pending_count(self) -> int:
        return len(self.queue) + len(self.waiting_for_commit)

    def is_full(self) -> bool:
        return self.pending_count() >= self.max_pending

    def add(self, ctx: bytes, index: int, round_: int) -> None:
        assert not self.queue or self.queue[-1].round <= round_
        assert not self.queue or self.queue[-1].index <= index
        self.queue.append(ReadRequest(ctx, index, round_))

    def pop_confirmed(self, confirmed_round: int) -> list[ReadState]:
        out: list[ReadState] = []
        while self.queue and self.queue[0].round <= confirmed_round:
            request = self.queue.popleft()
            out.append(ReadState(request.ctx, request.index))
        return out

    def fail_all(self) -> list[ReadState]:
        out = [ReadState(r.ctx, None) for r in self.queue]
        out.extend(ReadState(ctx, None) for ctx in self.waiting_for_commit)
        self.queue.clear()
        self.waiting_for_commit.clear()
        return out
