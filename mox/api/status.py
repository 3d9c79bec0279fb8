"""What the API reports about its node (/health, metrics), independent of the runtime's
own status type."""

from __future__ import annotations

from typing import Any, Final

import attrs

ROLES: Final = ("follower", "pre_candidate", "candidate", "leader")


@attrs.frozen
class NodeStatusView:
    node_id: int
    role: str
    term: int
    leader_id: int | None
    commit_index: int
    applied_index: int
    last_index: int = 0
    snapshot_index: int = 0
    # follower id -> entries behind the leader's last index (empty unless leader)
    replication_lag_entries: dict[int, int] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeId": self.node_id,
            "role": self.role,
            "term": self.term,
            "leaderId": self.leader_id,
            "commitIndex": self.commit_index,
            "appliedIndex": self.applied_index,
            "lastIndex": self.last_index,
            "snapshotIndex": self.snapshot_index,
            "replicationLagEntries": {str(k): v for k, v in self.replication_lag_entries.items()},
        }


def status_view(node: Any) -> NodeStatusView:
    """The view of a `mox.node.runtime.Node`: its `status()`, with replication lag computed
    from the followers' match indexes when this node leads (followers report none)."""
    status = node.status()
    role = status.role
    role_name = str(getattr(role, "value", role))
    lag = {
        int(member): max(0, int(status.last_index) - int(match))
        for member, match in getattr(status, "match_index", {}).items()
    }
    return NodeStatusView(
        node_id=int(status.node_id),
        role=role_name,
        term=int(status.term),
        leader_id=None if status.leader_id is None else int(status.leader_id),
        commit_index=int(status.commit_index),
        applied_index=int(status.applied_index),
        last_index=int(status.last_index),
        snapshot_index=int(status.snapshot_index),
        replication_lag_entries=lag,
    )
