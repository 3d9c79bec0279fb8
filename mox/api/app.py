"""The REST API of one node: an aiohttp application over the node runtime.

Theory of operation:

* Every request gets a request id (the client's `X-Request-Id` if sane, else a new one),
  kept on the request, written in the request's access line (one per request, see
  `mox.api.logs.RequestLog`) and echoed in the response.
* A write's API key is verified once and then taken from a cache per (tenant, key id)
  while the node's `api_keys_epoch` (moved by every applied command that may change a key
  record) is unchanged: the same answer the stale local lookup would give.
* Tenant requests authenticate with `Authorization: Bearer mox.<tenant>.<key>.<secret>`.
  The token names its tenant, so the key is looked up under that tenant only; from then on
  every query and command of the request carries that tenant id and no other.
* Writes become state machine commands with ids and a timestamp assigned here, and are
  submitted to the node. On a follower the node raises NotLeader and the whole HTTP request
  is forwarded, as is, to the leader's client address (from the cluster config); the
  leader's response is returned with an `X-Mox-Leader` header. A forwarded request is never
  forwarded again (503 instead), so a leader change cannot make a loop.
* `Idempotency-Key` maps to a state machine session (client id = hash of the key, seq 1),
  with a fingerprint of method, path and body: a retry of the same request is applied
  once and answered with the first result; the same key on a different request is a 422.
* Reads are local, on every node, and never forwarded. `?consistency=linearizable` (the
  default) goes through the node's read index (a follower asks its leader for the index,
  then answers from its own state once applied up to it); `?consistency=stale` reads this
  replica's applied state. A read index that cannot be had (no leader, leadership lost) is a
  503 with the leader hint when one is known.
* Every error is an RFC 7807 problem (problems.py); an unexpected exception is logged with
  its traceback and answered with a bare 500 problem, never a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import math
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Protocol

import aiohttp
import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from structlog.typing import FilteringBoundLogger

from mox.api.ids import new_ulid
from mox.api.limits import RateLimiter
from mox.api.logs import RequestLog
from mox.api.metrics import ApiMetrics, RuntimeCounters
from mox.api.openapi import openapi_document
from mox.api.problems import ApiProblem, from_json_error, problem_from_code, validation
from mox.api.schemas import (
    CreateTenantRequest,
    IssueKeyRequest,
    MemberChangeRequest,
    MemberChangeResult,
    MemberProgress,
    Membership,
    PatchTalentRequest,
    RegisterTalentRequest,
)
from mox.api.status import NodeStatusView, status_view
from mox.config import MoxConfig
from mox.consensus.raft.core import ConfChange
from mox.errors import StorageFaultError
from mox.node.errors import NotLeader, Overloaded, RequestError
from mox.node.runtime import ConfChangeRefused
from mox.statemachine import (
    ApiKey,
    ArchiveTalent,
    CreateTenant,
    GetApiKey,
    GetTalent,
    GetTenant,
    IssueApiKey,
    ListEvents,
    ListTalents,
    NewApiKey,
    RegisterTalent,
    Result,
    RevokeApiKey,
    UpdateProfile,
    decode_result,
    encode_command,
    encode_query,
    make_command,
)
from mox.statemachine import keys as sm_keys
from mox.statemachine.commands import ACTOR_ADMIN, ACTOR_APIKEY_PREFIX, CommandBody, QueryBody
from mox.statemachine.machine import key_is_usable
from mox.statemachine.model import SCOPES

__all__ = [
    "FORWARDED_HEADER",
    "LEADER_HEADER",
    "METRICS",
    "REQUEST_BODY_MAX_BYTES",
    "NodeApi",
    "create_app",
]

REQUEST_BODY_MAX_BYTES: Final = 1024 * 1024
FORWARDED_HEADER: Final = "X-Mox-Forwarded-By"
LEADER_HEADER: Final = "X-Mox-Leader"
# Request key: this request's API key was looked up through the read index, so this node's
# applied state already covers every write acknowledged before the request began.
_STATE_FRESH: Final = web.RequestKey("mox_state_fresh", bool)
_REQUEST_ID: Final = web.RequestKey("mox_request_id", str)
_TENANT_ID: Final = web.RequestKey("mox_tenant_id", str)
_KEY_ID: Final = web.RequestKey("mox_key_id", str)
# Verified API keys kept at most; past it the cache starts over (keys are few per node).
VERIFIED_KEYS_MAX: Final = 4096
REPLAYED_HEADER: Final = "Idempotent-Replayed"
IDEMPOTENCY_KEY_MAX_CHARS: Final = 255
REQUEST_ID_RE: Final = re.compile(r"[0-9A-Za-z._:-]{1,128}")
IDEMPOTENCY_KEY_RE: Final = re.compile(r"[\x21-\x7e]{1,255}")
ETAG_RE: Final = re.compile(r'(?:W/)?"?(\d{1,18})"?')
# Headers a forwarded request keeps; hop-by-hop and length headers are recomputed.
FORWARD_REQUEST_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "X-Request-Id",
    "Accept",
)
FORWARD_RESPONSE_HEADERS: Final = (
    "Content-Type",
    "ETag",
    "Location",
    REPLAYED_HEADER,
    "Retry-After",
)


class NodeApi(Protocol):
    """What the API needs of `mox.node.runtime.Node`."""

    async def submit(self, command: bytes) -> bytes: ...

    def submit_nowait(self, command: bytes) -> asyncio.Future[bytes]: ...

    async def read(self, query: bytes, *, linearizable: bool = True) -> bytes: ...

    def read_stale(self, query: bytes) -> bytes: ...

    def read_nowait(self, query: bytes) -> asyncio.Future[bytes]: ...

    def status(self) -> Any: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def api_keys_epoch(self) -> int: ...

    # Called by the runtime with the duration of each WAL group commit.
    on_wal_sync: Callable[[float], None] | None

    async def propose_conf_change(self, change: ConfChange) -> int: ...

    # The Raft core: /api/admin/members reads its log's configurations (latest, committed).
    core: Any


class _Deadlines:
    """Fails the futures of requests still unanswered after `timeout_s`: one timer for all.

    `asyncio.timeout` per request cost ~5% of the CPU of a write (a Timeout object and a
    loop timer armed and cancelled each time). Every request gets the same timeout, so
    deadlines arrive in the order they were set: a FIFO swept every `SWEEP_S` suffices.
    A deadline fires up to SWEEP_S late.
    """

    SWEEP_S: Final = 0.05

    def __init__(self, timeout_s: float) -> None:
        assert timeout_s > 0, timeout_s
        self.timeout_s = timeout_s
        self._queue: collections.deque[tuple[float, asyncio.Future[bytes]]] = collections.deque()
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, future: asyncio.Future[bytes]) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + self.timeout_s
        assert not self._queue or self._queue[-1][0] <= deadline_s
        self._queue.append((deadline_s, future))
        if self._handle is None:
            self._handle = loop.call_later(self.SWEEP_S, self._sweep, loop)
        return future

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        now_s = loop.time()
        queue = self._queue
        while queue and (queue[0][0] <= now_s or queue[0][1].done()):
            _deadline_s, future = queue.popleft()
            if not future.done():
                future.set_exception(TimeoutError())
        if queue:
            self._handle = loop.call_later(self.SWEEP_S, self._sweep, loop)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._queue.clear()


class _NotLeaderHere(Exception):
    """Raised inside a handler to have the middleware forward the request to the leader."""

    def __init__(self, leader_id: int | None) -> None:
        super().__init__(leader_id)
        self.leader_id = leader_id


class _LeadershipLost(Exception):
    """The leader that took a membership change stopped leading before it applied it."""


# How often a membership change's wait checks that this node still leads, and how long it
# still waits for the change once it does not (see _Api._propose_change).
_LEADERSHIP_POLL_S: Final = 0.01
_LEADERSHIP_LOST_GRACE_S: Final = 0.5


class _Principal(msgspec.Struct, frozen=True):
    tenant_id: str
    key_id: str
    scopes: list[str]

    @property
    def actor(self) -> str:
        return ACTOR_APIKEY_PREFIX + self.key_id


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(value),
        content_type="application/json",
        headers=headers,
    )


def _value(result: Result) -> Any:
    """The result's payload as plain JSON-able data."""
    return msgspec.msgpack.decode(result.value)


