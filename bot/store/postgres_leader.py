"""`PostgresLeadership`: the replica that polls, elected by a session advisory lock.

The lock (`POLLING_LOCK`) is held on a connection of its own, outside the pool: a session lock
lives as long as its session, and the server ends the session the moment the connection closes,
so a replica killed with kill -9 frees it at once (no lease to wait out). A standby asks with
`pg_try_advisory_lock` (it never waits); the leader checks its connection with a trivial query
each time it is asked, bounded by `CHECK_TIMEOUT`, and on any failure closes it and reports that
it no longer leads: it stops polling before another replica can take the lock. See
`bot.leadership` for the loop that asks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg

logger = logging.getLogger(__name__)

# An arbitrary constant naming the polling leader's lock among the database's advisory locks
# (next to `postgres_schema.MIGRATION_LOCK`).
POLLING_LOCK = 0x5EED_1A6E_0002
CONNECT_TIMEOUT = 5  # seconds to reach the server for the lock's connection
CHECK_TIMEOUT = 5.0  # seconds the lock's query may take before the connection counts as lost


class PostgresLeadership:
    """`bot.leadership.Leadership` on a PostgreSQL database (one per `PostgresStore`)."""

    def __init__(self, url: str, *, scrub: Callable[[object], str]) -> None:
        self._url = url
        self._scrub = scrub
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._held = False
        self._lock = asyncio.Lock()

    @property
    def leading(self) -> bool:
        """Return whether this process held the lock at the last `acquire`."""
        return self._held

    async def acquire(self) -> bool:
        """Take the lock if it is free, or check that its connection still lives."""
        async with self._lock:
            try:
                await asyncio.wait_for(self._acquire(), CHECK_TIMEOUT)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                logger.warning("the polling leadership could not be checked: %s", self._scrub(exc))
                await self._drop()
            return self._held

    async def _acquire(self) -> None:
        if self._conn is None:
            # The standby keeps its connection too: one connect, then a query every attempt.
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
        if self._held:
            await self._conn.execute("SELECT 1")
            return
        cursor = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (POLLING_LOCK,))
        row = await cursor.fetchone()
        self._held = row is not None and row[0] is True

    async def release(self) -> None:
        """Close the lock's connection (the server frees the lock with the session)."""
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            try:
                await conn.close()
            except (psycopg.Error, OSError) as exc:  # pragma: no cover (close rarely fails)
                logger.debug("closing the leadership connection failed: %s", self._scrub(exc))
