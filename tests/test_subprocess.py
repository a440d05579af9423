"""`python -m bot` as a real process against the loopback emulators."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import API_KEY, TOKEN, USER, base_env
from tests.emulators.openai_images import OpenAIEmulator
from tests.emulators.telegram_api import TelegramEmulator

ROOT = Path(__file__).resolve().parent.parent


def _start(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    full = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "PYTHONPATH": str(ROOT),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot"],
        cwd=cwd,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"the bot did not stop on SIGTERM:\n{err[-3000:]}") from None
    return proc.returncode, err


def _wait_photo_reply(tg: TelegramEmulator, message_id: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sent in tg.sent_messages(USER):
            reply = sent.get("reply_to_message") or {}
            if sent.kind == "photo" and reply.get("message_id") == message_id:
                return
        time.sleep(0.05)
    raise AssertionError(f"no photo reply; calls: {[c.method for c in tg.calls][-20:]}")


def _wait_text_reply(tg: TelegramEmulator, message_id: int, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sent in tg.sent_messages(USER):
            reply = sent.get("reply_to_message") or {}
            if sent.kind == "text" and reply.get("message_id") == message_id:
                return sent.text or ""
        time.sleep(0.05)
    raise AssertionError("no text reply")


def test_python_m_bot_round_trip_and_restart_keeps_state(tmp_path: Path) -> None:
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY) as oai:
        env = base_env(tg, oai, tmp_path / "data")
        env["DAILY_IMAGE_LIMIT"] = "5"
        env["LOG_LEVEL"] = "DEBUG"
        proc = _start(env, tmp_path)
        try:
            tg.wait_for("getUpdates", timeout=20)
            msg = tg.send_message(chat_id=USER, user_id=USER, text="/image yellow alpaca x2")
            album = tg.wait_for("sendMediaGroup", timeout=20)  # finished calls only
            assert len(album[0].result) == 2
            set_lang = tg.send_message(chat_id=USER, user_id=USER, text="/settings")
            _wait_text_reply(tg, set_lang["message"]["message_id"])
        finally:
            code, err = _stop(proc)
        assert code == 0, err[-3000:]
        assert TOKEN not in err and API_KEY not in err
        assert "Traceback" not in err
        assert oai.invalid_requests == []
        assert tg.commands, "the command menu was not registered"

        # A second process on the same DATA_DIR remembers today's usage.
        proc = _start(env, tmp_path)
        try:
            tg.wait_for("getUpdates", timeout=20)
            msg = tg.send_message(chat_id=USER, user_id=USER, text="/usage")
            text = _wait_text_reply(tg, msg["message"]["message_id"])
            assert "2" in text and "5" in text, text
            msg = tg.send_message(chat_id=USER, user_id=USER, text="/image one more")
            _wait_photo_reply(tg, msg["message"]["message_id"])
        finally:
            code, err = _stop(proc)
        assert code == 0, err[-3000:]


def test_sigterm_finishes_the_pictures_in_flight(tmp_path: Path) -> None:
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY, delay=1.5) as oai:
        proc = _start(base_env(tg, oai, tmp_path / "data"), tmp_path)
        try:
            tg.wait_for("getUpdates", timeout=20)
            msg = tg.send_message(chat_id=USER, user_id=USER, text="/image slow snail")
            oai.wait_for_requests(1, timeout=10)
        finally:
            code, err = _stop(proc)
        assert code == 0, err[-3000:]
        _wait_photo_reply(tg, msg["message"]["message_id"], timeout=1)
