"""The /image command: guard → parse → check quota → generate → reply with the pictures.

`run_generation` is the shared back half (admission, quota, progress, the images call, delivery,
refunds, statistics); /image, the result buttons and /history re-runs all go through it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from typing import Any

from telegram import Chat, Message, MessageEntity, Update, User
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.capabilities import ImageDescription, ModelCaps, caps_for, check_defaults, resolve
from bot.captions import build_caption
from bot.handlers import billing
from bot.handlers.access import admit
from bot.handlers.common import command_args, is_group, refuse_stale, reply_plain, tell_admins
from bot.handlers.delivery import (
    ChatUnavailable,
    DeliveryError,
    MaybeDelivered,
    Picture,
    TooLargeToUpload,
    discard,
    prepare,
    send_pictures,
    spool_dir,
)
from bot.handlers.keyboards import cancel_keyboard, result_keyboard
from bot.handlers.progress import Progress
from bot.handlers.replies import error_text
from bot.handlers.services import Services
from bot.handlers.sources import fetch_source
from bot.images import ImagesError, ImagesResult, OnPartial
from bot.limiter import Ticket, UserBusy
from bot.prompt import (
    EmptyPrompt,
    ImageOptions,
    PromptError,
    merge_options,
    parse_image_args,
)
from bot.running import Cancelled, RunningRequest
from bot.store import StoreError

logger = logging.getLogger(__name__)

ADMIN_ALERT_EVERY = timedelta(hours=1)
ALERT_KINDS = frozenset({"auth", "quota", "not_found", "not_offered"})


@dataclass(frozen=True)
class Preferences:
    """A user's (and in groups, the chat's) saved defaults."""

    options: ImageOptions
    model: str
    as_file: bool


@dataclass(frozen=True)
class Job:
    """One validated generation to run: what to ask for and how to deliver it."""

    description: ImageDescription
    caps: ModelCaps
    options: ImageOptions
    as_file: bool
    kind: str = "generate"  # or "edit", "variation"
    source: bytes | None = None  # the picture to edit or vary, as PNG
    source_file_id: str | None = None  # where that picture is on Telegram (fetched if no source)
    source_size: int | None = None  # its size, when Telegram told us


def options_from_settings(values: Mapping[str, str]) -> ImageOptions:
    """Read saved defaults (strings from the store) into options; ignore malformed values."""
    count_text = values.get("count", "")
    count = int(count_text) if count_text.isdigit() and 1 <= int(count_text) <= 10 else None
    return ImageOptions(
        size=values.get("size") or None,
        count=count,
        quality=values.get("quality") or None,
        style=values.get("style") or None,
        background=values.get("background") or None,
    )


async def load_preferences(services: Services, *, user: User, chat: Chat) -> Preferences:
    """Merge the chat's settings (in groups) over the user's own over the operator's defaults."""
    store = services.store
    values = dict(await store.get_settings(scope="user", scope_id=user.id))
    if is_group(chat):
        values.update(await store.get_settings(scope="chat", scope_id=chat.id))
    model = values.get("model") or services.settings.image_model
    if model not in services.settings.image_models:
        model = services.settings.image_model
    return Preferences(
        options=options_from_settings(values),
        model=model,
        as_file=values.get("as_file") == "1",
    )


def build_job(services: Services, *, prompt: str, typed: ImageOptions, prefs: Preferences) -> Job:
    """Validate the request against the model; raise a `PromptError` with what is allowed."""
    if not prompt.strip():
        raise EmptyPrompt()
    caps = caps_for(prefs.model, services.settings.model_aliases)
    # Saved defaults may belong to another model (the user switched); typed options are checked.
    options = merge_options(typed, accepted_options(prefs.options, caps))
    description = resolve_for(services, prompt=prompt, options=options, caps=caps)
    return Job(description=description, caps=caps, options=options, as_file=prefs.as_file)


def accepted_options(options: ImageOptions, caps: ModelCaps) -> ImageOptions:
    """Keep only the saved options this model accepts."""
    rejected: dict[str, Any] = {}
    for field in fields(ImageOptions):
        value = getattr(options, field.name)
        if value is None:
            continue
        try:
            resolve(prompt="", options=replace(ImageOptions(), **{field.name: value}), caps=caps)
        except PromptError:
            rejected[field.name] = None
    return replace(options, **rejected)


