"""The store contract, run against SqliteStore and PostgresStore (the `store` fixture is
parametrized): exact quota reservations, statistics, settings, results, alert throttling, money,
reopening. Then SqliteStore's own: schema and migrations, damaged/unwritable databases and
durability across kill -9 (PostgresStore's own are in test_store_postgres.py)."""

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bot import quota
from bot.store import (
    DB_FILENAME,
    MIGRATIONS,
    RESERVATION_TTL,
    RESULTS_PER_USER,
    Reservation,
    SqliteStore,
    Store,
    StoreError,
)
from bot.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[1]
GROUP = -1001234567890


class FakeClock:
    """A settable clock returning tz-aware UTC datetimes."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))


Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Opener:
    """Return how to open (and reopen) one store of each implementation."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        return lambda: PostgresStore.open(url, clock=clock)
    return lambda: SqliteStore.open(tmp_path / "data", clock=clock)


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[Store]:
    opened = await open_store()
    try:
        yield opened
    finally:
        await opened.close()


async def reserve(
    store: Store,
    *,
    user_id: int = 1,
    chat_id: int | None = None,
    n: int = 1,
    user_limit: int = 5,
    chat_limit: int = 0,
    exempt: bool = False,
) -> Reservation:
    return await store.reserve(
        user_id=user_id,
        chat_id=chat_id,
        n=n,
        user_limit=user_limit,
        chat_limit=chat_limit,
        exempt=exempt,
    )


# --- schema ------------------------------------------------------------------------------------


async def test_open_creates_dir_schema_version_and_wal(tmp_path: Path, clock: FakeClock) -> None:
    data_dir = tmp_path / "nested" / "data"
    store = await SqliteStore.open(data_dir, clock=clock)
    await store.close()
    await store.close()  # closing twice is harmless

    conn = sqlite3.connect(data_dir / DB_FILENAME)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"usage", "reservations", "request_stats", "settings", "results", "alerts"} <= tables


async def test_reopen_keeps_data_and_does_not_remigrate(open_store: Opener) -> None:
    store = await open_store()
    r = await reserve(store, n=3)
    await store.settle(r, delivered=3)
    await store.set_setting(scope="user", scope_id=1, key="size", value="1024x1024")
    await store.record_request(
        user_id=1, chat_id=None, images_requested=3, images_delivered=3, outcome="ok"
    )
    await store.close()

    store = await open_store()
    try:
        usage = await store.usage(user_id=1, user_limit=5)
        assert (usage.used_today, usage.remaining, usage.total_all_time) == (3, 2, 3)
        assert await store.get_settings(scope="user", scope_id=1) == {"size": "1024x1024"}
        assert (await store.stats()).images_all_time == 3
    finally:
        await store.close()


async def test_newer_schema_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this bot knows"):
        await SqliteStore.open(tmp_path, clock=clock)


async def test_closed_store_raises_store_error(open_store: Opener) -> None:
    store = await open_store()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.usage(user_id=1, user_limit=0)


async def test_ping_answers_while_open_and_fails_once_closed(open_store: Opener) -> None:
    store = await open_store()
    await store.ping()  # the health check's question
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.ping()


# --- quota -------------------------------------------------------------------------------------


async def test_twenty_concurrent_reservations_admit_exactly_the_limit(store: Store) -> None:
    outcomes = await asyncio.gather(
        *(reserve(store, n=1, user_limit=5) for _ in range(20)), return_exceptions=True
    )
    granted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, quota.QuotaExceeded)]
    assert len(granted) == 5
    assert len(refused) == 15
    assert len({r.id for r in granted}) == 5
    assert all(e.scope == "user" and e.used == 5 and e.remaining == 0 for e in refused)
    usage = await store.usage(user_id=1, user_limit=5)
    assert (usage.used_today, usage.remaining) == (5, 0)


async def test_request_larger_than_what_is_left_is_refused_whole(
    store: Store, clock: FakeClock
) -> None:
    await reserve(store, n=3, user_limit=5)
    with pytest.raises(quota.QuotaExceeded) as info:
        await reserve(store, n=3, user_limit=5)
    exc = info.value
    assert (exc.scope, exc.limit, exc.used, exc.remaining) == ("user", 5, 3, 2)
    assert exc.resets_at == datetime(2025, 3, 2, tzinfo=UTC)
    # Nothing was booked by the refused request: exactly the 2 left still fit.
    assert (await store.usage(user_id=1, user_limit=5)).used_today == 3
    await reserve(store, n=2, user_limit=5)
    with pytest.raises(quota.QuotaExceeded):
        await reserve(store, n=1, user_limit=5)


