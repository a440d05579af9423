"""Who may use the bot: allowed users, allowed group chats, admins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from telegram import Chat, Message, Update, User

from bot.config import Settings
from bot.handlers.common import is_group, language_of, reply_plain
from bot.handlers.services import Services

DENIED_NOTICE_EVERY = timedelta(hours=1)


def is_admin(settings: Settings, user_id: int) -> bool:
    """Return whether the user is one of the operator's admins."""
    return user_id in settings.admin_user_ids


def is_allowed(settings: Settings, *, user_id: int, chat_id: int) -> bool:
    """Return whether this user may use the bot in this chat (open when no list is set)."""
    if not settings.allowed_user_ids and not settings.allowed_chat_ids:
        return True
    return (
        user_id in settings.admin_user_ids
        or user_id in settings.allowed_user_ids
        or chat_id in settings.allowed_chat_ids
    )


async def guard(services: Services, *, message: Message, user: User, chat: Chat, lang: str) -> bool:
    """Return True if the user may go on; otherwise tell them once (sparingly in groups)."""
    if is_allowed(services.settings, user_id=user.id, chat_id=chat.id):
        return True
    if is_group(chat):
        now = services.clock()
        key = (chat.id, user.id)
        last = services.denied_notices.get(key)
        if last is not None and now - last < DENIED_NOTICE_EVERY:
            return False
        services.denied_notices[key] = now
        if len(services.denied_notices) > 10_000:
            services.denied_notices.clear()
            services.denied_notices[key] = now
        await reply_plain(
            message,
            services.texts.get(lang, "access.denied_group", user_id=user.id, chat_id=chat.id),
        )
    else:
        await reply_plain(message, services.texts.get(lang, "access.denied", user_id=user.id))
    return False


@dataclass(frozen=True)
class Request:
    """A command message with its sender, chat and the language to answer in."""

    message: Message
    user: User
    chat: Chat
    lang: str


async def admit(update: Update, services: Services, *, check_access: bool = True) -> Request | None:
    """Return the command's parts if it is one the bot should act on (after the access check)."""
    message, user, chat = update.message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return None
    lang = await language_of(services, user)
    if check_access and not await guard(services, message=message, user=user, chat=chat, lang=lang):
        return None
    return Request(message=message, user=user, chat=chat, lang=lang)
