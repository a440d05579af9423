"""A round-robin HTTP load balancer on 127.0.0.1, in front of bot replicas (webhook mode).

Each request goes to the next backend in turn, as nginx's or a cloud balancer's default does. A
backend that refuses the connection (its process is gone) is skipped for that request and the
next one tried, as a balancer's passive health check would; a backend that fails after taking
the request (killed mid-answer) makes the request a 502, as a real balancer answers, and
Telegram sends the update again later. Every request is bounded by `timeout`.

    with Balancer([f"http://127.0.0.1:{port}" for port in ports]) as lb:
        tg.webhook_target = f"{lb.url}/hook"
        ...
        lb.served  # {backend: requests it answered}
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from types import TracebackType
from typing import Self

from aiohttp import ClientConnectorError, ClientError, ClientSession, ClientTimeout, web

from tests.emulators.server import ServerThread

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})


class Balancer:
    """Pass each HTTP request to the next live backend."""

    def __init__(self, backends: list[str], *, timeout: float = 30.0) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        self.backends = list(backends)
        self.timeout = timeout
        self._next = itertools.cycle(range(len(self.backends)))
        self._lock = threading.Lock()
        self._served: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._server = ServerThread(self._make_app, name="balancer")

    @property
    def url(self) -> str:
        """Return the balancer's root URL (no trailing slash)."""
        return self._server.url

    @property
    def served(self) -> dict[str, int]:
        """Return how many requests each backend answered."""
        with self._lock:
            return dict(self._served)

    @property
    def failed(self) -> dict[str, int]:
        """Return how many requests each backend took and then failed (answered 502)."""
        with self._lock:
            return dict(self._failed)

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._proxy)
        return app

    async def _proxy(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        with self._lock:
            start = next(self._next)
        async with ClientSession(timeout=ClientTimeout(total=self.timeout)) as session:
            for step in range(len(self.backends)):
                backend = self.backends[(start + step) % len(self.backends)]
                url = f"{backend}{request.rel_url}"
                try:
                    async with session.request(
                        request.method, url, data=body, headers=headers
                    ) as answer:
                        payload = await answer.read()
                except ClientConnectorError:
                    continue  # the request never reached it (nobody listens): the next one
                except (ClientError, TimeoutError):
                    with self._lock:
                        self._failed[backend] += 1
                    return web.Response(status=502, text="bad gateway")
                with self._lock:
                    self._served[backend] += 1
                return web.Response(
                    status=answer.status,
                    body=payload,
                    content_type=answer.content_type,
                )
        return web.Response(status=503, text="no backend is up")
