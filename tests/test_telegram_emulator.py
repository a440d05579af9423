"""Tests of the emulated Bot API, driven by a real python-telegram-bot `Bot` over loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import telegram
from PIL import Image
from telegram import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    ReplyParameters,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter

from tests.emulators.server import ServerThread
from tests.emulators.telegram_api import (
    TelegramEmulator,
    command_entities,
    parse_html,
    utf16_len,
)

pytestmark = pytest.mark.timeout(20)

CHAT = 4242
USER = 4242


def png(width: int = 64, height: int = 48, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def emu() -> Iterator[TelegramEmulator]:
    with TelegramEmulator() as emulator:
        yield emulator


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(
        emu.token, base_url=f"{emu.url}/bot", base_file_url=f"{emu.url}/file/bot"
    ) as client:
        yield client


def raw_call(emu: TelegramEmulator, method: str, params: dict[str, Any]) -> tuple[int, dict]:
    """POST a JSON body with the stdlib, returning (status, decoded body)."""
    request = urllib.request.Request(
        f"{emu.url}/bot{emu.token}/{method}",
        data=json.dumps(params).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- pure helpers ------------------------------------------------------------------------------


def test_parse_html_strips_tags_and_measures_in_utf16() -> None:
    text, entities = parse_html('<b>a&amp;b</b> 😀 <a href="https://x.org">l</a>')
    assert text == "a&b 😀 l"
    assert entities == [
        {"type": "bold", "offset": 0, "length": 3},
        {"type": "text_link", "offset": 7, "length": 1, "url": "https://x.org"},
    ]
    assert utf16_len("😀") == 2


@pytest.mark.parametrize("bad", ["<b>x", "<b>x</i>", "<foo>x</foo>", "1 < 2", "x</b>"])
def test_parse_html_rejects_what_telegram_rejects(bad: str) -> None:
    with pytest.raises(Exception, match=r"(?i)can.t parse entities"):
        parse_html(bad)


def test_command_entity_covers_the_bot_suffix() -> None:
    assert command_entities("/image@ImageTestBot cat") == [
        {"type": "bot_command", "offset": 0, "length": 19}
    ]
    assert command_entities("hello /image") == []


# -- server plumbing ---------------------------------------------------------------------------


def test_server_thread_starts_and_stops_within_bounds() -> None:
    from aiohttp import web

    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_get("/ping", ping)
    started = time.monotonic()
    with ServerThread(app) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{server.url}/ping", timeout=5) as response:
            assert response.read() == b"pong"
    assert not server.running
    assert time.monotonic() - started < 5


def test_wrong_token_and_unknown_method(emu: TelegramEmulator) -> None:
    request = urllib.request.Request(f"{emu.url}/bot999:nope/getMe", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 401
    assert json.loads(caught.value.read()) == {
        "ok": False,
        "error_code": 401,
        "description": "Unauthorized",
    }
    assert raw_call(emu, "sendTelepathy", {}) == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found"},
    )


async def test_wrong_token_surfaces_as_invalid_token(emu: TelegramEmulator) -> None:
    intruder = telegram.Bot("999:wrong", base_url=f"{emu.url}/bot")
    with pytest.raises(InvalidToken):
        await intruder.get_me()


# -- the Bot API through PTB ---------------------------------------------------------------------


async def test_get_me(bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (123456, "ImageTestBot", True)


async def test_long_polling_returns_injected_command_promptly(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, lambda: emu.send_message(chat_id=CHAT, user_id=USER, text="/image cat"))
    started = time.monotonic()
    updates = await bot.get_updates(timeout=5)
    assert time.monotonic() - started < 2
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None
    assert message.text == "/image cat"
    assert message.chat.type == "private"
    assert message.parse_entities(["bot_command"]) == {message.entities[0]: "/image"}
    # Confirming with offset drops the update; an empty poll with timeout 0 returns at once.
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == ()
    assert emu.pending_updates == []


async def test_send_photo_then_get_file_returns_the_same_bytes(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    data = png(300, 200)
    sent = await bot.send_photo(CHAT, data, caption="<b>cat</b>", parse_mode=ParseMode.HTML)
    assert sent.caption == "cat"
    assert sent.caption_entities[0].type == "bold"
    largest = sent.photo[-1]
    assert (largest.width, largest.height, largest.file_size) == (300, 200, len(data))
    file = await bot.get_file(largest.file_id)
    assert bytes(await file.download_as_bytearray()) == data
    [record] = emu.sent_messages(CHAT)
    assert record.kind == "photo"
    assert record.data == data
    assert record.at >= record.received_at
    [call] = emu.calls_of("sendPhoto")
    assert call.files["photo"].data == data
    assert call.params["parse_mode"] == "HTML"


async def test_media_group_album_shares_a_group_id(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    images = [png(color="red"), png(color="blue")]
    media = [InputMediaPhoto(images[0], caption="one"), InputMediaPhoto(images[1])]
    messages = await bot.send_media_group(CHAT, media)
    assert len(messages) == 2
    assert messages[0].media_group_id == messages[1].media_group_id is not None
    assert messages[0].caption == "one"
    assert [m.data for m in emu.sent_messages(CHAT)] == images
    status, body = raw_call(emu, "sendMediaGroup", {"chat_id": CHAT, "media": []})
    assert status == 400
    assert body["ok"] is False


async def test_reply_and_inline_keyboard_round_trip(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    update = emu.send_message(chat_id=CHAT, user_id=USER, text="/start")
    user_message_id = update["message"]["message_id"]
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Again", callback_data="again")]])
    sent = await bot.send_message(
        CHAT,
        "done",
        reply_parameters=ReplyParameters(user_message_id),
        reply_markup=keyboard,
    )
    assert sent.reply_to_message is not None
    assert sent.reply_to_message.message_id == user_message_id
    assert sent.reply_markup == keyboard
    assert sent.message_id == user_message_id + 1

    emu.press_button(chat_id=CHAT, user_id=USER, message=emu.sent_messages(CHAT)[-1], data="again")
    [callback_update] = await bot.get_updates(offset=update["update_id"] + 1, timeout=1)
    query = callback_update.callback_query
    assert query is not None
    assert query.data == "again"
    assert await bot.answer_callback_query(query.id)
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query.id)
    edited = await bot.edit_message_text("edited", chat_id=CHAT, message_id=sent.message_id)
    assert isinstance(edited, telegram.Message)
    assert emu.sent_messages(CHAT)[-1]["text"] == "edited"
    with pytest.raises(BadRequest, match=r"(?i)not modified"):
        await bot.edit_message_text("edited", chat_id=CHAT, message_id=sent.message_id)


async def test_rate_limit_fault_surfaces_as_retry_after(
    emu: TelegramEmulator, bot: telegram.Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without PTB_TIMEDELTA, PTB 22 warns (an error under our filterwarnings) in RetryAfter.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    emu.fail_next("sendMessage", retry_after=3)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(CHAT, "hi")
    assert caught.value.retry_after == dt.timedelta(seconds=3)
    [failed] = emu.calls_of("sendMessage")
    assert failed.status == 429
    assert failed.response is not None
    assert failed.response["parameters"] == {"retry_after": 3}
    assert (await bot.send_message(CHAT, "hi")).text == "hi"


async def test_oversize_and_extreme_photos_are_refused(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)photo_invalid_dimensions"):
        await bot.send_photo(CHAT, b"\0" * (10 * 1024 * 1024 + 1))
    with pytest.raises(BadRequest, match=r"(?i)photo_invalid_dimensions"):
        await bot.send_photo(CHAT, png(2100, 100))
    assert (await bot.send_document(CHAT, png(2100, 100), filename="wide.png")).document
    assert [m.kind for m in emu.sent_messages()] == ["document"]
    assert emu.sent_messages()[0]["document"]["mime_type"] == "image/png"


async def test_caption_limit_counts_text_after_html_is_stripped(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    fits = "<b>" + "x" * 1024 + "</b>"
    assert (await bot.send_photo(CHAT, png(), caption=fits, parse_mode="HTML")).caption
    with pytest.raises(BadRequest, match=r"(?i)message caption is too long"):
        await bot.send_photo(CHAT, png(), caption="x" * 1025)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(CHAT, "😀" * 2049)
    with pytest.raises(BadRequest, match=r"(?i)can.t parse entities"):
        await bot.send_message(CHAT, "1 < 2", parse_mode="HTML")


async def test_blocked_user_and_chat_member_status(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    emu.blocked_users.add(CHAT)
    with pytest.raises(Forbidden, match="can't initiate conversation"):
        await bot.send_message(CHAT, "hi")
    emu.set_chat_admins(-100777, [USER])
    admin = await bot.get_chat_member(-100777, USER)
    other = await bot.get_chat_member(-100777, USER + 1)
    assert (admin.status, other.status) == ("administrator", "member")
    assert (await bot.get_chat(-100777)).type == "supergroup"


async def test_commands_are_stored_per_scope_and_language(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    commands = [BotCommand("image", "Draw a picture")]
    assert await bot.set_my_commands(commands)
    assert await bot.set_my_commands(
        [BotCommand("image", "Нарисовать")],
        scope=BotCommandScopeAllPrivateChats(),
        language_code="ru",
    )
    assert emu.commands[("default", "")] == [{"command": "image", "description": "Draw a picture"}]
    assert emu.commands[("all_private_chats", "ru")][0]["description"] == "Нарисовать"
    assert await bot.get_my_commands() == tuple(commands)
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([BotCommand("Bad-Name", "x")])


# -- waiting helpers -----------------------------------------------------------------------------


def test_wait_for_is_bounded_and_summarises_calls(emu: TelegramEmulator) -> None:
    raw_call(emu, "sendMessage", {"chat_id": CHAT, "text": "first"})
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"sendMessage.*first") as caught:
        emu.wait_for("sendMessage", count=2, timeout=0.3)
    assert time.monotonic() - started < 2
    assert "matched 1" in str(caught.value)

    timer = threading.Timer(
        0.1, raw_call, args=(emu, "sendMessage", {"chat_id": CHAT, "text": "2"})
    )
    timer.start()
    try:
        calls = emu.wait_for("sendMessage", count=2, timeout=5)
    finally:
        timer.join(5)
    assert [c.params["text"] for c in calls] == ["first", "2"]
    assert emu.wait_for(lambda c: c.params.get("text") == "2", timeout=0)[0].ok


async def test_wait_for_async_keeps_the_loop_running(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    emu.set_latency("sendMessage", 0.2)
    task = asyncio.create_task(bot.send_message(CHAT, "slow"))
    [call] = await emu.wait_for_async("sendMessage", timeout=5)
    assert call.finished_at is not None
    assert call.finished_at - call.at >= 0.2
    await task
    with pytest.raises(AssertionError):
        await emu.wait_for_async("sendPhoto", timeout=0.1)
    emu.reset()
    assert emu.calls == []
    assert emu.sent_messages() == []


def test_form_encoded_and_multipart_bodies_are_decoded(emu: TelegramEmulator) -> None:
    body = "chat_id=5&text=hi&reply_markup=%7B%22inline_keyboard%22%3A%5B%5D%7D"
    request = urllib.request.Request(
        f"{emu.url}/bot{emu.token}/sendMessage",
        data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        result = json.loads(response.read())["result"]
    assert result["chat"] == {"id": 5, "type": "private", "first_name": "User5"}
    [call] = emu.calls_of("sendMessage")
    assert call.params == {"chat_id": 5, "text": "hi", "reply_markup": {"inline_keyboard": []}}


def test_webhook_receives_updates_with_the_secret_header(emu: TelegramEmulator) -> None:
    from aiohttp import web

    received: list[tuple[str | None, dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    with ServerThread(app) as receiver:
        params = {"url": f"{receiver.url}/hook", "secret_token": "s3cret"}
        assert raw_call(emu, "setWebhook", params)[0] == 200
        assert raw_call(emu, "getUpdates", {})[0] == 409
        update = emu.send_message(chat_id=CHAT, user_id=USER, text="hello")
        deadline = time.monotonic() + 5
        while not emu.webhook_deliveries and time.monotonic() < deadline:
            time.sleep(0.01)
    [delivery] = emu.webhook_deliveries
    assert delivery.status == 200
    assert received == [("s3cret", update)]
    assert raw_call(emu, "deleteWebhook", {})[1]["result"] is True
    assert raw_call(emu, "getWebhookInfo", {})[1]["result"]["url"] == ""


# -- strictness: flood limits, lost answers, big photos, old presses, webhook retries ------------


async def test_flood_limits_answer_429_after_the_burst(
    emu: TelegramEmulator, bot: telegram.Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    emu.limits.chat_burst = 3
    for i in range(3):
        await bot.send_message(CHAT, f"burst {i}")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(CHAT, "one too many")
    assert caught.value.retry_after == dt.timedelta(seconds=1)
    assert len(emu.sent_messages(CHAT)) == 3  # nothing posted on a 429
    await bot.send_message(CHAT + 1, "another chat is not limited")
    await bot.send_chat_action(CHAT, "typing")  # chat actions are not counted
    await asyncio.sleep(1.05)
    await bot.send_message(CHAT, "after a second")


async def test_group_limit_counts_album_items(
    emu: TelegramEmulator, bot: telegram.Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    group = -100777
    emu.limits.group_burst = 5
    await bot.send_media_group(group, [InputMediaPhoto(png()) for _ in range(4)])
    await bot.send_message(group, "fifth")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(group, "sixth")
    assert caught.value.retry_after >= dt.timedelta(seconds=2)  # 20 a minute: one per 3 s


async def test_flood_limits_can_be_switched_off(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    emu.flood_limits = False
    for i in range(40):
        await bot.send_message(CHAT, f"message {i}")
    assert len(emu.sent_messages(CHAT)) == 40


async def test_lost_answer_posts_the_message_then_times_out(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    emu.lose_answer("sendMessage", delay=1.5)
    with pytest.raises(telegram.error.TimedOut):
        await bot.send_message(CHAT, "did it arrive?", read_timeout=0.5)
    [sent] = emu.sent_messages(CHAT)
    assert sent.text == "did it arrive?"
    [call] = emu.calls_of("sendMessage")
    assert call.answer_lost


async def test_dropped_answer_posts_the_message_then_disconnects(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    emu.lose_answer("sendMessage", drop=True, chat_id=CHAT + 1)
    assert (await bot.send_message(CHAT, "other chat answered")).text == "other chat answered"
    with pytest.raises(telegram.error.NetworkError):
        await bot.send_message(CHAT + 1, "posted, never confirmed")
    assert [m.text for m in emu.sent_messages(CHAT + 1)] == ["posted, never confirmed"]


async def test_photos_beyond_2560_px_are_stored_downscaled(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    message = await bot.send_photo(CHAT, png(4000, 2000))
    largest = message.photo[-1]
    assert (largest.width, largest.height) == (2560, 1280)
    data = bytes(await (await bot.get_file(largest.file_id)).download_as_bytearray())
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (2560, 1280)
        assert image.format == "JPEG"


async def test_a_press_answered_too_late_is_refused(
    emu: TelegramEmulator, bot: telegram.Bot
) -> None:
    message = await bot.send_message(
        CHAT,
        "pick",
        reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("a", callback_data="a")]]),
    )
    fresh = emu.press_button(chat_id=CHAT, user_id=USER, message=message.to_dict(), data="a")
    old = emu.press_button(chat_id=CHAT, user_id=USER, message=message.to_dict(), data="a", age=60)
    assert await bot.answer_callback_query(fresh["callback_query"]["id"])
    with pytest.raises(BadRequest, match=r"(?i)query is too old and response timeout expired"):
        await bot.answer_callback_query(old["callback_query"]["id"])
    emu.callback_query_ttl = 0.2
    late = emu.press_button(chat_id=CHAT, user_id=USER, message=message.to_dict(), data="a")
    await asyncio.sleep(0.3)
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(late["callback_query"]["id"])


def test_webhook_update_not_answered_in_time_is_sent_again(emu: TelegramEmulator) -> None:
    from aiohttp import web

    seen: list[int] = []
    finished: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append((await request.json())["update_id"])
        if len(seen) == 1:
            return web.Response(status=500)
        if len(seen) == 2:
            await asyncio.sleep(0.6)  # longer than the emulator waits
        finished.append(seen[-1])
        return web.Response()

    emu.webhook_timeout = 0.3
    emu.webhook_retry_delays = (0.05, 0.05, 0.05)
    app = web.Application()
    app.router.add_post("/hook", hook)
    with ServerThread(app) as receiver:
        assert raw_call(emu, "setWebhook", {"url": f"{receiver.url}/hook"})[0] == 200
        update = emu.send_message(chat_id=CHAT, user_id=USER, text="again?")
        deadline = time.monotonic() + 5
        while len(emu.webhook_deliveries) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        while len(finished) < 2 and time.monotonic() < deadline:  # the slow answer too
            time.sleep(0.01)
    deliveries = emu.webhook_deliveries
    assert [d.update_id for d in deliveries] == [update["update_id"]] * 3
    assert deliveries[0].status == 500
    assert deliveries[1].status is None and deliveries[1].error
    assert deliveries[2].status == 200