def _etag(version: int) -> str:
    return f'"{version}"'


class _Api:
    """Handlers and their shared state for one node."""

    def __init__(
        self,
        node: NodeApi,
        config: MoxConfig,
        metrics: ApiMetrics,
        logger: FilteringBoundLogger,
        admin_token: str | None,
    ) -> None:
        self.node = node
        self.config = config
        self.metrics = metrics
        self.logger = logger
        self.request_log = RequestLog(logger)
        # (tenant id, key id) -> (api_keys_epoch, secret, key) of keys whose secret was
        # verified against the record as it was at that epoch (see _authenticate).
        self._verified_keys: dict[tuple[str, str], tuple[int, str, ApiKey]] = {}
        self.admin_token = admin_token
        self.node_id = config.cluster.node_id
        self.timeout_s = config.api.request_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._deadlines = _Deadlines(self.timeout_s)
        self.write_limiter = RateLimiter(config.limits.max_events_per_second)

    # ---------------------------------------------------------------------- middleware

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        supplied = request.headers.get("X-Request-Id", "")
        request_id = supplied if REQUEST_ID_RE.fullmatch(supplied) else os.urandom(8).hex()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "<unmatched>"
        # On the request, not in structlog's contextvars: binding them cost ~4% of the CPU
        # of a write; the lines logged here name the request themselves.
        request[_REQUEST_ID] = request_id
        started_s = time.perf_counter()
        response: web.StreamResponse
        try:
            try:
                if route != "/metrics":
                    self._refuse_if_storage_fault()
                response = await handler(request)
            except _NotLeaderHere as redirect:
                response = await self._forward(request, redirect.leader_id)
        except ApiProblem as problem:
            if problem.status == 503 and self._storage_fault() is not None:
                # The node stopped on damaged data while serving this request.
                problem = self._storage_fault_problem() or problem
            response = problem.response(request_id)
        except web.HTTPException as exc:
            response = self._http_exception(exc).response(request_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug, not bad input: the traceback goes to the log, never to the client.
            self.logger.exception(
                "unhandled_error", request_id=request_id, method=request.method, route=route
            )
            response = ApiProblem(500, "INTERNAL", "internal error; see the node's log").response(
                request_id
            )
        duration_s = time.perf_counter() - started_s
        response.headers["X-Request-Id"] = request_id
        self.metrics.observe_request(request.method, route, response.status, duration_s)
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": request.method,
            "route": route,
        }
        tenant_id = request.get(_TENANT_ID)
        if tenant_id is not None:
            fields["tenant_id"] = tenant_id
            fields["key_id"] = request.get(_KEY_ID)
        fields["path"] = request.path
        fields["status"] = response.status
        fields["duration_ms"] = round(duration_s * 1000, 3)
        self.request_log.info("request", fields)
        return response

    def _storage_fault(self) -> StorageFaultError | None:
        fault = getattr(self.node, "storage_fault", None)
        return fault if isinstance(fault, StorageFaultError) else None

    def _storage_fault_problem(self) -> ApiProblem | None:
        """503 STORAGE_FAULT once the node stopped on damaged data (fail-stop): it serves
        nothing any more, and retrying this node will not help (no Retry-After)."""
        fault = self._storage_fault()
        if fault is None:
            return None
        return ApiProblem(
            503,
            "STORAGE_FAULT",
            f"node {fault.node_id} stopped on a storage fault: {fault.path} at offset "
            f"{fault.offset}: {fault.problem}; it serves no requests until an operator "
            "replaces its data; use another node",
            extra={"path": fault.path, "offset": fault.offset},
        )

    def _refuse_if_storage_fault(self) -> None:
        problem = self._storage_fault_problem()
        if problem is not None:
            raise problem

    def _http_exception(self, exc: web.HTTPException) -> ApiProblem:
        status = exc.status
        if status == 413:
            return ApiProblem(
                413,
                "BODY_TOO_LARGE",
                f"the body exceeds {REQUEST_BODY_MAX_BYTES} bytes",
                field="body",
            )
        if status == 404:
            return ApiProblem(404, "NOT_FOUND", "no such endpoint")
        if status == 405:
            allow = exc.headers.get("Allow", "")
            return ApiProblem(
                405, "METHOD_NOT_ALLOWED", f"allowed: {allow}", headers={"Allow": allow}
            )
        return ApiProblem(
            status if status >= 400 else 400, "HTTP_ERROR", exc.reason or "bad request"
        )

    # ----------------------------------------------------------------------- forwarding

    def _leader_url(self, leader_id: int) -> str | None:
        try:
            address = self.config.cluster.node(leader_id)
        except KeyError:
            return None
        return f"http://{address.host}:{address.client_port}"

    async def _forward(self, request: web.Request, leader_id: int | None) -> web.StreamResponse:
        retry = {"Retry-After": "1"}
        if leader_id is None or leader_id == self.node_id:
            raise ApiProblem(
                503, "NO_LEADER", "no leader is elected yet; retry shortly", headers=retry
            )
        leader_url = self._leader_url(leader_id)
        if leader_url is None:
            raise ApiProblem(
                503, "NO_LEADER", f"leader {leader_id} is not in the cluster config", headers=retry
            )
        if FORWARDED_HEADER in request.headers:
            # Forwarded once already: the leader moved. The client retries (to the hint).
            raise ApiProblem(
                503,
                "NOT_LEADER",
                f"node {self.node_id} is not the leader; try {leader_url}",
                headers={**retry, LEADER_HEADER: leader_url},
                extra={"leader": leader_url},
            )
        body = await request.read()
        headers = {
            name: request.headers[name]
            for name in FORWARD_REQUEST_HEADERS
            if name in request.headers
        }
        headers[FORWARDED_HEADER] = str(self.node_id)
        request_id = request.get(_REQUEST_ID)
        if isinstance(request_id, str):
            headers["X-Request-Id"] = request_id
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        self.metrics.forwarded.inc()
        try:
            async with self._session.request(
                request.method,
                leader_url + str(request.rel_url),
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                kept = {
                    name: upstream.headers[name]
                    for name in FORWARD_RESPONSE_HEADERS
                    if name in upstream.headers
                }
        except (aiohttp.ClientError, TimeoutError) as exc:
            maybe = request.method not in ("GET", "HEAD")
            detail = f"could not reach the leader at {leader_url}: {exc.__class__.__name__}"
            if maybe:
                detail += "; the write may have been applied: retry with the same Idempotency-Key"
            raise ApiProblem(503, "LEADER_UNREACHABLE", detail, headers=retry) from None
        kept[LEADER_HEADER] = leader_url
        return web.Response(status=status, body=payload, headers=kept)

    async def close(self, _app: web.Application) -> None:
        self._deadlines.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --------------------------------------------------------------- node interaction

    async def _submit(
        self, request: web.Request, tenant_id: str, actor: str, body: CommandBody
    ) -> Result:
        """Propose one command and wait for its result. Raises problems, never RequestError."""
        idempotency_key = request.headers.get("Idempotency-Key")
        client_id, request_seq, fingerprint = "", 0, ""
        if idempotency_key is not None:
            if IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key) is None:
                raise ApiProblem(
                    400,
                    "VALIDATION",
                    f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters",
                    field="Idempotency-Key",
                )
            client_id = "idem:" + _sha256_hex(idempotency_key.encode())[:40]
            request_seq = 1
            raw = await request.read()
            # The request as the client sent it: a retry must repeat all of it.
            if_match = request.headers.get("If-Match", "").encode()
            parts = (request.method.encode(), request.path.encode(), if_match, raw)
            fingerprint = _sha256_hex(b"\0".join(parts))[:32]
        request_id = request.get(_REQUEST_ID, "")
        command = make_command(
            body,
            tenant_id=tenant_id,
            client_id=client_id,
            request_seq=request_seq,
            command_id=new_ulid(),
            issued_at_ms=_now_ms(),
            actor=actor,
            correlation_id=str(request_id),
            fingerprint=fingerprint,
        )
        if self.node.is_leader:
            # The leader sees every write of the cluster: the limit is applied here.
            wait_s = self.write_limiter.admit()
            if wait_s > 0:
                self.metrics.rate_limited.inc()
                rate = self.write_limiter.rate_per_s
                raise ApiProblem(
                    429,
                    "RATE_LIMITED",
                    f"the cluster admits at most {rate} writes per second "
                    f"(limits.max_events_per_second); retry in {wait_s:.3f} s",
                    headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
                )
        try:
            raw_result = await self._deadlines.watch(
                self.node.submit_nowait(encode_command(command))
            )
        except NotLeader as exc:
            raise _NotLeaderHere(exc.leader_id) from None
        except Overloaded as exc:
            raise ApiProblem(503, "OVERLOADED", str(exc), headers={"Retry-After": "1"}) from None
        except RequestError as exc:
            raise ApiProblem(
                503,
                "OUTCOME_UNKNOWN",
                f"{exc}; the write may have been applied: retry with the same Idempotency-Key",
                headers={"Retry-After": "1"},
            ) from None
        except TimeoutError:
            raise ApiProblem(
                503,
                "TIMEOUT",
                f"no result within {self.timeout_s} s; the write may have been applied: "
                "retry with the same Idempotency-Key",
                headers={"Retry-After": "1"},
            ) from None
        return decode_result(raw_result)

    async def _query(self, tenant_id: str, body: QueryBody, linearizable: bool) -> Result:
        try:
            if linearizable:
                raw_result = await self._deadlines.watch(
                    self.node.read_nowait(encode_query(tenant_id, body))
                )
            else:
                raw_result = self.node.read_stale(encode_query(tenant_id, body))
        except NotLeader as exc:
            raise self._read_refused(exc.leader_id) from None
        except RequestError as exc:
            raise ApiProblem(503, "UNAVAILABLE", str(exc), headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise ApiProblem(
                503, "TIMEOUT", f"no answer within {self.timeout_s} s", headers={"Retry-After": "1"}
            ) from None
        return decode_result(raw_result)

    def _read_refused(self, leader_id: int | None) -> ApiProblem:
        """A linearizable read this node could not get a read index for: 503, retry (here,
        or at the leader the hint names)."""
        retry = {"Retry-After": "1"}
        leader_url = None
        if leader_id is not None and leader_id != self.node_id:
            leader_url = self._leader_url(leader_id)
        if leader_url is None:
            return ApiProblem(
                503, "NO_LEADER", "no leader to confirm a linearizable read; retry shortly", headers=retry
            )
        return ApiProblem(
            503,
            "NOT_LEADER",
            f"node {self.node_id} could not confirm a linearizable read; retry, or try {leader_url}",
            headers={**retry, LEADER_HEADER: leader_url},
            extra={"leader": leader_url},
        )

    @staticmethod
    def _ok(result: Result) -> Any:
        if not result.ok:
            raise problem_from_code(result.code, result.detail, result.field)
        return _value(result)

    # --------------------------------------------------------------------- request parts

    @staticmethod
    def _consistency(request: web.Request) -> bool:
        """True for a linearizable read (the default), False for `?consistency=stale`, and
        False too when authentication already went through the read index (the local state
        it waited for is fresh enough: reading it now is linearizable)."""
        value = request.query.get("consistency", "linearizable")
        if value not in ("linearizable", "stale"):
            raise validation("consistency", "must be linearizable or stale")
        return value == "linearizable" and not request.get(_STATE_FRESH, False)

    @staticmethod
    async def _body(request: web.Request, type_: type[Any]) -> Any:
        raw = await request.read()
        if not raw:
            raise ApiProblem(400, "MALFORMED_JSON", "the request needs a JSON body", field="body")
        try:
            return msgspec.json.decode(raw, type=type_)
        except msgspec.DecodeError as exc:
            raise from_json_error(exc) from None

    @staticmethod
    def _path_id(request: web.Request) -> str:
        value = request.match_info["id"]
        if not sm_keys.is_id(value):
            raise ApiProblem(404, "NOT_FOUND", f"no resource with id {value[:80]!r}", field="id")
        return value

    @staticmethod
    def _if_match(request: web.Request, body_version: int | None) -> int | None:
        header = request.headers.get("If-Match")
        if header is None or header.strip() == "*":
            return body_version
        match = ETAG_RE.fullmatch(header.strip())
        if match is None:
            raise ApiProblem(
                400, "VALIDATION", 'If-Match must be an entity tag like "3"', field="If-Match"
            )
        version = int(match.group(1))
        if body_version is not None and body_version != version:
            raise ApiProblem(
                400, "VALIDATION", "If-Match and expectedVersion disagree", field="If-Match"
            )
        return version

    # --------------------------------------------------------------------- authentication

    async def _authenticate(self, request: web.Request, scope: str | None) -> _Principal:
        header = request.headers.get("Authorization")
        challenge = {"WWW-Authenticate": 'Bearer realm="mox"'}
        if header is None:
            raise ApiProblem(
                401,
                "UNAUTHENTICATED",
                "missing Authorization: Bearer <API key>",
                field="Authorization",
                headers=challenge,
            )
        scheme, _, token = header.partition(" ")
        parsed = sm_keys.parse_api_key(token.strip()) if scheme.lower() == "bearer" else None
        if parsed is None:
            raise ApiProblem(
                401,
                "UNAUTHENTICATED",
                "Authorization must be 'Bearer mox.<tenant>.<key>.<secret>'",
                field="Authorization",
                headers=challenge,
            )
        tenant_id, key_id, secret = parsed
        # Read before any await: a key record changed while this lookup waits moves the
        # epoch past the one the cache entry is stored under, so the entry is never trusted.
        epoch = self.node.api_keys_epoch
        linearizable = request.method in ("GET", "HEAD") and (
            request.query.get("consistency") != "stale"
        )
        cached = None if linearizable else self._verified_keys.get((tenant_id, key_id))
        if (
            cached is not None
            and cached[0] == epoch
            and hmac.compare_digest(cached[1].encode(), secret.encode())
        ):
            # No key record changed here since this secret was verified against it: the
            # stale local read would return the same record (the same guarantee as below).
            key = cached[2]
        else:
            key = await self._lookup_key(request, tenant_id, key_id, secret, linearizable)
            if len(self._verified_keys) >= VERIFIED_KEYS_MAX:
                self._verified_keys.clear()
            self._verified_keys[(tenant_id, key_id)] = (epoch, secret, key)
        if not key_is_usable(key, _now_ms()):
            raise ApiProblem(
                403,
                "FORBIDDEN",
                f"API key {key.prefix} is revoked or expired",
                field="Authorization",
            )
        if scope is not None and scope not in key.scopes:
            raise ApiProblem(
                403,
                "FORBIDDEN",
                f"API key {key.prefix} lacks the scope {scope!r}",
                field="Authorization",
            )
        request[_TENANT_ID] = tenant_id
        request[_KEY_ID] = key_id
        return _Principal(tenant_id, key_id, list(key.scopes))

    async def _lookup_key(
        self, request: web.Request, tenant_id: str, key_id: str, secret: str, linearizable: bool
    ) -> ApiKey:
        """The key record, its secret verified; raises the 401 problems."""
        challenge = {"WWW-Authenticate": 'Bearer realm="mox"'}
        if linearizable:
            # A linearizable read, on any node: the key is looked up through the read index
            # (a key revoked before the request began is seen revoked, even on a follower
            # that has not applied the revocation yet), and the read itself is then served
            # from the local state that lookup waited for: one read index per request.
            result = await self._query(tenant_id, GetApiKey(key_id=key_id), linearizable=True)
            request[_STATE_FRESH] = True
        else:
            # A stale local read is enough for a key this replica knows; one it does not
            # know (just issued, not yet applied here) is looked up through the read index.
            result = await self._query(tenant_id, GetApiKey(key_id=key_id), linearizable=False)
            if not result.ok:
                result = await self._query(tenant_id, GetApiKey(key_id=key_id), linearizable=True)
        if not result.ok:
            raise ApiProblem(
                401, "UNAUTHENTICATED", "unknown API key", field="Authorization", headers=challenge
            )
        key: ApiKey = result.decode_value(ApiKey)
        if not hmac.compare_digest(key.secret_sha256, _sha256_hex(secret.encode())):
            raise ApiProblem(
                401,
                "UNAUTHENTICATED",
                "wrong API key secret",
                field="Authorization",
                headers=challenge,
            )
        assert key.tenant_id == tenant_id, (key.tenant_id, tenant_id)
        return key

    def _authenticate_admin(self, request: web.Request) -> None:
        if not self.admin_token:
            raise ApiProblem(
                403,
                "FORBIDDEN",
                f"{request.method} {request.path} is disabled: no admin token is configured",
            )
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.admin_token.encode()
        ):
            raise ApiProblem(
                401,
                "UNAUTHENTICATED",
                f"{request.method} {request.path} needs Authorization: Bearer <admin token>",
                field="Authorization",
                headers={"WWW-Authenticate": 'Bearer realm="mox-admin"'},
            )

    # ---------------------------------------------------------------------- operations

    async def health(self, request: web.Request) -> web.Response:
        view = status_view(self.node)
        return _json({"status": "ok", **view.to_json()})

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    def status(self) -> NodeStatusView:
        return status_view(self.node)

    async def create_tenant(self, request: web.Request) -> web.Response:
        self._authenticate_admin(request)
        body: CreateTenantRequest = await self._body(request, CreateTenantRequest)
        tenant_id, key_id, secret = new_ulid(), new_ulid(), secrets.token_urlsafe(32)
        command = CreateTenant(
            slug=body.slug,
            name=body.name,
            settings=body.settings,
            max_tenants=self.config.limits.max_tenants,
            owner_key=NewApiKey(
                key_id=key_id,
                secret_sha256=_sha256_hex(secret.encode()),
                name="owner",
                scopes=list(SCOPES),
            ),
        )
        created = self._ok(await self._submit(request, tenant_id, ACTOR_ADMIN, command))
        if created["tenant"]["id"] != tenant_id:
            # A replay of an earlier request with this Idempotency-Key: its secret was shown
            # once, to that request, and is not stored anywhere.
            return _json(created, 200, {REPLAYED_HEADER: "true"})
        created["apiKey"]["key"] = sm_keys.format_api_key(tenant_id, key_id, secret)
        return _json(created, 201, {"Location": "/api/tenant"})

    async def get_tenant(self, request: web.Request) -> web.Response:
        principal = await self._authenticate(request, None)
        tenant = self._ok(
            await self._query(principal.tenant_id, GetTenant(), self._consistency(request))
        )
        return _json(tenant, headers={"ETag": _etag(tenant["version"])})

    async def issue_key(self, request: web.Request) -> web.Response:
        principal = await self._authenticate(request, "tenant:admin")
        body: IssueKeyRequest = await self._body(request, IssueKeyRequest)
        key_id, secret = new_ulid(), secrets.token_urlsafe(32)
        new_key = NewApiKey(
            key_id=key_id,
            secret_sha256=_sha256_hex(secret.encode()),
            name=body.name,
            scopes=body.scopes,
            expires_at_ms=body.expires_at_ms,
        )
        info = self._ok(
            await self._submit(
                request, principal.tenant_id, principal.actor, IssueApiKey(key=new_key)
            )
        )
        if info["id"] != key_id:
            return _json(info, 200, {REPLAYED_HEADER: "true"})
        info["key"] = sm_keys.format_api_key(principal.tenant_id, key_id, secret)
        return _json(info, 201)

    async def revoke_key(self, request: web.Request) -> web.Response:
        principal = await self._authenticate(request, "tenant:admin")
        key_id = self._path_id(request)
        info = self._ok(
            await self._submit(
                request, principal.tenant_id, principal.actor, RevokeApiKey(key_id=key_id)
            )
        )
        return _json(info)

    async def register_talent(self, request: web.Request) -> web.Response:
        principal = await self._authenticate(request, "talents:write")
        body: RegisterTalentRequest = await self._body(request, RegisterTalentRequest)
        talent_id = new_ulid()
        command = RegisterTalent(talent_id=talent_id, **msgspec.structs.asdict(body))
        talent = self._ok(
            await self._submit(request, principal.tenant_id, principal.actor, command)
        )
        headers = {"Location": f"/api/talents/{talent['id']}", "ETag": _etag(talent["version"])}
        if talent["id"] != talent_id:
            headers[REPLAYED_HEADER] = "true"
        return _json(talent, 201, headers)

    async def get_talent(self, request: web.Request) -> web.Response:
        principal = await self._authenticate(request, "talents:read")
        talent_id = self._path_id(request)
        query = GetTalent(talent_id=talent_id)
        talent = self._ok(await self._query(principal.tenant_id, query, self._consistency(request)))
        return _json(talent, headers={"ETag": _etag(talent["version"])})

    async def list_talents(self, request: web.Request) -> web.Response:
        principal = await self._authenticate(request, "talents:read")
        linearizable = self._consistency(request)
        raw_limit = request.query.get("limit", "50")
        if not raw_limit.isdigit() or len(raw_limit) > 6:
            raise validation("limit", "must be an integer between 1 and 200")
        cursor = request.query.get("cursor") or None
        query = ListTalents(cursor=cursor, limit=int(raw_limit))
        page = self._ok(await self._query(principal.tenant_id, query, linearizable))
        return _json(page)

    async def patch_talent(self, request: web.Request) -> web.Response:
        principal = await self._authenticate(request, "talents:write")
        talent_id = self._path_id(request)
        body: PatchTalentRequest = await self._body(request, PatchTalentRequest)
        expected_version = self._if_match(request, body.expected_version)
        changes = {
            k: v
            for k, v in msgspec.structs.asdict(body).items()
            if k != "expected_version" and v is not msgspec.UNSET
        }
        if not changes:
            raise validation("body", "must change at least one field")
        command = UpdateProfile(talent_id=talent_id, expected_version=expected_version, **changes)
        talent = self._ok(
            await self._submit(request, principal.tenant_id, principal.actor, command)
        )
        return _json(talent, headers={"ETag": _etag(talent["version"])})

    async def delete_talent(self, request: web.Request) -> web.Response:
        principal = await self._authenticate(request, "talents:write")
        talent_id = self._path_id(request)
        expected_version = self._if_match(request, None)
        command = ArchiveTalent(talent_id=talent_id, expected_version=expected_version)
        talent = self._ok(
            await self._submit(request, principal.tenant_id, principal.actor, command)
        )
        return _json(talent, headers={"ETag": _etag(talent["version"])})

    async def talent_events(self, request: web.Request) -> web.Response:
        principal = await self._authenticate(request, "talents:read")
        talent_id = self._path_id(request)
        raw_after = request.query.get("afterVersion", "0")
        if not raw_after.isdigit() or len(raw_after) > 18:
            raise validation("afterVersion", "must be a non-negative integer")
        query = ListEvents(stream=f"talent-{talent_id}", after_version=int(raw_after), limit=1000)
        events = self._ok(await self._query(principal.tenant_id, query, self._consistency(request)))
        return _json({"items": events})

    # ------------------------------------------------------------------ cluster membership

    def _membership(self) -> Membership:
        """The configuration in this node's log. Read from the core's log between two
        steps of the event loop (the runtime never leaves it half-changed across an await)."""
        log = self.node.core.log
        members = [int(m) for m in log.config()]
        config_index = int(log.last_config_index())
        commit_index = int(log.commit_index)
        committed = config_index <= commit_index
        # The configuration at the commit index: the one a change in progress replaces.
        committed_members = members if committed else [int(m) for m in log.config_at(commit_index)]
        if config_index > 0:
            config_source = "log"
        elif log.snapshot.index > 0:
            config_source = "snapshot"
        elif self.node_id in members:
            config_source = "initial"
        else:
            # Started empty with --join (cluster.initial_state = "existing"): a member of
            # nothing until a leader adds it (its initial configuration leaves it out).
            config_source = "joining"
        view = status_view(self.node)
        progress: dict[str, MemberProgress] | None = None
        if view.role == "leader":
            status = self.node.status()
            progress = {
                str(self.node_id): MemberProgress(match_index=view.last_index, lag_entries=0)
            }
            for member, match in status.match_index.items():
                progress[str(member)] = MemberProgress(
                    match_index=int(match), lag_entries=max(0, view.last_index - int(match))
                )
        known = sorted(node.id for node in self.config.cluster.nodes)
        assert len(set(members)) == len(members), members
        return Membership(
            node_id=self.node_id,
            role=view.role,
            term=view.term,
            leader_id=view.leader_id,
            members=members,
            committed=committed,
            committed_members=committed_members,
            config_index=config_index,
            config_source=config_source,
            commit_index=commit_index,
            non_members=[node_id for node_id in known if node_id not in members],
            progress=progress,
        )

    async def list_members(self, request: web.Request) -> web.Response:
        self._authenticate_admin(request)
        return _json(self._membership())

    def _member_change(self, body: MemberChangeRequest, members: list[int]) -> ConfChange:
        if (body.add is None) == (body.remove is None):
            raise ApiProblem(
                422,
                "VALIDATION",
                'the body needs exactly one of "add" and "remove" (one server at a time)',
                field="add" if body.add is None else "remove",
            )
        op: Literal["add", "remove"] = "add" if body.add is not None else "remove"
        node_id = body.add if body.add is not None else body.remove
        assert node_id is not None
        known = [node.id for node in self.config.cluster.nodes]
        # A member whose address was dropped from this node's config can still be removed.
        if node_id not in known and not (op == "remove" and node_id in members):
            # Peers dial each other by the addresses in cluster.nodes: an id without one
            # could never be reached, and as a member it would only block quorums.
            raise ApiProblem(
                422,
                "VALIDATION",
                f"{op}: node {node_id} is not in cluster.nodes (ids with an address: "
                f"{sorted(known)}); add its address to every node's config first",
                field=op,
            )
        return ConfChange(op=op, node_id=node_id)

    def _member_done(self, change: ConfChange, members: list[int]) -> bool:
        """Whether `members` already has the shape `change` asks for."""
        return (change.node_id in members) == (change.op == "add")

    def _member_result(self, change: ConfChange, already_applied: bool) -> web.Response:
        membership = self._membership()
        leader_id = membership.leader_id if membership.leader_id is not None else self.node_id
        return _json(
            MemberChangeResult(
                op=change.op,
                node_id=change.node_id,
                already_applied=already_applied,
                members=membership.members,
                config_index=membership.config_index,
                leader_id=leader_id,
            )
        )

    async def _await_config_committed(self) -> bool:
        """Wait (up to the request timeout) until this node's latest configuration entry is
        committed and applied here; False if it is not by then or this node stops leading."""
        deadline_s = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline_s and self.node.is_leader:
            log = self.node.core.log
            config_index = int(log.last_config_index())
            if (
                config_index <= log.commit_index
                and config_index <= self.node.status().applied_index
            ):
                return True
            await asyncio.sleep(0.01)
        return False

    async def _propose_change(self, change: ConfChange) -> None:
        """Propose `change` and wait until it is applied here, within the request timeout.

        Raises _LeadershipLost if this node stops leading first and the change is not
        applied within a short grace: a deposed leader may never learn the outcome (a
        leader that removed itself gets no more entries once its removal is in force), and
        the client is better off retrying elsewhere now than waiting out the timeout.
        """
        proposal = asyncio.ensure_future(self.node.propose_conf_change(change))
        try:
            async with asyncio.timeout(self.timeout_s):
                while not proposal.done():
                    if not self.node.is_leader:
                        # Committing its own removal steps a leader down in the same step;
                        # the apply that answers the proposal follows at once.
                        await asyncio.wait({proposal}, timeout=_LEADERSHIP_LOST_GRACE_S)
                        if not proposal.done():
                            raise _LeadershipLost
                        break
                    await asyncio.wait({proposal}, timeout=_LEADERSHIP_POLL_S)
            proposal.result()
        finally:
            if not proposal.done():
                # Only the wait ends: an appended entry stays in the log and may commit.
                proposal.cancel()

    async def change_members(self, request: web.Request) -> web.Response:
        self._authenticate_admin(request)
        body: MemberChangeRequest = await self._body(request, MemberChangeRequest)
        change = self._member_change(body, [int(m) for m in self.node.core.log.config()])
        if not self.node.is_leader:
            raise _NotLeaderHere(self.node.status().leader_id)
        retry = {"Retry-After": "1"}
        log = self.node.core.log
        if self._member_done(change, [int(m) for m in log.config()]):
            # A retry of a change that went through (or a request for the shape the
            # cluster already has): report it done once its entry is committed.
            if await self._await_config_committed():
                return self._member_result(change, already_applied=True)
            raise ApiProblem(
                503,
                "OUTCOME_UNKNOWN",
                f"the configuration already {change.op}s node {change.node_id} but its entry "
                "is not committed yet; retry",
                headers=retry,
            )
        if change.op == "remove" and list(log.config()) == [change.node_id]:
            raise ApiProblem(
                409,
                "LAST_MEMBER",
                f"node {change.node_id} is the last member; a cluster cannot remove it",
                field="remove",
            )
        if int(log.last_config_index()) > int(log.commit_index):
            raise ApiProblem(
                409,
                "CHANGE_IN_PROGRESS",
                f"a configuration change to {list(log.config())} is not committed yet; "
                "one server at a time: retry once it is (GET /api/admin/members)",
                headers=retry,
            )
        try:
            await self._propose_change(change)
        except _LeadershipLost:
            raise ApiProblem(
                503,
                "OUTCOME_UNKNOWN",
                f"node {self.node_id} stopped leading before it knew the change committed; "
                "it may have been applied: retry the same request (a change already in "
                "effect answers 200 with alreadyApplied)",
                headers=retry,
            ) from None
        except NotLeader as exc:
            raise _NotLeaderHere(exc.leader_id) from None
        except ConfChangeRefused:
            # A change still uncommitted, or a fresh leader with no entry of its term yet.
            raise ApiProblem(
                409,
                "CHANGE_IN_PROGRESS",
                "the leader cannot take a configuration change now (a change is not "
                "committed yet, or it was just elected); retry shortly",
                headers=retry,
            ) from None
        except Overloaded as exc:
            raise ApiProblem(503, "OVERLOADED", str(exc), headers=retry) from None
        except ValueError as exc:
            # Raced with another change between the checks above and the proposal.
            raise ApiProblem(409, "MEMBERSHIP_CONFLICT", str(exc), headers=retry) from None
        except RequestError as exc:
            raise ApiProblem(
                503,
                "OUTCOME_UNKNOWN",
                f"{exc}; the change may have been applied: retry the same request "
                "(a change already in effect answers 200 with alreadyApplied)",
                headers=retry,
            ) from None
        except TimeoutError:
            raise ApiProblem(
                503,
                "TIMEOUT",
                f"the change did not commit within {self.timeout_s} s (is a majority of the "
                "new configuration up?); it may still be applied: retry the same request",
                headers=retry,
            ) from None
        self.logger.info("membership.changed", op=change.op, member=change.node_id)
        return self._member_result(change, already_applied=False)


