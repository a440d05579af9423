"""The store's cost per request: SQLite vs PostgreSQL, through the `Store` interface.

Run by hand from the repository root (not a test; about a minute):

    .venv/bin/python bench/store.py                 # 300 requests per row
    .venv/bin/python bench/store.py --requests 100  # quicker

One "request" is what one delivered /image asks of the store, in order: the user's and the
chat's settings (3 reads: language, then /image's two), `reserve`, `reserve_budget`,
`save_result`, `settle`, `settle_cost`, `record_request`; "+ original" adds keeping a 1.5 MB
original (📄 Original). Rows: SQLite in a temporary directory (WAL, synchronous=NORMAL: no fsync
per commit); PostgreSQL 127.0.0.1 with its defaults (an fsync per commit); and with
`synchronous_commit=off` (like SQLite's NORMAL: a crash may lose the last commits, never
consistency). Columns: sequential latency (median, p90) and the throughput of 20 users at once.
The PostgreSQL server is started by tests/pg.py in a temporary directory (PG_BINDIR or Debian's
/usr/lib/postgresql/*/bin).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.store import SqliteStore, Store  # noqa: E402
from bot.store.postgres import PostgresStore  # noqa: E402
from tests.pg import PostgresServer  # noqa: E402

ORIGINAL = os.urandom(1_500_000)
USERS = 20


def now() -> datetime:
    return datetime.now(UTC)


async def one_request(store: Store, user: int, *, original: bool) -> None:
    await store.get_settings(scope="user", scope_id=user)
    await store.get_settings(scope="user", scope_id=user)
    await store.get_settings(scope="chat", scope_id=user)
    reservation = await store.reserve(
        user_id=user, chat_id=user, n=1, user_limit=1_000_000, chat_limit=0, exempt=False
    )
    hold = await store.reserve_budget(amount=40_000_000, budget=10**15)
    result_id = await store.save_result(
        user_id=user, chat_id=user, prompt="a yellow alpaca", options="", model="gpt-image-2"
    )
    if original:
        await store.originals.save(result_id, [("image.png", ORIGINAL)])
    await store.settle(reservation, delivered=1)
    await store.settle_cost(hold, user_id=user, model="gpt-image-2", images=1, cost=40_000_000)
    await store.record_request(
        user_id=user, chat_id=user, images_requested=1, images_delivered=1, outcome="ok"
    )


async def measure(store: Store, requests: int) -> dict[str, float]:
    for i in range(20):  # warm-up: connections, prepared statements, caches
        await one_request(store, 1 + i % USERS, original=False)
    figures: dict[str, float] = {}
    for original in (False, True):
        count = requests if not original else max(20, requests // 5)
        times = []
        for i in range(count):
            start = time.perf_counter()
            await one_request(store, 1 + i % USERS, original=original)
            times.append(time.perf_counter() - start)
        key = "orig" if original else "plain"
        figures[f"{key}_median"] = statistics.median(times) * 1000
        figures[f"{key}_p90"] = statistics.quantiles(times, n=10)[-1] * 1000

    async def user(uid: int) -> None:
        for _ in range(requests // USERS):
            await one_request(store, uid, original=False)

    start = time.perf_counter()
    await asyncio.gather(*(user(100 + u) for u in range(USERS)))
    figures["burst_rps"] = (requests // USERS) * USERS / (time.perf_counter() - start)
    return figures


async def run(requests: int) -> None:
    server = PostgresServer()
    server.start(durable=True)
    try:
        rows: list[tuple[str, Callable[[], Awaitable[Store]]]] = []
        tmp = tempfile.TemporaryDirectory(prefix="bench-store-")
        rows.append(("SQLite (WAL, NORMAL)", lambda: SqliteStore.open(Path(tmp.name), clock=now)))
        durable = server.create_database()
        rows.append(("PostgreSQL (defaults)", lambda: PostgresStore.open(durable, clock=now)))
        lax = server.create_database() + "?options=" + quote("-c synchronous_commit=off")
        rows.append(("PostgreSQL (sync commit off)", lambda: PostgresStore.open(lax, clock=now)))
        print(f"{requests} sequential requests per row (1/5 of them with an original); ", end="")
        print(f"{USERS} users at once for the burst; {os.cpu_count()} cores")
        header = f"{'store':30} {'median ms':>10} {'p90 ms':>8} {'+orig med':>10} {'+orig p90':>10}"
        print(f"{header} {'20 users req/s':>15}")
        for name, opener in rows:
            store = await opener()
            try:
                f = await measure(store, requests)
            finally:
                await store.close()
            print(
                f"{name:30} {f['plain_median']:10.2f} {f['plain_p90']:8.2f}"
                f" {f['orig_median']:10.2f} {f['orig_p90']:10.2f} {f['burst_rps']:15.0f}"
            )
        tmp.cleanup()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
