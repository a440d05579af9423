"""Turn the expected failures of every boundary into one short, localized, plain-text reply."""

from __future__ import annotations

import math
from datetime import datetime

from bot.capabilities import PromptTooLong, UnsupportedOption
from bot.i18n import Texts
from bot.images import ImagesError, ImagesRateLimited
from bot.limiter import UserBusy
from bot.prompt import (
    BadOption,
    ConflictingOption,
    EmptyPrompt,
    MissingValue,
    PromptError,
    UnknownOption,
    as_typed,
)
from bot.quota import QuotaExceeded

# A value echoed back from the user's command is cut to this many characters, so that the reply
# always fits in one Telegram message whatever was typed.
MAX_ECHOED_VALUE = 40


def shown(value: object) -> str:
    """Return a user-typed value shortened for echoing in a reply."""
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_ECHOED_VALUE else text[: MAX_ECHOED_VALUE - 1] + "…"


def until(texts: Texts, lang: str, *, resets_at: datetime, now: datetime) -> str:
    """Return how long until `resets_at`, in whole minutes (at least one), in `lang`."""
    minutes = max(1, math.ceil((resets_at - now).total_seconds() / 60))
    hours, mins = divmod(minutes, 60)
    if not hours:
        return texts.get(lang, "time.minutes", count=mins)
    hours_text = texts.get(lang, "time.hours", count=hours)
    if not mins:
        return hours_text
    return texts.get(
        lang,
        "time.hours_minutes",
        hours=hours_text,
        minutes=texts.get(lang, "time.minutes", count=mins),
    )


def error_text(texts: Texts, lang: str, exc: Exception, *, now: datetime) -> str | None:
    """Return the reply for an expected error, or None when `exc` is not an expected one."""
    if isinstance(exc, UnsupportedOption):
        return texts.get(
            lang,
            "error.unsupported_option" if exc.allowed else "error.option_not_supported",
            option=texts.get(lang, f"option.{exc.option}"),
            value=shown(exc.value),
            model=exc.model,
            allowed=", ".join(as_typed(exc.option, value) for value in exc.allowed),
        )
    if isinstance(exc, PromptTooLong):
        return texts.get(lang, "error.prompt_too_long", limit=exc.limit, count=exc.length)
    if isinstance(exc, BadOption):
        return texts.get(
            lang,
            "error.bad_option",
            option=texts.get(lang, f"option.{exc.option}"),
            value=shown(exc.value),
            allowed=exc.allowed,
        )
    if isinstance(exc, ConflictingOption):
        return texts.get(
            lang,
            "error.conflicting_option",
            option=texts.get(lang, f"option.{exc.option}"),
            values=", ".join(shown(value) for value in exc.values),
        )
    if isinstance(exc, UnknownOption):
        return texts.get(
            lang, "error.unknown_option", value=shown(exc.value), allowed=", ".join(exc.allowed)
        )
    if isinstance(exc, MissingValue):
        return texts.get(lang, "error.missing_value", value=shown(exc.value), example=exc.example)
    if isinstance(exc, EmptyPrompt):
        return texts.get(lang, "image.usage")
    if isinstance(exc, PromptError):
        return texts.get(lang, "error.prompt_invalid")
    if isinstance(exc, QuotaExceeded):
        resets_in = until(texts, lang, resets_at=exc.resets_at, now=now)
        if exc.remaining > 0:  # some are left, just fewer than were asked for
            key = "error.quota_user_left" if exc.scope == "user" else "error.quota_chat_left"
            return texts.get(lang, key, count=exc.remaining, limit=exc.limit, resets_in=resets_in)
        key = "error.quota_user" if exc.scope == "user" else "error.quota_chat"
        return texts.get(
            lang,
            key,
            count=exc.limit,
            remaining=exc.remaining,
            resets_in=resets_in,
        )
    if isinstance(exc, UserBusy):
        return texts.get(lang, "error.busy", limit=exc.limit)
    if isinstance(exc, ImagesRateLimited):
        retry_after = exc.retry_after
        seconds = max(1, math.ceil(retry_after)) if retry_after is not None else 60
        return texts.get(lang, "error.images.rate_limited", count=seconds)
    if isinstance(exc, ImagesError):
        return texts.get(lang, f"error.images.{exc.kind}")
    return None
