"""Admission limits (mox/api/limits.py): the write rate bucket and the connection cap,
the latter on real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from mox.api.limits import RateLimiter, serve_limited


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_rate_limiter_admits_a_burst_of_one_second_then_refuses_with_the_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock)
    assert [limiter.admit() for _ in range(10)] == [0.0] * 10
    wait_s = limiter.admit()
    assert abs(wait_s - 0.1) < 1e-9, wait_s
    assert limiter.refused == 1
    clock.now_s += 0.05
    assert abs(limiter.admit() - 0.05) < 1e-9  # half a token so far
    clock.now_s += 0.05
    assert limiter.admit() == 0.0
    assert limiter.admit() > 0.0


def test_rate_limiter_sustains_its_rate_and_never_saves_more_than_a_second() -> None:
    clock = Clock()
    limiter = RateLimiter(50, clock)
    clock.now_s += 3600  # idle for an hour: still one second's worth of burst
    admitted = 0
    for _ in range(1000):
        if limiter.admit() == 0.0:
            admitted += 1
    assert admitted == 50
    # Over 10 s of steady offers (1 ms apart), 50 per second are admitted, plus the burst.
    admitted = 0
    for _ in range(10_000):
        clock.now_s += 0.001
        if limiter.admit() == 0.0:
            admitted += 1
    assert 500 <= admitted <= 501, admitted


async def raw_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str = "/"
) -> tuple[int, bytes]:
    """One keep-alive GET written by hand on an open connection: (status, body)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return status, await reader.readexactly(length)


def test_connections_beyond_the_limit_get_a_503_problem_and_are_closed() -> None:
    async def scenario() -> None:
        async def hello(_request: web.Request) -> web.Response:
            return web.Response(text="hello")

        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        refused: list[int] = []
        server = await serve_limited(
            runner, "127.0.0.1", 0, max_connections=2, on_refused=lambda: refused.append(1)
        )
        port = server.sockets[0].getsockname()[1]
        try:
            first = await asyncio.open_connection("127.0.0.1", port)
            second = await asyncio.open_connection("127.0.0.1", port)
            assert await raw_get(*first) == (200, b"hello")
            assert await raw_get(*second) == (200, b"hello")

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            status, body = await raw_get(reader, writer)
            assert status == 503
            problem = json.loads(body)
            assert problem["code"] == "TOO_MANY_CONNECTIONS"
            assert "api.max_connections" in problem["detail"]
            assert await reader.read() == b""  # closed by the node
            writer.close()
            assert refused == [1]

            # The open connections still work; closing one frees a place.
            assert await raw_get(*first) == (200, b"hello")
            first[1].close()
            await first[1].wait_closed()
            for _ in range(200):
                third = await asyncio.open_connection("127.0.0.1", port)
                status, _ = await raw_get(*third)
                third[1].close()
                if status == 200:
                    break
                await asyncio.sleep(0.01)  # the server has not seen the close yet
            assert status == 200
            second[1].close()
        finally:
            server.close()
            await server.wait_closed()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(scenario(), 30))
