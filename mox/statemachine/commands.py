"""Commands, queries and results: the bytes that go through the Raft log and back.

A command is an envelope `Command(client_id, request_seq, tenant_id, kind, body)` whose
`body` is the msgpack of the struct named by `kind`. Everything the state machine needs to
apply it deterministically is inside: ids of new aggregates, the issue time, the actor.
The API node assigns those before proposing, so every replica applies the same bytes to
the same effect.

A query is `Query(tenant_id, kind, body)`; a result is `Result(code, value, field, detail)`
with `code == "OK"` or a domain error code. Both travel as msgpack bytes.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from mox.statemachine.model import TenantSettings

# ---------------------------------------------------------------------------- error codes

OK: Final = "OK"
VALIDATION: Final = "VALIDATION"
NOT_FOUND: Final = "NOT_FOUND"
VERSION_CONFLICT: Final = "VERSION_CONFLICT"
SLUG_TAKEN: Final = "SLUG_TAKEN"
DUPLICATE_HANDLE: Final = "DUPLICATE_HANDLE"
TALENT_ARCHIVED: Final = "TALENT_ARCHIVED"
FORBIDDEN: Final = "FORBIDDEN"
STALE_REQUEST: Final = "STALE_REQUEST"
IDEMPOTENCY_KEY_REUSED: Final = "IDEMPOTENCY_KEY_REUSED"
MALFORMED: Final = "MALFORMED"
TENANT_LIMIT: Final = "TENANT_LIMIT"

ERROR_CODES: Final = (
    VALIDATION,
    NOT_FOUND,
    VERSION_CONFLICT,
    SLUG_TAKEN,
    DUPLICATE_HANDLE,
    TALENT_ARCHIVED,
    FORBIDDEN,
    STALE_REQUEST,
    IDEMPOTENCY_KEY_REUSED,
    MALFORMED,
    TENANT_LIMIT,
)

# The actor of commands proposed by the platform operator (the admin token) or by the
# simulator; any other actor is `apikey:<key id>` and is re-checked at apply time.
ACTOR_ADMIN: Final = "admin"
ACTOR_APIKEY_PREFIX: Final = "apikey:"


class _Body(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True, frozen=True):
    pass


# ------------------------------------------------------------------------- command bodies


class NewApiKey(_Body, frozen=True):
    """A key to create. `secret_sha256` is the hex sha256 of the secret the API generated."""

    key_id: str
    secret_sha256: str
    name: str = "default"
    scopes: list[str] = msgspec.field(default_factory=list)
    expires_at_ms: int | None = None


class CreateTenant(_Body, frozen=True):
    """Create a tenant (its id is the envelope's tenant_id) with its first, owner API key."""

    slug: str
    name: str
    owner_key: NewApiKey
    settings: TenantSettings | None = None
    # The cluster-wide tenant limit (`limits.max_tenants`) of the node that accepted the
    # request. It travels in the command, so every replica applies the same rule whatever
    # its own config says. None (entries written before the limit existed): no limit.
    max_tenants: int | None = None


class IssueApiKey(_Body, frozen=True):
    key: NewApiKey


class RevokeApiKey(_Body, frozen=True):
    key_id: str


class SocialAccountIn(_Body, frozen=True):
    platform: str
    handle: str


class LocationIn(_Body, frozen=True):
    country: str
    region: str | None = None
    city: str | None = None


class RegisterTalent(_Body, frozen=True):
    talent_id: str
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


class UpdateProfile(_Body, frozen=True, omit_defaults=True):
    """Change the given fields (UNSET = unchanged, None = clear a nullable field).

    With `expected_version` set, the update applies only if the talent is at that version.
    """

    talent_id: str
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


class ArchiveTalent(_Body, frozen=True):
    talent_id: str
    expected_version: int | None = None


CommandBody = (
    CreateTenant | IssueApiKey | RevokeApiKey | RegisterTalent | UpdateProfile | ArchiveTalent
)

COMMAND_KINDS: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        CreateTenant,
        IssueApiKey,
        RevokeApiKey,
        RegisterTalent,
        UpdateProfile,
        ArchiveTalent,
    )
}


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope proposed through consensus.

    `request_seq == 0` opts out of deduplication (a request without an idempotency key);
    otherwise (client_id, request_seq) is applied at most once per tenant.
    `fingerprint` identifies the request the seq was bound to, so reusing an idempotency
    key for a different request is an error rather than a silent replay.
    """

    client_id: str
    request_seq: int
    tenant_id: str
    kind: str
    body: msgspec.Raw
    command_id: str = ""
    issued_at_ms: int = 0
    actor: str = ACTOR_ADMIN
    correlation_id: str = ""
    fingerprint: str = ""


_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(Command)
_body_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
    kind: msgspec.msgpack.Decoder(cls) for kind, cls in COMMAND_KINDS.items()
}


def make_command(
    body: CommandBody,
    *,
    tenant_id: str,
    client_id: str = "",
    request_seq: int = 0,
    command_id: str = "",
    issued_at_ms: int = 0,
    actor: str = ACTOR_ADMIN,
    correlation_id: str = "",
    fingerprint: str = "",
) -> Command:
    """Wrap a command body in its envelope (kind is the body's class name)."""
    kind = type(body).__name__
    assert kind in COMMAND_KINDS, kind
    assert request_seq >= 0, request_seq
    return Command(
        client_id=client_id,
        request_seq=request_seq,
        tenant_id=tenant_id,
        kind=kind,
        body=msgspec.Raw(_encoder.encode(body)),
        command_id=command_id,
        issued_at_ms=issued_at_ms,
        actor=actor,
        correlation_id=correlation_id,
        fingerprint=fingerprint,
    )


def encode_command(command: Command) -> bytes:
    return _encoder.encode(command)


class MalformedError(Exception):
    """Bytes that do not decode to a command, query or result; `detail` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def decode_command(data: bytes) -> tuple[Command, CommandBody]:
    """The envelope and its typed body. Raises MalformedError, never anything else."""
    try:
        command = _command_decoder.decode(data)
        decoder = _body_decoders.get(command.kind)
        if decoder is None:
            raise MalformedError(f"unknown command kind {command.kind!r}")
        body: CommandBody = decoder.decode(command.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedError(str(exc)) from None
    return command, body


# -------------------------------------------------------------------------------- queries


class GetTenant(_Body, frozen=True):
    pass


class GetTalent(_Body, frozen=True):
    talent_id: str


class ListTalents(_Body, frozen=True):
    """A page of talents in id order, after the opaque `cursor` of the previous page."""

    cursor: str | None = None
    limit: int = 50


class GetApiKey(_Body, frozen=True):
    key_id: str


class ListEvents(_Body, frozen=True):
    """Events of one stream (e.g. "talent-<id>") with version > after_version."""

    stream: str
    after_version: int = 0
    limit: int = 100


QueryBody = GetTenant | GetTalent | ListTalents | GetApiKey | ListEvents

QUERY_KINDS: Final[dict[str, type[Any]]] = {
    cls.__name__: cls for cls in (GetTenant, GetTalent, ListTalents, GetApiKey, ListEvents)
}

_query_body_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
    kind: msgspec.msgpack.Decoder(cls) for kind, cls in QUERY_KINDS.items()
}


class Query(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    kind: str
    body: msgspec.Raw


_query_decoder = msgspec.msgpack.Decoder(Query)


def encode_query(tenant_id: str, body: QueryBody) -> bytes:
    kind = type(body).__name__
    assert kind in QUERY_KINDS, kind
    return _encoder.encode(
        Query(tenant_id=tenant_id, kind=kind, body=msgspec.Raw(_encoder.encode(body)))
    )


def decode_query(data: bytes) -> tuple[Query, QueryBody]:
    try:
        query = _query_decoder.decode(data)
        decoder = _query_body_decoders.get(query.kind)
        if decoder is None:
            raise MalformedError(f"unknown query kind {query.kind!r}")
        body: QueryBody = decoder.decode(query.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedError(str(exc)) from None
    return query, body


# -------------------------------------------------------------------------------- results

_NIL: Final = b"\xc0"  # msgpack nil


class Result(msgspec.Struct, frozen=True, array_like=True):
    """`code` is OK or an error code; `value` the msgpack of the payload; `field` names the
    offending input field of a VALIDATION error (camelCase, dotted for nested fields)."""

    code: str
    value: msgspec.Raw = msgspec.Raw(_NIL)
    field: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.code == OK

    def decode_value(self, type_: type[Any]) -> Any:
        """The payload decoded as `type_` (a struct, or e.g. dict[str, Any])."""
        assert self.ok, self.code
        return msgspec.msgpack.decode(self.value, type=type_)


class TalentPage(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    items: list[Any]
    next_cursor: str | None


class TenantCreated(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    tenant: Any
    api_key: Any


_result_decoder = msgspec.msgpack.Decoder(Result)


def ok_result(value: object = None) -> bytes:
    return _encoder.encode(Result(OK, msgspec.Raw(_encoder.encode(value))))


def error_result(code: str, detail: str, field: str = "") -> bytes:
    assert code in ERROR_CODES, code
    assert detail, code
    return _encoder.encode(Result(code, msgspec.Raw(_NIL), field, detail))


def decode_result(data: bytes) -> Result:
    try:
        return _result_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedError(str(exc)) from None
