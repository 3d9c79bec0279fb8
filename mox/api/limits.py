"""Admission limits of the client API: `limits.max_events_per_second`, `api.max_connections`.

Both protect a node from more load than it can take, and both refuse with an answer the
client can act on, never by silently dropping:

* `RateLimiter` is a token bucket over write commands. Each write request the node accepts
  takes one token; the bucket refills at `rate_per_s` and holds at most one second's worth,
  so a burst after an idle second is admitted and a sustained overload is refused with the
  time until the next token (the API answers 429 with `Retry-After`). It is applied where
  a command is proposed, i.e. on the leader, which sees every write of the cluster: the
  limit is cluster-wide for as long as one node leads. A command appends at least one
  event, so the events per second in the log are at least the commands admitted.
* `serve_limited` listens like aiohttp's `TCPSite`, but a connection beyond
  `max_connections` open ones is answered at once with a 503 problem and closed, before
  any request of it is read; connections below the limit are served by aiohttp as usual.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, cast

import msgspec
from aiohttp import web

from mox.api.problems import PROBLEM_CONTENT_TYPE

__all__ = ["RateLimiter", "TooManyConnections", "serve_limited"]


_EPSILON: Final = 1e-9


class RateLimiter:
    """A token bucket: `rate_per_s` admissions per second, bursts up to one second's worth."""

    def __init__(self, rate_per_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        assert rate_per_s >= 1, rate_per_s
        self.rate_per_s = rate_per_s
        self.capacity = float(rate_per_s)
        self._clock = clock
        self._tokens = self.capacity
        self._updated_s = clock()
        self.refused = 0

    def admit(self) -> float:
        """Takes a token: 0.0 if admitted, else the seconds until a token is available."""
        now_s = self._clock()
        elapsed_s = max(0.0, now_s - self._updated_s)
        self._updated_s = now_s
        self._tokens = min(self.capacity, self._tokens + elapsed_s * self.rate_per_s)
        # A token up to rounding counts: refill arithmetic in floats loses the last bits.
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        self.refused += 1
        wait_s = (1.0 - self._tokens) / self.rate_per_s
        assert wait_s > 0, wait_s
        return wait_s


_REFUSAL_BODY: Final = msgspec.json.encode(
    {
        "type": "urn:mox:problem:too-many-connections",
        "title": "Service unavailable",
        "status": 503,
        "detail": "this node has api.max_connections connections open; retry shortly",
        "code": "TOO_MANY_CONNECTIONS",
    }
)
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    + f"Content-Type: {PROBLEM_CONTENT_TYPE}\r\n".encode()
    + f"Content-Length: {len(_REFUSAL_BODY)}\r\n".encode()
    + b"Retry-After: 1\r\nConnection: close\r\n\r\n"
    + _REFUSAL_BODY
)


class TooManyConnections(asyncio.Protocol):
    """The protocol of a connection over the limit: one 503 response, then close.

    The request is not read: the answer is sent at once, and the connection is closed after
    it (a client that is still sending gets the response or a reset, either way no hang)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport instances: typed by cast.
        stream = cast(asyncio.WriteTransport, transport)
        stream.write(_REFUSAL)
        stream.close()

    def data_received(self, data: bytes) -> None:
        pass


async def serve_limited(
    runner: web.AppRunner,
    host: str,
    port: int,
    max_connections: int,
    on_refused: Callable[[], None] | None = None,
) -> asyncio.Server:
    """Listens on host:port for `runner`'s app (after `runner.setup()`).

    Close the returned server (`close()` + `wait_closed()`) before `runner.cleanup()`.
    Raises OSError if the address cannot be bound."""
    assert max_connections >= 1, max_connections
    server = runner.server
    assert server is not None, "runner.setup() first"

    def factory() -> asyncio.BaseProtocol:
        if len(server.connections) >= max_connections:
            if on_refused is not None:
                on_refused()
            return TooManyConnections()
        return server()

    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, host, port, reuse_address=True)
