"""Issue 3 end to end: /settings keyboards, defaults used by /image, groups, and persistence.

The keyboard is driven the way a person would: read the buttons the bot sent, press one by its
label with `tg.press_button`, and check the backend requests of the next /image.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.store import DB_FILENAME, StoreError
from tests.conftest import API_KEY, GROUP, OTHER_USER, TOKEN, USER, Harness, base_env
from tests.emulators.openai_images import OpenAIEmulator
from tests.emulators.telegram_api import SentMessage, TelegramEmulator

MODELS = "gpt-image-2,dall-e-3"
ROOT = Path(__file__).resolve().parent.parent


def buttons(sent: SentMessage) -> list[tuple[str, str]]:
    """Return (label, callback data) of every inline button currently on a bot message."""
    markup = sent.get("reply_markup") or {}
    return [
        (b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row
    ]


async def saved_settings(bot: Harness, *, scope: str = "user", scope_id: int = USER) -> dict:
    """Return the saved settings, without the remembered Telegram language."""
    values = await bot.services.store.get_settings(scope=scope, scope_id=scope_id)
    values.pop("seen_language", None)
    return values


async def open_settings(
    bot: Harness, *, user_id: int = USER, chat_id: int | None = None, **kwargs: Any
) -> SentMessage:
    """Send /settings and return the keyboard message the bot answered with."""
    msg = bot.send("/settings", user_id=user_id, chat_id=chat_id, **kwargs)
    (menu,) = await bot.replies(msg, kinds=("text",))
    assert buttons(menu), f"no keyboard on {menu.text!r}"
    return menu


async def press(
    bot: Harness,
    menu: SentMessage,
    label: str,
    *,
    user_id: int = USER,
    edits: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Press the button whose label starts with `label`; return the answerCallbackQuery params."""
    found = [d for t, d in buttons(menu) if t.removeprefix("✅ ").startswith(label)]
    assert found, f"no button {label!r} in {buttons(menu)}"
    answers = len(bot.tg.calls_of("answerCallbackQuery"))
    edited = len(bot.tg.calls_of("editMessageText"))
    bot.tg.press_button(
        chat_id=menu.chat_id, user_id=user_id, message=menu, data=found[0], **kwargs
    )
    calls = await bot.tg.wait_for_async("answerCallbackQuery", count=answers + 1, timeout=5)
    if edits:
        await bot.tg.wait_for_async("editMessageText", count=edited + 1, timeout=5)
    return dict(calls[answers].params)


async def choose(bot: Harness, menu: SentMessage, field: str, value: str, **kw: Any) -> None:
    """Open one field's choices on the keyboard and pick `value`."""
    await press(bot, menu, field, **kw)
    await press(bot, menu, value, **kw)


async def test_settings_keyboard_opens_with_every_field(make_bot) -> None:
    async with make_bot(IMAGE_MODELS=MODELS) as bot:
        menu = await open_settings(bot)
        labels = [t for t, _ in buttons(menu)]
        for field in ("Size", "Count", "Quality", "Model", "Send as file", "Language"):
            assert any(t.startswith(f"{field}:") for t in labels), labels
        assert all(len(d.encode()) <= 64 for _, d in buttons(menu))
        await press(bot, menu, "Model")
        assert {"gpt-image-2", "dall-e-3"} <= {t.removeprefix("✅ ") for t, _ in buttons(menu)}


async def test_defaults_from_the_keyboard_are_used_and_typed_options_win(make_bot) -> None:
    async with make_bot(IMAGE_MODELS=MODELS) as bot:
        menu = await open_settings(bot)
        await choose(bot, menu, "Size", "1536x1024")
        await choose(bot, menu, "Count", "2")
        await choose(bot, menu, "Quality", "high")
        assert "Size: 1536x1024" in [t for t, _ in buttons(menu)]
        saved = await saved_settings(bot)
        assert saved == {"size": "1536x1024", "count": "2", "quality": "high"}

        msg = bot.send("/image yellow alpaca")
        await bot.replies(msg, count=2, kinds=("photo",))
        fields = bot.oai.api_requests[-1].fields
        assert (fields["size"], fields["n"], fields["quality"]) == ("1536x1024", 2, "high")

        typed = bot.send("/image yellow alpaca 1024x1024 x1 --low")
        await bot.replies(typed, kinds=("photo",))
        fields = bot.oai.api_requests[-1].fields
        assert (fields["size"], fields.get("n", 1), fields["quality"]) == ("1024x1024", 1, "low")

        # "Default" clears the choice again.
        await press(bot, menu, "Quality")
        await press(bot, menu, "↺")
        saved = await saved_settings(bot)
        assert "quality" not in saved
        assert bot.oai.invalid_requests == []


