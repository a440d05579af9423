"""Working with results: the buttons under them, /history, /edit and /variation."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime

from telegram import (
    CallbackQuery,
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    Message,
    Update,
    User,
)
from telegram.ext import ContextTypes

from bot.capabilities import caps_for
from bot.handlers.access import admit, guard
from bot.handlers.common import (
    answer_query,
    command_args,
    is_group,
    language_of,
    refuse_stale,
    reply_plain,
)
from bot.handlers.delivery import DeliveryError, delivery_errors, send_files
from bot.handlers.image import build_request, load_preferences, resolve_for
from bot.handlers.jobs import reply_for, report_undelivered, run_job
from bot.handlers.keyboards import AGAIN, EDIT_HINT, ORIGINAL, RERUN, callback, split_callback
from bot.handlers.services import Services
from bot.jobs import ImageRequest
from bot.limiter import UserBusy
from bot.prompt import ImageOptions, PromptError, describe_options, parse_image_args
from bot.store import ResultRecord

logger = logging.getLogger(__name__)

HISTORY_SIZE = 10


@dataclass(frozen=True)
class Stored:
    """What a result record says about the request that made it."""

    options: ImageOptions
    as_file: bool
    kind: str
    source_file_id: str | None


def _stored(record: ResultRecord) -> Stored:
    try:
        raw = json.loads(record.options)
    except ValueError:
        raw = {}
    if not isinstance(raw, dict):
        raw = {}
    count = raw.get("count")
    options = ImageOptions(
        size=raw.get("size") if isinstance(raw.get("size"), str) else None,
        count=count if isinstance(count, int) and 1 <= count <= 10 else None,
        quality=raw.get("quality") if isinstance(raw.get("quality"), str) else None,
        style=raw.get("style") if isinstance(raw.get("style"), str) else None,
        background=raw.get("background") if isinstance(raw.get("background"), str) else None,
    )
    kind = str(raw["kind"]) if raw.get("kind") in ("edit", "variation") else "generate"
    source = raw.get("source") if isinstance(raw.get("source"), str) else None
    return Stored(
        options=options, as_file=bool(raw.get("as_file")), kind=kind, source_file_id=source
    )


async def result_button(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Handle 🔁 Again, 📄 Original, ✏️ Edit and /history re-run buttons."""
    query, user, chat = update.callback_query, update.effective_user, update.effective_chat
    if query is None or user is None or chat is None:
        return
    lang = await language_of(services, user)
    texts = services.texts
    action, parts = split_callback(query.data or "")
    message = query.message
    record = await services.store.get_result(result_id=parts[0]) if parts else None
    if record is None or not isinstance(message, Message):
        await answer_query(query, texts.get(lang, "result.expired"), show_alert=True)
        return
    if record.user_id != user.id:
        await answer_query(query, texts.get(lang, "result.not_yours"), show_alert=True)
        return
    if action == EDIT_HINT:
        await answer_query(query, texts.get(lang, "result.edit_hint"), show_alert=True)
        return
    if action not in (AGAIN, RERUN, ORIGINAL):
        await answer_query(query, texts.get(lang, "result.expired"), show_alert=True)
        return
    if not await guard(services, message=message, user=user, chat=chat, lang=lang):
        await answer_query(query)
        return
    if action == ORIGINAL:
        await _original_button(services, query, message, record, user=user, lang=lang)
        return
    stored = _stored(record)
    options = stored.options
    try:
        prefs = await load_preferences(services, user=user, chat=chat)
        model = record.model if record.model in services.settings.image_models else prefs.model
        caps = caps_for(model, services.settings.model_aliases)
        description = resolve_for(services, prompt=record.prompt, options=options, caps=caps)
    except PromptError as exc:
        await answer_query(query)
        await reply_plain(message, reply_for(services, lang, exc))
        return
    if not await answer_query(query, texts.get(lang, "result.again_started")):
        # Telegram says the press is too old to answer: it waited while the bot was offline.
        await reply_plain(message, texts.get(lang, "stale.button"))
        return
    image_request = ImageRequest(
        description=description,
        caps=caps,
        options=options,
        as_file=stored.as_file,
        kind=stored.kind if stored.source_file_id is not None else "generate",
        source_file_id=stored.source_file_id,
    )
    await run_job(services, message=message, user=user, chat=chat, lang=lang, request=image_request)


async def _original_button(
    services: Services,
    query: CallbackQuery,
    message: Message,
    record: ResultRecord,
    *,
    user: User,
    lang: str,
) -> None:
    """Send the lossless files of a result, as one of the presser's requests in flight."""
    try:
        ticket = services.limiter.claim(user.id)
    except UserBusy as exc:
        await answer_query(query, reply_for(services, lang, exc), show_alert=True)
        return
    async with ticket:
        try:
            await _send_original(services, query, message, record, lang)
        except DeliveryError as exc:
            await report_undelivered(services, exc, reply_to=message, user_id=user.id, lang=lang)


async def _send_original(
    services: Services, query: CallbackQuery, message: Message, record: ResultRecord, lang: str
) -> None:
    texts = services.texts
    files = await services.originals.load(record.id)
    if not files and record.file_ids:
        # The kept bytes are gone, but the result went out as documents: resend those.
        await answer_query(query)
        with delivery_errors():
            if len(record.file_ids) == 1:
                await message.reply_document(record.file_ids[0], do_quote=True)
            else:
                await message.reply_media_group(
                    [InputMediaDocument(file_id) for file_id in record.file_ids[:10]],
                    do_quote=True,
                )
        return
    if not files:
        await answer_query(query, texts.get(lang, "result.expired"), show_alert=True)
        return
    await answer_query(query)
    await send_files(message, files, upload_limit=services.settings.telegram_upload_limit_bytes)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


