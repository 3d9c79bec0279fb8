"""The state machine over a real LsmStore on real files (a tmp dir).

Covers every command and every error code, exactly-once retries, authorization at commit,
cursor pagination, determinism, and (as a property) tenant isolation: no query under one
tenant returns another tenant's data, and no command under one tenant changes another
tenant's keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mox.io.real import RealFileSystem
from mox.statemachine import (
    ArchiveTalent,
    CreateTenant,
    GetApiKey,
    GetTalent,
    GetTenant,
    IssueApiKey,
    ListEvents,
    ListTalents,
    LocationIn,
    NewApiKey,
    RegisterTalent,
    Result,
    RevokeApiKey,
    SocialAccountIn,
    StateMachine,
    Talent,
    TenantSettings,
    UpdateProfile,
    decode_result,
    encode_command,
    encode_query,
    make_command,
)
from mox.statemachine import keys as sm_keys
from mox.statemachine.commands import ERROR_CODES, CommandBody, QueryBody
from mox.storage.lsm import LsmStore

ALL_SCOPES = ["tenant:admin", "talents:read", "talents:write"]
T0_MS = 1_764_372_000_000  # 2025-11-28T23:20:00Z


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def open_store(root: str) -> LsmStore:
    return asyncio.run(LsmStore.open(RealFileSystem(root, backend="pwrite")))


class Harness:
    """A state machine over a real store, with a log index that advances per apply."""

    def __init__(self, store: LsmStore) -> None:
        self.store = store
        self.sm = StateMachine(store)
        self.index = 0

    def apply_bytes(self, data: bytes) -> Result:
        self.index += 1
        return decode_result(self.sm.apply(self.index, data))

    def apply(self, body: CommandBody, tenant: str = "T1", **envelope: Any) -> Result:
        envelope.setdefault("issued_at_ms", T0_MS + self.index)
        return self.apply_bytes(encode_command(make_command(body, tenant_id=tenant, **envelope)))

    def query(self, body: QueryBody, tenant: str = "T1") -> Result:
        return decode_result(self.sm.query(encode_query(tenant, body)))

    def create_tenant(self, tenant: str = "T1", slug: str = "acme", key_id: str = "k1") -> Result:
        body = CreateTenant(
            slug=slug,
            name=f"Tenant {tenant}",
            owner_key=NewApiKey(key_id=key_id, secret_sha256=sha("s"), scopes=ALL_SCOPES),
        )
        return self.apply(body, tenant)

    def register(self, talent_id: str, tenant: str = "T1", **fields: Any) -> Result:
        fields.setdefault("display_name", f"Talent {talent_id}")
        envelope = {k: fields.pop(k) for k in ("actor", "issued_at_ms") if k in fields}
        return self.apply(RegisterTalent(talent_id=talent_id, **fields), tenant, **envelope)

    def talent(self, talent_id: str, tenant: str = "T1") -> Talent:
        result = self.query(GetTalent(talent_id=talent_id), tenant)
        assert result.ok, (result.code, result.detail)
        talent: Talent = result.decode_value(Talent)
        return talent


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    store = open_store(str(tmp_path))
    yield Harness(store)
    asyncio.run(store.close())


@pytest.fixture
def ht(h: Harness) -> Harness:
    """A harness with tenant T1 created (owner key k1)."""
    assert h.create_tenant().ok
    return h


def expect(result: Result, code: str, field: str | None = None) -> None:
    assert result.code == code, (result.code, result.field, result.detail)
    if field is not None:
        assert result.field == field, (result.field, result.detail)
    if code != "OK":
        assert result.detail


# ---------------------------------------------------------------------------- tenants


def test_create_tenant_writes_tenant_key_and_events(h: Harness) -> None:
    result = h.create_tenant()
    expect(result, "OK")
    created = result.decode_value(dict)
    assert created["tenant"]["id"] == "T1"
    assert created["tenant"]["slug"] == "acme"
    assert created["tenant"]["createdAt"] == "2025-11-28T23:20:00.000Z"
    assert created["apiKey"]["prefix"] == "mox.T1.k1"
    assert "secretSha256" not in created["apiKey"]  # the hash is never shown
    tenant = h.query(GetTenant()).decode_value(dict)
    assert tenant["version"] == 2
    key = h.query(GetApiKey(key_id="k1")).decode_value(dict)
    assert key["secretSha256"] == sha("s")
    events = h.query(ListEvents(stream="tenant-T1")).decode_value(list)
    assert [e["type"] for e in events] == ["TenantCreated", "ApiKeyIssued"]
    assert [e["version"] for e in events] == [1, 2]
    assert all(e["tenantId"] == "T1" for e in events)
    assert h.store.applied_index == 1


def test_slug_is_globally_unique(ht: Harness) -> None:
    expect(ht.create_tenant("T2", slug="acme", key_id="k2"), "SLUG_TAKEN", "slug")
    expect(ht.query(GetTenant(), "T2"), "NOT_FOUND")  # nothing of T2 was written
    expect(ht.create_tenant("T2", slug="acme-2", key_id="k2"), "OK")


def create_limited(h: Harness, tenant: str, slug: str, max_tenants: int | None) -> Result:
    body = CreateTenant(
        slug=slug,
        name=f"Tenant {tenant}",
        owner_key=NewApiKey(key_id="k1", secret_sha256=sha("s"), scopes=ALL_SCOPES),
        max_tenants=max_tenants,
    )
    return h.apply(body, tenant)


def test_tenant_limit_travels_in_the_command(h: Harness) -> None:
    expect(create_limited(h, "T1", "one", 2), "OK")
    expect(create_limited(h, "T2", "two", 2), "OK")
    refused = create_limited(h, "T3", "three", 2)
    expect(refused, "TENANT_LIMIT")
    assert "limits.max_tenants" in refused.detail and "2" in refused.detail
    expect(h.query(GetTenant(), "T3"), "NOT_FOUND")  # nothing of T3 was written
    # A node with a higher limit (the limit is the accepting node's) may create more.
    expect(create_limited(h, "T3", "three", 3), "OK")
    expect(create_limited(h, "T4", "four", None), "OK")  # entries from before the limit
    expect(create_limited(h, "T5", "five", 4), "TENANT_LIMIT")
    expect(create_limited(h, "T5", "five", 0), "VALIDATION", "maxTenants")


def test_tenant_count_of_state_written_before_the_counter(h: Harness) -> None:
    for n in range(3):
        expect(create_limited(h, f"T{n}", f"slug-{n}", None), "OK")
    # State from a version without the counter: the count comes from the slugs.
    h.index += 1
    h.store.write_batch([(sm_keys.TENANT_COUNT_KEY, None)], h.index)
    expect(create_limited(h, "T3", "slug-3", 3), "TENANT_LIMIT")
    expect(create_limited(h, "T3", "slug-3", 4), "OK")
    expect(create_limited(h, "T4", "slug-4", 4), "TENANT_LIMIT")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"slug": "A"}, "slug"),
        ({"slug": "-x"}, "slug"),
        ({"name": "  "}, "name"),
        ({"settings": TenantSettings(currency="usd")}, "settings.currency"),
        (
            {"settings": TenantSettings(default_commission_bps=10_001)},
            "settings.defaultCommissionBps",
        ),
        (
            {"owner_key": NewApiKey(key_id="k1", secret_sha256="zz", scopes=ALL_SCOPES)},
            "ownerKey.secretSha256",
        ),
        (
            {"owner_key": NewApiKey(key_id="k/1", secret_sha256=sha("s"), scopes=ALL_SCOPES)},
            "ownerKey.keyId",
        ),
        (
            {"owner_key": NewApiKey(key_id="k1", secret_sha256=sha("s"), scopes=["root"])},
            "ownerKey.scopes[0]",
        ),
        (
            {"owner_key": NewApiKey(key_id="k1", secret_sha256=sha("s"), scopes=[])},
            "ownerKey.scopes",
        ),
    ],
)
def test_create_tenant_validation(h: Harness, change: dict[str, Any], field: str) -> None:
    fields: dict[str, Any] = {
        "slug": "acme",
        "name": "Acme",
        "owner_key": NewApiKey(key_id="k1", secret_sha256=sha("s"), scopes=ALL_SCOPES),
    }
    fields.update(change)
    expect(h.apply(CreateTenant(**fields)), "VALIDATION", field)
    expect(h.query(GetTenant()), "NOT_FOUND", "tenantId")


def test_tenant_id_cannot_escape_its_prefix(h: Harness) -> None:
    # A tenant id with "/" could alias another tenant's keys; it is refused outright.
    result = h.create_tenant(tenant="T1/talent")
    expect(result, "VALIDATION", "tenantId")
    expect(h.query(GetTenant(), "T1/talent"), "VALIDATION", "tenantId")


def test_commands_on_a_missing_tenant_are_not_found(h: Harness) -> None:
    expect(h.register("a1", tenant="nope"), "NOT_FOUND", "tenantId")


# --------------------------------------------------------------------------- api keys


def test_issue_and_revoke_api_key(ht: Harness) -> None:
    issued = ht.apply(
        IssueApiKey(
            key=NewApiKey(key_id="k2", secret_sha256=sha("t"), name="ci", scopes=["talents:read"])
        )
    )
    expect(issued, "OK")
    assert issued.decode_value(dict)["scopes"] == ["talents:read"]
    expect(
        ht.apply(
            IssueApiKey(key=NewApiKey(key_id="k2", secret_sha256=sha("t"), scopes=["talents:read"]))
        ),
        "VALIDATION",
        "key.keyId",
    )
    revoked = ht.apply(RevokeApiKey(key_id="k2"))
    expect(revoked, "OK")
    assert revoked.decode_value(dict)["revokedAt"] is not None
    again = ht.apply(RevokeApiKey(key_id="k2"))
    assert again.decode_value(dict) == revoked.decode_value(dict)  # a no-op, same record
    expect(ht.apply(RevokeApiKey(key_id="k9")), "NOT_FOUND", "keyId")
    events = ht.query(ListEvents(stream="tenant-T1")).decode_value(list)
    assert [e["type"] for e in events] == [
        "TenantCreated",
        "ApiKeyIssued",
        "ApiKeyIssued",
        "ApiKeyRevoked",
    ]
    assert ht.query(GetTenant()).decode_value(dict)["version"] == 4


def test_authorization_is_checked_at_commit(ht: Harness) -> None:
    ht.apply(
        IssueApiKey(key=NewApiKey(key_id="reader", secret_sha256=sha("r"), scopes=["talents:read"]))
    )
    ht.apply(
        IssueApiKey(
            key=NewApiKey(key_id="writer", secret_sha256=sha("w"), scopes=["talents:write"])
        )
    )
    ht.apply(
        IssueApiKey(
            key=NewApiKey(
                key_id="old", secret_sha256=sha("o"), scopes=ALL_SCOPES, expires_at_ms=T0_MS + 100
            )
        )
    )
    expect(ht.register("a1", actor="apikey:writer"), "OK")
    expect(ht.register("a2", actor="apikey:reader"), "FORBIDDEN")
    expect(ht.register("a3", actor="apikey:ghost"), "FORBIDDEN")
    expect(ht.register("a4", actor="apikey:old", issued_at_ms=T0_MS + 100), "FORBIDDEN")
    expect(ht.register("a5", actor="apikey:old", issued_at_ms=T0_MS + 99), "OK")
    expect(ht.register("a6", actor="someone"), "FORBIDDEN")
    expect(
        ht.apply(
            IssueApiKey(key=NewApiKey(key_id="x", secret_sha256=sha("x"), scopes=ALL_SCOPES)),
            actor="apikey:writer",
        ),
        "FORBIDDEN",
    )
    # A revocation at index i stops every later command of that key.
    expect(ht.apply(RevokeApiKey(key_id="writer"), actor="apikey:k1"), "OK")
    expect(ht.register("a7", actor="apikey:writer"), "FORBIDDEN")
    # An API key can never create a tenant.
    body = CreateTenant(
        slug="zz",
        name="Z",
        owner_key=NewApiKey(key_id="k", secret_sha256=sha("z"), scopes=ALL_SCOPES),
    )
    expect(ht.apply(body, "T9", actor="apikey:k1"), "FORBIDDEN")
    expect(ht.query(GetTalent(talent_id="a2")), "NOT_FOUND")


# ---------------------------------------------------------------------------- talents


def test_register_talent_full_profile(ht: Harness) -> None:
    result = ht.register(
        "a1",
        display_name="Ann Lee",
        legal_name="Ann Marie Lee",
        emails=["ann@example.com"],
        location=LocationIn(country="US", city="Austin"),
        languages=["en", "pt-BR"],
        niches=["skincare"],
        tags=["vip"],
        representation="roster",
        commission_bps=2000,
        accounts=[SocialAccountIn(platform="instagram", handle="Ann.Lee")],
    )
    expect(result, "OK")
    talent = ht.talent("a1")
    assert talent == result.decode_value(Talent)
    assert talent.version == 1
    assert talent.status == "active"
    assert talent.tenant_id == "T1"
    assert talent.location is not None and talent.location.city == "Austin"
    events = ht.query(ListEvents(stream="talent-a1")).decode_value(list)
    assert [(e["type"], e["version"]) for e in events] == [("TalentRegistered", 1)]
    assert events[0]["payload"]["displayName"] == "Ann Lee"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"display_name": ""}, "displayName"),
        ({"display_name": "x" * 201}, "displayName"),
        ({"legal_name": " "}, "legalName"),
        ({"emails": ["not-an-email"]}, "emails[0]"),
        ({"emails": [f"a{i}@x.io" for i in range(11)]}, "emails"),
        ({"location": LocationIn(country="usa")}, "location.country"),
        ({"location": LocationIn(country="US", city="")}, "location.city"),
        ({"languages": ["english"]}, "languages[0]"),
        ({"niches": ["ok", ""]}, "niches[1]"),
        ({"tags": ["t"] * 51}, "tags"),
        ({"representation": "agent"}, "representation"),
        ({"commission_bps": -1}, "commissionBps"),
        ({"accounts": [SocialAccountIn(platform="myspace", handle="a")]}, "accounts[0].platform"),
        ({"accounts": [SocialAccountIn(platform="x", handle="a b")]}, "accounts[0].handle"),
    ],
)
def test_register_talent_validation(ht: Harness, fields: dict[str, Any], field: str) -> None:
    expect(ht.register("a1", **fields), "VALIDATION", field)
    expect(ht.query(GetTalent(talent_id="a1")), "NOT_FOUND", "talentId")
    assert ht.query(ListEvents(stream="talent-a1")).decode_value(list) == []


def test_register_talent_id_is_checked(ht: Harness) -> None:
    expect(ht.register("a/1"), "VALIDATION", "talentId")
    expect(ht.register("a1"), "OK")
    expect(ht.register("a1"), "VALIDATION", "talentId")  # ids are never reused


def test_duplicate_handle_is_per_tenant_and_case_insensitive(ht: Harness) -> None:
    acct = [SocialAccountIn(platform="tiktok", handle="Glow")]
    expect(ht.register("a1", accounts=acct), "OK")
    expect(
        ht.register("a2", accounts=[SocialAccountIn(platform="tiktok", handle="glow")]),
        "DUPLICATE_HANDLE",
        "accounts[0].handle",
    )
    expect(ht.register("a2", accounts=[SocialAccountIn(platform="instagram", handle="glow")]), "OK")
    twice = [SocialAccountIn(platform="x", handle="q"), SocialAccountIn(platform="x", handle="Q")]
    expect(ht.register("a3", accounts=twice), "DUPLICATE_HANDLE", "accounts[1].handle")
    expect(ht.query(GetTalent(talent_id="a3")), "NOT_FOUND")
    # The same handle in another tenant is another talent entirely.
    expect(ht.create_tenant("T2", slug="other", key_id="k2"), "OK")
    expect(ht.register("b1", tenant="T2", accounts=acct), "OK")
    # Archiving releases the handle.
    expect(ht.apply(ArchiveTalent(talent_id="a1")), "OK")
    expect(ht.register("a4", accounts=acct), "OK")


def test_update_profile_versions_and_fields(ht: Harness) -> None:
    ht.register("a1", legal_name="Secret Name", commission_bps=1500)
    updated = ht.apply(
        UpdateProfile(talent_id="a1", expected_version=1, display_name="New", legal_name=None)
    )
    expect(updated, "OK")
    talent = ht.talent("a1")
    assert talent == updated.decode_value(Talent)
    assert (talent.version, talent.display_name, talent.legal_name) == (2, "New", None)
    assert talent.commission_bps == 1500  # UNSET fields are unchanged
    # Without expected_version the update is unconditional (the simulator's register write).
    expect(ht.apply(UpdateProfile(talent_id="a1", display_name="Newer")), "OK")
    expect(
        ht.apply(UpdateProfile(talent_id="a1", expected_version=2, display_name="Lost")),
        "VERSION_CONFLICT",
        "expectedVersion",
    )
    assert (ht.talent("a1").version, ht.talent("a1").display_name) == (3, "Newer")
    expect(ht.apply(UpdateProfile(talent_id="a1", status="paused")), "OK")
    expect(ht.apply(UpdateProfile(talent_id="a1", status="archived")), "VALIDATION", "status")
    expect(ht.apply(UpdateProfile(talent_id="a1", emails=["bad"])), "VALIDATION", "emails[0]")
    expect(ht.apply(UpdateProfile(talent_id="zz", display_name="x")), "NOT_FOUND", "talentId")
    events = ht.query(ListEvents(stream="talent-a1", after_version=1)).decode_value(list)
    assert [(e["type"], e["version"]) for e in events] == [
        ("ProfileUpdated", 2),
        ("ProfileUpdated", 3),
        ("ProfileUpdated", 4),
    ]


def test_archive_talent(ht: Harness) -> None:
    ht.register("a1")
    expect(
        ht.apply(ArchiveTalent(talent_id="a1", expected_version=7)),
        "VERSION_CONFLICT",
        "expectedVersion",
    )
    expect(ht.apply(ArchiveTalent(talent_id="a1", expected_version=1)), "OK")
    talent = ht.talent("a1")
    assert (talent.status, talent.version) == ("archived", 2)
    expect(ht.apply(ArchiveTalent(talent_id="a1")), "TALENT_ARCHIVED")
    expect(ht.apply(UpdateProfile(talent_id="a1", display_name="x")), "TALENT_ARCHIVED")
    expect(ht.apply(ArchiveTalent(talent_id="nope")), "NOT_FOUND", "talentId")


def test_list_talents_pages_with_cursor_across_flushes(ht: Harness) -> None:
    ids = [f"t{n:02d}" for n in range(7)]
    for talent_id in ids[:4]:
        ht.register(talent_id)
    asyncio.run(ht.store.flush())  # half the talents in a table, half in the memtable
    for talent_id in ids[4:]:
        ht.register(talent_id)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = ht.query(ListTalents(cursor=cursor, limit=3)).decode_value(dict)
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3
    exact = ht.query(ListTalents(limit=7)).decode_value(dict)
    assert exact["nextCursor"] is None
    assert len(exact["items"]) == 7
    expect(ht.query(ListTalents(limit=0)), "VALIDATION", "limit")
    expect(ht.query(ListTalents(limit=201)), "VALIDATION", "limit")
    expect(ht.query(ListTalents(cursor="!!!")), "VALIDATION", "cursor")
    expect(ht.query(ListTalents(cursor="dDAx/")), "VALIDATION", "cursor")


# ------------------------------------------------------------------------ exactly once


def test_retry_returns_cached_result_without_reapplying(ht: Harness) -> None:
    ht.register("a1")
    first = ht.apply(
        UpdateProfile(talent_id="a1", display_name="One"),
        client_id="c1",
        request_seq=1,
        fingerprint="f1",
    )
    expect(first, "OK")
    retry = ht.apply(
        UpdateProfile(talent_id="a1", display_name="One"),
        client_id="c1",
        request_seq=1,
        fingerprint="f1",
    )
    assert retry == first
    assert ht.talent("a1").version == 2  # applied once
    second = ht.apply(
        UpdateProfile(talent_id="a1", display_name="Two"),
        client_id="c1",
        request_seq=2,
        fingerprint="f2",
    )
    assert second.decode_value(Talent).version == 3
    expect(
        ht.apply(
            UpdateProfile(talent_id="a1", display_name="One"),
            client_id="c1",
            request_seq=1,
            fingerprint="f1",
        ),
        "STALE_REQUEST",
        "requestSeq",
    )
    expect(
        ht.apply(
            UpdateProfile(talent_id="a1", display_name="X"),
            client_id="c1",
            request_seq=2,
            fingerprint="other",
        ),
        "IDEMPOTENCY_KEY_REUSED",
    )
    # Sessions are per tenant: the same client id in another tenant is another session.
    ht.create_tenant("T2", slug="t2", key_id="k2")
    ht.register("b1", tenant="T2")
    expect(
        ht.apply(
            UpdateProfile(talent_id="b1", display_name="B"),
            "T2",
            client_id="c1",
            request_seq=1,
            fingerprint="f1",
        ),
        "OK",
    )
    assert ht.talent("b1", "T2").version == 2
    assert ht.talent("a1").version == 3


def test_errors_are_cached_too(ht: Harness) -> None:
    ht.register("a1")
    conflict = ht.apply(
        UpdateProfile(talent_id="a1", expected_version=5, display_name="x"),
        client_id="c",
        request_seq=1,
    )
    expect(conflict, "VERSION_CONFLICT")
    ht.apply(UpdateProfile(talent_id="a1", display_name="y"))
    ht.apply(UpdateProfile(talent_id="a1", display_name="y"))
    ht.apply(UpdateProfile(talent_id="a1", display_name="y"))
    # The talent is at version 4 now, but the retry answers what the first attempt got.
    assert (
        ht.apply(
            UpdateProfile(talent_id="a1", expected_version=5, display_name="x"),
            client_id="c",
            request_seq=1,
        )
        == conflict
    )


def test_bootstrap_retry_replays_instead_of_creating_a_second_tenant(h: Harness) -> None:
    first = h.create_tenant("T1", slug="acme")
    # The retry was handled by another node, which drew fresh ids for the tenant and key.
    body = CreateTenant(
        slug="acme",
        name="Tenant T1",
        owner_key=NewApiKey(key_id="kX", secret_sha256=sha("s"), scopes=ALL_SCOPES),
    )
    h2 = h.apply(body, "TX", client_id="boot", request_seq=1)
    expect(h2, "SLUG_TAKEN")  # without a session, it is a new request
    body3 = CreateTenant(
        slug="beta",
        name="B",
        owner_key=NewApiKey(key_id="kB", secret_sha256=sha("s"), scopes=ALL_SCOPES),
    )
    made = h.apply(body3, "TB", client_id="boot2", request_seq=1, fingerprint="p")
    body4 = CreateTenant(
        slug="beta",
        name="B",
        owner_key=NewApiKey(key_id="kC", secret_sha256=sha("s"), scopes=ALL_SCOPES),
    )
    replay = h.apply(body4, "TC", client_id="boot2", request_seq=1, fingerprint="p")
    assert replay == made
    assert replay.decode_value(dict)["tenant"]["id"] == "TB"
    expect(h.query(GetTenant(), "TC"), "NOT_FOUND")
    assert first.ok


def test_malformed_command_consumes_its_index(ht: Harness) -> None:
    result = ht.apply_bytes(b"\x93not a command")
    expect(result, "MALFORMED")
    assert ht.store.applied_index == ht.index
    ht.sm.apply_noop(ht.index + 1)
    assert ht.store.applied_index == ht.index + 1
    # Unknown kinds are malformed too, not crashes.
    from mox.statemachine.commands import Command

    odd = Command(
        client_id="", request_seq=0, tenant_id="T1", kind="DropTables", body=msgspec.Raw(b"\xc0")
    )
    ht.index += 1
    expect(ht.apply_bytes(msgspec.msgpack.encode(odd)), "MALFORMED")
    expect(decode_result(ht.sm.query(b"junk")), "MALFORMED")


def test_state_survives_flush_and_reopen(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    h = Harness(store)
    h.create_tenant()
    h.register("a1")
    h.apply(UpdateProfile(talent_id="a1", display_name="Kept"))
    asyncio.run(store.flush())
    asyncio.run(store.close())
    reopened = open_store(str(tmp_path))
    h2 = Harness(reopened)
    assert reopened.durable_applied_index == 3
    assert h2.talent("a1").display_name == "Kept"
    asyncio.run(reopened.close())


# ------------------------------------------------------------ determinism and isolation

TENANTS = ("A", "B")
TALENT_IDS = ("x1", "x2", "x3")

op_strategy = st.one_of(
    st.tuples(
        st.just("register"),
        st.sampled_from(TENANTS),
        st.sampled_from(TALENT_IDS),
        st.text(alphabet="abc", min_size=1, max_size=4),
    ),
    st.tuples(
        st.just("update"),
        st.sampled_from(TENANTS),
        st.sampled_from(TALENT_IDS),
        st.text(alphabet="abc", min_size=1, max_size=4),
    ),
    st.tuples(
        st.just("archive"), st.sampled_from(TENANTS), st.sampled_from(TALENT_IDS), st.just("")
    ),
)


def _run_ops(h: Harness, ops: list[tuple[str, str, str, str]]) -> list[Result]:
    results = [
        h.create_tenant("A", slug="ta", key_id="ka"),
        h.create_tenant("B", slug="tb", key_id="kb"),
    ]
    for kind, tenant, talent_id, name in ops:
        handle = [SocialAccountIn(platform="x", handle=name)]
        if kind == "register":
            results.append(
                h.register(
                    talent_id, tenant=tenant, display_name=f"{tenant}:{name}", accounts=handle
                )
            )
        elif kind == "update":
            results.append(
                h.apply(UpdateProfile(talent_id=talent_id, display_name=f"{tenant}:{name}"), tenant)
            )
        else:
            results.append(h.apply(ArchiveTalent(talent_id=talent_id), tenant))
    return results


def _snapshot_prefix(store: LsmStore, prefix: bytes) -> list[tuple[bytes, bytes]]:
    return list(store.scan_prefix(prefix))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(op_strategy, max_size=25))
def test_tenant_isolation_property(tmp_path: Path, ops: list[tuple[str, str, str, str]]) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        store = open_store(root)
        h = Harness(store)
        try:
            h.create_tenant("A", slug="ta", key_id="ka")
            h.create_tenant("B", slug="tb", key_id="kb")
            for kind, tenant, talent_id, name in ops:
                other = "B" if tenant == "A" else "A"
                before = _snapshot_prefix(store, f"t/{other}/".encode())
                if kind == "register":
                    h.register(
                        talent_id,
                        tenant=tenant,
                        display_name=f"{tenant}:{name}",
                        accounts=[SocialAccountIn(platform="x", handle=name)],
                    )
                elif kind == "update":
                    h.apply(
                        UpdateProfile(talent_id=talent_id, display_name=f"{tenant}:{name}"), tenant
                    )
                else:
                    h.apply(ArchiveTalent(talent_id=talent_id), tenant)
                # No command under one tenant touches another tenant's keys.
                assert _snapshot_prefix(store, f"t/{other}/".encode()) == before
            for tenant in TENANTS:
                page = h.query(ListTalents(limit=200), tenant).decode_value(dict)
                for item in page["items"]:
                    assert item["tenantId"] == tenant
                    assert item["displayName"].startswith(f"{tenant}:")
                for talent_id in TALENT_IDS:
                    got = h.query(GetTalent(talent_id=talent_id), tenant)
                    if got.ok:
                        assert got.decode_value(dict)["tenantId"] == tenant
                    for event in h.query(
                        ListEvents(stream=f"talent-{talent_id}"), tenant
                    ).decode_value(list):
                        assert event["tenantId"] == tenant
                registered = {op[2] for op in ops if op[0] == "register" and op[1] == tenant}
                assert {item["id"] for item in page["items"]} <= registered
        finally:
            asyncio.run(store.close())


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(op_strategy, max_size=20))
def test_apply_is_deterministic(tmp_path: Path, ops: list[tuple[str, str, str, str]]) -> None:
    runs: list[tuple[list[Result], list[tuple[bytes, bytes]]]] = []
    for _ in range(2):
        with tempfile.TemporaryDirectory(dir=tmp_path) as root:
            store = open_store(root)
            h = Harness(store)
            results = _run_ops(h, ops)
            runs.append((results, list(store.iter_all())))
            asyncio.run(store.close())
    assert runs[0] == runs[1]


def test_crash_then_replay_from_durable_index_rebuilds_the_same_state() -> None:
    """The runtime's recovery: the LSM keeps what was flushed; replaying the committed
    commands after its durable applied index (same indexes, same bytes) must rebuild exactly
    the pre-crash state, sessions included, over a simulated disk that drops unsynced data."""
    import random

    from mox.io.sim import SimDisk
    from mox.io.simloop import run_virtual

    async def scenario() -> None:
        disk = SimDisk(random.Random(7))
        store = await LsmStore.open(disk.filesystem("n1"))
        h = Harness(store)
        log: list[bytes] = []

        def commit(body: CommandBody, tenant: str = "T1", **envelope: Any) -> None:
            envelope.setdefault("issued_at_ms", T0_MS + len(log))
            data = encode_command(make_command(body, tenant_id=tenant, **envelope))
            log.append(data)
            h.apply_bytes(data)

        owner = NewApiKey(key_id="k1", secret_sha256=sha("s"), scopes=ALL_SCOPES)
        commit(
            CreateTenant(slug="acme", name="Acme", owner_key=owner), client_id="boot", request_seq=1
        )
        for n in range(6):
            commit(
                RegisterTalent(
                    talent_id=f"a{n}",
                    display_name=f"A{n}",
                    accounts=[SocialAccountIn(platform="x", handle=f"h{n}")],
                )
            )
        await store.flush()
        flushed_index = h.index
        for n in range(6):
            commit(
                UpdateProfile(talent_id=f"a{n}", display_name=f"B{n}"),
                client_id="c",
                request_seq=n + 1,
            )
        commit(ArchiveTalent(talent_id="a0"))
        before = list(store.iter_all())
        disk.crash()
        reopened = await LsmStore.open(disk.filesystem("n1"))
        assert reopened.durable_applied_index == flushed_index
        assert list(reopened.iter_all()) != before  # the crash lost the unflushed batches
        machine = StateMachine(reopened)
        for index in range(flushed_index + 1, len(log) + 1):
            machine.apply(index, log[index - 1])
        assert list(reopened.iter_all()) == before
        await reopened.close()

    run_virtual(scenario())


# ------------------------------------------------------------------- no poison commands
#
# A committed command is applied by every replica; one that made apply raise would stop
# the whole cluster. Arbitrary envelopes and bodies must all end in a result.

_text = st.one_of(
    st.sampled_from(["T1", "a1", "k1", "acme", "x", "", "a" * 64, "a" * 65, "t/T1"]),
    st.text(max_size=70),
)
_int = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_texts = st.lists(_text, max_size=4)
_location = st.builds(LocationIn, country=_text, region=st.none() | _text, city=st.none() | _text)
_accounts = st.lists(
    st.builds(
        SocialAccountIn, platform=st.sampled_from(["x", "tiktok", "?"]) | _text, handle=_text
    ),
    max_size=3,
)
_new_key = st.builds(
    NewApiKey,
    key_id=_text,
    secret_sha256=st.sampled_from([sha("s")]) | _text,
    name=_text,
    scopes=st.lists(st.sampled_from(ALL_SCOPES) | _text, max_size=4),
    expires_at_ms=st.none() | _int,
)
_settings = st.builds(
    TenantSettings,
    currency=_text,
    timezone=_text,
    default_commission_bps=_int,
    exclusivity_limit_n=_int,
    daily_send_cap=_int,
)
_bodies = st.one_of(
    st.builds(
        CreateTenant, slug=_text, name=_text, owner_key=_new_key, settings=st.none() | _settings
    ),
    st.builds(IssueApiKey, key=_new_key),
    st.builds(RevokeApiKey, key_id=_text),
    st.builds(
        RegisterTalent,
        talent_id=_text,
        display_name=_text,
        legal_name=st.none() | _text,
        emails=_texts,
        location=st.none() | _location,
        languages=_texts,
        niches=_texts,
        tags=_texts,
        representation=_text,
        commission_bps=st.none() | _int,
        accounts=_accounts,
    ),
    st.builds(
        UpdateProfile,
        talent_id=_text,
        expected_version=st.none() | _int,
        display_name=_text,
        legal_name=st.none() | _text,
        emails=_texts,
        location=st.none() | _location,
        commission_bps=st.none() | _int,
        status=_text,
    ),
    st.builds(ArchiveTalent, talent_id=_text, expected_version=st.none() | _int),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    commands=st.lists(
        st.tuples(
            _bodies,
            _text,
            _text,
            _int,
            _int,
            st.sampled_from(["admin", "apikey:k1", "apikey:"]) | _text,
        ),
        min_size=1,
        max_size=6,
    ),
    junk=st.binary(max_size=64),
)
def test_no_command_makes_apply_raise(
    ht: Harness, commands: list[tuple[Any, str, str, int, int, str]], junk: bytes
) -> None:
    from mox.statemachine.commands import Command

    ht.register("a1", accounts=[SocialAccountIn(platform="x", handle="x")])
    for body, tenant, client_id, seq, issued_at_ms, actor in commands:
        envelope = Command(
            client_id=client_id,
            request_seq=seq,
            tenant_id=tenant,
            kind=type(body).__name__,
            body=msgspec.Raw(msgspec.msgpack.encode(body)),
            issued_at_ms=issued_at_ms,
            actor=actor,
        )
        before = ht.index
        result = ht.apply_bytes(encode_command(envelope))
        assert result.code in (
            "OK",
            *__import__("mox.statemachine.commands", fromlist=["ERROR_CODES"]).ERROR_CODES,
        )
        assert ht.store.applied_index == before + 1
        if result.ok:
            assert tenant in ("T1",) or type(body).__name__ == "CreateTenant"
    before = ht.index
    assert ht.apply_bytes(junk).code in ERROR_CODES
    assert ht.store.applied_index == before + 1
    for tenant in ("T1", "x"):
        for query in (
            GetTenant(),
            GetTalent(talent_id="a1"),
            ListTalents(limit=5),
            ListEvents(stream="talent-a1"),
        ):
            ht.query(query, tenant)


def test_sessions_expire_after_their_ttl_and_are_pruned(ht: Harness) -> None:
    from mox.statemachine import keys
    from mox.statemachine.machine import SESSION_PRUNE_EVERY, SESSION_TTL_MS

    ht.register("a1")
    day = SESSION_TTL_MS

    def rename(name: str, client: str, seq: int, at_ms: int) -> Result:
        return ht.apply(
            UpdateProfile(talent_id="a1", display_name=name),
            client_id=client,
            request_seq=seq,
            issued_at_ms=at_ms,
        )

    def expiry_entries() -> list[bytes]:
        return [k for k, _ in ht.store.scan_prefix(keys.session_expiry_prefix("T1"))]

    expect(rename("One", "c1", 1, T0_MS), "OK")
    expect(rename("Two", "c1", 2, T0_MS + 1000), "OK")
    # One expiry entry per session: the update moved it rather than adding one.
    assert expiry_entries() == [keys.session_expiry_key("T1", T0_MS + 1000 + day, "c1")]
    expect(rename("Other", "c2", 1, T0_MS + 2000), "OK")
    # Within the TTL a retry is answered from the session, however many commands pass.
    while (ht.index + 1) % SESSION_PRUNE_EVERY != 0:
        ht.apply(UpdateProfile(talent_id="a1", display_name="filler"), issued_at_ms=T0_MS + day)
    version = ht.talent("a1").version
    assert rename("Two", "c1", 2, T0_MS + day).decode_value(Talent).version == 3  # cached
    assert ht.talent("a1").version == version
    # Past c1's TTL (but not c2's), the next pruning index deletes c1's session only.
    while (ht.index + 1) % SESSION_PRUNE_EVERY != 0:
        ht.apply(
            UpdateProfile(talent_id="a1", display_name="filler"), issued_at_ms=T0_MS + 1500 + day
        )
    ht.apply(UpdateProfile(talent_id="a1", display_name="pruner"), issued_at_ms=T0_MS + 1500 + day)
    assert ht.store.get(keys.session_key("T1", "c1")) is None
    assert ht.store.get(keys.session_key("T1", "c2")) is not None
    assert expiry_entries() == [keys.session_expiry_key("T1", T0_MS + 2000 + day, "c2")]
    # So a retry that late is a new request: it applies again.
    late = rename("Two", "c1", 2, T0_MS + 1600 + day)
    assert late.decode_value(Talent).version == ht.talent("a1").version
