"""Python clients of the Mox REST API: `MoxClient` (async) and `SyncMoxClient`.

Behaviour:

* The client knows several node URLs. It remembers the leader (from the `X-Mox-Leader`
  header a forwarding follower adds, from the `leader` hint of a 503 NOT_LEADER problem,
  or from the node that answered a write itself) and sends writes and linearizable reads
  there first, saving a forwarding hop.
* Every write carries an `Idempotency-Key` (a fresh random one per call unless given), so
  retrying it after a connection error, a timeout or a 503 is safe: the state machine
  applies it once and answers a retry with the first result.
* Connection errors, timeouts and 503s are retried up to `retries` times with exponential
  backoff, moving to the next node each time. A 429 (the cluster's write rate limit) is
  retried on the same node after its `Retry-After` (at most BACKOFF_MAX_S). Any other error
  status raises `MoxApiError` at once; so does the last failure when retries run out.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, TypeVar

import aiohttp
import msgspec

from mox.api.schemas import ApiKeyCreated, TalentPage, TenantCreated
from mox.statemachine.model import Talent, Tenant, TenantSettings

__all__ = [
    "ApiKeyCreated",
    "MoxApiError",
    "MoxClient",
    "SyncMoxClient",
    "TalentPage",
    "TenantCreated",
]

LEADER_HEADER: Final = "X-Mox-Leader"
RETRYABLE_STATUS: Final = 503
# Rate limited (limits.max_events_per_second): retried on the same node after Retry-After.
RATE_LIMITED_STATUS: Final = 429
BACKOFF_MAX_S: Final = 1.0

T = TypeVar("T")


class MoxApiError(Exception):
    """An error answer of the API: `status` and the RFC 7807 `problem` body.

    For a failure to reach any node, `status` is 503 and `problem["code"]` is UNREACHABLE
    (made by the client; no server said it).
    """

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code: str = str(problem.get("code", ""))
        self.field: str | None = problem.get("field")
        where = f" (field {self.field})" if self.field else ""
        super().__init__(f"{status} {self.code}: {problem.get('detail', '')}{where}")


def _retry_after_s(headers: dict[str, str]) -> float:
    """The Retry-After header in seconds (0 if absent or not a number of seconds)."""
    try:
        return max(0.0, float(headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


def _idempotency_key() -> str:
    return os.urandom(16).hex()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _camel_keys(fields: dict[str, Any]) -> dict[str, Any]:
    return {_camel(name): value for name, value in fields.items()}


def _problem(status: int, payload: bytes) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        decoded = None
    if isinstance(decoded, dict):
        return decoded
    return {
        "status": status,
        "code": "HTTP_ERROR",
        "detail": payload[:200].decode("utf-8", "replace"),
    }


class MoxClient:
    """Async client. Use `async with MoxClient(urls, api_key=...) as client:`."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        api_key: str | None = None,
        admin_token: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 8,
        backoff_s: float = 0.05,
    ) -> None:
        if not urls:
            raise ValueError("MoxClient needs at least one node URL")
        if retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError(
                "retries, timeout_s and backoff_s must be non-negative (timeout positive)"
            )
        self.urls = [url.rstrip("/") for url in urls]
        self.api_key = api_key
        self.admin_token = admin_token
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.leader_url: str | None = None
        self._next = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MoxClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------------ transport

    def _pick(self, prefer_leader: bool) -> str:
        if prefer_leader and self.leader_url is not None:
            return self.leader_url
        url = self.urls[self._next % len(self.urls)]
        return url

    def _rotate(self, failed: str) -> None:
        if self.leader_url == failed:
            self.leader_url = None
        if failed in self.urls:
            self._next = self.urls.index(failed) + 1
        else:
            self._next += 1

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: dict[str, str] | None = None,
        admin: bool = False,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        prefer_leader: bool = True,
    ) -> tuple[int, Any, dict[str, str]]:
        """One API call with retries: (status, decoded JSON body, response headers)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        sent = dict(headers or {})
        token = self.admin_token if admin else self.api_key
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            sent["Content-Type"] = "application/json"
        if method not in ("GET", "HEAD"):
            sent["Idempotency-Key"] = idempotency_key or _idempotency_key()
        last: MoxApiError | None = None
        retry_after_s = 0.0
        for attempt in range(self.retries + 1):
            if attempt > 0:
                backoff_s = min(BACKOFF_MAX_S, self.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(max(backoff_s, retry_after_s))
                retry_after_s = 0.0
            url = self._pick(prefer_leader)
            try:
                async with self._session.request(
                    method,
                    url + path,
                    data=body,
                    params=params,
                    headers=sent,
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                ) as resp:
                    payload = await resp.read()
                    status = resp.status
                    response_headers = dict(resp.headers)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                last = MoxApiError(
                    503, {"code": "UNREACHABLE", "detail": f"{url}: {exc.__class__.__name__} {exc}"}
                )
                self._rotate(url)
                continue
            leader = response_headers.get(LEADER_HEADER)
            if leader:
                self.leader_url = leader.rstrip("/")
            elif status < 500 and method not in ("GET", "HEAD"):
                self.leader_url = url  # it applied the write itself: it leads
            if status == RATE_LIMITED_STATUS:
                last = MoxApiError(status, _problem(status, payload))
                retry_after_s = min(BACKOFF_MAX_S, _retry_after_s(response_headers))
                continue
            if status == RETRYABLE_STATUS:
                last = MoxApiError(status, _problem(status, payload))
                hint = last.problem.get("leader")
                if isinstance(hint, str) and hint:
                    self.leader_url = hint.rstrip("/")
                else:
                    self._rotate(url)
                continue
            if status >= 400:
                raise MoxApiError(status, _problem(status, payload))
            return status, msgspec.json.decode(payload) if payload else None, response_headers
        assert last is not None
        raise last

    async def _call(self, type_: type[T], method: str, path: str, **kwargs: Any) -> T:
        _status, data, _headers = await self.request(method, path, **kwargs)
        return msgspec.convert(data, type_)

    # ------------------------------------------------------------------------- tenants

    async def create_tenant(
        self,
        slug: str,
        name: str,
        settings: TenantSettings | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> TenantCreated:
        """Bootstrap a tenant (needs `admin_token`); `api_key.key` is the owner key, shown once."""
        payload: dict[str, Any] = {"slug": slug, "name": name}
        if settings is not None:
            payload["settings"] = settings
        return await self._call(
            TenantCreated,
            "POST",
            "/api/tenants",
            body=msgspec.json.encode(payload),
            admin=True,
            idempotency_key=idempotency_key,
        )

    async def get_tenant(self) -> Tenant:
        return await self._call(Tenant, "GET", "/api/tenant")

    async def issue_api_key(
        self,
        name: str,
        scopes: Sequence[str],
        expires_at_ms: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ApiKeyCreated:
        payload = {"name": name, "scopes": list(scopes), "expiresAtMs": expires_at_ms}
        return await self._call(
            ApiKeyCreated,
            "POST",
            "/api/keys",
            body=msgspec.json.encode(payload),
            idempotency_key=idempotency_key,
        )

    async def revoke_api_key(self, key_id: str) -> ApiKeyCreated:
        return await self._call(ApiKeyCreated, "DELETE", f"/api/keys/{key_id}")

    # ------------------------------------------------------------------------- talents

    async def register_talent(
        self, display_name: str, *, idempotency_key: str | None = None, **fields: Any
    ) -> Talent:
        """Register a talent. `fields` are the JSON fields in snake_case (emails, location,
        accounts, ...); values are validated by the server, which names a bad one."""
        payload = {"displayName": display_name, **_camel_keys(fields)}
        return await self._call(
            Talent,
            "POST",
            "/api/talents",
            body=msgspec.json.encode(payload),
            idempotency_key=idempotency_key,
        )

    async def get_talent(self, talent_id: str, *, consistency: str = "linearizable") -> Talent:
        stale = consistency == "stale"
        return await self._call(
            Talent,
            "GET",
            f"/api/talents/{talent_id}",
            params={"consistency": consistency},
            prefer_leader=not stale,
        )

    async def list_talents(
        self, cursor: str | None = None, limit: int = 50, *, consistency: str = "linearizable"
    ) -> TalentPage:
        params = {"limit": str(limit), "consistency": consistency}
        if cursor is not None:
            params["cursor"] = cursor
        return await self._call(
            TalentPage, "GET", "/api/talents", params=params, prefer_leader=consistency != "stale"
        )

    async def iter_talents(self, page_size: int = 100) -> AsyncIterator[Talent]:
        """Every talent of the tenant, following cursors page by page."""
        cursor: str | None = None
        while True:
            page = await self.list_talents(cursor, page_size)
            for talent in page.items:
                yield talent
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def update_talent(
        self,
        talent_id: str,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        **changes: Any,
    ) -> Talent:
        """Change the given fields; with `expected_version`, only if the talent is at it."""
        payload = _camel_keys(changes)
        if expected_version is not None:
            payload["expectedVersion"] = expected_version
        return await self._call(
            Talent,
            "PATCH",
            f"/api/talents/{talent_id}",
            body=msgspec.json.encode(payload),
            idempotency_key=idempotency_key,
        )

    async def archive_talent(
        self, talent_id: str, *, expected_version: int | None = None
    ) -> Talent:
        headers = {"If-Match": f'"{expected_version}"'} if expected_version is not None else None
        return await self._call(Talent, "DELETE", f"/api/talents/{talent_id}", headers=headers)

    async def talent_events(self, talent_id: str, after_version: int = 0) -> list[dict[str, Any]]:
        _status, data, _headers = await self.request(
            "GET", f"/api/talents/{talent_id}/events", params={"afterVersion": str(after_version)}
        )
        items: list[dict[str, Any]] = data["items"]
        return items

    async def health(self, url: str) -> dict[str, Any]:
        """The /health of one node (no retries, no leader preference)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.get(
            url.rstrip("/") + "/health", timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        ) as resp:
            payload = await resp.read()
            if resp.status >= 400:
                raise MoxApiError(resp.status, _problem(resp.status, payload))
            data: dict[str, Any] = msgspec.json.decode(payload)
            return data