def resolve_for(
    services: Services, *, prompt: str, options: ImageOptions, caps: ModelCaps
) -> ImageDescription:
    """Resolve options for a model, with the operator's defaults where that model takes them."""
    settings = services.settings
    size, quality = settings.default_image_size, settings.default_image_quality
    if size and check_defaults(caps, default_size=size, default_quality=None):
        size = None  # DEFAULT_IMAGE_SIZE is checked against IMAGE_MODEL, not every model
    if quality and check_defaults(caps, default_size=None, default_quality=quality):
        quality = None
    return resolve(
        prompt=prompt,
        options=options,
        caps=caps,
        default_size=size,
        default_quality=quality,
        extra=settings.openai_extra_body,
    )


def replied_prompt(services: Services, message: Message) -> str:
    """Return the prompt found in the message this one replies to ("" when none)."""
    replied = message.reply_to_message
    if replied is None:
        return ""
    text = replied.text or replied.caption or ""
    if replied.caption and replied.from_user is not None and replied.from_user.is_bot:
        return _caption_prompt(services, replied, replied.caption)
    if text.startswith("/"):
        try:
            return parse_image_args(command_args(text)).prompt
        except PromptError:
            return ""
    return text.strip()


def _caption_prompt(services: Services, replied: Message, caption: str) -> str:
    """Return the prompt part of one of our result captions (without the revised prompt)."""
    labels = {services.texts.get(lang, "caption.revised") for lang in services.texts.languages}
    for entity, value in replied.parse_caption_entities([MessageEntity.ITALIC]).items():
        if value.strip() in labels:
            # Entity offsets count UTF-16 code units.
            head = caption.encode("utf-16-le")[: entity.offset * 2].decode("utf-16-le")
            return head.strip()
    return caption.strip()


