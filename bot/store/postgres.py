"""`PostgresStore`: the `Store` (see `bot.store.base`) on a PostgreSQL database (``STORE_URL``).

Several bot processes (replicas) may share one database; everything the store promises holds
across them:

* Quotas, credits and the budget are exact under concurrency. Each check-then-book transaction
  first takes a transaction-scoped advisory lock on what it books against (the user, then the
  group chat; the bot-wide budget), then reads the counts in ONE statement (READ COMMITTED gives
  each statement a fresh snapshot, taken after the lock is held, so it sees every booking that
  committed before) and inserts its reservation. Why locks and not SERIALIZABLE: the check reads
  sums over many rows that a concurrent booking only adds to, which SERIALIZABLE would answer
  with serialization failures to retry, 20 at a time in a burst; a lock per user queues them
  instead, and requests of different users never wait for each other. Locks are always taken
  in the same order (user, then chat), so they cannot deadlock. Settling needs no lock: it
  moves a reservation into the usage counters in one transaction, which a concurrent check sees
  either before or after, never half done.
* Settings are not cached in the process (another replica may change them).
* The kept originals of 📄 Original live in the database (`PostgresOriginals`), so a press works
  on any replica.
* Schema migrations run at open under an advisory lock (`bot.store.postgres_schema`).
* The password of the URL never appears in a `StoreError`, a repr or a log line of this module:
  messages show the URL with the password hidden and psycopg's text scrubbed
  (`bot.redaction`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from bot import pricing, quota
from bot.originals import DEFAULT_MAX_BYTES
from bot.redaction import Redactor
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
from bot.store.postgres_schema import NewerSchema, migrate

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

POOL_SIZE = 10
CONNECT_TIMEOUT = 10  # seconds to reach the server
POOL_TIMEOUT = 30.0  # seconds a call may wait for a free connection
ORIGINALS_KEEP = 300
_PRUNE_AFTER = timedelta(days=2)
_ID_ATTEMPTS = 8
_BUDGET_LOCK = "budget"


class _Scrubber:
    """Hide the password of one connection URL in text (the URL shape and the value itself)."""

    def __init__(self, url: str) -> None:
        try:
            password = str(conninfo_to_dict(url).get("password") or "")
        except psycopg.Error:
            password = ""
        self._redact = Redactor([password])
        self._password = password
        self.url = self(url)

    def __call__(self, text: object) -> str:
        text = self._redact(str(text))
        # Redactor leaves short values alone (they would wreck ordinary words); a password
        # is never shown, whatever its length.
        if self._password and self._password in text:
            text = text.replace(self._password, "***")
        return text


async def _lock(conn: Connection, key: str) -> None:
    """Take the transaction-scoped advisory lock named `key` (released at commit)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))


