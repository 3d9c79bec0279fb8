"""Snapshot transfer larger than the frame limit, between real `mox start` processes.

With `limits.max_message_size` at 64 KiB and a state machine whose snapshot is several times
that, a follower killed while the cluster writes past several snapshots can only catch up by
an InstallSnapshot that the transport cuts into fragments and reassembles (mox/io/tcp.py).
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import aiohttp
from test_cluster import assert_readable, snapshot_index, wait_caught_up
from test_cluster_support import (
    ProcCluster,
    bootstrap_tenant,
    max_commit_index,
    request,
    wait_for_leader,
)

from mox.io.real import RealFileSystem
from mox.node.snapshot_file import read_snapshot

SNAPSHOT_THRESHOLD = 40
MAX_MESSAGE_SIZE_BYTES = 64 * 1024
WRITES = 160
CONCURRENCY = 8


def snapshot_size_bytes(data_dir: Path) -> int:
    fs = RealFileSystem(str(data_dir), backend="pwrite")
    try:
        stored = read_snapshot(fs)
    finally:
        fs.close()
    assert stored is not None, data_dir
    return len(stored[1])


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in {url}/metrics"
    return float(found.group(1))


async def write_bulky_talents(
    session: aiohttp.ClientSession, url: str, key: str, count: int
) -> dict[str, str]:
    """Register `count` talents of ~1.5 KB each (random tags: snapshots do not compress);
    name -> id of each acknowledged write."""
    rng = random.Random(7)
    names = [f"bulky-{n}-" + "n" * 150 for n in range(count)]
    tags = {name: [rng.randbytes(30).hex() for _ in range(20)] for name in names}
    acked: dict[str, str] = {}
    pending = list(names)

    async def worker() -> None:
        while pending:
            name = pending.pop()
            status, body = await request(
                session,
                "POST",
                f"{url}/api/talents",
                json={"displayName": name, "tags": tags[name]},
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"w-{name}"},
            )
            assert status == 201, (name, status, body)
            acked[name] = body["id"]

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    assert len(acked) == count
    return acked


def test_follower_catches_up_by_a_snapshot_larger_than_the_frame_limit(tmp_path: Path) -> None:
    cluster = ProcCluster(
        tmp_path,
        overrides={
            "consensus": {"snapshot_threshold": SNAPSHOT_THRESHOLD},
            "limits": {"max_message_size": f"{MAX_MESSAGE_SIZE_BYTES // 1024}KiB"},
        },
    )

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            leader, leader_term = await wait_for_leader(session, cluster, cluster.ids)
            key = await bootstrap_tenant(session, cluster.url(leader), "acme")
            lagging = next(i for i in cluster.ids if i != leader)
            cluster.kill_node(lagging)

            # Past several snapshots while `lagging` is down: the leader compacts away
            # everything it lacks, so only a snapshot transfer can catch it up.
            acked = await write_bulky_talents(session, cluster.url(leader), key, WRITES)
            survivors = [i for i in cluster.ids if i != lagging]
            commit_index = await max_commit_index(session, cluster, survivors)
            # Each survivor snapshots at its own points and drops its log up to there.
            # Whichever of them leads when `lagging` returns (the leader may change in the
            # meantime), it can only send what its log still holds, or its snapshot.
            survivor_snapshots: dict[int, int] = {}
            for node_id in survivors:
                status = await wait_caught_up(session, cluster.url(node_id), commit_index, 60)
                survivor_snapshots[node_id] = int(status["snapshotIndex"])
                assert survivor_snapshots[node_id] >= 2 * SNAPSHOT_THRESHOLD, (node_id, status)
                # The workload only adds talents: a later snapshot is no smaller than this one.
                size_bytes = snapshot_size_bytes(cluster.data_dir(node_id))
                assert size_bytes > 3 * MAX_MESSAGE_SIZE_BYTES, (node_id, size_bytes)
            oldest_snapshot = min(survivor_snapshots.values())
            fragmented_before = {
                i: await metric(session, cluster.url(i), "mox_transport_messages_fragmented")
                for i in survivors
            }

            cluster.start_node(lagging)
            url = cluster.url(lagging)
            caught_up = await wait_caught_up(session, url, commit_index, 90)
            assert caught_up["appliedIndex"] >= commit_index
            recovered = cluster.log_events(lagging, "node.recovered")[-1]
            wal_last_index = int(recovered["last_index"])
            # Every survivor had compacted its log past the end of `lagging`'s WAL: no node
            # held the entries it lacked, so no AppendEntries could have brought them.
            assert wal_last_index < oldest_snapshot, (recovered, survivor_snapshots)
            # It holds a snapshot beyond its WAL, at least as new as the oldest survivor
            # snapshot (a leader sends its latest one): it installed one it was sent.
            assert int(caught_up["snapshotIndex"]) >= oldest_snapshot, (caught_up, oldest_snapshot)
            assert snapshot_index(cluster.data_dir(lagging)) >= oldest_snapshot
            # That snapshot (> 3 frames) crossed as fragments and was reassembled into one
            # message on `lagging`, sent by whichever survivor led at the time.
            assert await metric(session, url, "mox_transport_messages_reassembled") >= 1
            assert await metric(session, url, "mox_transport_fragments_received") >= 4
            fragmented_after = {
                i: await metric(session, cluster.url(i), "mox_transport_messages_fragmented")
                for i in survivors
            }
            senders = [i for i in survivors if fragmented_after[i] > fragmented_before[i]]
            assert senders, (fragmented_before, fragmented_after)
            print(
                f"node {lagging}: WAL last index {wal_last_index}, caught up to {commit_index} "
                f"by a snapshot at >= {oldest_snapshot} (survivor snapshots "
                f"{survivor_snapshots}) over a {MAX_MESSAGE_SIZE_BYTES}-byte frame limit; "
                f"fragmented by {senders}; leader {leader} then {caught_up['leaderId']}, "
                f"term {leader_term} then {caught_up['term']}"
            )
            # Every acknowledged write is on the node that caught up, in its own state.
            await assert_readable(session, url, key, acked, "stale")
            cluster.assert_alive()

    cluster.run(scenario, timeout_s=150)
    for node_id in cluster.ids:
        assert "Traceback" not in cluster.log_text(node_id), cluster.log_text(node_id)
