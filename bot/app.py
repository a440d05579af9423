"""Wiring: build the `Application`, open and close the shared services, run until stopped.

`running(settings)` is the whole life of the bot as an async context manager (open the store and
the images client, initialize the bot, register the command menu, resume the jobs a previous run
left, start polling or the webhook), used by `run()` for `python -m bot` and by the tests, so
both go through the same code. Leaving it is the quick clean stop: updates stop at once, queued
jobs stay in the store, running ones get `SHUTDOWN_GRACE_SECONDS` (`bot.jobs.JobRunner.stop`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import itertools
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import urlsplit

from telegram import BotCommand, BotCommandScopeDefault, Update
from telegram.error import InvalidToken, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseRateLimiter,
    Defaults,
)
from telegram.request import HTTPXRequest

from bot.config import Settings
from bot.flood import FloodGate
from bot.handlers import register
from bot.handlers.delivery import clear_spool
from bot.handlers.errors import telegram_error_kind
from bot.handlers.jobs import TelegramEvents
from bot.handlers.services import Services
from bot.handlers.webhook import webhook_receiver
from bot.i18n import Texts
from bot.images import ImagesClient, tune_http_reads
from bot.jobs import JobRunner
from bot.jobs.worker import instance_id
from bot.leadership import lead, lead_once
from bot.limiter import GenerationLimiter
from bot.metrics import Load, Metrics
from bot.store import StoreError, open_store
from bot.web import ListenError, Webhook, WebServer

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_T = TypeVar("_T")
MENU = ("image", "edit", "settings", "usage", "history", "help", "cancel")
PAID_MENU = ("buy", "balance")  # shown when Telegram Stars are on (STARS_PER_IMAGE > 0)
POLL_TIMEOUT = 30
CONCURRENT_UPDATES = 4096
MAX_RETRIES = 3
# Methods that post or change messages: these count against Telegram's flood limits.
PACED_PREFIXES = ("send", "edit", "copyMessage", "forwardMessage")
# python-telegram-bot's loggers that may show a call's parameters (setWebhook's secret_token).
TELEGRAM_LOGGERS = ("telegram.Bot", "telegram.ext.ExtBot", "telegram.ext.Updater")


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class FloodControl(BaseRateLimiter[None]):
    """Flood control for python-telegram-bot, chat by chat (`bot.flood.FloodGate`).

    python-telegram-bot's own `AIORateLimiter` pauses every request of the bot after any
    `RetryAfter`; here a 429 holds back only the chat it was about, messages are paced bot-wide and
    per group, chat actions are never delayed (nor retried: the next one comes in 4 s), and other
    calls (answering buttons, getFile, …) go straight through, retried after a 429 like messages.
    """

    def __init__(
        self,
        gate: FloodGate | None = None,
        *,
        max_retries: int = MAX_RETRIES,
        metrics: Metrics | None = None,
    ) -> None:
        self._gate = gate or FloodGate()
        self._max_retries = max_retries
        self._metrics = metrics or Metrics()

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(  # noqa: PLR0917 (signature fixed by python-telegram-bot)
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Send the request when its chat may have it; wait out a 429 for that chat alone."""
        if endpoint == "sendChatAction":
            return await self._counted(callback(*args, **kwargs))
        chat = data.get("chat_id")
        key = chat if isinstance(chat, int | str) else None
        paced = endpoint.startswith(PACED_PREFIXES)
        media = data.get("media")
        weight = len(media) if endpoint == "sendMediaGroup" and isinstance(media, list) else 1
        for attempt in itertools.count():
            if paced:
                await self._gate.before_send(key, group=_is_group(key), weight=weight)
            elif key is not None:
                await self._gate.wait_chat(key)
            try:
                return await self._counted(callback(*args, **kwargs))
            except RetryAfter as exc:
                if attempt >= self._max_retries:
                    raise
                seconds = exc.retry_after
                wait = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
                logger.info("flood control: chat %s waits %.0f s (%s)", key, wait, endpoint)
                if key is None:
                    await asyncio.sleep(wait)
                else:
                    self._gate.penalize(key, wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _counted(self, call: Awaitable[_T]) -> _T:
        """Await one Bot API call, counting its failure (each 429 too) by kind."""
        try:
            return await call
        except TelegramError as exc:
            self._metrics.telegram_error(telegram_error_kind(exc))
            raise


class PollingRequest(HTTPXRequest):
    """The getUpdates connection, remembering whether Telegram answered the last call (for
    /healthz: a bot whose getUpdates fail, e.g. a second process polling, is not polling)."""

    def __init__(self) -> None:
        super().__init__(connection_pool_size=1)  # what ApplicationBuilder gives getUpdates
        self.failing = False

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        """Make the call and note whether it got a 200."""
        try:
            status, body = await super().do_request(*args, **kwargs)
        except TelegramError:
            self.failing = True
            raise
        self.failing = status != HTTPStatus.OK
        return status, body


def _is_group(chat: int | str | None) -> bool:
    """Return whether a chat id names a group, supergroup or channel (negative, or @name)."""
    return (isinstance(chat, int) and chat < 0) or (isinstance(chat, str) and not chat.isdigit())


async def open_services(settings: Settings, *, clock: Clock = utc_now) -> Services:
    """Open the store and create the images client (raises `StoreError`)."""
    store = await open_store(
        settings.store_url.get(),
        data_dir=settings.data_dir,
        clock=clock,
        originals_max_bytes=settings.originals_max_bytes,
    )
    await asyncio.to_thread(clear_spool, settings.data_dir)
    # The images client tells the limiter of 429s and successes: the limit adapts (AIMD).
    limiter = GenerationLimiter(
        max_concurrent=settings.max_concurrent_generations,
        max_per_user=settings.max_inflight_per_user,
    )
    metrics = Metrics(
        load=lambda: Load(queued=limiter.queued, in_flight=limiter.running, limit=limiter.limit)
    )
    images = ImagesClient(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get(),
        extra_headers=settings.openai_extra_headers,
        timeout=settings.image_timeout_seconds,
        max_attempts=settings.image_max_attempts,
        max_response_bytes=settings.image_max_response_bytes,
        max_connections=max(settings.max_concurrent_generations * 2, 8),
        pacer=limiter,
        stream_previews=settings.stream_previews,
        preview_images=settings.preview_images,
    )
    return Services(
        settings=settings,
        images=images,
        store=store,
        texts=Texts.load(),
        limiter=limiter,
        clock=clock,
        originals=store.originals,
        metrics=metrics,
        jobs=JobRunner(
            store=store,
            images=images,
            limiter=limiter,
            settings=settings,
            clock=clock,
            metrics=metrics,
            owner=await asyncio.to_thread(instance_id, settings.data_dir),
        ),
    )


async def close_services(services: Services) -> None:
    """Close the images client and the store."""
    await services.images.aclose()
    await services.store.close()


def build_application(
    services: Services, *, polling: PollingRequest | None = None
) -> Application[Any, Any, Any, Any, Any, Any]:
    """Build the python-telegram-bot Application with every handler registered."""
    settings = services.settings
    app = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get())
        .get_updates_request(polling or PollingRequest())
        .base_url(settings.bot_api_base_url)
        .base_file_url(settings.bot_file_base_url)
        .rate_limiter(FloodControl(FloodGate(shared=services.store.pace), metrics=services.metrics))
        # Queued generations hold an update slot while they wait; keep room for everyone else.
        .concurrent_updates(CONCURRENT_UPDATES)
        .defaults(Defaults(allow_sending_without_reply=True))
        .media_write_timeout(60)
        .build()
    )
    register(app, services)
    return app