async def _row(conn: Connection, query: Any, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    if row is None:
        raise StoreError("The PostgreSQL database returned no row where one was expected.")
    return row


async def _rows(conn: Connection, query: Any, params: Sequence[Any] = ()) -> list[Any]:
    cursor = await conn.execute(query, params)
    return await cursor.fetchall()


# Today's counts for a reservation, in one statement (one snapshot): the user's images used plus
# the free part of live reservations, the chat's used plus all of its live reservations, and the
# user's credits minus those held by live reservations.
_COUNTS = """
SELECT
  COALESCE((SELECT used FROM usage
            WHERE scope = 'user' AND scope_id = %(user)s AND day = %(day)s), 0)
  + COALESCE((SELECT SUM(n - paid) FROM reservations
              WHERE user_id = %(user)s AND day = %(day)s AND NOT settled
                AND created_at >= %(since)s), 0),
  COALESCE((SELECT used FROM usage
            WHERE scope = 'chat' AND scope_id = %(chat)s AND day = %(day)s), 0)
  + COALESCE((SELECT SUM(n) FROM reservations
              WHERE chat_id = %(chat)s AND day = %(day)s AND NOT settled
                AND created_at >= %(since)s), 0),
  COALESCE((SELECT balance FROM credits WHERE user_id = %(user)s), 0)
  - COALESCE((SELECT SUM(paid) FROM reservations
              WHERE user_id = %(user)s AND NOT settled AND created_at >= %(since)s), 0)
"""


class PostgresStore:
    """`Store` backed by a PostgreSQL database through a pool of async psycopg connections."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Connection],
        clock: Clock,
        scrub: _Scrubber,
        originals_max_bytes: int,
    ) -> None:
        self._pool: AsyncConnectionPool[Connection] | None = pool
        self._clock = clock
        self._scrub = scrub
        self._originals = PostgresOriginals(
            self, keep=ORIGINALS_KEEP, max_bytes=originals_max_bytes
        )

    def __repr__(self) -> str:
        return f"PostgresStore(url={self._scrub.url!r})"

    @property
    def url(self) -> str:
        """Return the database URL with its password hidden (for messages)."""
        return self._scrub.url

    @property
    def originals(self) -> PostgresOriginals:
        """Return the kept originals, stored in the database."""
        return self._originals

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Clock,
        originals_max_bytes: int = DEFAULT_MAX_BYTES,
        pool_size: int = POOL_SIZE,
    ) -> PostgresStore:
        """Connect to `url`, migrate the schema (once across replicas) and open the pool."""
        scrub = _Scrubber(url)
        now = clock()
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"Cannot connect to the PostgreSQL database {scrub.url} ({scrub(exc)}). "
                "Check STORE_URL (host, port, user, password, database) and that the server "
                "is running and accepts connections from this host."
            ) from exc
        try:
            async with conn:
                await migrate(conn)
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('opened_at', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (now.isoformat(),),
                )
                await conn.execute(
                    "DELETE FROM reservations WHERE created_at < %s", (now - _PRUNE_AFTER,)
                )
        except NewerSchema as exc:
            raise StoreError(
                f"The PostgreSQL database {scrub.url} has {exc}. Upgrade the bot or point "
                "STORE_URL at another database."
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(
                f"Cannot prepare the PostgreSQL database {scrub.url} ({scrub(exc)}). Check that "
                "the user of STORE_URL may create tables in that database."
            ) from exc
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            timeout=POOL_TIMEOUT,
            # Autocommit: single statements need no BEGIN/COMMIT round trips; `transaction`
            # opens one where a check and a booking must go together. No `check` on every
            # checkout (a round trip each): a connection broken by a server restart fails one
            # call with StoreError and is replaced by the pool.
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "autocommit": True},
            name="store",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(
                f"Cannot open connections to the PostgreSQL database {scrub.url} ({scrub(exc)})."
            ) from exc
        return cls(pool=pool, clock=clock, scrub=scrub, originals_max_bytes=originals_max_bytes)

    async def close(self) -> None:
        """Close the pool; further calls raise StoreError."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        """Answer a trivial query, or raise StoreError (the health check)."""
        async with self.connection() as conn:
            await conn.execute("SELECT 1")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """Yield a pooled connection in autocommit mode; database errors become StoreError.

        Each statement commits on its own: one round trip for a single read or upsert, with no
        BEGIN and COMMIT around it.
        """
        pool = self._pool
        if pool is None:
            raise StoreError(f"The PostgreSQL store {self._scrub.url} is closed.")
        try:
            async with pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(
                f"The PostgreSQL database {self._scrub.url} failed ({self._scrub(exc)}). "
                "Check that the server is running and reachable."
            ) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """Yield a pooled connection inside a transaction (committed on leaving, else rolled
        back); database errors become StoreError."""
        async with self.connection() as conn, conn.transaction():
            yield conn

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
        """Book `n` images against today's limits, or raise QuotaExceeded changing nothing."""
        if n < 1:
            raise ValueError("a reservation needs at least one image")
        now = self._clock()
        day = quota.utc_day(now)
        group = is_group(chat_id)
        async with self.transaction() as conn:
            if not exempt:
                await _lock(conn, f"quota:user:{user_id}")
                if group and chat_limit > 0:
                    await _lock(conn, f"quota:chat:{chat_id}")
            user_used, chat_used, credits_left = await _row(
                conn,
                _COUNTS,
                {
                    "user": user_id,
                    "chat": chat_id if group else None,
                    "day": day,
                    "since": now - RESERVATION_TTL,
                },
            )
            paid = quota.admit(
                n=n,
                now=now,
                user_limit=user_limit,
                chat_limit=chat_limit,
                group=group,
                exempt=exempt,
                credits=credits,
                user_used=int(user_used),
                chat_used=int(chat_used),
                credits_left=int(credits_left),
            )
            (rid,) = await _row(
                conn,
                "INSERT INTO reservations (user_id, chat_id, day, n, created_at, paid)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (user_id, chat_id, day, n, now, paid),
            )
        return Reservation(id=int(rid), user_id=user_id, chat_id=chat_id, n=n, day=day, paid=paid)

    async def settle(self, reservation: Reservation, *, delivered: int) -> None:
        """Count `delivered` images (clamped to 0..n) as used and refund the rest; idempotent."""
        async with self.transaction() as conn:
            await _settle(conn, reservation, delivered=delivered)

    async def usage(self, *, user_id: int, user_limit: int) -> Usage:
        """Return what the user has used today (including requests in flight) and has left."""
        now = self._clock()
        async with self.connection() as conn:
            used, _, _ = await _row(
                conn,
                _COUNTS,
                {
                    "user": user_id,
                    "chat": None,
                    "day": quota.utc_day(now),
                    "since": now - RESERVATION_TTL,
                },
            )
            (total,) = await _row(
                conn,
                "SELECT COALESCE(SUM(used), 0) FROM usage WHERE scope = 'user' AND scope_id = %s",
                (user_id,),
            )
        return Usage(
            used_today=int(used),
            limit=user_limit,
            remaining=quota.remaining(limit=user_limit, used=int(used)),
            resets_at=quota.next_reset(now),
            total_all_time=int(total),
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
        day = quota.utc_day(self._clock())
        async with self.connection() as conn:
            await conn.execute(
                "INSERT INTO request_stats (day, user_id, chat_id, outcome, requests,"
                " images_requested, images_delivered) VALUES (%s, %s, %s, %s, 1, %s, %s)"
                " ON CONFLICT (day, user_id, chat_id, outcome) DO UPDATE SET"
                " requests = request_stats.requests + 1,"
                " images_requested = request_stats.images_requested + excluded.images_requested,"
                " images_delivered = request_stats.images_delivered + excluded.images_delivered",
                (day, user_id, chat_id or 0, outcome, images_requested, images_delivered),
            )

    async def stats(self, *, top: int = 5) -> Stats:
        """Return today's and all-time totals, failures by kind and the top users."""
        day = quota.utc_day(self._clock())
        async with self.connection() as conn:
            today = await _totals(conn, day=day)
            ever = await _totals(conn, day=None)
            (distinct,) = await _row(conn, "SELECT COUNT(DISTINCT user_id) FROM request_stats")
            return Stats(
                day=day,
                images_today=today[0],
                requests_today=today[1],
                failures_today=await _failures(conn, day=day),
                images_all_time=ever[0],
                requests_all_time=ever[1],
                failures_all_time=await _failures(conn, day=None),
                top_users_today=await _top_users(conn, day=day, top=top),
                top_users_all_time=await _top_users(conn, day=None, top=top),
                distinct_users=int(distinct),
            )

    # --- money: budget, credits, payments, spend ------------------------------------------------

    async def reserve_budget(self, *, amount: pricing.Nanos, budget: pricing.Nanos) -> BudgetHold:
        """Hold `amount` against today's `budget` (0 = none), or raise BudgetExhausted."""
        now = self._clock()
        day = quota.utc_day(now)
        async with self.transaction() as conn:
            if budget > 0:
                await _lock(conn, _BUDGET_LOCK)
                (committed,) = await _row(
                    conn,
                    "SELECT COALESCE((SELECT spent FROM budget_days WHERE day = %(day)s), 0)"
                    " + COALESCE((SELECT SUM(amount) FROM budget_holds WHERE day = %(day)s"
                    " AND NOT settled AND created_at >= %(since)s), 0)",
                    {"day": day, "since": now - RESERVATION_TTL},
                )
                if int(committed) + amount > budget:
                    raise pricing.BudgetExhausted(
                        budget=budget,
                        spent=int(committed),
                        needed=amount,
                        resets_at=quota.next_reset(now),
                    )
            (hid,) = await _row(
                conn,
                "INSERT INTO budget_holds (day, amount, created_at) VALUES (%s, %s, %s)"
                " RETURNING id",
                (day, amount, now),
            )
        return BudgetHold(id=int(hid), day=day, amount=amount)

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
        async with self.transaction() as conn:
            counted = True
            if hold is not None:
                cursor = await conn.execute(
                    "UPDATE budget_holds SET settled = TRUE WHERE id = %s AND NOT settled",
                    (hold.id,),
                )
                counted = cursor.rowcount == 1
            if counted and (cost > 0 or images > 0):
                await conn.execute(
                    "INSERT INTO spend (day, user_id, model, requests, images, cost)"
                    " VALUES (%s, %s, %s, 1, %s, %s) ON CONFLICT (day, user_id, model) DO UPDATE"
                    " SET requests = spend.requests + 1, images = spend.images + excluded.images,"
                    " cost = spend.cost + excluded.cost",
                    (day, user_id, model, images, cost),
                )
            if counted and cost > 0:
                await conn.execute(
                    "INSERT INTO budget_days (day, spent) VALUES (%s, %s)"
                    " ON CONFLICT (day) DO UPDATE SET spent = budget_days.spent + excluded.spent",
                    (day, cost),
                )
            return await _budget_spent(conn, day=day)

    async def credits(self, *, user_id: int) -> int:
        """Return the user's credits (pictures bought), minus those held by requests in flight."""
        now = self._clock()
        async with self.connection() as conn:
            return max(0, await _credits(conn, user_id=user_id, since=now - RESERVATION_TTL))

    async def add_payment(
        self, *, charge_id: str, user_id: int, pictures: int, stars: int, payload: str
    ) -> bool:
        """Credit a Stars payment once per charge id; return False when it was already credited."""
        created = self._clock()
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO payments (charge_id, user_id, pictures, stars, payload, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (charge_id) DO NOTHING",
                (charge_id, user_id, pictures, stars, payload, created),
            )
            if cursor.rowcount != 1:
                return False
            await _add_credits(conn, user_id=user_id, amount=pictures)
        return True

    async def refund_payment(self, *, charge_id: str) -> Payment:
        """Take back the credits a payment bought and mark it refunded, or raise PaymentError."""
        now = self._clock()
        async with self.transaction() as conn:
            rows = await _rows(conn, f"{PAYMENT_SELECT} WHERE charge_id = %s", (charge_id,))
            if not rows:
                raise PaymentError("unknown", charge_id=charge_id)
            # The user's lock: a reservation paying from these credits cannot slip in between.
            await _lock(conn, f"quota:user:{int(rows[0][1])}")
            (row,) = await _rows(
                conn, f"{PAYMENT_SELECT} WHERE charge_id = %s FOR UPDATE", (charge_id,)
            )
            payment = _payment(row)
            if payment.refunded:
                raise PaymentError("refunded", charge_id=charge_id)
            left = await _credits(conn, user_id=payment.user_id, since=now - RESERVATION_TTL)
            if left < payment.pictures:
                raise PaymentError("spent", charge_id=charge_id)
            await _add_credits(conn, user_id=payment.user_id, amount=-payment.pictures)
            await conn.execute(
                "UPDATE payments SET refunded_at = %s WHERE charge_id = %s", (now, charge_id)
            )
        return payment

    async def undo_refund(self, *, charge_id: str) -> None:
        """Give back the credits of a refund that Telegram refused (idempotent)."""
        async with self.transaction() as conn:
            rows = await _rows(
                conn, f"{PAYMENT_SELECT} WHERE charge_id = %s FOR UPDATE", (charge_id,)
            )
            if not rows or not _payment(rows[0]).refunded:
                return
            payment = _payment(rows[0])
            await conn.execute(
                "UPDATE payments SET refunded_at = NULL WHERE charge_id = %s", (charge_id,)
            )
            await _add_credits(conn, user_id=payment.user_id, amount=payment.pictures)

    async def spend(self, *, top: int = 5) -> Spend:
        """Return the costs of today, the last 7 days and all time, by model and top users."""
        now = self._clock()
        day = quota.utc_day(now)
        async with self.connection() as conn:
            (held,) = await _row(
                conn,
                "SELECT COALESCE(SUM(amount), 0) FROM budget_holds WHERE day = %s"
                " AND NOT settled AND created_at >= %s",
                (day, now - RESERVATION_TTL),
            )
            return Spend(
                day=day,
                today=await _spend_totals(conn, since=day, top=top),
                week=await _spend_totals(conn, since=day - timedelta(days=6), top=top),
                all_time=await _spend_totals(conn, since=None, top=top),
                budget_held=int(held),
            )

    # --- settings ----------------------------------------------------------------------------

    async def get_settings(self, *, scope: str, scope_id: int) -> dict[str, str]:
        """Return the saved settings of a user or chat as key -> value."""
        check_scope(scope)
        async with self.connection() as conn:
            rows = await _rows(
                conn,
                "SELECT key, value FROM settings WHERE scope = %s AND scope_id = %s ORDER BY key",
                (scope, scope_id),
            )
        return {str(key): str(value) for key, value in rows}

    async def set_setting(self, *, scope: str, scope_id: int, key: str, value: str | None) -> None:
        """Save one setting of a user or chat; None deletes it."""
        check_scope(scope)
        async with self.connection() as conn:
            if value is None:
                await conn.execute(
                    "DELETE FROM settings WHERE scope = %s AND scope_id = %s AND key = %s",
                    (scope, scope_id, key),
                )
            else:
                await conn.execute(
                    "INSERT INTO settings (scope, scope_id, key, value) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (scope, scope_id, key) DO UPDATE SET value = excluded.value",
                    (scope, scope_id, key, value),
                )

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
        created = self._clock()
        files = json.dumps(list(file_ids or []))
        async with self.transaction() as conn:
            for _ in range(_ID_ATTEMPTS):
                result_id = secrets.token_urlsafe(6)
                cursor = await conn.execute(
                    "INSERT INTO results"
                    " (id, user_id, chat_id, prompt, options, model, file_ids, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (result_id, user_id, chat_id, prompt, options, model, files, created),
                )
                if cursor.rowcount == 1:
                    break
            else:
                raise StoreError("Could not find a free result id; try again.")
            await conn.execute(
                "DELETE FROM results WHERE user_id = %s AND seq NOT IN"
                " (SELECT seq FROM results WHERE user_id = %s ORDER BY seq DESC LIMIT %s)",
                (user_id, user_id, RESULTS_PER_USER),
            )
        return result_id

    async def set_result_files(self, *, result_id: str, file_ids: list[str]) -> None:
        """Attach Telegram file ids to a kept result (no-op when it has expired)."""
        async with self.connection() as conn:
            await conn.execute(
                "UPDATE results SET file_ids = %s WHERE id = %s",
                (json.dumps(list(file_ids)), result_id),
            )

    async def get_result(self, *, result_id: str) -> ResultRecord | None:
        """Return a kept result, or None when it does not exist (any more)."""
        async with self.connection() as conn:
            rows = await _rows(conn, f"{RESULT_SELECT} WHERE id = %s", (result_id,))
        return _result(rows[0]) if rows else None

    async def history(
        self, *, user_id: int, limit: int = 10, chat_id: int | None = None
    ) -> list[ResultRecord]:
        """Return the user's newest results, newest first (only those made in `chat_id` if set)."""
        async with self.connection() as conn:
            if chat_id is None:
                rows = await _rows(
                    conn,
                    f"{RESULT_SELECT} WHERE user_id = %s ORDER BY seq DESC LIMIT %s",
                    (user_id, max(0, limit)),
                )
            else:
                rows = await _rows(
                    conn,
                    f"{RESULT_SELECT} WHERE user_id = %s AND chat_id = %s"
                    " ORDER BY seq DESC LIMIT %s",
                    (user_id, chat_id, max(0, limit)),
                )
        return [_result(row) for row in rows]

    # --- admin alert throttling --------------------------------------------------------------

    async def should_alert(self, *, kind: str, every: timedelta) -> bool:
        """Return True (and remember now) when no alert of `kind` was sent within `every`."""
        now = self._clock()
        async with self.connection() as conn:
            # One statement: of replicas asking at once, exactly one gets True.
            cursor = await conn.execute(
                "INSERT INTO alerts (kind, last_at) VALUES (%s, %s)"
                " ON CONFLICT (kind) DO UPDATE SET last_at = excluded.last_at"
                " WHERE alerts.last_at <= %s"
                " RETURNING kind",
                (kind, now, now - every),
            )
            return await cursor.fetchone() is not None

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
        async with self.connection() as conn:
            (job_id,) = await _row(
                conn,
                "INSERT INTO jobs (owner, user_id, chat_id, chat_type, thread_id, message_id,"
                " lang, request, reservation_id, budget_hold_id, state, created_at,"
                " updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s) RETURNING id",
                (
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
                    now,
                    now,
                ),
            )
        return JobRecord(
            id=int(job_id),
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
            created_at=now,
            updated_at=now,
        )

    async def transition_job(self, job_id: int, *, to: str, from_states: tuple[str, ...]) -> bool:
        """Move an unfinished job between unfinished states (see `Store.transition_job`)."""
        if to not in UNFINISHED_STATES:
            raise ValueError(f"{to!r} is not an unfinished job state")
        allowed = [state for state in from_states if state in UNFINISHED_STATES]
        if not allowed:
            return False
        async with self.connection() as conn:
            return await _move_job(conn, job_id, to=to, from_states=allowed, now=self._clock())

    async def finish_job(self, job_id: int, *, state: str, delivered: int) -> bool:
        """End a job and settle its reservation at once (see `Store.finish_job`)."""
        if state not in FINISHED_STATES:
            raise ValueError(f"{state!r} is not a finished job state")
        now = self._clock()
        async with self.transaction() as conn:
            if not await _move_job(conn, job_id, to=state, from_states=UNFINISHED_STATES, now=now):
                return False
            row = await _row(conn, f"{JOB_SELECT} WHERE jobs.id = %s", (job_id,))
            reservation = _job(row).reservation
            if reservation is not None:
                await _settle(conn, reservation, delivered=delivered)
        return True

    async def unfinished_jobs(self, *, owner: str) -> list[JobRecord]:
        """Return the jobs of `owner` a restart resumes, oldest first."""
        async with self.connection() as conn:
            rows = await _rows(
                conn,
                f"{JOB_SELECT} WHERE jobs.owner = %s AND jobs.state = ANY(%s) ORDER BY jobs.id",
                (owner, list(UNFINISHED_STATES)),
            )
        return [_job(row) for row in rows]

    async def get_job(self, job_id: int) -> JobRecord | None:
        """Return one job, or None when unknown."""
        async with self.connection() as conn:
            rows = await _rows(conn, f"{JOB_SELECT} WHERE jobs.id = %s", (job_id,))
        return _job(rows[0]) if rows else None

    async def note_update(self, update_id: int) -> bool:
        """Remember an update id; return False when it was seen before (by any replica)."""
        async with self.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO seen_updates (update_id, seen_at) VALUES (%s, %s)"
                " ON CONFLICT (update_id) DO NOTHING",
                (update_id, self._clock()),
            )
            return cursor.rowcount == 1

    async def prune_jobs(self, *, before: datetime) -> int:
        """Forget finished jobs and noted update ids older than `before`."""
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM jobs WHERE state = ANY(%s) AND updated_at < %s",
                (list(FINISHED_STATES), before),
            )
            await conn.execute("DELETE FROM seen_updates WHERE seen_at < %s", (before,))
            return cursor.rowcount


