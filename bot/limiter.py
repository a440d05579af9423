"""Admission control for generations: a per-user in-flight cap and one global FIFO queue.

`GenerationLimiter.claim(user_id)` admits a request for a user (or raises `UserBusy`), and the
returned `Ticket` then waits for one of the bot-wide generation slots in arrival order. While it
waits, `Ticket.position` says how many requests are ahead of it plus one, so the handler can show
"queued, position N". `Ticket.release_slot()` gives the slot back as soon as the images call is
over (the upload and its flood-control waits need no slot), while the user's claim lasts until the
ticket is released (it is an async context manager), which frees both and wakes the next waiter.

Every job this process runs (`bot.jobs.JobRunner`) holds one ticket from admission to its end,
resumed jobs included (`claim(..., force=True)`: they were admitted before the restart), so the
per-user count and the queue positions are those of the live jobs, in the order they were stored.

The number of slots adapts to the images service (see DEVELOPERS.md, "Concurrency"):
`max_concurrent` is the ceiling and the starting point; every 429 the service answers
(`throttled`) halves the current `limit`, at most once per Retry-After window, and every
successful call (`succeeded`) gives one slot back, up to the ceiling. Generations already running
keep their slot when the limit drops; only new ones wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType


class UserBusy(Exception):
    """The user already has the maximum number of generations in flight."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} generations in flight per user")
        self.limit = limit


DEFAULT_HOLD_SECONDS = 1.0  # how long one halving stands when a 429 names no Retry-After


class GenerationLimiter:
    """Cap generations per user and for the whole bot, queueing the excess in order."""

    def __init__(
        self,
        *,
        max_concurrent: int,
        max_per_user: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrent < 1 or max_per_user < 1:
            raise ValueError("limits must be at least 1")
        self.max_concurrent = max_concurrent
        self.max_per_user = max_per_user
        self._limit = max_concurrent
        self._monotonic = monotonic
        self._hold_until = float("-inf")
        self._running = 0
        self._waiters: deque[Ticket] = deque()
        self._per_user: dict[int, int] = {}

    @property
    def running(self) -> int:
        """Return how many generations hold a slot now."""
        return self._running

    @property
    def queued(self) -> int:
        """Return how many admitted requests wait for a slot."""
        return len(self._waiters)

    @property
    def limit(self) -> int:
        """Return how many generations may run at once now (1 to `max_concurrent`)."""
        return self._limit

    def throttled(self, retry_after: float | None) -> None:
        """The images service answered 429: halve the limit, once per Retry-After window."""
        now = self._monotonic()
        if now < self._hold_until:
            return
        hold = retry_after if retry_after is not None and retry_after > 0 else DEFAULT_HOLD_SECONDS
        self._hold_until = now + hold
        self._limit = max(1, self._limit // 2)

    def succeeded(self) -> None:
        """An images call succeeded: give one slot back (up to the ceiling)."""
        if self._limit < self.max_concurrent:
            self._limit += 1
            self._grant()

    def in_flight(self, user_id: int) -> int:
        """Return how many requests of this user are running or queued."""
        return self._per_user.get(user_id, 0)

    def claim(self, user_id: int, *, force: bool = False) -> Ticket:
        """Admit one request of `user_id`, or raise `UserBusy` when the user is at the cap.

        `force` admits it whatever the cap (a job resumed after a restart was admitted before).
        """
        count = self._per_user.get(user_id, 0)
        if count >= self.max_per_user and not force:
            raise UserBusy(self.max_per_user)
        self._per_user[user_id] = count + 1
        return Ticket(self, user_id)

    def _position(self, ticket: Ticket) -> int:
        try:
            return self._waiters.index(ticket) + 1
        except ValueError:
            return 0

    def _enqueue(self, ticket: Ticket) -> bool:
        """Take a slot at once if one is free and nobody waits; else join the queue."""
        if self._running < self._limit and not self._waiters:
            self._running += 1
            return True
        self._waiters.append(ticket)
        return False

    def _release_slot(self) -> None:
        self._running -= 1
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._running < self._limit:
            nxt = self._waiters.popleft()
            self._running += 1
            nxt._granted.set_result(None)

    def _release_user(self, user_id: int) -> None:
        count = self._per_user.get(user_id, 0) - 1
        if count > 0:
            self._per_user[user_id] = count
        else:
            self._per_user.pop(user_id, None)

    def _abandon(self, ticket: Ticket) -> None:
        try:
            self._waiters.remove(ticket)
        except ValueError:
            return


class Ticket:
    """One admitted request: waits for a slot, then releases everything on exit."""

    def __init__(self, limiter: GenerationLimiter, user_id: int) -> None:
        self._limiter = limiter
        self.user_id = user_id
        self._granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._released = False
        self._slot_released = False
        self._queued = False

    @property
    def position(self) -> int:
        """Return 1 for the next request to run, 2 for the one after it, 0 when running."""
        return self._limiter._position(self)

    @property
    def queued(self) -> bool:
        """Return whether this request had to wait for a slot."""
        return self._queued

    def try_acquire(self) -> bool:
        """Take a slot now if possible; otherwise join the queue and return False."""
        if self._limiter._enqueue(self):
            self._granted.set_result(None)
            return True
        self._queued = True
        return False

    async def wait(self) -> None:
        """Wait until this request holds a slot (call `try_acquire` first)."""
        await asyncio.shield(self._granted)

    def release_slot(self) -> None:
        """Give back the slot now if held, keeping the user's claim; safe to call twice."""
        if self._released or self._slot_released or not self._granted.done():
            return
        self._slot_released = True
        self._limiter._release_slot()

    def release(self) -> None:
        """Give back the slot (if held) and the user's claim; safe to call twice."""
        if self._released:
            return
        self._released = True
        if self._granted.done():
            if not self._slot_released:
                self._slot_released = True
                self._limiter._release_slot()
        else:
            self._granted.cancel()
            self._limiter._abandon(self)
        self._limiter._release_user(self.user_id)

    async def __aenter__(self) -> Ticket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
