"""Pacing of the bot's outgoing Telegram messages, chat by chat (no `telegram` import here).

Telegram allows about 30 messages a second for the whole bot and about 20 a minute in one group,
and answers 429 with `retry_after` for one chat when that chat is flooded. `FloodGate` keeps a
bot-wide sliding window a little under the first, a per-group window under the second, and a
"not before" time per chat that a 429 sets, so that one flooded chat waits alone while every other
chat goes on. The adaptor that plugs it into python-telegram-bot is `bot.app.FloodControl`.

    gate = FloodGate()
    await gate.before_send(chat_id, weight=1)    # waits as long as needed, for this chat only
    gate.penalize(chat_id, retry_after)          # after Telegram's 429 for that chat

Several replicas serving one bot share Telegram's limits, so with `shared` (a `SharedPace`:
`PostgresStore.pace`) the bot-wide and per-group budgets are booked in the shared store too, as
token buckets every replica draws from (GCRA: one round trip books a slot and says how long to
wait for it), before the process's own windows; when the store cannot be asked, the process's
windows alone pace it. See DEVELOPERS.md, "Several replicas".
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Protocol

BOT_PER_SECOND = 25  # Telegram: about 30
GROUP_PER_MINUTE = 19  # Telegram: 20
_FORGET_AFTER = 120.0  # seconds after which an idle group window is dropped


class SharedPace(Protocol):
    """Token buckets shared by every replica of the bot."""

    async def __call__(
        self, key: str, *, per_second: float, burst: int, weight: int
    ) -> float | None:
        """Book `weight` messages on bucket `key` (refilled at `per_second`, holding at most
        `burst`); return the seconds to wait before sending them, None when it cannot ask."""
        ...


class Window:
    """At most `capacity` messages in any `period` seconds; callers wait their turn in order."""

    def __init__(
        self,
        capacity: int,
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._capacity = capacity
        self._period = period
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    @property
    def last(self) -> float:
        """Return when the last message went through (-inf if none)."""
        return self._sent[-1] if self._sent else float("-inf")

    async def acquire(self, weight: int = 1) -> None:
        """Wait until `weight` more messages fit in the window, then count them."""
        weight = max(1, min(weight, self._capacity))
        async with self._lock:
            while True:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self._period:
                    self._sent.popleft()
                if len(self._sent) + weight <= self._capacity:
                    self._sent.extend([now] * weight)
                    return
                # The oldest entries that must leave before `weight` more fit.
                index = len(self._sent) + weight - self._capacity - 1
                await self._sleep(self._sent[index] + self._period - now)


class FloodGate:
    """Per-chat waits after a 429, per-group and bot-wide windows."""

    def __init__(
        self,
        *,
        bot_per_second: int = BOT_PER_SECOND,
        group_per_minute: int = GROUP_PER_MINUTE,
        group_period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        shared: SharedPace | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._shared = shared
        self._bot_per_second = bot_per_second
        self._group_capacity = group_per_minute
        self._group_period = group_period
        self._bot = Window(bot_per_second, 1.0, clock=clock, sleep=sleep)
        self._groups: dict[Hashable, Window] = {}
        self._blocked_until: dict[Hashable, float] = {}

    def penalize(self, chat: Hashable, seconds: float) -> None:
        """Hold back this chat (only) for `seconds`, as Telegram's 429 asked."""
        until = self._clock() + max(0.0, seconds)
        self._blocked_until[chat] = max(until, self._blocked_until.get(chat, until))

    def blocked_for(self, chat: Hashable) -> float:
        """Return how many seconds this chat is still held back (0 if not)."""
        until = self._blocked_until.get(chat)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            self._blocked_until.pop(chat, None)
            return 0.0
        return left

    async def wait_chat(self, chat: Hashable) -> None:
        """Wait until this chat is no longer held back by a 429."""
        while (left := self.blocked_for(chat)) > 0:
            await self._sleep(left)

    async def before_send(self, chat: Hashable | None, *, group: bool, weight: int = 1) -> None:
        """Wait until a message of `weight` items may go to `chat` (None: no chat)."""
        if chat is not None:
            await self.wait_chat(chat)
        if self._shared is not None:
            await self._shared_turn(chat if group else None, weight)
        if chat is not None and group:
            await self._group(chat).acquire(weight)
        await self._bot.acquire(weight)

    async def _shared_turn(self, group: Hashable | None, weight: int) -> None:
        """Wait for this message's slots in the buckets all replicas share: the group's first
        (its wait may be long, and a bot-wide slot booked before it would go unused), then the
        bot's."""
        assert self._shared is not None
        buckets = [("bot", float(self._bot_per_second), self._bot_per_second)]
        if group is not None:
            rate = self._group_capacity / self._group_period
            buckets.insert(0, (f"group:{group}", rate, self._group_capacity))
        for key, per_second, burst in buckets:
            wait = await self._shared(
                key, per_second=per_second, burst=burst, weight=max(1, min(weight, burst))
            )
            if wait is not None and wait > 0:
                await self._sleep(wait)

    def _group(self, chat: Hashable) -> Window:
        window = self._groups.get(chat)
        if window is None:
            if len(self._groups) > 1000:
                self._forget_idle()
            window = Window(
                self._group_capacity, self._group_period, clock=self._clock, sleep=self._sleep
            )
            self._groups[chat] = window
        return window

    def _forget_idle(self) -> None:
        cutoff = self._clock() - max(_FORGET_AFTER, self._group_period)
        for chat in [c for c, w in self._groups.items() if w.last < cutoff]:
            del self._groups[chat]