async def test_whole_limit_in_one_request_fits(store: Store) -> None:
    await reserve(store, n=1, user_limit=5)
    r = await reserve(store, n=4, user_limit=5)
    assert (r.n, r.user_id, r.chat_id, r.day) == (4, 1, None, date(2025, 3, 1))


async def test_settle_refunds_undelivered_and_is_idempotent(store: Store) -> None:
    r = await reserve(store, n=4, user_limit=5)
    assert (await store.usage(user_id=1, user_limit=5)).remaining == 1
    await store.settle(r, delivered=1)
    await store.settle(r, delivered=4)  # second settle changes nothing
    usage = await store.usage(user_id=1, user_limit=5)
    assert (usage.used_today, usage.remaining, usage.total_all_time) == (1, 4, 1)

    failed = await reserve(store, n=4, user_limit=5)
    await store.settle(failed, delivered=0)
    assert (await store.usage(user_id=1, user_limit=5)).used_today == 1

    over = await reserve(store, n=2, user_limit=5)
    await store.settle(over, delivered=9)  # clamped to what was reserved
    assert (await store.usage(user_id=1, user_limit=5)).used_today == 3


async def test_unlimited_user_is_never_refused(store: Store) -> None:
    for _ in range(3):
        r = await reserve(store, n=10, user_limit=0)
        await store.settle(r, delivered=10)
    usage = await store.usage(user_id=1, user_limit=0)
    assert (usage.used_today, usage.limit, usage.remaining) == (30, 0, None)


async def test_exempt_user_passes_but_is_counted(store: Store) -> None:
    for _ in range(3):
        r = await reserve(store, n=4, user_limit=1, chat_id=GROUP, chat_limit=1, exempt=True)
        await store.settle(r, delivered=4)
    assert (await store.usage(user_id=1, user_limit=1)).used_today == 12
    with pytest.raises(quota.QuotaExceeded):
        await reserve(store, n=1, user_limit=1)


async def test_chat_limit_is_shared_by_members(store: Store) -> None:
    a = await reserve(store, user_id=1, chat_id=GROUP, n=2, user_limit=0, chat_limit=3)
    await store.settle(a, delivered=2)
    with pytest.raises(quota.QuotaExceeded) as info:
        await reserve(store, user_id=2, chat_id=GROUP, n=2, user_limit=0, chat_limit=3)
    assert (info.value.scope, info.value.used, info.value.remaining) == ("chat", 2, 1)
    await reserve(store, user_id=2, chat_id=GROUP, n=1, user_limit=0, chat_limit=3)
    # Another group and private chats are not affected by this chat's limit.
    await reserve(store, user_id=2, chat_id=-42, n=3, user_limit=0, chat_limit=3)
    await reserve(store, user_id=2, chat_id=2, n=3, user_limit=0, chat_limit=1)
    # The user's own limit still applies inside a group.
    with pytest.raises(quota.QuotaExceeded) as info:
        await reserve(store, user_id=3, chat_id=-43, n=2, user_limit=1, chat_limit=10)
    assert info.value.scope == "user"


async def test_day_rollover_resets_the_quota(store: Store, clock: FakeClock) -> None:
    clock.now = datetime(2025, 3, 1, 23, 59, tzinfo=UTC)
    late = await reserve(store, n=2, user_limit=2)
    with pytest.raises(quota.QuotaExceeded) as info:
        await reserve(store, n=1, user_limit=2)
    assert info.value.resets_at == datetime(2025, 3, 2, tzinfo=UTC)

    clock.now = datetime(2025, 3, 2, 0, 0, tzinfo=UTC)
    # Settled after midnight, it still counts to the day it was reserved on.
    await store.settle(late, delivered=2)
    usage = await store.usage(user_id=1, user_limit=2)
    assert (usage.used_today, usage.remaining, usage.total_all_time) == (0, 2, 2)
    assert usage.resets_at == datetime(2025, 3, 3, tzinfo=UTC)
    r = await reserve(store, n=2, user_limit=2)
    assert r.day == date(2025, 3, 2)


