"""Turn the expected failures of every boundary into one short, localized, plain-text reply."""

from __future__ import annotations

import math
from datetime import datetime

from bot.capabilities import PromptTooLong, UnsupportedOption
from bot.i18n import Texts
from bot.images import ImagesError, ImagesRateLimited
from bot.limiter import UserBusy
from bot.prompt import BadOption, ConflictingOption, EmptyPrompt, PromptError
from bot.quota import QuotaExceeded


def until(resets_at: datetime, now: datetime) -> str:
    minutes = max(1, math.ceil((resets_at - now).total_seconds() / 60))
    hours, mins = divmod(minutes, 60)
    return f"{hours} h {mins:02d} min" if hours else f"{mins} min"


def error_text(texts: Texts, lang: str, exc: Exception, *, now: datetime) -> str | None:
    """Return the reply for an expected error, or None when `exc` is not an expected one."""
    if isinstance(exc, UnsupportedOption):
        return texts.get(
            lang,
            "error.unsupported_option",
            option=texts.get(lang, f"option.{exc.option}"),
            value=exc.value,
            model=exc.model,
            allowed=", ".join(exc.allowed),
        )
    if isinstance(exc, PromptTooLong):
        return texts.get(lang, "error.prompt_too_long", limit=exc.limit, length=exc.length)
    if isinstance(exc, BadOption):
        return texts.get(
            lang,
            "error.bad_option",
            option=texts.get(lang, f"option.{exc.option}"),
            value=exc.value,
            allowed=exc.allowed,
        )
    if isinstance(exc, ConflictingOption):
        return texts.get(
            lang,
            "error.conflicting_option",
            option=texts.get(lang, f"option.{exc.option}"),
            values=", ".join(exc.values),
        )
    if isinstance(exc, EmptyPrompt):
        return texts.get(lang, "image.usage")
    if isinstance(exc, PromptError):
        return texts.get(lang, "error.prompt_invalid")
    if isinstance(exc, QuotaExceeded):
        key = "error.quota_user" if exc.scope == "user" else "error.quota_chat"
        return texts.get(
            lang,
            key,
            limit=exc.limit,
            remaining=exc.remaining,
            resets_in=until(exc.resets_at, now),
        )
    if isinstance(exc, UserBusy):
        return texts.get(lang, "error.busy", limit=exc.limit)
    if isinstance(exc, ImagesRateLimited):
        seconds = math.ceil(exc.retry_after) if exc.retry_after else 60
        return texts.get(lang, "error.images.rate_limited", seconds=seconds)
    if isinstance(exc, ImagesError):
        return texts.get(lang, f"error.images.{exc.kind}")
    return None
