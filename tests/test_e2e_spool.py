"""End to end: a picture waiting for its upload waits on disk, not in memory.

The bot spools each picture to `DATA_DIR/spool/` once inspected and streams the upload from that
file; after the upload the file becomes the kept original (moved, not written again). A spool file
left by a crash is removed at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from bot.handlers.delivery import UPLOAD_READ_BYTES
from bot.handlers.delivery import _prepare as _prepare_pictures
from tests.emulators.openai_images import big_picture


def _spooled(data_dir: Path) -> list[Path]:
    folder = data_dir / "spool"
    return sorted(folder.iterdir()) if folder.is_dir() else []


async def test_a_picture_held_back_by_flood_control_waits_in_the_spool(make_bot, tmp_path) -> None:
    leftover = tmp_path / "data" / "spool" / "0123456789abcdef.part"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"from a crash")
    async with make_bot() as bot:
        assert not leftover.exists()
        picture = big_picture()
        bot.oai.image_bytes = picture
        bot.tg.fail_next("sendPhoto", status=429, retry_after=1)
        msg = bot.send("/image patient tortoise")
        data_dir = bot.settings.data_dir
        waiting: list[Path] = []
        for _ in range(200):  # the 429's one second of waiting
            waiting = _spooled(data_dir)
            if waiting and bot.tg.calls_of("sendPhoto"):
                break
            await asyncio.sleep(0.01)
        assert len(waiting) == 1
        assert waiting[0].read_bytes() == picture
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.data == picture  # streamed from the file, byte for byte
        markup = photo.get("reply_markup") or {}
        (data,) = [
            b["callback_data"]
            for row in markup["inline_keyboard"]
            for b in row
            if "📄" in b["text"]
        ]
        result_id = str(data).split(":", 1)[1]
        kept = data_dir / "originals" / result_id
        for _ in range(200):
            if kept.is_dir() and not _spooled(data_dir):
                break
            await asyncio.sleep(0.01)
        assert _spooled(data_dir) == []
        assert [p.read_bytes() for p in kept.iterdir()] == [picture]


async def test_a_failed_upload_leaves_nothing_in_the_spool(make_bot) -> None:
    async with make_bot() as bot:
        bot.tg.fail_next(
            "sendPhoto", status=403, description="Forbidden: bot was blocked by the user"
        )
        msg = bot.send("/image lonely owl")
        await bot.settle(0.5)
        assert bot.tg.calls_of("sendPhoto")
        for _ in range(200):
            if not _spooled(bot.settings.data_dir):
                break
            await asyncio.sleep(0.01)
        assert _spooled(bot.settings.data_dir) == []
        assert [m for m in bot.tg.sent_messages(msg["chat"]["id"]) if m.kind == "photo"] == []


def test_a_spooled_upload_is_read_in_big_pieces(tmp_path: Path) -> None:
    # httpx asks a file for 64 KiB at a time; each piece is a trip through httpcore and h11.
    spool = tmp_path / "spool"
    picture = big_picture()
    (spooled,) = _prepare_pictures([picture], spool)
    with contextlib.ExitStack() as files:
        upload = spooled.content(files)
        assert not isinstance(upload, bytes)
        pieces = [upload.read(64 * 1024)]
        while piece := upload.read(64 * 1024):
            pieces.append(piece)
    assert [len(p) for p in pieces[:-1]] == [UPLOAD_READ_BYTES] * (len(pieces) - 1)
    assert b"".join(pieces) == picture
    assert upload.closed  # closed with the send it was opened for
