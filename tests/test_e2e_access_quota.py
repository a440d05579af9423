"""Issue 3 end to end: who may use the bot (access lists) and how much (quotas, /usage, /stats).

Every test drives the real Application over the loopback Telegram and images emulators and
asserts on what the emulators saw: the bot's messages and the backend requests.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import ADMIN, GROUP, OTHER_USER, USER, Harness
from tests.emulators.openai_images import Fault

STRANGER = 4242
STATUS = ("🎨", "⏳")  # how progress status messages start


class FakeClock:
    """A mutable UTC clock the test advances by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _texts_in(bot: Harness, chat_id: int) -> list[str]:
    return [m.text or "" for m in bot.tg.sent_messages(chat_id) if m.kind == "text"]


def _replies_to(bot: Harness, msg: dict[str, Any]) -> list[Any]:
    wanted = msg["message_id"]
    return [
        m
        for m in bot.tg.sent_messages(msg["chat"]["id"])
        if (m.get("reply_to_message") or {}).get("message_id") == wanted and not m.deleted
    ]


async def final_text(bot: Harness, msg: dict[str, Any], *, timeout: float = 8.0) -> str:
    """Wait (bounded) for the text reply to `msg` that is not a progress status message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sent in _replies_to(bot, msg):
            if sent.kind == "text" and not (sent.text or "").startswith(STATUS):
                return sent.text or ""
        await asyncio.sleep(0.02)
    raise AssertionError(f"no final reply; chat has {_texts_in(bot, msg['chat']['id'])}")


async def final_or_photo(bot: Harness, msg: dict[str, Any], *, timeout: float = 8.0) -> None:
    """Wait (bounded) until `msg` has a photo reply or a final text reply."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sent in _replies_to(bot, msg):
            if sent.kind == "photo" or not (sent.text or "").startswith(STATUS):
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no answer to {msg['text']!r}")


async def recorded(bot: Harness, requests: int) -> None:
    """Wait (bounded) until the store has recorded `requests` finished requests in all."""
    for _ in range(200):
        if (await bot.services.store.stats()).requests_all_time >= requests:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the store did not record {requests} requests")


# -- access --------------------------------------------------------------------------------------


async def test_stranger_in_private_gets_their_id_and_no_backend_request(make_bot) -> None:
    async with make_bot(ALLOWED_USER_IDS=str(USER)) as bot:
        msg = bot.send("/image yellow alpaca", user_id=STRANGER)
        text = await bot.reply_text(msg)
        assert str(STRANGER) in text
        assert "not allowed" in text.lower()
        await bot.settle(0.3)
        assert len(_replies_to(bot, msg)) == 1
        assert bot.oai.api_requests == []
        assert bot.tg.calls_of("sendPhoto") == []
        # The allowed user is served.
        ok = bot.send("/image yellow alpaca")
        await bot.replies(ok, kinds=("photo",))
        assert len(bot.oai.api_requests) == 1


async def test_group_notice_is_short_and_not_repeated_within_the_hour(make_bot) -> None:
    clock = FakeClock(datetime(2025, 3, 1, 10, 0, tzinfo=UTC))
    async with make_bot(clock=clock, ALLOWED_USER_IDS=str(USER), ALLOWED_CHAT_IDS="-999") as bot:
        first = bot.send("/image yellow alpaca", user_id=STRANGER, chat_id=GROUP)
        notice = await bot.reply_text(first)
        assert str(STRANGER) in notice
        assert len(notice) <= 80, notice
        second = bot.send("/image another one", user_id=STRANGER, chat_id=GROUP)
        await bot.settle(0.5)
        assert _replies_to(bot, second) == []
        assert len(_texts_in(bot, GROUP)) == 1
        assert bot.oai.api_requests == []
        # Another stranger gets their own notice; an allowed user is served in the same group.
        other = bot.send("/image mine", user_id=STRANGER + 1, chat_id=GROUP)
        assert str(STRANGER + 1) in await bot.reply_text(other)
        allowed = bot.send("/image yellow alpaca", user_id=USER, chat_id=GROUP)
        await bot.replies(allowed, kinds=("photo",))
        assert len(bot.oai.api_requests) == 1
        bot.oai.reset()
        # An hour later the notice may appear once more.
        clock.advance(hours=1, minutes=1)
        third = bot.send("/image third", user_id=STRANGER, chat_id=GROUP)
        assert str(STRANGER) in await bot.reply_text(third)
        assert bot.oai.api_requests == []


