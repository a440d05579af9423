"""Tests for bot.redaction: secrets hidden where they appear, words left alone."""

from __future__ import annotations

import logging
import sys

import pytest

from bot import __main__ as entry
from bot.redaction import MIN_SECRET_LENGTH, REDACTED, Redactor, redact, secret_header_values

TOKEN = "123456789:AAE-redaction_secret-token"
KEY = "sk-proj-abcdefghijklmnop"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Bot API paths, whatever the token.
        (
            "POST https://api.telegram.org/bot987:ZZZ_unknown-token/getMe failed",
            "POST https://api.telegram.org/bot***/getMe failed",
        ),
        ("GET /file/bot1:x/photos/1.jpg", "GET /file/bot***/photos/1.jpg"),
        # Credential headers: as text, in JSON, in a dict repr.
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        (
            '{"api-key": "azure-secret", "X-Title": "my bot"}',
            '{"api-key": "***", "X-Title": "my bot"}',
        ),
        ("{'authorization': 'Basic dXNlcjpwYXNz'}", "{'authorization': 'Basic ***'}"),
        ("x-api-key=k1, next", "x-api-key=***, next"),
        # Secret-named query parameters; the others stay readable.
        (
            "https://h/v1/images/generations?api-version=2025-04-01&sig=abc123&key=k",
            "https://h/v1/images/generations?api-version=2025-04-01&sig=***&key=***",
        ),
        ("https://fn.example/api?code=AzureFnKey", "https://fn.example/api?code=***"),
        # A password in a URL, and OpenAI-style keys anywhere.
        ("http://user:hunter2@proxy:3128/", "http://user:***@proxy:3128/"),
        ("Incorrect API key provided: sk-abc1********wxyz.", "Incorrect API key provided: sk-***."),
    ],
)
def test_secrets_are_hidden_by_their_shape(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "the bot is open to everyone: neither ALLOWED_USER_IDS nor ALLOWED_CHAT_IDS is set",
        "bot @image_bot is running (long polling, model gpt-image-2)",
        "images generations attempt 1/3 failed (unavailable); retrying in 0.50 s",
        "authorization failed for this request",  # the word alone carries no value
        "a robot/bottle and a sketch of a dog",
        "https://api.example.com/v1?api-version=2025-04-01&model=x",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text, secrets=["x", "none", "o", "e", ""]) == text


def test_known_secrets_are_hidden_anywhere_longest_first() -> None:
    key = "gateway-key-0123456789"
    text = f"echoed body: {{'prompt': 'cat', 'token': 'irrelevant'}} with {key} and {key}-suffix"
    hidden = redact(text, secrets=[key[:12], key])
    assert key not in hidden
    assert key[:12] not in hidden
    assert hidden.count(REDACTED) >= 2


def test_short_keys_are_not_searched_for_but_still_hidden_in_headers() -> None:
    assert MIN_SECRET_LENGTH >= 6
    redactor = Redactor(["x", "none", "sk-1"])
    text = "none of the sizes fit; Authorization: Bearer none; api-key: x; next"
    assert redactor(text) == "none of the sizes fit; Authorization: Bearer ***; api-key: ***; next"


def test_secret_header_values_are_the_credential_ones() -> None:
    headers = {
        "api-key": "az",
        "X-Title": "my bot",
        "Authorization": "Bearer t",
        "X-Auth-Token": "v",
    }
    assert secret_header_values(headers) == ["az", "Bearer t", "v"]


def _format(formatter: logging.Formatter, message: str, *args: object) -> str:
    try:
        raise RuntimeError(f"GET https://api.telegram.org/bot{TOKEN}/getUpdates failed")
    except RuntimeError:
        record = logging.LogRecord(
            "bot.app", logging.ERROR, __file__, 1, message, args, sys.exc_info()
        )
    return formatter.format(record)


def test_log_lines_keep_their_words_with_a_one_letter_key() -> None:
    # LocalAI setups often use OPENAI_API_KEY=x or none; the old formatter replaced every "e".
    formatter = entry.RedactingFormatter(entry.LOG_FORMAT, secrets=[TOKEN, "e", "none", ""])
    text = _format(formatter, "images %s attempt %d failed: %s", "generations", 1, "none left")
    assert "ERROR bot.app: images generations attempt 1 failed: none left" in text
    assert "RuntimeError: GET https://api.telegram.org/bot***/getUpdates failed" in text
    assert TOKEN not in text


def test_log_lines_hide_the_key_the_token_and_credential_headers() -> None:
    formatter = entry.RedactingFormatter(entry.LOG_FORMAT, secrets=[TOKEN, KEY, "azure-key-1234"])
    text = _format(
        formatter,
        "POST %s headers=%s body=%s",
        "https://h/openai/deployments/d/images/generations?api-version=1&sig=s3cr3t",
        {"api-key": "azure-key-1234", "Authorization": f"Bearer {KEY}"},
        f"Incorrect API key provided: {KEY}",
    )
    for secret in (TOKEN, KEY, "azure-key-1234", "s3cr3t"):
        assert secret not in text
    assert "?api-version=1&sig=***" in text
    assert "Incorrect API key provided: ***" in text
