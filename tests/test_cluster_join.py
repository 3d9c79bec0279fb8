"""`mox start --join` with real processes: the reported split brain, closed.

In a 3-node cluster two nodes are removed, wiped and started together. Started as
bootstrapping nodes they were a majority of {1, 2, 3} (one led term 1 with an empty log and
acknowledged a write); started with --join they are members of nothing: neither leads nor
acknowledges anything, the cluster's real member keeps its leadership and term, and both
catch up once added back one at a time.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
from test_cluster import assert_readable, wait_caught_up, write_talents
from test_cluster_membership import (
    members_json,
    mox_members,
    start_joiner,
    wait_health,
    wait_members,
)
from test_cluster_support import (
    ProcCluster,
    bootstrap_tenant,
    child_env,
    max_commit_index,
    mox_command,
    wait_for_leader,
)

# Long enough for many election timeouts (300 ms at most here).
SILENCE_S = 2.0


def test_two_wiped_nodes_started_with_join_do_not_form_a_majority(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path, overrides={"consensus": {"election_timeout_max": "300ms"}})

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            leader, _ = await wait_for_leader(session, cluster, cluster.ids)
            key = await bootstrap_tenant(session, cluster.url(leader), "acme")
            leader_url = cluster.url(leader)
            acked = await write_talents(session, [leader_url], key, [f"a{n}" for n in range(4)])
            others = [i for i in cluster.ids if i != leader]
            for node_id in others:
                code, out, err = await mox_members("remove", str(node_id), "--url", leader_url)
                assert code == 0, (code, out, err)
            await wait_members(leader_url, [leader])
            for node_id in others:
                assert cluster.stop_node(node_id) == 0
                shutil.rmtree(cluster.data_dir(node_id))
            before = await wait_health(session, leader_url)
            for node_id in others:  # together, as in the report
                start_joiner(cluster, node_id)
            deadline = time.monotonic() + SILENCE_S
            while time.monotonic() < deadline:
                for node_id in others:
                    status = await wait_health(session, cluster.url(node_id))
                    assert status["role"] == "follower", status
                    assert status["commitIndex"] == 0, status
                await asyncio.sleep(0.05)
            for node_id in others:
                assert cluster.log_events(node_id, "node.joining"), cluster.log_text(node_id)
                listed = await members_json(cluster.url(node_id))
                assert node_id not in listed["members"], listed
            now = await wait_health(session, leader_url)
            if cluster_support_pauses() is None:
                assert (now["term"], now["leaderId"]) == (before["term"], leader), (before, now)
            acked.update(await write_talents(session, [leader_url], key, ["b0"]))

            for node_id in others:  # one server at a time
                code, out, err = await mox_members("add", str(node_id), "--url", leader_url)
                assert code == 0, (code, out, err)
            commit_index = await max_commit_index(session, cluster, [leader])
            for node_id in others:
                await wait_caught_up(session, cluster.url(node_id), commit_index, 30)
                await wait_members(cluster.url(node_id), [1, 2, 3])
                await assert_readable(session, cluster.url(node_id), key, acked, "stale")
            cluster.assert_alive()

    cluster.run(scenario, timeout_s=60)
    for node_id in cluster.ids:
        assert "Traceback" not in cluster.log_text(node_id), cluster.log_text(node_id)


def cluster_support_pauses() -> object:
    import test_cluster_support

    return test_cluster_support.PAUSE_NODES_SEED


def run_start(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mox_command("start", *args),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
        check=False,
    )


def test_join_flag_refusals_name_the_flag_or_key(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path / "three", size=3)
    explicit = tmp_path / "explicit.toml"
    explicit.write_text(
        cluster.config_path(1).read_text().replace("[cluster]", '[cluster]\ninitial_state = "new"', 1)
    )
    result = run_start("--config", str(explicit), "--join")
    assert result.returncode == 2, result
    assert "--join" in result.stderr and "initial_state" in result.stderr, result.stderr
    alone = ProcCluster(tmp_path / "one", size=1)
    result = run_start("--config", str(alone.config_path(1)), "--join")
    assert result.returncode == 2, result
    assert "--join" in result.stderr and "lists only this node" in result.stderr, result.stderr
    in_file = tmp_path / "in_file.toml"
    in_file.write_text(
        alone.config_path(1)
        .read_text()
        .replace("[cluster]", '[cluster]\ninitial_state = "existing"', 1)
    )
    result = run_start("--config", str(in_file))
    assert result.returncode == 2, result
    assert "cluster.initial_state" in result.stderr, result.stderr
    for output in (result.stderr, result.stdout):
        assert "Traceback" not in output
