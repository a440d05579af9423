"""The bot on PostgreSQL (STORE_URL) end to end: a generation, /usage, 📄 Original from another
process's disk, and the password kept out of every log line and message."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.store.postgres import PostgresStore
from tests.conftest import API_KEY, TOKEN, USER, base_env
from tests.emulators.openai_images import OpenAIEmulator
from tests.emulators.telegram_api import TelegramEmulator
from tests.pg import PASSWORD, PostgresServer
from tests.test_e2e_results import button, known_png, press
from tests.test_subprocess import ROOT, _start, _stop, _wait_photo_reply, _wait_text_reply


async def test_generation_usage_and_original_on_postgres(
    make_bot, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    original = known_png((200, 10, 10))
    caplog.set_level(logging.DEBUG)
    async with make_bot(STORE_URL=pg_url, DAILY_IMAGE_LIMIT="3") as bot:
        assert isinstance(bot.services.store, PostgresStore)
        bot.oai.image_bytes = original
        msg = bot.send("/image red square")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        result_id = button(photo, "📄").split(":", 1)[1]
        deadline = time.monotonic() + 10
        while not await bot.services.store.originals.load(result_id):
            assert time.monotonic() < deadline, "the originals were never kept"
            await asyncio.sleep(0.05)
        text = await bot.reply_text(bot.send("/usage"))
        assert "1" in text and "3" in text, text
    # Nothing of the store is on this process's disk.
    assert not (tmp_path / "data" / "bot.sqlite3").exists()
    assert not (tmp_path / "data" / "originals").exists()

    # Another process (another disk, the same database) answers the button of that result.
    async with make_bot(
        STORE_URL=pg_url, DAILY_IMAGE_LIMIT="3", DATA_DIR=str(tmp_path / "b")
    ) as bot:
        press(bot, photo, button(photo, "📄"))
        (document,) = await bot.replies(photo.message, kinds=("document",))
        assert document.data == original
        usage = await bot.services.store.usage(user_id=USER, user_limit=3)
        assert (usage.used_today, usage.remaining) == (1, 2)
    assert caplog.records, "nothing was logged"
    assert PASSWORD not in caplog.text  # before any redaction: nothing logs the URL at all


def test_python_m_bot_on_postgres_keeps_the_password_out(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    url = pg_server.create_database()
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY) as oai:
        env = base_env(tg, oai, tmp_path / "data")
        env.update(STORE_URL=url, DAILY_IMAGE_LIMIT="5", LOG_LEVEL="DEBUG")
        proc = _start(env, tmp_path)
        try:
            tg.wait_for("getUpdates", timeout=20)
            msg = tg.send_message(chat_id=USER, user_id=USER, text="/image blue circle")
            _wait_photo_reply(tg, msg["message"]["message_id"])
            msg = tg.send_message(chat_id=USER, user_id=USER, text="/usage")
            assert "4" in _wait_text_reply(tg, msg["message"]["message_id"])
        finally:
            code, err = _stop(proc)
        assert code == 0, err[-3000:]
        assert "PostgreSQL schema migrated" in err
        assert PASSWORD not in err and "Traceback" not in err
        for sent in tg.sent_messages(USER):
            assert PASSWORD not in (sent.text or "")

    # A wrong password: one clear message, exit 2, neither password shown.
    wrong = "Not-the-pa55word-42"
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT),
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": "http://127.0.0.1:9",
            "DATA_DIR": str(tmp_path / "data"),
            "STORE_URL": pg_server.url(password=wrong),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Cannot use the database: Cannot connect to the PostgreSQL database" in result.stderr
    assert "password authentication failed" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert PASSWORD not in result.stderr + result.stdout
