"""Persistent state behind one interface: `Store` (`base`), implemented by `SqliteStore` and
`PostgresStore`; `open_store` picks one from ``STORE_URL``."""

from pathlib import Path

from bot.originals import DEFAULT_MAX_BYTES
from bot.store.base import (
    FINISHED_STATES,
    JOB_STATES,
    RESERVATION_TTL,
    RESULTS_PER_USER,
    SETTING_SCOPES,
    UNFINISHED_STATES,
    BudgetHold,
    Clock,
    JobRecord,
    KeptOriginals,
    Payment,
    PaymentError,
    Reservation,
    ResultRecord,
    Spend,
    SpendTotals,
    Stats,
    Store,
    StoreError,
    Usage,
)
from bot.store.sqlite import DB_FILENAME, MIGRATIONS, SqliteStore


async def open_store(
    url: str, *, data_dir: Path, clock: Clock, originals_max_bytes: int = DEFAULT_MAX_BYTES
) -> Store:
    """Open PostgreSQL at `url` (``STORE_URL``), or SQLite in `data_dir` when `url` is empty."""
    if not url:
        return await SqliteStore.open(
            data_dir, clock=clock, originals_max_bytes=originals_max_bytes
        )
    # Imported here: a bot on SQLite never loads the PostgreSQL driver.
    from bot.store.postgres import PostgresStore

    return await PostgresStore.open(url, clock=clock, originals_max_bytes=originals_max_bytes)


__all__ = [
    "DB_FILENAME",
    "FINISHED_STATES",
    "JOB_STATES",
    "MIGRATIONS",
    "RESERVATION_TTL",
    "RESULTS_PER_USER",
    "SETTING_SCOPES",
    "UNFINISHED_STATES",
    "BudgetHold",
    "Clock",
    "JobRecord",
    "KeptOriginals",
    "Payment",
    "PaymentError",
    "Reservation",
    "ResultRecord",
    "Spend",
    "SpendTotals",
    "SqliteStore",
    "Stats",
    "Store",
    "StoreError",
    "Usage",
    "open_store",
]