async def test_allowed_chat_lets_every_member_draw(make_bot) -> None:
    async with make_bot(ALLOWED_USER_IDS=str(USER), ALLOWED_CHAT_IDS=str(GROUP)) as bot:
        msg = bot.send("/image yellow alpaca", user_id=STRANGER, chat_id=GROUP)
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.chat_id == GROUP
        assert len(bot.oai.api_requests) == 1
        # The same person is still a stranger in private.
        private = bot.send("/image yellow alpaca", user_id=STRANGER)
        assert str(STRANGER) in await bot.reply_text(private)
        assert len(bot.oai.api_requests) == 1


async def test_admin_is_always_allowed(make_bot) -> None:
    async with make_bot(ALLOWED_USER_IDS=str(USER), ADMIN_USER_IDS=str(ADMIN)) as bot:
        msg = bot.send("/image yellow alpaca", user_id=ADMIN)
        await bot.replies(msg, kinds=("photo",))
        in_group = bot.send("/image in a group", user_id=ADMIN, chat_id=GROUP)
        await bot.replies(in_group, kinds=("photo",))
        assert len(bot.oai.api_requests) == 2


async def test_nothing_set_means_open_to_everyone(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca", user_id=STRANGER)
        await bot.replies(msg, kinds=("photo",))
        in_group = bot.send("/image yellow alpaca", user_id=OTHER_USER, chat_id=GROUP)
        await bot.replies(in_group, kinds=("photo",))
        assert len(bot.oai.api_requests) == 2


# -- quotas --------------------------------------------------------------------------------------


async def test_limit_holds_exactly_for_twenty_requests_at_once(make_bot) -> None:
    async with make_bot(
        DAILY_IMAGE_LIMIT="5", MAX_INFLIGHT_PER_USER="20", MAX_CONCURRENT_GENERATIONS="40"
    ) as bot:
        bot.oai.delay = 0.3
        msgs = [bot.send(f"/image alpaca number {i}") for i in range(20)]
        for msg in msgs:
            await final_or_photo(bot, msg)
        await recorded(bot, 5)
        await bot.settle(0.3)
        photos = [m for m in bot.tg.sent_messages(USER) if m.kind == "photo"]
        refusals = [t for t in _texts_in(bot, USER) if "limit" in t.lower()]
        assert len(bot.oai.api_requests) == 5
        assert len(photos) == 5
        assert len(refusals) == 15, _texts_in(bot, USER)
        for msg in msgs:  # one answer each: a photo or the refusal (status messages aside)
            answers = [m for m in _replies_to(bot, msg) if not (m.text or "").startswith(STATUS)]
            assert len(answers) == 1, answers
        usage = await bot.services.store.usage(user_id=USER, user_limit=5)
        assert (usage.used_today, usage.remaining) == (5, 0)


async def test_request_over_what_is_left_is_refused_whole(make_bot) -> None:
    clock = FakeClock(datetime(2025, 3, 1, 21, 30, tzinfo=UTC))
    async with make_bot(clock=clock, DAILY_IMAGE_LIMIT="5") as bot:
        first = bot.send("/image yellow alpaca x3")
        await bot.replies(first, count=3, kinds=("photo",))
        assert len(bot.oai.api_requests) == 1
        over = bot.send("/image yellow alpaca x3")
        text = await bot.reply_text(over)
        assert len(bot.oai.api_requests) == 1
        assert "2" in text  # what is left
        assert "2 hours 30 minutes" in text  # when the day resets
        assert "only 2 of your 5 are left" in text, text
        assert "00:00 UTC" in text
        assert "used your 5" not in text, text  # 2 are still left: do not say they are all used
        two = bot.send("/image yellow alpaca x2")
        await bot.replies(two, count=2, kinds=("photo",))
        assert len(bot.oai.api_requests) == 2


async def test_backend_failures_are_refunded(make_bot) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="3", ADMIN_USER_IDS=str(ADMIN)) as bot:
        bot.oai.queue_faults([503, 503, 503])  # quick 503s: retried, then unavailable
        failed = bot.send("/image yellow alpaca x2")
        assert "unavailable" in (await final_text(bot, failed)).lower()
        assert len(bot.oai.api_requests) == 3
        bot.oai.queue_faults([Fault.http(400, code="moderation_blocked")])
        refused = bot.send("/image something forbidden x3")
        assert "safety" in (await final_text(bot, refused)).lower()
        assert len(bot.oai.api_requests) == 4
        await recorded(bot, 2)
        store = bot.services.store
        usage = await store.usage(user_id=USER, user_limit=3)
        assert (usage.used_today, usage.remaining, usage.total_all_time) == (0, 3, 0)
        shown = bot.send("/usage")
        text = await bot.reply_text(shown)
        assert "0 of 3" in text and "3 left" in text, text
        # The full quota is still there.
        ok = bot.send("/image yellow alpaca x3")
        await bot.replies(ok, count=3, kinds=("photo",))
        stats = bot.send("/stats", user_id=ADMIN)
        body = await bot.reply_text(stats)
        assert "service down: 1" in body and "refused by safety: 1" in body, body


