"""Unit tests of bot/flood.py: windows, per-chat waits after a 429, groups, the bot-wide pace."""

from __future__ import annotations

import asyncio

from bot.flood import FloodGate, Window


class FakeTime:
    """A clock that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


async def test_window_lets_capacity_through_then_waits_for_the_oldest() -> None:
    t = FakeTime()
    window = Window(3, 1.0, clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        await window.acquire()
    assert t.now == 0.0
    await window.acquire()
    assert t.now == 1.0
    await window.acquire(3)  # an album of three needs three places
    assert t.now == 2.0


async def test_a_heavier_request_than_the_window_still_goes_alone() -> None:
    t = FakeTime()
    window = Window(2, 1.0, clock=t.clock, sleep=t.sleep)
    await window.acquire(10)
    assert t.now == 0.0
    await window.acquire()
    assert t.now == 1.0


async def test_a_429_holds_back_only_its_own_chat() -> None:
    t = FakeTime()
    gate = FloodGate(clock=t.clock, sleep=t.sleep)
    gate.penalize(1, 5.0)
    await gate.before_send(2, group=False)
    assert t.now == 0.0
    assert gate.blocked_for(1) == 5.0
    await gate.before_send(1, group=False)
    assert t.now == 5.0
    assert gate.blocked_for(1) == 0.0


async def test_a_later_429_extends_a_wait_never_shortens_it() -> None:
    t = FakeTime()
    gate = FloodGate(clock=t.clock, sleep=t.sleep)
    gate.penalize(1, 10.0)
    gate.penalize(1, 2.0)
    assert gate.blocked_for(1) == 10.0


async def test_groups_are_paced_each_on_their_own() -> None:
    t = FakeTime()
    gate = FloodGate(group_per_minute=2, clock=t.clock, sleep=t.sleep)
    for _ in range(2):
        await gate.before_send(-100, group=True)
        await gate.before_send(-200, group=True)
    assert t.now == 0.0
    await gate.before_send(7, group=False)  # a private chat is not held to the group pace
    assert t.now == 0.0
    await gate.before_send(-100, group=True)
    assert t.now == 60.0


async def test_the_bot_wide_pace_spreads_a_burst_over_time() -> None:
    t = FakeTime()
    gate = FloodGate(bot_per_second=25, clock=t.clock, sleep=t.sleep)
    for chat in range(60):
        await gate.before_send(chat, group=False)
    assert 2.0 <= t.now < 3.0  # 60 messages at 25 a second


async def test_idle_group_windows_are_forgotten() -> None:
    t = FakeTime()
    gate = FloodGate(clock=t.clock, sleep=t.sleep)
    for chat in range(1001):
        await gate.before_send(-chat - 1, group=True)
    t.now += 1000
    await gate.before_send(-5000, group=True)
    assert len(gate._groups) == 1


class FakeShared:
    """A `SharedPace` that records what was booked and answers scripted waits."""

    def __init__(self, waits: dict[str, float | None]) -> None:
        self.waits = waits
        self.booked: list[tuple[str, float, int, int]] = []

    async def __call__(
        self, key: str, *, per_second: float, burst: int, weight: int
    ) -> float | None:
        self.booked.append((key, per_second, burst, weight))
        return self.waits.get(key.split(":", maxsplit=1)[0], 0.0)


async def test_shared_buckets_are_booked_group_first_and_their_waits_kept() -> None:
    t = FakeTime()
    shared = FakeShared({"group": 3.0, "bot": 0.5})
    gate = FloodGate(clock=t.clock, sleep=t.sleep, shared=shared)
    await gate.before_send(-100, group=True, weight=4)
    assert shared.booked == [("group:-100", 19 / 60, 19, 4), ("bot", 25.0, 25, 4)]
    assert t.now == 3.5
    await gate.before_send(7, group=False)  # a private chat books the bot's bucket only
    assert shared.booked[-1] == ("bot", 25.0, 25, 1)
    assert len(shared.booked) == 3


async def test_without_an_answer_from_the_shared_store_the_local_windows_pace() -> None:
    t = FakeTime()
    gate = FloodGate(clock=t.clock, sleep=t.sleep, shared=FakeShared({"bot": None}))
    for _ in range(26):
        await gate.before_send(1, group=False)
    assert t.now == 1.0  # the process's own window of 25 a second