async def test_model_choice_is_used(make_bot) -> None:
    async with make_bot(IMAGE_MODELS=MODELS) as bot:
        menu = await open_settings(bot)
        await choose(bot, menu, "Model", "dall-e-3")
        msg = bot.send("/image yellow alpaca --landscape")
        await bot.replies(msg, kinds=("photo",))
        fields = bot.oai.api_requests[-1].fields
        assert fields["model"] == "dall-e-3"
        assert fields["size"] == "1792x1024"
        assert bot.oai.invalid_requests == []
        # The keyboard now offers dall-e-3's choices.
        await press(bot, menu, "Quality")
        offered = {t.removeprefix("✅ ") for t, _ in buttons(menu)}
        assert {"standard", "hd"} <= offered and "low" not in offered


async def test_send_as_file_gives_a_document(make_bot) -> None:
    async with make_bot() as bot:
        menu = await open_settings(bot)
        await choose(bot, menu, "Send as file", "on")
        assert "Send as file: on" in [t for t, _ in buttons(menu)]
        msg = bot.send("/image yellow alpaca")
        (doc,) = await bot.replies(msg, kinds=("photo", "document"))
        assert doc.kind == "document"
        assert doc.data is not None and doc.data.startswith(b"\x89PNG")
        assert bot.tg.calls_of("sendPhoto") == []


async def test_someone_else_pressing_the_buttons_changes_nothing(make_bot) -> None:
    async with make_bot(IMAGE_MODELS=MODELS) as bot:
        menu = await open_settings(bot)
        before = buttons(menu)
        edits = len(bot.tg.calls_of("editMessageText"))
        answer = await press(bot, menu, "Size", user_id=OTHER_USER, edits=False)
        assert "someone else" in answer.get("text", ""), answer
        assert len(answer["text"]) <= 200
        # A forged "choose" press with the owner's data changes nothing either.
        for owner_choice in (f"set:{USER}:u:size:1", f"set:{USER}:size:1"):  # and the old form
            bot.tg.press_button(chat_id=USER, user_id=OTHER_USER, message=menu, data=owner_choice)
        await bot.tg.wait_for_async("answerCallbackQuery", count=3, timeout=5)
        await bot.settle(0.3)
        assert len(bot.tg.calls_of("editMessageText")) == edits
        assert buttons(menu) == before
        assert await saved_settings(bot) == {}
        assert await saved_settings(bot, scope_id=OTHER_USER) == {}


async def test_group_settings_are_for_chat_admins_and_apply_to_the_chat(make_bot) -> None:
    async with make_bot() as bot:
        bot.tg.set_chat_admins(GROUP, [USER])
        menu = await open_settings(bot, user_id=USER, chat_id=GROUP)
        assert (menu.text or "").startswith("⚙️ Whose defaults")
        assert [t for t, _ in buttons(menu)] == ["👥 This chat's", "👤 My own"]
        await press(bot, menu, "👥")
        assert (menu.text or "").startswith("⚙️ This chat's defaults")
        await choose(bot, menu, "Size", "1024x1536")
        assert await saved_settings(bot, scope="chat", scope_id=GROUP) == {"size": "1024x1536"}
        assert await saved_settings(bot) == {}
        # A plain member's picture in the group uses the chat's default...
        msg = bot.send("/image yellow alpaca", user_id=OTHER_USER, chat_id=GROUP)
        await bot.replies(msg, kinds=("photo",))
        assert bot.oai.api_requests[-1].fields["size"] == "1024x1536"
        # ...but not in their private chat.
        private = bot.send("/image yellow alpaca", user_id=OTHER_USER)
        await bot.replies(private, kinds=("photo",))
        assert bot.oai.api_requests[-1].fields.get("size") != "1024x1536"
        # A member pressing the admin's keyboard gets the notice.
        answer = await press(bot, menu, "Size", user_id=OTHER_USER, edits=False)
        assert "someone else" in answer.get("text", "")
        # An admin who is demoted meanwhile can no longer change the chat's settings.
        await press(bot, menu, "Size")
        bot.tg.set_chat_member(GROUP, USER, "member")
        answer = await press(bot, menu, "1536x1024", edits=False)
        assert "administrators" in answer.get("text", ""), answer
        assert await saved_settings(bot, scope="chat", scope_id=GROUP) == {"size": "1024x1536"}


async def test_a_group_member_gets_their_own_settings_in_the_group(make_bot) -> None:
    async with make_bot() as bot:
        menu = await open_settings(bot, user_id=OTHER_USER, chat_id=GROUP)
        assert (menu.text or "").startswith("⚙️ Your own defaults"), menu.text
        assert all(f":{OTHER_USER}:u:" in f":{d}" for _, d in buttons(menu))
        await choose(bot, menu, "Size", "1024x1536", user_id=OTHER_USER)
        assert await saved_settings(bot, scope_id=OTHER_USER) == {"size": "1024x1536"}
        assert await saved_settings(bot, scope="chat", scope_id=GROUP) == {}
        # Their own settings apply to them, in the group and in private...
        for chat in (GROUP, None):
            msg = bot.send("/image yellow alpaca", user_id=OTHER_USER, chat_id=chat)
            await bot.replies(msg, kinds=("photo",))
            assert bot.oai.api_requests[-1].fields["size"] == "1024x1536"
        # ...not to anyone else in the group, and nobody else can press their keyboard.
        msg = bot.send("/image yellow alpaca", user_id=USER, chat_id=GROUP)
        await bot.replies(msg, kinds=("photo",))
        assert bot.oai.api_requests[-1].fields.get("size") != "1024x1536"
        answer = await press(bot, menu, "Size", user_id=USER, edits=False)
        assert "someone else" in answer.get("text", "")
        # A forged press for the chat's settings changes nothing either.
        forged = f"set:{OTHER_USER}:c:size:1"
        answers = len(bot.tg.calls_of("answerCallbackQuery"))
        bot.tg.press_button(chat_id=GROUP, user_id=OTHER_USER, message=menu, data=forged)
        calls = await bot.tg.wait_for_async("answerCallbackQuery", count=answers + 1, timeout=5)
        assert "administrators" in calls[answers].params.get("text", "")
        assert await saved_settings(bot, scope="chat", scope_id=GROUP) == {}


