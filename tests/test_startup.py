"""Start-up as an operator sees it: warnings, readable logs, slow exits a restart cannot fix."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from bot import __main__ as entry
from bot.config import ENV_VARS
from tests.conftest import TOKEN, USER, base_env
from tests.emulators.openai_images import OpenAIEmulator, big_picture
from tests.emulators.telegram_api import TelegramEmulator
from tests.test_subprocess import _start as _popen

ROOT = Path(__file__).resolve().parent.parent


def _finish(proc: subprocess.Popen[str], *, terminate: bool, timeout: float = 20) -> str:
    if terminate:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"the bot did not exit:\n{err[-3000:]}") from None
    return err


def _one_photo(
    tg: TelegramEmulator, oai: OpenAIEmulator, tmp_path: Path, **env: str
) -> tuple[subprocess.Popen[str], str]:
    """Run `python -m bot`, ask one /image, wait for the photo, stop; return it and its log."""
    proc = _popen({**base_env(tg, oai, tmp_path / "data"), **env}, tmp_path)
    try:
        tg.wait_for("getUpdates", timeout=20)
        tg.send_message(chat_id=USER, user_id=USER, text="/image a fox")
        tg.wait_for("sendPhoto", timeout=30)
    finally:
        err = _finish(proc, terminate=True)
    return proc, err


def test_open_bot_warns_and_logs_stay_readable_with_a_one_letter_key(tmp_path: Path) -> None:
    # OPENAI_API_KEY=o, as some keyless servers are set up: no "l***ng p***lling" in the log.
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key="o") as oai:
        proc, err = _one_photo(tg, oai, tmp_path, OPENAI_API_KEY="o")
    assert proc.returncode == 0, err[-3000:]
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert any(
        "open to everyone" in line and "ALLOWED_USER_IDS" in line and "ALLOWED_CHAT_IDS" in line
        for line in warnings
    ), err[-3000:]
    assert "is running (long polling, model gpt-image-2)" in err
    assert TOKEN not in err
    assert "Traceback" not in err


def test_the_bot_runs_on_uvloop_and_uploads_a_real_sized_picture_intact(tmp_path: Path) -> None:
    # python -m bot: uvloop, 256 KiB reads of the images answer, the spool file read in big pieces.
    picture = big_picture()
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(image_bytes=picture) as oai:
        proc, err = _one_photo(tg, oai, tmp_path, LOG_LEVEL="DEBUG")
    assert proc.returncode == 0, err[-3000:]
    assert "event loop: uvloop" in err
    assert [m.data for m in tg.sent_messages(USER) if m.method == "sendPhoto"] == [picture]
    assert "Traceback" not in err


def test_closed_bot_does_not_warn(tmp_path: Path) -> None:
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator() as oai:
        env = {**base_env(tg, oai, tmp_path / "data"), "ALLOWED_USER_IDS": str(USER)}
        proc = _popen(env, tmp_path)
        try:
            tg.wait_for("getUpdates", timeout=20)
        finally:
            err = _finish(proc, terminate=True)
    assert proc.returncode == 0, err[-3000:]
    assert "is running" in err
    assert "open to everyone" not in err


def test_bad_setting_waits_before_exiting_with_the_reason_first(tmp_path: Path) -> None:
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "DAILY_IMAGE_LIMIT": "lots"}
    started = time.monotonic()
    proc = _popen({**env, "STARTUP_FAILURE_DELAY_SECONDS": "1.5"}, tmp_path)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the reason is out while the process still waits
    assert first.startswith("Configuration error"), first
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        raise AssertionError("the bot did not exit") from None
    err = first + proc.stderr.read()
    proc.stderr.close()
    assert proc.stdout is not None
    proc.stdout.close()
    elapsed = time.monotonic() - started
    assert proc.returncode == 2
    assert "DAILY_IMAGE_LIMIT" in err
    assert "Exiting in 1.5 s (STARTUP_FAILURE_DELAY_SECONDS)" in err
    assert elapsed >= 1.5


def test_rejected_token_waits_before_exiting(tmp_path: Path) -> None:
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator() as oai:
        env = base_env(tg, oai, tmp_path / "data")
        env["TELEGRAM_BOT_TOKEN"] = "999:REVOKED-token-value"
        env["STARTUP_FAILURE_DELAY_SECONDS"] = "1"
        started = time.monotonic()
        proc = _popen(env, tmp_path)
        err = _finish(proc, terminate=False)
        elapsed = time.monotonic() - started
    assert proc.returncode == 2, err[-3000:]
    assert "Telegram rejected TELEGRAM_BOT_TOKEN" in err
    assert err.index("Telegram rejected") < err.index("Exiting in 1 s")
    assert "REVOKED-token-value" not in err
    assert elapsed >= 1


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_the_setting_a_bad_setting_exits_at_once(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    slept: list[float] = []
    assert entry.main([], sleep=slept.append) == 2
    assert slept == []
    assert "Exiting in" not in capsys.readouterr().err


def test_the_delay_is_kept_even_when_the_delay_setting_is_the_only_good_one(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("STARTUP_FAILURE_DELAY_SECONDS", "30")
    clean_env.setenv("TELEGRAM_BOT_TOKEN", "sk-replace-me")
    slept: list[float] = []
    assert entry.main([], sleep=slept.append) == 2
    assert slept == [30.0]
    assert "TELEGRAM_BOT_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "delay", "slept"), [(2, 5.0, [5.0]), (1, 5.0, []), (0, 5.0, []), (2, 0.0, [])]
)
def test_only_failures_a_restart_cannot_fix_wait(
    status: int, delay: float, slept: list[float]
) -> None:
    calls: list[float] = []
    assert entry.exit_after_delay(status, delay, sleep=calls.append) == status
    assert calls == slept