async def test_admins_are_exempt_from_the_limit(make_bot) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="1", ADMIN_USER_IDS=str(ADMIN)) as bot:
        for i in range(3):
            msg = bot.send(f"/image admin picture {i} x2", user_id=ADMIN)
            await bot.replies(msg, count=2, kinds=("photo",))
        assert len(bot.oai.api_requests) == 3
        text = await bot.reply_text(bot.send("/usage", user_id=ADMIN))
        assert "6" in text and "no daily limit" in text.lower(), text


async def test_chat_limit_counts_the_group_as_a_whole(make_bot) -> None:
    async with make_bot(DAILY_CHAT_IMAGE_LIMIT="3", DAILY_IMAGE_LIMIT="10") as bot:
        a = bot.send("/image first x2", user_id=USER, chat_id=GROUP)
        await bot.replies(a, count=2, kinds=("photo",))
        b = bot.send("/image second x2", user_id=OTHER_USER, chat_id=GROUP)
        text = await bot.reply_text(b)
        assert "chat" in text.lower() and "1" in text, text
        assert len(bot.oai.api_requests) == 1
        c = bot.send("/image third", user_id=OTHER_USER, chat_id=GROUP)
        await bot.replies(c, kinds=("photo",))
        d = bot.send("/image fourth", user_id=STRANGER, chat_id=GROUP)
        assert "chat" in (await bot.reply_text(d)).lower()
        assert len(bot.oai.api_requests) == 2
        # The chat's limit does not follow its members into private chats.
        private = bot.send("/image private one", user_id=OTHER_USER)
        await bot.replies(private, kinds=("photo",))


async def test_utc_day_rollover_resets_the_count(make_bot) -> None:
    clock = FakeClock(datetime(2025, 3, 1, 23, 58, tzinfo=UTC))
    async with make_bot(clock=clock, DAILY_IMAGE_LIMIT="2") as bot:
        first = bot.send("/image yellow alpaca x2")
        await bot.replies(first, count=2, kinds=("photo",))
        over = bot.send("/image one more")
        text = await bot.reply_text(over)
        assert "2 min" in text, text
        assert len(bot.oai.api_requests) == 1
        clock.advance(minutes=3)  # 00:01 UTC the next day
        again = bot.send("/image next day x2")
        await bot.replies(again, count=2, kinds=("photo",))
        await recorded(bot, 2)
        assert len(bot.oai.api_requests) == 2
        usage = await bot.services.store.usage(user_id=USER, user_limit=2)
        assert (usage.used_today, usage.total_all_time) == (2, 4)


# -- /usage and /stats ---------------------------------------------------------------------------


async def test_usage_shows_used_left_and_reset(make_bot) -> None:
    clock = FakeClock(datetime(2025, 3, 1, 20, 15, tzinfo=UTC))
    async with make_bot(clock=clock, DAILY_IMAGE_LIMIT="5") as bot:
        msg = bot.send("/image yellow alpaca x2")
        await bot.replies(msg, count=2, kinds=("photo",))
        await recorded(bot, 1)  # the all-time total counts settled requests only
        text = await bot.reply_text(bot.send("/usage"))
        assert "2 of 5" in text and "3 left" in text, text
        assert "3 hours 45 minutes" in text and "00:00 UTC" in text, text
        assert "All time: 2" in text, text
        assert len(bot.oai.api_requests) == 1


