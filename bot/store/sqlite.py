"""`SqliteStore`: the `Store` (see `bot.store.base`) on one SQLite database, ``bot.sqlite3``.

* Every call runs on one dedicated worker thread that owns the only connection, so the event
  loop never blocks on disk and all writes are serialized; that serialization is what makes a
  quota reservation exact when many requests of one user arrive at the same moment.
* WAL journal with ``synchronous=NORMAL``: once a call has returned, a crash of the process
  (even ``kill -9``) loses nothing of it; only a power loss or OS crash could lose the last
  commits. FULL would add an fsync (~5 ms here) to each of the five commits of a request.
* ``PRAGMA user_version`` holds the schema version; `MIGRATIONS` are applied in order at open.
* A damaged, foreign or unwritable database raises `StoreError` with a message naming the path
  and what to do, never a raw sqlite traceback.
* The kept originals (`originals`) stay on disk beside the database, in ``originals/``
  (`bot.originals.Originals`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from bot import pricing, quota
from bot.originals import DEFAULT_MAX_BYTES, Originals
from bot.store.base import (
    FINISHED_STATES,
    JOB_SELECT,
    PAYMENT_SELECT,
    RESERVATION_TTL,
    RESULT_SELECT,
    RESULTS_PER_USER,
    UNFINISHED_STATES,
    BudgetHold,
    Clock,
    JobRecord,
    Payment,
    PaymentError,
    Reservation,
    ResultRecord,
    Spend,
    SpendTotals,
    Stats,
    StoreError,
    Usage,
    check_scope,
    is_group,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DB_FILENAME = "bot.sqlite3"
SETTINGS_CACHE_SIZE = 10_000
_PRUNE_AFTER = timedelta(days=2)
_ID_ATTEMPTS = 8

# Each migration is a list of statements run in one transaction together with the version bump.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE usage (
            scope TEXT NOT NULL, scope_id INTEGER NOT NULL, day TEXT NOT NULL,
            used INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, scope_id, day))""",
        """CREATE TABLE reservations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL, chat_id INTEGER, day TEXT NOT NULL, n INTEGER NOT NULL,
            created_at REAL NOT NULL, settled INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX reservations_user ON reservations (user_id, day, settled)",
        "CREATE INDEX reservations_chat ON reservations (chat_id, day, settled)",
        """CREATE TABLE request_stats (
            day TEXT NOT NULL, user_id INTEGER NOT NULL, chat_id INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            requests INTEGER NOT NULL DEFAULT 0,
            images_requested INTEGER NOT NULL DEFAULT 0,
            images_delivered INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, user_id, chat_id, outcome))""",
        """CREATE TABLE settings (
            scope TEXT NOT NULL, scope_id INTEGER NOT NULL, key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (scope, scope_id, key))""",
        """CREATE TABLE results (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            user_id INTEGER NOT NULL, chat_id INTEGER,
            prompt TEXT NOT NULL, options TEXT NOT NULL, model TEXT NOT NULL,
            file_ids TEXT NOT NULL, created_at REAL NOT NULL)""",
        "CREATE INDEX results_user ON results (user_id, seq)",
        "CREATE TABLE alerts (kind TEXT PRIMARY KEY, last_at REAL NOT NULL)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    (
        # Money: credits paid per reservation, costs per request, the daily budget, payments.
        "ALTER TABLE reservations ADD COLUMN paid INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE spend (
            day TEXT NOT NULL, user_id INTEGER NOT NULL, model TEXT NOT NULL,
            requests INTEGER NOT NULL DEFAULT 0, images INTEGER NOT NULL DEFAULT 0,
            cost INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, user_id, model))""",
        """CREATE TABLE budget_holds (
            id INTEGER PRIMARY KEY AUTOINCREMENT, day TEXT NOT NULL, amount INTEGER NOT NULL,
            created_at REAL NOT NULL, settled INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX budget_holds_day ON budget_holds (day, settled)",
        "CREATE TABLE budget_days (day TEXT PRIMARY KEY, spent INTEGER NOT NULL DEFAULT 0)",
        "CREATE TABLE credits (user_id INTEGER PRIMARY KEY, balance INTEGER NOT NULL DEFAULT 0)",
        """CREATE TABLE payments (
            charge_id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, pictures INTEGER NOT NULL,
            stars INTEGER NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL,
            refunded_at REAL)""",
    ),
    (
        # Durable jobs (issue #10): every admitted request, and the webhook updates already seen.
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL,
            user_id INTEGER NOT NULL, chat_id INTEGER NOT NULL, chat_type TEXT NOT NULL,
            thread_id INTEGER, message_id INTEGER NOT NULL, lang TEXT NOT NULL,
            request TEXT NOT NULL, reservation_id INTEGER, budget_hold_id INTEGER,
            state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
        "CREATE INDEX jobs_state ON jobs (owner, state, id)",
        "CREATE TABLE seen_updates (update_id INTEGER PRIMARY KEY, seen_at REAL NOT NULL)",
        "CREATE INDEX seen_updates_at ON seen_updates (seen_at)",
    ),
)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _from_ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def _connect(path: Path, now: datetime) -> sqlite3.Connection:
    """Open, configure, migrate and check the database at `path` (runs on the worker thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"The database {path} could not be switched to WAL mode ({mode}).")
        conn.execute("PRAGMA synchronous = NORMAL")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        _migrate(conn, path)
        with _transaction(conn):
            # Also proves the database is writable before the bot starts answering.
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?)",
                (now.isoformat(),),
            )
            conn.execute(
                "DELETE FROM reservations WHERE created_at < ?", (_ts(now - _PRUNE_AFTER),)
            )
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise StoreError(
            f"The database {path} has schema version {version}, newer than this bot knows "
            f"({len(MIGRATIONS)}). Upgrade the bot or point DATA_DIR at another directory."
        )
    for number in range(version, len(MIGRATIONS)):
        with _transaction(conn):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        logger.info("database %s migrated to schema version %d", path, number + 1)