async def test_unsettled_reservation_expires(store: Store, clock: FakeClock) -> None:
    clock.now = datetime(2025, 3, 1, 1, 0, tzinfo=UTC)
    await reserve(store, n=2, user_limit=2)  # the process "crashes" before settling
    clock.advance(RESERVATION_TTL - timedelta(seconds=1))
    with pytest.raises(quota.QuotaExceeded):
        await reserve(store, n=1, user_limit=2)
    clock.advance(timedelta(seconds=2))
    assert (await store.usage(user_id=1, user_limit=2)).used_today == 0
    await reserve(store, n=2, user_limit=2)


async def test_reserve_rejects_empty_request(store: Store) -> None:
    with pytest.raises(ValueError):
        await reserve(store, n=0)


# --- statistics --------------------------------------------------------------------------------


async def test_stats_today_and_all_time(store: Store, clock: FakeClock) -> None:
    empty = await store.stats()
    assert (empty.images_all_time, empty.requests_all_time, empty.distinct_users) == (0, 0, 0)
    assert empty.failures_today == {} and empty.top_users_all_time == []

    async def record(user: int, requested: int, delivered: int, outcome: str) -> None:
        await store.record_request(
            user_id=user,
            chat_id=GROUP,
            images_requested=requested,
            images_delivered=delivered,
            outcome=outcome,
        )

    await record(1, 4, 4, "ok")
    await record(2, 1, 0, "refused")
    clock.advance(timedelta(days=1))
    await record(2, 2, 2, "ok")
    await record(3, 1, 1, "ok")
    await record(3, 1, 0, "timeout")
    await record(3, 1, 0, "timeout")
    await record(1, 1, 0, "refused")

    s = await store.stats(top=2)
    assert s.day == date(2025, 3, 2)
    assert (s.images_today, s.requests_today) == (3, 5)
    assert s.failures_today == {"timeout": 2, "refused": 1}
    assert (s.images_all_time, s.requests_all_time) == (7, 7)
    assert s.failures_all_time == {"refused": 2, "timeout": 2}
    assert s.top_users_today == [(2, 2), (3, 1)]
    assert s.top_users_all_time == [(1, 4), (2, 2)]
    assert s.distinct_users == 3


# --- settings ----------------------------------------------------------------------------------


async def test_settings_set_get_delete(store: Store) -> None:
    assert await store.get_settings(scope="user", scope_id=1) == {}
    await store.set_setting(scope="user", scope_id=1, key="size", value="1024x1024")
    await store.set_setting(scope="user", scope_id=1, key="language", value="ru")
    await store.set_setting(scope="user", scope_id=1, key="size", value="1536x1024")
    await store.set_setting(scope="chat", scope_id=1, key="as_file", value="1")
    assert await store.get_settings(scope="user", scope_id=1) == {
        "size": "1536x1024",
        "language": "ru",
    }
    assert await store.get_settings(scope="chat", scope_id=1) == {"as_file": "1"}
    await store.set_setting(scope="user", scope_id=1, key="size", value=None)
    await store.set_setting(scope="user", scope_id=1, key="missing", value=None)
    assert await store.get_settings(scope="user", scope_id=1) == {"language": "ru"}
    assert await store.get_settings(scope="user", scope_id=2) == {}
    with pytest.raises(ValueError):
        await store.get_settings(scope="group", scope_id=1)
    with pytest.raises(ValueError):
        await store.set_setting(scope="global", scope_id=1, key="size", value="x")


# --- results and history -----------------------------------------------------------------------


async def test_results_round_trip(store: Store, clock: FakeClock) -> None:
    rid = await store.save_result(
        user_id=1, chat_id=GROUP, prompt="yellow alpaca", options='{"n": 2}', model="gpt-image-2"
    )
    assert 8 <= len(rid) <= 10
    assert all(c.isalnum() or c in "-_" for c in rid)
    assert len(f"again:{rid}".encode()) <= 64
    record = await store.get_result(result_id=rid)
    assert record is not None
    assert (record.user_id, record.chat_id, record.prompt, record.options, record.model) == (
        1,
        GROUP,
        "yellow alpaca",
        '{"n": 2}',
        "gpt-image-2",
    )
    assert record.file_ids == ()
    assert record.created_at == clock.now

    await store.set_result_files(result_id=rid, file_ids=["AgAC1", "AgAC2"])
    record = await store.get_result(result_id=rid)
    assert record is not None and record.file_ids == ("AgAC1", "AgAC2")
    await store.set_result_files(result_id="nope", file_ids=["x"])  # expired: no-op
    assert await store.get_result(result_id="nope") is None

    other = await store.save_result(
        user_id=1, chat_id=None, prompt="p", options="{}", model="m", file_ids=["F"]
    )
    assert other != rid
    record = await store.get_result(result_id=other)
    assert record is not None and record.chat_id is None and record.file_ids == ("F",)