class PostgresOriginals:
    """The kept originals in the database: the newest `keep` results within `max_bytes`."""

    def __init__(self, store: PostgresStore, *, keep: int, max_bytes: int) -> None:
        self._store = store
        self._keep = keep
        self._max_bytes = max_bytes

    async def save(self, result_id: str, files: Sequence[tuple[str, bytes | Path]]) -> None:
        """Keep `(filename, bytes)` pairs for a result; failures are logged, never raised.

        A `Path` is a spooled file: its bytes are stored, the file is left to its owner.
        """
        try:
            named = [
                (Path(name).name, await asyncio.to_thread(data.read_bytes))
                if isinstance(data, Path)
                else (Path(name).name, data)
                for name, data in files
            ]
            async with self._store.transaction() as conn:
                await conn.execute("DELETE FROM original_sets WHERE result_id = %s", (result_id,))
                await insert_originals(conn, result_id, named)
                # The newest first; never the one just saved (rank 1).
                await conn.execute(
                    "DELETE FROM original_sets WHERE result_id IN (SELECT result_id FROM"
                    " (SELECT result_id, ROW_NUMBER() OVER w AS rank, SUM(size) OVER w AS running"
                    " FROM original_sets WINDOW w AS (ORDER BY seq DESC)) AS kept"
                    " WHERE rank > 1 AND (rank > %s OR running > %s))",
                    (self._keep, self._max_bytes),
                )
        except (OSError, StoreError) as exc:
            logger.warning("could not keep the originals of %s: %s", result_id, exc)

    async def load(self, result_id: str) -> list[tuple[str, bytes]]:
        """Return the kept `(filename, bytes)` pairs of a result (empty when gone)."""
        try:
            async with self._store.connection() as conn:
                rows = await _rows(
                    conn,
                    "SELECT filename, data FROM original_files WHERE result_id = %s"
                    " ORDER BY position",
                    (result_id,),
                )
        except StoreError as exc:
            logger.warning("could not read the originals of %s: %s", result_id, exc)
            return []
        return [(str(name), bytes(data)) for name, data in rows]


