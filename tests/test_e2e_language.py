"""Issue 3 end to end: replies, buttons and the command menu in English and Russian.

The language follows the user's Telegram `language_code` and can be changed in /settings.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bot.app import MENU
from bot.i18n import Texts
from tests.conftest import GROUP, USER
from tests.emulators.openai_images import Fault
from tests.test_e2e_access_quota import FakeClock, final_text
from tests.test_e2e_settings import buttons, choose, open_settings

CYRILLIC = re.compile(r"[а-яА-ЯёЁ]")


def _ru(key: str, **params: object) -> str:
    return Texts.load().get("ru", key, **params)


async def test_russian_telegram_user_gets_russian_replies(make_bot) -> None:
    async with make_bot() as bot:
        help_text = await bot.reply_text(bot.send("/help", language_code="ru"))
        assert help_text.startswith(_ru("help.intro")), help_text
        assert "/image" in help_text
        empty = await bot.reply_text(bot.send("/image", language_code="ru"))
        assert empty == _ru("image.usage")
        bad = await bot.reply_text(bot.send("/image cat x0", language_code="ru"))
        assert CYRILLIC.search(bad), bad
        bot.oai.queue_faults([Fault.http(400, code="moderation_blocked")])
        refused = await final_text(bot, bot.send("/image forbidden", language_code="ru"))
        assert refused == _ru("error.images.refused")
        # The same person with an English app gets English.
        english = await bot.reply_text(bot.send("/help", user_id=2002, language_code="en-US"))
        assert english.startswith("🎨 I draw"), english


async def test_unknown_language_falls_back_to_english(make_bot) -> None:
    async with make_bot() as bot:
        text = await bot.reply_text(bot.send("/help", language_code="pt-BR"))
        assert text.startswith("🎨 I draw") and not CYRILLIC.search(text)


async def test_russian_quota_and_access_texts(make_bot) -> None:
    clock = FakeClock(datetime(2025, 3, 1, 21, 30, tzinfo=UTC))
    async with make_bot(clock=clock, DAILY_IMAGE_LIMIT="1", ALLOWED_USER_IDS=str(USER)) as bot:
        first = bot.send("/image альпака", language_code="ru")
        await bot.replies(first, kinds=("photo",))
        over = await bot.reply_text(bot.send("/image ещё одна", language_code="ru"))
        assert CYRILLIC.search(over) and "00:00 UTC" in over, over
        assert "2 ч 30 мин" in over, over  # the time left is Russian too
        usage = await bot.reply_text(bot.send("/usage", language_code="ru"))
        assert "1 из 1" in usage and "2 ч 30 мин" in usage, usage
        denied = await bot.reply_text(bot.send("/image кот", user_id=4242, language_code="ru"))
        assert denied == _ru("access.denied", user_id=4242)
        in_group = bot.send("/image кот", user_id=4242, chat_id=GROUP, language_code="ru")
        assert await bot.reply_text(in_group) == _ru("access.denied_group", user_id=4242)
        assert len(bot.oai.api_requests) == 1


async def test_settings_language_switch_changes_replies_and_buttons(make_bot) -> None:
    async with make_bot() as bot:
        menu = await open_settings(bot)
        assert (menu.text or "").startswith("⚙️ Your defaults")
        await choose(bot, menu, "Language", "Русский")
        assert (menu.text or "") == _ru("settings.title")
        labels = [t for t, _ in buttons(menu)]
        assert any(t.startswith(_ru("settings.field.size")) for t in labels), labels
        assert all(CYRILLIC.search(t) for t in labels if not t.startswith("Язык")), labels
        help_text = await bot.reply_text(bot.send("/help"))
        assert help_text.startswith(_ru("help.intro")), help_text
        photo_msg = bot.send("/image альпака")
        (photo,) = await bot.replies(photo_msg, kinds=("photo",))
        result_labels = [t for t, _ in buttons(photo)]
        assert _ru("button.again") in result_labels, result_labels
        # And back to English, chosen in Russian.
        menu = await open_settings(bot)
        await choose(bot, menu, _ru("settings.field.language"), "English")
        assert (await bot.reply_text(bot.send("/help"))).startswith("🎨 I draw")


async def test_chosen_language_beats_the_telegram_language(make_bot) -> None:
    async with make_bot() as bot:
        menu = await open_settings(bot, language_code="ru")
        assert (menu.text or "") == _ru("settings.title")
        await choose(bot, menu, _ru("settings.field.language"), "English", language_code="ru")
        text = await bot.reply_text(bot.send("/help", language_code="ru"))
        assert text.startswith("🎨 I draw"), text


async def test_command_menu_exists_in_english_and_russian(make_bot) -> None:
    async with make_bot() as bot:
        commands = bot.tg.commands
        english = commands[("default", "")]
        russian = commands[("default", "ru")]
        assert [c["command"] for c in english] == list(MENU)
        assert [c["command"] for c in russian] == list(MENU)
        assert all(not CYRILLIC.search(c["description"]) for c in english)
        assert all(CYRILLIC.search(c["description"]) for c in russian), russian
        assert bot.tg.calls_of("sendMessage") == []