class SyncMoxClient:
    """The blocking twin of `MoxClient`, on a private event loop. Not for use inside a
    running event loop (use MoxClient there)."""

    def __init__(self, urls: Sequence[str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = MoxClient(urls, **options)

    def __enter__(self) -> SyncMoxClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.close())
            self._loop.close()

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    @property
    def leader_url(self) -> str | None:
        return self._client.leader_url

    @property
    def api_key(self) -> str | None:
        return self._client.api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self._client.api_key = value

    def create_tenant(
        self,
        slug: str,
        name: str,
        settings: TenantSettings | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> TenantCreated:
        result: TenantCreated = self._run(
            self._client.create_tenant(slug, name, settings, idempotency_key=idempotency_key)
        )
        return result

    def get_tenant(self) -> Tenant:
        result: Tenant = self._run(self._client.get_tenant())
        return result

    def issue_api_key(
        self, name: str, scopes: Sequence[str], expires_at_ms: int | None = None
    ) -> ApiKeyCreated:
        result: ApiKeyCreated = self._run(self._client.issue_api_key(name, scopes, expires_at_ms))
        return result

    def revoke_api_key(self, key_id: str) -> ApiKeyCreated:
        result: ApiKeyCreated = self._run(self._client.revoke_api_key(key_id))
        return result

    def register_talent(
        self, display_name: str, *, idempotency_key: str | None = None, **fields: Any
    ) -> Talent:
        result: Talent = self._run(
            self._client.register_talent(display_name, idempotency_key=idempotency_key, **fields)
        )
        return result

    def get_talent(self, talent_id: str, *, consistency: str = "linearizable") -> Talent:
        result: Talent = self._run(self._client.get_talent(talent_id, consistency=consistency))
        return result

    def list_talents(
        self, cursor: str | None = None, limit: int = 50, *, consistency: str = "linearizable"
    ) -> TalentPage:
        result: TalentPage = self._run(
            self._client.list_talents(cursor, limit, consistency=consistency)
        )
        return result

    def update_talent(
        self,
        talent_id: str,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        **changes: Any,
    ) -> Talent:
        result: Talent = self._run(
            self._client.update_talent(
                talent_id,
                expected_version=expected_version,
                idempotency_key=idempotency_key,
                **changes,
            )
        )
        return result

    def archive_talent(self, talent_id: str, *, expected_version: int | None = None) -> Talent:
        result: Talent = self._run(
            self._client.archive_talent(talent_id, expected_version=expected_version)
        )
        return result

    def talent_events(self, talent_id: str, after_version: int = 0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._run(
            self._client.talent_events(talent_id, after_version)
        )
        return result

    def health(self, url: str) -> dict[str, Any]:
        result: dict[str, Any] = self._run(self._client.health(url))
        return result
