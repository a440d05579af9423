"""Issue 11: streamed previews in the chat, over the loopback Telegram and images emulators.

The images emulator streams `partial_images` previews (real 1024×1024 PNGs) at scripted times;
the bot shows the first as a photo replying to the command, edits its media for later ones, and
puts the final picture in its place (or sends an album or a document and deletes the preview).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.handlers import progress
from tests.conftest import GROUP, USER, Harness, until
from tests.emulators.telegram_api import SentMessage


@pytest.fixture(autouse=True)
def _quick_preview_edits(monkeypatch: pytest.MonkeyPatch) -> None:
    # One preview edit every 3 s (15 s in groups) in production; the emulator's previews come
    # 0.6 s apart here so that the tests stay fast.
    monkeypatch.setattr(progress, "PREVIEW_EDIT_INTERVAL", 0.3)


def _previews(bot: Harness, command: dict[str, Any]) -> list[SentMessage]:
    wanted = command["message_id"]
    return [
        m
        for m in bot.tg.sent_messages(command["chat"]["id"])
        if m.method == "sendPhoto" and m["reply_to_message"]["message_id"] == wanted
    ]


def _buttons(message: SentMessage | dict[str, Any]) -> list[str]:
    markup = message.get("reply_markup") or {}
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]


def _streaming(bot: Harness, *, delays: tuple[float, ...], final: float) -> None:
    bot.oai.partial_delays = delays
    bot.oai.final_delay = final


async def test_previews_then_the_final_picture_in_their_place(make_bot) -> None:
    async with make_bot(STREAM_PREVIEWS="auto", STATUS_MESSAGE_DELAY_SECONDS="30") as bot:
        _streaming(bot, delays=(0.2, 0.6), final=0.6)
        command = bot.send("/image a watercolour heron")
        await until(lambda: bool(_previews(bot, command)))
        (preview,) = _previews(bot, command)
        assert preview.text is not None and preview.text.startswith("Preview 1 of 2 · ")
        assert _buttons(preview) == ["❌ Cancel"]
        await until(lambda: len(preview.media_edits) == 1)
        assert preview.text is not None and preview.text.startswith("Preview 2 of 2 · ")
        assert _buttons(preview) == ["❌ Cancel"]  # kept through the edit
        await until(lambda: len(preview.media_edits) == 2)
        assert preview.text == "a watercolour heron"
        assert _buttons(preview) == ["🔁 Again", "📄 Original", "✏️ Edit"]
        assert preview.data is not None and preview.data.startswith(b"\x89PNG")
        (photo,) = await bot.replies(command, kinds=("photo",))
        assert photo.message_id == preview.message_id  # one message, from preview to result
        assert bot.tg.calls_of("deleteMessage") == []
        (request,) = bot.oai.api_requests
        assert request.fields["stream"] is True and request.fields["partial_images"] == 2
        assert bot.oai.invalid_requests == []
        (stream,) = bot.oai.streams
        assert stream.outcome == "completed"
        edits = bot.tg.calls_of("editMessageMedia")
        assert [c.status for c in edits] == [200, 200]


async def test_in_a_group_a_preview_soon_after_another_is_skipped(make_bot) -> None:
    # A group's 20 messages a minute are shared by everyone there: one preview edit per 15 s.
    async with make_bot(STREAM_PREVIEWS="auto", STATUS_MESSAGE_DELAY_SECONDS="30") as bot:
        _streaming(bot, delays=(0.1, 0.5), final=0.5)
        command = bot.send("/image a crowded market", chat_id=GROUP)
        (photo,) = await bot.replies(command, kinds=("photo",))
        await until(lambda: photo.text == "a crowded market")
        assert len(photo.media_edits) == 1  # the final picture only; preview 2 was skipped
        assert len(bot.tg.calls_of("sendPhoto")) == 1


async def test_an_album_is_sent_and_the_preview_deleted(make_bot) -> None:
    async with make_bot(STREAM_PREVIEWS="auto", STATUS_MESSAGE_DELAY_SECONDS="30") as bot:
        _streaming(bot, delays=(0.1,), final=0.5)
        command = bot.send("/image two foxes x2")
        await until(lambda: len(bot.tg.calls_of("sendMediaGroup")) == 1)
        await until(
            lambda: len(_previews(bot, command)) == 1 and _previews(bot, command)[0].deleted
        )
        album = await bot.replies(command, count=2, kinds=("photo",))
        assert {m.method for m in album} == {"sendMediaGroup"}
        previews = _previews(bot, command)
        assert len(previews) == 1
        await until(lambda: previews[0].deleted)
        assert bot.tg.calls_of("editMessageMedia") == []


async def test_a_document_result_is_sent_and_the_preview_deleted(make_bot) -> None:
    async with make_bot(STREAM_PREVIEWS="auto", STATUS_MESSAGE_DELAY_SECONDS="30") as bot:
        _streaming(bot, delays=(0.1,), final=0.5)
        command = bot.send("/image a neon logo --transparent")
        (document,) = await bot.replies(command, kinds=("document",))
        assert document.filename == "image-1.png"
        (preview,) = _previews(bot, command)
        await until(lambda: preview.deleted)


async def test_a_refused_preview_is_skipped(make_bot) -> None:
    async with make_bot(STREAM_PREVIEWS="auto", STATUS_MESSAGE_DELAY_SECONDS="30") as bot:
        _streaming(bot, delays=(0.1, 0.6), final=0.6)
        bot.tg.fail_next("sendPhoto", status=400, description="Bad Request: IMAGE_PROCESS_FAILED")
        command = bot.send("/image a stubborn mule")
        (photo,) = await bot.replies(command, kinds=("photo",), timeout=10)
        await until(lambda: photo.text == "a stubborn mule")
        sends = bot.tg.calls_of("sendPhoto")
        assert [c.status for c in sends] == [400, 200]  # the second preview was shown
        assert str(sends[1].params["caption"]).startswith("Preview 2 of 2")


async def test_a_refused_final_edit_sends_the_picture_instead(make_bot) -> None:
    async with make_bot(STREAM_PREVIEWS="auto", STATUS_MESSAGE_DELAY_SECONDS="30") as bot:
        _streaming(bot, delays=(0.1,), final=0.5)
        bot.tg.fail_next(
            "editMessageMedia", status=400, description="Bad Request: MEDIA_EMPTY", times=1
        )
        command = bot.send("/image a patient heron")
        await until(lambda: len(bot.tg.calls_of("sendPhoto")) == 2)
        preview, final = _previews(bot, command)
        await until(lambda: preview.deleted)
        assert final.text == "a patient heron"
        assert _buttons(final) == ["🔁 Again", "📄 Original", "✏️ Edit"]


async def test_cancel_on_the_preview_closes_the_stream(make_bot) -> None:
    async with make_bot(
        STREAM_PREVIEWS="auto", DAILY_IMAGE_LIMIT="1", STATUS_MESSAGE_DELAY_SECONDS="30"
    ) as bot:
        _streaming(bot, delays=(0.1, 30.0), final=0.0)
        command = bot.send("/image a very slow sunrise")
        await until(lambda: bool(_previews(bot, command)))
        (preview,) = _previews(bot, command)
        data = preview["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        bot.tg.press_button(chat_id=USER, user_id=USER, message=preview, data=data)
        stream = await asyncio.to_thread(bot.oai.wait_for_stream_end, 0, 5.0)
        assert stream.outcome == "client_closed"  # the host sees the connection dropped
        (reply,) = await bot.replies(command, kinds=("text",))
        assert reply.text == "❌ Cancelled — this request was not counted."
        await until(lambda: preview.deleted)
        await until(lambda: bot.services.limiter.in_flight(USER) == 0)
        usage = await bot.services.store.usage(user_id=USER, user_limit=1)
        assert usage.used_today == 0


async def test_no_previews_when_streaming_is_off(make_bot) -> None:
    async with make_bot(STREAM_PREVIEWS="off") as bot:
        command = bot.send("/image a plain heron")
        (photo,) = await bot.replies(command, kinds=("photo",))
        assert photo.text == "a plain heron"
        assert "stream" not in bot.oai.api_requests[0].fields
        assert bot.tg.calls_of("editMessageMedia") == []
