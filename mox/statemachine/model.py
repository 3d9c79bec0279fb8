"""Aggregates, events and sessions as the state machine stores them in the LSM.

Field names are snake_case in Python and camelCase on every wire (msgpack in the store,
JSON in the API), so one struct serves storage and the API without a mapping layer.
Timestamps are ISO-8601 UTC strings derived from the command's `issued_at_ms`, which the
API node assigned before proposing: nothing here reads a clock.
"""

from __future__ import annotations

import msgspec

PLATFORMS: tuple[str, ...] = ("instagram", "tiktok", "youtube", "twitch", "x")
REPRESENTATIONS: tuple[str, ...] = ("roster", "prospect")
TALENT_STATUSES: tuple[str, ...] = ("active", "paused", "archived")

# Scopes an API key can carry. `tenant:admin` manages keys; the talent scopes gate the
# talent endpoints. The key issued at bootstrap carries all of them.
SCOPES: tuple[str, ...] = ("tenant:admin", "talents:read", "talents:write")


class TenantSettings(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    currency: str = "USD"
    timezone: str = "UTC"
    default_commission_bps: int = 0
    exclusivity_limit_n: int = 1
    daily_send_cap: int = 200


class Tenant(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    id: str
    slug: str
    name: str
    status: str
    settings: TenantSettings
    version: int
    created_at: str
    updated_at: str


class ApiKey(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """An API key. Only the sha256 of its secret is stored; the secret is shown once."""

    id: str
    tenant_id: str
    prefix: str
    secret_sha256: str
    name: str
    scopes: list[str]
    created_at: str
    expires_at_ms: int | None = None
    revoked_at: str | None = None


class Location(msgspec.Struct, rename="camel", frozen=True, kw_only=True, omit_defaults=True):
    country: str
    region: str | None = None
    city: str | None = None


class SocialAccount(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    platform: str
    handle: str


class Talent(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    id: str
    tenant_id: str
    version: int
    display_name: str
    legal_name: str | None
    emails: list[str]
    location: Location | None
    languages: list[str]
    niches: list[str]
    tags: list[str]
    representation: str
    commission_bps: int | None
    status: str
    accounts: list[SocialAccount]
    created_at: str
    updated_at: str


class Event(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """The DOMAIN event envelope. `payload` is the msgpack of the event's body."""

    event_id: str
    tenant_id: str
    stream: str
    version: int
    type: str
    occurred_at: str
    actor: str
    causation_id: str
    correlation_id: str
    payload: msgspec.Raw


class Session(msgspec.Struct, array_like=True, frozen=True):
    """The exactly-once record of one client: its last applied seq and that result.

    It expires `SESSION_TTL_MS` after its last command's issue time (see machine.py)."""

    last_seq: int
    fingerprint: str
    result: bytes
    expires_at_ms: int = 0