async def test_an_admin_can_choose_their_own_settings_in_a_group(make_bot) -> None:
    async with make_bot() as bot:
        bot.tg.set_chat_admins(GROUP, [USER])
        menu = await open_settings(bot, user_id=USER, chat_id=GROUP)
        answer = await press(bot, menu, "👥", user_id=OTHER_USER, edits=False)
        assert "someone else" in answer.get("text", "")
        await press(bot, menu, "👤")
        assert (menu.text or "").startswith("⚙️ Your own defaults")
        await choose(bot, menu, "Count", "2")
        assert await saved_settings(bot) == {"count": "2"}
        assert await saved_settings(bot, scope="chat", scope_id=GROUP) == {}
        private = bot.send("/image yellow alpaca")
        await bot.replies(private, count=2, kinds=("photo",))
        assert bot.oai.api_requests[-1].fields["n"] == 2


async def test_counters_and_settings_survive_a_restart(make_bot) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="5") as bot:
        menu = await open_settings(bot)
        await choose(bot, menu, "Size", "1536x1024")
        await choose(bot, menu, "Language", "Русский")
        msg = bot.send("/image yellow alpaca x2")
        await bot.replies(msg, count=2, kinds=("photo",))
        for _ in range(200):  # wait (bounded) for the request to be settled
            if (await bot.services.store.usage(user_id=USER, user_limit=5)).total_all_time:
                break
            await asyncio.sleep(0.02)
    async with make_bot(DAILY_IMAGE_LIMIT="5") as bot:
        text = await bot.reply_text(bot.send("/usage"))
        assert "2 из 5" in text and "осталось 3" in text, text
        msg = bot.send("/image yellow alpaca")
        await bot.replies(msg, kinds=("photo",))
        assert bot.oai.api_requests[-1].fields["size"] == "1536x1024"
        menu = await open_settings(bot)
        assert "Размер: 1536x1024" in [t for t, _ in buttons(menu)]


async def test_corrupted_database_stops_start_up_with_a_clear_message(
    make_bot, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_FILENAME).write_bytes(b"this is not a database, just garbage " * 200)
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        async with make_bot():
            pass
    message = str(caught.value)
    assert DB_FILENAME in message
    assert "damaged" in message or "not an SQLite database" in message
    assert "backup" in message
    assert time.monotonic() - started < 5


def test_python_m_bot_with_a_corrupted_database_exits_2_with_one_message(
    tg: TelegramEmulator, oai: OpenAIEmulator, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_FILENAME).write_bytes(b"garbage, not SQLite " * 500)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        **base_env(tg, oai, data),
        "LOG_LEVEL": "INFO",
        "ALLOWED_USER_IDS": "1001",  # closed, so the "open to everyone" warning stays out
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "database" in lines[0] and DB_FILENAME in lines[0], lines[0]
    assert TOKEN not in proc.stderr and API_KEY not in proc.stderr
    assert tg.calls_of("getUpdates") == []
    assert oai.api_requests == []


async def test_defaults_of_another_model_do_not_block_a_switched_user(make_bot) -> None:
    async with make_bot(
        IMAGE_MODEL="gpt-image-1",
        IMAGE_MODELS="gpt-image-1,dall-e-3",
        DEFAULT_IMAGE_SIZE="1536x1024",
        DEFAULT_IMAGE_QUALITY="low",
    ) as bot:
        store = bot.services.store
        await store.set_setting(scope="user", scope_id=USER, key="model", value="dall-e-3")
        await store.set_setting(scope="user", scope_id=USER, key="size", value="1024x1536")
        msg = bot.send("/image a quiet lake")
        await bot.replies(msg, kinds=("photo",))
        (request,) = bot.oai.api_requests
        assert request.fields["model"] == "dall-e-3"
        # Neither the operator's gpt-image size nor a size saved for another model applies;
        # the default quality "low" is one dall-e-3 understands (as "standard").
        assert request.fields.get("size") is None
        assert request.fields.get("quality") == "standard"
        assert bot.oai.invalid_requests == []
        # A typed option the model rejects is still refused with the accepted values.
        msg = bot.send("/image a quiet lake 1536x1024")
        text = await bot.reply_text(msg)
        assert "1792x1024" in text
        assert len(bot.oai.api_requests) == 1
