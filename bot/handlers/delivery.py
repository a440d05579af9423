"""Send generated pictures back to the chat: one photo, an album, or documents when needed.

A picture goes as a document instead of a photo when the user asked for files, or when Telegram
would refuse or degrade it as a photo (`bot.media.photo_refusal_reason`: over 10 MB, sides adding
up to more than 10,000, aspect ratio over 20, transparency). That is decided before sending; if
Telegram still refuses a photo, the same pictures are sent again as documents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import (
    InlineKeyboardMarkup,
    InputFile,
    InputMediaDocument,
    InputMediaPhoto,
    Message,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest

from bot.media import ImageInfo, file_extension, inspect_image, photo_refusal_reason

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Picture:
    """One picture to send, with what we know of it."""

    data: bytes
    info: ImageInfo
    filename: str


async def prepare(images: Sequence[bytes]) -> list[Picture]:
    """Inspect the pictures off the event loop and name them."""
    infos = await asyncio.to_thread(lambda: [inspect_image(data) for data in images])
    return [
        Picture(data=data, info=info, filename=f"image-{i}.{file_extension(info)}")
        for i, (data, info) in enumerate(zip(images, infos, strict=True), start=1)
    ]


def needs_document(pictures: Sequence[Picture], *, as_file: bool) -> bool:
    """Return whether the pictures must go as documents rather than photos."""
    return as_file or any(photo_refusal_reason(p.info) is not None for p in pictures)


def _is_caption_problem(exc: BadRequest) -> bool:
    text = exc.message.lower()
    return "caption" in text or "entities" in text


async def send_pictures(
    message: Message,
    pictures: Sequence[Picture],
    *,
    caption: str,
    as_file: bool,
    reply_markup: InlineKeyboardMarkup | None = None,
) -> list[Message]:
    """Reply to `message` with the pictures; return the messages Telegram created."""
    if not pictures:
        return []
    if not needs_document(pictures, as_file=as_file):
        try:
            return await _send(message, pictures, caption, reply_markup, as_documents=False)
        except BadRequest as exc:
            if _is_caption_problem(exc):
                raise
            logger.info("Telegram refused the photos (%s); sending them as documents", exc)
    return await _send(message, pictures, caption, reply_markup, as_documents=True)


async def _send(
    message: Message,
    pictures: Sequence[Picture],
    caption: str,
    reply_markup: InlineKeyboardMarkup | None,
    *,
    as_documents: bool,
) -> list[Message]:
    if len(pictures) == 1:
        picture = pictures[0]
        file = InputFile(picture.data, filename=picture.filename)
        if as_documents:
            sent = await message.reply_document(
                file,
                caption=caption,
                parse_mode=ParseMode.HTML,
                reply_markup=reply_markup,
                do_quote=True,
                disable_content_type_detection=True,
            )
        else:
            sent = await message.reply_photo(
                file,
                caption=caption,
                parse_mode=ParseMode.HTML,
                reply_markup=reply_markup,
                do_quote=True,
            )
        return [sent]
    media: list[InputMediaDocument] | list[InputMediaPhoto]
    if as_documents:
        media = [
            InputMediaDocument(
                InputFile(p.data, filename=p.filename, attach=True),
                caption=caption if i == 0 else None,
                parse_mode=ParseMode.HTML if i == 0 else None,
            )
            for i, p in enumerate(pictures)
        ]
    else:
        media = [
            InputMediaPhoto(
                InputFile(p.data, filename=p.filename, attach=True),
                caption=caption if i == 0 else None,
                parse_mode=ParseMode.HTML if i == 0 else None,
            )
            for i, p in enumerate(pictures)
        ]
    sent_album = await message.reply_media_group(media, do_quote=True)
    return list(sent_album)