async def image_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Make pictures from `/image <prompt> [options]`, replying to the command."""
    request = await admit(update, services)
    if request is None:
        return
    message, user, chat, lang = request.message, request.user, request.chat, request.lang
    if message.text is None or await refuse_stale(services, message, lang):
        return
    try:
        parsed = parse_image_args(command_args(message.text))
        prompt = parsed.prompt or replied_prompt(services, message)
        prefs = await load_preferences(services, user=user, chat=chat)
        job = build_job(services, prompt=prompt, typed=parsed.options, prefs=prefs)
    except PromptError as exc:
        await reply_plain(message, reply_for(services, lang, exc))
        return
    await run_generation(services, reply_to=message, user=user, chat=chat, lang=lang, job=job)


def reply_for(services: Services, lang: str, exc: Exception) -> str:
    text = error_text(services.texts, lang, exc, now=services.clock())
    return text if text is not None else services.texts.get(lang, "error.unexpected")


async def run_generation(
    services: Services,
    *,
    reply_to: Message,
    user: User,
    chat: Chat,
    lang: str,
    job: Job,
) -> list[Message]:
    """Admit, reserve quota, generate and deliver one job; refund whatever was not delivered."""
    settings, store, texts = services.settings, services.store, services.texts
    description = job.description
    try:
        ticket = services.limiter.claim(user.id)
    except UserBusy as exc:
        await reply_plain(reply_to, reply_for(services, lang, exc))
        return []
    running = services.running.track(
        user_id=user.id, chat_id=chat.id, message_id=reply_to.message_id
    )
    async with ticket, running as request:
        # Quota, Stars credits and the daily budget, booked together and settled together.
        hold = await billing.reserve(
            services,
            reply_to=reply_to,
            user=user,
            chat=chat,
            lang=lang,
            description=description,
            kind=job.kind,
        )
        if hold is None:
            return []
        delivered: list[Message] = []
        images_delivered = 0
        outcome = "error"
        try:
            if job.kind != "generate" and job.source is None:
                # Fetched only now, once the user's cap and quota let the request through.
                job = await _with_source(services, job, reply_to=reply_to, lang=lang)
                if job.source is None:
                    outcome = "download"
                    return []
            progress = Progress(
                message=reply_to,
                ticket=ticket,
                status_delay=settings.status_message_delay_seconds,
                texts=texts,
                lang=lang,
                in_group=is_group(chat),
                estimate=services.generation_times.estimate(
                    model=description.model, quality=description.quality
                ),
                cancel_markup=cancel_keyboard(texts, lang, request.id),
                request=request,
                in_chat=lambda: services.running.in_chat(chat.id),
            )
            async with progress:
                # The images client holds the one deadline (IMAGE_TIMEOUT_SECONDS) of the call.
                # No name here keeps the result: `_deliver` frees the pictures once spooled.
                delivered, images_delivered = await _deliver(
                    services,
                    reply_to=reply_to,
                    user=user,
                    chat=chat,
                    lang=lang,
                    job=job,
                    progress=progress,
                    result=await request.run(
                        _queued_call(
                            services,
                            job=job,
                            ticket=ticket,
                            hold=hold,
                            progress=progress,
                            request=request,
                        )
                    ),
                )
            outcome = "ok"
        except Cancelled:
            outcome = "cancelled"  # nothing delivered: `settle` gives the quota back
            await reply_plain(reply_to, texts.get(lang, "cancel.done"))
        except ImagesError as exc:
            outcome = exc.kind
            logger.warning("generation failed for user %s: %s", user.id, exc.kind)
            await reply_plain(reply_to, reply_for(services, lang, exc))
            if exc.kind in ALERT_KINDS and exc.status is not None:  # what the host answered
                await alert_admins(services, reply_to, exc)
        except DeliveryError as exc:
            outcome = exc.kind
            await report_undelivered(services, exc, reply_to=reply_to, user=user, lang=lang)
        finally:
            await billing.settle(services, hold, reply_to=reply_to, delivered=images_delivered)
            await store.record_request(
                user_id=user.id,
                chat_id=chat.id,
                images_requested=description.n,
                images_delivered=images_delivered,
                outcome=outcome,
            )
            services.metrics.request_done(kind=job.kind, outcome=outcome, images=images_delivered)
        return delivered


async def _queued_call(
    services: Services,
    *,
    job: Job,
    ticket: Ticket,
    hold: billing.Hold,
    progress: Progress,
    request: RunningRequest,
) -> ImagesResult:
    """Wait for a slot and make the call: the part of a request ❌ Cancel can stop."""
    if not ticket.try_acquire():
        await ticket.wait()
    progress.running()
    result = await _charged_call(services, job, ticket, hold, on_partial=progress.show_partial)
    request.close()  # the pictures are paid for and on their way: too late to cancel
    seconds = progress.running_for()
    if seconds is not None:
        services.generation_times.record(
            model=job.description.model, quality=job.description.quality, seconds=seconds
        )
    return result


async def _charged_call(
    services: Services,
    job: Job,
    ticket: Ticket,
    hold: billing.Hold,
    *,
    on_partial: OnPartial | None = None,
) -> ImagesResult:
    """Make the paid call and note its cost on the hold."""
    result = await _call_images(services, job, ticket, on_partial=on_partial)
    hold.charge(result)
    return result


async def _with_source(services: Services, job: Job, *, reply_to: Message, lang: str) -> Job:
    if job.source_file_id is None:
        return job
    source = await fetch_source(
        reply_to,
        texts=services.texts,
        lang=lang,
        file_id=job.source_file_id,
        size=job.source_size,
        square=job.caps.square_uploads,
    )
    return replace(job, source=source)


async def _call_images(
    services: Services, job: Job, ticket: Ticket, *, on_partial: OnPartial | None = None
) -> ImagesResult:
    """Make the paid call; its generation slot is free again as soon as the call is over."""
    started = time.monotonic()
    try:
        result = await _images_call(services, job, on_partial=on_partial)
    except ImagesError as exc:
        services.metrics.backend_error(exc.kind)
        raise
    finally:
        # The upload and its flood-control waits need no slot (the user's claim lasts).
        ticket.release_slot()
    services.metrics.generated(model=job.description.model, seconds=time.monotonic() - started)
    return result


async def _images_call(
    services: Services, job: Job, *, on_partial: OnPartial | None = None
) -> ImagesResult:
    images, description = services.images, job.description
    if job.kind == "edit" and job.source is not None:
        return await images.edit(description, job.caps, image=job.source, on_partial=on_partial)
    if job.kind == "variation" and job.source is not None:
        return await images.variation(
            model=description.model,
            caps=job.caps,
            image=job.source,
            n=description.n,
            size=description.size,
        )
    return await images.generate(description, job.caps, on_partial=on_partial)


async def _deliver(
    services: Services,
    *,
    reply_to: Message,
    user: User,
    chat: Chat,
    lang: str,
    job: Job,
    progress: Progress | None = None,
    result: ImagesResult,
) -> tuple[list[Message], int]:
    revised = next((i.revised_prompt for i in result.images if i.revised_prompt), None)
    images = [image.data for image in result.images]
    del result  # from here on `images` holds the only reference to the bytes until spooled
    # Inspecting and spooling the pictures (a worker thread) and recording the result (the
    # store's thread) are independent: run them side by side.
    pictures, result_id = await asyncio.gather(
        prepare(images, spool=spool_dir(services.settings.data_dir)),
        services.store.save_result(
            user_id=user.id,
            chat_id=chat.id,
            prompt=job.description.prompt,
            options=json.dumps(
                {
                    **asdict(job.options),
                    "as_file": job.as_file,
                    "kind": job.kind,
                    "source": job.source_file_id,
                }
            ),
            model=job.description.model,
        ),
    )
    try:
        return await _send_and_keep(
            services,
            reply_to=reply_to,
            user=user,
            chat=chat,
            lang=lang,
            job=job,
            pictures=pictures,
            result_id=result_id,
            revised=revised,
            progress=progress,
        )
    finally:
        discard(pictures)  # whatever was not moved into the originals


async def _send_and_keep(
    services: Services,
    *,
    reply_to: Message,
    user: User,
    chat: Chat,
    lang: str,
    job: Job,
    pictures: list[Picture],
    result_id: str,
    revised: str | None,
    progress: Progress | None = None,
) -> tuple[list[Message], int]:
    texts = services.texts
    caption = build_caption(
        prompt=job.description.prompt,
        revised_prompt=revised,
        revised_label=texts.get(lang, "caption.revised"),
    )
    markup = result_keyboard(services.texts, lang, result_id)
    originals = [(p.filename, p.data) for p in pictures]
    # A streamed preview becomes the result (one photo) or goes once the result is sent.
    preview = await progress.hand_over_preview() if progress is not None else None
    try:
        sent = await send_pictures(
            reply_to,
            pictures,
            caption=caption,
            as_file=job.as_file,
            upload_limit=services.settings.telegram_upload_limit_bytes,
            reply_markup=markup if len(pictures) == 1 else None,
            replace=preview,
        )
    except MaybeDelivered as exc:
        # Telegram most likely posted them (with their buttons): count them, say nothing more.
        logger.warning(
            "no answer to the upload of %s picture(s) for user %s in chat %s (%s); "
            "counted as delivered",
            len(pictures),
            user.id,
            chat.id,
            exc,
        )
        await services.originals.save(result_id, originals)
        return [], len(pictures)
    # Kept once the pictures are out (a press on 📄 Original needs a person, so it comes later);
    # writing them during the upload would slow it down.
    await services.originals.save(result_id, originals)
    if len(pictures) > 1 and sent and markup is not None:
        try:
            await sent[0].reply_text(texts.get(lang, "result.actions"), reply_markup=markup)
        except TelegramError as exc:
            logger.warning("could not send the result buttons: %s", exc)
    # Documents are lossless on Telegram's side too: their ids serve 📄 Original once the kept
    # bytes are pruned. (Photo ids point at recompressed pictures, so they are not kept.)
    document_ids = [m.document.file_id for m in sent if m.document is not None]
    if document_ids:
        try:
            await services.store.set_result_files(result_id=result_id, file_ids=document_ids)
        except StoreError as exc:  # the pictures are delivered: never count them as failed
            logger.warning("could not record the file ids of %s: %s", result_id, exc)
    return sent, len(pictures) if sent else 0


async def report_undelivered(
    services: Services, exc: DeliveryError, *, reply_to: Message, user: User, lang: str
) -> None:
    """Log why pictures were not (surely) delivered and, where it helps, tell the user."""
    chat_id = reply_to.chat_id
    if isinstance(exc, ChatUnavailable):
        logger.info(
            "chat %s is closed to the bot (%s); user %s's request dropped", chat_id, exc, user.id
        )
        return
    if isinstance(exc, MaybeDelivered):
        logger.warning("no answer to an upload for user %s in chat %s: %s", user.id, chat_id, exc)
        return
    logger.warning("pictures for user %s not delivered in chat %s: %s", user.id, chat_id, exc)
    if isinstance(exc, TooLargeToUpload):
        text = services.texts.get(
            lang, "delivery.too_large", size_mb=_megabytes(exc.size), limit_mb=_megabytes(exc.limit)
        )
    else:
        text = services.texts.get(lang, "delivery.failed")
    await reply_plain(reply_to, text)


def _megabytes(size: int) -> str:
    """Return a byte count as megabytes for a message (decimal MB, as Telegram counts)."""
    if size % 1_000_000 == 0 or size >= 10_000_000:
        return f"{size / 1_000_000:.0f}"
    return f"{size / 1_000_000:.1f}"


async def alert_admins(services: Services, message: Message, exc: ImagesError) -> None:
    """Tell the admins about a fault only they can fix, at most once an hour per kind."""
    admins = sorted(services.settings.admin_user_ids)
    if not admins:
        logger.error("images service fault %r and no ADMIN_USER_IDS to tell", exc.kind)
        return
    if not await services.store.should_alert(kind=exc.kind, every=ADMIN_ALERT_EVERY):
        return
    texts = services.texts
    await tell_admins(
        services, message.get_bot(), lambda lang: texts.get(lang, f"admin.alert.{exc.kind}")
    )
