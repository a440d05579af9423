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

MAX_EDIT_UPLOAD = 4 * 1024 * 1024  # the images API's edit/variation limit for PNG uploads
MAX_SOURCE_DOWNLOAD = 20 * 1024 * 1024  # what the Bot API lets a bot download


def upload_ready(data: bytes, *, square: bool) -> bytes:
    """Return a PNG within the upload limit: the bytes as they are when they already are one."""
    info = inspect_image(data)
    fits = info.format == "png" and info.size_bytes <= MAX_EDIT_UPLOAD
    if fits and (not square or info.width == info.height):
        return data  # re-encoding costs ~0.3 s for a busy 1024x1024 picture and gains nothing
    return to_png_within(data, max_bytes=MAX_EDIT_UPLOAD, square=square)


async def fetch_source(
    message: Message,
    *,
    texts: Texts,
    lang: str,
    file_id: str,
    size: int | None,
    square: bool,
) -> bytes | None:
    """Download the picture and make it a PNG the images API accepts; else reply why not."""
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
