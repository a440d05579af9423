"""The bot's HTTP server: GET /healthz, GET /metrics and, in webhook mode, the webhook route.

One `WebServer` is one tornado HTTP server on one address and port. It knows nothing of Telegram:
the health check, the metrics and the webhook receiver are passed in by the wiring (`bot.app`).

- GET /healthz answers 200 `{"status": "ok"}` when `health()` returns None, else 503
  `{"status": "unavailable", "reason": ...}` with its short reason (a fixed text: no error message
  of a dependency, which could carry a path or a password). A check that takes longer than
  `HEALTH_TIMEOUT` seconds or raises is a 503 too.
- GET /metrics answers the Prometheus text format of `Metrics.exposition()`.
- POST <webhook path> hands the headers and body to `Webhook.receive`, which returns the status.

Requests are not logged (the webhook path is the operator's, and may be a secret of its own).
`WebServer.start` raises `ListenError` (an `OSError` saying which server) when it cannot bind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from bot.metrics import Metrics

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT = 5.0
MAX_BODY_BYTES = 2 * 1024 * 1024  # a Telegram update is a few KB; nothing else is posted

HealthCheck = Callable[[], Awaitable[str | None]]
"""Return None when the bot is healthy, else a short reason (a fixed text, no secrets)."""

WebhookReceiver = Callable[[Mapping[str, str], bytes], Awaitable[int]]
"""Take one webhook POST's headers and body; return the HTTP status to answer."""


@dataclass(frozen=True)
class Webhook:
    """The webhook route: its path (without the leading slash) and what handles a POST."""

    path: str
    receive: WebhookReceiver


class ListenError(OSError):
    """The server could not bind its address; `where` names which server and where."""

    def __init__(self, where: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.where = where


class WebServer:
    """Serve /healthz, /metrics and an optional webhook on one address and port."""

    def __init__(
        self,
        *,
        listen: str,
        port: int,
        health: HealthCheck,
        metrics: Metrics,
        webhook: Webhook | None = None,
        name: str = "the metrics server",
    ) -> None:
        self.listen = listen
        self.port = port
        self._name = name
        routes: list[Any] = [
            (r"/healthz", _HealthHandler, {"health": health}),
            (r"/metrics", _MetricsHandler, {"metrics": metrics}),
        ]
        if webhook is not None:
            path = re.escape(webhook.path.strip("/"))
            routes.append((rf"/{path}/?", _WebhookHandler, {"receive": webhook.receive}))
        self._server = HTTPServer(_App(routes), max_body_size=MAX_BODY_BYTES)
        self._sockets: list[socket.socket] = []

    @property
    def where(self) -> str:
        """Return what this server is and where it listens, for messages."""
        return f"{self._name} on {self.listen}:{self.port}"

    async def start(self) -> None:
        """Bind the address and start serving (raise `ListenError`)."""
        try:
            self._sockets = bind_sockets(self.port, self.listen)
        except OSError as exc:
            raise ListenError(self.where, exc) from exc
        self._server.add_sockets(self._sockets)
        logger.info("serving /healthz and /metrics: %s", self.where)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        self._server.stop()
        await self._server.close_all_connections()


class _App(tornado.web.Application):
    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        """Log nothing per request (see the module docstring)."""


class _HealthHandler(tornado.web.RequestHandler):
    def initialize(self, health: HealthCheck) -> None:
        self._health = health

    async def get(self) -> None:
        try:
            reason = await asyncio.wait_for(self._health(), HEALTH_TIMEOUT)
        except TimeoutError:
            reason = "health check timed out"
        except Exception:
            logger.exception("the health check failed")
            reason = "health check failed"
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        if reason is None:
            self.finish(json.dumps({"status": "ok"}))
            return
        self.set_status(503)
        self.finish(json.dumps({"status": "unavailable", "reason": reason}))


class _MetricsHandler(tornado.web.RequestHandler):
    def initialize(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def get(self) -> None:
        body, content_type = self._metrics.exposition()
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class _WebhookHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("POST",)

    def initialize(self, receive: WebhookReceiver) -> None:
        self._receive = receive

    async def post(self) -> None:
        status = await self._receive(self.request.headers, self.request.body)
        self.set_status(status)
        self.finish()
