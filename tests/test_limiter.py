"""Unit tests of bot/limiter.py: per-user cap, the global FIFO queue, positions, releases."""

from __future__ import annotations

import asyncio

import pytest

from bot.limiter import GenerationLimiter, UserBusy


async def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GenerationLimiter(max_concurrent=0, max_per_user=1)
    with pytest.raises(ValueError):
        GenerationLimiter(max_concurrent=1, max_per_user=0)


async def test_per_user_cap_raises_user_busy_and_frees_on_release() -> None:
    limiter = GenerationLimiter(max_concurrent=5, max_per_user=2)
    first = limiter.claim(1)
    second = limiter.claim(1)
    with pytest.raises(UserBusy) as caught:
        limiter.claim(1)
    assert caught.value.limit == 2
    other = limiter.claim(2)  # another user is not affected
    assert limiter.in_flight(1) == 2
    assert limiter.in_flight(2) == 1
    first.release()
    assert limiter.in_flight(1) == 1
    third = limiter.claim(1)
    for ticket in (second, third, other):
        ticket.release()
    assert limiter.in_flight(1) == 0
    assert limiter.in_flight(2) == 0


async def test_slots_are_granted_in_fifo_order_with_positions() -> None:
    limiter = GenerationLimiter(max_concurrent=1, max_per_user=10)
    running = limiter.claim(1)
    assert running.try_acquire() is True
    assert running.position == 0
    waiting = [limiter.claim(user) for user in (2, 3, 4)]
    for ticket in waiting:
        assert ticket.try_acquire() is False
        assert ticket.queued is True
    assert [t.position for t in waiting] == [1, 2, 3]
    assert limiter.running == 1
    assert limiter.queued == 3

    order: list[int] = []

    async def run(ticket_index: int) -> None:
        ticket = waiting[ticket_index]
        await ticket.wait()
        order.append(ticket.user_id)
        assert limiter.running == 1
        await asyncio.sleep(0)
        ticket.release()

    tasks = [asyncio.create_task(run(i)) for i in (2, 0, 1)]  # started out of order
    await asyncio.sleep(0.01)
    assert order == []  # nobody runs until the slot is given back
    running.release()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=2)
    assert order == [2, 3, 4]
    assert limiter.running == 0
    assert limiter.queued == 0


async def test_positions_move_up_as_the_queue_drains() -> None:
    limiter = GenerationLimiter(max_concurrent=2, max_per_user=10)
    holders = [limiter.claim(u) for u in (1, 2)]
    assert all(t.try_acquire() for t in holders)
    a, b = limiter.claim(3), limiter.claim(4)
    assert not a.try_acquire()
    assert not b.try_acquire()
    assert (a.position, b.position) == (1, 2)
    holders[0].release()
    await asyncio.wait_for(a.wait(), timeout=1)
    assert (a.position, b.position) == (0, 1)
    assert limiter.running == 2


async def test_new_request_does_not_jump_the_queue() -> None:
    limiter = GenerationLimiter(max_concurrent=1, max_per_user=10)
    holder = limiter.claim(1)
    assert holder.try_acquire()
    waiter = limiter.claim(2)
    assert not waiter.try_acquire()
    holder.release()  # the slot goes straight to the waiter
    late = limiter.claim(3)
    assert late.try_acquire() is False
    assert late.position == 1
    await asyncio.wait_for(waiter.wait(), timeout=1)
    waiter.release()
    await asyncio.wait_for(late.wait(), timeout=1)
    late.release()
    assert limiter.running == 0


async def test_cancelled_waiter_leaves_the_queue_and_frees_the_user() -> None:
    limiter = GenerationLimiter(max_concurrent=1, max_per_user=1)
    holder = limiter.claim(1)
    assert holder.try_acquire()
    quitter = limiter.claim(2)
    after = limiter.claim(3)

    async def wait_then_release(ticket) -> None:
        async with ticket:
            ticket.try_acquire()
            await ticket.wait()

    quitting = asyncio.create_task(wait_then_release(quitter))
    await asyncio.sleep(0.01)
    assert not after.try_acquire()
    assert (quitter.position, after.position) == (1, 2)
    quitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitting
    assert after.position == 1
    assert limiter.in_flight(2) == 0
    limiter.claim(2).release()  # user 2 may ask again
    holder.release()
    await asyncio.wait_for(after.wait(), timeout=1)  # the slot skipped the cancelled one
    assert limiter.running == 1
    after.release()
    assert limiter.running == 0
    assert limiter.queued == 0


async def test_release_of_a_ticket_that_never_queued() -> None:
    limiter = GenerationLimiter(max_concurrent=1, max_per_user=1)
    ticket = limiter.claim(1)
    ticket.release()  # claimed (e.g. then refused by the quota) but never acquired
    assert limiter.running == 0
    assert limiter.in_flight(1) == 0
    assert limiter.claim(1).try_acquire() is True