async def insert_originals(
    conn: Connection, result_id: str, files: Sequence[tuple[str, bytes]]
) -> None:
    """Insert one result's kept originals (it must have none yet) as the newest."""
    await conn.execute(
        "INSERT INTO original_sets (result_id, size) VALUES (%s, %s)",
        (result_id, sum(len(data) for _, data in files)),
    )
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO original_files (result_id, position, filename, data)"
            " VALUES (%s, %s, %s, %s)",
            [(result_id, i, name, data) for i, (name, data) in enumerate(files)],
        )


async def _settle(conn: Connection, reservation: Reservation, *, delivered: int) -> None:
    """Settle one reservation inside the caller's transaction (only the first time counts)."""
    count = max(0, min(delivered, reservation.n))
    cursor = await conn.execute(
        "UPDATE reservations SET settled = TRUE WHERE id = %s AND NOT settled",
        (reservation.id,),
    )
    if cursor.rowcount != 1 or count == 0:
        return
    # Delivered pictures use the free allowance first, then the credits.
    free = min(count, reservation.n - reservation.paid)
    scopes = [("user", reservation.user_id, free)]
    if is_group(reservation.chat_id):
        assert reservation.chat_id is not None
        scopes.append(("chat", reservation.chat_id, count))
    for scope, scope_id, used in scopes:
        if used > 0:
            await conn.execute(
                "INSERT INTO usage (scope, scope_id, day, used) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (scope, scope_id, day)"
                " DO UPDATE SET used = usage.used + excluded.used",
                (scope, scope_id, reservation.day, used),
            )
    if count > free:
        await conn.execute(
            "UPDATE credits SET balance = balance - %s WHERE user_id = %s",
            (count - free, reservation.user_id),
        )