async def test_history_is_newest_first_and_bounded(store: Store, clock: FakeClock) -> None:
    ids = []
    for i in range(RESULTS_PER_USER + 5):
        ids.append(
            await store.save_result(
                user_id=1, chat_id=None, prompt=f"p{i}", options="{}", model="m"
            )
        )
    await store.save_result(user_id=2, chat_id=None, prompt="other", options="{}", model="m")
    assert len(set(ids)) == len(ids)

    recent = await store.history(user_id=1)
    assert [r.prompt for r in recent] == [f"p{i}" for i in range(54, 44, -1)]
    everything = await store.history(user_id=1, limit=1000)
    assert len(everything) == RESULTS_PER_USER
    assert everything[-1].prompt == "p5"
    for old in ids[:5]:
        assert await store.get_result(result_id=old) is None
    assert await store.get_result(result_id=ids[5]) is not None
    assert [r.prompt for r in await store.history(user_id=2)] == ["other"]
    assert await store.history(user_id=3) == []


# --- alert throttling --------------------------------------------------------------------------


async def test_should_alert_throttles_across_reopen(open_store: Opener, clock: FakeClock) -> None:
    every = timedelta(minutes=30)
    store = await open_store()
    assert await store.should_alert(kind="auth", every=every) is True
    assert await store.should_alert(kind="auth", every=every) is False
    assert await store.should_alert(kind="quota", every=every) is True
    await store.close()

    clock.advance(timedelta(minutes=29))
    store = await open_store()
    try:
        assert await store.should_alert(kind="auth", every=every) is False
        clock.advance(timedelta(minutes=1))
        assert await store.should_alert(kind="auth", every=every) is True
        assert await store.should_alert(kind="auth", every=every) is False
    finally:
        await store.close()


# --- damaged and unwritable databases ----------------------------------------------------------