async def set_commands(
    app: Application[Any, Any, Any, Any, Any, Any], texts: Texts, *, paid: bool = False
) -> None:
    """Register the command menu in every language (with /buy and /balance when `paid`), side by
    side: each is a round trip before the first getUpdates, and there is one per catalogue."""
    menu = (*MENU, *PAID_MENU) if paid else MENU

    async def one(lang: str) -> None:
        commands = [BotCommand(name, texts.get(lang, f"menu.{name}")) for name in menu]
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
        polling = PollingRequest()
        app = build_application(services, polling=polling)
        with _webhook_secret(settings) as webhook_secret:
            async with app:
                try:
                    await set_commands(app, services.texts, paid=settings.stars_enabled)
                except TelegramError as exc:
                    logger.warning("could not register the command menu: %s", exc)
                await app.start()
                try:
                    # Before any new update: resumed jobs keep their place in the queue.
                    await services.jobs.start(TelegramEvents(app.bot, services))
                    async with _receiving(
                        app, services, polling=polling, webhook_secret=webhook_secret
                    ):
                        logger.info(
                            "bot @%s is running (%s, model %s)",
                            app.bot.username,
                            "webhook" if settings.webhook_url else "long polling",
                            settings.image_model,
                        )
                        yield app, services
                finally:
                    # Updates are no longer received; those already in still become jobs, kept
                    # for the next start. Running jobs get the grace period, then stay too.
                    await services.jobs.stop(settings.shutdown_grace_seconds)
                    if app.running:
                        await app.stop()
    finally:
        await close_services(services)


