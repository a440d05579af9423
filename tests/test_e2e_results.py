"""Buttons under every result and /history, end to end over the loopback emulators."""

from __future__ import annotations

import asyncio
import io
import time

from PIL import Image

from tests.conftest import GROUP, OTHER_USER, USER


def known_png(color: tuple[int, int, int] = (12, 34, 56)) -> bytes:
    """Return a 1024x1024 PNG the images emulator will answer with."""
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 1024), color).save(buffer, format="PNG")
    return buffer.getvalue()


def buttons(message) -> dict[str, str]:
    """Return the inline buttons of a bot message as {label: callback data}."""
    markup = message.get("reply_markup") or {}
    return {b["text"]: b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row}


def button(message, label: str) -> str:
    """Return the callback data of the button whose label contains `label`."""
    (data,) = [d for text, d in buttons(message).items() if label in text]
    return data


async def answers(bot, count: int = 1, timeout: float = 5.0) -> list[dict]:
    """Wait for `count` answerCallbackQuery calls; return their params."""
    calls = await bot.tg.wait_for_async("answerCallbackQuery", count=count, timeout=timeout)
    return [call.params for call in calls]


async def wait_requests(bot, count: int, timeout: float = 5.0) -> list:
    """Wait (without blocking the loop) until the images emulator has `count` API requests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(bot.oai.api_requests) >= count:
            return bot.oai.api_requests
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(bot.oai.api_requests)} of {count} requests")


async def kept(bot, message, timeout: float = 5.0) -> None:
    """Wait until the originals of the result under `message` are on disk.

    They are written just after the photo is sent (bot/handlers/image.py `_deliver`).
    """
    result_id = button(message, "📄").split(":", 1)[1]
    folder = bot.settings.data_dir / "originals" / result_id
    deadline = time.monotonic() + timeout
    while not (folder.is_dir() and any(folder.iterdir())):
        assert time.monotonic() < deadline, f"originals of {result_id} never kept"
        await asyncio.sleep(0.02)


def press(bot, message, data: str, *, user_id: int = USER) -> None:
    """Press an inline button of a bot message."""
    bot.tg.press_button(chat_id=message.chat_id, user_id=user_id, message=message, data=data)


def compared(request) -> dict:
    """Return the request fields that must repeat on 🔁 Again."""
    return {k: v for k, v in request.fields.items() if k != "user"}


async def test_every_result_has_three_short_buttons(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca 1024x1024")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        found = buttons(photo)
        assert [label[:1] for label in found] == ["🔁", "📄", "✏"]
        for data in found.values():
            assert 1 <= len(data.encode()) <= 64


async def test_again_repeats_the_same_request(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca 1536x1024 --high")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        press(bot, photo, button(photo, "🔁"))
        (again,) = await bot.replies(photo.message, kinds=("photo",))
        first, second = bot.oai.api_requests
        assert compared(second) == compared(first)
        assert first.fields["size"] == "1536x1024" and first.fields["quality"] == "high"
        assert bot.oai.invalid_requests == []
        assert "yellow alpaca" in (again.text or "")
        assert len(buttons(again)) == 3
        assert buttons(again) != buttons(photo)  # a new result with its own id


async def test_again_counts_against_the_daily_limit(make_bot) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="1") as bot:
        msg = bot.send("/image yellow alpaca")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        press(bot, photo, button(photo, "🔁"))
        text = await bot.reply_text(photo.message)
        assert "limit" in text.lower()
        await bot.settle(0.2)
        assert len(bot.oai.api_requests) == 1
        usage = await bot.services.store.usage(user_id=USER, user_limit=1)
        assert usage.used_today == 1


async def test_original_sends_the_lossless_file_without_generating(make_bot) -> None:
    original = known_png()
    async with make_bot(DAILY_IMAGE_LIMIT="1") as bot:
        bot.oai.image_bytes = original
        msg = bot.send("/image yellow alpaca")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        await kept(bot, photo)
        press(bot, photo, button(photo, "📄"))
        (document,) = await bot.replies(photo.message, kinds=("document",))
        assert document.data == original
        assert (document.filename or "").endswith(".png")
        (answer,) = await answers(bot)
        assert not answer.get("show_alert")
        assert len(bot.oai.api_requests) == 1
        usage = await bot.services.store.usage(user_id=USER, user_limit=1)
        assert usage.used_today == 1


async def test_edit_button_answers_with_a_hint(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        before = len(bot.tg.sent_messages(USER))
        press(bot, photo, button(photo, "✏"))
        (answer,) = await answers(bot)
        assert "/edit" in answer["text"]
        await bot.settle(0.2)
        assert len(bot.tg.sent_messages(USER)) == before
        assert len(bot.oai.api_requests) == 1


async def test_stranger_in_a_group_cannot_press(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca", chat_id=GROUP)
        (photo,) = await bot.replies(msg, kinds=("photo",))
        before = len(bot.tg.sent_messages(GROUP))
        for label in ("🔁", "📄", "✏"):
            press(bot, photo, button(photo, label), user_id=OTHER_USER)
        found = await answers(bot, count=3)
        for answer in found:
            assert "only the person who asked" in answer["text"].lower()
        await bot.settle(0.3)
        assert len(bot.tg.sent_messages(GROUP)) == before
        assert len(bot.oai.api_requests) == 1
        # The one who asked still can.
        press(bot, photo, button(photo, "🔁"))
        await bot.replies(photo.message, kinds=("photo",))
        assert len(bot.oai.api_requests) == 2


async def test_buttons_work_after_a_restart(make_bot) -> None:
    original = known_png((90, 10, 10))
    async with make_bot() as bot:
        bot.oai.image_bytes = original
        msg = bot.send("/image yellow alpaca 1024x1024")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        await kept(bot, photo)
    async with make_bot() as bot:
        press(bot, photo, button(photo, "📄"))
        (document,) = await bot.replies(photo.message, kinds=("document",))
        assert document.data == original
        press(bot, photo, button(photo, "🔁"))
        await bot.replies(photo.message, kinds=("photo",))
        first, second = bot.oai.api_requests
        assert compared(second) == compared(first)


async def test_buttons_whose_result_is_gone_say_expired(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        before = len(bot.tg.sent_messages(USER))
        for data in ("again:zzzzzzzz", "orig:zzzzzzzz", "rerun:zzzzzzzz", "again", "junk"):
            press(bot, photo, data)
        found = await answers(bot, count=5)
        for answer in found:
            assert "expired" in answer["text"].lower()
        await bot.settle(0.2)
        assert len(bot.tg.sent_messages(USER)) == before
        assert len(bot.oai.api_requests) == 1


async def test_original_whose_files_are_gone_says_expired(make_bot, tmp_path) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        result_id = button(photo, "📄").split(":", 1)[1]
        await kept(bot, photo)
        folder = tmp_path / "data" / "originals" / result_id
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        press(bot, photo, button(photo, "📄"))
        (answer,) = await answers(bot)
        assert "expired" in answer["text"].lower()


async def test_album_buttons_come_on_a_follow_up(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca x2")
        album = await bot.replies(msg, count=2, kinds=("photo",))
        assert all(buttons(p) == {} for p in album)
        await bot.tg.wait_for_async(
            lambda c: c.method == "sendMessage" and c.params.get("text") == "What next?"
        )
        (follow_up,) = [m for m in bot.tg.sent_messages(USER) if m.text == "What next?"]
        assert follow_up.message_id > album[1].message_id
        await kept(bot, follow_up)
        press(bot, follow_up, button(follow_up, "📄"))
        documents = await bot.replies(follow_up.message, count=2, kinds=("document",))
        assert [d.data for d in documents] == [p.data for p in album]
        press(bot, follow_up, button(follow_up, "🔁"))
        await bot.replies(follow_up.message, count=2, kinds=("photo",))
        first, second = bot.oai.api_requests
        assert compared(second) == compared(first) and first.fields["n"] == 2


async def test_history_lists_and_reruns(make_bot) -> None:
    async with make_bot() as bot:
        for text in ("/image red fox 1536x1024", "/image blue whale --high", "/image green frog"):
            msg = bot.send(text)
            await bot.replies(msg, kinds=("photo",))
        msg = bot.send("/history")
        (listing,) = await bot.replies(msg, kinds=("text",))
        lines = (listing.text or "").splitlines()
        assert lines[1].startswith("1. green frog")
        assert lines[2].startswith("2. blue whale (--high)")
        assert lines[3].startswith("3. red fox (1536x1024)")
        assert all("UTC" in line for line in lines[1:])
        found = buttons(listing)
        assert list(found) == ["🔁 1", "🔁 2", "🔁 3"]
        assert all(len(d.encode()) <= 64 for d in found.values())
        press(bot, listing, found["🔁 3"])
        (rerun,) = await bot.replies(listing.message, kinds=("photo",))
        requests = bot.oai.api_requests
        assert len(requests) == 4
        assert compared(requests[3]) == compared(requests[0])
        assert requests[3].fields["size"] == "1536x1024"
        assert "red fox" in (rerun.text or "")


async def test_history_shows_ten_and_the_store_keeps_fifty(make_bot) -> None:
    async with make_bot() as bot:
        store = bot.services.store
        for i in range(55):
            await store.save_result(
                user_id=USER, chat_id=USER, prompt=f"prompt {i}", options="{}", model="gpt-image-2"
            )
        await store.save_result(
            user_id=OTHER_USER, chat_id=OTHER_USER, prompt="other", options="{}", model="x"
        )
        assert len(await store.history(user_id=USER, limit=1000)) == 50
        assert len(await store.history(user_id=OTHER_USER, limit=1000)) == 1
        msg = bot.send("/history")
        (listing,) = await bot.replies(msg, kinds=("text",))
        lines = (listing.text or "").splitlines()[1:]
        assert len(lines) == 10
        assert lines[0].startswith("1. prompt 54")
        assert lines[9].startswith("10. prompt 45")
        assert len(buttons(listing)) == 10


async def test_history_when_empty(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/history")
        text = await bot.reply_text(msg)
        assert "no requests yet" in text
        (call,) = [c for c in bot.tg.calls_of("sendMessage") if "no requests" in c.params["text"]]
        assert "reply_markup" not in call.params


async def test_original_of_a_document_result_survives_pruning(make_bot, tmp_path) -> None:
    original = known_png()
    async with make_bot() as bot:
        await bot.services.store.set_setting(scope="user", scope_id=USER, key="as_file", value="1")
        bot.oai.image_bytes = original
        msg = bot.send("/image yellow alpaca")
        (sent,) = await bot.replies(msg, kinds=("document",))
        result_id = button(sent, "📄").split(":", 1)[1]
        await kept(bot, sent)
        deadline = time.monotonic() + 5
        while not (record := await bot.services.store.get_result(result_id=result_id)).file_ids:
            assert time.monotonic() < deadline, "document file id never recorded"
            await asyncio.sleep(0.02)
        assert record.file_ids == (sent["document"]["file_id"],)
        folder = tmp_path / "data" / "originals" / result_id
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        press(bot, sent, button(sent, "📄"))
        replies = await bot.replies(sent.message, kinds=("document",))
        resend = bot.tg.calls_of("sendDocument")[-1]
        assert resend.params["document"] == sent["document"]["file_id"]
        assert not resend.files, "resent by file id, not uploaded again"
        assert bot.tg.file_bytes(replies[-1]["document"]["file_id"]) == original
        assert len(bot.oai.api_requests) == 1


async def test_history_in_a_group_shows_only_that_groups_requests(make_bot) -> None:
    async with make_bot() as bot:
        private = bot.send("/image my secret diary doodle")
        await bot.replies(private, kinds=("photo",))
        public = bot.send("/image a harbour at dawn", chat_id=GROUP)
        await bot.replies(public, kinds=("photo",))
        msg = bot.send("/history", chat_id=GROUP)
        listing = next(
            m for m in await bot.replies(msg, kinds=("text",)) if "harbour" in (m.text or "")
        )
        assert "secret diary" not in (listing.text or "")
        msg = bot.send("/history")
        text = await bot.reply_text(msg)
        assert "secret diary" in text and "harbour" in text