async def _move_job(
    conn: Connection, job_id: int, *, to: str, from_states: Sequence[str], now: datetime
) -> bool:
    """Set a job's state if it is in one of `from_states` (one statement: a compare-and-set)."""
    cursor = await conn.execute(
        "UPDATE jobs SET state = %s, updated_at = %s WHERE id = %s AND state = ANY(%s)",
        (to, now, job_id, list(from_states)),
    )
    return cursor.rowcount == 1


def _job(row: Sequence[Any]) -> JobRecord:
    (jid, owner, user_id, chat_id, chat_type, thread_id, message_id, lang, request, state, created,
     updated, rid, r_user, r_chat, r_n, r_day, r_paid, bid, b_day, b_amount) = row  # fmt: skip
    reservation = None
    if rid is not None:
        reservation = Reservation(
            id=int(rid), user_id=int(r_user), chat_id=None if r_chat is None else int(r_chat),
            n=int(r_n), day=r_day, paid=int(r_paid),
        )  # fmt: skip
    budget = None
    if bid is not None:
        budget = BudgetHold(id=int(bid), day=b_day, amount=int(b_amount))
    return JobRecord(
        id=int(jid),
        owner=str(owner),
        user_id=int(user_id),
        chat_id=int(chat_id),
        chat_type=str(chat_type),
        thread_id=None if thread_id is None else int(thread_id),
        message_id=int(message_id),
        lang=str(lang),
        request=str(request),
        reservation=reservation,
        budget=budget,
        state=str(state),
        created_at=created,
        updated_at=updated,
    )


