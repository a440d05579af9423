"""The PostgreSQL schema of `PostgresStore` and its migrations, applied at start-up.

The version lives in the one-row table ``schema_version`` (independent of SQLite's
``user_version``). `migrate` holds a session-level advisory lock (`MIGRATION_LOCK`) while it reads
the version and applies what is missing, so replicas starting at the same moment migrate once:
the others wait on the lock, then find nothing left to do. Each migration runs in one
transaction together with its version bump.
"""

from __future__ import annotations

import logging

import psycopg

logger = logging.getLogger(__name__)

# An arbitrary constant naming this bot's migration lock among the database's advisory locks.
MIGRATION_LOCK = 0x5EED_1A6E_0001

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # The state of SqliteStore's schema version 2, in PostgreSQL's types.
        """CREATE TABLE usage (
            scope TEXT NOT NULL, scope_id BIGINT NOT NULL, day DATE NOT NULL,
            used INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, scope_id, day))""",
        """CREATE TABLE reservations (
            id BIGSERIAL PRIMARY KEY,
            user_id BIGINT NOT NULL, chat_id BIGINT, day DATE NOT NULL, n INTEGER NOT NULL,
            paid INTEGER NOT NULL DEFAULT 0,
            created_at TIMESTAMPTZ NOT NULL, settled BOOLEAN NOT NULL DEFAULT FALSE)""",
        "CREATE INDEX reservations_user ON reservations (user_id, day) WHERE NOT settled",
        "CREATE INDEX reservations_chat ON reservations (chat_id, day) WHERE NOT settled",
        "CREATE INDEX reservations_created ON reservations (created_at)",
        """CREATE TABLE request_stats (
            day DATE NOT NULL, user_id BIGINT NOT NULL, chat_id BIGINT NOT NULL,
            outcome TEXT NOT NULL,
            requests BIGINT NOT NULL DEFAULT 0,
            images_requested BIGINT NOT NULL DEFAULT 0,
            images_delivered BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (day, user_id, chat_id, outcome))""",
        """CREATE TABLE settings (
            scope TEXT NOT NULL, scope_id BIGINT NOT NULL, key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (scope, scope_id, key))""",
        """CREATE TABLE results (
            seq BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            user_id BIGINT NOT NULL, chat_id BIGINT,
            prompt TEXT NOT NULL, options TEXT NOT NULL, model TEXT NOT NULL,
            file_ids TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)""",
        "CREATE INDEX results_user ON results (user_id, seq)",
        "CREATE TABLE alerts (kind TEXT PRIMARY KEY, last_at TIMESTAMPTZ NOT NULL)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE spend (
            day DATE NOT NULL, user_id BIGINT NOT NULL, model TEXT NOT NULL,
            requests BIGINT NOT NULL DEFAULT 0, images BIGINT NOT NULL DEFAULT 0,
            cost BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (day, user_id, model))""",
        """CREATE TABLE budget_holds (
            id BIGSERIAL PRIMARY KEY, day DATE NOT NULL, amount BIGINT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL, settled BOOLEAN NOT NULL DEFAULT FALSE)""",
        "CREATE INDEX budget_holds_day ON budget_holds (day) WHERE NOT settled",
        "CREATE TABLE budget_days (day DATE PRIMARY KEY, spent BIGINT NOT NULL DEFAULT 0)",
        "CREATE TABLE credits (user_id BIGINT PRIMARY KEY, balance BIGINT NOT NULL DEFAULT 0)",
        """CREATE TABLE payments (
            charge_id TEXT PRIMARY KEY, user_id BIGINT NOT NULL, pictures INTEGER NOT NULL,
            stars INTEGER NOT NULL, payload TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            refunded_at TIMESTAMPTZ)""",
        # The kept originals (📄 Original): in the database, so a press works on any replica.
        """CREATE TABLE original_sets (
            result_id TEXT PRIMARY KEY, seq BIGSERIAL NOT NULL UNIQUE, size BIGINT NOT NULL)""",
        """CREATE TABLE original_files (
            result_id TEXT NOT NULL REFERENCES original_sets ON DELETE CASCADE,
            position INTEGER NOT NULL, filename TEXT NOT NULL, data BYTEA NOT NULL,
            PRIMARY KEY (result_id, position))""",
    ),
    (
        # Durable jobs (issue #10), as SqliteStore's schema version 3.
        """CREATE TABLE jobs (
            id BIGSERIAL PRIMARY KEY, owner TEXT NOT NULL,
            user_id BIGINT NOT NULL, chat_id BIGINT NOT NULL, chat_type TEXT NOT NULL,
            thread_id BIGINT, message_id BIGINT NOT NULL, lang TEXT NOT NULL,
            request TEXT NOT NULL, reservation_id BIGINT, budget_hold_id BIGINT,
            state TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL)""",
        "CREATE INDEX jobs_unfinished ON jobs (owner, id)"
        " WHERE state IN ('queued', 'running', 'delivering')",
        "CREATE INDEX jobs_updated ON jobs (updated_at)",
        """CREATE TABLE seen_updates (
            update_id BIGINT PRIMARY KEY, seen_at TIMESTAMPTZ NOT NULL)""",
        "CREATE INDEX seen_updates_at ON seen_updates (seen_at)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


class NewerSchema(Exception):
    """The database was migrated by a newer bot; `version` is what it has."""

    def __init__(self, version: int) -> None:
        super().__init__(f"schema version {version}, newer than this bot knows ({SCHEMA_VERSION})")
        self.version = version


async def migrate(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    """Bring the schema up to `SCHEMA_VERSION` under the migration lock; return the version.

    `conn` must be in autocommit mode (the lock is the session's, each migration a transaction).
    """
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cursor = await conn.execute("SELECT version FROM schema_version")
        row = await cursor.fetchone()
        version = 0 if row is None else int(str(row[0]))
        if version > SCHEMA_VERSION:
            raise NewerSchema(version)
        for number in range(version, SCHEMA_VERSION):
            async with conn.transaction():
                for statement in MIGRATIONS[number]:
                    await conn.execute(statement)
                await conn.execute("DELETE FROM schema_version")
                await conn.execute(
                    "INSERT INTO schema_version (version) VALUES (%s)", (number + 1,)
                )
            logger.info("PostgreSQL schema migrated to version %d", number + 1)
        return SCHEMA_VERSION
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
