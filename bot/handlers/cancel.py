"""❌ Cancel and /cancel: stop a request in flight, for the person who asked only.

The one cancel step is `cancel_request` (today `RunningRequests.cancel`, see `bot.running`): the
request's own handler then answers "cancelled", gives the quota back and removes its status or
preview message, so these callbacks only find the request and check whose it is.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import ContextTypes

from bot.handlers.access import admit
from bot.handlers.common import answer_query, language_of, reply_plain
from bot.handlers.keyboards import split_callback
from bot.handlers.services import Services

logger = logging.getLogger(__name__)


def cancel_request(services: Services, request_id: str) -> bool:
    """Cancel one request in flight by id; return whether it could still be cancelled."""
    cancelled = services.running.cancel(request_id)
    if cancelled:
        logger.info("request %s cancelled", request_id)
    return cancelled


async def cancel_button(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Cancel the request whose status or preview carries the pressed ❌ button."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None:
        return
    lang = await language_of(services, user)
    texts = services.texts
    _, parts = split_callback(query.data or "")
    request = services.running.get(parts[0]) if parts else None
    if request is None or request.closed:
        await answer_query(query, texts.get(lang, "cancel.too_late"))
        return
    if request.user_id != user.id:
        await answer_query(query, texts.get(lang, "cancel.not_yours"), show_alert=True)
        return
    if cancel_request(services, request.id):
        await answer_query(query, texts.get(lang, "cancel.pressed"))
    else:
        await answer_query(query, texts.get(lang, "cancel.too_late"))


async def cancel_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Cancel the user's requests in this chat, or the one the command replies to."""
    request = await admit(update, services, check_access=False)
    if request is None:
        return
    message, user, chat, lang = request.message, request.user, request.chat, request.lang
    running = services.running
    mine = running.of(user_id=user.id, chat_id=chat.id)
    replied = message.reply_to_message
    if replied is not None:
        # A reply to the command or to its status picks that request; a reply to anything else
        # is no choice, so every request of the user in the chat is cancelled.
        chosen = running.of(user_id=user.id, chat_id=chat.id, message_id=replied.message_id)
        mine = chosen or mine
    cancelled = [r for r in mine if cancel_request(services, r.id)]
    if not cancelled:
        await reply_plain(message, services.texts.get(lang, "cancel.none"))
    # Each cancelled request answers its own command with "cancelled".
