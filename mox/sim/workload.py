"""Simulated clients: writes, linearizable reads and stale reads on a few talents.

Each client is sequential (one operation at a time), has a client id, and numbers its
writes (request_seq), so a retry of the same write is applied exactly once (the state
machine's sessions dedupe it). A write sets one talent's `displayName` to a value unique
in the run; a read gets the talent and returns its `displayName`. The talent ids are the
keys of the key-value history the linearizability checker reads.

Some linearizable reads (`any_node_read_fraction`) go to a random running node, leader or
follower (a follower serves them through the leader's read index), so the linearizability
check covers follower reads; every attempt of such a read picks a node afresh. The others
go to the leader, as writes do.

Retry policy: an attempt that is refused (`NotLeader`, `Overloaded`) definitely did not
apply, so it is retried at the leader the refusal named (or a random running node); an
attempt that timed out, or whose proposal was dropped, or whose node crashed, may have
applied, so the same command (same request_seq) is retried, and if every attempt ends like
that the operation's outcome is recorded as unknown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from checker.lin import HistoryRecorder, LinOp
from mox.io.interfaces import Clock, Random
from mox.node.errors import NotLeader, Overloaded, RequestError
from mox.statemachine.commands import (
    CreateTenant,
    GetTalent,
    NewApiKey,
    RegisterTalent,
    UpdateProfile,
    decode_result,
    encode_command,
    encode_query,
    make_command,
)

__all__ = ["ClusterAccess", "NodeApi", "Workload", "WorkloadConfig", "WorkloadStats"]

TENANT_ID = "simtenant"


class NodeApi(Protocol):
    """What a client needs of a node (`mox.node.runtime.Node` provides it)."""

    async def submit(self, command: bytes) -> bytes: ...

    async def read(self, query: bytes, *, linearizable: bool = True) -> bytes: ...


class ClusterAccess(Protocol):
    """The nodes a client can reach: a running node, or None while it is down."""

    @property
    def node_ids(self) -> tuple[int, ...]: ...

    def running_node(self, node_id: int) -> NodeApi | None: ...


@attrs.frozen
class WorkloadConfig:
    clients: int = 3
    keys: int = 3
    write_fraction: float = 0.5
    stale_read_fraction: float = 0.15
    # Of the linearizable reads, the fraction sent to a random node (a follower two times in
    # three on three nodes); the others go to the leader the client knows.
    any_node_read_fraction: float = 0.5
    think_time_ms_max: float = 30.0
    attempt_timeout_s: float = 1.0
    attempts_max: int = 6
    retry_backoff_ms: float = 20.0


@attrs.define
class WorkloadStats:
    writes_ok: int = 0
    writes_unknown: int = 0
    writes_failed: int = 0
    reads_ok: int = 0
    reads_failed: int = 0
    stale_reads_ok: int = 0
    stale_reads_failed: int = 0
    attempts: int = 0
    retries: int = 0
    # (key, value) of every acknowledged write, for the end-of-run durability check.
    acked_writes: list[tuple[str, str]] = attrs.field(factory=list)


class _AttemptsExhausted(Exception):
    def __init__(self, maybe_applied: bool) -> None:
        super().__init__("attempts exhausted")
        self.maybe_applied = maybe_applied


def talent_id(key_index: int) -> str:
    return f"talent{key_index}"


def initial_name(key_index: int) -> str:
    return f"initial{key_index}"


class Workload:
    """Clients over a cluster, recording every operation in `history`."""

    def __init__(
        self,
        cluster: ClusterAccess,
        rng: Random,
        clock: Clock,
        config: WorkloadConfig,
        history: HistoryRecorder,
    ) -> None:
        assert config.clients >= 1
        assert config.keys >= 1
        self._cluster = cluster
        self._rng = rng
        self._clock = clock
        self.config = config
        self.history = history
        self.stats = WorkloadStats()
        self._leader_guess: dict[str, int | None] = {}
        self._seq: dict[str, int] = {}
        self.setup_done = False

    @property
    def initial_values(self) -> dict[str, Any]:
        return {talent_id(k): initial_name(k) for k in range(self.config.keys)}

    def _now_ns(self) -> int:
        return self._clock.monotonic_ns()

    def _next_seq(self, client: str) -> int:
        self._seq[client] = self._seq.get(client, 0) + 1
        return self._seq[client]

    # -- setup -------------------------------------------------------------------------

    async def setup(self, stop: asyncio.Event) -> None:
        """Create the tenant and the talents, retrying until acknowledged or `stop`."""
        client = "setup"
        tenant = make_command(
            CreateTenant(
                slug="sim-tenant",
                name="Simulation",
                owner_key=NewApiKey(
                    key_id="simkey", secret_sha256="0" * 64, scopes=["tenant:admin", "talents:read", "talents:write"]
                ),
            ),
            tenant_id=TENANT_ID,
            client_id=client,
            request_seq=self._next_seq(client),
        )
        await self._until_acked(encode_command(tenant), client, stop)
        for k in range(self.config.keys):
            register = make_command(
                RegisterTalent(talent_id=talent_id(k), display_name=initial_name(k)),
                tenant_id=TENANT_ID,
                client_id=client,
                request_seq=self._next_seq(client),
            )
            await self._until_acked(encode_command(register), client, stop)
        self.setup_done = not stop.is_set()

    async def _until_acked(self, command: bytes, client: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                result = decode_result(await self._submit(client, command))
            except _AttemptsExhausted:
                continue
            assert result.ok, f"setup command failed: {result.code} {result.detail}"
            return

    # -- clients -----------------------------------------------------------------------

    async def run_client(self, client_index: int, stop: asyncio.Event) -> None:
        client = f"client{client_index}"
        config = self.config
        while not stop.is_set():
            key = talent_id(self._rng.randrange(0, config.keys))
            draw = self._rng.random()
            if draw < config.write_fraction:
                await self._write(client, key)
            elif draw < config.write_fraction + config.stale_read_fraction:
                await self._stale_read(client, key)
            else:
                await self._read(client, key)
            await asyncio.sleep(self._rng.random() * config.think_time_ms_max / 1000.0)

    async def _write(self, client: str, key: str) -> None:
        seq = self._next_seq(client)
        value = f"{client}-{seq}"
        command = encode_command(
            make_command(
                UpdateProfile(talent_id=key, display_name=value),
                tenant_id=TENANT_ID,
                client_id=client,
                request_seq=seq,
                issued_at_ms=self._clock.wall_ns() // 1_000_000,
            )
        )
        op = self.history.invoke(client, "write", key, value, self._now_ns())
        try:
            result = decode_result(await self._submit(client, command))
        except _AttemptsExhausted as exc:
            if exc.maybe_applied:
                self.history.unknown(op, self._now_ns())
                self.stats.writes_unknown += 1
            else:
                self.history.fail(op, self._now_ns())
                self.stats.writes_failed += 1
            return
        if result.ok:
            self.history.ok(op, self._now_ns())
            self.stats.writes_ok += 1
            self.stats.acked_writes.append((key, value))
        else:
            # A domain error changes nothing (the state machine writes only the session).
            assert False, f"write of {key} rejected: {result.code} {result.detail}"

    async def _read(self, client: str, key: str) -> None:
        query = encode_query(TENANT_ID, GetTalent(talent_id=key))
        any_node = self._rng.random() < self.config.any_node_read_fraction
        op = self.history.invoke(client, "read", key, None, self._now_ns())
        try:
            raw = await self._attempts(
                client, lambda node: node.read(query, linearizable=True), any_node=any_node
            )
        except _AttemptsExhausted:
            # A read changes nothing: failed and unknown are the same to the checker.
            self.history.fail(op, self._now_ns())
            self.stats.reads_failed += 1
            return
        self._complete_read(op, key, raw)
        self.stats.reads_ok += 1

    async def _stale_read(self, client: str, key: str) -> None:
        query = encode_query(TENANT_ID, GetTalent(talent_id=key))
        op = self.history.invoke(client, "read", key, None, self._now_ns(), stale=True)
        node_id = self._random_running()
        node = self._cluster.running_node(node_id) if node_id is not None else None
        if node is None:
            self.history.fail(op, self._now_ns())
            self.stats.stale_reads_failed += 1
            return
        try:
            raw = await asyncio.wait_for(
                node.read(query, linearizable=False), self.config.attempt_timeout_s
            )
        except (RequestError, TimeoutError):
            self.history.fail(op, self._now_ns())
            self.stats.stale_reads_failed += 1
            return
        self._complete_read(op, key, raw)
        self.stats.stale_reads_ok += 1

    def _complete_read(self, op: LinOp, key: str, raw: bytes) -> None:
        result = decode_result(raw)
        if result.ok:
            talent = result.decode_value(dict[str, Any])
            self.history.ok(op, self._now_ns(), talent["displayName"])
        else:
            # NOT_FOUND before setup finished on a lagging replica: the talent is absent.
            assert result.code == "NOT_FOUND", (result.code, result.detail)
            self.history.ok(op, self._now_ns(), None)

    # -- attempts ----------------------------------------------------------------------

    async def _submit(self, client: str, command: bytes) -> bytes:
        return await self._attempts(client, lambda node: node.submit(command))

    def _random_running(self) -> int | None:
        ids = self._cluster.node_ids
        start = self._rng.randrange(0, len(ids))
        for offset in range(len(ids)):
            node_id = ids[(start + offset) % len(ids)]
            if self._cluster.running_node(node_id) is not None:
                return node_id
        return None

    async def _attempts(
        self, client: str, call: Callable[[NodeApi], Any], *, any_node: bool = False
    ) -> bytes:
        """`call` at the leader this client guesses (or, `any_node`, at a random running
        node), retried as the module docstring says."""
        config = self.config
        maybe_applied = False
        for attempt in range(config.attempts_max):
            if attempt > 0:
                self.stats.retries += 1
                await asyncio.sleep(config.retry_backoff_ms * (1 + self._rng.random()) / 1000.0)
            target = None if any_node else self._leader_guess.get(client)
            node = self._cluster.running_node(target) if target is not None else None
            if node is None:
                target = self._random_running()
                node = self._cluster.running_node(target) if target is not None else None
            if node is None:
                continue
            self.stats.attempts += 1
            try:
                raw: bytes = await asyncio.wait_for(call(node), config.attempt_timeout_s)
            except NotLeader as exc:
                if not any_node:
                    self._leader_guess[client] = exc.leader_id
                continue
            except Overloaded:
                continue
            except RequestError as exc:
                maybe_applied = maybe_applied or exc.maybe_applied
                if not any_node:
                    self._leader_guess[client] = None
                continue
            except TimeoutError:
                maybe_applied = True
                if not any_node:
                    self._leader_guess[client] = None
                continue
            if not any_node:
                self._leader_guess[client] = target
            return raw
        raise _AttemptsExhausted(maybe_applied)
