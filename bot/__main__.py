"""Own start-up: load `.env`, parse settings, then run the bot or the one-shot `generate` command.

This is the only module that reads ``os.environ``. Exit statuses: 0 on a clean stop, 2 for a
usage or configuration error (one message on stderr, no traceback), otherwise what the bot or the
command returns.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from bot import __version__
from bot.config import ConfigError, Settings, load_settings

USAGE = """\
usage: python -m bot [run]
       python -m bot generate PROMPT [--size WxH] [-n N] [-o DIR] [options]
       python -m bot --version

  run        run the Telegram bot (the default); settings come from the environment
             and from .env in the current directory (see .env.example)
  generate   make images once and save them; needs no Telegram token
             (`python -m bot generate --help` lists its options)
"""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_REDACTED = "**********"


class RedactingFormatter(logging.Formatter):
    """Format log records with every given secret replaced, tracebacks included."""

    def __init__(self, fmt: str, *, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        """Format `record`, then hide the secrets."""
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text


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


def _run_bot() -> int:
    try:
        settings = load_settings(os.environ, require_telegram=True)
    except ConfigError as error:
        print(format_config_error(error), file=sys.stderr)
        return 2
    configure_logging(settings)
    from bot.app import run

    return run(settings)


def main(argv: list[str] | None = None) -> int:
    """Run the bot or the `generate` command and return the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args and args[0] == "--version":
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
    if args and args != ["run"]:
        print(f"python -m bot: unknown arguments {' '.join(args)!r}; try --help", file=sys.stderr)
        return 2
    return _run_bot()


if __name__ == "__main__":
    sys.exit(main())
