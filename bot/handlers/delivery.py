"""Send generated pictures back to the chat: one photo, an album, or documents when needed.

A picture goes as a document instead of a photo when the user asked for files, or when Telegram
would refuse or degrade it as a photo (`bot.media.photo_refusal_reason`: over 10 MB, sides adding
up to more than 10,000, aspect ratio over 20, transparency). That is decided before sending; if
Telegram still refuses a photo, the same pictures are sent again as documents. A document over the
Bot API server's upload limit (`TELEGRAM_UPLOAD_LIMIT_MB`) is not tried at all.

Pictures are spooled: once inspected, their bytes go to a file under `DATA_DIR/spool/` and the
upload streams from that file (python-telegram-bot's `read_file_handle=False`), so pictures that
wait for flood control or a slow uplink sit on disk, not in memory; after the upload the file is
moved into the originals (`bot.originals`), which would have written the same bytes anyway.

Uploads get a read timeout that fits their size (`upload_timeout`): Telegram answers a media call
only once it has stored the file, which takes far longer than python-telegram-bot's 5 s default.

The exception family of this boundary, `DeliveryError` (Telegram's own errors translated):

    DeliveryError            kind "undelivered": not sent (Telegram answered with an error, the
    │                        connection failed before the upload went out, or flood control
    │                        never let it through)
    ├── TooLargeToUpload     kind "too_large": over the upload limit, not tried
    ├── ChatUnavailable      kind "blocked": Forbidden (the user blocked the bot, or it was removed
    │                        from the group)
    └── MaybeDelivered       kind "unconfirmed": the upload went out but no answer came (timed
                             out or dropped): Telegram may well have posted it
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from telegram import (
    InlineKeyboardMarkup,
    InputFile,
    InputMediaDocument,
    InputMediaPhoto,
    Message,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.media import ImageInfo, file_extension, inspect_image, photo_refusal_reason

logger = logging.getLogger(__name__)

# A media call's timeout: a base for Telegram's own work plus the bytes at a slow uplink's rate.
UPLOAD_BASE_SECONDS = 20.0
UPLOAD_SLOW_BYTES_PER_SECOND = 256 * 1024
UPLOAD_READ_BYTES = 256 * 1024
# python-telegram-bot's NetworkError keeps the transport's error as its cause; these name failures
# after the whole request was sent, while waiting for the answer: Telegram may have posted it.
# (Failures before that, and error answers such as 502, mean nothing was posted.)
_AFTER_SEND = frozenset({"ReadTimeout", "ReadError", "RemoteProtocolError"})


class DeliveryError(Exception):
    """The pictures were not (surely) delivered; `kind` names why, for statistics."""

    kind = "undelivered"


class TooLargeToUpload(DeliveryError):
    """A file is over the Bot API server's upload limit."""

    kind = "too_large"

    def __init__(self, *, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, the upload limit is {limit}")
        self.size = size
        self.limit = limit


class ChatUnavailable(DeliveryError):
    """Telegram forbids writing to the chat: the user blocked the bot, or it left the group."""

    kind = "blocked"


class MaybeDelivered(DeliveryError):
    """The upload was sent but not answered: Telegram may have posted it."""

    kind = "unconfirmed"


@dataclass(frozen=True)
class Picture:
    """One picture to send, with what we know of it."""

    data: bytes | Path  # the bytes, or the spool file holding them
    info: ImageInfo
    filename: str

    def content(self, files: contextlib.ExitStack) -> bytes | IO[bytes]:
        """Return what to upload: the bytes, or the spool file opened for this one send."""
        if isinstance(self.data, bytes):
            return self.data
        return files.enter_context(_SpoolFile(self.data))

    def input_file(self, files: contextlib.ExitStack, *, attach: bool = False) -> InputFile:
        """Return the InputFile of one send (a spool file is streamed, not read into memory)."""
        return InputFile(
            self.content(files), filename=self.filename, attach=attach, read_file_handle=False
        )


class _SpoolFile(io.FileIO):
    """A spool file that httpx reads in pieces of `UPLOAD_READ_BYTES` (it asks for 64 KiB): a
    1.8 MB picture then goes out in 7 writes instead of 28, each a trip through httpcore, h11
    and anyio (about 1.5 ms less CPU a picture, bench/issue9.py)."""

    def read(self, size: int | None = -1, /) -> bytes:
        """Read at least `UPLOAD_READ_BYTES` (or everything left when `size` is negative)."""
        if size is not None and size >= 0:
            size = max(size, UPLOAD_READ_BYTES)
        return super().read(size) or b""


def upload_timeout(size: int) -> float:
    """Return the read and write timeout of a media call that uploads `size` bytes."""
    return UPLOAD_BASE_SECONDS + size / UPLOAD_SLOW_BYTES_PER_SECOND


@contextlib.contextmanager
def delivery_errors() -> Iterator[None]:
    """Translate Telegram's errors of a send into the `DeliveryError` family.

    A `BadRequest` (Telegram refused the content) is left as it is for the caller to decide.
    """
    try:
        yield
    except BadRequest:
        raise
    except Forbidden as exc:
        raise ChatUnavailable(exc.message) from exc
    except RetryAfter as exc:
        raise DeliveryError(f"still flood-limited: {exc.message}") from exc
    except NetworkError as exc:  # TimedOut included
        if type(exc.__cause__).__name__ in _AFTER_SEND:
            raise MaybeDelivered(exc.message) from exc
        raise DeliveryError(exc.message) from exc
    except TelegramError as exc:  # e.g. ChatMigrated: the group became a supergroup
        raise DeliveryError(exc.message) from exc


async def prepare(images: list[bytes], *, spool: Path | None = None) -> list[Picture]:
    """Inspect the pictures off the event loop and name them; with `spool`, move them to disk.

    The list is emptied as the pictures are spooled, so each one's bytes are freed once written
    (when the caller holds no other reference). A picture that cannot be written stays in memory.
    """
    return await asyncio.to_thread(_prepare, images, spool)


def _prepare(images: list[bytes], spool: Path | None) -> list[Picture]:
    pictures: list[Picture] = []
    for i in range(1, len(images) + 1):
        data = images.pop(0)
        info = inspect_image(data)
        filename = f"image-{i}.{file_extension(info)}"
        pictures.append(Picture(data=_spooled(data, spool), info=info, filename=filename))
    return pictures


def _spooled(data: bytes, spool: Path | None) -> bytes | Path:
    if spool is None:
        return data
    path = spool / f"{secrets.token_hex(8)}.part"
    try:
        spool.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        logger.warning("could not spool a picture to %s (%s); keeping it in memory", spool, exc)
        path.unlink(missing_ok=True)
        return data
    return path


def spool_dir(data_dir: Path) -> Path:
    """Return where pictures wait for their upload."""
    return data_dir / "spool"


def clear_spool(data_dir: Path) -> None:
    """Remove spool files a previous run left behind (a crash mid-upload)."""
    shutil.rmtree(spool_dir(data_dir), ignore_errors=True)


def discard(pictures: Sequence[Picture]) -> None:
    """Remove the spool files of pictures that were not kept (missing ones are fine)."""
    for picture in pictures:
        if isinstance(picture.data, Path):
            picture.data.unlink(missing_ok=True)


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
    upload_limit: int,
    reply_markup: InlineKeyboardMarkup | None = None,
    replace: Message | None = None,
) -> list[Message]:
    """Reply to `message` with the pictures; return the messages Telegram created.

    With `replace` (a streamed preview), one photo takes that message's place (editMessageMedia);
    otherwise the pictures are sent as usual and `replace` is deleted afterwards.
    Raises `DeliveryError` (see the module docstring) when they could not surely be delivered.
    """
    if not pictures:
        return []
    try:
        with delivery_errors():
            if not needs_document(pictures, as_file=as_file):
                if replace is not None and len(pictures) == 1:
                    # Not deleted if the edit went out unanswered: it may show the picture now.
                    preview, replace = replace, None
                    edited = await _replace(preview, pictures[0], caption, reply_markup)
                    if edited is not None:
                        return [edited]
                    replace = preview
                try:
                    return await _send(message, pictures, caption, reply_markup, as_documents=False)
                except BadRequest as exc:
                    if _is_caption_problem(exc):
                        raise
                    logger.info("Telegram refused the photos (%s); sending them as documents", exc)
            _check_size(pictures, upload_limit)
            return await _send(message, pictures, caption, reply_markup, as_documents=True)
    finally:
        if replace is not None:
            await _delete_quietly(replace)


