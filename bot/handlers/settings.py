"""/settings: an inline keyboard for a user's own defaults or, in groups, the chat's.

The keyboard belongs to whoever opened it: presses by anyone else get a short notice and change
nothing. In a private chat it edits the user's own settings. In a group, a member who is not an
administrator gets a keyboard for their own settings (the chat's settings still win in that
chat); an administrator first chooses between the chat's settings and their own, and is checked
again before each change to the chat's.

Callback data: `set:<owner id>:<scope>:<field>[:<value index>]`, scope `c` (the chat) or `u` (the
owner), well under Telegram's 64 bytes. Keyboards sent before scopes existed
(`set:<owner id>:<field>[:<value index>]`) keep working, with the scope their chat implies.
"""

from __future__ import annotations

import logging

from telegram import Chat, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, User
from telegram.constants import ChatMemberStatus
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from bot.capabilities import NAMED_SIZES, caps_for, describe_sizes
from bot.handlers.access import admit
from bot.handlers.common import is_group, language_of
from bot.handlers.keyboards import SETTINGS, callback, split_callback
from bot.handlers.services import Services

logger = logging.getLogger(__name__)

FIELDS = ("size", "count", "quality", "style", "model", "as_file", "language")
COUNTS = ("1", "2", "3", "4")
DEFAULT_QUALITIES = ("low", "medium", "high", "auto")


CHAT_SCOPE = "c"
OWN_SCOPE = "u"


def _scope(chat: Chat, user: User, letter: str) -> tuple[str, int]:
    return ("chat", chat.id) if letter == CHAT_SCOPE else ("user", user.id)


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
    services: Services, *, lang: str, owner: int, scope: str, values: dict[str, str]
) -> InlineKeyboardMarkup:
    """Return the overview keyboard: one button per field showing its current value."""
    texts = services.texts
    data = (str(owner), scope)
    rows = []
    for field in FIELDS:
        if field != "language" and len(field_values(services, field, values)) == 0:
            continue
        label = texts.get(lang, f"settings.field.{field}")
        value = _shown(services, lang, field, values.get(field))
        rows.append(
            [
                InlineKeyboardButton(
                    f"{label}: {value}", callback_data=callback(SETTINGS, *data, field)
                )
            ]
        )
    rows.append(
        [
            InlineKeyboardButton(
                texts.get(lang, "settings.done"),
                callback_data=callback(SETTINGS, *data, "done"),
            )
        ]
    )
    return InlineKeyboardMarkup(rows)


def field_menu(
    services: Services, *, lang: str, owner: int, scope: str, field: str, values: dict[str, str]
) -> InlineKeyboardMarkup:
    """Return the choices for one field, plus "default" and "back"."""
    texts = services.texts
    data = (str(owner), scope)
    choices = field_values(services, field, values)
    buttons = [
        InlineKeyboardButton(
            ("✅ " if values.get(field) == choice else "") + _shown(services, lang, field, choice),
            callback_data=callback(SETTINGS, *data, field, str(i)),
        )
        for i, choice in enumerate(choices)
    ]
    rows = [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
    rows.append(
        [
            InlineKeyboardButton(
                texts.get(lang, "settings.reset"),
                callback_data=callback(SETTINGS, *data, field, "-"),
            ),
            InlineKeyboardButton(
                texts.get(lang, "settings.back"),
                callback_data=callback(SETTINGS, *data, "back"),
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


def scope_menu(services: Services, *, lang: str, owner: int) -> InlineKeyboardMarkup:
    """Return the choice an administrator makes in a group: the chat's settings or their own."""
    texts = services.texts
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    texts.get(lang, "settings.scope_chat"),
                    callback_data=callback(SETTINGS, str(owner), CHAT_SCOPE, "back"),
                ),
                InlineKeyboardButton(
                    texts.get(lang, "settings.scope_own"),
                    callback_data=callback(SETTINGS, str(owner), OWN_SCOPE, "back"),
                ),
            ]
        ]
    )


async def settings_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Open the settings keyboard: own settings, or in a group the admin's choice of two."""
    request = await admit(update, services)
    if request is None:
        return
    message, user, chat, lang = request.message, request.user, request.chat, request.lang
    texts = services.texts
    if is_group(chat) and await _may_change_chat(message, user):
        await message.reply_text(
            texts.get(lang, "settings.choose"),
            reply_markup=scope_menu(services, lang=lang, owner=user.id),
            do_quote=True,
        )
        return
    values = await services.store.get_settings(scope="user", scope_id=user.id)
    await message.reply_text(
        _title(services, lang, scope="user", in_group=is_group(chat)),
        reply_markup=main_menu(services, lang=lang, owner=user.id, scope=OWN_SCOPE, values=values),
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
    owner, *parts = parts
    if int(owner) != user.id:
        await query.answer(texts.get(lang, "settings.not_yours"), show_alert=True)
        return
    in_group = is_group(message.chat)
    if parts[0] in (CHAT_SCOPE, OWN_SCOPE):
        letter, *parts = parts
    else:  # a keyboard sent before scopes existed: the chat's in groups, else the user's own
        letter = CHAT_SCOPE if in_group else OWN_SCOPE
    if not parts or (letter == CHAT_SCOPE and not in_group):
        await query.answer(texts.get(lang, "result.expired"))
        return
    field, *rest = parts
    scope, scope_id = _scope(message.chat, user, letter)
    if scope == "chat" and rest and not await _may_change_chat(message, user):
        await query.answer(texts.get(lang, "settings.group_admins_only"), show_alert=True)
        return
    store = services.store
    values = await store.get_settings(scope=scope, scope_id=scope_id)
    if field == "done":
        await query.answer()
        await _edit(message, texts.get(lang, "settings.saved"), None)
        return
    if field == "back" or field not in FIELDS:
        await query.answer()
        markup = main_menu(services, lang=lang, owner=user.id, scope=letter, values=values)
        await _edit(message, _title(services, lang, scope=scope, in_group=in_group), markup)
        return
    if not rest:
        await query.answer()
        markup = field_menu(
            services, lang=lang, owner=user.id, scope=letter, field=field, values=values
        )
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
    markup = main_menu(services, lang=lang, owner=user.id, scope=letter, values=values)
    await _edit(message, _title(services, lang, scope=scope, in_group=in_group), markup)


def _title(services: Services, lang: str, *, scope: str, in_group: bool) -> str:
    if scope == "chat":
        key = "settings.title_chat"
    else:
        key = "settings.title_own" if in_group else "settings.title"
    return services.texts.get(lang, key)


async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await message.edit_text(text, reply_markup=markup)
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            raise
