"""The one error handler: log what no callback expected, and answer the user generically."""

from __future__ import annotations

import contextlib
import logging

from telegram import Update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import ContextTypes

from bot.handlers.common import language_of, reply_plain
from bot.handlers.services import Services

logger = logging.getLogger(__name__)


async def on_error(
    update: object, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Log an unexpected error (never the token) and tell the user something went wrong."""
    error = context.error
    logger.error(
        "unexpected error while handling an update: %s",
        type(error).__name__,
        exc_info=(type(error), error, error.__traceback__) if error is not None else None,
    )
    if not isinstance(update, Update):
        return
    if update.callback_query is not None:
        with contextlib.suppress(TelegramError):
            await update.callback_query.answer()
    message = update.effective_message
    if message is None:
        return
    try:
        lang = await language_of(services, update.effective_user)
    except Exception:  # the store itself may be what failed; answer in the default language
        lang = services.texts.default
    await reply_plain(message, services.texts.get(lang, "error.unexpected"))


# Most specific first: TimedOut and BadRequest are NetworkErrors.
_KINDS: tuple[tuple[type[TelegramError], str], ...] = (
    (RetryAfter, "retry_after"),
    (Forbidden, "forbidden"),
    (InvalidToken, "invalid_token"),
    (Conflict, "conflict"),
    (ChatMigrated, "chat_migrated"),
    (EndPointNotFound, "not_found"),
    (TimedOut, "timed_out"),
    (BadRequest, "bad_request"),
    (NetworkError, "network"),
)


def telegram_error_kind(exc: TelegramError) -> str:
    """Return a fixed word for a Bot API error (a metrics label; never its message)."""
    return next((kind for cls, kind in _KINDS if isinstance(exc, cls)), "other")
