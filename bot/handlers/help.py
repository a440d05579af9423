"""/start and /help: what the bot does, with examples, options, the model and its sizes."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.capabilities import caps_for, describe_sizes
from bot.handlers.access import admit
from bot.handlers.common import language_of, reply_plain
from bot.handlers.image import load_preferences
from bot.handlers.services import Services


async def help_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Explain the commands, the options, the current model and the sizes it accepts."""
    request = await admit(update, services, check_access=False)
    if request is None:
        return
    message, user, chat, lang = request.message, request.user, request.chat, request.lang
    prefs = await load_preferences(services, user=user, chat=chat)
    caps = caps_for(prefs.model, services.settings.model_aliases)
    texts = services.texts
    limit = services.settings.daily_image_limit
    parts = [
        texts.get(lang, "help.intro"),
        texts.get(lang, "help.examples"),
        texts.get(lang, "help.options", max_count=caps.max_count),
        texts.get(lang, "help.model", model=caps.name, sizes=", ".join(describe_sizes(caps))),
        texts.get(lang, "help.commands"),
    ]
    if limit > 0:
        parts.append(texts.get(lang, "help.limit", limit=limit))
    await reply_plain(message, "\n\n".join(parts))


async def fallback_private(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Answer text or an unknown command in a private chat with a short hint."""
    message, user = update.message, update.effective_user
    if message is None or user is None:
        return
    lang = await language_of(services, user)
    await reply_plain(message, services.texts.get(lang, "hint.private"))
