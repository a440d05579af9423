"""The Telegram boundary end to end: flood control, uploads, refusals, slots, stale commands."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from bot.handlers import delivery
from tests.conftest import GROUP, OTHER_USER, USER

UNEXPECTED = "unexpected error while handling an update"


def noisy_png(side: int = 700) -> bytes:
    """Return a PNG of random pixels (incompressible: about 3 bytes a pixel)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


async def until(check, timeout: float = 5.0) -> None:
    """Wait (bounded) until `check()` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.02)


async def recorded(bot, requests: int) -> None:
    """Wait (bounded) until the store has recorded `requests` finished requests."""
    for _ in range(500):
        if (await bot.services.store.stats()).requests_all_time >= requests:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the store did not record {requests} requests")


async def used_today(bot, user_id: int = USER) -> int:
    return (await bot.services.store.usage(user_id=user_id, user_limit=10)).used_today


def texts_to(bot, msg) -> list[str]:
    wanted = msg["message_id"]
    return [
        m.text or ""
        for m in bot.tg.sent_messages(msg["chat"]["id"])
        if m.kind == "text"
        and not m.deleted
        and (m.get("reply_to_message") or {}).get("message_id") == wanted
    ]


# -- flood control -------------------------------------------------------------------------------


async def test_one_flooded_chat_does_not_hold_up_the_others(make_bot) -> None:
    async with make_bot(MAX_CONCURRENT_GENERATIONS="32") as bot:
        bot.tg.fail_next("sendPhoto", status=429, retry_after=3, chat_id=USER)
        flooded = bot.send("/image patient tortoise")
        (first,) = await bot.tg.wait_for_async(
            lambda c: c.method == "sendPhoto" and c.status == 429, timeout=5
        )
        others = [bot.send(f"/image hare {i}", user_id=2000 + i) for i in range(12)]
        for msg in others:
            await bot.replies(msg, kinds=("photo",), timeout=8)
        # Every other chat got its picture while the flooded one still waited out its 3 s.
        other_photos = [c for c in bot.tg.calls_of("sendPhoto") if c.params["chat_id"] != USER]
        assert len(other_photos) == 12
        assert max(c.finished_at or 0 for c in other_photos) < first.at + 2.5
        (photo,) = await bot.replies(flooded, kinds=("photo",), timeout=8)
        mine = [c for c in bot.tg.calls_of("sendPhoto") if c.params["chat_id"] == USER]
        assert [c.status for c in mine] == [429, 200]
        assert mine[1].at - mine[0].at >= 2.9
        assert photo.text == "patient tortoise"


async def test_a_busy_group_is_paced_under_telegrams_limit(make_bot, monkeypatch) -> None:
    # Telegram's group limit scaled down (5 a second instead of 20 a minute) for a quick test.
    from bot import app as app_module
    from bot.flood import FloodGate

    monkeypatch.setattr(
        app_module,
        "FloodGate",
        lambda **kwargs: FloodGate(group_per_minute=4, group_period=1.0, **kwargs),
    )
    async with make_bot(MAX_INFLIGHT_PER_USER="10", MAX_CONCURRENT_GENERATIONS="10") as bot:
        bot.tg.limits.group_per_minute = 300.0  # the emulator's bucket: 5 a second...
        bot.tg.limits.group_burst = 5  # ...and a burst of 5
        asks = [bot.send(f"/image crowd {i}", chat_id=GROUP) for i in range(8)]
        private = bot.send("/image alone")
        await bot.replies(private, kinds=("photo",), timeout=5)
        for msg in asks:
            await bot.replies(msg, kinds=("photo",), timeout=10)
        group_calls = [c for c in bot.tg.calls_of("sendPhoto") if c.params["chat_id"] == GROUP]
        assert all(c.status == 200 for c in group_calls), "the bot must stay under the limit"
        # 8 photos at 4 a second span about a second; the margin is for a loaded machine, where
        # `at` (taken after the upload is read) can come late for the first photo. Without pacing
        # the 8 would land within a few tens of milliseconds and some would be refused above.
        assert group_calls[-1].at - group_calls[0].at >= 0.5


async def test_chat_actions_are_not_held_back_by_flood_control(make_bot, monkeypatch) -> None:
    from bot.handlers import progress

    monkeypatch.setattr(progress, "FIRST_ACTION_AFTER", 0.0)
    monkeypatch.setattr(progress, "ACTION_EVERY", 0.5)
    async with make_bot() as bot:
        bot.tg.fail_next("sendPhoto", status=429, retry_after=2, chat_id=USER)
        msg = bot.send("/image slow snail")
        (limited,) = await bot.tg.wait_for_async(
            lambda c: c.method == "sendPhoto" and c.status == 429, timeout=5
        )
        await bot.replies(msg, kinds=("photo",), timeout=8)
        # "sending photo" went on while the chat waited out its 429.
        actions = [c for c in bot.tg.calls_of("sendChatAction") if c.at > limited.at]
        assert actions
        assert actions[0].at - limited.at < 1.5


# -- uploads ---------------------------------------------------------------------------------------


async def test_an_upload_answered_after_five_seconds_is_waited_for(make_bot) -> None:
    async with make_bot() as bot:
        bot.tg.lose_answer("sendPhoto", delay=5.5)  # python-telegram-bot's default is 5 s
        msg = bot.send("/image big slow upload")
        await bot.replies(msg, kinds=("photo",))
        await recorded(bot, 1)
        assert len(bot.tg.calls_of("sendPhoto")) == 1
        assert await used_today(bot) == 1
        assert texts_to(bot, msg) == []


def test_upload_timeout_grows_with_the_size() -> None:
    assert delivery.upload_timeout(0) >= 10
    assert delivery.upload_timeout(50_000_000) > delivery.upload_timeout(1_000_000) + 100


@pytest.mark.parametrize("drop", [False, True], ids=["timed-out", "dropped"])
async def test_an_upload_without_answer_counts_as_delivered(
    make_bot, monkeypatch, caplog, drop: bool
) -> None:
    monkeypatch.setattr(delivery, "UPLOAD_BASE_SECONDS", 1.0)
    async with make_bot(DAILY_IMAGE_LIMIT="3") as bot:
        bot.tg.lose_answer("sendPhoto", delay=0.0 if drop else 2.5, drop=drop)
        with caplog.at_level(logging.INFO):
            msg = bot.send("/image maybe delivered")
            await recorded(bot, 1)
            await bot.settle(0.5)
        (call,) = bot.tg.calls_of("sendPhoto")
        assert call.answer_lost
        left = [m.kind for m in bot.tg.sent_messages(USER) if not m.deleted]
        assert left == ["photo"]  # and nothing else
        assert texts_to(bot, msg) == []
        assert await used_today(bot) == 1  # Telegram posted it: the quota is kept
        assert "counted as delivered" in caplog.text
        assert UNEXPECTED not in caplog.text
        assert (await bot.services.store.stats()).failures_today == {}


async def test_a_user_who_blocked_the_bot_is_refunded_quietly(make_bot, caplog) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="3") as bot:
        bot.oai.delay = 0.5
        with caplog.at_level(logging.INFO):
            bot.send("/image goodbye")
            await asyncio.to_thread(bot.oai.wait_for_requests, 1, 5.0)
            bot.tg.blocked_users.add(USER)
            await recorded(bot, 1)
            await bot.settle(0.3)
        assert [c.status for c in bot.tg.calls_of("sendPhoto")] == [403]
        assert await used_today(bot) == 0
        assert (await bot.services.store.stats()).failures_today == {"blocked": 1}
        assert "closed to the bot" in caplog.text
        assert UNEXPECTED not in caplog.text
        assert not [c for c in bot.tg.calls_of("sendMessage") if c.ok]


async def test_a_group_that_removed_the_bot_is_refunded_quietly(make_bot, caplog) -> None:
    async with make_bot(DAILY_CHAT_IMAGE_LIMIT="5") as bot:
        bot.oai.delay = 0.5
        with caplog.at_level(logging.INFO):
            bot.send("/image farewell", chat_id=GROUP)
            await asyncio.to_thread(bot.oai.wait_for_requests, 1, 5.0)
            bot.tg.kicked_from.add(GROUP)
            await recorded(bot, 1)
            await bot.settle(0.3)
        assert [c.status for c in bot.tg.calls_of("sendPhoto")] == [403]
        assert await used_today(bot) == 0
        assert UNEXPECTED not in caplog.text


async def test_a_document_over_the_upload_limit_gets_a_clear_reply(make_bot, caplog) -> None:
    big = noisy_png()
    assert len(big) > 1_000_000
    async with make_bot(TELEGRAM_UPLOAD_LIMIT_MB="1", DAILY_IMAGE_LIMIT="3") as bot:
        await bot.services.store.set_setting(scope="user", scope_id=USER, key="as_file", value="1")
        bot.oai.image_bytes = big
        with caplog.at_level(logging.INFO):
            msg = bot.send("/image huge mural")
            text = await bot.reply_text(msg)
            await recorded(bot, 1)
        assert " 1 MB" in text
        assert f"{len(big) / 1_000_000:.1f} MB" in text
        assert "not counted" in text
        assert bot.tg.calls_of("sendDocument") == []
        assert await used_today(bot) == 0
        assert (await bot.services.store.stats()).failures_today == {"too_large": 1}
        assert UNEXPECTED not in caplog.text


async def test_a_photo_under_the_upload_limit_is_not_refused(make_bot) -> None:
    # The upload limit is for files; a photo (up to 10 MB) is not held to a smaller one.
    async with make_bot(TELEGRAM_UPLOAD_LIMIT_MB="1") as bot:
        bot.oai.image_bytes = noisy_png()
        msg = bot.send("/image noisy photo")
        await bot.replies(msg, kinds=("photo",))


# -- the generation slot -------------------------------------------------------------------------


async def test_the_slot_is_free_while_the_previous_picture_uploads(make_bot) -> None:
    async with make_bot(MAX_CONCURRENT_GENERATIONS="1") as bot:
        bot.tg.set_latency("sendPhoto", 1.5)  # a slow upload
        first = bot.send("/image first")
        await asyncio.to_thread(bot.oai.wait_for_requests, 1, 5.0)
        second = bot.send("/image second", user_id=OTHER_USER)
        await asyncio.to_thread(bot.oai.wait_for_requests, 2, 5.0)
        second_call = bot.oai.api_requests[1].at
        (photo1,) = await bot.replies(first, kinds=("photo",))
        await bot.replies(second, kinds=("photo",))
        assert second_call < photo1.at - 0.5, "the second waited for the first's upload"
        assert bot.oai.peak_in_flight == 1


async def test_the_users_claim_lasts_until_delivery(make_bot) -> None:
    async with make_bot(MAX_INFLIGHT_PER_USER="1") as bot:
        bot.tg.set_latency("sendPhoto", 1.0)
        first = bot.send("/image first")
        await until(lambda: any(c.method == "sendPhoto" for c in bot.tg.calls))
        second = bot.send("/image second")
        assert "wait" in (await bot.reply_text(second, timeout=3)).lower()
        await bot.replies(first, kinds=("photo",))
        assert len(bot.oai.api_requests) == 1


# -- 📄 Original -------------------------------------------------------------------------------


def _button(message, label: str) -> str:
    markup = message.get("reply_markup") or {}
    (data,) = [
        b["callback_data"] for row in markup["inline_keyboard"] for b in row if label in b["text"]
    ]
    return str(data)


async def test_original_counts_against_the_in_flight_cap(make_bot) -> None:
    async with make_bot(MAX_INFLIGHT_PER_USER="1") as bot:
        msg = bot.send("/image yellow alpaca")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        await until(lambda: bot.services.limiter.in_flight(USER) == 0)
        bot.oai.delay = 1.0
        busy = bot.send("/image another")
        await asyncio.to_thread(bot.oai.wait_for_requests, 2, 5.0)
        bot.tg.press_button(chat_id=USER, user_id=USER, message=photo, data=_button(photo, "📄"))
        (answer,) = await bot.tg.wait_for_async("answerCallbackQuery", timeout=5)
        assert answer.params.get("show_alert")
        assert "wait" in str(answer.params.get("text")).lower()
        await bot.replies(busy, kinds=("photo",))
        assert bot.tg.calls_of("sendDocument") == []
        # Free again: the original comes.
        await until(lambda: bot.services.limiter.in_flight(USER) == 0)
        bot.tg.press_button(chat_id=USER, user_id=USER, message=photo, data=_button(photo, "📄"))
        await bot.replies(photo.message, kinds=("document",))


async def test_original_over_the_upload_limit_gets_a_clear_reply(make_bot) -> None:
    async with make_bot(TELEGRAM_UPLOAD_LIMIT_MB="1") as bot:
        bot.oai.image_bytes = noisy_png()
        msg = bot.send("/image noisy")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        folder = bot.settings.data_dir / "originals" / _button(photo, "📄").split(":", 1)[1]
        await until(lambda: folder.is_dir() and any(folder.iterdir()))
        bot.tg.press_button(chat_id=USER, user_id=USER, message=photo, data=_button(photo, "📄"))
        text = await bot.reply_text(photo.message)
        assert " 1 MB" in text
        assert bot.tg.calls_of("sendDocument") == []


# -- stale commands --------------------------------------------------------------------------------


def later(seconds: float):
    return lambda: datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.mark.parametrize("command", ["/image offline alpaca", "/variation", "/edit make it red"])
async def test_a_command_from_while_the_bot_was_offline_is_not_run(make_bot, command) -> None:
    async with make_bot(clock=later(700), IMAGE_MODELS="dall-e-2") as bot:
        picture = bot.send("/help")  # something to reply to; the text is irrelevant
        kwargs = {}
        if command != "/image offline alpaca":
            kwargs["reply_to"] = picture
        msg = bot.send(command, **kwargs)
        text = await bot.reply_text(msg)
        assert "offline" in text.lower()
        assert "again" in text.lower()
        await bot.settle(0.3)
        assert bot.oai.api_requests == []
        assert await used_today(bot) == 0


async def test_a_recent_command_runs_and_zero_runs_every_command(make_bot) -> None:
    async with make_bot(clock=later(500)) as bot:
        msg = bot.send("/image just in time")
        await bot.replies(msg, kinds=("photo",))
    async with make_bot(clock=later(10_000), STALE_COMMAND_SECONDS="0") as bot:
        msg = bot.send("/image whenever")
        await bot.replies(msg, kinds=("photo",))


async def test_a_press_from_while_the_bot_was_offline_is_not_run(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        bot.tg.press_button(
            chat_id=USER, user_id=USER, message=photo, data=_button(photo, "🔁"), age=60
        )
        text = await bot.reply_text(photo.message)
        assert "offline" in text.lower()
        await bot.settle(0.3)
        assert len(bot.oai.api_requests) == 1
        # Pressed again now, it runs.
        bot.tg.press_button(chat_id=USER, user_id=USER, message=photo, data=_button(photo, "🔁"))
        await bot.replies(photo.message, kinds=("photo",))
        assert len(bot.oai.api_requests) == 2


@pytest.mark.parametrize("status", [500, 502])
async def test_an_upload_telegram_answered_with_an_error_is_refunded(
    make_bot, caplog, status
) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="3") as bot:
        bot.tg.fail_next("sendPhoto", status=status, description="Internal Server Error")
        with caplog.at_level(logging.INFO):
            msg = bot.send("/image unlucky")
            text = await bot.reply_text(msg)
            await recorded(bot, 1)
        assert "not counted" in text
        assert await used_today(bot) == 0
        assert (await bot.services.store.stats()).failures_today == {"undelivered": 1}
        assert UNEXPECTED not in caplog.text


# -- expected Telegram errors never reach the generic error handler ------------------------------


async def test_an_old_press_on_the_settings_keyboard_ends_quietly(make_bot, caplog) -> None:
    async with make_bot() as bot:
        msg = bot.send("/settings")
        (menu,) = await bot.replies(msg, kinds=("text",))
        data = menu["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        with caplog.at_level(logging.INFO):
            bot.tg.press_button(chat_id=USER, user_id=USER, message=menu, data=data, age=60)
            await bot.tg.wait_for_async("answerCallbackQuery", timeout=5)
            await bot.settle(0.3)
        assert "too old" in caplog.text
        assert UNEXPECTED not in caplog.text
        assert texts_to(bot, menu.message) == []


async def test_a_command_from_a_user_who_blocked_the_bot_ends_quietly(make_bot, caplog) -> None:
    async with make_bot() as bot:
        bot.tg.blocked_users.add(USER)
        with caplog.at_level(logging.INFO):
            bot.send("/settings")
            await bot.tg.wait_for_async("sendMessage", timeout=5)
            await bot.settle(0.3)
        assert UNEXPECTED not in caplog.text
