"""Linearizable reads by read index (Raft thesis 6.4), without leases.

The leader records its commit index for a request, then confirms it is still leader by a
heartbeat round: every AppendEntries carries the round number, every response (success or
reject: either proves the follower accepted this leader's term) echoes it. When a quorum of the
configuration has acknowledged round r (the leader counts itself while a member), every request
of round <= r is confirmed. Rounds only grow within a term, so requests leave in order.

A follower does the same through its leader (etcd raft's MsgReadIndex): it sends the contexts
of its reads in one ReadIndex message, the leader queues them as its own reads (tagged with
the follower's id) and answers the confirmed commit index in a ReadIndexResponse; the follower
serves each read once it has applied up to that index. `ForwardedReads` is the follower's side:
reads sent to a leader and not answered yet. They fail (index None) when the follower loses
that leader (a new term, an election) or after `timeout_ticks` without an answer (a lost
message), so neither side ever waits unboundedly.
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


# The `src` of a read this node asked for itself (node ids start at 1).
LOCAL_READ = 0


class ReadRequest(msgspec.Struct):
    ctx: bytes
    index: int
    round: int
    # LOCAL_READ, or the follower that asked through ReadIndex.
    src: int = LOCAL_READ


class ReadOnly:
    """The queue of read requests waiting for a leadership confirmation."""

    __slots__ = ("max_pending", "queue", "waiting_for_commit")

    def __init__(self, max_pending: int) -> None:
        assert max_pending >= 1
        self.max_pending = max_pending
        # Confirmed in order of round.
        self.queue: deque[ReadRequest] = deque()
        # (ctx, src) received before the leader committed an entry of its term: they get a
        # commit index and a round once it has.
        self.waiting_for_commit: deque[tuple[bytes, int]] = deque()

    def pending_count(self) -> int:
        return len(self.queue) + len(self.waiting_for_commit)

    def is_full(self) -> bool:
        return self.pending_count() >= self.max_pending

    def free_count(self) -> int:
        return max(0, self.max_pending - self.pending_count())

    def add(self, ctx: bytes, index: int, round_: int, src: int = LOCAL_READ) -> None:
        assert not self.queue or self.queue[-1].round <= round_
        assert not self.queue or self.queue[-1].index <= index
        assert src >= LOCAL_READ
        self.queue.append(ReadRequest(ctx, index, round_, src))

    def pop_confirmed(self, confirmed_round: int) -> list[ReadRequest]:
        out: list[ReadRequest] = []
        while self.queue and self.queue[0].round <= confirmed_round:
            out.append(self.queue.popleft())
        return out

    def fail_all(self) -> list[tuple[bytes, int]]:
        """Every pending request, as (ctx, src), in the order they came; the queue empties."""
        out = [(r.ctx, r.src) for r in self.queue]
        out.extend(self.waiting_for_commit)
        self.queue.clear()
        self.waiting_for_commit.clear()
        assert self.pending_count() == 0
        return out


class ForwardedRead(msgspec.Struct):
    leader_id: int
    term: int
    issued_tick: int
    # When it last left in a ReadIndex (or was queued to), for the resend.
    sent_tick: int


class ForwardedReads:
    """A follower's reads asked of its leader and not answered yet."""

    __slots__ = ("max_pending", "pending", "timeout_ticks", "unsent")

    def __init__(self, max_pending: int, timeout_ticks: int) -> None:
        assert max_pending >= 1
        assert timeout_ticks >= 1
        self.max_pending = max_pending
        self.timeout_ticks = timeout_ticks
        # ctx -> where and when it was asked; insertion order is issue order, so the oldest
        # (the first to expire) come first.
        self.pending: dict[bytes, ForwardedRead] = {}
        # Contexts in `pending` not sent yet: they leave together in one ReadIndex.
        self.unsent: list[bytes] = []

    def is_full(self) -> bool:
        return len(self.pending) >= self.max_pending

    def add(self, ctx: bytes, leader_id: int, term: int, now_tick: int) -> None:
        assert ctx not in self.pending
        assert not self.is_full()
        assert leader_id >= 1
        self.pending[ctx] = ForwardedRead(leader_id, term, now_tick, now_tick)
        self.unsent.append(ctx)
        assert len(self.unsent) <= len(self.pending)

    def take_unsent(self) -> list[bytes]:
        out = self.unsent
        self.unsent = []
        return out

    def answer(self, ctx: bytes, leader_id: int, term: int) -> bool:
        """Removes `ctx` if it was asked of `leader_id` in `term`; False if it was not."""
        asked = self.pending.get(ctx)
        if asked is None or asked.leader_id != leader_id or asked.term != term:
            return False
        del self.pending[ctx]
        return True

    def expire(self, now_tick: int) -> list[ReadState]:
        """Fails the reads asked `timeout_ticks` ago or earlier (an answer was lost)."""
        out: list[ReadState] = []
        while self.pending:
            ctx, asked = next(iter(self.pending.items()))
            if now_tick - asked.issued_tick < self.timeout_ticks:
                break
            del self.pending[ctx]
            out.append(ReadState(ctx, None))
        if out and self.unsent:
            self.unsent = [ctx for ctx in self.unsent if ctx in self.pending]
        return out

    def resend_due(self, now_tick: int) -> int:
        """Queues again the reads unanswered `resend_ticks` after they were last sent (a lost
        ReadIndex or answer would otherwise hold them until they expire); how many."""
        resend_ticks = max(1, self.timeout_ticks // 3)
        queued = set(self.unsent)
        count = 0
        for ctx, asked in self.pending.items():
            if now_tick - asked.sent_tick >= resend_ticks and ctx not in queued:
                asked.sent_tick = now_tick
                self.unsent.append(ctx)
                count += 1
        assert len(self.unsent) <= len(self.pending)
        return count

    def fail_all(self) -> list[ReadState]:
        out = [ReadState(ctx, None) for ctx in self.pending]
        self.pending.clear()
        self.unsent.clear()
        return out
