"""The requests in flight that a user may still cancel, keyed by a short id (no `telegram` here).

`RunningRequests.track(...)` registers one request for as long as it runs; the cancellable part
of its work goes through `RunningRequest.run(coro)`, which runs it in a task of its own. The one
cancel step is `RunningRequests.cancel(request_id)`: it cancels that task, so a request waiting
for a slot leaves the queue without reaching the images service and a request being drawn has its
images call cancelled (the client closes the connection, so the host can stop work). `run` then
raises `Cancelled`, an ordinary exception the handler answers, instead of the `CancelledError`
that must keep meaning "shut down". Once `RunningRequest.close()` is called (the pictures are
there and delivery begins) the request can no longer be cancelled.

    async with requests.track(user_id=1, chat_id=1, message_id=7) as request:
        result = await request.run(generate())      # raises Cancelled after a cancel
        request.close()                             # from here on, cancel() says no
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """The person who asked cancelled the request."""


@dataclass(eq=False)
class RunningRequest:
    """One request in flight: whose it is, where, and the messages that stand for it."""

    id: str
    user_id: int
    chat_id: int
    # The command and the bot's messages about it (status, preview): a /cancel replying to any.
    message_ids: set[int] = field(default_factory=set)
    cancelled: bool = False
    closed: bool = False
    _task: asyncio.Task[Any] | None = None

    def attach(self, message_id: int) -> None:
        """Remember a message that stands for this request (a /cancel may reply to it)."""
        self.message_ids.add(message_id)

    def cancel(self) -> bool:
        """Stop the request unless it is past cancelling; return whether it was stopped."""
        if self.closed or self.cancelled:
            return False
        if self._task is not None and (self._task.done() or not self._task.cancel()):
            return False
        self.cancelled = True  # before `run` starts, it will not start at all
        return True

    def close(self) -> None:
        """Delivery begins: no cancel from here on."""
        self.closed = True

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run the cancellable part of the request; raise `Cancelled` when it was cancelled."""
        if self.cancelled:
            work.close()
            raise Cancelled()
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        self._task = task
        try:
            return await task
        except asyncio.CancelledError:
            if self.cancelled and not _cancelling():
                raise Cancelled() from None
            raise  # the bot shuts down (or our caller was cancelled): keep it a cancellation
        finally:
            self._task = None


def _cancelling() -> bool:
    """Return whether the current task itself is being cancelled (not just the work it awaits)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class RunningRequests:
    """The registry of requests in flight, for the Cancel button and /cancel."""

    def __init__(self) -> None:
        self._by_id: dict[str, RunningRequest] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._by_id)

    @contextlib.asynccontextmanager
    async def track(
        self, *, user_id: int, chat_id: int, message_id: int
    ) -> AsyncIterator[RunningRequest]:
        """Register a request for the duration of the block."""
        request = RunningRequest(id=f"{next(self._ids):x}", user_id=user_id, chat_id=chat_id)
        request.attach(message_id)
        self._by_id[request.id] = request
        try:
            yield request
        finally:
            request.closed = True
            self._by_id.pop(request.id, None)

    def get(self, request_id: str) -> RunningRequest | None:
        """Return the request with this id while it is in flight."""
        return self._by_id.get(request_id)

    def of(
        self, *, user_id: int, chat_id: int, message_id: int | None = None
    ) -> list[RunningRequest]:
        """Return a user's cancellable requests in a chat (only the one a message stands for)."""
        return [
            r
            for r in self._by_id.values()
            if r.user_id == user_id
            and r.chat_id == chat_id
            and not r.closed
            and (message_id is None or message_id in r.message_ids)
        ]

    def in_chat(self, chat_id: int) -> int:
        """Return how many requests are in flight in a chat (anyone's)."""
        return sum(1 for r in self._by_id.values() if r.chat_id == chat_id)

    def cancel(self, request_id: str) -> bool:
        """Cancel one request by id; return whether it was still cancellable."""
        request = self._by_id.get(request_id)
        return request is not None and request.cancel()
