"""Replacing a node, with real `mox start` processes and the real `mox members` CLI.

The procedure of docs/operations.md ("Replacing a node"): a 3-node cluster with data; node X
dies (its disk is lost); `mox members remove X`, committed by the two survivors, which keep
serving writes; X's data directory wiped and X started empty -- it must not disrupt the
cluster (no log: pre-vote keeps it from raising anyone's term, it counts in no quorum);
`mox members add X`; X catches up by snapshot and holds every acknowledged write; the
members list shows 3 again. Also the CLI's refusals: an id without an address, an
unreachable node, bad flags.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import test_cluster_support as cluster_support
from test_cluster import assert_readable, snapshot_index, wait_caught_up, write_talents
from test_cluster_support import (
    ADMIN_TOKEN,
    ProcCluster,
    bootstrap_tenant,
    child_env,
    health,
    max_commit_index,
    mox_command,
    request,
    wait_for_leader,
)

from mox.io.ports import free_ports
from mox.node.cli import dump_toml

SNAPSHOT_THRESHOLD = 16
CLI_TIMEOUT_S = 90.0


async def mox_members(*args: str, token: bool = True) -> tuple[int, str, str]:
    """Run `mox members ARGS` as a real subprocess; (exit code, stdout, stderr)."""
    env = child_env()
    if not token:
        env.pop("MOX_ADMIN_TOKEN", None)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            mox_command("members", *args),
            capture_output=True,
            text=True,
            env=env,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    done = await asyncio.to_thread(run)
    return done.returncode, done.stdout, done.stderr


async def members_json(url: str) -> dict[str, Any]:
    code, out, err = await mox_members("list", "--json", "--url", url)
    assert code == 0, (code, out, err)
    listed: dict[str, Any] = json.loads(out)
    return listed


async def wait_members(url: str, members: list[int], timeout_s: float = 30) -> dict[str, Any]:
    """The node's membership once its latest configuration is `members` (a follower may
    not have the entry yet when the leader answered the change)."""
    deadline = time.monotonic() + timeout_s
    while True:
        listed = await members_json(url)
        if listed["members"] == members:
            return listed
        assert time.monotonic() < deadline, (url, listed)
        await asyncio.sleep(0.05)


async def wait_health(
    session: aiohttp.ClientSession, url: str, timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = await health(session, url)
        if status is not None:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not answer /health within {timeout_s} s")


def start_joiner(cluster: ProcCluster, node_id: int) -> None:
    """ProcCluster.start_node with --join, as docs/operations.md says to start an empty
    node that joins a running cluster."""
    log = cluster.log_path(node_id).open("ab")
    cluster.logs[node_id] = log
    cluster.processes[node_id] = subprocess.Popen(
        mox_command("start", "--config", str(cluster.config_path(node_id)), "--join"),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env(),
        start_new_session=True,
    )


async def assert_waits_silently(
    session: aiohttp.ClientSession, url: str, duration_s: float = 1.0
) -> dict[str, Any]:
    """A joiner not yet added: a follower that knows no log, for `duration_s` on end."""
    deadline = time.monotonic() + duration_s
    while True:
        status = await wait_health(session, url)
        assert status["role"] == "follower" and status["commitIndex"] == 0, status
        if time.monotonic() >= deadline:
            return status
        await asyncio.sleep(0.05)


def test_replace_a_node_that_lost_its_disk(tmp_path: Path) -> None:
    cluster = ProcCluster(
        tmp_path,
        overrides={
            "consensus": {"snapshot_threshold": SNAPSHOT_THRESHOLD, "election_timeout_max": "300ms"}
        },
    )

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            leader, _term = await wait_for_leader(session, cluster, cluster.ids)
            key = await bootstrap_tenant(session, cluster.url(leader), "acme")
            urls = [cluster.url(i) for i in cluster.ids]
            acked = await write_talents(session, urls, key, [f"a{n}" for n in range(6)])
            listed = await members_json(cluster.url(leader))
            assert (listed["members"], listed["committed"]) == ([1, 2, 3], True), listed
            code, out, err = await mox_members("list", "--url", cluster.url(leader))
            assert code == 0, (code, out, err)
            assert (
                "members: 1, 2, 3 (committed at index 0, from cluster.nodes at the node's first start;"
                in out
            ), out

            # X dies with its disk: the current leader, so that the removal also waits out
            # an election (the CLI retries 503 until a survivor leads).
            victim, _term = await wait_for_leader(session, cluster, cluster.ids)
            cluster.kill_node(victim)
            survivors = [i for i in cluster.ids if i != victim]
            survivor_urls = [cluster.url(i) for i in survivors]
            code, out, err = await mox_members("remove", str(victim), "--url", survivor_urls[0])
            assert code == 0, (code, out, err)
            assert f"node {victim} removed" in out, out
            listed = await wait_members(survivor_urls[1], survivors)
            assert listed["nonMembers"] == [victim], listed

            # The two survivors serve writes alone (a majority of 2 is both), past several
            # snapshot thresholds: the node that comes back can catch up by snapshot only.
            more = await write_talents(
                session, survivor_urls, key, [f"b{n}" for n in range(2 * SNAPSHOT_THRESHOLD)]
            )
            acked.update(more)

            # Wipe X's data directory (only now: it is no longer a member) and start it
            # empty with --join: a member of nothing, it waits to be added.
            shutil.rmtree(cluster.data_dir(victim))
            before = {i: await wait_health(session, cluster.url(i)) for i in survivors}
            start_joiner(cluster, victim)
            x_url = cluster.url(victim)
            x_status = await assert_waits_silently(session, x_url)
            # Its term is at most the survivors' (a message of theirs may have carried it).
            assert x_status["term"] <= max(b["term"] for b in before.values()), (x_status, before)
            assert cluster.log_events(victim, "node.joining"), cluster.log_text(victim)
            status, listed = await request(
                session,
                "GET",
                f"{x_url}/api/admin/members",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert status == 200, (status, listed)
            assert listed["configSource"] == "joining", listed
            assert victim not in listed["members"], listed
            # Writes go on, and the leader and term of the survivors are those of before
            # (unless --pause-nodes deschedules a survivor: that moves terms by itself).
            acked.update(await write_talents(session, survivor_urls, key, ["c0", "c1"]))
            x_status = await wait_health(session, x_url)
            assert x_status["role"] != "leader" and x_status["commitIndex"] == 0, x_status
            for node_id in survivors:
                now = await wait_health(session, cluster.url(node_id))
                assert now["leaderId"] != victim, now
                if cluster_support.PAUSE_NODES_SEED is None:
                    assert (now["term"], now["leaderId"]) == (
                        before[node_id]["term"],
                        before[node_id]["leaderId"],
                    ), (before, now)
            listed = await members_json(x_url)
            assert listed["members"] == survivors and listed["commitIndex"] == 0, listed

            # Add X back, through a survivor (X knows no leader: it could not forward).
            add_started_s = time.monotonic()
            code, out, err = await mox_members("add", str(victim), "--url", survivor_urls[1])
            assert code == 0, (code, out, err)
            assert f"node {victim} added; members: 1, 2, 3" in out, out
            added_s = time.monotonic() - add_started_s
            commit_index = await max_commit_index(session, cluster, survivors)
            await wait_caught_up(session, x_url, commit_index, 60)
            # Printed, not asserted (the CLI's time includes starting a Python process).
            print(
                f"replacement: `mox members add` took {added_s:.3f} s, node {victim} caught "
                f"up to index {commit_index} {time.monotonic() - add_started_s:.3f} s after it "
                f"began ({len(acked)} talents)"
            )
            # Everything it has came from the leader's snapshot and log.
            assert snapshot_index(cluster.data_dir(victim)) >= SNAPSHOT_THRESHOLD
            assert cluster.log_events(victim, "node.snapshot_installed"), "no snapshot installed"
            await assert_readable(session, x_url, key, acked, "stale")
            for url in urls:
                await wait_members(url, [1, 2, 3])
            # The leader reports every member's progress (asked until the node asked still
            # leads when it answers: leadership may move in between on a loaded machine).
            deadline = time.monotonic() + 30
            while True:
                leader, _ = await wait_for_leader(session, cluster, cluster.ids)
                listed = await members_json(cluster.url(leader))
                if listed["progress"] is not None:
                    break
                assert time.monotonic() < deadline, listed
            assert listed["committed"] is True
            assert sorted(listed["progress"]) == ["1", "2", "3"], listed
            # And it counts again: a write through it is acknowledged.
            acked.update(await write_talents(session, [x_url], key, ["d0"]))
            cluster.assert_alive()

            # Refusals of the CLI: one line on stderr, exit 1 (2 for bad flags).
            code, out, err = await mox_members("add", "9", "--url", x_url)
            assert code == 1 and "422 VALIDATION (field add)" in err, (code, out, err)
            assert "not in cluster.nodes" in err and "Traceback" not in err
            assert len(err.strip().splitlines()) == 1, err
            dead_url = f"http://127.0.0.1:{free_ports(1)[0]}"
            code, out, err = await mox_members("list", "--url", dead_url)
            assert code == 1 and err.startswith(f"mox: cannot reach {dead_url}"), (code, err)
            assert len(err.strip().splitlines()) == 1, err
            code, out, err = await mox_members("remove", "0", "--url", x_url)
            assert code == 2 and "'ID'" in err, (code, err)
            code, out, err = await mox_members("list", "--url", "localhost:1")
            assert code == 2 and "'--url'" in err, (code, err)
            code, out, err = await mox_members("list", "--url", x_url, token=False)
            assert code == 2 and "'--admin-token'" in err, (code, err)
            code, out, err = await mox_members("list", "--url", x_url, "--admin-token", "wrong")
            assert code == 1 and "401 UNAUTHENTICATED" in err, (code, err)
            assert ADMIN_TOKEN not in err

    cluster.run(scenario, timeout_s=150)
    for node_id in cluster.ids:
        assert "Traceback" not in cluster.log_text(node_id), cluster.log_text(node_id)


def test_remove_the_leader_through_the_api_and_add_it_back(tmp_path: Path) -> None:
    cluster = ProcCluster(tmp_path, overrides={"consensus": {"election_timeout_max": "300ms"}})
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            leader, term = await wait_for_leader(session, cluster, cluster.ids)
            key = await bootstrap_tenant(session, cluster.url(leader), "acme")
            acked = await write_talents(session, [cluster.url(leader)], key, ["a0", "a1"])
            # A retry script: POST until 200, through the survivors (a 503 from the old
            # leader, whose outcome is unknown, is retried like any other).
            survivors = [i for i in cluster.ids if i != leader]
            attempts: list[tuple[int, Any]] = []
            deadline = time.monotonic() + 30
            while True:
                url = cluster.url(leader) if not attempts else cluster.url(survivors[0])
                async with session.post(
                    f"{url}/api/admin/members", json={"remove": leader}, headers=admin
                ) as response:
                    attempts.append((response.status, await response.json(content_type=None)))
                if attempts[-1][0] == 200:
                    break
                assert attempts[-1][0] == 503, attempts
                assert time.monotonic() < deadline, attempts
                await asyncio.sleep(0.1)
            answer = attempts[-1][1]
            assert answer["members"] == survivors, attempts
            # A first attempt that answers 200 made the change itself (later ones may find
            # it done, or make it if the first was refused before proposing).
            if len(attempts) == 1:
                assert answer["alreadyApplied"] is False, attempts
            new_leader, _ = await wait_for_leader(session, cluster, survivors, min_term=term)
            acked.update(await write_talents(session, [cluster.url(new_leader)], key, ["b0", "b1"]))
            # The old leader still runs, leads nothing and knows it is out.
            old = await wait_health(session, cluster.url(leader))
            assert old["role"] != "leader", old
            listed = await members_json(cluster.url(leader))
            assert listed["members"] == survivors, listed
            # Added back (with its data: it was removed cleanly), it catches up.
            code, out, err = await mox_members("add", str(leader), "--url", cluster.url(new_leader))
            assert code == 0 and "added; members: 1, 2, 3" in out, (code, out, err)
            commit_index = await max_commit_index(session, cluster, survivors)
            await wait_caught_up(session, cluster.url(leader), commit_index)
            await assert_readable(session, cluster.url(leader), key, acked, "stale")
            cluster.assert_alive()

    cluster.run(scenario, timeout_s=120)
    for node_id in cluster.ids:
        assert "Traceback" not in cluster.log_text(node_id), cluster.log_text(node_id)


def test_an_edited_cluster_nodes_list_does_not_change_a_nodes_configuration(
    tmp_path: Path,
) -> None:
    """A node whose configuration never came from the log (no change, no snapshot) keeps the
    members its data directory was created with when restarted with more ids in
    cluster.nodes: with the edited list as its configuration it would count quorums of 5
    where the others count quorums of 3, and the two need not overlap."""
    cluster = ProcCluster(tmp_path)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            leader, _ = await wait_for_leader(session, cluster, cluster.ids)
            key = await bootstrap_tenant(session, cluster.url(leader), "acme")
            edited = next(i for i in cluster.ids if i != leader)
            # Up (its SIGTERM handler installed) before it is stopped cleanly.
            await wait_health(session, cluster.url(edited))
            assert cluster.stop_node(edited) == 0
            document = copy.deepcopy(cluster.documents[edited])
            ports = free_ports(4)
            document["cluster"]["nodes"] += [
                {"id": 4, "host": "127.0.0.1", "client_port": ports[0], "cluster_port": ports[1]},
                {"id": 5, "host": "127.0.0.1", "client_port": ports[2], "cluster_port": ports[3]},
            ]
            cluster.config_path(edited).write_text(dump_toml(document))
            cluster.start_node(edited)
            await wait_health(session, cluster.url(edited))
            listed = await members_json(cluster.url(edited))
            assert (listed["members"], listed["configSource"]) == ([1, 2, 3], "initial"), listed
            # 4 and 5 have addresses now, so they are candidates for `members add`.
            assert listed["nonMembers"] == [4, 5], listed
            # And the restarted node serves with the others as before.
            acked = await write_talents(session, [cluster.url(edited)], key, ["e0"])
            commit_index = await max_commit_index(session, cluster, cluster.ids)
            await wait_caught_up(session, cluster.url(edited), commit_index)
            await assert_readable(session, cluster.url(edited), key, acked, "stale")

    cluster.run(scenario, timeout_s=90)


class _ThreeOfFour(ProcCluster):
    """Four configured nodes of which `start` runs the first three."""

    def start(self) -> ProcCluster:
        for node_id in (1, 2, 3):
            self.start_node(node_id)
        return self


def test_add_a_node_under_a_new_id(tmp_path: Path) -> None:
    """The procedure for a new id: its address into every node's cluster.nodes (a rolling
    restart; each node keeps its configuration), the new node started empty (it cannot
    disrupt anyone), `mox members add 4`, and it catches up."""
    cluster = _ThreeOfFour(tmp_path, size=4)
    full = {i: copy.deepcopy(cluster.documents[i]) for i in (1, 2, 3)}
    for node_id in (1, 2, 3):
        document = copy.deepcopy(full[node_id])
        document["cluster"]["nodes"] = [n for n in document["cluster"]["nodes"] if n["id"] != 4]
        cluster.config_path(node_id).write_text(dump_toml(document))
    three = [1, 2, 3]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            leader, _ = await wait_for_leader(session, cluster, three)
            key = await bootstrap_tenant(session, cluster.url(leader), "acme")
            acked = await write_talents(session, [cluster.url(leader)], key, ["a0", "a1", "a2"])
            # Without an address, 4 cannot be added.
            code, out, err = await mox_members("add", "4", "--url", cluster.url(leader))
            assert code == 1 and "not in cluster.nodes" in err, (code, out, err)

            # Rolling restart with 4's address in every config, one node at a time. Each
            # node must be up first: one still starting would read the edited file and be
            # created with 4 in its initial configuration.
            for node_id in three:
                await wait_health(session, cluster.url(node_id))
            for node_id in three:
                cluster.config_path(node_id).write_text(dump_toml(full[node_id]))
                assert cluster.stop_node(node_id) == 0
                cluster.start_node(node_id)
                commit_index = await max_commit_index(session, cluster, three)
                await wait_caught_up(session, cluster.url(node_id), commit_index)
                listed = await members_json(cluster.url(node_id))
                assert (listed["members"], listed["nonMembers"]) == ([1, 2, 3], [4]), listed
            await wait_for_leader(session, cluster, three)

            # Node 4 starts empty with --join: a member of nothing, it waits to be added.
            start_joiner(cluster, 4)
            await assert_waits_silently(session, cluster.url(4))
            listed = await members_json(cluster.url(4))
            assert listed["members"] == [1, 2, 3], listed
            acked.update(await write_talents(session, [cluster.url(1)], key, ["b0"]))

            code, out, err = await mox_members("add", "4", "--url", cluster.url(2))
            assert code == 0 and "node 4 added; members: 1, 2, 3, 4" in out, (code, out, err)
            commit_index = await max_commit_index(session, cluster, three)
            await wait_caught_up(session, cluster.url(4), commit_index)
            await assert_readable(session, cluster.url(4), key, acked, "stale")
            # A member now: a write through it is acknowledged, and every node lists 4.
            acked.update(await write_talents(session, [cluster.url(4)], key, ["c0"]))
            for node_id in cluster.ids:
                await wait_members(cluster.url(node_id), [1, 2, 3, 4])
            cluster.assert_alive()

    cluster.run(scenario, timeout_s=120)
    for node_id in cluster.ids:
        assert "Traceback" not in cluster.log_text(node_id), cluster.log_text(node_id)
