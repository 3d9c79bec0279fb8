"""JSON bodies of the API. Requests refuse unknown fields (a typo must not be silently
ignored); the state machine re-validates every value, so request types only fix the shape.
Response types are what the API returns and what the client decodes; the OpenAPI document
is generated from all of them."""

from __future__ import annotations

from typing import Any

import msgspec

from mox.statemachine import LocationIn, SocialAccountIn, TenantSettings
from mox.statemachine.model import Talent, Tenant


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


class MemberChangeRequest(_Request, frozen=True):
    """`{"add": id}` or `{"remove": id}`: one server at a time (exactly one of the two)."""

    add: int | None = None
    remove: int | None = None


# ------------------------------------------------------------------------------ responses


class _Response(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    pass


class ApiKeyCreated(_Response, frozen=True):
    """An API key as users see it (never its hash)."""

    id: str
    prefix: str
    name: str
    scopes: list[str]
    created_at: str
    expires_at_ms: int | None = None
    revoked_at: str | None = None
    # The full key: present only in the response that created it.
    key: str | None = None


class TenantCreated(_Response, frozen=True):
    tenant: Tenant
    api_key: ApiKeyCreated


class TalentPage(_Response, frozen=True):
    items: list[Talent]
    next_cursor: str | None


class EventOut(_Response, frozen=True):
    """An event as the API shows it: the DOMAIN envelope with its payload as JSON."""

    event_id: str
    tenant_id: str
    stream: str
    version: int
    type: str
    occurred_at: str
    actor: str
    causation_id: str
    correlation_id: str
    payload: Any


class EventList(_Response, frozen=True):
    items: list[EventOut]


class Health(_Response, frozen=True):
    status: str
    node_id: int
    role: str
    term: int
    leader_id: int | None
    commit_index: int
    applied_index: int
    last_index: int
    snapshot_index: int
    replication_lag_entries: dict[str, int]


class MemberProgress(_Response, frozen=True):
    """A member as the leader sees its replication (reported by the leader only)."""

    match_index: int
    lag_entries: int


class Membership(_Response, frozen=True):
    """The cluster configuration as one node knows it.

    `members` is the latest configuration in this node's log; `committed` says whether its
    entry is committed (else `committedMembers` is the configuration still in force for
    commits known here, and a change is in progress). `progress` is present on the leader.
    """

    node_id: int
    role: str
    term: int
    leader_id: int | None
    members: list[int]
    committed: bool
    committed_members: list[int]
    config_index: int
    # Where `members` comes from: "log" (a configuration entry, at config_index), "snapshot"
    # (the snapshot's configuration), "initial" (no entry, no snapshot: the members recorded
    # in the superblock when the data directory was created), "joining" (the same, for a
    # node started empty with --join: it is not among them and waits to be added).
    config_source: str
    commit_index: int
    # Ids in cluster.nodes (they have an address) that are not members now.
    non_members: list[int]
    progress: dict[str, MemberProgress] | None = None


class MemberChangeResult(_Response, frozen=True):
    """The answer to a change: the configuration after it, committed and applied on the
    leader. `alreadyApplied` is true when the configuration already had the requested shape
    (a retry of a change that went through): nothing was appended."""

    op: str
    node_id: int
    already_applied: bool
    members: list[int]
    config_index: int
    leader_id: int


class Problem(_Response, frozen=True, omit_defaults=True):
    """RFC 7807 problem details, plus Mox's `code`, `field`, `requestId` and `leader`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str
    field: str | None = None
    leader: str | None = None


RESPONSE_TYPES: tuple[type[Any], ...] = (
    ApiKeyCreated,
    TenantCreated,
    TalentPage,
    EventList,
    Health,
    Membership,
    MemberChangeResult,
    Problem,
    Tenant,
    Talent,
)
REQUEST_TYPES: tuple[type[Any], ...] = (
    CreateTenantRequest,
    IssueKeyRequest,
    RegisterTalentRequest,
    PatchTalentRequest,
    MemberChangeRequest,
)
