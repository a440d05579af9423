"""Quota math: UTC day boundaries, non-UTC input, unlimited limits, the exception's payload."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from bot import quota

MSK = timezone(timedelta(hours=3))
PST = timezone(timedelta(hours=-8))


@pytest.mark.parametrize(
    ("now", "day"),
    [
        (datetime(2025, 3, 1, 0, 0, tzinfo=UTC), date(2025, 3, 1)),
        (datetime(2025, 3, 1, 23, 59, 59, 999999, tzinfo=UTC), date(2025, 3, 1)),
        # 02:30 in Moscow is still the previous day in UTC.
        (datetime(2025, 3, 2, 2, 30, tzinfo=MSK), date(2025, 3, 1)),
        (datetime(2025, 3, 2, 3, 0, tzinfo=MSK), date(2025, 3, 2)),
        # 17:00 in California on 1 March is already 2 March in UTC.
        (datetime(2025, 3, 1, 17, 0, tzinfo=PST), date(2025, 3, 2)),
        (datetime(2024, 12, 31, 23, 0, tzinfo=UTC), date(2024, 12, 31)),
        (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), date(2024, 2, 29)),
    ],
)
def test_utc_day(now: datetime, day: date) -> None:
    assert quota.utc_day(now) == day


@pytest.mark.parametrize(
    ("now", "reset"),
    [
        (datetime(2025, 3, 1, 0, 0, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC)),
        (datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC)),
        (datetime(2025, 3, 2, 2, 30, tzinfo=MSK), datetime(2025, 3, 2, tzinfo=UTC)),
        (datetime(2025, 3, 1, 17, 0, tzinfo=PST), datetime(2025, 3, 3, tzinfo=UTC)),
        (datetime(2024, 12, 31, 23, 0, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),
        (datetime(2024, 2, 28, 8, 0, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_next_reset(now: datetime, reset: datetime) -> None:
    got = quota.next_reset(now)
    assert got == reset
    assert got.utcoffset() == timedelta(0)
    assert got > now


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        quota.utc_day(datetime(2025, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="timezone"):
        quota.next_reset(datetime(2025, 3, 1, 12, 0))


@pytest.mark.parametrize(
    ("limit", "used", "left"),
    [
        (0, 0, None),
        (0, 100, None),
        (-1, 5, None),
        (5, 0, 5),
        (5, 3, 2),
        (5, 5, 0),
        (5, 7, 0),
        (1, 0, 1),
    ],
)
def test_remaining(limit: int, used: int, left: int | None) -> None:
    assert quota.remaining(limit=limit, used=used) == left


@pytest.mark.parametrize(
    ("limit", "used", "requested", "ok"),
    [
        (0, 1000, 10, True),
        (-5, 1000, 10, True),
        (5, 0, 5, True),
        (5, 0, 6, False),
        (5, 4, 1, True),
        (5, 4, 2, False),
        (5, 2, 3, True),
        (5, 2, 4, False),
        (5, 5, 1, False),
        (1, 0, 1, True),
    ],
)
def test_check(limit: int, used: int, requested: int, ok: bool) -> None:
    assert quota.check(limit=limit, used=used, requested=requested) is ok


def test_quota_exceeded_carries_what_is_left() -> None:
    resets = datetime(2025, 3, 2, tzinfo=UTC)
    exc = quota.QuotaExceeded(scope="chat", limit=10, used=9, remaining=1, resets_at=resets)
    assert isinstance(exc, Exception)
    assert (exc.scope, exc.limit, exc.used, exc.remaining, exc.resets_at) == (
        "chat",
        10,
        9,
        1,
        resets,
    )
    assert "chat" in str(exc)
    assert "2025-03-02T00:00:00+00:00" in str(exc)
