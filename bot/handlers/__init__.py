"""Telegram callbacks, thin by design; `register` wires them into an Application.

Each callback is wrapped so that Telegram errors a bot must expect (a chat that blocked or removed
the bot, a button press too old to answer, Telegram out of reach) end the update with a log line
instead of reaching the generic error handler, which would answer "something went wrong".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from telegram import Update
from telegram.error import BadRequest, Forbidden, NetworkError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    PreCheckoutQueryHandler,
    TypeHandler,
    filters,
)

from bot.handlers import account, cancel, errors, help, image, payments, results, settings
from bot.handlers.keyboards import CANCEL
from bot.handlers.services import Services
from bot.store import StoreError

logger = logging.getLogger(__name__)

Callback = Callable[..., Coroutine[Any, Any, None]]


def _bind(
    callback: Callback, services: Services
) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]:
    bound = functools.partial(callback, services=services)

    @functools.wraps(callback)
    async def run(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        try:
            await bound(update, context)
        except BadRequest as exc:
            if "query is too old" not in exc.message.lower():
                raise  # Telegram refused what we sent: a bug of ours, for the error handler
            logger.info("a button press was too old to answer (the bot was away): %s", exc)
        except Forbidden as exc:
            logger.info("chat closed to the bot (blocked, or removed from the group): %s", exc)
        except NetworkError as exc:  # timeouts included; PTB raises BadRequest as a subclass
            logger.warning("Telegram could not be reached while answering: %s", exc)

    return run


async def drop_repeats(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Stop an update Telegram sent before (a webhook call it thought unanswered)."""
    try:
        first = await services.store.note_update(update.update_id)
    except StoreError as exc:  # better handled twice than not at all
        logger.warning("could not check update %s for a repeat: %s", update.update_id, exc)
        return
    if not first:
        logger.info("update %s arrived again; handled once", update.update_id)
        raise ApplicationHandlerStop


def register(app: Application[Any, Any, Any, Any, Any, Any], services: Services) -> None:
    """Add every command, button and fallback handler, and the one error handler."""
    if services.settings.webhook_url is not None:
        # Polling confirms updates by offset; a webhook may get the same update twice.
        app.add_handler(
            TypeHandler(Update, functools.partial(drop_repeats, services=services)), group=-1
        )
    new_messages = filters.UpdateType.MESSAGE
    commands: list[tuple[str, Callback]] = [
        ("image", image.image_command),
        ("start", help.help_command),
        ("help", help.help_command),
        ("usage", account.usage_command),
        ("stats", account.stats_command),
        ("settings", settings.settings_command),
        ("history", results.history_command),
        ("edit", results.edit_command),
        ("variation", results.variation_command),
        ("buy", payments.buy_command),
        ("balance", payments.balance_command),
        ("paysupport", payments.paysupport_command),
        ("terms", payments.terms_command),
        ("refund", payments.refund_command),
        ("cancel", cancel.cancel_command),
    ]
    for name, callback in commands:
        app.add_handler(CommandHandler(name, _bind(callback, services), filters=new_messages))
    app.add_handler(
        MessageHandler(
            new_messages
            & (filters.PHOTO | filters.Document.IMAGE)
            & filters.CaptionRegex(r"^/edit(@\w+)?(\s|$)"),
            _bind(results.edit_command, services),
        )
    )
    app.add_handler(
        CallbackQueryHandler(_bind(settings.settings_button, services), pattern=r"^set:")
    )
    app.add_handler(
        CallbackQueryHandler(_bind(payments.buy_button, services), pattern=rf"^{payments.BUY}:")
    )
    app.add_handler(
        CallbackQueryHandler(_bind(cancel.cancel_button, services), pattern=rf"^{CANCEL}:")
    )
    app.add_handler(PreCheckoutQueryHandler(_bind(payments.pre_checkout, services)))
    app.add_handler(
        MessageHandler(filters.SUCCESSFUL_PAYMENT, _bind(payments.successful_payment, services))
    )
    app.add_handler(CallbackQueryHandler(_bind(results.result_button, services)))
    app.add_handler(
        MessageHandler(
            new_messages
            & filters.ChatType.PRIVATE
            & (filters.TEXT | filters.COMMAND | filters.PHOTO),
            _bind(help.fallback_private, services),
        )
    )
    app.add_error_handler(functools.partial(errors.on_error, services=services))
