"""The picture an /edit or /variation works on: fetched through the Bot API, made uploadable."""

from __future__ import annotations

import asyncio
import logging

from telegram import Message
from telegram.error import TelegramError

from bot.handlers.common import reply_plain
from bot.i18n import Texts
from bot.media import inspect_image, to_png_within

logger = logging.getLogger(__name__)

MAX_EDIT_UPLOAD = 4 * 1024 * 1024  # dall-e-2's limit for its (square PNG) uploads
MAX_UPLOAD = 50 * 1024 * 1024  # GPT image models' limit for png, webp and jpeg uploads
UPLOAD_FORMATS = frozenset({"png", "jpeg", "webp"})  # what GPT image models take as they are
MAX_SOURCE_DOWNLOAD = 20 * 1024 * 1024  # what the Bot API lets a bot download


def upload_ready(data: bytes, *, square: bool) -> bytes:
    """Return the picture in a form the images API takes, as it is whenever it already fits.

    `square` is the dall-e-2 rule: a square PNG of at most 4 MB. Every other model (GPT image
    models, and unknown ones) takes png, jpeg or webp up to 50 MB; anything else becomes a PNG.
    The client names and types the upload after its bytes.
    """
    info = inspect_image(data)
    if square:
        fits = info.format == "png" and info.size_bytes <= MAX_EDIT_UPLOAD
        if fits and info.width == info.height:
            return data  # re-encoding costs ~0.3 s for a busy 1024x1024 picture and gains nothing
        return to_png_within(data, max_bytes=MAX_EDIT_UPLOAD, square=True)
    if info.format in UPLOAD_FORMATS and info.size_bytes <= MAX_UPLOAD:
        return data
    return to_png_within(data, max_bytes=MAX_UPLOAD)


async def fetch_source(
    message: Message,
    *,
    texts: Texts,
    lang: str,
    file_id: str,
    size: int | None,
    square: bool,
) -> bytes | None:
    """Download the picture and make it uploadable (see `upload_ready`); else reply why not."""
    if size is not None and size > MAX_SOURCE_DOWNLOAD:
        await reply_plain(message, texts.get(lang, "edit.too_large"))
        return None
    try:
        file = await message.get_bot().get_file(file_id)
        data = bytes(await file.download_as_bytearray())
    except TelegramError as exc:
        logger.warning("could not download the picture to edit: %s", exc)
        await reply_plain(message, texts.get(lang, "edit.download_failed"))
        return None
    try:
        return await asyncio.to_thread(upload_ready, data, square=square)
    except ValueError:
        await reply_plain(message, texts.get(lang, "edit.not_an_image"))
        return None
