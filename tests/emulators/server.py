"""Run an aiohttp application on 127.0.0.1 in a daemon thread with its own event loop.

Emulators built on this can be used from sync tests, async tests (any event loop) and
subprocesses alike, because the server never shares a loop with the code under test.

    with ServerThread(app) as server:
        httpx.get(f"{server.url}/ping")
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web

AppSource = web.Application | Callable[[], web.Application]


class ServerThread:
    """Serve one aiohttp application on a loopback port from a dedicated thread."""

    def __init__(
        self,
        app: AppSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        name: str = "emulator-server",
    ) -> None:
        self._app_source = app
        self._host = host
        self._requested_port = port
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._stop_requested: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._port: int | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """Return the bound port (only valid after start())."""
        if self._port is None:
            raise RuntimeError("server is not running")
        return self._port

    @property
    def url(self) -> str:
        """Return the root URL, e.g. http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://{self._host}:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """Return the server's event loop (only valid while running)."""
        if self._loop is None:
            raise RuntimeError("server is not running")
        return self._loop

    @property
    def running(self) -> bool:
        """Tell whether the server thread is alive and listening."""
        return self._thread is not None and self._thread.is_alive() and self._port is not None

    def start(self) -> Self:
        """Start serving and block until the socket listens (bounded by start_timeout)."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise RuntimeError(f"{self._name} did not start within {self._start_timeout} s")
        if self._error is not None:
            self._thread.join(self._stop_timeout)
            self._thread = None
            raise RuntimeError(f"{self._name} failed to start") from self._error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (bounded by stop_timeout); safe to call twice."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(self._stop_timeout)
        self._thread = None
        self._port = None
        if thread.is_alive():
            raise RuntimeError(f"{self._name} did not stop within {self._stop_timeout} s")

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Schedule a plain callback on the server loop from any thread."""
        self.loop.call_soon_threadsafe(callback)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _serve(self) -> None:
        self._stop_requested = asyncio.Event()
        source = self._app_source
        app = source if isinstance(source, web.Application) else source()
        # Short shutdown grace: long-polling handlers must not hold up a test's teardown.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self._host, self._requested_port, reuse_address=True)
            await site.start()
            self._port = _bound_port(runner)
            self._ready.set()
            await self._stop_requested.wait()
        finally:
            await runner.cleanup()
            self._runner = None


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("could not determine the bound port")
