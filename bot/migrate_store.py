"""`python -m bot migrate-store`: copy the SQLite store in DATA_DIR into PostgreSQL at STORE_URL.

Reads the same settings as the bot (``.env`` and the environment; no Telegram token needed),
prints what it copied, and exits 0; 2 with one message when a setting is missing or bad, the
SQLite database is not there, or the target already holds data (nothing is changed then).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO

from bot.config import ConfigError, load_settings
from bot.redaction import Redactor, url_password
from bot.store import StoreError
from bot.store.migrate import copy_sqlite_to_postgres

PROG = "python -m bot migrate-store"
EXIT_USAGE = 2
USAGE = f"""\
usage: {PROG}

  Copies the SQLite database (and the kept originals) in DATA_DIR into the empty PostgreSQL
  database at STORE_URL, in one transaction. Stop the bot first; afterwards start it with
  STORE_URL set. A target that already holds data is refused and left unchanged.
"""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def main(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    clock: Callable[[], datetime] = _utc_now,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run `migrate-store` with `argv` (after the subcommand) and return the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if list(argv) in (["-h"], ["--help"]):
        print(USAGE, end="", file=out)
        return 0
    if argv:
        print(f"{PROG}: takes no arguments (see --help)", file=err)
        return EXIT_USAGE
    try:
        settings = load_settings(env, require_telegram=False)
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {'; '.join(exc.problems)}", file=err)
        return EXIT_USAGE
    url = settings.store_url.get()
    if not url:
        print(
            f"{PROG}: STORE_URL is empty; set it to the PostgreSQL database to copy into, "
            "like postgresql://user:password@host:5432/database",
            file=err,
        )
        return EXIT_USAGE
    try:
        report = asyncio.run(
            copy_sqlite_to_postgres(
                data_dir=settings.data_dir,
                url=url,
                clock=clock,
                originals_max_bytes=settings.originals_max_bytes,
            )
        )
    except StoreError as exc:
        print(f"{PROG}: {Redactor([url_password(url)])(str(exc))}", file=err)
        return EXIT_USAGE
    copied = ", ".join(f"{table} {count}" for table, count in report.rows.items())
    print(
        f"copied {settings.data_dir} into PostgreSQL: {copied}; "
        f"the originals of {report.originals} results",
        file=out,
    )
    return 0
