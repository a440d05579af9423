"""PostgresStore's own: migrations once across replicas, exactness across several stores (the
"replicas" of one deployment), originals in the database, and the password kept out of errors
and reprs. The contract it shares with SqliteStore is tested in test_store.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bot import quota
from bot.store import StoreError
from bot.store.postgres import PostgresStore
from bot.store.postgres_schema import SCHEMA_VERSION
from tests.pg import PASSWORD, PostgresServer


def clock() -> datetime:
    return datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def replicas(pg_url: str) -> AsyncIterator[list[PostgresStore]]:
    """Three stores on one database, as three bot processes would have."""
    stores = await asyncio.gather(*(PostgresStore.open(pg_url, clock=clock) for _ in range(3)))
    try:
        yield list(stores)
    finally:
        for store in stores:
            await store.close()


async def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(pg_url, clock=clock) for _ in range(5)))
    for store in stores:
        await store.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
    assert {"usage", "reservations", "results", "payments", "original_files"} <= tables


async def test_newer_schema_is_refused(pg_url: str) -> None:
    await (await PostgresStore.open(pg_url, clock=clock)).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 3,))
    with pytest.raises(StoreError, match="newer than this bot knows"):
        await PostgresStore.open(pg_url, clock=clock)


async def test_twenty_reserves_over_three_replicas_never_exceed_the_limit(
    replicas: list[PostgresStore],
) -> None:
    group = -1001
    outcomes = await asyncio.gather(
        *(
            replicas[i % 3].reserve(
                user_id=7, chat_id=None, n=1, user_limit=5, chat_limit=0, exempt=False
            )
            for i in range(20)
        ),
        return_exceptions=True,
    )
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, quota.QuotaExceeded)]
    assert (len(admitted), len(refused)) == (5, 15)
    # The group's limit is shared by members on every replica too.
    outcomes = await asyncio.gather(
        *(
            replicas[i % 3].reserve(
                user_id=100 + i, chat_id=group, n=1, user_limit=5, chat_limit=4, exempt=False
            )
            for i in range(12)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 4
    assert all(isinstance(o, quota.QuotaExceeded) for o in outcomes if isinstance(o, Exception))
    assert (await replicas[1].usage(user_id=7, user_limit=5)).used_today == 5


async def test_paid_reserves_over_replicas_never_overdraw(replicas: list[PostgresStore]) -> None:
    await replicas[0].add_payment(charge_id="c", user_id=3, pictures=4, stars=20, payload="p")

    async def attempt(store: PostgresStore) -> int:
        try:
            held = await store.reserve(
                user_id=3, chat_id=None, n=1, user_limit=0, chat_limit=0, exempt=False, credits=True
            )
        except quota.CreditsNeeded:
            return 0
        await store.settle(held, delivered=1)
        return 1

    assert sum(await asyncio.gather(*(attempt(replicas[i % 3]) for i in range(15)))) == 4
    assert await replicas[2].credits(user_id=3) == 0


async def test_only_one_replica_sends_an_alert(replicas: list[PostgresStore]) -> None:
    every = timedelta(minutes=30)
    answers = await asyncio.gather(
        *(replicas[i % 3].should_alert(kind="auth", every=every) for i in range(9))
    )
    assert sorted(answers) == [False] * 8 + [True]


async def test_originals_saved_on_one_replica_load_on_another(
    replicas: list[PostgresStore],
) -> None:
    await replicas[0].originals.save("r1", [("one.png", b"\x89PNG" + b"1" * 100)])
    assert await replicas[2].originals.load("r1") == [("one.png", b"\x89PNG" + b"1" * 100)]


async def test_originals_keep_the_newest_within_their_budget(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url, clock=clock, originals_max_bytes=250)
    try:
        for i in range(4):
            await store.originals.save(f"r{i}", [("p.png", bytes([i]) * 100)])
        # 250 bytes hold the two newest; the one just saved is kept even when it alone is over.
        assert [bool(await store.originals.load(f"r{i}")) for i in range(4)] == [
            False,
            False,
            True,
            True,
        ]
        await store.originals.save("big", [("p.png", b"x" * 1000)])
        assert await store.originals.load("big") == [("p.png", b"x" * 1000)]
        assert await store.originals.load("r3") == []
    finally:
        await store.close()


async def test_originals_failures_are_logged_not_raised(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await PostgresStore.open(pg_url, clock=clock)
    await store.close()
    with caplog.at_level(logging.WARNING):
        await store.originals.save("r1", [("p.png", b"data")])
        assert await store.originals.load("r1") == []
    assert "could not keep the originals of r1" in caplog.text
    assert PASSWORD not in caplog.text


async def test_wrong_password_is_a_clear_error_without_it(pg_server: PostgresServer) -> None:
    wrong = "Wrong-pa55word-123"
    with pytest.raises(StoreError) as info:
        await PostgresStore.open(pg_server.url(password=wrong), clock=clock)
    text = str(info.value)
    assert "password authentication failed" in text
    assert "Check STORE_URL" in text
    assert wrong not in text and PASSWORD not in text
    assert "postgresql://bot_admin:***@127.0.0.1" in text


async def test_unreachable_server_is_a_clear_error(unused_tcp_port: int) -> None:
    url = f"postgresql://bot:{PASSWORD}@127.0.0.1:{unused_tcp_port}/bot"
    with pytest.raises(StoreError, match="Cannot connect to the PostgreSQL database") as info:
        await PostgresStore.open(url, clock=clock)
    assert PASSWORD not in str(info.value)


async def test_errors_and_repr_never_show_the_password(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url, clock=clock)
    try:
        assert PASSWORD not in repr(store)
        assert "***" in repr(store)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP TABLE settings")
        with pytest.raises(StoreError) as info:
            await store.get_settings(scope="user", scope_id=1)
        assert "settings" in str(info.value)
        assert PASSWORD not in str(info.value)
    finally:
        await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.usage(user_id=1, user_limit=0)
