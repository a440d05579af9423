"""End to end: the bot-wide generation limit adapts to the images service's 429s.

Through the real Application and images client against the images emulator: default settings
let a burst of 50 users run at once; a storm of 429s lowers the limit, so the backend then sees
fewer requests at once; successful calls raise it back to the ceiling (MAX_CONCURRENT_GENERATIONS).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.emulators.openai_images import Fault

CEILING = 8


async def _burst(bot: Any, users: range, text: str) -> list[dict[str, Any]]:
    return [bot.send(text, user_id=user) for user in users]


async def _busy_reply(bot: Any, message: dict[str, Any], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        texts = [m.text or "" for m in await bot.replies(message, kinds=("text",), timeout=timeout)]
        if any("busy" in text.lower() for text in texts):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no 'service busy' reply to {message['message_id']}")


async def test_default_settings_run_a_burst_of_50_users_at_once(make_bot) -> None:
    async with make_bot() as bot:
        bot.oai.delay = 3.0
        messages = await _burst(bot, range(3001, 3051), "/image a crowd of alpacas")
        for message in messages:
            await bot.replies(message, kinds=("photo",), timeout=30)
        assert bot.oai.peak_in_flight == 50
        assert len(bot.oai.api_requests) == 50


async def test_a_429_storm_lowers_the_limit_and_successes_raise_it(make_bot) -> None:
    async with make_bot(MAX_CONCURRENT_GENERATIONS=str(CEILING)) as bot:
        limiter = bot.services.limiter
        assert limiter.limit == CEILING
        # Every attempt of the first CEILING requests is refused (3 attempts each).
        bot.oai.queue_faults([Fault.http(429, retry_after=0.05)] * (3 * CEILING))
        storm = await _burst(bot, range(4001, 4001 + CEILING), "/image storm")
        for message in storm:  # some wait their turn (the limit drops meanwhile): a status first
            await _busy_reply(bot, message)
        assert len(bot.oai.api_requests) == 3 * CEILING
        lowered = limiter.limit
        assert 1 <= lowered <= CEILING // 2

        # The next burst reaches the backend fewer at a time, and its successes restore the limit.
        bot.oai.reset()
        bot.oai.delay = 0.4
        calm = await _burst(bot, range(5001, 5001 + CEILING), "/image calm")
        for message in calm:
            await bot.replies(message, kinds=("photo",), timeout=15)
        assert bot.oai.peak_in_flight <= CEILING // 2
        assert len(bot.oai.api_requests) == CEILING  # nobody dropped
        assert limiter.limit == CEILING

        # Back at the ceiling: a burst runs CEILING at once again.
        bot.oai.reset()
        bot.oai.delay = 1.5
        again = await _burst(bot, range(6001, 6001 + CEILING), "/image again")
        for message in again:
            await bot.replies(message, kinds=("photo",), timeout=15)
        assert bot.oai.peak_in_flight == CEILING
