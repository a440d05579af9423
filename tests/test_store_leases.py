"""Jobs across replicas on a real PostgreSQL server: leases (`renew_lease`, `claim_jobs`: the jobs
of an instance whose lease ran out are taken over once, by one claimer each; a live instance's
jobs and finished jobs never are; SQLite has one process per file and claims nothing) and the
per-user in-flight cap for the whole deployment (`reserve(max_in_flight=...)`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.limiter import UserBusy
from bot.store import Reservation, SqliteStore
from bot.store.postgres import PostgresStore
from tests.test_store import FakeClock
from tests.test_store_jobs import _job, _used


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))


async def test_a_live_instances_jobs_stay_and_a_gone_ones_are_taken_over_once(
    pg_replicas: list[PostgresStore],
) -> None:
    dead, alive, _ = pg_replicas
    await dead.renew_lease(owner="dead", seconds=30)
    await alive.renew_lease(owner="alive", seconds=30)
    jobs = [await _job(dead, owner="dead", user_id=u) for u in (1, 2)]
    finished = await _job(dead, owner="dead", user_id=3)
    assert await dead.finish_job(finished.id, state="delivered", delivered=1)
    assert await alive.claim_jobs(owner="alive") == []  # its lease runs: hands off

    await dead.renew_lease(owner="dead", seconds=0)  # as if 30 s went by without a renewal
    await asyncio.sleep(0.01)
    claimed = await alive.claim_jobs(owner="alive")
    assert [job.id for job in claimed] == [job.id for job in jobs]
    assert {job.owner for job in claimed} == {"alive"}
    # What they booked comes along: finishing one settles its reservation as before.
    assert claimed[0].reservation == jobs[0].reservation
    assert await alive.finish_job(claimed[0].id, state="delivered", delivered=1)
    assert await _used(alive, user_id=1) == 1
    assert [job.id for job in await alive.unfinished_jobs(owner="alive")] == [jobs[1].id]
    assert await alive.claim_jobs(owner="alive") == []  # nothing twice


async def test_replicas_claiming_at_once_split_the_jobs(pg_replicas: list[PostgresStore]) -> None:
    dead, first, second = pg_replicas
    jobs = [await _job(dead, owner="dead", user_id=100 + i, limit=50) for i in range(30)]
    # "dead" never renewed a lease at all: its jobs are anyone's.
    await first.renew_lease(owner="first", seconds=30)
    await second.renew_lease(owner="second", seconds=30)
    rounds = await asyncio.gather(
        *(
            store.claim_jobs(owner=name)
            for _ in range(3)
            for store, name in ((first, "first"), (second, "second"))
        )
    )
    ids = [job.id for claimed in rounds for job in claimed]
    assert sorted(ids) == [job.id for job in jobs]  # each once, none left behind


async def test_sqlite_claims_nothing(tmp_path: Path, clock: FakeClock) -> None:
    store = await SqliteStore.open(tmp_path, clock=clock)
    try:
        await _job(store, owner="someone else")
        await store.renew_lease(owner="me", seconds=0)
        assert await store.claim_jobs(owner="me") == []
    finally:
        await store.close()


async def test_the_in_flight_cap_holds_across_replicas(pg_replicas: list[PostgresStore]) -> None:
    async def ask(store: PostgresStore) -> Reservation | None:
        try:
            return await store.reserve(
                user_id=7,
                chat_id=None,
                n=1,
                user_limit=100,
                chat_limit=0,
                exempt=False,
                max_in_flight=2,
            )
        except UserBusy as exc:
            assert exc.limit == 2
            return None

    # 12 requests of one user at once, four to each replica: two get through.
    booked = [r for r in await asyncio.gather(*(ask(s) for s in pg_replicas * 4)) if r is not None]
    assert len(booked) == 2
    assert await ask(pg_replicas[0]) is None
    await pg_replicas[1].settle(booked[0], delivered=1)  # one finished: room for one more
    assert await ask(pg_replicas[2]) is not None
    assert await ask(pg_replicas[0]) is None
    # An admin has no cap, like no quota.
    admin = await pg_replicas[0].reserve(
        user_id=7, chat_id=None, n=1, user_limit=0, chat_limit=0, exempt=True, max_in_flight=2
    )
    assert admin.n == 1


async def test_live_instances_count_those_that_take_updates(
    pg_replicas: list[PostgresStore],
) -> None:
    first, second, third = pg_replicas
    assert await first.live_instances() == 1  # nobody yet: at least this one
    await first.renew_lease(owner="a", seconds=30)
    await second.renew_lease(owner="b", seconds=30)
    await third.renew_lease(owner="c", seconds=30, receiving=False)  # a polling standby
    assert await first.live_instances() == 2
    await second.renew_lease(owner="b", seconds=0)  # stopped
    assert await third.live_instances() == 1