METRICS: Final = web.AppKey("mox_api_metrics", ApiMetrics)


def runtime_counters(node: Any) -> RuntimeCounters:
    """The runtime's snapshot counts and storage-fault flag (zero for a node without stats)."""
    stats = getattr(node, "stats", None)
    return RuntimeCounters(
        snapshots_taken=int(getattr(stats, "snapshots_taken", 0)),
        snapshots_installed=int(getattr(stats, "snapshots_installed", 0)),
        storage_fault=getattr(node, "storage_fault", None) is not None,
    )


def create_app(
    node: NodeApi,
    config: MoxConfig,
    registry: CollectorRegistry,
    logger: FilteringBoundLogger,
    *,
    admin_token: str | None = None,
) -> web.Application:
    """The aiohttp application of one node.

    `registry` is this node's own Prometheus registry; `logger` a structlog logger (see
    `mox.api.logs.make_logger`). `admin_token` enables POST /api/tenants (bootstrap); if
    None, the environment variable MOX_ADMIN_TOKEN is used; if neither, bootstrap is off.
    The app's `ApiMetrics` is at `app[METRICS]`; its WAL fsync histogram is fed through the
    node's `on_wal_sync` hook, set here.
    """
    token = admin_token if admin_token is not None else os.environ.get("MOX_ADMIN_TOKEN") or None
    api = _Api(
        node,
        config,
        ApiMetrics(registry, lambda: status_view(node), lambda: runtime_counters(node)),
        logger,
        token,
    )
    app = web.Application(middlewares=[api.middleware], client_max_size=REQUEST_BODY_MAX_BYTES)
    app[METRICS] = api.metrics
    node.on_wal_sync = api.metrics.observe_wal_fsync
    app.on_cleanup.append(api.close)
    app.router.add_get("/health", api.health)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    app.router.add_get("/api/openapi.json", api.openapi)
    app.router.add_post("/api/tenants", api.create_tenant)
    app.router.add_get("/api/tenant", api.get_tenant)
    app.router.add_post("/api/keys", api.issue_key)
    app.router.add_delete("/api/keys/{id}", api.revoke_key)
    app.router.add_post("/api/talents", api.register_talent)
    app.router.add_get("/api/talents", api.list_talents)
    app.router.add_get("/api/talents/{id}", api.get_talent)
    app.router.add_patch("/api/talents/{id}", api.patch_talent)
    app.router.add_delete("/api/talents/{id}", api.delete_talent)
    app.router.add_get("/api/talents/{id}/events", api.talent_events)
    app.router.add_get("/api/admin/members", api.list_members)
    app.router.add_post("/api/admin/members", api.change_members)
    return app
