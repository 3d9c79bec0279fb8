"""The admin membership API (GET/POST /api/admin/members) on real in-process nodes: real
runtime, WAL and LSM on real files, real TCP between nodes and to the API.

Listing, refusals (auth, bad bodies, ids without an address, the last member, a change in
progress), idempotent retries (`alreadyApplied`), forwarding to the leader, and removing the
leader itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from test_api_support import ADMIN_TOKEN, Cluster

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def run(
    tmp_path: Path,
    size: int,
    scenario: Callable[[Cluster, aiohttp.ClientSession], Awaitable[None]],
) -> None:
    async def main() -> None:
        cluster = await Cluster(tmp_path, size).start()
        try:
            async with aiohttp.ClientSession() as session:
                await asyncio.wait_for(scenario(cluster, session), 60)
        finally:
            await cluster.stop()

    asyncio.run(main())


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> tuple[int, dict[str, Any]]:
    async with session.request(
        method, f"{url}/api/admin/members", headers=ADMIN if headers is None else headers, json=json
    ) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        return response.status, body


async def change_until_done(
    session: aiohttp.ClientSession, urls: list[str], body: dict[str, int], timeout_s: float = 30
) -> dict[str, Any]:
    """POST a change, retrying 503s (no leader, outcome unknown) on each url in turn, as a
    retry script would; returns the 200 answer."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while time.monotonic() < deadline:
        url = urls[attempt % len(urls)]
        attempt += 1
        try:
            status, answer = await call(session, "POST", url, json=body)
        except (aiohttp.ClientError, OSError):
            status, answer = 599, {}
        if status == 200:
            return answer
        assert status in (503, 599), (status, answer)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{body} not done within {timeout_s} s")


