"""The registry of requests in flight and its one cancel step (`bot.running`)."""

from __future__ import annotations

import asyncio

import pytest

from bot.running import Cancelled, RunningRequests


async def test_cancel_stops_the_work_and_raises_cancelled() -> None:
    requests = RunningRequests()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()
        return "never"

    async with requests.track(user_id=1, chat_id=2, message_id=3) as request:
        runner = asyncio.create_task(request.run(work()))
        await asyncio.wait_for(started.wait(), 5)
        assert requests.cancel(request.id) is True
        with pytest.raises(Cancelled):
            await asyncio.wait_for(runner, 5)
        assert stopped.is_set()
        assert requests.cancel(request.id) is False  # once
    assert requests.get(request.id) is None
    assert len(requests) == 0


async def test_a_request_cancelled_before_it_runs_never_starts() -> None:
    requests = RunningRequests()
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    async with requests.track(user_id=1, chat_id=2, message_id=3) as request:
        assert requests.cancel(request.id)
        with pytest.raises(Cancelled):
            await request.run(work())
    assert not ran


async def test_no_cancel_once_closed_or_finished() -> None:
    requests = RunningRequests()

    async def work() -> int:
        return 7

    async with requests.track(user_id=1, chat_id=2, message_id=3) as request:
        assert await request.run(work()) == 7
        request.close()
        assert requests.cancel(request.id) is False
        assert requests.of(user_id=1, chat_id=2) == []


async def test_shutting_down_stays_a_cancellation() -> None:
    requests = RunningRequests()
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(30)

    async def handler() -> None:
        async with requests.track(user_id=1, chat_id=2, message_id=3) as request:
            await request.run(work())

    task = asyncio.create_task(handler())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_requests_are_found_by_user_chat_and_message() -> None:
    requests = RunningRequests()
    async with (
        requests.track(user_id=1, chat_id=10, message_id=100) as a,
        requests.track(user_id=1, chat_id=10, message_id=101) as b,
        requests.track(user_id=2, chat_id=10, message_id=102) as c,
        requests.track(user_id=1, chat_id=11, message_id=100) as d,
    ):
        b.attach(200)  # its status message
        assert requests.of(user_id=1, chat_id=10) == [a, b]
        assert requests.of(user_id=1, chat_id=10, message_id=200) == [b]
        assert requests.of(user_id=1, chat_id=10, message_id=102) == []  # someone else's
        assert requests.of(user_id=2, chat_id=10) == [c]
        assert requests.of(user_id=1, chat_id=11) == [d]
        assert len({a.id, b.id, c.id, d.id}) == 4
