"""Replicas on PostgreSQL: pictures delivered per second with 1 and 3 replicas, and what the
shared flood pacing costs per message.

Run by hand from the repository root (not a test; about a minute):

    .venv/bin/python bench/replicas.py                # 150 pictures per row
    .venv/bin/python bench/replicas.py --pictures 60  # quicker

Delivery: N `python -m bot` processes in webhook mode (tests/replicas.py) on one PostgreSQL
database, behind the round-robin balancer of tests/emulators/balancer.py; the Telegram emulator
enforces Telegram's limits (about 30 messages a second for the bot, token buckets) and answers
429 over them; the images emulator answers at once. `--pictures` users each send /image at
once; the figure is pictures delivered per second from the first update to the last photo, and
the 429s Telegram answered. The bot's budget is 25 a second (bot/flood.py): with the budget
shared in the database, 3 replicas deliver no faster than 1 and get no 429, which is the point
(Telegram's limit is the bot's, not the process's).

Pacing cost: `PostgresStore.pace` (one GCRA booking, one statement) sequential latency on
127.0.0.1, and the bookings per second of 3 stores at once on one bucket (the row lock).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.store.postgres import PostgresStore  # noqa: E402
from tests.conftest import API_KEY, TOKEN, base_env  # noqa: E402
from tests.emulators.balancer import Balancer  # noqa: E402
from tests.emulators.openai_images import OpenAIEmulator  # noqa: E402
from tests.emulators.telegram_api import TelegramEmulator  # noqa: E402
from tests.pg import PostgresServer  # noqa: E402
from tests.replicas import Replicas  # noqa: E402


def now() -> datetime:
    return datetime.now(UTC)


def delivery(server: PostgresServer, *, replicas: int, pictures: int) -> tuple[float, int]:
    """Return pictures per second and Telegram's 429s for `pictures` users asking at once."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp,
        TelegramEmulator(TOKEN) as tg,
        OpenAIEmulator(api_key=API_KEY) as oai,
    ):
        env = base_env(tg, oai, Path(tmp) / "unused")
        env.update(
            STORE_URL=server.create_database(),
            LOG_LEVEL="INFO",
            STATUS_MESSAGE_DELAY_SECONDS="8",
        )
        with Replicas(env, Path(tmp), count=replicas, webhook=True) as running:
            running.wait_healthy()
            with Balancer([r.webhook for r in running]) as balancer:
                tg.webhook_target = f"{balancer.url}/hook"
                users = range(10_000, 10_000 + pictures)
                start = time.monotonic()
                for user in users:
                    tg.send_message(chat_id=user, user_id=user, text=f"/image cat {user}")
                deadline = start + 120
                while len(delivered := [c for c in tg.calls_of("sendPhoto") if c.ok]) < pictures:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"only {len(delivered)} of {pictures} pictures arrived")
                    time.sleep(0.02)
                last = max(c.finished_at or c.at for c in delivered)
            running.stop()
        refused = sum(1 for c in tg.calls if c.status == 429)
    return len(delivered) / (last - start), refused


async def pacing(url: str, bookings: int) -> tuple[float, float, float]:
    """Return the median and p90 ms of one booking, and bookings/s of 3 stores at once."""
    stores = [await PostgresStore.open(url, clock=now) for _ in range(3)]
    try:
        times = []
        for _ in range(bookings):
            begin = time.perf_counter()
            await stores[0].pace("bench", per_second=1e6, burst=1_000_000, weight=1)
            times.append(time.perf_counter() - begin)

        async def book(store: PostgresStore) -> None:
            for _ in range(bookings // 3):
                await store.pace("bench", per_second=1e6, burst=1_000_000, weight=1)

        begin = time.perf_counter()
        await asyncio.gather(*(book(store) for store in stores))
        rate = (bookings // 3) * 3 / (time.perf_counter() - begin)
    finally:
        for store in stores:
            await store.close()
    return (
        statistics.median(times) * 1000,
        statistics.quantiles(times, n=10)[-1] * 1000,
        rate,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pictures", type=int, default=150)
    parser.add_argument("--bookings", type=int, default=3000)
    args = parser.parse_args()
    server = PostgresServer()
    server.start(durable=True)
    try:
        print(f"{os.cpu_count()} cores; PostgreSQL on 127.0.0.1 with its defaults")
        median, p90, rate = asyncio.run(pacing(server.create_database(), args.bookings))
        print(
            f"shared pacing: one booking {median:.2f} ms median, {p90:.2f} ms p90;"
            f" 3 stores at once on one bucket: {rate:.0f} bookings/s"
        )
        print(f"{args.pictures} users at once, instant images backend, Telegram limits on:")
        for count in (1, 3):
            per_second, refused = delivery(server, replicas=count, pictures=args.pictures)
            print(f"  {count} replica(s): {per_second:5.1f} pictures/s, {refused} answered 429")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