async def _replace(
    preview: Message,
    picture: Picture,
    caption: str,
    reply_markup: InlineKeyboardMarkup | None,
) -> Message | None:
    """Put the photo in the preview's place; None when Telegram refused (send it instead)."""
    timeout = upload_timeout(picture.info.size_bytes)
    with contextlib.ExitStack() as files:
        try:
            edited = await preview.edit_media(
                InputMediaPhoto(
                    picture.input_file(files, attach=True),
                    caption=caption,
                    parse_mode=ParseMode.HTML,
                ),
                reply_markup=reply_markup,
                read_timeout=timeout,
                write_timeout=timeout,
            )
        except BadRequest as exc:
            logger.info("could not put the result in the preview's place (%s); sending it", exc)
            return None
    return edited if isinstance(edited, Message) else None


async def _delete_quietly(message: Message) -> None:
    try:
        await message.delete()
    except TelegramError as exc:
        logger.debug("could not delete the preview: %s", exc)


async def send_files(
    message: Message, files: Sequence[tuple[str, bytes]], *, upload_limit: int
) -> list[Message]:
    """Reply to `message` with files as documents, as they are (at most 10, one album)."""
    pictures = [
        Picture(data=data, info=_as_stored(data), filename=name) for name, data in files[:10]
    ]
    _check_size(pictures, upload_limit)
    with delivery_errors():
        return await _send(message, pictures, "", None, as_documents=True)


