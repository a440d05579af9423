"""Shared fixtures: the two loopback emulators and a running bot wired to them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.app import running
from bot.config import Settings, load_settings
from bot.handlers.services import Services
from tests.emulators.openai_images import OpenAIEmulator
from tests.emulators.telegram_api import SentMessage, TelegramEmulator
from tests.pg import PostgresServer, PostgresUnavailable

TOKEN = "123456:TEST-token"
API_KEY = "sk-test-secret-key"
USER = 1001
OTHER_USER = 1002
ADMIN = 9001
GROUP = -100500


def pytest_configure(config: pytest.Config) -> None:
    """Opt in to python-telegram-bot's timedelta `retry_after` (else it warns, an error here)."""
    os.environ.setdefault("PTB_TIMEDELTA", "1")


@pytest.fixture
def tg() -> Iterator[TelegramEmulator]:
    """Run an emulated Telegram Bot API server for one test."""
    with TelegramEmulator(TOKEN) as emulator:
        yield emulator


@pytest.fixture
def oai() -> Iterator[OpenAIEmulator]:
    """Run an emulated OpenAI-compatible images server for one test."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        yield emulator


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(tg: TelegramEmulator, oai: OpenAIEmulator, data_dir: Path) -> dict[str, str]:
    """Return the environment of a bot wired to the two emulators."""
    return {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": tg.url,
        "OPENAI_BASE_URL": oai.base_url,
        "OPENAI_API_KEY": API_KEY,
        "IMAGE_MODEL": "gpt-image-2",
        "DATA_DIR": str(data_dir),
        "STATUS_MESSAGE_DELAY_SECONDS": "0.5",
        "LOG_LEVEL": "DEBUG",
        # Streamed previews are tested where they are the subject (test_e2e_previews.py); the
        # other tests see the plain answers their assertions count.
        "STREAM_PREVIEWS": "off",
    }


def run_with_port_taken(
    tmp_path: Path, **overrides: str
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run `python -m bot` until it exits, with `{port}` in `overrides` naming a port another
    socket holds; return that port and the finished process."""
    with (
        TelegramEmulator(TOKEN) as tg,
        OpenAIEmulator(api_key=API_KEY) as oai,
        socket.socket() as taken,
    ):
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        env = base_env(tg, oai, tmp_path / "data")
        env.update({name: value.format(port=port) for name, value in overrides.items()})
        env.update(PATH=os.environ.get("PATH", ""), PYTHONPATH=str(Path(__file__).parent.parent))
        done = subprocess.run(
            [sys.executable, "-m", "bot"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    return port, done


@dataclass
class Harness:
    """A running bot and the emulators around it, with helpers to talk to it."""

    tg: TelegramEmulator
    oai: OpenAIEmulator
    settings: Settings
    services: Services
    app: Any

    def send(
        self,
        text: str,
        *,
        user_id: int = USER,
        chat_id: int | None = None,
        chat_type: str = "private",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Send a message as a user; return the message dict."""
        chat = chat_id if chat_id is not None else user_id
        if chat < 0 and chat_type == "private":
            chat_type = "supergroup"
        update = self.tg.send_message(
            chat_id=chat, user_id=user_id, text=text, chat_type=chat_type, **kwargs
        )
        return dict(update["message"])

    async def replies(
        self,
        message: dict[str, Any],
        *,
        count: int = 1,
        kinds: tuple[str, ...] = ("photo", "document", "text"),
        timeout: float = 10.0,
    ) -> list[SentMessage]:
        """Wait for `count` bot messages replying to `message` (of the given kinds)."""
        chat_id = message["chat"]["id"]
        wanted = message["message_id"]
        deadline = time.monotonic() + timeout
        found: list[SentMessage] = []
        while time.monotonic() < deadline:
            found = [
                m
                for m in self.tg.sent_messages(chat_id)
                if m.kind in kinds
                and (m.get("reply_to_message") or {}).get("message_id") == wanted
                and not m.deleted
            ]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        sent = [(m.kind, m.text) for m in self.tg.sent_messages(chat_id)]
        raise AssertionError(f"expected {count} replies of {kinds}, got {found}; chat has {sent}")

    async def reply_text(self, message: dict[str, Any], *, timeout: float = 10.0) -> str:
        """Wait for the first text reply to `message` that is not a status message."""
        replies = await self.replies(message, kinds=("text",), timeout=timeout)
        return replies[0].text or ""

    async def settle(self, seconds: float = 0.3) -> None:
        """Give the bot a moment to (not) act."""
        await asyncio.sleep(seconds)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds (polling every 20 ms); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


BotFactory = Callable[..., contextlib.AbstractAsyncContextManager[Harness]]


@pytest.fixture
def make_bot(tg: TelegramEmulator, oai: OpenAIEmulator, tmp_path: Path) -> BotFactory:
    """Return a factory: `async with make_bot(DAILY_IMAGE_LIMIT="3") as bot: ...`."""

    @contextlib.asynccontextmanager
    async def factory(
        clock: Callable[[], datetime] | None = None, **overrides: str
    ) -> AsyncIterator[Harness]:
        env = base_env(tg, oai, tmp_path / "data")
        env.update(overrides)
        settings = load_settings(env)
        async with running(settings, clock=clock or (lambda: datetime.now(UTC))) as (
            app,
            services,
        ):
            yield Harness(tg=tg, oai=oai, settings=settings, services=services, app=app)

    return factory


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """Run one real PostgreSQL server for the session (fails, never skips, when it cannot)."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"the PostgreSQL test server is unavailable: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """Return the URL of a fresh, empty database on the test server."""
    return pg_server.create_database()
