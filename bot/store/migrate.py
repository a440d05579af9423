"""Copy a SQLite store (``DATA_DIR``) into an empty PostgreSQL store (``STORE_URL``).

`copy_sqlite_to_postgres` brings the SQLite database up to its current schema (opening it as the
bot would), migrates the PostgreSQL schema, then copies every table and the kept originals in ONE
PostgreSQL transaction: a failure half-way leaves the target as empty as it was, and the copy
can simply be run again. A target that already holds data is refused (`StoreError`), so running
the command twice, or against the database of a live deployment, changes nothing. The SQLite
database is read, never changed beyond the bot's own migrations.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bot.originals import Originals
from bot.store.base import Clock, StoreError
from bot.store.postgres import Connection, PostgresStore, insert_originals
from bot.store.sqlite import DB_FILENAME, SqliteStore


def _day(value: Any) -> date:
    return date.fromisoformat(str(value))


def _moment(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), tz=UTC)


def _flag(value: Any) -> bool:
    return bool(value)


def _same(value: Any) -> Any:
    return value


# table -> columns with the conversion from SQLite's value to PostgreSQL's.
_TABLES: tuple[tuple[str, tuple[tuple[str, Callable[[Any], Any]], ...]], ...] = (
    ("usage", (("scope", _same), ("scope_id", _same), ("day", _day), ("used", _same))),
    (
        "reservations",
        (
            ("id", _same),
            ("user_id", _same),
            ("chat_id", _same),
            ("day", _day),
            ("n", _same),
            ("paid", _same),
            ("created_at", _moment),
            ("settled", _flag),
        ),
    ),
    (
        "request_stats",
        (
            ("day", _day),
            ("user_id", _same),
            ("chat_id", _same),
            ("outcome", _same),
            ("requests", _same),
            ("images_requested", _same),
            ("images_delivered", _same),
        ),
    ),
    ("settings", (("scope", _same), ("scope_id", _same), ("key", _same), ("value", _same))),
    (
        "results",
        (
            ("seq", _same),
            ("id", _same),
            ("user_id", _same),
            ("chat_id", _same),
            ("prompt", _same),
            ("options", _same),
            ("model", _same),
            ("file_ids", _same),
            ("created_at", _moment),
        ),
    ),
    ("alerts", (("kind", _same), ("last_at", _moment))),
    (
        "spend",
        (
            ("day", _day),
            ("user_id", _same),
            ("model", _same),
            ("requests", _same),
            ("images", _same),
            ("cost", _same),
        ),
    ),
    (
        "budget_holds",
        (
            ("id", _same),
            ("day", _day),
            ("amount", _same),
            ("created_at", _moment),
            ("settled", _flag),
        ),
    ),
    ("budget_days", (("day", _day), ("spent", _same))),
    ("credits", (("user_id", _same), ("balance", _same))),
    (
        "payments",
        (
            ("charge_id", _same),
            ("user_id", _same),
            ("pictures", _same),
            ("stars", _same),
            ("payload", _same),
            ("created_at", _moment),
            ("refunded_at", _moment),
        ),
    ),
)
# Tables whose rows say the target is in use ("meta" only says it was opened).
_DATA_TABLES = (*(name for name, _ in _TABLES), "original_sets")
_SEQUENCES = (("reservations", "id"), ("results", "seq"), ("budget_holds", "id"))


@dataclass(frozen=True)
class CopyReport:
    """How many rows of each table, and how many results' originals, were copied."""

    rows: dict[str, int]
    originals: int


async def copy_sqlite_to_postgres(
    *, data_dir: Path, url: str, clock: Clock, originals_max_bytes: int
) -> CopyReport:
    """Copy the SQLite store in `data_dir` into the empty PostgreSQL store at `url`."""
    path = Path(data_dir) / DB_FILENAME
    if not path.is_file():
        raise StoreError(
            f"There is no SQLite database at {path} to copy. Set DATA_DIR to the directory "
            f"that holds {DB_FILENAME}."
        )
    sqlite_store = await SqliteStore.open(data_dir, clock=clock)  # brings its schema up to date
    await sqlite_store.close()
    target = await PostgresStore.open(url, clock=clock, originals_max_bytes=originals_max_bytes)
    try:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            async with target.transaction() as conn:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("migrate-store",)
                )
                await _refuse_non_empty(conn, target)
                rows = {
                    name: await _copy_table(conn, source, name, columns)
                    for name, columns in _TABLES
                }
                for table, column in _SEQUENCES:
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                        f" COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
                    )
                kept = await _copy_originals(conn, Path(data_dir) / "originals")
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise StoreError(f"Cannot read the SQLite database {path} ({exc}).") from exc
    finally:
        await target.close()
    return CopyReport(rows=rows, originals=kept)


async def _refuse_non_empty(conn: Connection, target: PostgresStore) -> None:
    for table in _DATA_TABLES:
        cursor = await conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
        row = await cursor.fetchone()
        if row is not None and row[0]:
            raise StoreError(
                f"The PostgreSQL database {target.url} already holds data (table {table} has "
                "rows). migrate-store copies only into an empty database, so nothing was "
                "changed; point STORE_URL at a new database, or keep using this one."
            )


async def _copy_table(
    conn: Connection,
    source: sqlite3.Connection,
    table: str,
    columns: tuple[tuple[str, Callable[[Any], Any]], ...],
) -> int:
    names = ", ".join(name for name, _ in columns)
    count = 0
    cursor = conn.cursor()
    async with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in source.execute(f"SELECT {names} FROM {table}"):
            await copy.write_row(
                [convert(value) for (_, convert), value in zip(columns, row, strict=True)]
            )
            count += 1
    return count


def _result_folders(root: Path) -> list[str]:
    """Return the names of the result folders under `root`, oldest first."""
    if not root.is_dir():
        return []
    aged = sorted(
        (folder.stat().st_mtime_ns, folder.name)
        for folder in root.iterdir()
        if folder.is_dir() and not folder.name.startswith(".")
    )
    return [name for _, name in aged]


async def _copy_originals(conn: Connection, root: Path) -> int:
    """Copy the kept originals on disk, oldest first (so pruning removes the same ones)."""
    disk = Originals(root)
    kept = 0
    for result_id in await asyncio.to_thread(_result_folders, root):
        files = await disk.load(result_id)
        if not files:
            continue
        await insert_originals(conn, result_id, files)
        kept += 1
    return kept
