"""The key layout of the state store, and the API key token format.

Every tenant's data lives under `t/<tenant_id>/`; ids are restricted to [0-9A-Za-z_-] so
no id can contain the `/` that would let one tenant's key alias another tenant's prefix.
Two global subspaces exist, both written and read only by CreateTenant: the slug registry
(`g/slug/<slug>`, slugs are globally unique) and the platform operator's sessions
(`g/admin/s/<client_id>`, so a retried bootstrap replays instead of creating a second
tenant).

    t/<tid>/tenant                         Tenant
    t/<tid>/key/<key_id>                   ApiKey
    t/<tid>/talent/<talent_id>             Talent
    t/<tid>/handle/<platform>/<handle>     talent id owning (platform, lower(handle))
    t/<tid>/ev/<stream>/<version:020d>     Event
    t/<tid>/s/<client_id>                  Session (exactly-once record)
    t/<tid>/sx/<expires:020d>/<client_id>  expiry index of sessions (pruned in order)
"""

from __future__ import annotations

import functools
import re
from typing import Final

ID_RE: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")
# A stream name is a kind and an id ("talent-<id>"), so it may be longer than an id.
STREAM_RE: Final = re.compile(r"[0-9A-Za-z_-]{1,96}")
HANDLE_RE: Final = re.compile(r"[0-9A-Za-z._-]{1,100}")
CLIENT_ID_MAX_BYTES: Final = 256
VERSION_DIGITS: Final = 20

API_KEY_SCHEME: Final = "mox"


def is_id(value: str) -> bool:
    return ID_RE.fullmatch(value) is not None


def is_stream(value: str) -> bool:
    return STREAM_RE.fullmatch(value) is not None


# Cached: the prefix of a tenant is built (and its id checked) once, not per key.
@functools.lru_cache(maxsize=4096)
def tenant_prefix(tenant_id: str) -> bytes:
    assert is_id(tenant_id), tenant_id
    return b"t/" + tenant_id.encode() + b"/"


def tenant_key(tenant_id: str) -> bytes:
    return tenant_prefix(tenant_id) + b"tenant"


def api_key_key(tenant_id: str, key_id: str) -> bytes:
    assert is_id(key_id), key_id
    return tenant_prefix(tenant_id) + b"key/" + key_id.encode()


def talents_prefix(tenant_id: str) -> bytes:
    return tenant_prefix(tenant_id) + b"talent/"


def talent_key(tenant_id: str, talent_id: str) -> bytes:
    assert is_id(talent_id), talent_id
    return talents_prefix(tenant_id) + talent_id.encode()


def handle_key(tenant_id: str, platform: str, handle: str) -> bytes:
    assert is_id(platform), platform
    assert HANDLE_RE.fullmatch(handle), handle
    return (
        tenant_prefix(tenant_id) + b"handle/" + platform.encode() + b"/" + handle.lower().encode()
    )


def stream_prefix(tenant_id: str, stream: str) -> bytes:
    assert is_stream(stream), stream
    return tenant_prefix(tenant_id) + b"ev/" + stream.encode() + b"/"


def event_key(tenant_id: str, stream: str, version: int) -> bytes:
    assert version >= 1, version
    return stream_prefix(tenant_id, stream) + str(version).zfill(VERSION_DIGITS).encode()


def session_key(tenant_id: str, client_id: str) -> bytes:
    encoded = client_id.encode()
    assert 0 < len(encoded) <= CLIENT_ID_MAX_BYTES, client_id
    return tenant_prefix(tenant_id) + b"s/" + encoded


def admin_session_key(client_id: str) -> bytes:
    encoded = client_id.encode()
    assert 0 < len(encoded) <= CLIENT_ID_MAX_BYTES, client_id
    return b"g/admin/s/" + encoded


def session_expiry_prefix(tenant_id: str | None) -> bytes:
    """Where the expiry index of a tenant's sessions (None: the operator's) lives."""
    if tenant_id is None:
        return b"g/admin/sx/"
    return tenant_prefix(tenant_id) + b"sx/"


def session_expiry_key(tenant_id: str | None, expires_at_ms: int, client_id: str) -> bytes:
    assert 0 <= expires_at_ms < 10**VERSION_DIGITS, expires_at_ms
    expires = str(expires_at_ms).zfill(VERSION_DIGITS).encode()
    return session_expiry_prefix(tenant_id) + expires + b"/" + client_id.encode()


# The number of tenants (a decimal string), kept by CreateTenant for `limits.max_tenants`.
TENANT_COUNT_KEY: Final = b"g/tenant-count"


SLUG_PREFIX: Final = b"g/slug/"


def slug_key(slug: str) -> bytes:
    assert slug, slug
    assert "/" not in slug, slug
    return SLUG_PREFIX + slug.encode()


# ----------------------------------------------------------------------- API key tokens
#
# A token is `mox.<tenant_id>.<key_id>.<secret>`. The part before the secret is the key's
# prefix, safe to show and log; it names the tenant, so authenticating a request reads only
# that tenant's key, never a global table. Ids cannot contain ".", so the split is exact.


def api_key_prefix(tenant_id: str, key_id: str) -> str:
    assert is_id(tenant_id), tenant_id
    assert is_id(key_id), key_id
    return f"{API_KEY_SCHEME}.{tenant_id}.{key_id}"


def format_api_key(tenant_id: str, key_id: str, secret: str) -> str:
    assert is_id(secret), "secret must be url-safe"
    return f"{api_key_prefix(tenant_id, key_id)}.{secret}"


def parse_api_key(token: str) -> tuple[str, str, str] | None:
    """(tenant_id, key_id, secret) of a well-formed token, else None."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != API_KEY_SCHEME:
        return None
    _, tenant_id, key_id, secret = parts
    if not (is_id(tenant_id) and is_id(key_id) and is_id(secret)):
        return None
    return tenant_id, key_id, secret
