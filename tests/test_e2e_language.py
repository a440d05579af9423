"""Issues 3 and 8 end to end: replies, buttons and the command menu in every language.

The language follows the user's Telegram `language_code` (with region fallbacks) and can be
changed in /settings; messages the bot starts (admin alerts) use the last language it saw.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest

from bot.app import MENU
from bot.i18n import Texts
from tests.conftest import GROUP, USER
from tests.emulators.openai_images import Fault
from tests.test_e2e_access_quota import FakeClock, final_text
from tests.test_e2e_settings import buttons, choose, open_settings, press

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
        text = await bot.reply_text(bot.send("/help", language_code="fr-FR"))
        assert text.startswith("🎨 I draw") and not CYRILLIC.search(text)


@pytest.mark.parametrize(
    ("code", "lang"),
    [("pt-br", "pt"), ("de-AT", "de"), ("es-419", "es"), ("uk", "uk"), ("tr", "tr")],
)
async def test_each_language_is_chosen_by_the_telegram_language(
    make_bot, code: str, lang: str
) -> None:
    texts = Texts.load()
    async with make_bot() as bot:
        help_text = await bot.reply_text(bot.send("/help", language_code=code))
        assert help_text.startswith(texts.get(lang, "help.intro")), help_text
        assert texts.get(lang, "help.options", max_count=10) in help_text
        bad = await bot.reply_text(bot.send("/image cat --hdd", language_code=code))
        assert bad.startswith(
            texts.get(lang, "error.unknown_option", value="--hdd", allowed="")[:8]
        )
        assert "--hdd" in bad
        assert bot.oai.api_requests == []


async def test_russian_quota_and_access_texts(make_bot) -> None:
    clock = FakeClock(datetime(2025, 3, 1, 21, 30, tzinfo=UTC))
    async with make_bot(clock=clock, DAILY_IMAGE_LIMIT="1", ALLOWED_USER_IDS=str(USER)) as bot:
        first = bot.send("/image альпака", language_code="ru")
        await bot.replies(first, kinds=("photo",))
        over = await bot.reply_text(bot.send("/image ещё одна", language_code="ru"))
        assert CYRILLIC.search(over) and "00:00 UTC" in over, over
        assert "через 2 часа 30 минут" in over, over  # the time left is Russian too
        assert "1 картинку" in over, over
        usage = await bot.reply_text(bot.send("/usage", language_code="ru"))
        assert "1 из 1 картинки" in usage and "2 часа 30 минут" in usage, usage
        denied = await bot.reply_text(bot.send("/image кот", user_id=4242, language_code="ru"))
        assert denied == _ru("access.denied", user_id=4242)
        in_group = bot.send("/image кот", user_id=4242, chat_id=GROUP, language_code="ru")
        assert await bot.reply_text(in_group) == _ru(
            "access.denied_group", user_id=4242, chat_id=GROUP
        )
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


async def test_command_menu_exists_in_every_language(make_bot) -> None:
    texts = Texts.load()
    async with make_bot() as bot:
        commands = bot.tg.commands
        assert set(commands) == {("default", "")} | {
            ("default", lang) for lang in texts.languages if lang != "en"
        }
        english = commands[("default", "")]
        russian = commands[("default", "ru")]
        assert [c["command"] for c in english] == list(MENU)
        assert all(not CYRILLIC.search(c["description"]) for c in english)
        assert all(CYRILLIC.search(c["description"]) for c in russian), russian
        for lang in texts.languages:
            menu = commands[("default", "" if lang == "en" else lang)]
            assert [c["command"] for c in menu] == list(MENU), lang
            expected = [texts.get(lang, f"menu.{name}") for name in MENU]
            assert [c["description"] for c in menu] == expected, lang
        assert "--high" in english[0]["description"]  # the new option syntax, in the menu too
        assert bot.tg.calls_of("sendMessage") == []


async def test_stats_names_failure_kinds_in_the_readers_language(make_bot) -> None:
    async with make_bot(ADMIN_USER_IDS="9001") as bot:
        bot.oai.queue_faults([Fault.http(400, code="moderation_blocked")])
        await final_text(bot, bot.send("/image forbidden"))
        for code, kind in (("ru", "отказ по безопасности: 1"), ("de", "vom Sicherheitssystem")):
            body = await bot.reply_text(bot.send("/stats", user_id=9001, language_code=code))
            assert kind in body, body
            assert "refused" not in body, body


async def test_admin_alert_goes_out_in_each_admins_last_seen_language(make_bot) -> None:
    admins = {9001: "uk", 9002: "de-CH", 9003: None}  # 9003 never wrote: the default language
    async with make_bot(ADMIN_USER_IDS=",".join(map(str, admins))) as bot:
        for admin, code in admins.items():
            if code is not None:
                await bot.reply_text(bot.send("/usage", user_id=admin, language_code=code))
        store = bot.services.store
        assert (await store.get_settings(scope="user", scope_id=9002))["seen_language"] == "de-CH"
        bot.oai.queue_faults([Fault.http(401, code="invalid_api_key")])
        await final_text(bot, bot.send("/image yellow alpaca"))
        texts = Texts.load()
        expected = {
            9001: texts.get("uk", "admin.alert.auth"),
            9002: texts.get("de", "admin.alert.auth"),
            9003: texts.get("en", "admin.alert.auth"),
        }
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            sent = {a: [m.text for m in bot.tg.sent_messages(a)] for a in admins}
            if all(expected[a] in sent[a] for a in admins):
                break
            await asyncio.sleep(0.02)
        assert all(expected[a] in sent[a] for a in admins), sent


async def test_the_last_seen_language_is_written_only_when_it_changes(make_bot) -> None:
    async with make_bot() as bot:
        store = bot.services.store
        writes: list[tuple[str, str | None]] = []
        original = store.set_setting

        async def counting(*, scope: str, scope_id: int, key: str, value: str | None) -> None:
            writes.append((key, value))
            await original(scope=scope, scope_id=scope_id, key=key, value=value)

        store.set_setting = counting  # type: ignore[method-assign]
        for _ in range(3):
            await bot.reply_text(bot.send("/usage", language_code="tr"))
        await bot.reply_text(bot.send("/usage", language_code="es"))
        assert writes == [("seen_language", "tr"), ("seen_language", "es")]


async def test_every_language_is_offered_in_settings(make_bot) -> None:
    texts = Texts.load()
    async with make_bot() as bot:
        menu = await open_settings(bot)
        await press(bot, menu, "Language")
        offered = {t.removeprefix("✅ ") for t, _ in buttons(menu)}
        names = {texts.get(lang, "language.name") for lang in texts.languages}
        assert len(names) == 7 and names <= offered, offered
        await press(bot, menu, "Türkçe")
        assert (menu.text or "") == texts.get("tr", "settings.title")
        assert (await bot.reply_text(bot.send("/help"))).startswith(texts.get("tr", "help.intro"))
