"""Small helpers shared by the handlers: command arguments, language, plain replies, staleness."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from telegram import Bot, CallbackQuery, Chat, InlineKeyboardMarkup, Message, User
from telegram.error import Forbidden, TelegramError

from bot.handlers.services import Services

logger = logging.getLogger(__name__)

_COMMAND = re.compile(r"^/[^\s]+")


def command_args(text: str) -> str:
    """Return what follows the leading `/command[@bot]` token, as typed."""
    return _COMMAND.sub("", text, count=1)


def is_group(chat: Chat) -> bool:
    """Return whether the chat is a group or supergroup."""
    return chat.type in (Chat.GROUP, Chat.SUPERGROUP)


async def language_of(services: Services, user: User | None) -> str:
    """Return the user's chosen language, else the one their Telegram app uses."""
    if user is None:
        return services.texts.default
    chosen = (await services.store.get_settings(scope="user", scope_id=user.id)).get("language")
    if chosen and chosen in services.texts.languages:
        return chosen
    return services.texts.pick(user.language_code)


async def reply_plain(
    message: Message, text: str, *, reply_markup: InlineKeyboardMarkup | None = None
) -> Message | None:
    """Reply to `message` with plain text (never parsed as markup); log and swallow failures."""
    try:
        return await message.reply_text(
            text, do_quote=True, parse_mode=None, reply_markup=reply_markup
        )
    except TelegramError as exc:
        logger.warning("could not reply in chat %s: %s", message.chat_id, exc)
        return None


async def answer_query(
    query: CallbackQuery, text: str | None = None, *, show_alert: bool = False
) -> bool:
    """Answer a button press; return False (logged) when Telegram refused, e.g. it is too old."""
    try:
        await query.answer(text, show_alert=show_alert)
    except TelegramError as exc:
        logger.info("could not answer a button press: %s", exc)
        return False
    return True


def is_stale(services: Services, message: Message) -> bool:
    """Return whether the command was sent longer than `STALE_COMMAND_SECONDS` ago."""
    limit = services.settings.stale_command_seconds
    if limit <= 0:
        return False
    return (services.clock() - message.date).total_seconds() > limit


async def refuse_stale(services: Services, message: Message, lang: str) -> bool:
    """Tell the user a command from while the bot was offline is not run; return whether so."""
    if not is_stale(services, message):
        return False
    logger.info("not running a command from %s (bot was offline)", message.date.isoformat())
    await reply_plain(message, services.texts.get(lang, "stale.command"))
    return True


async def tell_admins(bot: Bot, admins: Iterable[int], text: str) -> None:
    """Send `text` to each admin privately; log (and skip) those who cannot be reached."""
    for admin in sorted(admins):
        try:
            await bot.send_message(chat_id=admin, text=text)
        except Forbidden:
            logger.warning("admin %s has not started the bot; alert skipped", admin)
        except TelegramError as err:
            logger.warning("could not alert admin %s: %s", admin, err)