def _result(row: Sequence[Any]) -> ResultRecord:
    rid, user_id, chat_id, prompt, options, model, files, created = row
    return ResultRecord(
        id=str(rid),
        user_id=int(user_id),
        chat_id=None if chat_id is None else int(chat_id),
        prompt=str(prompt),
        options=str(options),
        model=str(model),
        file_ids=tuple(str(f) for f in json.loads(str(files))),
        created_at=created.astimezone(UTC),
    )


def _payment(row: Sequence[Any]) -> Payment:
    charge_id, user_id, pictures, stars, created, refunded = row
    return Payment(
        charge_id=str(charge_id),
        user_id=int(user_id),
        pictures=int(pictures),
        stars=int(stars),
        created_at=created.astimezone(UTC),
        refunded=refunded is not None,
    )


def _where_day(day: date | None) -> tuple[str, tuple[date, ...]]:
    return ("WHERE day = %s", (day,)) if day is not None else ("", ())


async def _totals(conn: Connection, *, day: date | None) -> tuple[int, int]:
    where, args = _where_day(day)
    images, requests = await _row(
        conn,
        "SELECT COALESCE(SUM(images_delivered), 0), COALESCE(SUM(requests), 0)"
        f" FROM request_stats {where}",
        args,
    )
    return int(images), int(requests)


