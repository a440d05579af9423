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
from collections.abc import Callable, Mapping
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
    "classify_response",
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
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail
        # The request this answers: method and URL without credentials (for logs and the CLI).
        self.method = method
        self.url = url


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
        method: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, detail=detail, method=method, url=url)
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


def classify_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    scrub: Callable[[str], str],
) -> ImagesError:
    """Return the error that a non-200 answer of the images API stands for.

    Only the judgement of what went wrong lives here; whether to try again is the client's call.
    `scrub` removes secrets from the service's message before it is kept in `detail`.
    """
    message, code, error_type = error_fields(body)
    detail = scrub(message) or None
    text = f"images API answered HTTP {status}"
    if code:
        text += f" ({code})"
    if detail:
        text += f": {detail}"
    if "insufficient_quota" in (code, error_type):
        return ImagesQuotaExhausted(text, status=status, code=code, detail=detail)
    if status == 429:
        retry_after = parse_retry_after(headers, now)
        return ImagesRateLimited(
            text, status=status, code=code, detail=detail, retry_after=retry_after
        )
    if status in (401, 403):
        return ImagesAuthError(text, status=status, code=code, detail=detail)
    if status == 400 and (code in REFUSAL_CODES or "safety system" in (message or "").lower()):
        return ImagesRefused(text, status=status, code=code, detail=detail)
    if status >= 500 or status == 408:
        return ImagesUnavailable(text, status=status, code=code, detail=detail)
    return ImagesBadRequest(text, status=status, code=code, detail=detail)