@contextlib.asynccontextmanager
async def _receiving(
    app: Application[Any, Any, Any, Any, Any, Any],
    services: Services,
    *,
    polling: PollingRequest,
    webhook_secret: str,
) -> AsyncIterator[None]:
    """Receive updates (the webhook when `WEBHOOK_URL` is set, else long polling) and serve
    /healthz and /metrics (on the webhook server, and on `METRICS_PORT` when set)."""
    settings, metrics = services.settings, services.metrics
    updater = app.updater
    if updater is None:
        raise RuntimeError("the application has no updater")
    webhook_set = False
    leadership = services.store.leadership()
    stop_leading: Callable[[], Awaitable[None]] = _nothing

    def receiving() -> str | None:
        if settings.webhook_url is not None:
            return None if webhook_set else "not receiving updates"
        if not leadership.leading:
            return None  # a standby: another replica polls, this one serves the rest
        if not updater.running:
            return "not receiving updates"
        return "polling failing" if polling.failing else None

    async def health() -> str | None:
        return await _health(app, services, receiving=receiving)

    serve = functools.partial(WebServer, health=health, metrics=metrics)
    servers: list[WebServer] = []
    if settings.webhook_url is not None:
        receiver = webhook_receiver(app, secret=webhook_secret)
        webhook = Webhook(path=urlsplit(settings.webhook_url).path, receive=receiver)
        servers.append(
            serve(
                listen=settings.webhook_listen,
                port=settings.webhook_port,
                webhook=webhook,
                name="the webhook server",
            )
        )
    if settings.metrics_port is not None and not (
        settings.webhook_url is not None and settings.metrics_port == settings.webhook_port
    ):
        servers.append(serve(listen=settings.metrics_listen, port=settings.metrics_port))
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await server.start()
            stack.push_async_callback(server.stop)
        if settings.webhook_url is not None:
            # Our own server takes the posts (python-telegram-bot's has no room for other
            # routes); this is the registration `Updater.start_webhook` would make.
            await app.bot.set_webhook(
                url=settings.webhook_url,
                allowed_updates=Update.ALL_TYPES,
                secret_token=webhook_secret,
            )
            webhook_set = True
        else:
            metrics.receiving = services.jobs.receiving = lambda: leadership.leading
            stop_leading = await _lead_polling(app, services)
        try:
            yield
        finally:
            webhook_set = False
            await stop_leading()
            if updater.running:
                await updater.stop()
            await leadership.release()  # a standby takes over while this one finishes


async def _nothing() -> None:
    """Do nothing (a step with nothing to do)."""


