"""Flood pacing shared by replicas (`PostgresStore.pace`) on a real server: what three stores
book at once never goes over one token bucket, and the bookings are spread, not all let through."""

from __future__ import annotations

import asyncio
import time

from bot.flood import BOT_PER_SECOND
from bot.store.postgres import PostgresStore
from tests.conftest import fixed_clock

RATE = float(BOT_PER_SECOND)
BURST = BOT_PER_SECOND


def lowest_tokens(times: list[float], *, rate: float, burst: int) -> float:
    """Return the fewest tokens a bucket (rate, burst), as Telegram's, holds before one of the
    messages sent at `times` (below 1: that one would be refused)."""
    tokens, last, lowest = float(burst), min(times), float(burst)
    for at in sorted(times):
        tokens = min(float(burst), tokens + (at - last) * rate)
        last = at
        lowest = min(lowest, tokens)
        tokens -= 1
    return lowest


async def test_three_replicas_booking_at_once_share_one_bucket(
    pg_replicas: list[PostgresStore],
) -> None:
    async def book(store: PostgresStore) -> float:
        wait = await store.pace("bot", per_second=RATE, burst=BURST, weight=1)
        assert wait is not None
        return time.monotonic() + wait  # when this message may go

    # 30 messages per replica: together 90, over three times the burst.
    sends = await asyncio.gather(*(book(store) for store in pg_replicas for _ in range(30)))
    # Telegram's bucket (30 a second, 30 at once) refuses none of them...
    lowest = lowest_tokens(sends, rate=30.0, burst=30)
    assert lowest >= 1, lowest
    # ...and they keep to the bot's own budget of 25, give or take the jitter of reading each
    # send time here, a round trip after the server booked it: a few ms on a quiet machine, up
    # to ~100 ms (a few tokens) on a loaded one, where 90 coroutines share one event loop. The
    # span checks below catch a bucket that lets everything through.
    lowest = lowest_tokens(sends, rate=RATE, burst=BURST)
    assert lowest > -4, lowest
    # Not everything let through: 90 messages need (90 - 25) / 25 = 2.6 s at least.
    assert max(sends) - min(sends) >= (90 - BURST) / RATE - 0.1
    # ...and not much more than that either (the bucket is used, not wasted).
    assert max(sends) - min(sends) < (90 - BURST) / RATE + 1.5


async def test_buckets_are_apart_and_an_album_counts_its_items(
    pg_replicas: list[PostgresStore],
) -> None:
    first, second, _ = pg_replicas
    group = {"per_second": 19 / 60, "burst": 19}
    assert await first.pace("group:-1", weight=10, **group) == 0.0
    assert await second.pace("group:-1", weight=9, **group) == 0.0
    wait = await first.pace("group:-1", weight=1, **group)
    assert wait is not None and 2.5 < wait <= 60 / 19 + 0.1  # the 20th waits for one refill
    assert await second.pace("group:-2", weight=10, **group) == 0.0  # another group: its own


async def test_a_closed_store_answers_none_and_the_process_paces_alone(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url, clock=fixed_clock)
    await store.close()
    assert await store.pace("bot", per_second=RATE, burst=BURST, weight=1) is None
