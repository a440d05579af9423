"""Pure daily-quota math: the UTC day, when it resets, what is left, and the limit's exception.

Exception family (the quota boundary)::

    QuotaExceeded            the daily limit of a user or of a group chat would be exceeded
      CreditsNeeded          the free pictures are used up and the user's credits do not cover
                             the rest (Telegram Stars are on)

A limit of zero or less means "no limit" everywhere in this module.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


class QuotaExceeded(Exception):
    """A request would exceed a daily image limit; carries what is left and when it resets."""

    def __init__(
        self, *, scope: str, limit: int, used: int, remaining: int, resets_at: datetime
    ) -> None:
        super().__init__(
            f"daily {scope} image limit of {limit} reached: {used} used, {remaining} left, "
            f"resets at {resets_at.isoformat()}"
        )
        self.scope = scope
        self.limit = limit
        self.used = used
        self.remaining = remaining
        self.resets_at = resets_at


class CreditsNeeded(QuotaExceeded):
    """The free allowance is used up and the user's bought credits do not cover the request."""

    def __init__(
        self,
        *,
        limit: int,
        used: int,
        remaining: int,
        resets_at: datetime,
        credits: int,
        needed: int,
    ) -> None:
        super().__init__(
            scope="user", limit=limit, used=used, remaining=remaining, resets_at=resets_at
        )
        self.credits = credits
        self.needed = needed


def _as_utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return now.astimezone(UTC)


def utc_day(now: datetime) -> date:
    """Return the UTC calendar day that `now` (timezone-aware) falls on."""
    return _as_utc(now).date()


def next_reset(now: datetime) -> datetime:
    """Return the next UTC midnight after `now` (timezone-aware), as a UTC datetime."""
    return datetime.combine(utc_day(now) + timedelta(days=1), time(0), tzinfo=UTC)


def remaining(*, limit: int, used: int) -> int | None:
    """Return how many images are left under `limit` (never negative), or None when unlimited."""
    if limit <= 0:
        return None
    return max(0, limit - used)


def check(*, limit: int, used: int, requested: int) -> bool:
    """Return whether `requested` more images fit under `limit` given `used` so far."""
    if limit <= 0:
        return True
    return used + requested <= limit


def admit(
    *,
    n: int,
    now: datetime,
    user_limit: int,
    chat_limit: int,
    group: bool,
    exempt: bool,
    credits: bool,
    user_used: int,
    chat_used: int,
    credits_left: int,
) -> int:
    """Return how many of `n` images the credits pay for, or raise QuotaExceeded/CreditsNeeded.

    `user_used`/`chat_used` count today's images including live reservations (a user's own count
    only their free part); with `credits` (Telegram Stars are on) what the free `user_limit` does
    not cover is paid from `credits_left`; the chat limit applies only to a `group`.
    """
    if exempt:
        return 0
    paid = 0
    if credits:
        free_left = max(0, user_limit - user_used) if user_limit > 0 else 0
        paid = max(0, n - free_left)
        if paid and credits_left < paid:
            raise CreditsNeeded(
                limit=user_limit,
                used=user_used,
                remaining=free_left,
                resets_at=next_reset(now),
                credits=max(0, credits_left),
                needed=paid,
            )
    checks = [] if credits else [("user", user_limit, user_used)]
    if group and chat_limit > 0:
        checks.append(("chat", chat_limit, chat_used))
    for scope, limit, used in checks:
        if not check(limit=limit, used=used, requested=n):
            raise QuotaExceeded(
                scope=scope,
                limit=limit,
                used=used,
                remaining=remaining(limit=limit, used=used) or 0,
                resets_at=next_reset(now),
            )
    return paid
