"""Persistent state: daily quota counters, statistics, settings, results and alert throttling.

The bot talks to one small interface, `Store`; `SqliteStore` implements it with one SQLite
database, ``bot.sqlite3`` in ``DATA_DIR``. Another backend only has to implement `Store`.

SQLite details:

* Every call runs on one dedicated worker thread that owns the only connection, so the event
  loop never blocks on disk and all writes are serialized; that serialization is what makes a
  quota reservation exact when many requests of one user arrive at the same moment.
* WAL journal with ``synchronous=NORMAL``: once a call has returned, a crash of the process
  (even ``kill -9``) loses nothing of it; only a power loss or OS crash could lose the last
  commits. FULL would add an fsync (~5 ms here) to each of the five commits of a request.
* ``PRAGMA user_version`` holds the schema version; `MIGRATIONS` are applied in order at open.
* A damaged, foreign or unwritable database raises `StoreError` with a message naming the path
  and what to do, never a raw sqlite traceback.

Quota reservations: `reserve` books images before the backend is called and `settle` turns the
delivered ones into usage and refunds the rest. A reservation that is never settled (the process
died mid-request) stops counting after `RESERVATION_TTL` (one hour), so a crash cannot block a
user for the rest of the day. Only chats with a negative id (Telegram groups, supergroups and
channels) are counted against the chat limit; pass ``chat_id=None`` or the private chat's id
otherwise.

Exception family::

    StoreError               the database cannot be opened, read or written
    bot.quota.QuotaExceeded  raised by `reserve` when a daily limit would be exceeded
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

from bot import quota

logger = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], datetime]

DB_FILENAME = "bot.sqlite3"
RESERVATION_TTL = timedelta(hours=1)
RESULTS_PER_USER = 50
SETTINGS_CACHE_SIZE = 10_000
SETTING_SCOPES = ("user", "chat")
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
)


class StoreError(Exception):
    """The database cannot be opened, read or written; the message says what to do."""


@dataclass(frozen=True)
class Reservation:
    """Images booked against today's quota, to be settled once the request is over."""

    id: int
    user_id: int
    chat_id: int | None
    n: int
    day: date


@dataclass(frozen=True)
class Usage:
    """A user's quota today; `used_today` includes images reserved by requests in flight."""

    used_today: int
    limit: int
    remaining: int | None
    resets_at: datetime
    total_all_time: int


@dataclass(frozen=True)
class Stats:
    """Request and image totals for today (UTC) and all time, for admins."""

    day: date
    images_today: int
    requests_today: int
    failures_today: dict[str, int]
    images_all_time: int
    requests_all_time: int
    failures_all_time: dict[str, int]
    top_users_today: list[tuple[int, int]]
    top_users_all_time: list[tuple[int, int]]
    distinct_users: int


@dataclass(frozen=True)
class ResultRecord:
    """One generated result kept for buttons and /history."""

    id: str
    user_id: int
    chat_id: int | None
    prompt: str
    options: str
    model: str
    file_ids: tuple[str, ...]
    created_at: datetime


class Store(Protocol):
    """The persistent state the bot needs; every method is safe to await from the event loop."""

    async def close(self) -> None: ...

    async def reserve(
        self,
        *,
        user_id: int,
        chat_id: int | None,
        n: int,
        user_limit: int,
        chat_limit: int,
        exempt: bool,
    ) -> Reservation: ...

    async def settle(self, reservation: Reservation, *, delivered: int) -> None: ...

    async def usage(self, *, user_id: int, user_limit: int) -> Usage: ...

    async def record_request(
        self,
        *,
        user_id: int,
        chat_id: int | None,
        images_requested: int,
        images_delivered: int,
        outcome: str,
    ) -> None: ...

    async def stats(self, *, top: int = 5) -> Stats: ...

    async def get_settings(self, *, scope: str, scope_id: int) -> dict[str, str]: ...

    async def set_setting(
        self, *, scope: str, scope_id: int, key: str, value: str | None
    ) -> None: ...

    async def save_result(
        self,
        *,
        user_id: int,
        chat_id: int | None,
        prompt: str,
        options: str,
        model: str,
        file_ids: list[str] | None = None,
    ) -> str: ...

    async def set_result_files(self, *, result_id: str, file_ids: list[str]) -> None: ...

    async def get_result(self, *, result_id: str) -> ResultRecord | None: ...

    async def history(
        self, *, user_id: int, limit: int = 10, chat_id: int | None = None
    ) -> list[ResultRecord]: ...

    async def should_alert(self, *, kind: str, every: timedelta) -> bool: ...


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