async def test_corrupted_database_gives_clear_error(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / DB_FILENAME
    db.write_bytes(b"this is not a database, just garbage bytes\x00\xff" * 100)
    with pytest.raises(StoreError) as info:
        await SqliteStore.open(tmp_path, clock=clock)
    message = str(info.value)
    assert str(db) in message
    assert "damaged" in message and "backup" in message
    assert "Traceback" not in message


async def test_data_dir_that_is_a_file_gives_clear_error(tmp_path: Path, clock: FakeClock) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("oops")
    with pytest.raises(StoreError) as info:
        await SqliteStore.open(not_a_dir, clock=clock)
    message = str(info.value)
    assert str(not_a_dir) in message
    assert "writ" in message


async def test_unwritable_dir_gives_clear_error(tmp_path: Path, clock: FakeClock) -> None:
    if os.geteuid() == 0:
        # chmod does not stop root; a path below a regular file fails for everyone.
        (tmp_path / "file").write_text("x")
        data_dir = tmp_path / "file" / "data"
    else:
        data_dir = tmp_path / "ro"
        data_dir.mkdir()
        data_dir.chmod(0o500)
    try:
        with pytest.raises(StoreError) as info:
            await SqliteStore.open(data_dir, clock=clock)
    finally:
        if data_dir.is_dir():
            data_dir.chmod(0o700)
    assert str(data_dir) in str(info.value)
    assert "DATA_DIR" in str(info.value)


# --- durability --------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from bot.store import SqliteStore

    async def main():
        store = await SqliteStore.open(Path(sys.argv[1]), clock=lambda: datetime.now(UTC))
        r = await store.reserve(
            user_id=7, chat_id=None, n=3, user_limit=10, chat_limit=0, exempt=False
        )
        await store.settle(r, delivered=2)
        await store.set_setting(scope="user", scope_id=7, key="size", value="1024x1024")
        print("ok", flush=True)
        await asyncio.sleep(30)

    asyncio.run(main())
    """
)


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "child did not report in time"
        line = proc.stdout.readline()
        assert line.strip() == b"ok", proc.stderr.read() if proc.stderr else line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    store = await SqliteStore.open(tmp_path, clock=lambda: datetime.now(UTC))
    try:
        usage = await store.usage(user_id=7, user_limit=10)
        assert usage.total_all_time == 2
        assert await store.get_settings(scope="user", scope_id=7) == {"size": "1024x1024"}
    finally:
        await store.close()


async def test_settings_follow_writes_and_hand_out_copies(store: Store, open_store: Opener) -> None:
    await store.set_setting(scope="user", scope_id=7, key="size", value="1024x1024")
    first = await store.get_settings(scope="user", scope_id=7)
    first["size"] = "tampered"
    assert await store.get_settings(scope="user", scope_id=7) == {"size": "1024x1024"}
    await store.set_setting(scope="user", scope_id=7, key="size", value="1536x1024")
    assert await store.get_settings(scope="user", scope_id=7) == {"size": "1536x1024"}
    await store.set_setting(scope="user", scope_id=7, key="size", value=None)
    assert await store.get_settings(scope="user", scope_id=7) == {}
    await store.set_setting(scope="user", scope_id=7, key="quality", value="high")
    reopened = await open_store()
    try:
        assert await reopened.get_settings(scope="user", scope_id=7) == {"quality": "high"}
    finally:
        await reopened.close()


# --- money: credits, budget, payments, spend (issue #13) ---------------------------------------


async def test_old_database_is_migrated_and_keeps_its_data(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "data" / DB_FILENAME
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO usage (scope, scope_id, day, used) VALUES ('user', 1, ?, 3)",
        (quota.utc_day(clock()).isoformat(),),
    )
    conn.commit()
    conn.close()
    store = await SqliteStore.open(tmp_path / "data", clock=clock)
    try:
        assert (await store.usage(user_id=1, user_limit=5)).used_today == 3
        reservation = await reserve(store, user_limit=5, n=2)
        assert reservation.paid == 0
        assert await store.credits(user_id=1) == 0
    finally:
        await store.close()


async def test_credits_pay_beyond_the_free_allowance(store: Store) -> None:
    assert await store.add_payment(charge_id="c1", user_id=1, pictures=3, stars=15, payload="p")
    first = await store.reserve(
        user_id=1, chat_id=None, n=2, user_limit=1, chat_limit=0, exempt=False, credits=True
    )
    assert first.paid == 1  # one free, one paid
    assert await store.credits(user_id=1) == 2  # one held
    await store.settle(first, delivered=2)
    assert await store.credits(user_id=1) == 2
    assert (await store.usage(user_id=1, user_limit=1)).remaining == 0
    with pytest.raises(quota.CreditsNeeded) as info:
        await store.reserve(
            user_id=1, chat_id=None, n=3, user_limit=1, chat_limit=0, exempt=False, credits=True
        )
    assert (info.value.credits, info.value.needed, info.value.remaining) == (2, 3, 0)


async def test_failed_paid_pictures_are_given_back(store: Store) -> None:
    await store.add_payment(charge_id="c1", user_id=1, pictures=2, stars=10, payload="p")
    held = await store.reserve(
        user_id=1, chat_id=None, n=2, user_limit=0, chat_limit=0, exempt=False, credits=True
    )
    assert held.paid == 2 and await store.credits(user_id=1) == 0
    await store.settle(held, delivered=1)
    assert await store.credits(user_id=1) == 1
    await store.settle(held, delivered=0)  # idempotent
    assert await store.credits(user_id=1) == 1


async def test_concurrent_paid_reservations_never_overdraw(store: Store) -> None:
    await store.add_payment(charge_id="c1", user_id=1, pictures=5, stars=25, payload="p")

    async def attempt() -> int:
        try:
            held = await store.reserve(
                user_id=1, chat_id=None, n=1, user_limit=0, chat_limit=0, exempt=False, credits=True
            )
        except quota.CreditsNeeded:
            return 0
        await store.settle(held, delivered=1)
        return 1

    results = await asyncio.gather(*(attempt() for _ in range(20)))
    assert sum(results) == 5
    assert await store.credits(user_id=1) == 0


async def test_payment_is_credited_once_even_after_reopen(open_store: Opener) -> None:
    store = await open_store()
    try:
        assert await store.add_payment(charge_id="c", user_id=7, pictures=10, stars=50, payload="p")
        assert not await store.add_payment(
            charge_id="c", user_id=7, pictures=10, stars=50, payload="p"
        )
    finally:
        await store.close()
    store = await open_store()
    try:
        assert not await store.add_payment(
            charge_id="c", user_id=7, pictures=10, stars=50, payload="p"
        )
        assert await store.credits(user_id=7) == 10
    finally:
        await store.close()


async def test_refund_takes_the_credits_back_once_and_not_when_spent(store: Store) -> None:
    from bot.store import PaymentError

    await store.add_payment(charge_id="a", user_id=1, pictures=2, stars=10, payload="p")
    await store.add_payment(charge_id="b", user_id=1, pictures=2, stars=10, payload="p")
    payment = await store.refund_payment(charge_id="a")
    assert (payment.user_id, payment.pictures, payment.stars) == (1, 2, 10)
    assert await store.credits(user_id=1) == 2
    with pytest.raises(PaymentError) as info:
        await store.refund_payment(charge_id="a")
    assert info.value.reason == "refunded"
    with pytest.raises(PaymentError) as info:
        await store.refund_payment(charge_id="nope")
    assert info.value.reason == "unknown"
    held = await store.reserve(
        user_id=1, chat_id=None, n=1, user_limit=0, chat_limit=0, exempt=False, credits=True
    )
    await store.settle(held, delivered=1)
    with pytest.raises(PaymentError) as info:
        await store.refund_payment(charge_id="b")
    assert info.value.reason == "spent"
    await store.undo_refund(charge_id="a")
    assert await store.credits(user_id=1) == 3


async def test_budget_holds_are_exact_under_a_burst(store: Store) -> None:
    from bot.pricing import BudgetExhausted

    async def attempt() -> int:
        try:
            hold = await store.reserve_budget(amount=30, budget=100)
        except BudgetExhausted:
            return 0
        await asyncio.sleep(0)
        await store.settle_cost(hold, user_id=1, model="m", images=1, cost=25)
        return 1

    admitted = sum(await asyncio.gather(*(attempt() for _ in range(30))))
    spend = await store.spend()
    assert spend.today.cost == 25 * admitted <= 100
    assert admitted >= 3
    assert spend.budget_held == 0


async def test_budget_and_spend_follow_the_utc_day(store: Store, clock: FakeClock) -> None:
    from bot.pricing import BudgetExhausted

    hold = await store.reserve_budget(amount=100, budget=100)
    with pytest.raises(BudgetExhausted) as info:
        await store.reserve_budget(amount=1, budget=100)
    assert info.value.resets_at == datetime(2025, 3, 2, tzinfo=UTC)
    assert await store.settle_cost(hold, user_id=1, model="m", images=1, cost=90) == 90
    assert await store.settle_cost(hold, user_id=1, model="m", images=1, cost=90) == 90  # once
    clock.advance(timedelta(days=1))
    await store.reserve_budget(amount=100, budget=100)
    await store.settle_cost(None, user_id=2, model="n", images=2, cost=10)
    clock.advance(timedelta(days=10))
    spend = await store.spend()
    assert spend.today.cost == 0 and spend.week.cost == 0
    assert spend.all_time.cost == 100 and spend.all_time.images == 3
    assert spend.all_time.by_model == [("m", 90, 1), ("n", 10, 2)]
    assert spend.all_time.top_users == [(1, 90), (2, 10)]


# --- kept originals (📄 Original) ----------------------------------------------------------------


async def test_originals_round_trip_and_replace(store: Store, tmp_path: Path) -> None:
    spooled = tmp_path / "spooled.png"
    spooled.write_bytes(b"\x89PNG spooled")
    await store.originals.save("res_1", [("a.png", b"\x89PNG one"), ("dir/b.png", spooled)])
    assert await store.originals.load("res_1") == [
        ("a.png", b"\x89PNG one"),
        ("b.png", b"\x89PNG spooled"),
    ]
    await store.originals.save("res_1", [("c.webp", b"RIFF new")])
    assert await store.originals.load("res_1") == [("c.webp", b"RIFF new")]
    assert await store.originals.load("missing") == []
