"""Wiring: build the `Application`, open and close the shared services, run until stopped.

`running(settings)` is the whole life of the bot as an async context manager (open the store and
the images client, initialize the bot, register the command menu, start polling or the webhook),
used by `run()` for `python -m bot` and by the tests, so both go through the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from telegram import BotCommand, BotCommandScopeDefault, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    Defaults,
)

from bot.config import Settings
from bot.handlers import register
from bot.handlers.services import Services
from bot.i18n import Texts
from bot.images import ImagesClient
from bot.limiter import GenerationLimiter
from bot.originals import Originals
from bot.store import SqliteStore, StoreError

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MENU = ("image", "edit", "settings", "usage", "history", "help")
POLL_TIMEOUT = 30
CONCURRENT_UPDATES = 4096


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class FloodControl(AIORateLimiter):
    """python-telegram-bot's rate limiter, retrying on 429; chat actions are never delayed.

    Only the per-group limit is applied up front (Telegram allows about 20 messages a minute in a
    group); the bot-wide limit is left to Telegram's own 429 answers, whose `retry_after` is
    honoured, so that a busy bot is not slowed for nothing.
    """

    def __init__(self) -> None:
        super().__init__(overall_max_rate=0, max_retries=3)

    async def process_request(  # noqa: PLR0917 (signature fixed by python-telegram-bot)
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Send chat actions straight away; everything else through the limiter."""
        if endpoint == "sendChatAction":
            return await callback(*args, **kwargs)
        return await super().process_request(
            callback, args, kwargs, endpoint, data, rate_limit_args
        )


async def open_services(settings: Settings, *, clock: Clock = utc_now) -> Services:
    """Open the store and create the images client (raises `StoreError`)."""
    store = await SqliteStore.open(settings.data_dir, clock=clock)
    # The images client tells the limiter of 429s and successes: the limit adapts (AIMD).
    limiter = GenerationLimiter(
        max_concurrent=settings.max_concurrent_generations,
        max_per_user=settings.max_inflight_per_user,
    )
    images = ImagesClient(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get(),
        extra_headers=settings.openai_extra_headers,
        timeout=settings.image_timeout_seconds,
        max_response_bytes=settings.image_max_response_bytes,
        max_connections=max(settings.max_concurrent_generations * 2, 8),
        pacer=limiter,
    )
    return Services(
        settings=settings,
        images=images,
        store=store,
        texts=Texts.load(),
        limiter=limiter,
        clock=clock,
        originals=Originals(settings.data_dir / "originals"),
    )


async def close_services(services: Services) -> None:
    """Close the images client and the store."""
    await services.images.aclose()
    await services.store.close()


def build_application(services: Services) -> Application[Any, Any, Any, Any, Any, Any]:
    """Build the python-telegram-bot Application with every handler registered."""
    settings = services.settings
    app = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get())
        .base_url(settings.bot_api_base_url)
        .base_file_url(settings.bot_file_base_url)
        .rate_limiter(FloodControl())
        # Queued generations hold an update slot while they wait; keep room for everyone else.
        .concurrent_updates(CONCURRENT_UPDATES)
        .defaults(Defaults(allow_sending_without_reply=True))
        .media_write_timeout(60)
        .build()
    )
    register(app, services)
    return app


async def set_commands(app: Application[Any, Any, Any, Any, Any, Any], texts: Texts) -> None:
    """Register the command menu in every language (side by side: each is a round trip before
    the first getUpdates, and there is one per catalogue)."""

    async def one(lang: str) -> None:
        commands = [BotCommand(name, texts.get(lang, f"menu.{name}")) for name in MENU]
        await app.bot.set_my_commands(
            commands,
            scope=BotCommandScopeDefault(),
            language_code=None if lang == texts.default else lang,
        )

    outcomes = await asyncio.gather(
        *(one(lang) for lang in texts.languages), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, clock: Clock = utc_now
) -> AsyncIterator[tuple[Application[Any, Any, Any, Any, Any, Any], Services]]:
    """Run the bot (polling or webhook) for the duration of the `async with` block."""
    services = await open_services(settings, clock=clock)
    try:
        app = build_application(services)
        async with app:
            try:
                await set_commands(app, services.texts)
            except TelegramError as exc:
                logger.warning("could not register the command menu: %s", exc)
            await app.start()
            try:
                await _start_updates(app, settings)
                logger.info(
                    "bot @%s is running (%s, model %s)",
                    app.bot.username,
                    "webhook" if settings.webhook_url else "long polling",
                    settings.image_model,
                )
                yield app, services
            finally:
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                if app.running:
                    await app.stop()
    finally:
        await close_services(services)


async def _start_updates(
    app: Application[Any, Any, Any, Any, Any, Any], settings: Settings
) -> None:
    """Start receiving updates: the webhook when `WEBHOOK_URL` is set, else long polling."""
    updater = app.updater
    if updater is None:
        raise RuntimeError("the application has no updater")
    if settings.webhook_url is not None:
        await updater.start_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path=urlsplit(settings.webhook_url).path.lstrip("/"),
            webhook_url=settings.webhook_url,
            secret_token=settings.webhook_secret_token.get() or None,
            allowed_updates=Update.ALL_TYPES,
        )
    else:
        await updater.start_polling(timeout=POLL_TIMEOUT, allowed_updates=Update.ALL_TYPES)


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with running(settings):
        await stop.wait()
        logger.info("stopping")


def run(settings: Settings) -> int:
    """Run the bot until SIGINT/SIGTERM; return the process exit status."""
    try:
        asyncio.run(_serve(settings))
    except StoreError as exc:
        print(f"Cannot use the database: {exc}", file=sys.stderr)
        return 2
    except InvalidToken:
        print(
            "Telegram rejected TELEGRAM_BOT_TOKEN: check the token from @BotFather.",
            file=sys.stderr,
        )
        return 2
    except TelegramError as exc:
        print(f"Cannot reach the Telegram Bot API at start-up: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = (
            f"the webhook server on {settings.webhook_listen}:{settings.webhook_port}"
            if settings.webhook_url is not None
            else "the bot"
        )
        print(f"Cannot start {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
