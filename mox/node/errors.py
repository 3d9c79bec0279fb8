"""Errors a node returns to whoever submitted a command or a read (API, simulator clients).

Each says whether the request may have taken effect, because a client's retry policy (and
the linearizability checker's reading of a history) depends on it.
"""

from __future__ import annotations

from mox.errors import MoxError

__all__ = ["NodeStopped", "NotLeader", "Overloaded", "ProposalDropped", "RequestError"]


class RequestError(MoxError):
    """A submit or read that did not complete. `maybe_applied`: the outcome is unknown."""

    maybe_applied: bool = False


class NotLeader(RequestError):
    """This node is not the leader; `leader_id` is the one it knows of, or None.

    Raised before anything is proposed: the command was not applied by this attempt.
    """

    def __init__(self, node_id: int, leader_id: int | None) -> None:
        self.node_id = node_id
        self.leader_id = leader_id
        where = f"node {leader_id}" if leader_id is not None else "unknown"
        super().__init__(f"node {node_id} is not the leader (leader: {where})")


class ProposalDropped(RequestError):
    """The proposal was appended but then lost: another entry took its index, or this
    node stepped down or stopped first. It may still be applied (a new leader may commit
    it), so the outcome is unknown."""

    maybe_applied = True

    def __init__(self, node_id: int, index: int, reason: str) -> None:
        self.node_id = node_id
        self.index = index
        self.reason = reason
        super().__init__(f"node {node_id}: proposal at index {index} dropped: {reason}")


class NodeStopped(RequestError):
    """The node stopped (or crashed) while the request was pending; outcome unknown."""

    maybe_applied = True

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        super().__init__(f"node {node_id} stopped")


class Overloaded(RequestError):
    """Too many requests pending at this node (a bound, not a failure); not applied."""

    def __init__(self, node_id: int, pending_max: int) -> None:
        self.node_id = node_id
        self.pending_max = pending_max
        super().__init__(f"node {node_id}: more than {pending_max} requests pending")
