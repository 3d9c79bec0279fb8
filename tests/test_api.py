"""The REST API over HTTP on 127.0.0.1, backed by real nodes (real files, real TCP).

Each test starts its own cluster (one node unless it tests forwarding) and talks to it with
a real aiohttp client.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api_support import ADMIN_TOKEN, Cluster, bearer, bootstrap

import mox.api.app
from mox.api import REQUEST_BODY_MAX_BYTES

Scenario = Callable[[Cluster, aiohttp.ClientSession], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, size: int = 1) -> None:
    async def main() -> None:
        cluster = await Cluster(tmp_path, size).start()
        try:
            async with aiohttp.ClientSession() as session:
                await scenario(cluster, session)
        finally:
            await cluster.stop()

    asyncio.run(main())


async def call(
    session: aiohttp.ClientSession, method: str, url: str, *, expect: int, **kwargs: Any
) -> tuple[Any, aiohttp.ClientResponse]:
    async with session.request(method, url, allow_redirects=False, **kwargs) as resp:
        text = await resp.text()
        assert resp.status == expect, (resp.status, text)
        body = json.loads(text) if text else None
        return body, resp


async def problem(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    status: int,
    code: str,
    field: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Assert an RFC 7807 problem with this status, code and (if given) field."""
    body, resp = await call(session, method, url, expect=status, **kwargs)
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"].startswith("urn:mox:problem:")
    assert body["title"] and body["detail"]
    assert body["requestId"] == resp.headers["X-Request-Id"]
    if field is not None:
        assert body.get("field") == field, body
    assert "Traceback" not in json.dumps(body)
    assert isinstance(body, dict)
    return body


# ------------------------------------------------------------------------------- flows


