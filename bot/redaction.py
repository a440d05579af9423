"""Hide secrets in text meant for people: log lines, CLI messages, error details (pure).

    redact("GET https://api.telegram.org/bot123:AAE.../getMe", secrets=[token])
    -> "GET https://api.telegram.org/bot***/getMe"

Two passes. First the places where a secret sits by its shape, whatever its value: the token in a
Bot API path (`/bot<id>:<token>/`), the value of an `Authorization`, `api-key` or similar header
(as text, JSON or a dict repr), secret-named query parameters (`?key=`, `&sig=`, `&token=`) and
a password in a URL (`https://user:pass@host`), and OpenAI-style `sk-…` keys. Then each known
secret wherever it occurs, but only one long enough to look like a secret: replacing a key like
`x` or `none` (common with keyless servers) inside every word would wreck the text and hide
nothing, and such a value still disappears from the places above.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "Redactor",
    "redact",
    "secret_header_values",
    "url_password",
]

REDACTED = "***"
MIN_SECRET_LENGTH = 8
"""Known secrets shorter than this are not searched for verbatim (they are not secret-looking)."""

_SECRET_WORDS = r"key|token|secret|password|passwd|pwd|auth|sig|signature|credential|code"

# /bot<digits>:<token> in Bot API URLs (calls and file downloads).
_BOT_PATH = re.compile(r"(/bot)[0-9]+:[A-Za-z0-9_-]+")
# `Authorization: Bearer x`, `"api-key": "x"`, `'X-Api-Key': 'x'`, `authorization=Basic x`.
_HEADER = re.compile(
    r"""(?ix)
    (?=[apxc])  # a cheap first-letter test before the alternation
    (\b(?:proxy-)?authorization|\b(?:x-)?(?:api|access|auth)[-_]?(?:key|token)|\bcookie)
    (["']?\s*[:=]\s*["']?)
    ((?:bearer|basic|token)\s+)?
    [^\s"',;}\]]+
    """
)
# ?api-key=x or &sig=x (query strings and form bodies), keeping the parameter's name; the
# punctuation of the sentence around a URL ("…&sig=x: failed") is not part of the value.
_QUERY = re.compile(
    rf"(?i)([?&;][A-Za-z0-9_.-]*(?:{_SECRET_WORDS})[A-Za-z0-9_.-]*=)"
    r"[^&#\s\"'<>]*[^&#\s\"'<>.,:;)\]]"
)
# scheme://user:password@host
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+(@)")
_HEADER_MARKERS = ("authorization", "key", "token", "cookie")
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-*]{4,}")
_SECRET_HEADER_NAME = re.compile(rf"(?i){_SECRET_WORDS}|cookie")


def _by_shape(text: str) -> str:
    # Each pattern runs only when its cheap marker is present: most log lines have none.
    lowered = text.lower()
    if "/bot" in lowered:
        text = _BOT_PATH.sub(rf"\1{REDACTED}", text)
    if any(word in lowered for word in _HEADER_MARKERS):
        text = _HEADER.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}{REDACTED}", text)
    if "=" in text:
        text = _QUERY.sub(rf"\1{REDACTED}", text)
    if "://" in text and "@" in text:
        text = _USERINFO.sub(rf"\1{REDACTED}\2", text)
    if "sk-" in text:
        text = _OPENAI_KEY.sub(f"sk-{REDACTED}", text)
    return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return `text` with secrets hidden: by their shape, then each secret-looking known value."""
    return Redactor(secrets)(text)


class Redactor:
    """A `redact` bound to one set of known secrets (longest first, short ones dropped)."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        kept = {s.strip() for s in secrets if len(s.strip()) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret containing another is hidden whole.
        self._secrets = tuple(sorted(kept, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        """Return `text` with the secrets hidden."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _by_shape(text)


def secret_header_values(headers: Mapping[str, str]) -> list[str]:
    """Return the values of the headers whose names say they carry credentials."""
    return [value for name, value in headers.items() if _SECRET_HEADER_NAME.search(name)]


def url_password(url: str) -> str:
    """Return the password in a URL's user info (``STORE_URL``), percent-decoded; else ""."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ""
    return unquote(password) if password else ""
