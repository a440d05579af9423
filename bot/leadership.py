"""Which replica polls Telegram: one leader among the processes sharing a store.

Telegram hands each update to one getUpdates caller and answers a second concurrent poller with
409 Conflict, so with several replicas in polling mode exactly one may poll. The store elects it
(`Store.leadership()`): `PostgresStore` with a session advisory lock on a connection of its own,
released by the server the moment that connection closes (the process died, even by kill -9);
`SqliteStore` has one process per database file and always leads.

`lead` is the loop each replica runs: it asks the `Leadership` every `interval` seconds whether
this process leads (taking the lock when it is free), starts polling when it becomes the leader
and stops when it no longer is (its connection to the database broke: another replica may take
over). A standby replica keeps serving everything but updates (and, with shared jobs, works the
queue); it is healthy.

    leading = await lead_once(leadership, elected=start_polling, deposed=stop_polling)
    task = asyncio.create_task(lead(leadership, elected=..., deposed=..., leading=leading))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

logger = logging.getLogger(__name__)

LEAD_INTERVAL = 2.0  # seconds between a standby's attempts to take over (and a leader's checks)


class Leadership(Protocol):
    """The store's election of the one replica that polls."""

    @property
    def leading(self) -> bool:
        """Return whether this process led at the last `acquire`."""
        ...

    async def acquire(self) -> bool:
        """Take the leadership if it is free, or check that this process still holds it;
        return whether it leads now (False when the database cannot be asked)."""
        ...

    async def release(self) -> None:
        """Give the leadership up (another replica may take it at once)."""
        ...


class AlwaysLeader:
    """The leadership of a store only one process uses (SQLite): always this process."""

    @property
    def leading(self) -> bool:
        """Return True."""
        return True

    async def acquire(self) -> bool:
        """Return True."""
        return True

    async def release(self) -> None:
        """Nothing to give up."""


Step = Callable[[], Awaitable[None]]


async def lead_once(
    leadership: Leadership, *, elected: Step, deposed: Step, leading: bool = False
) -> bool:
    """Ask once whether this process leads; call `elected` or `deposed` on a change; return
    whether it leads afterwards (`elected` may give the leadership up again)."""
    now = await leadership.acquire()
    if now and not leading:
        logger.info("this replica leads: it polls Telegram for updates")
        await elected()
    elif leading and not now:
        logger.warning("this replica lost the leadership: it stops polling")
        await deposed()
    return leadership.leading


async def lead(
    leadership: Leadership,
    *,
    elected: Step,
    deposed: Step,
    leading: bool,
    interval: float = LEAD_INTERVAL,
) -> None:
    """Keep asking every `interval` seconds, until cancelled (see the module docstring)."""
    while True:
        await asyncio.sleep(interval)
        leading = await lead_once(leadership, elected=elected, deposed=deposed, leading=leading)
