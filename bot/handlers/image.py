"""The /image command: guard → parse → validate → hand the request to the jobs.

The back half (admission, quota, progress, the images call, delivery, refunds, statistics) is a
job: `bot.handlers.jobs.run_job` submits it to `bot.jobs.JobRunner`, for /image, the result
buttons, /history re-runs, /edit and /variation alike. Here are the preferences and the
validation they all share (`load_preferences`, `build_request`, `resolve_for`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from telegram import Chat, Message, MessageEntity, Update, User
from telegram.ext import ContextTypes

from bot.capabilities import ImageDescription, ModelCaps, caps_for, check_defaults, resolve
from bot.handlers.access import admit
from bot.handlers.common import command_args, is_group, refuse_stale, reply_plain
from bot.handlers.jobs import reply_for, run_job
from bot.handlers.services import Services
from bot.jobs import ImageRequest
from bot.prompt import (
    EmptyPrompt,
    ImageOptions,
    PromptError,
    merge_options,
    parse_image_args,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preferences:
    """A user's (and in groups, the chat's) saved defaults."""

    options: ImageOptions
    model: str
    as_file: bool


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


def build_request(
    services: Services, *, prompt: str, typed: ImageOptions, prefs: Preferences
) -> ImageRequest:
    """Validate the request against the model; raise a `PromptError` with what is allowed."""
    if not prompt.strip():
        raise EmptyPrompt()
    caps = caps_for(prefs.model, services.settings.model_aliases)
    # Saved defaults may belong to another model (the user switched); typed options are checked.
    options = merge_options(typed, accepted_options(prefs.options, caps))
    description = resolve_for(services, prompt=prompt, options=options, caps=caps)
    return ImageRequest(description=description, caps=caps, options=options, as_file=prefs.as_file)


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
        image_request = build_request(services, prompt=prompt, typed=parsed.options, prefs=prefs)
    except PromptError as exc:
        await reply_plain(message, reply_for(services, lang, exc))
        return
    await run_job(services, message=message, user=user, chat=chat, lang=lang, request=image_request)