def test_list_members_and_refusals(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        leader = cluster.leader()
        follower = cluster.follower()
        leader_id = leader.node.node_id

        # Admin token required, exactly like the tenant bootstrap.
        status, problem = await call(s, "GET", leader.url, headers={})
        assert (status, problem["code"], problem["field"]) == (
            401,
            "UNAUTHENTICATED",
            "Authorization",
        )
        status, problem = await call(s, "POST", leader.url, headers={"Authorization": "Bearer no"})
        assert (status, problem["code"]) == (401, "UNAUTHENTICATED")

        # The leader lists every member with its match index and lag.
        status, members = await call(s, "GET", leader.url)
        assert status == 200, members
        assert members["members"] == [1, 2, 3]
        assert members["committedMembers"] == [1, 2, 3]
        assert members["committed"] is True
        assert members["nonMembers"] == []
        # No change yet and no snapshot: the configuration is the static cluster.nodes.
        assert (members["configIndex"], members["configSource"]) == (0, "initial")
        assert (members["nodeId"], members["role"], members["leaderId"]) == (
            leader_id,
            "leader",
            leader_id,
        )
        assert sorted(members["progress"]) == ["1", "2", "3"]
        assert members["progress"][str(leader_id)]["lagEntries"] == 0
        # A follower answers from its own log, without progress.
        status, on_follower = await call(s, "GET", follower.url)
        assert status == 200, on_follower
        assert on_follower["members"] == [1, 2, 3]
        assert on_follower["role"] == "follower"
        assert on_follower["progress"] is None

        # Bad bodies name the field.
        for body, field in (
            ({}, "add"),
            ({"add": 2, "remove": 3}, "remove"),
            ({"add": 9}, "add"),
            ({"remove": 9}, "remove"),
        ):
            status, problem = await call(s, "POST", follower.url, json=body)
            assert (status, problem["code"], problem.get("field")) == (422, "VALIDATION", field), (
                body,
                problem,
            )
        status, problem = await call(s, "POST", leader.url, json={"add": "two"})
        assert (status, problem.get("field")) == (422, "add"), problem
        status, problem = await call(s, "POST", leader.url, json={"drop": 2})
        assert (status, problem.get("field")) == (422, "drop"), problem
        assert (
            "not in cluster.nodes"
            in (await call(s, "POST", leader.url, json={"add": 9}))[1]["detail"]
        )

        # Adding a member that is one already is done already: 200, nothing appended.
        config_index = members["configIndex"]
        status, answer = await call(s, "POST", follower.url, json={"add": 2})
        assert status == 200, answer
        assert answer["alreadyApplied"] is True
        assert (answer["op"], answer["nodeId"], answer["members"]) == ("add", 2, [1, 2, 3])
        assert answer["configIndex"] == config_index

        # The answers match the OpenAPI document's schemas for them.
        async with s.get(f"{leader.url}/api/openapi.json") as response:
            document = await response.json()
        components = document["components"]["schemas"]
        for body, name in ((members, "Membership"), (answer, "MemberChangeResult")):
            schema = components[name]
            assert set(body) <= set(schema["properties"]), (name, set(body))
            assert set(schema.get("required", [])) <= set(body), name
        operations = document["paths"]["/api/admin/members"]
        assert operations["post"]["security"] == [{"adminToken": []}]
        assert operations["get"]["security"] == [{"adminToken": []}]

    run(tmp_path, 3, scenario)


def test_last_member_cannot_be_removed(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        url = cluster.leader().url
        status, problem = await call(s, "POST", url, json={"remove": 1})
        assert (status, problem["code"], problem["field"]) == (409, "LAST_MEMBER", "remove")
        status, members = await call(s, "GET", url)
        assert members["members"] == [1]

    run(tmp_path, 1, scenario)


def test_remove_and_add_through_a_follower_and_a_change_in_progress(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        leader = cluster.leader()
        others = [n for n in cluster.nodes if n != leader.node.node_id]
        removed, keeper = others
        # Removed through a follower (forwarded to the leader), answered once committed.
        status, answer = await call(s, "POST", cluster.nodes[keeper].url, json={"remove": removed})
        assert status == 200, answer
        assert answer["alreadyApplied"] is False
        assert removed not in answer["members"] and len(answer["members"]) == 2
        assert leader.node.members() == tuple(answer["members"])
        status, members = await call(s, "GET", leader.url)
        assert members["committed"] is True
        assert (members["configIndex"], members["configSource"]) == (answer["configIndex"], "log")
        assert members["nonMembers"] == [removed]
        assert str(removed) not in members["progress"]
        # A retry of the same removal is done already.
        status, again = await call(s, "POST", leader.url, json={"remove": removed})
        assert (status, again["alreadyApplied"], again["configIndex"]) == (
            200,
            True,
            answer["configIndex"],
        )

        # With both other nodes down, adding the removed node back cannot commit (the new
        # configuration of 3 needs 2 of its members): a second change meanwhile is refused.
        await cluster.nodes[keeper].power_cut()
        await cluster.nodes[removed].power_cut()
        pending = asyncio.create_task(call(s, "POST", leader.url, json={"add": removed}))
        deadline = time.monotonic() + 10
        while leader.node.members() != (1, 2, 3):
            assert time.monotonic() < deadline, "the add was never appended"
            await asyncio.sleep(0.005)
        status, members = await call(s, "GET", leader.url)
        assert (members["committed"], members["members"]) == (False, [1, 2, 3]), members
        assert removed not in members["committedMembers"]
        status, problem = await call(s, "POST", leader.url, json={"remove": keeper})
        assert (status, problem["code"]) == (409, "CHANGE_IN_PROGRESS"), problem
        # Bring both back: the pending change commits (by this leader, or a new one).
        await cluster.start_node(keeper)
        await cluster.start_node(removed)
        status, first = await pending
        assert status in (200, 503), first
        urls = [running.url for running in cluster.nodes.values()]
        done = await change_until_done(s, urls, {"add": removed})
        assert done["members"] == [1, 2, 3]

    run(tmp_path, 3, scenario)


def test_removing_the_leader(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        old = cluster.leader()
        old_id = old.node.node_id
        survivors = [n for n in cluster.nodes if n != old_id]
        # The client gets a definite answer, or a 503 it retries (anywhere) until done.
        status, answer = await call(s, "POST", old.url, json={"remove": old_id})
        print("removing the leader answered", status, answer)
        assert status in (200, 503), answer
        if status == 503:
            assert answer["code"] in ("OUTCOME_UNKNOWN", "NO_LEADER", "NOT_LEADER", "TIMEOUT")
        urls = [cluster.nodes[n].url for n in survivors]
        done = await change_until_done(s, urls, {"remove": old_id})
        assert done["members"] == survivors
        if status == 200:
            assert answer["alreadyApplied"] is False
            assert done["alreadyApplied"] is True
        # A survivor leads; the removed node stepped down and stays out.
        deadline = time.monotonic() + 20
        while True:
            roles = {n: cluster.nodes[n].node.status().role for n in cluster.nodes}
            if any(roles[n] == "leader" for n in survivors) and roles[old_id] != "leader":
                break
            assert time.monotonic() < deadline, roles
            await asyncio.sleep(0.02)
        new = cluster.leader()
        assert new.node.node_id in survivors
        status, members = await call(s, "GET", new.url)
        assert (members["members"], members["nonMembers"]) == (survivors, [old_id])
        # The removed node keeps running (it still answers) but never leads again.
        assert old.node.members() == tuple(survivors)
        # And it can be added back (its log is intact).
        added = await change_until_done(s, urls, {"add": old_id})
        assert added["members"] == [1, 2, 3]

    run(tmp_path, 3, scenario)


def test_a_leader_deposed_while_removing_itself_answers_outcome_unknown(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        leader = cluster.leader()
        leader_id = leader.node.node_id
        down, up = [n for n in cluster.nodes if n != leader_id]
        # With `down` dead, the configuration without the leader ({down, up}) has no live
        # majority: the leader appends its removal, cannot commit it, and check-quorum
        # deposes it (it hears from `up` only). It must say so (503 OUTCOME_UNKNOWN) rather
        # than wait for an outcome nobody will tell it (as a removed node it gets no
        # entries from the next leader): a 503 TIMEOUT only after the request timeout.
        await cluster.nodes[down].power_cut()
        status, problem = await call(s, "POST", leader.url, json={"remove": leader_id})
        assert (status, problem["code"]) == (503, "OUTCOME_UNKNOWN"), problem
        assert leader.node.members() == tuple(sorted((down, up)))
        # Once `down` is back, the retried removal is found done (or made) on the survivors.
        await cluster.start_node(down)
        done = await change_until_done(
            s, [cluster.nodes[up].url, cluster.nodes[down].url], {"remove": leader_id}
        )
        assert done["members"] == sorted((down, up)), done

    run(tmp_path, 3, scenario)
