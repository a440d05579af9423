"""Persistent state behind one interface: `Store` (`base`), implemented by `SqliteStore`."""

from bot.store.base import (
    RESERVATION_TTL,
    RESULTS_PER_USER,
    SETTING_SCOPES,
    BudgetHold,
    Clock,
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

__all__ = [
    "DB_FILENAME",
    "MIGRATIONS",
    "RESERVATION_TTL",
    "RESULTS_PER_USER",
    "SETTING_SCOPES",
    "BudgetHold",
    "Clock",
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
]