async def history_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """List the user's last requests with a button each to run it again."""
    request = await admit(update, services)
    if request is None:
        return
    message, user, chat, lang = request.message, request.user, request.chat, request.lang
    texts = services.texts
    # In a group, only what was asked in this group: private prompts stay private.
    records = await services.store.history(
        user_id=user.id, limit=HISTORY_SIZE, chat_id=chat.id if is_group(chat) else None
    )
    if not records:
        await reply_plain(message, texts.get(lang, "history.empty"))
        return
    lines = [texts.get(lang, "history.title")]
    buttons = []
    for i, record in enumerate(records, start=1):
        shown = describe_options(_stored(record).options)
        prompt = record.prompt if len(record.prompt) <= 80 else record.prompt[:79] + "…"
        extra = f" ({shown})" if shown else ""
        lines.append(f"{i}. {prompt}{extra} — {_when(record.created_at)}")
        buttons.append(InlineKeyboardButton(f"🔁 {i}", callback_data=callback(RERUN, record.id)))
    rows = [buttons[i : i + 5] for i in range(0, len(buttons), 5)]
    await reply_plain(message, "\n".join(lines), reply_markup=InlineKeyboardMarkup(rows))


def _source_file(message: Message) -> tuple[str, int | None] | None:
    """Return (file id, size) of the picture this command works on, if any."""
    for candidate in (message, message.reply_to_message):
        if candidate is None:
            continue
        if candidate.photo:
            largest = candidate.photo[-1]
            return largest.file_id, largest.file_size
        document = candidate.document
        if document is not None and (document.mime_type or "").startswith("image/"):
            return document.file_id, document.file_size
    return None


def _addressed_elsewhere(message: Message, text: str) -> bool:
    token = text.split(maxsplit=1)[0] if text.split() else ""
    if "@" not in token:
        return False
    return token.split("@", 1)[1].lower() != (message.get_bot().username or "").lower()


async def _run_on_picture(
    services: Services,
    *,
    message: Message,
    user: User,
    chat: Chat,
    lang: str,
    image_request: ImageRequest,
    kind: str,
) -> None:
    """Edit or vary the picture the command points at."""
    reference = _source_file(message)
    if reference is None:
        key = "edit.nothing" if kind == "edit" else "variation.nothing"
        await reply_plain(message, services.texts.get(lang, key))
        return
    # Downloaded by the job once the user's cap and quota have admitted the request.
    image_request = replace(
        image_request, kind=kind, source_file_id=reference[0], source_size=reference[1]
    )
    await run_job(services, message=message, user=user, chat=chat, lang=lang, request=image_request)


async def edit_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Edit a picture: `/edit <prompt>` replying to it, or as the caption of a photo."""
    message, user, chat = update.message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    text = message.text or message.caption or ""
    if _addressed_elsewhere(message, text):
        return
    lang = await language_of(services, user)
    if not await guard(services, message=message, user=user, chat=chat, lang=lang):
        return
    if await refuse_stale(services, message, lang):
        return
    texts = services.texts
    try:
        parsed = parse_image_args(command_args(text))
        if not parsed.prompt:
            await reply_plain(message, texts.get(lang, "edit.usage"))
            return
        prefs = await load_preferences(services, user=user, chat=chat)
        image_request = build_request(
            services, prompt=parsed.prompt, typed=parsed.options, prefs=prefs
        )
    except PromptError as exc:
        await reply_plain(message, reply_for(services, lang, exc))
        return
    if not image_request.caps.supports_edit:
        await reply_plain(
            message, texts.get(lang, "edit.unsupported", model=image_request.caps.name)
        )
        return
    if not services.images.offers("edits", image_request.description.model):
        await reply_plain(message, texts.get(lang, "error.images.not_offered"))
        return
    await _run_on_picture(
        services,
        message=message,
        user=user,
        chat=chat,
        lang=lang,
        image_request=image_request,
        kind="edit",
    )


async def variation_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Make variations of the picture this command replies to (models that support it)."""
    request = await admit(update, services)
    if request is None:
        return
    message, user, chat, lang = request.message, request.user, request.chat, request.lang
    if message.text is None or await refuse_stale(services, message, lang):
        return
    texts = services.texts
    try:
        parsed = parse_image_args(command_args(message.text))
        prefs = await load_preferences(services, user=user, chat=chat)
        image_request = build_request(
            services, prompt=parsed.prompt or "variation", typed=parsed.options, prefs=prefs
        )
    except PromptError as exc:
        await reply_plain(message, reply_for(services, lang, exc))
        return
    if not image_request.caps.supports_variation:
        await reply_plain(
            message, texts.get(lang, "variation.unsupported", model=image_request.caps.name)
        )
        return
    if not services.images.offers("variations", image_request.description.model):
        await reply_plain(message, texts.get(lang, "error.images.not_offered"))
        return
    await _run_on_picture(
        services,
        message=message,
        user=user,
        chat=chat,
        lang=lang,
        image_request=image_request,
        kind="variation",
    )


__all__ = ["edit_command", "history_command", "result_button", "variation_command"]