async def _failures(conn: Connection, *, day: date | None) -> dict[str, int]:
    where, args = _where_day(day)
    where = f"{where} AND" if where else "WHERE"
    rows = await _rows(
        conn,
        f"SELECT outcome, SUM(requests) FROM request_stats {where} outcome <> 'ok'"
        " GROUP BY outcome ORDER BY SUM(requests) DESC, outcome",
        args,
    )
    return {str(kind): int(count) for kind, count in rows}


async def _top_users(conn: Connection, *, day: date | None, top: int) -> list[tuple[int, int]]:
    where, args = _where_day(day)
    rows = await _rows(
        conn,
        f"SELECT user_id, SUM(images_delivered) AS images FROM request_stats {where}"
        " GROUP BY user_id HAVING SUM(images_delivered) > 0 ORDER BY images DESC, user_id"
        " LIMIT %s",
        (*args, max(0, top)),
    )
    return [(int(user_id), int(images)) for user_id, images in rows]


async def _credits(conn: Connection, *, user_id: int, since: datetime) -> int:
    """Return the user's credits minus those held by live reservations."""
    (left,) = await _row(
        conn,
        "SELECT COALESCE((SELECT balance FROM credits WHERE user_id = %(user)s), 0)"
        " - COALESCE((SELECT SUM(paid) FROM reservations WHERE user_id = %(user)s"
        " AND NOT settled AND created_at >= %(since)s), 0)",
        {"user": user_id, "since": since},
    )
    return int(left)


