"""The API's shared request deadline (mox/api/app.py `_Deadlines`), on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from mox.api.app import _Deadlines


def test_unanswered_futures_fail_at_their_deadline_and_answered_ones_keep_results() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = _Deadlines(0.3)
        answered: asyncio.Future[bytes] = loop.create_future()
        cancelled: asyncio.Future[bytes] = loop.create_future()
        deadlines.watch(answered)
        deadlines.watch(cancelled)
        await asyncio.sleep(0.1)
        answered.set_result(b"ok")
        cancelled.cancel()
        late: asyncio.Future[bytes] = loop.create_future()
        started_s = loop.time()
        deadlines.watch(late)
        await asyncio.sleep(0.15)
        # Watched after `late`, both pending: only the earlier deadline has fired below.
        first: asyncio.Future[bytes] = loop.create_future()
        deadlines.watch(first)
        with pytest.raises(TimeoutError):
            await late
        waited_s = loop.time() - started_s
        assert 0.3 - 0.01 <= waited_s <= 0.3 + _Deadlines.SWEEP_S + 0.1, waited_s
        assert await answered == b"ok"
        assert cancelled.cancelled()
        assert not first.done()  # its own deadline has not come yet
        first.set_result(b"in time")
        await asyncio.sleep(0.3 + 2 * _Deadlines.SWEEP_S)
        assert first.result() == b"in time"
        assert deadlines._handle is None  # nothing left to watch: no timer keeps running

    asyncio.run(main())


def test_close_stops_the_sweeper() -> None:
    async def main() -> None:
        deadlines = _Deadlines(0.05)
        pending: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        deadlines.watch(pending)
        deadlines.close()
        await asyncio.sleep(0.2)
        assert not pending.done()

    asyncio.run(main())