def _as_stored(data: bytes) -> ImageInfo:
    """Describe bytes that are sent as they are, without looking inside."""
    return ImageInfo(
        format=None, width=None, height=None, has_transparency=False, size_bytes=len(data)
    )


def _check_size(pictures: Sequence[Picture], upload_limit: int) -> None:
    largest = max(p.info.size_bytes for p in pictures)
    if largest > upload_limit:
        raise TooLargeToUpload(size=largest, limit=upload_limit)


async def _send(
    message: Message,
    pictures: Sequence[Picture],
    caption: str,
    reply_markup: InlineKeyboardMarkup | None,
    *,
    as_documents: bool,
) -> list[Message]:
    with contextlib.ExitStack() as files:
        return await _send_open(
            message, pictures, caption, reply_markup, as_documents=as_documents, files=files
        )


async def _send_open(
    message: Message,
    pictures: Sequence[Picture],
    caption: str,
    reply_markup: InlineKeyboardMarkup | None,
    *,
    as_documents: bool,
    files: contextlib.ExitStack,
) -> list[Message]:
    timeout = upload_timeout(sum(p.info.size_bytes for p in pictures))
    if len(pictures) == 1:
        picture = pictures[0]
        file = picture.input_file(files)
        if as_documents:
            sent = await message.reply_document(
                file,
                caption=caption or None,
                parse_mode=ParseMode.HTML if caption else None,
                reply_markup=reply_markup,
                do_quote=True,
                disable_content_type_detection=True,
                read_timeout=timeout,
                write_timeout=timeout,
            )
        else:
            sent = await message.reply_photo(
                file,
                caption=caption,
                parse_mode=ParseMode.HTML,
                reply_markup=reply_markup,
                do_quote=True,
                read_timeout=timeout,
                write_timeout=timeout,
            )
        return [sent]
    media: list[InputMediaDocument] | list[InputMediaPhoto]
    if as_documents:
        media = [
            InputMediaDocument(
                p.input_file(files, attach=True),
                caption=caption if i == 0 and caption else None,
                parse_mode=ParseMode.HTML if i == 0 and caption else None,
            )
            for i, p in enumerate(pictures)
        ]
    else:
        media = [
            InputMediaPhoto(
                p.input_file(files, attach=True),
                caption=caption if i == 0 else None,
                parse_mode=ParseMode.HTML if i == 0 else None,
            )
            for i, p in enumerate(pictures)
        ]
    sent_album = await message.reply_media_group(
        media, do_quote=True, read_timeout=timeout, write_timeout=timeout
    )
    return list(sent_album)