async def _add_credits(conn: Connection, *, user_id: int, amount: int) -> None:
    await conn.execute(
        "INSERT INTO credits (user_id, balance) VALUES (%s, %s)"
        " ON CONFLICT (user_id) DO UPDATE SET balance = credits.balance + excluded.balance",
        (user_id, amount),
    )


async def _budget_spent(conn: Connection, *, day: date) -> pricing.Nanos:
    rows = await _rows(conn, "SELECT spent FROM budget_days WHERE day = %s", (day,))
    return int(rows[0][0]) if rows else 0


async def _spend_totals(conn: Connection, *, since: date | None, top: int) -> SpendTotals:
    where, args = ("WHERE day >= %s", (since,)) if since is not None else ("", ())
    cost, images = await _row(
        conn,
        f"SELECT COALESCE(SUM(cost), 0), COALESCE(SUM(images), 0) FROM spend {where}",
        args,
    )
    models = await _rows(
        conn,
        f"SELECT model, SUM(cost), SUM(images) FROM spend {where} GROUP BY model"
        " ORDER BY SUM(cost) DESC, model",
        args,
    )
    users = await _rows(
        conn,
        f"SELECT user_id, SUM(cost) AS total FROM spend {where} GROUP BY user_id"
        " HAVING SUM(cost) > 0 ORDER BY total DESC, user_id LIMIT %s",
        (*args, max(0, top)),
    )
    return SpendTotals(
        cost=int(cost),
        images=int(images),
        by_model=[(str(m), int(c), int(i)) for m, c, i in models],
        top_users=[(int(u), int(c)) for u, c in users],
    )