async def test_double_release_is_safe() -> None:
    limiter = GenerationLimiter(max_concurrent=1, max_per_user=2)
    first = limiter.claim(1)
    assert first.try_acquire()
    other = limiter.claim(1)
    assert not other.try_acquire()
    first.release()
    first.release()  # must not free a second slot nor the user's other claim
    assert limiter.running == 1
    assert limiter.in_flight(1) == 1
    await asyncio.wait_for(other.wait(), timeout=1)
    async with other:
        pass
    other.release()
    assert limiter.running == 0
    assert limiter.in_flight(1) == 0
    # Over-release did not create spare capacity: one slot, so a second holder must queue.
    a, b = limiter.claim(5), limiter.claim(6)
    assert a.try_acquire()
    assert not b.try_acquire()
    a.release()
    b.release()


async def test_many_waiters_bounded_concurrency() -> None:
    limiter = GenerationLimiter(max_concurrent=3, max_per_user=1)
    active = 0
    peak = 0
    finished: list[int] = []

    async def job(user: int) -> None:
        nonlocal active, peak
        async with limiter.claim(user) as ticket:
            if not ticket.try_acquire():
                await ticket.wait()
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.001)
            active -= 1
            finished.append(user)

    await asyncio.wait_for(asyncio.gather(*(job(u) for u in range(30))), timeout=5)
    assert peak == 3
    assert sorted(finished) == list(range(30))
    assert limiter.running == 0
    assert limiter.queued == 0


# -- the adaptive limit (AIMD on the images service's 429s) ----------------------------------------


async def test_a_429_halves_the_limit_once_per_retry_after_window() -> None:
    now = [100.0]
    limiter = GenerationLimiter(max_concurrent=16, max_per_user=1, monotonic=lambda: now[0])
    assert limiter.limit == 16
    limiter.throttled(2.0)
    assert limiter.limit == 8
    limiter.throttled(2.0)  # the same storm, within its Retry-After: counted once
    now[0] += 1.9
    limiter.throttled(None)
    assert limiter.limit == 8
    now[0] += 0.2
    limiter.throttled(None)  # a new window; without Retry-After it lasts 1 s
    assert limiter.limit == 4
    now[0] += 0.9
    limiter.throttled(0.0)
    assert limiter.limit == 4
    for _ in range(5):
        now[0] += 1.1
        limiter.throttled(None)
    assert limiter.limit == 1  # never below one


async def test_successes_give_slots_back_up_to_the_ceiling_and_wake_waiters() -> None:
    now = [0.0]
    limiter = GenerationLimiter(max_concurrent=3, max_per_user=1, monotonic=lambda: now[0])
    limiter.throttled(None)
    assert limiter.limit == 1
    first, second, third = (limiter.claim(user) for user in (1, 2, 3))
    assert first.try_acquire() is True
    assert second.try_acquire() is False  # the limit, not the ceiling, decides
    assert third.try_acquire() is False
    limiter.succeeded()  # limit 2: the next in line runs now, the third still waits
    await asyncio.wait_for(second.wait(), 1)
    assert limiter.running == 2
    assert third.position == 1
    limiter.succeeded()
    await asyncio.wait_for(third.wait(), 1)
    limiter.succeeded()
    assert limiter.limit == 3
    for ticket in (first, second, third):
        ticket.release()
    assert limiter.running == 0


async def test_release_slot_wakes_the_next_and_keeps_the_users_claim() -> None:
    limiter = GenerationLimiter(max_concurrent=1, max_per_user=1)
    first = limiter.claim(1)
    assert first.try_acquire()
    second = limiter.claim(2)
    assert not second.try_acquire()
    first.release_slot()
    await asyncio.wait_for(second.wait(), 1.0)
    assert limiter.running == 1
    # The first user's request is still being delivered: their claim holds.
    with pytest.raises(UserBusy):
        limiter.claim(1)
    first.release_slot()
    first.release()  # the slot is not given back twice
    assert limiter.running == 1
    assert limiter.in_flight(1) == 0
    second.release()
    assert limiter.running == 0


async def test_release_slot_before_a_slot_is_granted_does_nothing() -> None:
    limiter = GenerationLimiter(max_concurrent=1, max_per_user=5)
    holder = limiter.claim(1)
    assert holder.try_acquire()
    waiting = limiter.claim(2)
    assert not waiting.try_acquire()
    waiting.release_slot()
    assert limiter.running == 1
    assert waiting.position == 1
    waiting.release()
    holder.release()
    assert limiter.running == 0
    assert limiter.queued == 0


async def test_replicas_share_the_deployments_ceiling() -> None:
    limiter = GenerationLimiter(max_concurrent=10, max_per_user=5)
    limiter.share(3)  # three live replicas: three slots each (never more than 10 in all)
    assert (limiter.max_concurrent, limiter.limit) == (3, 3)
    limiter.share(20)  # more replicas than slots: one each still
    assert (limiter.max_concurrent, limiter.limit) == (1, 1)
    limiter.share(1)  # alone again: the whole ceiling, reached one success at a time
    assert (limiter.max_concurrent, limiter.limit) == (10, 1)
    for _ in range(20):
        limiter.succeeded()
    assert limiter.limit == 10