def _open_error(path: Path, exc: BaseException) -> StoreError:
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return StoreError(
            f"The database {path} is damaged or is not an SQLite database ({exc}). "
            "Restore it from a backup, or move it (and its -wal/-shm files) away to start "
            "with an empty one."
        )
    return StoreError(
        f"Cannot open or write the database {path} ({exc}). Check that DATA_DIR "
        f"({path.parent}) is a directory the bot can write to, and that the disk is not full."
    )


class SqliteStore:
    """`Store` backed by one SQLite database, used from one dedicated worker thread."""

    def __init__(
        self,
        *,
        path: Path,
        clock: Clock,
        executor: ThreadPoolExecutor,
        conn: sqlite3.Connection,
        originals: Originals,
    ) -> None:
        self._path = path
        self._originals = originals
        self._clock = clock
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn
        # Settings are read on every command and written rarely: keep recent ones in memory.
        # This store is their only writer, so a write just drops the cached copy.
        self._settings: OrderedDict[tuple[str, int], dict[str, str]] = OrderedDict()

    def __repr__(self) -> str:
        return f"SqliteStore(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        """Return the path of the database file."""
        return self._path

    @property
    def originals(self) -> Originals:
        """Return the kept originals, on disk in ``originals/`` beside the database."""
        return self._originals

    @classmethod
    async def open(
        cls, data_dir: Path, *, clock: Clock, originals_max_bytes: int = DEFAULT_MAX_BYTES
    ) -> SqliteStore:
        """Create `data_dir` if needed, open and migrate its database, and check it."""
        path = Path(data_dir) / DB_FILENAME
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, path, clock())
        except StoreError:
            executor.shutdown(wait=False)
            raise
        except (sqlite3.Error, OSError) as exc:
            executor.shutdown(wait=False)
            raise _open_error(path, exc) from exc
        originals = Originals(Path(data_dir) / "originals", max_bytes=originals_max_bytes)
        return cls(path=path, clock=clock, executor=executor, conn=conn, originals=originals)

    async def close(self) -> None:
        """Close the database and stop the worker thread; further calls raise StoreError."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, conn.close)
        finally:
            self._executor.shutdown(wait=False)

    async def ping(self) -> None:
        """Answer a trivial query, or raise StoreError (the health check)."""
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"The database {self._path} is closed.")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, conn)
        except sqlite3.Error as exc:
            raise StoreError(
                f"The database {self._path} failed ({exc}). Check free disk space and that "
                "the file is writable; restore it from a backup if it is damaged."
            ) from exc

    # --- quota -------------------------------------------------------------------------------

    async def reserve(
        self,
        *,
        user_id: int,
        chat_id: int | None,
        n: int,
        user_limit: int,
        chat_limit: int,
        exempt: bool,
        credits: bool = False,
    ) -> Reservation:
        """Book `n` images against today's limits, or raise QuotaExceeded changing nothing.

        With `credits` (Telegram Stars are on) what the user's free allowance (`user_limit`; none
        when it is 0) does not cover is paid from their credits, or CreditsNeeded is raised.
        """
        if n < 1:
            raise ValueError("a reservation needs at least one image")
        now = self._clock()
        day = quota.utc_day(now)
        since = _ts(now - RESERVATION_TTL)

        def run(conn: sqlite3.Connection) -> Reservation:
            with _transaction(conn):
                group = is_group(chat_id)
                paid = quota.admit(
                    n=n,
                    now=now,
                    user_limit=user_limit,
                    chat_limit=chat_limit,
                    group=group,
                    exempt=exempt,
                    credits=credits,
                    user_used=_used(conn, scope="user", scope_id=user_id, day=day, since=since),
                    chat_used=(
                        _used(conn, scope="chat", scope_id=chat_id, day=day, since=since)
                        if group and chat_id is not None
                        else 0
                    ),
                    credits_left=_credits(conn, user_id=user_id, since=since) if credits else 0,
                )
                cursor = conn.execute(
                    "INSERT INTO reservations (user_id, chat_id, day, n, created_at, paid)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (user_id, chat_id, day.isoformat(), n, _ts(now), paid),
                )
                rid = cursor.lastrowid
            assert rid is not None
            return Reservation(id=rid, user_id=user_id, chat_id=chat_id, n=n, day=day, paid=paid)

        return await self._run(run)

    async def settle(self, reservation: Reservation, *, delivered: int) -> None:
        """Count `delivered` images (clamped to 0..n) as used and refund the rest; idempotent."""

        def run(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                _settle(conn, reservation, delivered=delivered)

        await self._run(run)

    async def usage(self, *, user_id: int, user_limit: int) -> Usage:
        """Return what the user has used today (including requests in flight) and has left."""
        now = self._clock()
        day = quota.utc_day(now)
        since = _ts(now - RESERVATION_TTL)

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            used = _used(conn, scope="user", scope_id=user_id, day=day, since=since)
            total = conn.execute(
                "SELECT COALESCE(SUM(used), 0) FROM usage WHERE scope = 'user' AND scope_id = ?",
                (user_id,),
            ).fetchone()[0]
            return used, int(total)

        used, total = await self._run(run)
        return Usage(
            used_today=used,
            limit=user_limit,
            remaining=quota.remaining(limit=user_limit, used=used),
            resets_at=quota.next_reset(now),
            total_all_time=total,
        )

    # --- statistics --------------------------------------------------------------------------

    async def record_request(
        self,
        *,
        user_id: int,
        chat_id: int | None,
        images_requested: int,
        images_delivered: int,
        outcome: str,
    ) -> None:
        """Add one finished request ("ok" or an error kind) to the statistics."""
        day = quota.utc_day(self._clock()).isoformat()
        row = (day, user_id, chat_id or 0, outcome, images_requested, images_delivered)

        def run(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO request_stats (day, user_id, chat_id, outcome, requests,"
                    " images_requested, images_delivered) VALUES (?, ?, ?, ?, 1, ?, ?)"
                    " ON CONFLICT (day, user_id, chat_id, outcome) DO UPDATE SET"
                    " requests = requests + 1,"
                    " images_requested = images_requested + excluded.images_requested,"
                    " images_delivered = images_delivered + excluded.images_delivered",
                    row,
                )

        await self._run(run)

    async def stats(self, *, top: int = 5) -> Stats:
        """Return today's and all-time totals, failures by kind and the top users."""
        day = quota.utc_day(self._clock())

        def run(conn: sqlite3.Connection) -> Stats:
            today = _totals(conn, day=day)
            ever = _totals(conn, day=None)
            return Stats(
                day=day,
                images_today=today[0],
                requests_today=today[1],
                failures_today=_failures(conn, day=day),
                images_all_time=ever[0],
                requests_all_time=ever[1],
                failures_all_time=_failures(conn, day=None),
                top_users_today=_top_users(conn, day=day, top=top),
                top_users_all_time=_top_users(conn, day=None, top=top),
                distinct_users=int(
                    conn.execute("SELECT COUNT(DISTINCT user_id) FROM request_stats").fetchone()[0]
                ),
            )

        return await self._run(run)

    # --- money: budget, credits, payments, spend ------------------------------------------------

    async def reserve_budget(self, *, amount: pricing.Nanos, budget: pricing.Nanos) -> BudgetHold:
        """Hold `amount` against today's `budget` (0 = none), or raise BudgetExhausted."""
        now = self._clock()
        day = quota.utc_day(now)
        since = _ts(now - RESERVATION_TTL)

        def run(conn: sqlite3.Connection) -> BudgetHold:
            with _transaction(conn):
                if budget > 0:
                    committed = _budget_spent(conn, day=day) + _budget_held(
                        conn, day=day, since=since
                    )
                    if committed + amount > budget:
                        raise pricing.BudgetExhausted(
                            budget=budget,
                            spent=committed,
                            needed=amount,
                            resets_at=quota.next_reset(now),
                        )
                cursor = conn.execute(
                    "INSERT INTO budget_holds (day, amount, created_at) VALUES (?, ?, ?)",
                    (day.isoformat(), amount, _ts(now)),
                )
                hid = cursor.lastrowid
            assert hid is not None
            return BudgetHold(id=hid, day=day, amount=amount)

        return await self._run(run)

    async def settle_cost(
        self,
        hold: BudgetHold | None,
        *,
        user_id: int,
        model: str,
        images: int,
        cost: pricing.Nanos,
    ) -> pricing.Nanos:
        """Store a request's actual cost, release its budget hold; return today's spend."""
        day = quota.utc_day(self._clock()) if hold is None else hold.day

        def run(conn: sqlite3.Connection) -> pricing.Nanos:
            with _transaction(conn):
                counted = True
                if hold is not None:
                    cursor = conn.execute(
                        "UPDATE budget_holds SET settled = 1 WHERE id = ? AND settled = 0",
                        (hold.id,),
                    )
                    counted = cursor.rowcount == 1
                if counted and (cost > 0 or images > 0):
                    conn.execute(
                        "INSERT INTO spend (day, user_id, model, requests, images, cost)"
                        " VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (day, user_id, model) DO UPDATE"
                        " SET requests = requests + 1, images = images + excluded.images,"
                        " cost = cost + excluded.cost",
                        (day.isoformat(), user_id, model, images, cost),
                    )
                if counted and cost > 0:
                    conn.execute(
                        "INSERT INTO budget_days (day, spent) VALUES (?, ?)"
                        " ON CONFLICT (day) DO UPDATE SET spent = spent + excluded.spent",
                        (day.isoformat(), cost),
                    )
                return _budget_spent(conn, day=day)

        return await self._run(run)

    async def credits(self, *, user_id: int) -> int:
        """Return the user's credits (pictures bought), minus those held by requests in flight."""
        since = _ts(self._clock() - RESERVATION_TTL)

        def run(conn: sqlite3.Connection) -> int:
            return max(0, _credits(conn, user_id=user_id, since=since))

        return await self._run(run)

    async def add_payment(
        self, *, charge_id: str, user_id: int, pictures: int, stars: int, payload: str
    ) -> bool:
        """Credit a Stars payment once per charge id; return False when it was already credited."""
        created = _ts(self._clock())

        def run(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO payments"
                    " (charge_id, user_id, pictures, stars, payload, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (charge_id, user_id, pictures, stars, payload, created),
                )
                if cursor.rowcount != 1:
                    return False
                _add_credits(conn, user_id=user_id, amount=pictures)
            return True

        return await self._run(run)

    async def refund_payment(self, *, charge_id: str) -> Payment:
        """Take back the credits a payment bought and mark it refunded, or raise PaymentError."""
        now = self._clock()
        since = _ts(now - RESERVATION_TTL)

        def run(conn: sqlite3.Connection) -> Payment:
            with _transaction(conn):
                row = conn.execute(f"{PAYMENT_SELECT} WHERE charge_id = ?", (charge_id,)).fetchone()
                if row is None:
                    raise PaymentError("unknown", charge_id=charge_id)
                payment = _payment(row)
                if payment.refunded:
                    raise PaymentError("refunded", charge_id=charge_id)
                if _credits(conn, user_id=payment.user_id, since=since) < payment.pictures:
                    raise PaymentError("spent", charge_id=charge_id)
                _add_credits(conn, user_id=payment.user_id, amount=-payment.pictures)
                conn.execute(
                    "UPDATE payments SET refunded_at = ? WHERE charge_id = ?", (_ts(now), charge_id)
                )
            return payment

        return await self._run(run)

    async def undo_refund(self, *, charge_id: str) -> None:
        """Give back the credits of a refund that Telegram refused (idempotent)."""

        def run(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                row = conn.execute(f"{PAYMENT_SELECT} WHERE charge_id = ?", (charge_id,)).fetchone()
                if row is None or not _payment(row).refunded:
                    return
                payment = _payment(row)
                conn.execute(
                    "UPDATE payments SET refunded_at = NULL WHERE charge_id = ?", (charge_id,)
                )
                _add_credits(conn, user_id=payment.user_id, amount=payment.pictures)

        await self._run(run)

    async def spend(self, *, top: int = 5) -> Spend:
        """Return the costs of today, the last 7 days and all time, by model and top users."""
        now = self._clock()
        day = quota.utc_day(now)
        since = _ts(now - RESERVATION_TTL)

        def run(conn: sqlite3.Connection) -> Spend:
            return Spend(
                day=day,
                today=_spend_totals(conn, since=day, top=top),
                week=_spend_totals(conn, since=day - timedelta(days=6), top=top),
                all_time=_spend_totals(conn, since=None, top=top),
                budget_held=_budget_held(conn, day=day, since=since),
            )

        return await self._run(run)

    # --- settings ----------------------------------------------------------------------------

    async def get_settings(self, *, scope: str, scope_id: int) -> dict[str, str]:
        """Return the saved settings of a user or chat as key -> value."""
        check_scope(scope)
        cached = self._settings.get((scope, scope_id))
        if cached is not None:
            self._settings.move_to_end((scope, scope_id))
            return dict(cached)

        def run(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute(
                "SELECT key, value FROM settings WHERE scope = ? AND scope_id = ? ORDER BY key",
                (scope, scope_id),
            ).fetchall()
            return {str(key): str(value) for key, value in rows}

        values = await self._run(run)
        self._settings[(scope, scope_id)] = values
        if len(self._settings) > SETTINGS_CACHE_SIZE:
            self._settings.popitem(last=False)
        return dict(values)

    async def set_setting(self, *, scope: str, scope_id: int, key: str, value: str | None) -> None:
        """Save one setting of a user or chat; None deletes it."""
        check_scope(scope)

        def run(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                if value is None:
                    conn.execute(
                        "DELETE FROM settings WHERE scope = ? AND scope_id = ? AND key = ?",
                        (scope, scope_id, key),
                    )
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO settings (scope, scope_id, key, value)"
                        " VALUES (?, ?, ?, ?)",
                        (scope, scope_id, key, value),
                    )

        try:
            await self._run(run)
        finally:
            self._settings.pop((scope, scope_id), None)

    # --- results and history -----------------------------------------------------------------

    async def save_result(
        self,
        *,
        user_id: int,
        chat_id: int | None,
        prompt: str,
        options: str,
        model: str,
        file_ids: list[str] | None = None,
    ) -> str:
        """Keep a result and return its short url-safe id; keep the user's newest 50 only."""
        created = _ts(self._clock())
        files = json.dumps(list(file_ids or []))

        def run(conn: sqlite3.Connection) -> str:
            with _transaction(conn):
                for _ in range(_ID_ATTEMPTS):
                    result_id = secrets.token_urlsafe(6)
                    cursor = conn.execute(
                        "INSERT OR IGNORE INTO results"
                        " (id, user_id, chat_id, prompt, options, model, file_ids, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (result_id, user_id, chat_id, prompt, options, model, files, created),
                    )
                    if cursor.rowcount == 1:
                        break
                else:
                    raise StoreError("Could not find a free result id; try again.")
                conn.execute(
                    "DELETE FROM results WHERE user_id = ? AND seq NOT IN"
                    " (SELECT seq FROM results WHERE user_id = ? ORDER BY seq DESC LIMIT ?)",
                    (user_id, user_id, RESULTS_PER_USER),
                )
            return result_id

        return await self._run(run)

    async def set_result_files(self, *, result_id: str, file_ids: list[str]) -> None:
        """Attach Telegram file ids to a kept result (no-op when it has expired)."""
        files = json.dumps(list(file_ids))

        def run(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("UPDATE results SET file_ids = ? WHERE id = ?", (files, result_id))

        await self._run(run)

    async def get_result(self, *, result_id: str) -> ResultRecord | None:
        """Return a kept result, or None when it does not exist (any more)."""

        def run(conn: sqlite3.Connection) -> ResultRecord | None:
            row = conn.execute(f"{RESULT_SELECT} WHERE id = ?", (result_id,)).fetchone()
            return None if row is None else _result(row)

        return await self._run(run)

    async def history(
        self, *, user_id: int, limit: int = 10, chat_id: int | None = None
    ) -> list[ResultRecord]:
        """Return the user's newest results, newest first (only those made in `chat_id` if set)."""

        def run(conn: sqlite3.Connection) -> list[ResultRecord]:
            if chat_id is None:
                rows = conn.execute(
                    f"{RESULT_SELECT} WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
                    (user_id, max(0, limit)),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"{RESULT_SELECT} WHERE user_id = ? AND chat_id = ? ORDER BY seq DESC LIMIT ?",
                    (user_id, chat_id, max(0, limit)),
                ).fetchall()
            return [_result(row) for row in rows]

        return await self._run(run)

    # --- admin alert throttling --------------------------------------------------------------

    async def should_alert(self, *, kind: str, every: timedelta) -> bool:
        """Return True (and remember now) when no alert of `kind` was sent within `every`."""
        now = _ts(self._clock())

        def run(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                row = conn.execute("SELECT last_at FROM alerts WHERE kind = ?", (kind,)).fetchone()
                if row is not None and now - float(row[0]) < every.total_seconds():
                    return False
                conn.execute(
                    "INSERT OR REPLACE INTO alerts (kind, last_at) VALUES (?, ?)", (kind, now)
                )
            return True

        return await self._run(run)

    # --- jobs and webhook updates ----------------------------------------------------------------

    async def create_job(
        self,
        *,
        owner: str,
        user_id: int,
        chat_id: int,
        chat_type: str,
        thread_id: int | None,
        message_id: int,
        lang: str,
        request: str,
        reservation: Reservation | None,
        budget: BudgetHold | None,
    ) -> JobRecord:
        """Store a new job in state "queued" (see `Store.create_job`)."""
        now = self._clock()
        row = (
            owner,
            user_id,
            chat_id,
            chat_type,
            thread_id,
            message_id,
            lang,
            request,
            None if reservation is None else reservation.id,
            None if budget is None else budget.id,
            _ts(now),
            _ts(now),
        )

        def run(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cursor = conn.execute(
                    "INSERT INTO jobs (owner, user_id, chat_id, chat_type, thread_id, message_id,"
                    " lang, request, reservation_id, budget_hold_id, state, created_at,"
                    " updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                    row,
                )
                job_id = cursor.lastrowid
            assert job_id is not None
            return job_id

        job_id = await self._run(run)
        return JobRecord(
            id=job_id,
            owner=owner,
            user_id=user_id,
            chat_id=chat_id,
            chat_type=chat_type,
            thread_id=thread_id,
            message_id=message_id,
            lang=lang,
            request=request,
            reservation=reservation,
            budget=budget,
            state="queued",
            created_at=_from_ts(_ts(now)),
            updated_at=_from_ts(_ts(now)),
        )

    async def transition_job(self, job_id: int, *, to: str, from_states: tuple[str, ...]) -> bool:
        """Move an unfinished job between unfinished states (see `Store.transition_job`)."""
        if to not in UNFINISHED_STATES:
            raise ValueError(f"{to!r} is not an unfinished job state")
        allowed = [state for state in from_states if state in UNFINISHED_STATES]
        if not allowed:
            return False
        now = _ts(self._clock())

        def run(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                return _move_job(conn, job_id, to=to, from_states=allowed, now=now)

        return await self._run(run)

    async def finish_job(self, job_id: int, *, state: str, delivered: int) -> bool:
        """End a job and settle its reservation at once (see `Store.finish_job`)."""
        if state not in FINISHED_STATES:
            raise ValueError(f"{state!r} is not a finished job state")
        now = _ts(self._clock())

        def run(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                if not _move_job(conn, job_id, to=state, from_states=UNFINISHED_STATES, now=now):
                    return False
                row = conn.execute(f"{JOB_SELECT} WHERE jobs.id = ?", (job_id,)).fetchone()
                reservation = _job(row).reservation
                if reservation is not None:
                    _settle(conn, reservation, delivered=delivered)
            return True

        return await self._run(run)

    async def unfinished_jobs(self, *, owner: str) -> list[JobRecord]:
        """Return the jobs of `owner` a restart resumes, oldest first."""
        marks = ", ".join("?" * len(UNFINISHED_STATES))

        def run(conn: sqlite3.Connection) -> list[JobRecord]:
            rows = conn.execute(
                f"{JOB_SELECT} WHERE jobs.owner = ? AND jobs.state IN ({marks}) ORDER BY jobs.id",
                (owner, *UNFINISHED_STATES),
            ).fetchall()
            return [_job(row) for row in rows]

        return await self._run(run)

    async def get_job(self, job_id: int) -> JobRecord | None:
        """Return one job, or None when unknown."""

        def run(conn: sqlite3.Connection) -> JobRecord | None:
            row = conn.execute(f"{JOB_SELECT} WHERE jobs.id = ?", (job_id,)).fetchone()
            return None if row is None else _job(row)

        return await self._run(run)

    async def note_update(self, update_id: int) -> bool:
        """Remember an update id; return False when it was seen before."""
        now = _ts(self._clock())

        def run(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO seen_updates (update_id, seen_at) VALUES (?, ?)",
                    (update_id, now),
                )
            return cursor.rowcount == 1

        return await self._run(run)

    async def prune_jobs(self, *, before: datetime) -> int:
        """Forget finished jobs and noted update ids older than `before`."""
        cutoff = _ts(before)
        marks = ", ".join("?" * len(FINISHED_STATES))

        def run(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cursor = conn.execute(
                    f"DELETE FROM jobs WHERE state IN ({marks}) AND updated_at < ?",
                    (*FINISHED_STATES, cutoff),
                )
                conn.execute("DELETE FROM seen_updates WHERE seen_at < ?", (cutoff,))
            return cursor.rowcount

        return await self._run(run)


def _move_job(
    conn: sqlite3.Connection, job_id: int, *, to: str, from_states: Sequence[str], now: float
) -> bool:
    """Set a job's state if it is in one of `from_states` (inside the caller's transaction)."""
    marks = ", ".join("?" * len(from_states))
    cursor = conn.execute(
        f"UPDATE jobs SET state = ?, updated_at = ? WHERE id = ? AND state IN ({marks})",
        (to, now, job_id, *from_states),
    )
    return cursor.rowcount == 1


def _job(row: tuple[object, ...]) -> JobRecord:
    (jid, owner, user_id, chat_id, chat_type, thread_id, message_id, lang, request, state, created,
     updated, rid, r_user, r_chat, r_n, r_day, r_paid, bid, b_day, b_amount) = row  # fmt: skip
    reservation = None
    if rid is not None:
        reservation = Reservation(
            id=int(str(rid)),
            user_id=int(str(r_user)),
            chat_id=None if r_chat is None else int(str(r_chat)),
            n=int(str(r_n)),
            day=date.fromisoformat(str(r_day)),
            paid=int(str(r_paid)),
        )
    budget = None
    if bid is not None:
        budget = BudgetHold(
            id=int(str(bid)), day=date.fromisoformat(str(b_day)), amount=int(str(b_amount))
        )
    return JobRecord(
        id=int(str(jid)),
        owner=str(owner),
        user_id=int(str(user_id)),
        chat_id=int(str(chat_id)),
        chat_type=str(chat_type),
        thread_id=None if thread_id is None else int(str(thread_id)),
        message_id=int(str(message_id)),
        lang=str(lang),
        request=str(request),
        reservation=reservation,
        budget=budget,
        state=str(state),
        created_at=_from_ts(float(str(created))),
        updated_at=_from_ts(float(str(updated))),
    )


def _result(row: tuple[object, ...]) -> ResultRecord:
    rid, user_id, chat_id, prompt, options, model, files, created = row
    return ResultRecord(
        id=str(rid),
        user_id=int(str(user_id)),
        chat_id=None if chat_id is None else int(str(chat_id)),
        prompt=str(prompt),
        options=str(options),
        model=str(model),
        file_ids=tuple(str(f) for f in json.loads(str(files))),
        created_at=_from_ts(float(str(created))),
    )


def _settle(conn: sqlite3.Connection, reservation: Reservation, *, delivered: int) -> None:
    """Settle one reservation inside the caller's transaction (only the first time counts)."""
    count = max(0, min(delivered, reservation.n))
    day = reservation.day.isoformat()
    cursor = conn.execute(
        "UPDATE reservations SET settled = 1 WHERE id = ? AND settled = 0", (reservation.id,)
    )
    if cursor.rowcount != 1 or count == 0:
        return
    # Delivered pictures use the free allowance first, then the credits.
    free = min(count, reservation.n - reservation.paid)
    scopes = [("user", reservation.user_id, free)]
    if reservation.chat_id is not None and is_group(reservation.chat_id):
        scopes.append(("chat", reservation.chat_id, count))
    for scope, scope_id, used in scopes:
        if used <= 0:
            continue
        conn.execute(
            "INSERT INTO usage (scope, scope_id, day, used) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (scope, scope_id, day) DO UPDATE SET used = used + ?",
            (scope, scope_id, day, used, used),
        )
    if count > free:
        conn.execute(
            "UPDATE credits SET balance = balance - ? WHERE user_id = ?",
            (count - free, reservation.user_id),
        )


def _used(conn: sqlite3.Connection, *, scope: str, scope_id: int, day: date, since: float) -> int:
    """Return images used plus reserved (by live reservations) on `day` for a user or chat."""
    used = conn.execute(
        "SELECT used FROM usage WHERE scope = ? AND scope_id = ? AND day = ?",
        (scope, scope_id, day.isoformat()),
    ).fetchone()
    # A user's own limit counts only the free part of reservations; a chat's counts them all.
    column, booked = ("user_id", "n - paid") if scope == "user" else ("chat_id", "n")
    reserved = conn.execute(
        f"SELECT COALESCE(SUM({booked}), 0) FROM reservations WHERE {column} = ? AND day = ?"
        " AND settled = 0 AND created_at >= ?",
        (scope_id, day.isoformat(), since),
    ).fetchone()[0]
    return (0 if used is None else int(used[0])) + int(reserved)


def _where_day(day: date | None) -> tuple[str, tuple[str, ...]]:
    return ("WHERE day = ?", (day.isoformat(),)) if day is not None else ("", ())


def _totals(conn: sqlite3.Connection, *, day: date | None) -> tuple[int, int]:
    where, args = _where_day(day)
    images, requests = conn.execute(
        "SELECT COALESCE(SUM(images_delivered), 0), COALESCE(SUM(requests), 0)"
        f" FROM request_stats {where}",
        args,
    ).fetchone()
    return int(images), int(requests)


def _failures(conn: sqlite3.Connection, *, day: date | None) -> dict[str, int]:
    where, args = _where_day(day)
    where = f"{where} AND" if where else "WHERE"
    rows = conn.execute(
        f"SELECT outcome, SUM(requests) FROM request_stats {where} outcome != 'ok'"
        " GROUP BY outcome ORDER BY SUM(requests) DESC, outcome",
        args,
    ).fetchall()
    return {str(kind): int(count) for kind, count in rows}


def _top_users(conn: sqlite3.Connection, *, day: date | None, top: int) -> list[tuple[int, int]]:
    where, args = _where_day(day)
    rows = conn.execute(
        f"SELECT user_id, SUM(images_delivered) AS images FROM request_stats {where}"
        " GROUP BY user_id HAVING images > 0 ORDER BY images DESC, user_id LIMIT ?",
        (*args, max(0, top)),
    ).fetchall()
    return [(int(user_id), int(images)) for user_id, images in rows]


def _credits(conn: sqlite3.Connection, *, user_id: int, since: float) -> int:
    """Return the user's credits minus those held by live reservations."""
    row = conn.execute("SELECT balance FROM credits WHERE user_id = ?", (user_id,)).fetchone()
    held = conn.execute(
        "SELECT COALESCE(SUM(paid), 0) FROM reservations WHERE user_id = ? AND settled = 0"
        " AND created_at >= ?",
        (user_id, since),
    ).fetchone()[0]
    return (0 if row is None else int(row[0])) - int(held)


def _spend_totals(conn: sqlite3.Connection, *, since: date | None, top: int) -> SpendTotals:
    where, args = ("WHERE day >= ?", (since.isoformat(),)) if since is not None else ("", ())
    cost, images = conn.execute(
        f"SELECT COALESCE(SUM(cost), 0), COALESCE(SUM(images), 0) FROM spend {where}", args
    ).fetchone()
    models = conn.execute(
        f"SELECT model, SUM(cost), SUM(images) FROM spend {where} GROUP BY model"
        " ORDER BY SUM(cost) DESC, model",
        args,
    ).fetchall()
    users = conn.execute(
        f"SELECT user_id, SUM(cost) AS total FROM spend {where} GROUP BY user_id"
        " HAVING total > 0 ORDER BY total DESC, user_id LIMIT ?",
        (*args, max(0, top)),
    ).fetchall()
    return SpendTotals(
        cost=int(cost),
        images=int(images),
        by_model=[(str(m), int(c), int(i)) for m, c, i in models],
        top_users=[(int(u), int(c)) for u, c in users],
    )


def _payment(row: tuple[object, ...]) -> Payment:
    charge_id, user_id, pictures, stars, created, refunded = row
    return Payment(
        charge_id=str(charge_id),
        user_id=int(str(user_id)),
        pictures=int(str(pictures)),
        stars=int(str(stars)),
        created_at=_from_ts(float(str(created))),
        refunded=refunded is not None,
    )


def _add_credits(conn: sqlite3.Connection, *, user_id: int, amount: int) -> None:
    conn.execute(
        "INSERT INTO credits (user_id, balance) VALUES (?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET balance = balance + excluded.balance",
        (user_id, amount),
    )


def _budget_spent(conn: sqlite3.Connection, *, day: date) -> pricing.Nanos:
    row = conn.execute("SELECT spent FROM budget_days WHERE day = ?", (day.isoformat(),)).fetchone()
    return 0 if row is None else int(row[0])


def _budget_held(conn: sqlite3.Connection, *, day: date, since: float) -> pricing.Nanos:
    held = conn.execute(
        "SELECT COALESCE(SUM(amount), 0) FROM budget_holds WHERE day = ? AND settled = 0"
        " AND created_at >= ?",
        (day.isoformat(), since),
    ).fetchone()[0]
    return int(held)
