"""JSON request bodies. Unknown fields are refused (a typo must not be silently ignored);
the state machine re-validates every value, so these only fix the shape and types."""

from __future__ import annotations

import msgspec

from mox.statemachine import LocationIn, SocialAccountIn, TenantSettings


class _Request(
    msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True, frozen=True
):
    pass


class CreateTenantRequest(_Request, frozen=True):
    slug: str
    name: str
    settings: TenantSettings | None = None


class IssueKeyRequest(_Request, frozen=True):
    name: str = "default"
    scopes: list[str] = msgspec.field(default_factory=lambda: ["talents:read", "talents:write"])
    expires_at_ms: int | None = None


class RegisterTalentRequest(_Request, frozen=True):
    display_name: str
    legal_name: str | None = None
    emails: list[str] = msgspec.field(default_factory=list)
    location: LocationIn | None = None
    languages: list[str] = msgspec.field(default_factory=list)
    niches: list[str] = msgspec.field(default_factory=list)
    tags: list[str] = msgspec.field(default_factory=list)
    representation: str = "prospect"
    commission_bps: int | None = None
    accounts: list[SocialAccountIn] = msgspec.field(default_factory=list)


class PatchTalentRequest(_Request, frozen=True):
    expected_version: int | None = None
    display_name: str | msgspec.UnsetType = msgspec.UNSET
    legal_name: str | msgspec.UnsetType | None = msgspec.UNSET
    emails: list[str] | msgspec.UnsetType = msgspec.UNSET
    location: LocationIn | msgspec.UnsetType | None = msgspec.UNSET
    languages: list[str] | msgspec.UnsetType = msgspec.UNSET
    niches: list[str] | msgspec.UnsetType = msgspec.UNSET
    tags: list[str] | msgspec.UnsetType = msgspec.UNSET
    representation: str | msgspec.UnsetType = msgspec.UNSET
    commission_bps: int | msgspec.UnsetType | None = msgspec.UNSET
    status: str | msgspec.UnsetType = msgspec.UNSET
