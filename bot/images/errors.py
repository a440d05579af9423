"""The images boundary's exception family, and reading error answers (pure: no I/O, no httpx).

ImagesError                  kind
├── ImagesRefused            "refused"       a refusal code or phrase anywhere in a 4xx body
├── ImagesBadRequest         "bad_request"   other 4xx (400, 422, ...), never retried
├── ImagesEndpointNotFound   "not_found"     404/405 (not model_not_found): a wrong base URL
├── ImagesNotOffered         "not_offered"   404/405 with a non-OpenAI body on edits/variations
├── ImagesAuthError          "auth"          401, 403; a cooldown 429 right after an auth failure
├── ImagesQuotaExhausted     "quota"         a quota code or phrase anywhere (any status)
├── ImagesRateLimited        "rate_limited"  429 after every attempt; `.retry_after`
├── ImagesUnavailable        "unavailable"   5xx, connection errors, garbled answers, failed
│                                            downloads, after every attempt
└── ImagesTimeout            "timeout"       no answer within `timeout`, or 408; never retried

Gateways (LiteLLM above all) wrap the upstream error: codes as strings ("400") or numbers, the
upstream's own error as JSON or Python-repr text inside `message`
(`litellm.BadRequestError: OpenAIException - {...}`), `{"detail": "Not Found"}` for routes they
do not serve, quota under a 429 `throttling_error`. `error_fields` reads through that wrapping, so
`detail` is the upstream's own words.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import ClassVar

REFUSAL_CODES = frozenset(
    {"moderation_blocked", "content_policy_violation", "content_filter", "safety_violation"}
)
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
# Lower-case phrases that mean the same when a gateway has lost the code.
_REFUSAL_PHRASES = (
    "safety system",
    "content policy",
    "content management policy",
    "contentpolicyviolationerror",
    *REFUSAL_CODES,
)
_QUOTA_PHRASES = ("exceeded your current quota", "billing hard limit", *QUOTA_CODES)
_COOLDOWN_PHRASES = ("all_deployments_in_cooldown", "no deployments available", "cooldown")
# Gateway prefixes in front of the upstream's message, repeated as they nest.
_WRAPPING = re.compile(
    r"^\s*(?:litellm\.\w+:\s*|\w+Error:\s*|Timeout Error:\s*|\w*Exception\s*-\s*|"
    r"Error code:\s*\d+\s*-\s*|\d{3}:\s*)",
    re.IGNORECASE,
)
# What LiteLLM appends after the upstream's message.
_TRAILERS = re.compile(
    r"\s*(?:LiteLLM: model group |Received Model Group=|LiteLLM Retried:|"
    r"No fallback model group found|Available Model Group Fallbacks=|model_group=).*$",
    re.IGNORECASE | re.DOTALL,
)
_TRY_AGAIN = re.compile(
    r"try again in\s+(?:(\d+(?:\.\d+)?)\s*m(?:in(?:utes?)?)?(?!s)\s*)?"
    r"(?:(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?)\b)?",
    re.IGNORECASE,
)
_EMBEDDED_LIMIT = 20_000

__all__ = [
    "QUOTA_CODES",
    "REFUSAL_CODES",
    "ImagesAuthError",
    "ImagesBadRequest",
    "ImagesEndpointNotFound",
    "ImagesError",
    "ImagesNotOffered",
    "ImagesQuotaExhausted",
    "ImagesRateLimited",
    "ImagesRefused",
    "ImagesTimeout",
    "ImagesUnavailable",
    "classify_response",
    "classify_stream_error",
    "error_fields",
    "is_cooldown",
    "parse_retry_after",
    "unwrap_message",
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


class ImagesEndpointNotFound(ImagesBadRequest):
    """The images endpoint itself is not there (404/405): the base URL is wrong."""

    kind = "not_found"


class ImagesNotOffered(ImagesBadRequest):
    """The host does not serve this endpoint (e.g. /images/variations behind LiteLLM)."""

    kind = "not_offered"


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


def _seconds(value: str | None, scale: float = 1.0) -> float | None:
    if value is None:
        return None
    try:
        number = float(value) * scale
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None


def parse_retry_after(headers: Mapping[str, str], now: datetime, message: str = "") -> float | None:
    """Return the wait a 429 asks for, in seconds, or None.

    Read from `retry-after-ms`, `Retry-After` (seconds or an HTTP date),
    `llm_provider-retry-after` (LiteLLM passing on the upstream's), then a "try again in N
    seconds" in `message`.
    """
    milliseconds = _seconds(headers.get("retry-after-ms"), 1 / 1000)
    if milliseconds is not None:
        return milliseconds
    for name in ("retry-after", "llm_provider-retry-after"):
        value = headers.get(name)
        if value is None:
            continue
        seconds = _seconds(value)
        if seconds is not None:
            return seconds
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    return _retry_after_in_text(message)


def _retry_after_in_text(message: str) -> float | None:
    for match in _TRY_AGAIN.finditer(message):
        minutes, amount, unit = match.groups()
        if minutes is None and amount is None:
            continue
        total = float(minutes or 0) * 60
        if amount is not None:
            total += float(amount) / (1000 if unit.lower().startswith("m") else 1)
        return total
    return None


def _embedded(text: str) -> dict[str, object] | None:
    """Return the JSON object (or Python dict repr) embedded in `text`, if there is one."""
    start = text.find("{")
    if start < 0 or len(text) > _EMBEDDED_LIMIT:
        return None
    candidate = text[start:]
    try:
        value, _ = json.JSONDecoder().raw_decode(candidate)
    except ValueError:
        end = candidate.rfind("}")
        try:
            value = ast.literal_eval(candidate[: end + 1])
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def unwrap_message(message: str) -> str:
    """Strip a gateway's prefixes and trailers from an error message."""
    text = message.strip()
    while True:
        stripped = _WRAPPING.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return _TRAILERS.sub("", text).strip()


def _code(value: object) -> str | None:
    """Return a code worth keeping: a word, not a bare status number ("400", 429)."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not text or text.isdigit() or text.lower() in ("none", "null"):
        return None
    return text


def _error_object(payload: object) -> tuple[str, object, object] | None:
    """Return (message, code, type) from an `{"error": ...}`, `{"detail": ...}` or bare object."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        return (str(message) if message is not None else "", error.get("code"), error.get("type"))
    if isinstance(error, str):
        return error, payload.get("code"), payload.get("type")
    for key in ("message", "detail"):
        value = payload.get(key)
        if isinstance(value, str):
            return value, payload.get("code"), payload.get("type")
    return None


def error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    """Return (message, code, type) from an error body, read through a gateway's wrapping.

    The message is the innermost one (the upstream's own words); the code and type are the
    innermost meaningful ones (a bare status number such as LiteLLM's `"400"` is not a code).
    Non-JSON bodies give their text.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        return unwrap_message(body.decode("utf-8", "replace")), None, None
    fields = _error_object(payload)
    if fields is None:
        return body.decode("utf-8", "replace").strip(), None, None
    message, code, kind = fields
    codes = [_code(code)]
    kinds = [_code(kind)]
    for _ in range(3):  # an error inside a message inside an error...
        inner = _error_object(_embedded(message))
        if inner is None:
            break
        message, code, kind = inner
        codes.insert(0, _code(code))
        kinds.insert(0, _code(kind))
    return (
        unwrap_message(message),
        next((c for c in codes if c), None),
        next((k for k in kinds if k), None),
    )


def _mentions(text: str, phrases: tuple[str, ...]) -> bool:
    return any(phrase in text for phrase in phrases)


def is_cooldown(body: bytes) -> bool:
    """Tell whether a 429 body is a gateway's "every deployment is cooling down"."""
    return _mentions(body.decode("utf-8", "replace").lower(), _COOLDOWN_PHRASES)


def _is_openai_error(body: bytes) -> bool:
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and isinstance(payload.get("error"), dict)


def classify_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    scrub: Callable[[str], str],
    endpoint: str = "generations",
    recent_auth_failure: bool = False,
) -> ImagesError:
    """Return the error that a non-200 answer of the images API stands for.

    Only the judgement of what went wrong lives here; whether to try again is the client's call.
    `scrub` removes secrets from the service's message before it is kept in `detail`.
    `endpoint` is "generations", "edits" or "variations"; `recent_auth_failure` says the client
    saw a 401/403 a short while ago (a gateway then answers 429 "cooldown" for the same fault).
    """
    message, code, error_type = error_fields(body)
    detail = scrub(message) or None
    text = f"images API answered HTTP {status}"
    if code:
        text += f" ({code})"
    if detail:
        text += f": {detail}"
    everything = body.decode("utf-8", "replace").lower()
    if code in QUOTA_CODES or error_type in QUOTA_CODES or _mentions(everything, _QUOTA_PHRASES):
        return ImagesQuotaExhausted(text, status=status, code=code, detail=detail)
    if status == 408:
        return ImagesTimeout(text, status=status, code=code, detail=detail)
    if status in (401, 403):
        return ImagesAuthError(text, status=status, code=code, detail=detail)
    if status == 429:
        if recent_auth_failure and is_cooldown(body):
            return ImagesAuthError(text, status=status, code=code, detail=detail)
        retry_after = parse_retry_after(headers, now, message)
        return ImagesRateLimited(
            text, status=status, code=code, detail=detail, retry_after=retry_after
        )
    if 400 <= status < 500 and (code in REFUSAL_CODES or _mentions(everything, _REFUSAL_PHRASES)):
        return ImagesRefused(text, status=status, code=code, detail=detail)
    if status in (404, 405) and code != "model_not_found":  # a wrong model is a bad request
        if endpoint != "generations" and not _is_openai_error(body):
            return ImagesNotOffered(text, status=status, code=code, detail=detail)
        return ImagesEndpointNotFound(text, status=status, code=code, detail=detail)
    if status >= 500:
        return ImagesUnavailable(text, status=status, code=code, detail=detail)
    return ImagesBadRequest(text, status=status, code=code, detail=detail)


def classify_stream_error(
    body: bytes, *, now: datetime, scrub: Callable[[str], str], endpoint: str = "generations"
) -> ImagesError:
    """Return the error that an `error` event of a streamed answer (already 200) stands for.

    The event carries no status; it is read as the answer that would have said the same: a
    rate limit as 429, the caller's fault or a refusal as 400, anything else as 500.
    """
    _, code, error_type = error_fields(body)
    words = f"{code or ''} {error_type or ''}".lower()
    everything = body.decode("utf-8", "replace").lower()
    if "rate_limit" in words:
        status = 429
    elif (
        "invalid_request" in words
        or "user_error" in words
        or code in REFUSAL_CODES
        or _mentions(everything, _REFUSAL_PHRASES)
    ):
        status = 400
    else:
        status = 500
    error = classify_response(status, {}, body, now=now, scrub=scrub, endpoint=endpoint)
    error.status = None
    error.args = (str(error).replace(f"answered HTTP {status}", "streamed an error", 1),)
    return error
