"""The application state machine: committed commands in, one LSM write batch each.

Theory of operation. `apply(index, command)` runs on every replica for every committed
entry, in log order, and must give the same result and the same writes everywhere:

1. decode the envelope (bytes that do not decode still consume the index: MALFORMED);
2. exactly-once: a (client_id, request_seq) already applied returns its cached result,
   an older seq is STALE_REQUEST; seq 0 opts out;
3. authorize at commit: an API-key actor must still be unrevoked, unexpired and scoped
   for the command at this log position (a revocation at index i stops every later
   command of that key, on every replica);
4. validate and decide against the current state, producing events and new state;
5. write events + aggregates + indexes + the session record in ONE `write_batch`
   carrying `applied_index=index`, so a crash never leaves half a command applied.

Nothing here reads a clock or a random source: times and ids come in the command. Every
key read or written is under the command's tenant (see `keys`), except the slug registry
and the operator's sessions, which CreateTenant alone touches.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any, Final, Protocol

import msgspec

from mox.statemachine import keys
from mox.statemachine.commands import (
    ACTOR_ADMIN,
    ACTOR_APIKEY_PREFIX,
    DUPLICATE_HANDLE,
    FORBIDDEN,
    IDEMPOTENCY_KEY_REUSED,
    MALFORMED,
    NOT_FOUND,
    SLUG_TAKEN,
    STALE_REQUEST,
    TALENT_ARCHIVED,
    TENANT_LIMIT,
    VALIDATION,
    VERSION_CONFLICT,
    ArchiveTalent,
    Command,
    CommandBody,
    CreateTenant,
    GetApiKey,
    GetTalent,
    GetTenant,
    IssueApiKey,
    ListEvents,
    ListTalents,
    LocationIn,
    MalformedError,
    NewApiKey,
    QueryBody,
    RegisterTalent,
    RevokeApiKey,
    SocialAccountIn,
    TalentPage,
    TenantCreated,
    UpdateProfile,
    decode_command,
    decode_query,
    error_result,
    ok_result,
)
from mox.statemachine.model import (
    PLATFORMS,
    REPRESENTATIONS,
    SCOPES,
    ApiKey,
    Event,
    Location,
    Session,
    SocialAccount,
    Talent,
    Tenant,
    TenantSettings,
)

Op = tuple[bytes, bytes | None]


class StateStore(Protocol):
    """What the state machine needs of `mox.storage.lsm.LsmStore`."""

    def write_batch(self, ops: list[tuple[bytes, bytes | None]], applied_index: int) -> int: ...

    def get(self, key: bytes, snapshot: Any = None) -> bytes | None: ...

    def scan_prefix(
        self,
        prefix: bytes,
        snapshot: Any = None,
        start_after: bytes | None = None,
        limit: int | None = None,
    ) -> Iterable[tuple[bytes, bytes]]: ...


# Limits on what one command may carry: every list and string is bounded.
NAME_MAX_CHARS: Final = 200
LIST_MAX_ITEMS: Final = 50
EMAILS_MAX_ITEMS: Final = 10
ACCOUNTS_MAX_ITEMS: Final = 10
TAG_MAX_CHARS: Final = 64
EMAIL_MAX_CHARS: Final = 254
LIST_LIMIT_MAX: Final = 200
EVENTS_LIMIT_MAX: Final = 1000
BPS_MAX: Final = 10_000
ISSUED_AT_MS_MAX: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# Exactly-once holds for retries within this long of a client's last command (like the
# 24 h of common idempotency-key APIs); older sessions are pruned.
SESSION_TTL_MS: Final = 24 * 3600 * 1000
SESSION_PRUNE_EVERY: Final = 8
SESSION_PRUNE_MAX: Final = 16

SLUG_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
EMAIL_RE: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
COUNTRY_RE: Final = re.compile(r"[A-Z]{2}")
CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
LANGUAGE_RE: Final = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")
SHA256_HEX_RE: Final = re.compile(r"[0-9a-f]{64}")

# The scope a command needs when its actor is an API key.
REQUIRED_SCOPE: Final[dict[str, str]] = {
    "IssueApiKey": "tenant:admin",
    "RevokeApiKey": "tenant:admin",
    "RegisterTalent": "talents:write",
    "UpdateProfile": "talents:write",
    "ArchiveTalent": "talents:write",
}

_enc = msgspec.msgpack.Encoder()
_tenant_dec = msgspec.msgpack.Decoder(Tenant)
_talent_dec = msgspec.msgpack.Decoder(Talent)
_key_dec = msgspec.msgpack.Decoder(ApiKey)
_session_dec = msgspec.msgpack.Decoder(Session)
_event_dec = msgspec.msgpack.Decoder(Event)
_count_dec = msgspec.msgpack.Decoder(int)
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class Rejected(Exception):
    """A command or query refused with a domain error code (control flow inside apply)."""

    def __init__(self, code: str, detail: str, field: str = "") -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


def iso_from_ms(ms: int) -> str:
    """Deterministic ISO-8601 UTC with milliseconds (integer arithmetic, no float)."""
    seconds, millis = divmod(ms, 1000)
    return f"{_iso_second(seconds)}{millis:03d}Z"


@functools.lru_cache(maxsize=256)
def _iso_second(seconds: int) -> str:
    # Every applied command formats its issue time: commands of one second share this
    # (strftime was ~2 us of each apply, on the leader and on every follower). A pure
    # function of its argument, so the cache cannot change a result.
    return (_EPOCH + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.")


def encode_cursor(talent_id: str) -> str:
    return base64.urlsafe_b64encode(talent_id.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        talent_id = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise Rejected(VALIDATION, "cursor is not one this API returned", "cursor") from None
    if not keys.is_id(talent_id):
        raise Rejected(VALIDATION, "cursor is not one this API returned", "cursor")
    return talent_id


# ----------------------------------------------------------------------------- validation


def _require(ok: bool, field: str, detail: str) -> None:
    if not ok:
        raise Rejected(VALIDATION, detail, field)


def _check_id(value: str, field: str) -> None:
    _require(keys.is_id(value), field, "must be 1-64 characters of [0-9A-Za-z_-]")


def _check_text(value: str, field: str, max_chars: int = NAME_MAX_CHARS) -> None:
    _require(value.strip() != "", field, "must not be empty")
    _require(len(value) <= max_chars, field, f"must be at most {max_chars} characters")


def _check_bps(value: int | None, field: str) -> None:
    if value is not None:
        _require(0 <= value <= BPS_MAX, field, f"must be between 0 and {BPS_MAX}")


def _check_tags(values: list[str], field: str) -> None:
    _require(len(values) <= LIST_MAX_ITEMS, field, f"must have at most {LIST_MAX_ITEMS} items")
    for i, value in enumerate(values):
        _check_text(value, f"{field}[{i}]", TAG_MAX_CHARS)


def _check_emails(values: list[str]) -> None:
    _require(
        len(values) <= EMAILS_MAX_ITEMS, "emails", f"must have at most {EMAILS_MAX_ITEMS} items"
    )
    for i, value in enumerate(values):
        ok = len(value) <= EMAIL_MAX_CHARS and EMAIL_RE.fullmatch(value) is not None
        _require(ok, f"emails[{i}]", "must be an email address")


def _check_languages(values: list[str]) -> None:
    _require(
        len(values) <= LIST_MAX_ITEMS, "languages", f"must have at most {LIST_MAX_ITEMS} items"
    )
    for i, value in enumerate(values):
        _require(
            LANGUAGE_RE.fullmatch(value) is not None,
            f"languages[{i}]",
            "must be a language tag like 'en' or 'pt-BR'",
        )


def _check_location(location: LocationIn) -> Location:
    _require(
        COUNTRY_RE.fullmatch(location.country) is not None,
        "location.country",
        "must be an ISO 3166 alpha-2 code like 'US'",
    )
    if location.region is not None:
        _check_text(location.region, "location.region")
    if location.city is not None:
        _check_text(location.city, "location.city")
    return Location(country=location.country, region=location.region, city=location.city)


def _check_representation(value: str) -> None:
    _require(
        value in REPRESENTATIONS, "representation", "must be one of " + ", ".join(REPRESENTATIONS)
    )


def _check_accounts(accounts: list[SocialAccountIn]) -> list[SocialAccount]:
    _require(
        len(accounts) <= ACCOUNTS_MAX_ITEMS,
        "accounts",
        f"must have at most {ACCOUNTS_MAX_ITEMS} items",
    )
    seen: list[tuple[str, str]] = []
    result: list[SocialAccount] = []
    for i, account in enumerate(accounts):
        _require(
            account.platform in PLATFORMS,
            f"accounts[{i}].platform",
            "must be one of " + ", ".join(PLATFORMS),
        )
        _require(
            keys.HANDLE_RE.fullmatch(account.handle) is not None,
            f"accounts[{i}].handle",
            "must be 1-100 characters of [0-9A-Za-z._-]",
        )
        pair = (account.platform, account.handle.lower())
        if pair in seen:
            raise Rejected(
                DUPLICATE_HANDLE,
                f"{account.platform} handle {account.handle!r} is listed twice",
                f"accounts[{i}].handle",
            )
        seen.append(pair)
        result.append(SocialAccount(platform=account.platform, handle=account.handle))
    return result


def _check_new_key(key: NewApiKey, field: str) -> None:
    _check_id(key.key_id, f"{field}.keyId")
    _require(
        SHA256_HEX_RE.fullmatch(key.secret_sha256) is not None,
        f"{field}.secretSha256",
        "must be 64 lowercase hex digits",
    )
    _check_text(key.name, f"{field}.name")
    _require(len(key.scopes) > 0, f"{field}.scopes", "must name at least one scope")
    for i, scope in enumerate(key.scopes):
        _require(scope in SCOPES, f"{field}.scopes[{i}]", "must be one of " + ", ".join(SCOPES))
    _require(len(set(key.scopes)) == len(key.scopes), f"{field}.scopes", "must not repeat a scope")
    if key.expires_at_ms is not None:
        _require(key.expires_at_ms > 0, f"{field}.expiresAtMs", "must be positive")


def _check_settings(settings: TenantSettings) -> None:
    _require(
        CURRENCY_RE.fullmatch(settings.currency) is not None,
        "settings.currency",
        "must be an ISO 4217 code like 'USD'",
    )
    _check_text(settings.timezone, "settings.timezone", TAG_MAX_CHARS)
    _check_bps(settings.default_commission_bps, "settings.defaultCommissionBps")
    _require(settings.exclusivity_limit_n >= 1, "settings.exclusivityLimitN", "must be at least 1")
    _require(settings.daily_send_cap >= 0, "settings.dailySendCap", "must not be negative")


def key_is_usable(key: ApiKey, now_ms: int) -> bool:
    """A key authenticates only while unrevoked and unexpired."""
    if key.revoked_at is not None:
        return False
    return key.expires_at_ms is None or now_ms < key.expires_at_ms


class ApiKeyInfo(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """What a user may see of a key: never its hash."""

    id: str
    prefix: str
    name: str
    scopes: list[str]
    created_at: str
    expires_at_ms: int | None
    revoked_at: str | None


def key_info(key: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=key.id,
        prefix=key.prefix,
        name=key.name,
        scopes=key.scopes,
        created_at=key.created_at,
        expires_at_ms=key.expires_at_ms,
        revoked_at=key.revoked_at,
    )


# ------------------------------------------------------------------------- state machine


class _Apply:
    """The context of applying one command: its envelope, the reads, and the writes."""

    def __init__(self, store: StateStore, index: int, command: Command) -> None:
        self.store = store
        self.index = index
        self.command = command
        self.tenant_id = command.tenant_id
        self.now = iso_from_ms(command.issued_at_ms)
        self.ops: list[Op] = []
        self.events_count = 0

    def put(self, key: bytes, value: object) -> None:
        self.ops.append((key, _enc.encode(value)))

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))

    def emit(self, stream: str, version: int, event_type: str, payload: object) -> None:
        """Append one event of the DOMAIN envelope to `stream` at `version`."""
        assert version >= 1, version
        command = self.command
        if command.command_id:
            causation = command.command_id
        elif command.request_seq > 0:
            causation = f"{command.client_id}#{command.request_seq}"
        else:
            causation = f"entry-{self.index}"
        event = Event(
            # The log index is unique per committed entry, so (index, n) is a unique id.
            event_id=f"ev-{self.index}-{self.events_count}",
            tenant_id=self.tenant_id,
            stream=stream,
            version=version,
            type=event_type,
            occurred_at=self.now,
            actor=command.actor,
            causation_id=causation,
            correlation_id=command.correlation_id,
            payload=msgspec.Raw(_enc.encode(payload)),
        )
        self.events_count += 1
        self.put(keys.event_key(self.tenant_id, stream, version), event)


# The only commands that put an API key record (see _create_tenant, _issue_api_key,
# _revoke_api_key).
_KEY_WRITING_BODIES: Final = (CreateTenant, IssueApiKey, RevokeApiKey)


class StateMachine:
    """Applies committed commands to a state store and answers queries from it."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        # Counts the applied commands that may have changed an API key record, and
        # replacements of the whole store (an installed snapshot). The API caches verified
        # keys per epoch: while it is unchanged, every key record reads as it did.
        self.api_keys_epoch = 0

    # --------------------------------------------------------------------------- apply

    def apply(self, index: int, command: bytes) -> bytes:
        """Apply the command committed at `index`; returns an encoded `Result`.

        Never raises for bad input: a command that fails decoding, validation or a domain
        rule still consumes its index and returns an error result.
        """
        assert index >= 1, index
        try:
            envelope, body = decode_command(command)
        except MalformedError as exc:
            self.store.write_batch([], index)
            return error_result(MALFORMED, exc.detail)

        slot, cached = self._check_session(envelope)
        if cached is not None:
            self.store.write_batch([], index)
            return cached

        try:
            self._check_envelope(envelope)
        except Rejected as rejected:
            result = error_result(rejected.code, rejected.detail, rejected.field)
            self.store.write_batch(_session_ops(slot, envelope, result), index)
            return result
        prune_ops = self._prune_sessions(envelope, index)
        ctx = _Apply(self.store, index, envelope)
        try:
            self._authorize(envelope)
            result = self._dispatch(ctx, body)
        except Rejected as rejected:
            ctx.ops.clear()  # a rejected command changes nothing but its session record
            result = error_result(rejected.code, rejected.detail, rejected.field)
        self.store.write_batch(prune_ops + ctx.ops + _session_ops(slot, envelope, result), index)
        if isinstance(body, _KEY_WRITING_BODIES):
            # Whether or not it was rejected: conservative, and these commands are rare.
            self.api_keys_epoch += 1
        return result

    def note_store_replaced(self) -> None:
        """The store's whole content was replaced (a snapshot installed under it)."""
        self.api_keys_epoch += 1

    def apply_noop(self, index: int) -> None:
        """Record that the entry at `index` (a leader's no-op or a config change) is applied."""
        assert index >= 1, index
        self.store.write_batch([], index)

    def _check_session(self, command: Command) -> tuple[_SessionSlot | None, bytes | None]:
        """(the session to record this command in, a result to return instead of applying)."""
        if command.request_seq == 0:
            return None, None
        if command.request_seq < 0:
            return None, error_result(VALIDATION, "must not be negative", "requestSeq")
        client_bytes = len(command.client_id.encode())
        if not (0 < client_bytes <= keys.CLIENT_ID_MAX_BYTES):
            return None, error_result(
                VALIDATION, f"must be 1-{keys.CLIENT_ID_MAX_BYTES} bytes", "clientId"
            )
        scope = _session_scope(command)
        if scope == "":
            return None, error_result(
                VALIDATION, "must be 1-64 characters of [0-9A-Za-z_-]", "tenantId"
            )
        if scope is None:
            key = keys.admin_session_key(command.client_id)
        else:
            key = keys.session_key(scope, command.client_id)
        raw = self.store.get(key)
        if raw is None:
            return _SessionSlot(key, scope, command.client_id, None), None
        session = _session_dec.decode(raw)
        if command.request_seq == session.last_seq:
            if command.fingerprint != session.fingerprint:
                return None, error_result(
                    IDEMPOTENCY_KEY_REUSED,
                    "this idempotency key was used for a different request",
                    "Idempotency-Key",
                )
            return None, session.result
        if command.request_seq < session.last_seq:
            return None, error_result(
                STALE_REQUEST,
                f"request {command.request_seq} is older than the last applied {session.last_seq}",
                "requestSeq",
            )
        return _SessionSlot(key, scope, command.client_id, session), None

    def _prune_sessions(self, command: Command, index: int) -> list[Op]:
        """Delete a few sessions of the command's scope that expired before its issue time.

        Runs at every SESSION_PRUNE_EVERY-th index and deletes at most SESSION_PRUNE_MAX, so
        the work per command is bounded while pruning outpaces session creation (at most
        one per command). It depends only on the state, the index and the command: the same
        on every replica.
        """
        if index % SESSION_PRUNE_EVERY != 0:
            return []
        scope = _session_scope(command)
        if scope == "":
            return []
        prefix = keys.session_expiry_prefix(scope)
        keep = command.client_id if command.request_seq > 0 else None
        ops: list[Op] = []
        for key, _ in _bounded(
            self.store.scan_prefix(prefix, None, None, SESSION_PRUNE_MAX), SESSION_PRUNE_MAX
        ):
            rest = key[len(prefix) :]
            assert rest[keys.VERSION_DIGITS : keys.VERSION_DIGITS + 1] == b"/", key
            if int(rest[: keys.VERSION_DIGITS]) >= command.issued_at_ms:
                break
            ops.append((key, None))
            client_id = rest[keys.VERSION_DIGITS + 1 :].decode()
            if client_id != keep:  # the command's own session is rewritten below
                session_key = (
                    keys.admin_session_key(client_id)
                    if scope is None
                    else keys.session_key(scope, client_id)
                )
                ops.append((session_key, None))
        return ops

    def _check_envelope(self, command: Command) -> None:
        _check_id(command.tenant_id, "tenantId")
        # Bounded so that formatting it as a date can never fail on any replica.
        _require(
            0 <= command.issued_at_ms <= ISSUED_AT_MS_MAX,
            "issuedAtMs",
            "must be a time in years 1970-9999",
        )

    def _authorize(self, command: Command) -> None:
        """AuthzAtCommit: the actor must be allowed this command at this log position."""
        if command.actor == ACTOR_ADMIN:
            return
        if not command.actor.startswith(ACTOR_APIKEY_PREFIX) or command.kind == "CreateTenant":
            raise Rejected(FORBIDDEN, f"actor {command.actor!r} may not {command.kind}")
        key_id = command.actor[len(ACTOR_APIKEY_PREFIX) :]
        if not keys.is_id(key_id):
            raise Rejected(FORBIDDEN, "the API key is unknown")
        raw = self.store.get(keys.api_key_key(command.tenant_id, key_id))
        if raw is None:
            raise Rejected(FORBIDDEN, "the API key is unknown")
        key = _key_dec.decode(raw)
        if not key_is_usable(key, command.issued_at_ms):
            raise Rejected(FORBIDDEN, "the API key is revoked or expired")
        scope = REQUIRED_SCOPE[command.kind]
        if scope not in key.scopes:
            raise Rejected(FORBIDDEN, f"the API key lacks the scope {scope!r}")

    def _dispatch(self, ctx: _Apply, body: CommandBody) -> bytes:
        if isinstance(body, CreateTenant):
            return self._create_tenant(ctx, body)
        tenant = self._load_tenant(ctx.tenant_id)
        if isinstance(body, IssueApiKey):
            return self._issue_api_key(ctx, tenant, body)
        if isinstance(body, RevokeApiKey):
            return self._revoke_api_key(ctx, tenant, body)
        if isinstance(body, RegisterTalent):
            return self._register_talent(ctx, body)
        if isinstance(body, UpdateProfile):
            return self._update_profile(ctx, body)
        assert isinstance(body, ArchiveTalent), type(body)
        return self._archive_talent(ctx, body)

    # ------------------------------------------------------------------------- tenants

    def _load_tenant(self, tenant_id: str) -> Tenant:
        raw = self.store.get(keys.tenant_key(tenant_id))
        if raw is None:
            raise Rejected(NOT_FOUND, f"tenant {tenant_id} does not exist", "tenantId")
        return _tenant_dec.decode(raw)

    def _new_key(self, ctx: _Apply, key: NewApiKey) -> ApiKey:
        return ApiKey(
            id=key.key_id,
            tenant_id=ctx.tenant_id,
            prefix=keys.api_key_prefix(ctx.tenant_id, key.key_id),
            secret_sha256=key.secret_sha256,
            name=key.name,
            scopes=list(key.scopes),
            created_at=ctx.now,
            expires_at_ms=key.expires_at_ms,
        )

    def _create_tenant(self, ctx: _Apply, body: CreateTenant) -> bytes:
        _require(
            SLUG_RE.fullmatch(body.slug) is not None,
            "slug",
            "must be 2-63 characters of [a-z0-9-], starting with a letter or digit",
        )
        _check_text(body.name, "name")
        settings = body.settings if body.settings is not None else TenantSettings()
        _check_settings(settings)
        _check_new_key(body.owner_key, "ownerKey")
        if self.store.get(keys.slug_key(body.slug)) is not None:
            raise Rejected(SLUG_TAKEN, f"the slug {body.slug!r} is taken", "slug")
        if self.store.get(keys.tenant_key(ctx.tenant_id)) is not None:
            raise Rejected(VALIDATION, f"tenant {ctx.tenant_id} already exists", "tenantId")
        _require(
            body.max_tenants is None or body.max_tenants >= 1, "maxTenants", "must be at least 1"
        )
        count = self._tenant_count()
        if body.max_tenants is not None and count >= body.max_tenants:
            raise Rejected(
                TENANT_LIMIT,
                f"the cluster holds {count} tenants; its limit (limits.max_tenants) is "
                f"{body.max_tenants}",
            )
        tenant = Tenant(
            id=ctx.tenant_id,
            slug=body.slug,
            name=body.name,
            status="active",
            settings=settings,
            version=2,
            created_at=ctx.now,
            updated_at=ctx.now,
        )
        key = self._new_key(ctx, body.owner_key)
        stream = f"tenant-{ctx.tenant_id}"
        ctx.emit(
            stream, 1, "TenantCreated", {"slug": body.slug, "name": body.name, "settings": settings}
        )
        ctx.emit(stream, 2, "ApiKeyIssued", key_info(key))
        ctx.put(keys.slug_key(body.slug), ctx.tenant_id)
        ctx.put(keys.tenant_key(ctx.tenant_id), tenant)
        ctx.put(keys.api_key_key(ctx.tenant_id, key.id), key)
        ctx.put(keys.TENANT_COUNT_KEY, count + 1)
        return ok_result(TenantCreated(tenant=tenant, api_key=key_info(key)))

    def _tenant_count(self) -> int:
        raw = self.store.get(keys.TENANT_COUNT_KEY)
        if raw is not None:
            count = _count_dec.decode(raw)
            assert count >= 0, count
            return count
        # State written before the counter existed: every tenant has one slug key.
        return sum(1 for _ in self.store.scan_prefix(keys.SLUG_PREFIX))

    def _bump_tenant(self, ctx: _Apply, tenant: Tenant, event_type: str, payload: object) -> Tenant:
        bumped = msgspec.structs.replace(tenant, version=tenant.version + 1, updated_at=ctx.now)
        ctx.emit(f"tenant-{tenant.id}", bumped.version, event_type, payload)
        ctx.put(keys.tenant_key(tenant.id), bumped)
        return bumped

    def _issue_api_key(self, ctx: _Apply, tenant: Tenant, body: IssueApiKey) -> bytes:
        _check_new_key(body.key, "key")
        key_key = keys.api_key_key(ctx.tenant_id, body.key.key_id)
        if self.store.get(key_key) is not None:
            raise Rejected(VALIDATION, f"key {body.key.key_id} already exists", "key.keyId")
        key = self._new_key(ctx, body.key)
        self._bump_tenant(ctx, tenant, "ApiKeyIssued", key_info(key))
        ctx.put(key_key, key)
        return ok_result(key_info(key))

    def _revoke_api_key(self, ctx: _Apply, tenant: Tenant, body: RevokeApiKey) -> bytes:
        _check_id(body.key_id, "keyId")
        key_key = keys.api_key_key(ctx.tenant_id, body.key_id)
        raw = self.store.get(key_key)
        if raw is None:
            raise Rejected(NOT_FOUND, f"key {body.key_id} does not exist", "keyId")
        key = _key_dec.decode(raw)
        if key.revoked_at is not None:
            return ok_result(key_info(key))  # revoking twice is a no-op, not an error
        revoked = msgspec.structs.replace(key, revoked_at=ctx.now)
        self._bump_tenant(ctx, tenant, "ApiKeyRevoked", {"keyId": key.id})
        ctx.put(key_key, revoked)
        return ok_result(key_info(revoked))

    # ------------------------------------------------------------------------- talents

    def _load_talent(self, tenant_id: str, talent_id: str, snapshot: Any = None) -> Talent:
        _check_id(talent_id, "talentId")
        raw = self.store.get(keys.talent_key(tenant_id, talent_id), snapshot)
        if raw is None:
            raise Rejected(NOT_FOUND, f"talent {talent_id} does not exist", "talentId")
        return _talent_dec.decode(raw)

    def _register_talent(self, ctx: _Apply, body: RegisterTalent) -> bytes:
        _check_id(body.talent_id, "talentId")
        _check_text(body.display_name, "displayName")
        if body.legal_name is not None:
            _check_text(body.legal_name, "legalName")
        _check_emails(body.emails)
        location = _check_location(body.location) if body.location is not None else None
        _check_languages(body.languages)
        _check_tags(body.niches, "niches")
        _check_tags(body.tags, "tags")
        _check_representation(body.representation)
        _check_bps(body.commission_bps, "commissionBps")
        accounts = _check_accounts(body.accounts)
        talent_key = keys.talent_key(ctx.tenant_id, body.talent_id)
        if self.store.get(talent_key) is not None:
            raise Rejected(VALIDATION, f"talent {body.talent_id} already exists", "talentId")
        for i, account in enumerate(accounts):
            handle_key = keys.handle_key(ctx.tenant_id, account.platform, account.handle)
            owner = self.store.get(handle_key)
            if owner is not None:
                raise Rejected(
                    DUPLICATE_HANDLE,
                    f"{account.platform} handle {account.handle!r} belongs to another talent",
                    f"accounts[{i}].handle",
                )
            ctx.put(handle_key, body.talent_id)
        talent = Talent(
            id=body.talent_id,
            tenant_id=ctx.tenant_id,
            version=1,
            display_name=body.display_name,
            legal_name=body.legal_name,
            emails=list(body.emails),
            location=location,
            languages=list(body.languages),
            niches=list(body.niches),
            tags=list(body.tags),
            representation=body.representation,
            commission_bps=body.commission_bps,
            status="active",
            accounts=accounts,
            created_at=ctx.now,
            updated_at=ctx.now,
        )
        ctx.emit(f"talent-{talent.id}", 1, "TalentRegistered", body)
        ctx.put(talent_key, talent)
        return ok_result(talent)

    def _check_writable(self, talent: Talent, expected_version: int | None) -> None:
        if talent.status == "archived":
            raise Rejected(TALENT_ARCHIVED, f"talent {talent.id} is archived")
        if expected_version is not None and expected_version != talent.version:
            raise Rejected(
                VERSION_CONFLICT,
                f"talent {talent.id} is at version {talent.version}, not {expected_version}",
                "expectedVersion",
            )

    def _update_profile(self, ctx: _Apply, body: UpdateProfile) -> bytes:
        talent = self._load_talent(ctx.tenant_id, body.talent_id)
        self._check_writable(talent, body.expected_version)
        changes: dict[str, Any] = {}
        if body.display_name is not msgspec.UNSET:
            _check_text(body.display_name, "displayName")
            changes["display_name"] = body.display_name
        if body.legal_name is not msgspec.UNSET:
            if body.legal_name is not None:
                _check_text(body.legal_name, "legalName")
            changes["legal_name"] = body.legal_name
        if body.emails is not msgspec.UNSET:
            _check_emails(body.emails)
            changes["emails"] = list(body.emails)
        if body.location is not msgspec.UNSET:
            changes["location"] = (
                _check_location(body.location) if body.location is not None else None
            )
        if body.languages is not msgspec.UNSET:
            _check_languages(body.languages)
            changes["languages"] = list(body.languages)
        if body.niches is not msgspec.UNSET:
            _check_tags(body.niches, "niches")
            changes["niches"] = list(body.niches)
        if body.tags is not msgspec.UNSET:
            _check_tags(body.tags, "tags")
            changes["tags"] = list(body.tags)
        if body.representation is not msgspec.UNSET:
            _check_representation(body.representation)
            changes["representation"] = body.representation
        if body.commission_bps is not msgspec.UNSET:
            _check_bps(body.commission_bps, "commissionBps")
            changes["commission_bps"] = body.commission_bps
        if body.status is not msgspec.UNSET:
            _require(
                body.status in ("active", "paused"),
                "status",
                "must be active or paused (archive with DELETE)",
            )
            changes["status"] = body.status
        updated = msgspec.structs.replace(
            talent, version=talent.version + 1, updated_at=ctx.now, **changes
        )
        ctx.emit(f"talent-{talent.id}", updated.version, "ProfileUpdated", body)
        ctx.put(keys.talent_key(ctx.tenant_id, talent.id), updated)
        assert updated.version == talent.version + 1
        return ok_result(updated)

    def _archive_talent(self, ctx: _Apply, body: ArchiveTalent) -> bytes:
        talent = self._load_talent(ctx.tenant_id, body.talent_id)
        self._check_writable(talent, body.expected_version)
        archived = msgspec.structs.replace(
            talent, version=talent.version + 1, status="archived", updated_at=ctx.now
        )
        # An archived talent releases its handles so they can be registered again.
        for account in talent.accounts:
            ctx.delete(keys.handle_key(ctx.tenant_id, account.platform, account.handle))
        ctx.emit(f"talent-{talent.id}", archived.version, "TalentArchived", {"talentId": talent.id})
        ctx.put(keys.talent_key(ctx.tenant_id, talent.id), archived)
        return ok_result(archived)

    # --------------------------------------------------------------------------- query

    def query(self, query: bytes, snapshot: Any = None) -> bytes:
        """Answer a read-only query from the store (at `snapshot` if given).

        Every key read is under the query's tenant: a query cannot name another tenant's
        data, only fail to find it.
        """
        try:
            envelope, body = decode_query(query)
        except MalformedError as exc:
            return error_result(MALFORMED, exc.detail)
        try:
            _check_id(envelope.tenant_id, "tenantId")
            return self._answer(envelope.tenant_id, body, snapshot)
        except Rejected as rejected:
            return error_result(rejected.code, rejected.detail, rejected.field)

    def _answer(self, tenant_id: str, body: QueryBody, snapshot: Any) -> bytes:
        if isinstance(body, GetTenant):
            raw = self.store.get(keys.tenant_key(tenant_id), snapshot)
            if raw is None:
                raise Rejected(NOT_FOUND, f"tenant {tenant_id} does not exist", "tenantId")
            return ok_result(_tenant_dec.decode(raw))
        if isinstance(body, GetTalent):
            return ok_result(self._load_talent(tenant_id, body.talent_id, snapshot))
        if isinstance(body, ListTalents):
            return ok_result(self._list_talents(tenant_id, body, snapshot))
        if isinstance(body, GetApiKey):
            _check_id(body.key_id, "keyId")
            raw = self.store.get(keys.api_key_key(tenant_id, body.key_id), snapshot)
            if raw is None:
                raise Rejected(NOT_FOUND, f"key {body.key_id} does not exist", "keyId")
            return ok_result(_key_dec.decode(raw))
        assert isinstance(body, ListEvents), type(body)
        return ok_result(self._list_events(tenant_id, body, snapshot))

    def _list_talents(self, tenant_id: str, body: ListTalents, snapshot: Any) -> TalentPage:
        _require(
            1 <= body.limit <= LIST_LIMIT_MAX, "limit", f"must be between 1 and {LIST_LIMIT_MAX}"
        )
        prefix = keys.talents_prefix(tenant_id)
        start_after = None
        if body.cursor is not None:
            start_after = keys.talent_key(tenant_id, decode_cursor(body.cursor))
        # One more than the page, to know whether another page follows.
        rows = list(
            _bounded(
                self.store.scan_prefix(prefix, snapshot, start_after, body.limit + 1),
                body.limit + 1,
            )
        )
        items = [_talent_dec.decode(value) for key, value in rows[: body.limit]]
        for (key, _), talent in zip(rows, items, strict=False):
            assert key.startswith(prefix), key
            assert talent.tenant_id == tenant_id, (talent.tenant_id, tenant_id)
        next_cursor = encode_cursor(items[-1].id) if len(rows) > body.limit else None
        return TalentPage(items=items, next_cursor=next_cursor)

    def _list_events(self, tenant_id: str, body: ListEvents, snapshot: Any) -> list[Event]:
        _require(keys.is_stream(body.stream), "stream", "must be 1-96 characters of [0-9A-Za-z_-]")
        _require(
            1 <= body.limit <= EVENTS_LIMIT_MAX,
            "limit",
            f"must be between 1 and {EVENTS_LIMIT_MAX}",
        )
        _require(body.after_version >= 0, "afterVersion", "must not be negative")
        prefix = keys.stream_prefix(tenant_id, body.stream)
        start_after = (
            keys.event_key(tenant_id, body.stream, body.after_version)
            if body.after_version > 0
            else None
        )
        events = [
            _event_dec.decode(v)
            for _, v in _bounded(
                self.store.scan_prefix(prefix, snapshot, start_after, body.limit), body.limit
            )
        ]
        for event in events:
            assert event.tenant_id == tenant_id, (event.tenant_id, tenant_id)
        return events