def _is_group(chat_id: int | None) -> bool:
    return chat_id is not None and chat_id < 0


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _from_ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def _check_scope(scope: str) -> None:
    if scope not in SETTING_SCOPES:
        raise ValueError(f"scope must be one of {SETTING_SCOPES}, not {scope!r}")


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
        self, *, path: Path, clock: Clock, executor: ThreadPoolExecutor, conn: sqlite3.Connection
    ) -> None:
        self._path = path
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

    @classmethod
    async def open(cls, data_dir: Path, *, clock: Clock) -> SqliteStore:
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
        return cls(path=path, clock=clock, executor=executor, conn=conn)

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
    ) -> Reservation:
        """Book `n` images against today's limits, or raise QuotaExceeded changing nothing."""
        if n < 1:
            raise ValueError("a reservation needs at least one image")
        now = self._clock()
        day = quota.utc_day(now)
        since = _ts(now - RESERVATION_TTL)

        def run(conn: sqlite3.Connection) -> Reservation:
            with _transaction(conn):
                if not exempt:
                    checks = [("user", user_id, user_limit)]
                    if chat_id is not None and _is_group(chat_id) and chat_limit > 0:
                        checks.append(("chat", chat_id, chat_limit))
                    for scope, scope_id, limit in checks:
                        if limit <= 0:
                            continue
                        used = _used(conn, scope=scope, scope_id=scope_id, day=day, since=since)
                        if not quota.check(limit=limit, used=used, requested=n):
                            raise quota.QuotaExceeded(
                                scope=scope,
                                limit=limit,
                                used=used,
                                remaining=quota.remaining(limit=limit, used=used) or 0,
                                resets_at=quota.next_reset(now),
                            )
                cursor = conn.execute(
                    "INSERT INTO reservations (user_id, chat_id, day, n, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (user_id, chat_id, day.isoformat(), n, _ts(now)),
                )
                rid = cursor.lastrowid
            assert rid is not None
            return Reservation(id=rid, user_id=user_id, chat_id=chat_id, n=n, day=day)

        return await self._run(run)

    async def settle(self, reservation: Reservation, *, delivered: int) -> None:
        """Count `delivered` images (clamped to 0..n) as used and refund the rest; idempotent."""
        count = max(0, min(delivered, reservation.n))
        day = reservation.day.isoformat()

        def run(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                cursor = conn.execute(
                    "UPDATE reservations SET settled = 1 WHERE id = ? AND settled = 0",
                    (reservation.id,),
                )
                if cursor.rowcount != 1 or count == 0:
                    return
                scopes = [("user", reservation.user_id)]
                if reservation.chat_id is not None and _is_group(reservation.chat_id):
                    scopes.append(("chat", reservation.chat_id))
                for scope, scope_id in scopes:
                    conn.execute(
                        "INSERT INTO usage (scope, scope_id, day, used) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (scope, scope_id, day) DO UPDATE SET used = used + ?",
                        (scope, scope_id, day, count, count),
                    )

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

    # --- settings ----------------------------------------------------------------------------

    async def get_settings(self, *, scope: str, scope_id: int) -> dict[str, str]:
        """Return the saved settings of a user or chat as key -> value."""
        _check_scope(scope)
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
        _check_scope(scope)

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
            row = conn.execute(f"{_RESULT_SELECT} WHERE id = ?", (result_id,)).fetchone()
            return None if row is None else _result(row)

        return await self._run(run)

    async def history(
        self, *, user_id: int, limit: int = 10, chat_id: int | None = None
    ) -> list[ResultRecord]:
        """Return the user's newest results, newest first (only those made in `chat_id` if set)."""

        def run(conn: sqlite3.Connection) -> list[ResultRecord]:
            if chat_id is None:
                rows = conn.execute(
                    f"{_RESULT_SELECT} WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
                    (user_id, max(0, limit)),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"{_RESULT_SELECT} WHERE user_id = ? AND chat_id = ? ORDER BY seq DESC LIMIT ?",
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


_RESULT_SELECT = (
    "SELECT id, user_id, chat_id, prompt, options, model, file_ids, created_at FROM results"
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


def _used(conn: sqlite3.Connection, *, scope: str, scope_id: int, day: date, since: float) -> int:
    """Return images used plus reserved (by live reservations) on `day` for a user or chat."""
    used = conn.execute(
        "SELECT used FROM usage WHERE scope = ? AND scope_id = ? AND day = ?",
        (scope, scope_id, day.isoformat()),
    ).fetchone()
    column = "user_id" if scope == "user" else "chat_id"
    reserved = conn.execute(
        f"SELECT COALESCE(SUM(n), 0) FROM reservations WHERE {column} = ? AND day = ?"
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