async def test_stats_for_admins_shows_totals_failures_and_top_users(make_bot) -> None:
    clock = FakeClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    async with make_bot(clock=clock, ADMIN_USER_IDS=str(ADMIN)) as bot:
        # Yesterday: one picture by OTHER_USER.
        clock.now = datetime(2025, 2, 28, 12, 0, tzinfo=UTC)
        y = bot.send("/image yesterday", user_id=OTHER_USER)
        await bot.replies(y, kinds=("photo",))
        await recorded(bot, 1)
        clock.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
        a = bot.send("/image today x3")
        await bot.replies(a, count=3, kinds=("photo",))
        bot.oai.queue_faults([Fault.http(400, code="moderation_blocked")])
        b = bot.send("/image refused", user_id=OTHER_USER)
        await final_text(bot, b)
        await recorded(bot, 3)
        body = await bot.reply_text(bot.send("/stats", user_id=ADMIN))
        today, _, ever = body.partition("All time")
        assert "2025-03-01" in today
        assert "3 pictures" in today and "2 requests" in today, body
        assert "refused by safety: 1" in today, body
        assert f"{USER} (3)" in today and str(OTHER_USER) not in today.split("Top today")[1]
        assert "4 pictures" in ever and "3 requests" in ever, body
        assert f"{USER} (3), {OTHER_USER} (1)" in ever, body
        assert "2 users" in ever, body


async def test_stats_refused_to_non_admins(make_bot) -> None:
    async with make_bot(ADMIN_USER_IDS=str(ADMIN)) as bot:
        a = bot.send("/image something")
        await bot.replies(a, kinds=("photo",))
        text = await bot.reply_text(bot.send("/stats"))
        assert "admin" in text.lower()
        assert "pictures" not in text and str(USER) not in text, text


async def test_quota_check_does_not_delay_other_users(make_bot) -> None:
    """One user's flood of refused requests does not hold up another user's picture."""
    async with make_bot(
        DAILY_IMAGE_LIMIT="1", MAX_INFLIGHT_PER_USER="20", MAX_CONCURRENT_GENERATIONS="40"
    ) as bot:
        flood = [bot.send(f"/image flood {i}") for i in range(10)]
        other = bot.send("/image calm one", user_id=OTHER_USER)
        await asyncio.wait_for(bot.replies(other, kinds=("photo",)), timeout=5)
        for msg in flood:
            await final_or_photo(bot, msg)
        assert len(bot.oai.api_requests) == 2


async def test_pictures_telegram_did_not_take_are_refunded(make_bot) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="2") as bot:
        bot.tg.fail_next("sendPhoto", status=403, description="Forbidden: bot was blocked")
        lost = bot.send("/image yellow alpaca")
        await bot.tg.wait_for_async("sendPhoto", timeout=5)
        await recorded(bot, 1)
        assert len(bot.oai.api_requests) == 1
        usage = await bot.services.store.usage(user_id=USER, user_limit=2)
        assert (usage.used_today, usage.remaining) == (0, 2)
        assert [m for m in _replies_to(bot, lost) if m.kind == "photo"] == []
        ok = bot.send("/image yellow alpaca x2")
        await bot.replies(ok, count=2, kinds=("photo",))


async def test_status_message_sent_while_the_result_arrives_is_deleted(make_bot) -> None:
    """Found by the 20-at-once test: a status send in flight when the picture lands is orphaned."""
    async with make_bot(STATUS_MESSAGE_DELAY_SECONDS="0.1") as bot:
        bot.tg.set_latency("sendMessage", 0.8)  # the status send is still in flight...
        bot.oai.delay = 0.8  # ...when the picture arrives
        msg = bot.send("/image yellow alpaca")
        await bot.replies(msg, kinds=("photo",))
        await bot.tg.wait_for_async("sendMessage", timeout=5)
        await recorded(bot, 1)
        await bot.settle(0.5)
        left = [m.text for m in _replies_to(bot, msg) if (m.text or "").startswith(STATUS)]
        assert left == []
