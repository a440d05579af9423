"""`python -m bot migrate-store`: an SQLite store copied into an empty PostgreSQL one answers the
same through the Store interface; a non-empty target is refused and left unchanged."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bot import migrate_store
from bot.store import SqliteStore, Store
from bot.store.postgres import PostgresStore
from tests.pg import PASSWORD
from tests.test_subprocess import ROOT

# The command runs in a subprocess on the real clock (opening SQLite prunes old reservations).
NOW = datetime.now(UTC)


def clock() -> datetime:
    return NOW


async def fill(store: Store) -> str:
    """Put a bit of everything in a store; return the id of a kept result."""
    done = await store.reserve(
        user_id=1, chat_id=-100, n=2, user_limit=5, chat_limit=9, exempt=False
    )
    await store.settle(done, delivered=2)
    await store.reserve(user_id=1, chat_id=None, n=1, user_limit=5, chat_limit=0, exempt=False)
    await store.record_request(
        user_id=1, chat_id=-100, images_requested=2, images_delivered=2, outcome="ok"
    )
    await store.record_request(
        user_id=2, chat_id=None, images_requested=1, images_delivered=0, outcome="refused"
    )
    await store.set_setting(scope="user", scope_id=1, key="size", value="1024x1024")
    await store.set_setting(scope="chat", scope_id=-100, key="lang", value="de")
    result_id = await store.save_result(
        user_id=1,
        chat_id=-100,
        prompt="red fox",
        options="--hd",
        model="gpt-image-2",
        file_ids=["f1"],
    )
    await store.save_result(
        user_id=1, chat_id=None, prompt="blue fox", options="", model="dall-e-3"
    )
    await store.should_alert(kind="auth", every=timedelta(hours=1))
    await store.add_payment(charge_id="c1", user_id=1, pictures=10, stars=50, payload="p")
    await store.add_payment(charge_id="c2", user_id=2, pictures=5, stars=25, payload="p")
    await store.refund_payment(charge_id="c2")
    paid = await store.reserve(
        user_id=1, chat_id=None, n=1, user_limit=0, chat_limit=0, exempt=False, credits=True
    )
    await store.settle(paid, delivered=1)
    hold = await store.reserve_budget(amount=500, budget=10_000)
    await store.settle_cost(hold, user_id=1, model="gpt-image-2", images=2, cost=321)
    await store.reserve_budget(amount=700, budget=10_000)  # still held
    await store.originals.save(result_id, [("a.png", b"\x89PNG a"), ("b.png", b"\x89PNG b")])
    return result_id


async def view(store: Store, result_id: str) -> dict[str, object]:
    """Return everything the bot can read back from a store."""
    return {
        "usage": await store.usage(user_id=1, user_limit=5),
        "stats": await store.stats(),
        "spend": await store.spend(),
        "credits": (await store.credits(user_id=1), await store.credits(user_id=2)),
        "settings": (
            await store.get_settings(scope="user", scope_id=1),
            await store.get_settings(scope="chat", scope_id=-100),
        ),
        "history": await store.history(user_id=1),
        "result": await store.get_result(result_id=result_id),
        "originals": await store.originals.load(result_id),
    }


def run_command(env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = migrate_store.main([], env=env, clock=clock, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


async def test_copy_answers_the_same_and_refuses_a_second_run(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    sqlite = await SqliteStore.open(data, clock=clock)
    try:
        result_id = await fill(sqlite)
        before = await view(sqlite, result_id)
    finally:
        await sqlite.close()

    # Through the real entry point once.
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "migrate-store"],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT),
            "DATA_DIR": str(data),
            "STORE_URL": pg_url,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "reservations 3" in proc.stdout and "the originals of 1 results" in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr

    pg = await PostgresStore.open(pg_url, clock=clock)
    try:
        assert await view(pg, result_id) == before
        # The sequences continue after the copied ids; the held budget and alert came along.
        fresh = await pg.reserve(
            user_id=9, chat_id=None, n=1, user_limit=0, chat_limit=0, exempt=False
        )
        assert fresh.id > 3
        assert not await pg.should_alert(kind="auth", every=timedelta(hours=1))
        assert (await pg.spend()).budget_held == 700
    finally:
        await pg.close()

    with psycopg.connect(pg_url) as conn:
        rows_before = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()
    status, out, err = await asyncio.to_thread(
        run_command, {"DATA_DIR": str(data), "STORE_URL": pg_url}
    )
    assert status == 2 and out == ""
    assert "already holds data" in err and "nothing was changed" in err
    assert PASSWORD not in err
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reservations").fetchone() == rows_before


def test_missing_database_or_store_url_is_one_clear_message(tmp_path: Path, pg_url: str) -> None:
    status, _, err = run_command({"DATA_DIR": str(tmp_path / "none"), "STORE_URL": pg_url})
    assert status == 2
    assert "There is no SQLite database at" in err and "bot.sqlite3" in err
    assert not (tmp_path / "none").exists()  # nothing created
    status, _, err = run_command({"DATA_DIR": str(tmp_path)})
    assert status == 2 and "STORE_URL is empty" in err
    status, _, err = run_command({"STORE_URL": "mysql://u:Secret-pw-1@h/db"})
    assert status == 2 and "STORE_URL" in err and "Secret-pw-1" not in err