async def _lead_polling(
    app: Application[Any, Any, Any, Any, Any, Any], services: Services
) -> Callable[[], Awaitable[None]]:
    """Poll when this replica leads (`bot.leadership`): at once if it does now, later when it
    takes over; stop polling when it no longer leads. Return what ends that loop."""
    updater = app.updater
    if updater is None:
        raise RuntimeError("the application has no updater")
    leadership = services.store.leadership()

    async def start() -> None:
        await updater.start_polling(
            timeout=POLL_TIMEOUT,
            allowed_updates=Update.ALL_TYPES,
            error_callback=functools.partial(_polling_failed, services.metrics),
        )

    async def take_over() -> None:
        try:
            await start()
        except TelegramError as exc:
            logger.error("could not start polling: %s; another replica may take over", exc)
            await leadership.release()

    async def stop() -> None:
        if updater.running:
            await updater.stop()

    # At start-up a failure to poll stops the process, as with one replica.
    leading = await lead_once(leadership, elected=start, deposed=stop)
    if not leading:
        logger.info("another replica polls for updates: this one stands by")
    task = asyncio.create_task(lead(leadership, elected=take_over, deposed=stop, leading=leading))

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return cancel


async def _health(
    app: Application[Any, Any, Any, Any, Any, Any],
    services: Services,
    *,
    receiving: Callable[[], str | None],
) -> str | None:
    """Return None when the bot takes updates and its store answers, else a short reason."""
    if not app.running:
        return "not running"
    if (reason := receiving()) is not None:
        return reason
    try:
        await services.store.ping()
    except StoreError:
        return "store not answering"
    return None


def _polling_failed(metrics: Metrics, exc: TelegramError) -> None:
    """Count and log one failed getUpdates (python-telegram-bot retries it)."""
    metrics.telegram_error(telegram_error_kind(exc))
    logger.error("polling for updates failed: %s", exc)


class _HideSecret(logging.Filter):
    """Replace one secret in every record of a logger (python-telegram-bot logs call bodies)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self._secret in text:
            record.msg, record.args = text.replace(self._secret, "**********"), None
        return True


def derived_webhook_secret(token: str) -> str:
    """Return the webhook secret of a bot token: HMAC-SHA256, base64url (43 allowed chars)."""
    digest = hmac.new(token.encode(), b"imagebot webhook secret", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@contextlib.contextmanager
def _webhook_secret(settings: Settings) -> Iterator[str]:
    """Yield the webhook secret: the configured one, else one derived from the bot token (kept
    out of the logs)."""
    secret = settings.webhook_secret_token.get()
    if secret or settings.webhook_url is None:
        yield secret
        return
    # Without a secret anyone who learns the URL could post updates as any user. Derived from
    # the token, every replica of the bot registers and checks the same one without being told
    # (a random one per process would leave all but the last to start refusing Telegram's
    # posts); it reveals nothing of the token, and whoever has the token could set a webhook
    # anyway. The formatter set up in __main__ only knows the configured secrets, so this one
    # is hidden here.
    secret = derived_webhook_secret(settings.telegram_bot_token.get())
    logger.info("no WEBHOOK_SECRET_TOKEN set: registered one derived from the bot token")
    hide = _HideSecret(secret)
    loggers = [logging.getLogger(name) for name in TELEGRAM_LOGGERS]
    for item in loggers:
        item.addFilter(hide)
    try:
        yield secret
    finally:
        for item in loggers:
            item.removeFilter(hide)


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with running(settings):
        await stop.wait()
        logger.info("stopping")


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's event loop factory when uvloop is installed, else None (asyncio's own).

    uvloop's sockets and transports are C: with megabyte pictures going both ways, the bot
    spends about 2 ms less CPU per picture (bench/issue9.py). python-telegram-bot, httpx
    (anyio), tornado and psycopg all run on it unchanged.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(settings: Settings) -> int:
    """Run the bot until SIGINT/SIGTERM; return the process exit status."""
    tune_http_reads()
    loop_factory = event_loop_factory()
    logger.debug("event loop: %s", "uvloop" if loop_factory is not None else "asyncio")
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(settings))
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
        where = exc.where if isinstance(exc, ListenError) else "the bot"
        print(f"Cannot start {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