def test_bootstrap_and_talent_lifecycle(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        url = cluster.leader().url
        await problem(
            s,
            "POST",
            f"{url}/api/tenants",
            401,
            "UNAUTHENTICATED",
            "Authorization",
            json={"slug": "a", "name": "A"},
        )
        await problem(
            s,
            "POST",
            f"{url}/api/tenants",
            401,
            "UNAUTHENTICATED",
            "Authorization",
            json={"slug": "acme", "name": "A"},
            headers={"Authorization": "Bearer nope"},
        )
        key, created = await bootstrap(s, url, "acme")
        assert created["tenant"]["slug"] == "acme"
        assert key.startswith(created["apiKey"]["prefix"] + ".")
        await problem(
            s,
            "POST",
            f"{url}/api/tenants",
            409,
            "SLUG_TAKEN",
            "slug",
            json={"slug": "acme", "name": "B"},
            headers=bearer(ADMIN_TOKEN),
        )
        tenant, _ = await call(s, "GET", f"{url}/api/tenant", expect=200, headers=bearer(key))
        assert tenant["id"] == created["tenant"]["id"]

        talent, resp = await call(
            s,
            "POST",
            f"{url}/api/talents",
            expect=201,
            headers=bearer(key),
            json={
                "displayName": "Ann",
                "emails": ["ann@example.com"],
                "location": {"country": "US"},
                "accounts": [{"platform": "instagram", "handle": "ann"}],
            },
        )
        assert resp.headers["Location"] == f"/api/talents/{talent['id']}"
        assert resp.headers["ETag"] == '"1"'
        assert talent["tenantId"] == tenant["id"]
        got, _ = await call(
            s, "GET", f"{url}/api/talents/{talent['id']}", expect=200, headers=bearer(key)
        )
        assert got == talent
        stale, _ = await call(
            s,
            "GET",
            f"{url}/api/talents/{talent['id']}?consistency=stale",
            expect=200,
            headers=bearer(key),
        )
        assert stale == talent
        await problem(
            s,
            "GET",
            f"{url}/api/talents/{talent['id']}?consistency=eventual",
            422,
            "VALIDATION",
            "consistency",
            headers=bearer(key),
        )

        patched, resp = await call(
            s,
            "PATCH",
            f"{url}/api/talents/{talent['id']}",
            expect=200,
            headers=bearer(key, **{"If-Match": '"1"'}),
            json={"displayName": "Anna", "legalName": None},
        )
        assert (patched["version"], patched["displayName"]) == (2, "Anna")
        assert resp.headers["ETag"] == '"2"'
        await problem(
            s,
            "PATCH",
            f"{url}/api/talents/{talent['id']}",
            409,
            "VERSION_CONFLICT",
            "expectedVersion",
            headers=bearer(key, **{"If-Match": '"1"'}),
            json={"displayName": "Lost"},
        )
        await problem(
            s,
            "PATCH",
            f"{url}/api/talents/{talent['id']}",
            409,
            "VERSION_CONFLICT",
            "expectedVersion",
            headers=bearer(key),
            json={"displayName": "Lost", "expectedVersion": 1},
        )
        await problem(
            s,
            "PATCH",
            f"{url}/api/talents/{talent['id']}",
            400,
            "VALIDATION",
            "If-Match",
            headers=bearer(key, **{"If-Match": "yesterday"}),
            json={"displayName": "x"},
        )
        events, _ = await call(
            s, "GET", f"{url}/api/talents/{talent['id']}/events", expect=200, headers=bearer(key)
        )
        assert [e["type"] for e in events["items"]] == ["TalentRegistered", "ProfileUpdated"]

        archived, _ = await call(
            s, "DELETE", f"{url}/api/talents/{talent['id']}", expect=200, headers=bearer(key)
        )
        assert (archived["status"], archived["version"]) == ("archived", 3)
        await problem(
            s,
            "DELETE",
            f"{url}/api/talents/{talent['id']}",
            409,
            "TALENT_ARCHIVED",
            headers=bearer(key),
        )
        await problem(
            s,
            "PATCH",
            f"{url}/api/talents/{talent['id']}",
            409,
            "TALENT_ARCHIVED",
            headers=bearer(key),
            json={"displayName": "x"},
        )
        # Its handle was released with the archive.
        await call(
            s,
            "POST",
            f"{url}/api/talents",
            expect=201,
            headers=bearer(key),
            json={"displayName": "Ann 2", "accounts": [{"platform": "instagram", "handle": "ANN"}]},
        )
        await problem(
            s,
            "POST",
            f"{url}/api/talents",
            409,
            "DUPLICATE_HANDLE",
            "accounts[0].handle",
            headers=bearer(key),
            json={"displayName": "Ann 3", "accounts": [{"platform": "instagram", "handle": "ann"}]},
        )
        await problem(
            s, "GET", f"{url}/api/talents/01NOSUCHTALENT", 404, "NOT_FOUND", headers=bearer(key)
        )

    run(tmp_path, scenario)


def test_cursor_pagination(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        url = cluster.leader().url
        key, _ = await bootstrap(s, url, "pages")
        ids = []
        for n in range(7):
            talent, _ = await call(
                s,
                "POST",
                f"{url}/api/talents",
                expect=201,
                headers=bearer(key),
                json={"displayName": f"T{n}"},
            )
            ids.append(talent["id"])
        seen: list[str] = []
        cursor = ""
        for _page in range(10):
            page, _ = await call(
                s,
                "GET",
                f"{url}/api/talents?limit=3&cursor={cursor}",
                expect=200,
                headers=bearer(key),
            )
            assert len(page["items"]) <= 3
            seen += [item["id"] for item in page["items"]]
            if page["nextCursor"] is None:
                break
            cursor = page["nextCursor"]
        assert seen == sorted(ids)  # ULIDs sort by creation: the list is in creation order
        for bad in ("abc", "0", "-1", "201", "1e3"):
            await problem(
                s,
                "GET",
                f"{url}/api/talents?limit={bad}",
                422,
                "VALIDATION",
                "limit",
                headers=bearer(key),
            )
        await problem(
            s,
            "GET",
            f"{url}/api/talents?cursor=%25%25",
            422,
            "VALIDATION",
            "cursor",
            headers=bearer(key),
        )

    run(tmp_path, scenario)


def test_bad_input_is_a_problem_naming_the_field(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        url = cluster.leader().url
        key, _ = await bootstrap(s, url, "inputs")
        auth = bearer(key, **{"Content-Type": "application/json"})
        talents = f"{url}/api/talents"
        await problem(
            s,
            "POST",
            talents,
            400,
            "MALFORMED_JSON",
            "body",
            headers=auth,
            data=b'{"displayName": ',
        )
        await problem(s, "POST", talents, 400, "MALFORMED_JSON", "body", headers=auth, data=b"")
        await problem(s, "POST", talents, 422, "VALIDATION", "body", headers=auth, data=b"[1, 2]")
        await problem(
            s,
            "POST",
            talents,
            422,
            "VALIDATION",
            "displayName",
            headers=auth,
            json={"displayName": 7},
        )
        await problem(
            s, "POST", talents, 422, "VALIDATION", "displayName", headers=auth, json={"emails": []}
        )
        await problem(
            s,
            "POST",
            talents,
            422,
            "VALIDATION",
            "nickname",
            headers=auth,
            json={"displayName": "A", "nickname": "a"},
        )
        await problem(
            s,
            "POST",
            talents,
            422,
            "VALIDATION",
            "accounts[0].handle",
            headers=auth,
            json={"displayName": "A", "accounts": [{"platform": "x", "handle": 5}]},
        )
        await problem(
            s,
            "POST",
            talents,
            422,
            "VALIDATION",
            "location.country",
            headers=auth,
            json={"displayName": "A", "location": {}},
        )
        # Values of the right type that break a domain rule: the state machine names them.
        await problem(
            s,
            "POST",
            talents,
            422,
            "VALIDATION",
            "emails[0]",
            headers=auth,
            json={"displayName": "A", "emails": ["nope"]},
        )
        await problem(
            s,
            "POST",
            talents,
            422,
            "VALIDATION",
            "commissionBps",
            headers=auth,
            json={"displayName": "A", "commissionBps": 20000},
        )
        await problem(
            s,
            "POST",
            talents,
            422,
            "VALIDATION",
            "accounts[0].platform",
            headers=auth,
            json={"displayName": "A", "accounts": [{"platform": "myspace", "handle": "a"}]},
        )
        huge = b'{"displayName": "' + b"x" * REQUEST_BODY_MAX_BYTES + b'"}'
        await problem(s, "POST", talents, 413, "BODY_TOO_LARGE", "body", headers=auth, data=huge)
        await problem(
            s,
            "POST",
            f"{url}/api/tenants",
            413,
            "BODY_TOO_LARGE",
            "body",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            data=huge,
        )
        await problem(
            s,
            "POST",
            f"{url}/api/tenants",
            422,
            "VALIDATION",
            "slug",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"slug": "Bad Slug", "name": "x"},
        )
        await problem(
            s,
            "POST",
            f"{url}/api/tenants",
            422,
            "VALIDATION",
            "settings.currency",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"slug": "ok-slug", "name": "x", "settings": {"currency": "dollars"}},
        )
        talent, _ = await call(
            s, "POST", talents, expect=201, headers=auth, json={"displayName": "A"}
        )
        await problem(
            s,
            "PATCH",
            f"{talents}/{talent['id']}",
            422,
            "VALIDATION",
            "body",
            headers=auth,
            json={},
        )
        await problem(
            s,
            "PATCH",
            f"{talents}/{talent['id']}",
            422,
            "VALIDATION",
            "status",
            headers=auth,
            json={"status": "archived"},
        )
        await problem(
            s,
            "PATCH",
            f"{talents}/{talent['id']}",
            422,
            "VALIDATION",
            "expectedVersion",
            headers=auth,
            json={"expectedVersion": "1"},
        )
        await problem(s, "GET", f"{talents}/..%2Fx", 404, "NOT_FOUND", headers=auth)
        await problem(s, "GET", f"{url}/api/nothing", 404, "NOT_FOUND")
        not_allowed = await problem(
            s, "PUT", talents, 405, "METHOD_NOT_ALLOWED", headers=auth, json={}
        )
        assert "POST" in not_allowed["detail"] and "GET" in not_allowed["detail"]
        await problem(
            s,
            "POST",
            talents,
            400,
            "VALIDATION",
            "Idempotency-Key",
            headers={**auth, "Idempotency-Key": "has space"},
            json={"displayName": "A"},
        )

    run(tmp_path, scenario)


def test_api_keys_authenticate_and_authorize(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        url = cluster.leader().url
        owner, _ = await bootstrap(s, url, "keys")
        talents = f"{url}/api/talents"
        body = await problem(s, "GET", talents, 401, "UNAUTHENTICATED", "Authorization")
        assert "Bearer" in body["detail"]
        await problem(
            s,
            "GET",
            talents,
            401,
            "UNAUTHENTICATED",
            "Authorization",
            headers={"Authorization": "Basic abc"},
        )
        await problem(
            s, "GET", talents, 401, "UNAUTHENTICATED", "Authorization", headers=bearer("mox.a.b")
        )
        await problem(
            s,
            "GET",
            talents,
            401,
            "UNAUTHENTICATED",
            "Authorization",
            headers=bearer(owner[:-3] + "xyz"),
        )
        tenant_id = owner.split(".")[1]
        await problem(
            s,
            "GET",
            talents,
            401,
            "UNAUTHENTICATED",
            "Authorization",
            headers=bearer(f"mox.{tenant_id}.NOKEY.{owner.split('.')[3]}"),
        )

        reader_info, _ = await call(
            s,
            "POST",
            f"{url}/api/keys",
            expect=201,
            headers=bearer(owner),
            json={"name": "reader", "scopes": ["talents:read"]},
        )
        reader = reader_info["key"]
        assert "secretSha256" not in reader_info
        await call(s, "GET", talents, expect=200, headers=bearer(reader))
        await problem(
            s,
            "POST",
            talents,
            403,
            "FORBIDDEN",
            "Authorization",
            headers=bearer(reader),
            json={"displayName": "A"},
        )
        await problem(
            s,
            "POST",
            f"{url}/api/keys",
            403,
            "FORBIDDEN",
            "Authorization",
            headers=bearer(reader),
            json={"name": "x"},
        )
        await problem(
            s,
            "POST",
            f"{url}/api/keys",
            422,
            "VALIDATION",
            "key.scopes[0]",
            headers=bearer(owner),
            json={"name": "x", "scopes": ["root"]},
        )
        revoked, _ = await call(
            s, "DELETE", f"{url}/api/keys/{reader_info['id']}", expect=200, headers=bearer(owner)
        )
        assert revoked["revokedAt"] is not None
        await problem(s, "GET", talents, 403, "FORBIDDEN", "Authorization", headers=bearer(reader))
        await problem(
            s,
            "DELETE",
            f"{url}/api/keys/NOSUCHKEY",
            404,
            "NOT_FOUND",
            "keyId",
            headers=bearer(owner),
        )
        expired_info, _ = await call(
            s,
            "POST",
            f"{url}/api/keys",
            expect=201,
            headers=bearer(owner),
            json={"name": "old", "expiresAtMs": 1000},
        )
        await problem(
            s,
            "GET",
            talents,
            403,
            "FORBIDDEN",
            "Authorization",
            headers=bearer(expired_info["key"]),
        )

    run(tmp_path, scenario)


def test_another_tenants_resources_are_not_found(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        url = cluster.leader().url
        key_a, _ = await bootstrap(s, url, "tenant-a")
        key_b, _ = await bootstrap(s, url, "tenant-b")
        talent, _ = await call(
            s,
            "POST",
            f"{url}/api/talents",
            expect=201,
            headers=bearer(key_a),
            json={"displayName": "A's talent", "accounts": [{"platform": "x", "handle": "same"}]},
        )
        item = f"{url}/api/talents/{talent['id']}"
        await problem(s, "GET", item, 404, "NOT_FOUND", headers=bearer(key_b))
        await problem(
            s,
            "PATCH",
            item,
            404,
            "NOT_FOUND",
            headers=bearer(key_b),
            json={"displayName": "stolen"},
        )
        await problem(s, "DELETE", item, 404, "NOT_FOUND", headers=bearer(key_b))
        events, _ = await call(s, "GET", f"{item}/events", expect=200, headers=bearer(key_b))
        assert events["items"] == []
        page, _ = await call(s, "GET", f"{url}/api/talents", expect=200, headers=bearer(key_b))
        assert page["items"] == []
        # The same handle in tenant B is no conflict: it is another tenant's talent.
        await call(
            s,
            "POST",
            f"{url}/api/talents",
            expect=201,
            headers=bearer(key_b),
            json={"displayName": "B's", "accounts": [{"platform": "x", "handle": "same"}]},
        )
        # B's key id and secret presented under A's tenant id do not authenticate.
        _, tenant_a, _, _ = key_a.split(".")
        _, _, key_id_b, secret_b = key_b.split(".")
        await problem(
            s,
            "GET",
            item,
            401,
            "UNAUTHENTICATED",
            headers=bearer(f"mox.{tenant_a}.{key_id_b}.{secret_b}"),
        )
        unchanged, _ = await call(s, "GET", item, expect=200, headers=bearer(key_a))
        assert unchanged == talent

    run(tmp_path, scenario)


def test_idempotency_keys_apply_a_request_once(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        url = cluster.leader().url
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": "boot-1"}
        first, _ = await call(
            s,
            "POST",
            f"{url}/api/tenants",
            expect=201,
            headers=admin,
            json={"slug": "idem", "name": "Idem"},
        )
        again, resp = await call(
            s,
            "POST",
            f"{url}/api/tenants",
            expect=200,
            headers=admin,
            json={"slug": "idem", "name": "Idem"},
        )
        assert resp.headers["Idempotent-Replayed"] == "true"
        assert again["tenant"] == first["tenant"]
        assert "key" not in again["apiKey"]  # the secret was shown once
        key = first["apiKey"]["key"]
        headers = bearer(key, **{"Idempotency-Key": "create-ann"})
        one, _ = await call(
            s,
            "POST",
            f"{url}/api/talents",
            expect=201,
            headers=headers,
            json={"displayName": "Ann"},
        )
        two, resp = await call(
            s,
            "POST",
            f"{url}/api/talents",
            expect=201,
            headers=headers,
            json={"displayName": "Ann"},
        )
        assert two == one
        assert resp.headers["Idempotent-Replayed"] == "true"
        await problem(
            s,
            "POST",
            f"{url}/api/talents",
            422,
            "IDEMPOTENCY_KEY_REUSED",
            "Idempotency-Key",
            headers=headers,
            json={"displayName": "Bob"},
        )
        page, _ = await call(s, "GET", f"{url}/api/talents", expect=200, headers=bearer(key))
        assert [t["id"] for t in page["items"]] == [one["id"]]
        conditional = bearer(key, **{"Idempotency-Key": "cond-1", "If-Match": '"1"'})
        await call(
            s,
            "PATCH",
            f"{url}/api/talents/{one['id']}",
            expect=200,
            headers=conditional,
            json={"tags": ["a"]},
        )
        other_condition = bearer(key, **{"Idempotency-Key": "cond-1", "If-Match": '"7"'})
        await problem(
            s,
            "PATCH",
            f"{url}/api/talents/{one['id']}",
            422,
            "IDEMPOTENCY_KEY_REUSED",
            headers=other_condition,
            json={"tags": ["a"]},
        )
        patch = bearer(key, **{"Idempotency-Key": "rename-1"})
        for _ in range(3):
            renamed, _ = await call(
                s,
                "PATCH",
                f"{url}/api/talents/{one['id']}",
                expect=200,
                headers=patch,
                json={"displayName": "Anna"},
            )
            assert renamed["version"] == 3
        # The same key under another tenant is another session.
        other, _ = await bootstrap(s, url, "idem-other")
        await call(
            s,
            "POST",
            f"{url}/api/talents",
            expect=201,
            headers=bearer(other, **{"Idempotency-Key": "create-ann"}),
            json={"displayName": "Ann"},
        )

    run(tmp_path, scenario)


def test_followers_forward_writes_and_serve_linearizable_reads(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        leader = cluster.leader()
        follower = cluster.follower()
        key, created = await bootstrap(s, follower.url, "forwarded")
        talent, resp = await call(
            s,
            "POST",
            f"{follower.url}/api/talents",
            expect=201,
            headers=bearer(key),
            json={"displayName": "Via follower"},
        )
        assert resp.headers["X-Mox-Leader"] == leader.url
        got, resp = await call(
            s, "GET", f"{follower.url}/api/talents/{talent['id']}", expect=200, headers=bearer(key)
        )
        assert got == talent
        # Served by the follower itself, through the leader's read index: not forwarded.
        assert "X-Mox-Leader" not in resp.headers
        # A stale read is served by the follower itself, once it has applied the write.
        for _ in range(100):
            async with s.get(
                f"{follower.url}/api/talents/{talent['id']}?consistency=stale", headers=bearer(key)
            ) as stale:
                if stale.status == 200:
                    assert "X-Mox-Leader" not in stale.headers
                    assert (await stale.json()) == talent
                    break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the follower never applied the write")
        # Right after a revocation (acknowledged by the leader), no follower lets the key
        # write (checked again on the leader) or read linearizably (the key is looked up
        # through the read index).
        temp, _ = await call(
            s,
            "POST",
            f"{leader.url}/api/keys",
            expect=201,
            headers=bearer(key),
            json={"name": "t", "scopes": ["talents:read", "talents:write"]},
        )
        await call(
            s,
            "GET",
            f"{follower.url}/api/talents/{talent['id']}",
            expect=200,
            headers=bearer(temp["key"]),
        )
        await call(
            s, "DELETE", f"{leader.url}/api/keys/{temp['id']}", expect=200, headers=bearer(key)
        )
        for running in cluster.nodes.values():
            await problem(
                s,
                "GET",
                f"{running.url}/api/talents/{talent['id']}",
                403,
                "FORBIDDEN",
                headers=bearer(temp["key"]),
            )
            await problem(
                s,
                "POST",
                f"{running.url}/api/talents",
                403,
                "FORBIDDEN",
                headers=bearer(temp["key"]),
                json={"displayName": "x"},
            )
        # A request that was already forwarded once is not forwarded again.
        await problem(
            s,
            "POST",
            f"{follower.url}/api/talents",
            503,
            "NOT_LEADER",
            headers=bearer(key, **{"X-Mox-Forwarded-By": "9"}),
            json={"displayName": "loop"},
        )
        for running in cluster.nodes.values():
            health, _ = await call(s, "GET", f"{running.url}/health", expect=200)
            assert health["leaderId"] == leader.node.node_id
            assert health["role"] == ("leader" if running is leader else "follower")
        metrics_text = await (await s.get(f"{leader.url}/metrics")).text()
        assert 'mox_node_role{role="leader"} 1.0' in metrics_text
        assert "mox_replication_lag_entries{follower=" in metrics_text
        follower_metrics = await (await s.get(f"{follower.url}/metrics")).text()
        assert 'mox_node_role{role="follower"} 1.0' in follower_metrics
        forwarded = [
            line
            for line in follower_metrics.splitlines()
            if line.startswith("mox_http_forwarded_requests_total")
        ]
        # The bootstrap and the talent's POST; no GET was forwarded.
        assert forwarded and float(forwarded[0].split()[-1]) == 2
        assert created["tenant"]["slug"] == "forwarded"

    run(tmp_path, scenario, size=3)


def test_metrics_label_routes_and_logs_carry_request_ids(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        running = cluster.leader()
        key, _ = await bootstrap(s, running.url, "observed")
        talent, _ = await call(
            s,
            "POST",
            f"{running.url}/api/talents",
            expect=201,
            headers=bearer(key),
            json={"displayName": "A"},
        )
        _, resp = await call(
            s,
            "GET",
            f"{running.url}/api/talents/{talent['id']}",
            expect=200,
            headers=bearer(key, **{"X-Request-Id": "req-42"}),
        )
        assert resp.headers["X-Request-Id"] == "req-42"
        text = await (await s.get(f"{running.url}/metrics")).text()
        assert 'route="/api/talents/{id}"' in text
        assert talent["id"] not in text  # raw paths never become labels
        assert "mox_node_commit_index" in text
        fsyncs = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("mox_wal_fsync_duration_seconds_count")
        ]
        assert fsyncs and fsyncs[0] >= 1, fsyncs  # the runtime feeds the histogram
        lines = [
            json.loads(line)
            for line in running.logs.getvalue().splitlines()
            if line.startswith("{")
        ]
        request_lines = [line for line in lines if line.get("event") == "request"]
        tagged = [line for line in request_lines if line.get("request_id") == "req-42"]
        assert tagged and tagged[0]["route"] == "/api/talents/{id}" and tagged[0]["status"] == 200
        assert tagged[0]["tenant_id"] == talent["tenantId"]

    run(tmp_path, scenario)


def test_unexpected_errors_are_logged_500s_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(node: Any) -> Any:
        raise RuntimeError("secret internal detail")

    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        monkeypatch.setattr(mox.api.app, "status_view", broken)
        body = await problem(s, "GET", f"{cluster.leader().url}/health", 500, "INTERNAL")
        assert "secret internal detail" not in json.dumps(body)
        assert "secret internal detail" in cluster.leader().logs.getvalue()

    run(tmp_path, scenario)


def test_a_stopped_node_answers_503(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        running = cluster.leader()
        key, _ = await bootstrap(s, running.url, "stopping")
        await running.node.stop()
        body = await problem(
            s,
            "POST",
            f"{running.url}/api/talents",
            503,
            "UNAVAILABLE",
            headers=bearer(key),
            json={"displayName": "A"},
        )
        assert "stopped" in body["detail"]
        assert body.get("field") is None

    run(tmp_path, scenario)


# ----------------------------------------------------------- no 500 for any bad input


class LiveNode:
    """One node and its API on a loop in a background thread, for synchronous property tests."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster = Cluster(root, 1)
        self.session: aiohttp.ClientSession | None = None
        self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _start(self) -> None:
        await self.cluster.start()
        self.session = aiohttp.ClientSession()
        self.url = self.cluster.leader().url
        self.key, _ = await bootstrap(self.session, self.url, "fuzz")
        body, _ = await call(
            self.session,
            "POST",
            f"{self.url}/api/talents",
            expect=201,
            headers=bearer(self.key),
            json={"displayName": "Target"},
        )
        self.talent_id = body["id"]

    async def _request(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        assert self.session is not None
        async with self.session.request(
            method, self.url + path, data=data, headers=headers, allow_redirects=False
        ) as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type", "")

    def request(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        result: tuple[int, bytes, str] = self._run(self._request(method, path, data, headers))
        return result

    def close(self) -> None:
        async def stop() -> None:
            if self.session is not None:
                await self.session.close()
            await self.cluster.stop()

        self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    node = LiveNode(tmp_path_factory.mktemp("live"))
    yield node
    node.close()


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
_talent_fields = [
    "displayName",
    "legalName",
    "emails",
    "location",
    "languages",
    "niches",
    "tags",
    "representation",
    "commissionBps",
    "accounts",
    "status",
    "expectedVersion",
]
_bodies = st.one_of(
    _json_values,
    st.dictionaries(st.sampled_from(_talent_fields), _json_values, max_size=5),
    st.fixed_dictionaries(
        {"displayName": st.text(max_size=300)},
        optional={f: _json_values for f in _talent_fields[1:]},
    ),
)
_header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    target=st.sampled_from(
        [
            "POST /api/talents",
            "PATCH /api/talents/{id}",
            "POST /api/tenants",
            "POST /api/keys",
            "GET /api/talents",
            "DELETE /api/talents/{id}",
        ]
    ),
    body=_bodies,
    raw=st.none() | st.binary(max_size=40),
    query=st.dictionaries(
        st.sampled_from(["limit", "cursor", "consistency", "afterVersion"]),
        _header_text,
        max_size=3,
    ),
    extra=st.dictionaries(
        st.sampled_from(["If-Match", "Idempotency-Key", "X-Request-Id"]), _header_text, max_size=2
    ),
    auth=st.sampled_from(["key", "admin", "none", "garbage"]),
)
def test_no_input_gets_a_500(
    live: LiveNode,
    target: str,
    body: Any,
    raw: bytes | None,
    query: dict[str, str],
    extra: dict[str, str],
    auth: str,
) -> None:
    method, path = target.split(" ")
    path = path.replace("{id}", live.talent_id)
    if query:
        path += "?" + urllib.parse.urlencode(query)
    headers = dict(extra)
    headers["Authorization"] = {
        "key": f"Bearer {live.key}",
        "admin": f"Bearer {ADMIN_TOKEN}",
        "none": "",
        "garbage": "Bearer mox.x.y.z",
    }[auth]
    if not headers["Authorization"]:
        del headers["Authorization"]
    data = raw if raw is not None else json.dumps(body).encode()
    status, payload, content_type = live.request(method, path, data, headers)
    assert status < 500, (status, payload)
    if status >= 400:
        assert content_type.startswith("application/problem+json")
        problem = json.loads(payload)
        assert problem["status"] == status and problem["code"] and problem["detail"]


def test_openapi_document_covers_every_route_and_matches_responses(tmp_path: Path) -> None:
    import msgspec

    from mox.api import schemas
    from mox.statemachine.model import Talent, Tenant

    async def scenario(cluster: Cluster, s: aiohttp.ClientSession) -> None:
        running = cluster.leader()
        url = running.url
        doc, _ = await call(s, "GET", f"{url}/api/openapi.json", expect=200)
        assert doc["openapi"].startswith("3.1")
        components = doc["components"]["schemas"]
        routes = {
            (route.method.lower(), route.resource.canonical)
            for route in running.runner.app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        }
        documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
        assert routes == documented
        refs = [m for m in json.dumps(doc).split('"$ref": "')[1:]]
        for ref in refs:
            name = ref.split('"', 1)[0].rsplit("/", 1)[1]
            assert name in components, name

        def conforms(body: Any, schema_name: str, type_: Any) -> None:
            msgspec.convert(body, type_)  # the type the schema was generated from accepts it
            properties = components[schema_name]["properties"]
            assert set(body) <= set(properties), set(body) - set(properties)
            assert set(components[schema_name].get("required", [])) <= set(body)

        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        created, _ = await call(
            s,
            "POST",
            f"{url}/api/tenants",
            expect=201,
            headers=admin,
            json={"slug": "spec", "name": "Spec"},
        )
        conforms(created, "TenantCreated", schemas.TenantCreated)
        key = created["apiKey"]["key"]
        conforms(
            (await call(s, "GET", f"{url}/api/tenant", expect=200, headers=bearer(key)))[0],
            "Tenant",
            Tenant,
        )
        issued, _ = await call(
            s, "POST", f"{url}/api/keys", expect=201, headers=bearer(key), json={"name": "k"}
        )
        conforms(issued, "ApiKeyCreated", schemas.ApiKeyCreated)
        talent, _ = await call(
            s,
            "POST",
            f"{url}/api/talents",
            expect=201,
            headers=bearer(key),
            json={"displayName": "A", "location": {"country": "US"}},
        )
        conforms(talent, "Talent", Talent)
        conforms(
            (await call(s, "GET", f"{url}/api/talents", expect=200, headers=bearer(key)))[0],
            "TalentPage",
            schemas.TalentPage,
        )
        conforms(
            (
                await call(
                    s,
                    "GET",
                    f"{url}/api/talents/{talent['id']}/events",
                    expect=200,
                    headers=bearer(key),
                )
            )[0],
            "EventList",
            schemas.EventList,
        )
        conforms((await call(s, "GET", f"{url}/health", expect=200))[0], "Health", schemas.Health)
        conforms(
            await problem(
                s, "GET", f"{url}/api/talents/nope", 404, "NOT_FOUND", headers=bearer(key)
            ),
            "Problem",
            schemas.Problem,
        )
        conforms(
            await problem(
                s,
                "POST",
                f"{url}/api/talents",
                422,
                "VALIDATION",
                "displayName",
                headers=bearer(key),
                json={},
            ),
            "Problem",
            schemas.Problem,
        )

    run(tmp_path, scenario)