class _SessionSlot(msgspec.Struct, frozen=True):
    key: bytes
    scope: str | None  # the tenant id, or None for the operator's sessions
    client_id: str
    old: Session | None


def _session_scope(command: Command) -> str | None:
    """The tenant whose session table the command uses; None: the operator's; "": invalid."""
    if command.kind == "CreateTenant":
        return None
    return command.tenant_id if keys.is_id(command.tenant_id) else ""


def _session_ops(slot: _SessionSlot | None, command: Command, result: bytes) -> list[Op]:
    """Record `result` as the client's last, with its expiry index entry."""
    if slot is None:
        return []
    issued_at_ms = min(max(command.issued_at_ms, 0), ISSUED_AT_MS_MAX)
    expires_at_ms = issued_at_ms + SESSION_TTL_MS
    ops: list[Op] = []
    if slot.old is not None and slot.old.expires_at_ms != expires_at_ms:
        ops.append(
            (keys.session_expiry_key(slot.scope, slot.old.expires_at_ms, slot.client_id), None)
        )
    session = Session(command.request_seq, command.fingerprint, result, expires_at_ms)
    ops.append((slot.key, _enc.encode(session)))
    ops.append((keys.session_expiry_key(slot.scope, expires_at_ms, slot.client_id), b""))
    return ops


def _bounded(rows: Iterable[tuple[bytes, bytes]], limit: int) -> Iterator[tuple[bytes, bytes]]:
    """At most `limit` rows, whether or not the store honoured the limit itself."""
    for n, row in enumerate(rows):
        if n >= limit:
            return
        yield row
