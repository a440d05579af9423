"""/settings: an inline keyboard for a user's (or, in groups, the chat's) defaults.

The keyboard belongs to whoever opened it: presses by anyone else get a short notice and change
nothing. In groups it edits the chat's settings and only the chat's administrators may open it.
Callback data: `set:<owner id>:<field>[:<value index>]`, well under Telegram's 64 bytes.
"""

from __future__ import annotations

import logging

from telegram import Chat, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, User
from telegram.constants import ChatMemberStatus
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from bot.capabilities import NAMED_SIZES, caps_for, describe_sizes
from bot.handlers.access import admit
from bot.handlers.common import is_group, language_of, reply_plain
from bot.handlers.keyboards import SETTINGS, callback, split_callback
from bot.handlers.services import Services

logger = logging.getLogger(__name__)

FIELDS = ("size", "count", "quality", "style", "model", "as_file", "language")
COUNTS = ("1", "2", "3", "4")
DEFAULT_QUALITIES = ("low", "medium", "high", "auto")


def _scope(chat: Chat, user: User) -> tuple[str, int]:
    return ("chat", chat.id) if is_group(chat) else ("user", user.id)


def field_values(services: Services, field: str, values: dict[str, str]) -> tuple[str, ...]:
    """Return the choices offered for one field, given the current settings."""
    settings = services.settings
    model = values.get("model") or settings.image_model
    if model not in settings.image_models:
        model = settings.image_model
    caps = caps_for(model, settings.model_aliases)
    if field == "size":
        concrete = tuple(s for s in describe_sizes(caps) if "x" in s and s[0].isdigit())
        return (*concrete, *(n for n in NAMED_SIZES if n in caps.named_sizes))[:9]
    if field == "count":
        return tuple(c for c in COUNTS if int(c) <= caps.max_count)
    if field == "quality":
        return caps.qualities or DEFAULT_QUALITIES
    if field == "style":
        return caps.styles or ()
    if field == "model":
        return settings.image_models
    if field == "as_file":
        return ("0", "1")
    if field == "language":
        return services.texts.languages
    return ()


def _shown(services: Services, lang: str, field: str, value: str | None) -> str:
    texts = services.texts
    if field == "as_file":
        return texts.get(lang, "settings.on" if value == "1" else "settings.off")
    if field == "language":
        return texts.get(value or lang, "language.name")
    return value or texts.get(lang, "settings.default")


def main_menu(
    services: Services, *, lang: str, owner: int, values: dict[str, str]
) -> InlineKeyboardMarkup:
    """Return the overview keyboard: one button per field showing its current value."""
    texts = services.texts
    rows = []
    for field in FIELDS:
        if field != "language" and len(field_values(services, field, values)) == 0:
            continue
        label = texts.get(lang, f"settings.field.{field}")
        value = _shown(services, lang, field, values.get(field))
        rows.append(
            [
                InlineKeyboardButton(
                    f"{label}: {value}", callback_data=callback(SETTINGS, str(owner), field)
                )
            ]
        )
    rows.append(
        [
            InlineKeyboardButton(
                texts.get(lang, "settings.done"),
                callback_data=callback(SETTINGS, str(owner), "done"),
            )
        ]
    )
    return InlineKeyboardMarkup(rows)


def field_menu(
    services: Services, *, lang: str, owner: int, field: str, values: dict[str, str]
) -> InlineKeyboardMarkup:
    """Return the choices for one field, plus "default" and "back"."""
    texts = services.texts
    choices = field_values(services, field, values)
    buttons = [
        InlineKeyboardButton(
            ("✅ " if values.get(field) == choice else "") + _shown(services, lang, field, choice),
            callback_data=callback(SETTINGS, str(owner), field, str(i)),
        )
        for i, choice in enumerate(choices)
    ]
    rows = [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
    rows.append(
        [
            InlineKeyboardButton(
                texts.get(lang, "settings.reset"),
                callback_data=callback(SETTINGS, str(owner), field, "-"),
            ),
            InlineKeyboardButton(
                texts.get(lang, "settings.back"),
                callback_data=callback(SETTINGS, str(owner), "back"),
            ),
        ]
    )
    return InlineKeyboardMarkup(rows)


async def _may_change_chat(message: Message, user: User) -> bool:
    try:
        member = await message.chat.get_member(user.id)
    except TelegramError as exc:
        logger.warning("could not check chat admin status: %s", exc)
        return False
    return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)


async def settings_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Open the settings keyboard for the user, or for the group (its admins only)."""
    request = await admit(update, services)
    if request is None:
        return
    message, user, chat, lang = request.message, request.user, request.chat, request.lang
    texts = services.texts
    if is_group(chat) and not await _may_change_chat(message, user):
        await reply_plain(message, texts.get(lang, "settings.group_admins_only"))
        return
    scope, scope_id = _scope(chat, user)
    values = await services.store.get_settings(scope=scope, scope_id=scope_id)
    title = texts.get(lang, "settings.title_chat" if scope == "chat" else "settings.title")
    await message.reply_text(
        title,
        reply_markup=main_menu(services, lang=lang, owner=user.id, values=values),
        do_quote=True,
    )


async def settings_button(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Handle a press on the settings keyboard."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None or query.data is None:
        return
    message = query.message
    lang = await language_of(services, user)
    texts = services.texts
    _, parts = split_callback(query.data)
    if not isinstance(message, Message) or len(parts) < 2 or not parts[0].lstrip("-").isdigit():
        await query.answer(texts.get(lang, "result.expired"))
        return
    owner, field, *rest = parts
    if int(owner) != user.id:
        await query.answer(texts.get(lang, "settings.not_yours"), show_alert=True)
        return
    scope, scope_id = _scope(message.chat, user)
    store = services.store
    values = await store.get_settings(scope=scope, scope_id=scope_id)
    if field == "done":
        await query.answer()
        await _edit(message, texts.get(lang, "settings.saved"), None)
        return
    if field == "back" or field not in FIELDS:
        await query.answer()
        markup = main_menu(services, lang=lang, owner=user.id, values=values)
        await _edit(message, _title(services, lang, scope), markup)
        return
    if not rest:
        await query.answer()
        markup = field_menu(services, lang=lang, owner=user.id, field=field, values=values)
        await _edit(message, texts.get(lang, f"settings.field.{field}"), markup)
        return
    choices = field_values(services, field, values)
    choice: str | None
    if rest[0] == "-":
        choice = None
    elif rest[0].isdigit() and int(rest[0]) < len(choices):
        choice = choices[int(rest[0])]
    else:
        await query.answer(texts.get(lang, "result.expired"))
        return
    if field == "language" and scope == "chat":
        await store.set_setting(scope="user", scope_id=user.id, key=field, value=choice)
    else:
        await store.set_setting(scope=scope, scope_id=scope_id, key=field, value=choice)
    if field == "language":
        lang = await language_of(services, user)
    values = await store.get_settings(scope=scope, scope_id=scope_id)
    await query.answer(texts.get(lang, "settings.changed"))
    markup = main_menu(services, lang=lang, owner=user.id, values=values)
    await _edit(message, _title(services, lang, scope), markup)


def _title(services: Services, lang: str, scope: str) -> str:
    return services.texts.get(lang, "settings.title_chat" if scope == "chat" else "settings.title")


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            raise
