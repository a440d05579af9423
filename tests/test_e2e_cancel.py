"""Issue 11: ❌ Cancel and /cancel end to end, over the loopback Telegram and images emulators."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from bot.eta import rounded_seconds
from bot.handlers import progress
from bot.running import RunningRequests
from tests.conftest import GROUP, OTHER_USER, USER, Harness, until
from tests.emulators.telegram_api import SentMessage

LONG = 30.0  # an images call that would outlast every wait below unless it is cancelled


async def _status(bot: Harness, command: dict[str, Any], *, timeout: float = 10.0) -> SentMessage:
    """Wait for the status message of a command, showing a Cancel button."""
    (status,) = await bot.replies(command, kinds=("text",), timeout=timeout)
    await until(lambda: bool(status.get("reply_markup")), timeout)
    return status


def _cancel_data(message: SentMessage) -> str:
    (row,) = message["reply_markup"]["inline_keyboard"]
    (button,) = row
    assert button["text"] == "❌ Cancel"
    data = str(button["callback_data"])
    assert data.startswith("cancel:")
    return data


async def _answer_of(bot: Harness, update: dict[str, Any]) -> dict[str, Any]:
    query_id = update["callback_query"]["id"]
    (call,) = await bot.tg.wait_for_async(
        lambda c: c.method == "answerCallbackQuery" and c.params["callback_query_id"] == query_id
    )
    return dict(call.params)


def _texts(bot: Harness, command: dict[str, Any]) -> list[str]:
    wanted = command["message_id"]
    return [
        m.text or ""
        for m in bot.tg.sent_messages(command["chat"]["id"])
        if m.kind == "text"
        and (m.get("reply_to_message") or {}).get("message_id") == wanted
        and not m.deleted
    ]


async def test_cancel_button_stops_the_call_and_gives_the_picture_back(make_bot) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="1", STATUS_MESSAGE_DELAY_SECONDS="0.2") as bot:
        bot.oai.delay = LONG
        command = bot.send("/image a slow glacier")
        status = await _status(bot, command)
        await until(lambda: bot.oai.in_flight == 1)
        press = bot.tg.press_button(
            chat_id=USER, user_id=USER, message=status, data=_cancel_data(status)
        )
        assert (await _answer_of(bot, press))["text"] == "Cancelling…"
        await until(lambda: any("Cancelled" in t for t in _texts(bot, command)))
        # The connection was closed, so the host can stop drawing (it would answer in 30 s).
        await until(lambda: bot.oai.in_flight == 0, timeout=3)
        await until(lambda: status.deleted)
        assert bot.tg.calls_of("sendPhoto") == []
        await until(lambda: bot.services.limiter.in_flight(USER) == 0)
        usage = await bot.services.store.usage(user_id=USER, user_limit=1)
        assert (usage.used_today, usage.remaining) == (0, 1)  # refunded
        bot.oai.delay = 0
        again = bot.send("/image a quick hare")  # the daily picture is still there
        await bot.replies(again, kinds=("photo",))


async def test_a_stranger_cannot_cancel(make_bot) -> None:
    async with make_bot(STATUS_MESSAGE_DELAY_SECONDS="0.2") as bot:
        bot.oai.delay = 1.5
        command = bot.send("/image a shared sunset", chat_id=GROUP)
        status = await _status(bot, command)
        press = bot.tg.press_button(
            chat_id=GROUP, user_id=OTHER_USER, message=status, data=_cancel_data(status)
        )
        answer = await _answer_of(bot, press)
        assert answer["text"] == "Only the person who asked can cancel this request."
        assert answer["show_alert"] is True
        (photo,) = await bot.replies(command, kinds=("photo",))
        assert photo.text == "a shared sunset"
        assert not any("Cancelled" in t for t in _texts(bot, command))


async def test_cancel_while_queued_never_reaches_the_backend(make_bot) -> None:
    async with make_bot(MAX_CONCURRENT_GENERATIONS="1", STATUS_MESSAGE_DELAY_SECONDS="5") as bot:
        bot.oai.delay = 1.5
        first = bot.send("/image first in line", user_id=OTHER_USER)
        await asyncio.to_thread(bot.oai.wait_for_requests, 1, 5.0)
        second = bot.send("/image second in line")
        queued = await _status(bot, second, timeout=3)
        assert "position 1" in (queued.text or "")
        press = bot.tg.press_button(
            chat_id=USER, user_id=USER, message=queued, data=_cancel_data(queued)
        )
        await _answer_of(bot, press)
        await until(lambda: any("Cancelled" in t for t in _texts(bot, second)))
        await until(lambda: bot.services.limiter.queued == 0)  # left the queue
        await bot.replies(first, kinds=("photo",))
        await bot.settle(0.3)
        assert [r.fields["prompt"] for r in bot.oai.api_requests] == ["first in line"]
        usage = await bot.services.store.usage(user_id=USER, user_limit=0)
        assert usage.used_today == 0


async def test_cancel_command_stops_the_users_request(make_bot) -> None:
    async with make_bot(STATUS_MESSAGE_DELAY_SECONDS="30") as bot:
        nothing = bot.send("/cancel")
        assert await bot.reply_text(nothing) == "You have no request in progress to cancel here."
        bot.oai.delay = LONG
        command = bot.send("/image an endless corridor")
        await until(lambda: bot.oai.in_flight == 1)
        other = bot.send("/cancel", user_id=OTHER_USER)  # cancels only one's own requests
        assert "no request" in await bot.reply_text(other)
        assert bot.oai.in_flight == 1
        bot.send("/cancel")
        await until(lambda: any("Cancelled" in t for t in _texts(bot, command)))
        await until(lambda: bot.oai.in_flight == 0, timeout=3)
        assert bot.tg.calls_of("sendPhoto") == []


async def test_cancel_as_a_reply_picks_that_request(make_bot) -> None:
    async with make_bot(MAX_INFLIGHT_PER_USER="2", STATUS_MESSAGE_DELAY_SECONDS="0.2") as bot:
        bot.oai.delay = 2.0
        keep = bot.send("/image the one to keep")
        drop = bot.send("/image the one to drop")
        status = await _status(bot, drop)
        bot.send("/cancel", reply_to=status)  # a reply to the status message
        await until(lambda: any("Cancelled" in t for t in _texts(bot, drop)))
        (photo,) = await bot.replies(keep, kinds=("photo",))
        assert photo.text == "the one to keep"
        assert not any("Cancelled" in t for t in _texts(bot, keep))
        assert bot.tg.calls_of("sendPhoto") and len(bot.tg.calls_of("sendPhoto")) == 1


async def test_cancel_as_a_reply_to_the_command(make_bot) -> None:
    async with make_bot(MAX_INFLIGHT_PER_USER="2", STATUS_MESSAGE_DELAY_SECONDS="30") as bot:
        bot.oai.delay = 2.0
        drop = bot.send("/image the first, dropped")
        keep = bot.send("/image the second, kept")
        await until(lambda: bot.oai.in_flight == 2)
        bot.send("/cancel", reply_to=drop)
        await until(lambda: any("Cancelled" in t for t in _texts(bot, drop)))
        (photo,) = await bot.replies(keep, kinds=("photo",))
        assert photo.text == "the second, kept"


async def test_a_press_after_the_result_is_too_late(make_bot) -> None:
    async with make_bot(STATUS_MESSAGE_DELAY_SECONDS="0.2") as bot:
        bot.oai.delay = 0.8
        command = bot.send("/image a finished painting")
        status = await _status(bot, command)
        data = _cancel_data(status)
        await bot.replies(command, kinds=("photo",))
        await until(lambda: status.deleted)
        press = bot.tg.press_button(chat_id=USER, user_id=USER, message=status, data=data)
        assert (await _answer_of(bot, press))["text"] == "This request is already finished."


# -- waiting that tells the truth ------------------------------------------------------------


async def test_status_shows_drawing_time_then_the_usual_time(make_bot, monkeypatch) -> None:
    monkeypatch.setattr(progress, "MIN_EDIT_INTERVAL", 1.0)  # 5 s in production
    async with make_bot(STATUS_MESSAGE_DELAY_SECONDS="0.2") as bot:
        bot.oai.delay = 3.0
        first = bot.send("/image a first measured picture")
        status = await _status(bot, first)
        assert status.text is not None and status.text.startswith("🎨 Drawing… ")
        assert "usually" not in status.text  # nothing measured yet
        # Edited as the seconds pass, keeping the Cancel button.
        await until(lambda: bool(bot.tg.calls_of("editMessageText")), timeout=5)
        edit = bot.tg.calls_of("editMessageText")[0]
        assert edit.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "❌ Cancel"
        await bot.replies(first, kinds=("photo",))
        (measured,) = [
            bot.services.generation_times.estimate(model="gpt-image-2", quality=None) or 0.0
        ]
        assert measured >= 3.0
        bot.oai.delay = 1.0
        second = bot.send("/image a second picture")
        status2 = await _status(bot, second)
        assert status2.text is not None
        assert "so far, usually about " in status2.text
        assert status2.text.endswith(f"usually about {rounded_seconds(measured)} s.")


@pytest.mark.parametrize("in_chat", [1, 2, 3, 4, 7, 20, 100])
def test_group_status_edits_stay_far_below_the_group_limit(in_chat: int) -> None:
    # Telegram allows about 20 messages a minute in a group, the bot's edits included: one status
    # is edited at most twice a minute, and all the requests drawing in a group together at most
    # 6 times a minute, however many there are, so the results keep most of the group's budget.
    interval = progress.edit_interval(in_group=True, in_chat=in_chat)
    assert 60 / interval <= 2
    assert in_chat * 60 / interval <= 6
    assert 60 / progress.edit_interval(in_group=False, in_chat=in_chat) <= 12  # private: 1 a s


async def test_group_status_waits_longer_when_many_draw_there() -> None:
    requests = RunningRequests()
    async with contextlib.AsyncExitStack() as stack:
        for i in range(10):
            await stack.enter_async_context(requests.track(user_id=i, chat_id=GROUP, message_id=i))
        await stack.enter_async_context(requests.track(user_id=1, chat_id=USER, message_id=1))
        assert requests.in_chat(GROUP) == 10
        assert progress.edit_interval(in_group=True, in_chat=requests.in_chat(GROUP)) == 100.0
