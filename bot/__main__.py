"""Own start-up: load `.env`, parse settings, then run the bot or the one-shot `generate` command.

This is the only module that reads ``os.environ``. Exit statuses: 0 on a clean stop, 2 for a
usage or configuration error (one message on stderr, no traceback), otherwise what the bot or the
command returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from bot import __version__
from bot.config import (
    ConfigError,
    Settings,
    load_settings,
    startup_failure_delay,
    startup_warnings,
)
from bot.redaction import Redactor, secret_header_values, url_password

USAGE = """\
usage: python -m bot [run]
       python -m bot generate PROMPT [--size WxH] [-n N] [-o DIR] [options]
       python -m bot migrate-store
       python -m bot -V | --version

  `telegram-image-bot` (the installed console script) is the same program:
  telegram-image-bot [run], telegram-image-bot generate ..., telegram-image-bot -V

  run        run the Telegram bot (the default); settings come from the environment
             and from .env in the current directory (see .env.example)
  generate   make images once and save them; needs no Telegram token
             (`python -m bot generate --help` lists its options)
  migrate-store  copy the SQLite database in DATA_DIR into the empty PostgreSQL
             database at STORE_URL (README: "Running on PostgreSQL")
"""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Exit statuses for which a restart cannot help (a bad setting, a rejected token, the database).
EXIT_CONFIG = 2

# Named for the package, not "__main__" (what __name__ is under `python -m bot`).
logger = logging.getLogger("bot")


class RedactingFormatter(logging.Formatter):
    """Format log records with secrets hidden (`bot.redaction`), tracebacks included."""

    def __init__(self, fmt: str, *, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        """Format `record`, then hide the secrets."""
        return self._redact(super().format(record))


def configure_logging(settings: Settings) -> None:
    """Send logs to stderr at `LOG_LEVEL`, with secrets redacted and noisy HTTP loggers quiet."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        RedactingFormatter(
            LOG_FORMAT,
            secrets=(
                settings.telegram_bot_token.get(),
                settings.openai_api_key.get(),
                settings.webhook_secret_token.get(),
                url_password(settings.store_url.get()),
                *secret_header_values(settings.openai_extra_headers),
            ),
        )
    )
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    # httpx logs every request URL at INFO, and Bot API URLs contain the token.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def format_config_error(error: ConfigError) -> str:
    """Return the one start-up message listing every configuration problem."""
    lines = ["Configuration error — fix these settings (see .env.example):"]
    lines.extend(f"  - {problem}" for problem in error.problems)
    return "\n".join(lines)


def exit_after_delay(status: int, delay: float, *, sleep: Callable[[float], None]) -> int:
    """Wait `delay` seconds (saying why on stderr) before a start-up failure exits with `status`.

    Under `restart: unless-stopped` a bad setting or a rejected token would otherwise restart the
    bot many times a second; the message stays the last thing in `docker compose logs`.
    """
    if status != EXIT_CONFIG or delay <= 0:
        return status
    print(
        f"Exiting in {delay:g} s (STARTUP_FAILURE_DELAY_SECONDS), so that a restart policy does "
        "not loop fast; a restart will not help until the problem above is fixed.",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        sleep(delay)
    return status


def _run_bot(sleep: Callable[[float], None]) -> int:
    try:
        settings = load_settings(os.environ, require_telegram=True)
    except ConfigError as error:
        print(format_config_error(error), file=sys.stderr, flush=True)
        return exit_after_delay(EXIT_CONFIG, startup_failure_delay(os.environ), sleep=sleep)
    configure_logging(settings)
    for warning in startup_warnings(settings):
        logger.warning("%s", warning)
    from bot.app import run

    status = run(settings)
    return exit_after_delay(status, settings.startup_failure_delay_seconds, sleep=sleep)


def main(argv: list[str] | None = None, *, sleep: Callable[[float], None] = time.sleep) -> int:
    """Run the bot or the `generate` command and return the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args and args[0] in ("-V", "--version"):
        print(f"telegram-image-bot {__version__}")
        return 0
    # Only the current directory's .env; values already in the environment win.
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    # Opt in to python-telegram-bot's timedelta `retry_after` before it is imported (else it warns).
    os.environ.setdefault("PTB_TIMEDELTA", "1")
    if args and args[0] == "generate":
        from bot.cli import main as generate_main

        # Failures are reported as one line on stderr; keep library warnings (retries) out of it.
        logging.getLogger().addHandler(logging.NullHandler())
        return generate_main(args[1:], env=os.environ)
    if args and args[0] == "migrate-store":
        from bot.migrate_store import main as migrate_main

        return migrate_main(args[1:], env=os.environ)
    if args and args != ["run"]:
        print(f"python -m bot: unknown arguments {' '.join(args)!r}; try --help", file=sys.stderr)
        return 2
    if "MALLOC_ARENA_MAX" not in os.environ:  # an operator's own choice wins
        limit_malloc_arenas(MALLOC_ARENAS)
    return _run_bot(sleep)


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int) -> bool:
    """Let glibc's malloc use at most `arenas` arenas; return whether it could be set.

    Every worker thread that parses an answer or inspects a picture otherwise gets an arena of its
    own, and megabytes freed there are not given back: with 50 pictures in flight the peak RSS was
    151 MiB with the default and 115 MiB with 2 arenas, at the same CPU time (bench/issue9.py).
    Without glibc (musl, macOS) this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


if __name__ == "__main__":
    sys.exit(main())
