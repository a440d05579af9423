"""The job methods of the `Store` protocol: a contract every implementation must keep.

`STORES` lists the implementations (a PostgreSQL one adds itself here); each test runs on all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.store import FINISHED_STATES, BudgetHold, JobRecord, Reservation, SqliteStore, Store
from bot.store.postgres import PostgresStore
from tests.test_store import GROUP, FakeClock

Opener = Callable[[Path, FakeClock], Awaitable[Store]]


def _sqlite(request: pytest.FixtureRequest) -> Opener:
    return lambda path, clock: SqliteStore.open(path, clock=clock)


def _postgres(request: pytest.FixtureRequest) -> Opener:
    url = request.getfixturevalue("pg_url")  # one fresh database per test
    return lambda path, clock: PostgresStore.open(url, clock=clock)


STORES: dict[str, Callable[[pytest.FixtureRequest], Opener]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture(params=sorted(STORES))
def opener(request: pytest.FixtureRequest) -> Opener:
    return STORES[request.param](request)


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock, opener: Opener) -> AsyncIterator[Store]:
    opened = await opener(tmp_path / "data", clock)
    try:
        yield opened
    finally:
        await opened.close()


async def _job(
    store: Store,
    *,
    user_id: int = 1,
    chat_id: int = 1,
    n: int = 1,
    limit: int = 3,
    budget: BudgetHold | None = None,
    owner: str = "me",
) -> JobRecord:
    reservation = await store.reserve(
        user_id=user_id,
        chat_id=chat_id if chat_id < 0 else None,
        n=n,
        user_limit=limit,
        chat_limit=0,
        exempt=False,
    )
    return await store.create_job(
        owner=owner,
        user_id=user_id,
        chat_id=chat_id,
        chat_type="supergroup" if chat_id < 0 else "private",
        thread_id=7 if chat_id < 0 else None,
        message_id=42,
        lang="de",
        request='{"v":1}',
        reservation=reservation,
        budget=budget,
    )


async def _used(store: Store, user_id: int = 1) -> int:
    return (await store.usage(user_id=user_id, user_limit=3)).used_today


async def test_a_job_round_trips_with_what_it_holds(store: Store, clock: FakeClock) -> None:
    hold = await store.reserve_budget(amount=25, budget=0)
    job = await _job(store, chat_id=GROUP, n=2, budget=hold)
    again = await store.get_job(job.id)
    assert again == job
    assert (job.state, job.chat_type, job.thread_id, job.message_id, job.lang) == (
        "queued",
        "supergroup",
        7,
        42,
        "de",
    )
    assert job.created_at == clock.now
    assert isinstance(job.reservation, Reservation) and job.reservation.n == 2
    assert job.budget == hold
    assert await store.get_job(job.id + 100) is None


async def test_unfinished_jobs_come_oldest_first_and_finished_ones_drop_out(
    store: Store,
) -> None:
    jobs = [await _job(store, user_id=u, limit=0) for u in (3, 1, 2)]
    assert [j.id for j in await store.unfinished_jobs(owner="me")] == [j.id for j in jobs]
    assert jobs[0].id < jobs[1].id < jobs[2].id
    assert await store.transition_job(jobs[1].id, to="running", from_states=("queued",))
    assert await store.finish_job(jobs[0].id, state="delivered", delivered=1)
    unfinished = await store.unfinished_jobs(owner="me")
    assert [(j.id, j.state) for j in unfinished] == [
        (jobs[1].id, "running"),
        (jobs[2].id, "queued"),
    ]


async def test_transition_is_compare_and_set(store: Store, clock: FakeClock) -> None:
    job = await _job(store)
    clock.now += timedelta(seconds=5)
    assert not await store.transition_job(job.id, to="delivering", from_states=("running",))
    assert await store.transition_job(job.id, to="running", from_states=("queued",))
    moved = await store.get_job(job.id)
    assert moved is not None and moved.state == "running"
    assert moved.updated_at == clock.now and moved.created_at == job.created_at
    assert await store.finish_job(job.id, state="failed", delivered=0)
    # A finished job never moves again, whatever the caller expects.
    assert not await store.transition_job(job.id, to="queued", from_states=("failed",))
    with pytest.raises(ValueError):
        await store.transition_job(job.id, to="delivered", from_states=("running",))
    with pytest.raises(ValueError):
        await store.finish_job(job.id, state="running", delivered=0)


async def test_finishing_settles_the_reservation_exactly_once(store: Store) -> None:
    delivered = await _job(store, n=2)
    failed = await _job(store, n=1)
    assert await _used(store) == 3  # both held while unfinished
    assert await store.finish_job(delivered.id, state="delivered", delivered=2)
    assert await store.finish_job(failed.id, state="failed", delivered=0)
    assert await _used(store) == 2  # the failed one refunded
    # Finishing again (a second worker, a cancel racing the end) changes nothing.
    assert not await store.finish_job(delivered.id, state="cancelled", delivered=0)
    assert not await store.finish_job(failed.id, state="delivered", delivered=1)
    assert await _used(store) == 2
    record = await store.get_job(failed.id)
    assert record is not None and record.state == "failed"
    assert not await store.finish_job(9999, state="failed", delivered=0)


async def test_cancelled_and_partly_delivered_jobs_refund_the_rest(store: Store) -> None:
    cancelled = await _job(store, n=1)
    partial = await _job(store, n=2)
    assert await store.finish_job(cancelled.id, state="cancelled", delivered=0)
    assert await store.finish_job(partial.id, state="delivered", delivered=1)
    assert await _used(store) == 1
    assert set(FINISHED_STATES) == {"delivered", "failed", "cancelled"}


async def test_jobs_and_their_reservations_survive_a_reopen(
    tmp_path: Path, clock: FakeClock, opener: Opener
) -> None:
    store = await opener(tmp_path / "data", clock)
    job = await _job(store, n=2)
    await store.close()
    store = await opener(tmp_path / "data", clock)
    try:
        (again,) = await store.unfinished_jobs(owner="me")
        assert again == job
        assert await _used(store) == 2
        assert await store.finish_job(job.id, state="delivered", delivered=2)
        assert await _used(store) == 2
    finally:
        await store.close()


async def test_note_update_says_first_time_only(store: Store) -> None:
    assert await store.note_update(100)
    assert not await store.note_update(100)
    assert await store.note_update(101)


async def test_prune_forgets_old_finished_jobs_and_update_ids_only(
    store: Store, clock: FakeClock
) -> None:
    old_done = await _job(store, limit=0)
    old_open = await _job(store, limit=0)
    await store.finish_job(old_done.id, state="delivered", delivered=1)
    await store.note_update(1)
    clock.now += timedelta(days=2)
    new_done = await _job(store, limit=0)
    await store.finish_job(new_done.id, state="failed", delivered=0)
    await store.note_update(2)
    removed = await store.prune_jobs(before=clock.now - timedelta(days=1))
    assert removed == 1
    assert await store.get_job(old_done.id) is None
    assert await store.get_job(old_open.id) is not None  # unfinished: never pruned
    assert await store.get_job(new_done.id) is not None
    assert await store.note_update(1)  # forgotten
    assert not await store.note_update(2)


async def test_each_instance_resumes_its_own_jobs_only(store: Store) -> None:
    mine = await _job(store, limit=0)
    theirs = await _job(store, user_id=2, limit=0, owner="other")
    assert [j.id for j in await store.unfinished_jobs(owner="me")] == [mine.id]
    assert [j.owner for j in await store.unfinished_jobs(owner="other")] == ["other"]
    assert (await store.get_job(theirs.id)) == theirs
