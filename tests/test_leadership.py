"""The polling leader among replicas (`bot.leadership`, `PostgresLeadership`) on a real server:
one store leads, the others stand by, and the lock moves when the leader goes or loses its
connection. The whole thing through `python -m bot` is in test_replicas.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from bot.leadership import AlwaysLeader, lead, lead_once
from bot.store import SqliteStore
from bot.store.postgres import PostgresStore
from bot.store.postgres_leader import POLLING_LOCK
from tests.conftest import fixed_clock


async def test_exactly_one_store_leads_and_another_takes_over_when_it_leaves(
    pg_replicas: list[PostgresStore],
) -> None:
    won = await asyncio.gather(*(store.leadership().acquire() for store in pg_replicas))
    assert sorted(won) == [False, False, True]
    leader = pg_replicas[won.index(True)]
    # Asking again changes nothing: the leader still leads, the others still stand by.
    assert [await store.leadership().acquire() for store in pg_replicas] == won
    assert [store.leadership().leading for store in pg_replicas] == won

    await leader.close()  # a clean stop gives the lock up at once
    rest = [store for store in pg_replicas if store is not leader]
    assert sorted([await store.leadership().acquire() for store in rest]) == [False, True]


async def test_a_leader_whose_connection_is_cut_stands_down_and_another_leads(
    pg_replicas: list[PostgresStore], pg_url: str
) -> None:
    first, second, _ = pg_replicas
    assert await first.leadership().acquire()
    assert not await second.leadership().acquire()
    # What the server does when the leader's host vanishes: its session ends.
    with psycopg.connect(pg_url, autocommit=True) as admin:
        (pid,) = admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
            (POLLING_LOCK & 0xFFFF_FFFF,),
        ).fetchone() or (None,)
        assert pid is not None, "the lock is not held by any session"
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert not await first.leadership().acquire()  # it notices, and no longer leads
    assert await second.leadership().acquire()
    assert not await first.leadership().acquire()  # ...and cannot take it back


async def test_lead_starts_and_stops_polling_as_the_leadership_moves(
    pg_replicas: list[PostgresStore],
) -> None:
    first, second, _ = pg_replicas
    events: list[str] = []

    def step(name: str) -> Callable[[], Awaitable[None]]:
        async def record() -> None:
            events.append(name)

        return record

    leading = await lead_once(
        first.leadership(), elected=step("first polls"), deposed=step("first stops")
    )
    assert leading and events == ["first polls"]
    standby = await lead_once(
        second.leadership(), elected=step("second polls"), deposed=step("second stops")
    )
    assert not standby
    task = asyncio.create_task(
        lead(
            second.leadership(),
            elected=step("second polls"),
            deposed=step("second stops"),
            leading=False,
            interval=0.05,
        )
    )
    try:
        await asyncio.sleep(0.3)
        assert events == ["first polls"], "a standby must not poll while the leader lives"
        await first.leadership().release()
        async with asyncio.timeout(10):
            while "second polls" not in events:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert events == ["first polls", "second polls"]


async def test_sqlite_always_leads(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path, clock=fixed_clock)
    try:
        leadership = store.leadership()
        assert isinstance(leadership, AlwaysLeader)
        assert await leadership.acquire() and leadership.leading
    finally:
        await store.close()
