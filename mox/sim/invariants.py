"""Safety checks over a running cluster, after every step of every node.

The checker keeps a ghost record of what the cluster has promised, built from what every
node shows after each of its steps (a step = one Ready handled):

* `leader_of_term`: the node that was leader in a term (Election Safety: at most one).
* `entry_at`: (index, term) -> digest of every entry any node appended (Log Matching,
  first half: two entries with the same index and term are the same entry).
* `committed`: index -> (term, digest) of every entry any node counted as committed. An
  entry once committed stays so: every node that later has that index in its log (above its
  snapshot) below its commit index has the same entry, and a node that becomes leader holds
  every committed entry above its snapshot (Leader Completeness: no committed entry lost).
* `applied`: index -> digest of what the first replica applied there (State Machine
  Safety: every replica applies the same entry at the same index).

`check_log_prefixes` is the second half of Log Matching (identical prefixes up to a common
(index, term)), done over whole logs, so the world runs it every so many steps and at the end.

A violation is recorded (first one wins) with the invariant's name and the step, and the
world stops the run; a check never raises into the node that is being checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import attrs

from mox.node.runtime import RaftView

__all__ = ["INVARIANTS", "InvariantChecker", "NodeView", "RaftView", "Violation"]

INVARIANTS: tuple[str, ...] = (
    "election_safety",
    "log_matching",
    "committed_entry_kept",
    "leader_completeness",
    "state_machine_safety",
    "ack_holds_entries",
    "convergence",
    "acknowledged_writes_applied",
    "replica_state_equal",
    "linearizability",
    "stale_reads",
    "recovery",
    "node_failure",
)


class NodeView(Protocol):
    """A node as the checker sees it: its Raft state and its log."""

    @property
    def node_id(self) -> int: ...

    def raft_view(self) -> RaftView: ...

    def entry_digest(self, index: int) -> tuple[int, int] | None:
        """(term, digest) of the log entry at `index`, None if not in the log."""
        ...


@attrs.frozen
class Violation:
    invariant: str
    step: int
    node_id: int | None
    detail: str

    def describe(self) -> str:
        where = f" at node {self.node_id}" if self.node_id is not None else ""
        return f"{self.invariant} violated at step {self.step}{where}: {self.detail}"


class InvariantChecker:
    """The ghost record and the checks. Call `on_step` after each node step."""

    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        self.entry_at: dict[tuple[int, int], int] = {}
        self.committed: dict[int, tuple[int, int]] = {}
        self.applied: dict[int, int] = {}
        self.checks: dict[str, int] = {name: 0 for name in INVARIANTS}
        self.violation: Violation | None = None
        self.step = 0
        # Per node: the highest index whose committed entry was recorded / checked, and the
        # last term in which the node was seen as leader (to check completeness once per term).
        self._commit_checked: dict[int, int] = {}
        self._leader_checked_term: dict[int, int] = {}

    # -- recording ---------------------------------------------------------------------

    def fail(self, invariant: str, node_id: int | None, detail: str) -> None:
        assert invariant in INVARIANTS, invariant
        if self.violation is None:
            self.violation = Violation(invariant, self.step, node_id, detail)

    @property
    def failed(self) -> bool:
        return self.violation is not None

    # -- per step ----------------------------------------------------------------------

    def on_step(
        self,
        node: NodeView,
        appended: Iterable[tuple[int, int, int]] = (),
        applied: Iterable[tuple[int, int]] = (),
    ) -> None:
        """After one step of `node`: `appended` (index, term, digest) entries it just
        persisted, `applied` (index, digest) entries it just applied."""
        self.step += 1
        view = node.raft_view()
        node_id = node.node_id
        self._check_election_safety(node_id, view)
        for index, term, digest in appended:
            self._check_entry(node_id, index, term, digest)
        self._check_committed(node, view)
        if view.role == "leader" and self._leader_checked_term.get(node_id) != view.term:
            self._leader_checked_term[node_id] = view.term
            self._check_leader_completeness(node, view)
        for index, digest in applied:
            self._check_applied(node_id, index, digest)

    def _check_election_safety(self, node_id: int, view: RaftView) -> None:
        if view.role != "leader":
            return
        self.checks["election_safety"] += 1
        leader = self.leader_of_term.setdefault(view.term, node_id)
        if leader != node_id:
            self.fail(
                "election_safety",
                node_id,
                f"nodes {leader} and {node_id} were both leader in term {view.term}",
            )

    def _check_entry(self, node_id: int, index: int, term: int, digest: int) -> None:
        self.checks["log_matching"] += 1
        known = self.entry_at.setdefault((index, term), digest)
        if known != digest:
            self.fail(
                "log_matching",
                node_id,
                f"two different entries at index {index} with term {term}",
            )

    def _check_committed(self, node: NodeView, view: RaftView) -> None:
        node_id = node.node_id
        # Entries at or below the snapshot are gone from the log; they were checked when
        # they were committed (or came in a snapshot of a committed prefix).
        start = max(self._commit_checked.get(node_id, 0), view.snapshot_index) + 1
        for index in range(start, view.commit_index + 1):
            got = node.entry_digest(index)
            if got is None:
                self.fail(
                    "committed_entry_kept",
                    node_id,
                    f"committed index {index} missing from the log (snapshot "
                    f"{view.snapshot_index}, last {view.last_index})",
                )
                return
            self.checks["committed_entry_kept"] += 1
            known = self.committed.setdefault(index, got)
            if known != got:
                self.fail(
                    "committed_entry_kept",
                    node_id,
                    f"index {index} committed as term {known[0]} digest {known[1]:#x}, "
                    f"now term {got[0]} digest {got[1]:#x}",
                )
                return
        self._commit_checked[node_id] = max(self._commit_checked.get(node_id, 0), view.commit_index)

    def _check_leader_completeness(self, node: NodeView, view: RaftView) -> None:
        for index in sorted(self.committed):
            if index <= view.snapshot_index:
                continue
            self.checks["leader_completeness"] += 1
            got = node.entry_digest(index)
            if got != self.committed[index]:
                self.fail(
                    "leader_completeness",
                    node.node_id,
                    f"leader of term {view.term} lacks committed index {index} "
                    f"(has {got}, committed {self.committed[index]})",
                )
                return

    def _check_applied(self, node_id: int, index: int, digest: int) -> None:
        self.checks["state_machine_safety"] += 1
        known = self.applied.setdefault(index, digest)
        if known != digest:
            self.fail(
                "state_machine_safety",
                node_id,
                f"applied digest {digest:#x} at index {index}, another replica applied {known:#x}",
            )

    # -- whole logs --------------------------------------------------------------------

    def check_log_prefixes(self, nodes: Sequence[NodeView]) -> None:
        """Log Matching over every pair: below the highest common (index, term), identical."""
        views = {node.node_id: node.raft_view() for node in nodes}
        for a_pos, a in enumerate(nodes):
            for b in nodes[a_pos + 1 :]:
                va, vb = views[a.node_id], views[b.node_id]
                low = max(va.snapshot_index, vb.snapshot_index) + 1
                high = min(va.last_index, vb.last_index)
                # The highest index where both logs have an entry of the same term.
                match = 0
                for index in range(high, low - 1, -1):
                    ea, eb = a.entry_digest(index), b.entry_digest(index)
                    if ea is not None and eb is not None and ea[0] == eb[0]:
                        match = index
                        break
                for index in range(low, match + 1):
                    self.checks["log_matching"] += 1
                    if a.entry_digest(index) != b.entry_digest(index):
                        self.fail(
                            "log_matching",
                            a.node_id,
                            f"nodes {a.node_id} and {b.node_id} agree at index {match} "
                            f"but differ at index {index}",
                        )
                        return
