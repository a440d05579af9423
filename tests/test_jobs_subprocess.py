"""Durable jobs with `python -m bot` as a real process: kill -9, SIGTERM with a hung backend,
a job too old to resume, and a webhook update Telegram sends twice."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import API_KEY, TOKEN, USER, base_env
from tests.emulators.openai_images import Fault, OpenAIEmulator
from tests.emulators.telegram_api import TelegramEmulator
from tests.test_subprocess import _start, _stop, _wait_photo_reply, _wait_text_reply

RESUMED = "restarted while working on your request"  # en "status.resumed"
EXPIRED = "too old to resume"  # en "job.expired"


def _replies(tg: TelegramEmulator, message_id: int, kind: str) -> list[str]:
    return [
        sent.text or ""
        for sent in tg.sent_messages(USER)
        if sent.kind == kind
        and (sent.get("reply_to_message") or {}).get("message_id") == message_id
    ]


def _usage(tg: TelegramEmulator) -> str:
    msg = tg.send_message(chat_id=USER, user_id=USER, text="/usage")
    return _wait_text_reply(tg, msg["message"]["message_id"])


def _env(tg: TelegramEmulator, oai: OpenAIEmulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = base_env(tg, oai, tmp_path / "data")
    env.update(DAILY_IMAGE_LIMIT="5", **extra)
    return env


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=10)


def _start_hung(
    env: dict[str, str], tmp_path: Path, tg: TelegramEmulator, oai: OpenAIEmulator, prompt: str
) -> tuple[subprocess.Popen[str], int]:
    """Start the bot with a backend that hangs, ask for a picture; return once it is asked."""
    oai.queue_faults([Fault.hang(120)])
    proc = _start(env, tmp_path)
    try:
        tg.wait_for("getUpdates", timeout=20)
        msg = tg.send_message(chat_id=USER, user_id=USER, text=f"/image {prompt}")
        oai.wait_for_requests(1, timeout=10)
    except BaseException:
        _kill(proc)
        raise
    return proc, int(msg["message"]["message_id"])


def _restart_delivers_once(
    env: dict[str, str], tmp_path: Path, tg: TelegramEmulator, message_id: int
) -> str:
    """Start the bot again: the picture arrives once, one picture is counted; return stderr."""
    proc = _start(env, tmp_path)
    try:
        _wait_photo_reply(tg, message_id)
        assert "1 of 5" in _usage(tg)
    finally:
        code, err = _stop(proc)
    assert code == 0, err[-3000:]
    assert len(_replies(tg, message_id, "photo")) == 1
    return err


def test_kill_9_mid_generation_then_restart_delivers_once(tmp_path: Path) -> None:
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY) as oai:
        env = _env(tg, oai, tmp_path)
        proc, message_id = _start_hung(env, tmp_path, tg, oai, "crash-proof fox")
        _kill(proc)

        err = _restart_delivers_once(env, tmp_path, tg, message_id)
        assert any(RESUMED in text for text in _replies(tg, message_id, "text")), err[-3000:]
        assert len(oai.api_requests) == 2  # the one cut off, and the resumed one
        assert "Traceback" not in err


def test_sigterm_with_a_hung_backend_stops_in_grace_and_resumes(tmp_path: Path) -> None:
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY) as oai:
        env = _env(tg, oai, tmp_path, SHUTDOWN_GRACE_SECONDS="2")
        proc, message_id = _start_hung(env, tmp_path, tg, oai, "patient heron")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=2 + 5)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise AssertionError("the bot did not stop within the grace period + 5 s") from None
        assert proc.returncode == 0, err[-3000:]
        assert time.monotonic() - started < 2 + 5
        assert _replies(tg, message_id, "photo") == []

        err = _restart_delivers_once(env, tmp_path, tg, message_id)


def test_a_job_too_old_to_resume_is_refunded_with_a_notice(tmp_path: Path) -> None:
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY) as oai:
        env = _env(tg, oai, tmp_path, SHUTDOWN_GRACE_SECONDS="0")
        proc, message_id = _start_hung(env, tmp_path, tg, oai, "forgotten owl")
        code, err = _stop(proc)
        assert code == 0, err[-3000:]
        time.sleep(1.5)

        proc = _start({**env, "JOB_MAX_AGE_SECONDS": "1"}, tmp_path)
        try:
            notice = _wait_text_reply(tg, message_id)
            assert EXPIRED in notice, notice
            assert "0 of 5" in _usage(tg)
        finally:
            code, err = _stop(proc)
        assert code == 0, err[-3000:]
        assert len(oai.api_requests) == 1  # not asked again
        assert _replies(tg, message_id, "photo") == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_webhook_update_sent_twice_is_handled_once(tmp_path: Path) -> None:
    port = _free_port()
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY) as oai:
        env = _env(
            tg,
            oai,
            tmp_path,
            WEBHOOK_URL="https://bot.example.org/hook",
            WEBHOOK_LISTEN="127.0.0.1",
            WEBHOOK_PORT=str(port),
        )
        proc = _start(env, tmp_path)
        try:
            tg.wait_for("setWebhook", timeout=20)
            with tg._cond:  # Telegram reaches the public URL; the emulator posts locally
                tg._state.webhook["url"] = f"http://127.0.0.1:{port}/hook"
            update = tg.send_message(chat_id=USER, user_id=USER, text="/image twice told tale")
            message_id = update["message"]["message_id"]
            _wait_photo_reply(tg, message_id)
            tg.push_update(dict(update))  # the same update_id again (no 200 in time)
            deadline = time.monotonic() + 10
            while len(tg.webhook_deliveries) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # a second handling would have asked the images service by now
        finally:
            code, err = _stop(proc)
        assert code == 0, err[-3000:]
        assert len(tg.webhook_deliveries) == 2
        assert len(oai.api_requests) == 1
        assert len(_replies(tg, message_id, "photo")) == 1
        assert "arrived again" in err
