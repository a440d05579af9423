"""The images boundary's exception family, and reading error answers (pure: no I/O, no httpx).

ImagesError                  kind
├── ImagesRefused            "refused"       400 moderation_blocked / content_policy_violation
├── ImagesBadRequest         "bad_request"   other 4xx (400, 404, 422, ...), never retried
├── ImagesAuthError          "auth"          401, 403
├── ImagesQuotaExhausted     "quota"         insufficient_quota (any status), never retried
├── ImagesRateLimited        "rate_limited"  429 after every attempt; `.retry_after`
├── ImagesUnavailable        "unavailable"   5xx, connection errors, garbled answers, failed
│                                            downloads, after every attempt
└── ImagesTimeout            "timeout"       no answer within `timeout`, never retried
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import ClassVar

REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})

__all__ = [
    "REFUSAL_CODES",
    "ImagesAuthError",
    "ImagesBadRequest",
    "ImagesError",
    "ImagesQuotaExhausted",
    "ImagesRateLimited",
    "ImagesRefused",
    "ImagesTimeout",
    "ImagesUnavailable",
    "error_fields",
    "parse_retry_after",
]


class ImagesError(Exception):
    """Base of the images backend family; `detail` is the service's own (scrubbed) message."""

    kind: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail


class ImagesRefused(ImagesError):
    """The service's safety system refused the prompt or image."""

    kind = "refused"


class ImagesBadRequest(ImagesError):
    """The service rejected the request as invalid."""

    kind = "bad_request"


class ImagesAuthError(ImagesError):
    """The API key is missing, wrong or lacks permission."""

    kind = "auth"


class ImagesQuotaExhausted(ImagesError):
    """The account has no quota or credit left."""

    kind = "quota"


class ImagesRateLimited(ImagesError):
    """The service kept answering 429 for every attempt."""

    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, detail=detail)
        self.retry_after = retry_after


class ImagesUnavailable(ImagesError):
    """The service failed, could not be reached, or answered something unusable."""

    kind = "unavailable"


class ImagesTimeout(ImagesError):
    """No answer arrived within the timeout."""

    kind = "timeout"


def parse_retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Return the wait a 429 asks for, in seconds (`retry-after-ms`, `Retry-After`), or None."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    """Return (message, code, type) from an error body, tolerating non-JSON bodies."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip(), None, None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
        kind = error.get("type")
        return (
            str(message) if message is not None else "",
            str(code) if code is not None else None,
            str(kind) if kind is not None else None,
        )
    if isinstance(error, str):
        return error, None, None
    return body.decode("utf-8", "replace").strip(), None, None
