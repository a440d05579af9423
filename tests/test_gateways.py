"""Gateways (LiteLLM and other OpenAI-compatible fronts): reading their errors, aliases, attempts.

Pure tables for `classify_response` / `error_fields` (bodies as LiteLLM 1.108 really sends them,
recorded from the proxy in front of the images emulator), then the images client and the bot
behind the gateway emulator (tests/emulators/gateway.py) over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from bot.capabilities import caps_for, resolve
from bot.config import ConfigError, load_settings
from bot.images import ImagesClient
from bot.images.errors import (
    ImagesAuthError,
    ImagesBadRequest,
    ImagesEndpointNotFound,
    ImagesError,
    ImagesNotOffered,
    ImagesQuotaExhausted,
    ImagesRateLimited,
    ImagesRefused,
    ImagesTimeout,
    ImagesUnavailable,
    classify_response,
    error_fields,
    parse_retry_after,
)
from bot.prompt import ImageOptions
from tests.conftest import ADMIN, API_KEY, BotFactory
from tests.emulators.gateway import GatewayEmulator, cooldown_error, litellm_error
from tests.emulators.openai_images import Fault, OpenAIEmulator, error_body, render_picture

NOW = datetime(2026, 1, 1, tzinfo=UTC)
QUIET = {"STATUS_MESSAGE_DELAY_SECONDS": "30"}
TRAILER = (
    "\n\nLiteLLM: model group 'dall-e-3' failed with the error above. No fallback was attempted."
)


def litellm(message: str, *, type: str | None, code: str) -> bytes:
    """A LiteLLM proxy error body."""
    return json.dumps(
        {"error": {"message": message + TRAILER, "type": type, "param": None, "code": code}}
    ).encode()


def classify(
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> ImagesError:
    return classify_response(status, headers or {}, body, now=NOW, scrub=lambda t: t, **kwargs)


# -- error_fields: reading through the wrapping ------------------------------------------------

FIELDS = [
    pytest.param(
        json.dumps(error_body(status=400, code="moderation_blocked")).encode(),
        ("Your request was rejected by the safety system.", "moderation_blocked"),
        id="openai",
    ),
    pytest.param(
        litellm(
            "litellm.BadRequestError: OpenAIException - Your request was rejected by the safety "
            "system.",
            type="image_generation_user_error",
            code="400",
        ),
        ("Your request was rejected by the safety system.", None),
        id="litellm-text",
    ),
    pytest.param(
        litellm(
            'litellm.RateLimitError: RateLimitError: OpenAIException - {"error": {"message": '
            '"Rate limit reached for requests.", "type": "requests", "param": null, '
            '"code": "rate_limit_exceeded"}}',
            type="throttling_error",
            code="429",
        ),
        ("Rate limit reached for requests.", "rate_limit_exceeded"),
        id="litellm-embedded-json",
    ),
    pytest.param(
        litellm(
            "litellm.BadRequestError: OpenAIException - Error code: 400 - {'error': {'message': "
            "'Billing hard limit has been reached', 'type': 'invalid_request_error', "
            "'code': 'billing_hard_limit_reached'}}",
            type=None,
            code="400",
        ),
        ("Billing hard limit has been reached", "billing_hard_limit_reached"),
        id="litellm-embedded-python-repr",
    ),
    pytest.param(
        json.dumps({"error": {"message": "Bad size", "code": 400, "type": None}}).encode(),
        ("Bad size", None),
        id="numeric-code",
    ),
    pytest.param(
        json.dumps({"error": {"message": "x", "code": "content_filter"}}).encode(),
        ("x", "content_filter"),
        id="string-code",
    ),
    pytest.param(b'{"detail":"Not Found"}', ("Not Found", None), id="fastapi-detail"),
    pytest.param(b"<html>404 page not found</html>", ("<html>404 page not found</html>", None)),
    pytest.param(b'{"error": "model not loaded"}', ("model not loaded", None), id="error-string"),
    pytest.param(b"[1, 2]", ("[1, 2]", None), id="json-not-object"),
]


@pytest.mark.parametrize(("body", "expected"), FIELDS)
def test_error_fields_read_through_gateway_wrapping(
    body: bytes, expected: tuple[str, str | None]
) -> None:
    message, code, _ = error_fields(body)
    assert (message, code) == expected


def test_error_fields_survive_a_hostile_embedded_text() -> None:
    nested = "{" * 5000 + "}" * 5000
    body = json.dumps({"error": {"message": f"OpenAIException - {nested}"}}).encode()
    message, code, _ = error_fields(body)
    assert code is None
    assert message.startswith("{")


# -- classify_response: what went wrong ---------------------------------------------------------

LITELLM_REFUSAL = litellm(
    "litellm.BadRequestError: OpenAIException - Your request was rejected as a result of our "
    "safety system.",
    type="invalid_request_error",
    code="400",
)
LITELLM_QUOTA = litellm(
    "litellm.RateLimitError: RateLimitError: OpenAIException - You exceeded your current quota.",
    type="throttling_error",
    code="429",
)
LITELLM_RATE = litellm(
    "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for requests.",
    type="throttling_error",
    code="429",
)
LITELLM_TIMEOUT = litellm(
    "litellm.Timeout: Timeout Error: OpenAIException - Request timed out.",
    type="invalid_request_error",
    code="408",
)
LITELLM_AUTH = litellm(
    "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect API key.",
    type="authentication_error",
    code="401",
)
COOLDOWN = json.dumps(cooldown_error("dall-e-3", 5)).encode()
NOT_FOUND = b'{"detail":"Not Found"}'

CLASSIFIED = [
    pytest.param(400, LITELLM_REFUSAL, {}, ImagesRefused, id="litellm-refusal"),
    pytest.param(
        400,
        json.dumps({"error": {"message": "Blocked by content policy", "code": "400"}}).encode(),
        {},
        ImagesRefused,
        id="refusal-phrase-other-wording",
    ),
    pytest.param(
        422,
        b'{"error": {"code": "content_filter", "message": "filtered"}}',
        {},
        ImagesRefused,
        id="azure-content-filter",
    ),
    pytest.param(429, LITELLM_QUOTA, {}, ImagesQuotaExhausted, id="litellm-quota-under-429"),
    pytest.param(
        400,
        json.dumps({"error": {"message": "insufficient_quota: top up", "code": 400}}).encode(),
        {},
        ImagesQuotaExhausted,
        id="quota-code-in-text",
    ),
    pytest.param(429, LITELLM_RATE, {}, ImagesRateLimited, id="litellm-rate-limit"),
    pytest.param(408, LITELLM_TIMEOUT, {}, ImagesTimeout, id="litellm-408"),
    pytest.param(408, b"", {}, ImagesTimeout, id="bare-408"),
    pytest.param(401, LITELLM_AUTH, {}, ImagesAuthError, id="litellm-auth"),
    pytest.param(429, COOLDOWN, {}, ImagesRateLimited, id="cooldown-without-auth-failure"),
    pytest.param(
        429, COOLDOWN, {"recent_auth_failure": True}, ImagesAuthError, id="cooldown-after-auth"
    ),
    pytest.param(404, NOT_FOUND, {}, ImagesEndpointNotFound, id="generations-404"),
    pytest.param(405, b"Method Not Allowed", {}, ImagesEndpointNotFound, id="generations-405"),
    pytest.param(404, NOT_FOUND, {"endpoint": "variations"}, ImagesNotOffered, id="variations-404"),
    pytest.param(405, b"", {"endpoint": "edits"}, ImagesNotOffered, id="edits-405"),
    pytest.param(
        404,
        b'{"error": {"message": "Invalid URL (POST /v1/images/edits)", "code": null}}',
        {"endpoint": "edits"},
        ImagesEndpointNotFound,
        id="edits-404-openai-body",
    ),
    pytest.param(
        404,
        json.dumps(error_body(status=404)).encode(),
        {},
        ImagesBadRequest,
        id="model-not-found",
    ),
    pytest.param(500, b"oops", {}, ImagesUnavailable, id="500"),
    pytest.param(400, b'{"error": {"message": "bad size", "code": "400"}}', {}, ImagesBadRequest),
]


@pytest.mark.parametrize(("status", "body", "kwargs", "expected"), CLASSIFIED)
def test_classify_reads_gateway_answers(
    status: int, body: bytes, kwargs: dict[str, Any], expected: type[ImagesError]
) -> None:
    error = classify(status, body, **kwargs)
    assert type(error) is expected
    assert error.status == status


def test_detail_loses_the_gateway_wrapping() -> None:
    error = classify(400, LITELLM_REFUSAL)
    assert error.detail == "Your request was rejected as a result of our safety system."
    assert error.code is None  # "400" is not a code


RETRY_AFTER = [
    pytest.param({"retry-after-ms": "1500"}, "", 1.5, id="retry-after-ms"),
    pytest.param({"retry-after": "7"}, "", 7.0, id="retry-after-seconds"),
    pytest.param(
        {"retry-after": format_datetime(NOW + timedelta(seconds=30), usegmt=True)},
        "",
        30.0,
        id="retry-after-date",
    ),
    pytest.param({"llm_provider-retry-after": "12"}, "", 12.0, id="llm-provider-retry-after"),
    pytest.param({}, "No deployments available, Try again in 5 seconds.", 5.0, id="text-seconds"),
    pytest.param({}, "Please try again in 6.5s.", 6.5, id="text-s"),
    pytest.param({}, "Please try again in 250ms.", 0.25, id="text-ms"),
    pytest.param({}, "Please try again in 1m30s.", 90.0, id="text-minutes"),
    pytest.param({"retry-after": "soon"}, "", None, id="garbled"),
    pytest.param({}, "Please try again in a while.", None, id="text-without-number"),
]


@pytest.mark.parametrize(("headers", "message", "expected"), RETRY_AFTER)
def test_retry_after_sources(headers: dict[str, str], message: str, expected: float | None) -> None:
    assert parse_retry_after(headers, NOW, message) == expected


def test_cooldown_429_takes_its_wait_from_the_text() -> None:
    error = classify(429, COOLDOWN)
    assert isinstance(error, ImagesRateLimited)
    assert error.retry_after == 5.0


# -- the gateway emulator's shapes --------------------------------------------------------------


def test_gateway_emulator_wraps_like_litellm() -> None:
    upstream = json.dumps(error_body(status=400, code="moderation_blocked")).encode()
    status, headers, body = litellm_error(
        400, {}, upstream, model="dall-e-3", endpoint="generations"
    )
    assert status == 400
    assert headers == {}
    assert body["error"]["code"] == "400"
    assert body["error"]["message"].startswith("litellm.BadRequestError: OpenAIException - ")
    assert body["error"]["message"].endswith("No fallback was attempted.")


def test_gateway_emulator_quota_is_a_throttling_error_without_retry_after() -> None:
    upstream = json.dumps(error_body(status=429, code="insufficient_quota")).encode()
    status, headers, body = litellm_error(
        429, {"Retry-After": "3"}, upstream, model="m", endpoint="generations"
    )
    assert (status, headers) == (429, {})
    assert body["error"]["type"] == "throttling_error"
    assert "insufficient_quota" not in json.dumps(body)  # only the phrase survives
    assert "exceeded your current quota" in body["error"]["message"]


def test_gateway_emulator_edits_keep_the_upstream_body_and_retry_after() -> None:
    upstream = json.dumps(error_body(status=429)).encode()
    _, headers, body = litellm_error(
        429, {"Retry-After": "3"}, upstream, model="m", endpoint="edits"
    )
    assert headers == {"llm_provider-retry-after": "3"}
    assert '"code": "rate_limit_exceeded"' in body["error"]["message"]


def test_gateway_emulator_timeout_shape() -> None:
    _, _, body = litellm_error(408, {}, b"", model="m", endpoint="generations")
    assert body["error"]["message"].startswith("litellm.Timeout: Timeout Error: OpenAIException")
    assert body["error"]["code"] == "408"


# -- the images client behind the gateway emulator ------------------------------------------------


class NoSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def upstream() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key="sk-upstream-0123456789") as emulator:
        yield emulator


@pytest.fixture
def gateway(upstream: OpenAIEmulator) -> Iterator[GatewayEmulator]:
    with GatewayEmulator(upstream) as emulator:
        yield emulator


def client_for(gateway: GatewayEmulator, **overrides: Any) -> ImagesClient:
    options: dict[str, Any] = {
        "base_url": gateway.base_url,
        "api_key": "sk-gateway-virtual-key",
        "sleep": NoSleep(),
        "random": lambda: 0.5,
        "timeout": 10.0,
    }
    options.update(overrides)
    return ImagesClient(**options)


def description(model: str, n: int = 1, aliases: dict[str, str] | None = None) -> Any:
    caps = caps_for(model, aliases)
    return resolve(prompt="a yellow alpaca", options=ImageOptions(count=n), caps=caps), caps


async def test_quota_behind_the_gateway_is_not_retried(
    gateway: GatewayEmulator, upstream: OpenAIEmulator
) -> None:
    upstream.queue_faults([Fault.http(429, code="insufficient_quota")] * 3)
    descr, caps = description("dall-e-3")
    async with client_for(gateway) as client:
        with pytest.raises(ImagesQuotaExhausted):
            await client.generate(descr, caps)
    assert len(upstream.api_requests) == 1


async def test_one_attempt_means_one_upstream_call(
    gateway: GatewayEmulator, upstream: OpenAIEmulator
) -> None:
    upstream.queue_faults([Fault.http(500)] * 3)
    descr, caps = description("dall-e-3")
    async with client_for(gateway, max_attempts=1) as client:
        with pytest.raises(ImagesUnavailable):
            await client.generate(descr, caps)
    assert len(upstream.api_requests) == 1


async def test_cooldown_after_an_auth_failure_is_reported_as_auth(
    gateway: GatewayEmulator, upstream: OpenAIEmulator
) -> None:
    upstream.api_key = "sk-rotated-key"  # the gateway's upstream key no longer works
    descr, caps = description("dall-e-3")
    async with client_for(gateway) as client:
        with pytest.raises(ImagesAuthError):
            await client.generate(descr, caps)
        with pytest.raises(ImagesAuthError) as caught:
            await client.generate(descr, caps)  # the gateway now answers 429 "cooldown"
    assert caught.value.status == 429
    assert len(upstream.api_requests) == 1
    assert gateway.answers[-1] == ("/v1/images/generations", 429)


async def test_cooldown_without_an_auth_failure_is_a_rate_limit(
    gateway: GatewayEmulator, upstream: OpenAIEmulator
) -> None:
    upstream.api_key = "sk-rotated-key"
    descr, caps = description("dall-e-3")
    async with client_for(gateway) as first:
        with pytest.raises(ImagesAuthError):
            await first.generate(descr, caps)
    sleeps = NoSleep()
    async with client_for(gateway, sleep=sleeps, max_attempts=2) as fresh:  # saw no 401
        with pytest.raises(ImagesRateLimited) as caught:
            await fresh.generate(descr, caps)
    assert caught.value.retry_after == 5.0
    assert sleeps.calls == [5.0]


async def test_variations_not_served_are_remembered(
    gateway: GatewayEmulator, upstream: OpenAIEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caps = caps_for("dall-e-2")
    picture = render_picture(256, 256)
    caplog.set_level(logging.WARNING, logger="bot.images.client")
    async with client_for(gateway) as client:
        assert client.offers("variations", "dall-e-2")
        with pytest.raises(ImagesNotOffered):
            await client.variation(model="dall-e-2", caps=caps, image=picture, n=1, size=None)
        assert not client.offers("variations", "dall-e-2")
        assert client.offers("variations", "other-model")
        assert client.offers("edits", "dall-e-2")
        with pytest.raises(ImagesNotOffered):
            await client.variation(model="dall-e-2", caps=caps, image=picture, n=1, size=None)
    assert gateway.answers == [("/v1/images/variations", 404)]  # asked once
    assert upstream.api_requests == []
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1
    assert logged[0].startswith("images API POST /v1/images/variations answered HTTP 404: ")
    assert "Not Found" in logged[0]


async def test_wrong_base_url_logs_method_path_status_and_body(
    upstream: OpenAIEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.images.client")
    descr, caps = description("gpt-image-2")
    # The server root without /v1: the most common base URL mistake.
    async with ImagesClient(base_url=upstream.url, api_key=API_KEY, timeout=5.0) as client:
        with pytest.raises(ImagesEndpointNotFound) as caught:
            await client.generate(descr, caps)
    assert caught.value.kind == "not_found"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "images API POST /images/generations answered HTTP 404" in logged
    assert API_KEY not in logged


async def test_alias_fans_out_one_picture_calls(
    gateway: GatewayEmulator, upstream: OpenAIEmulator
) -> None:
    upstream.api_key = None  # the gateway maps "my-dalle3" itself; the emulator checks dall-e-3
    descr, caps = description("my-dalle3", n=2, aliases={"my-dalle3": "dall-e-3"})
    assert caps.one_per_request
    assert descr.model == "my-dalle3"
    async with client_for(gateway) as client:
        result = await client.generate(descr, caps)
    assert len(result.images) == 2
    sent = [dict(r.fields) for r in upstream.api_requests]
    assert [(f["model"], f.get("n", 1), f.get("response_format")) for f in sent] == [
        ("my-dalle3", 1, "b64_json"),
        ("my-dalle3", 1, "b64_json"),
    ]


# -- capabilities and settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "aliases", "family_name", "one_per_request", "known"),
    [
        ("my-dalle3", {"my-dalle3": "dall-e-3"}, "my-dalle3", True, True),
        ("my-dalle3", None, "my-dalle3", False, False),
        ("openai/dall-e-3", None, "openai/dall-e-3", True, True),
        ("azure/gpt-image-1", None, "azure/gpt-image-1", False, True),
        ("flux", {"flux": "unknown"}, "flux", False, False),
        ("dall-e-3", {"dall-e-3": "unknown"}, "dall-e-3", False, False),
    ],
)
def test_caps_for_aliases_and_provider_prefixes(
    model: str,
    aliases: dict[str, str] | None,
    family_name: str,
    one_per_request: bool,
    known: bool,
) -> None:
    caps = caps_for(model, aliases)
    assert caps.name == family_name  # the operator's name is what is sent
    assert caps.one_per_request is one_per_request
    assert caps.known is known


def test_settings_defaults_for_gateways() -> None:
    settings = load_settings({"TELEGRAM_BOT_TOKEN": "1:x"})
    assert settings.image_max_attempts == 3
    assert dict(settings.model_aliases) == {}


def test_alias_checks_defaults_against_its_family() -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": "1:x",
        "IMAGE_MODEL": "my-dalle3",
        "MODEL_ALIASES": "my-dalle3=dall-e-3",
        "DEFAULT_IMAGE_SIZE": "1536x1024",  # a GPT image size, not dall-e-3's
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.problems[0].startswith("DEFAULT_IMAGE_SIZE='1536x1024'")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MODEL_ALIASES", "my-dalle3=dalle3", "a known model family"),
        ("MODEL_ALIASES", "my-dalle3", "model=family pairs"),
        ("MODEL_ALIASES", "=dall-e-3", "model=family pairs"),
        ("MODEL_ALIASES", "my dalle=dall-e-3", "model=family pairs"),
        ("IMAGE_MAX_ATTEMPTS", "0", "from 1 to 10"),
        ("IMAGE_MAX_ATTEMPTS", "11", "from 1 to 10"),
        ("IMAGE_MAX_ATTEMPTS", "two", "from 1 to 10"),
    ],
)
def test_bad_gateway_settings_are_one_clear_problem(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TELEGRAM_BOT_TOKEN": "1:x", name: value})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{name}: expected")
    assert expected in caught.value.problems[0]


# -- the bot ------------------------------------------------------------------------------------


async def admin_texts(bot: Any, count: int, timeout: float = 10.0) -> list[str]:
    """Wait for `count` messages to the admin; return their texts."""
    deadline = time.monotonic() + timeout
    texts: list[str] = []
    while time.monotonic() < deadline:
        texts = [m.text or "" for m in bot.tg.sent_messages(ADMIN) if m.kind == "text"]
        if len(texts) >= count:
            return texts
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} admin messages, got {texts}")


@pytest.fixture
def bot_gateway(oai: OpenAIEmulator) -> Iterator[GatewayEmulator]:
    with GatewayEmulator(oai) as emulator:
        yield emulator


async def test_base_url_without_v1_tells_user_and_admins(
    make_bot: BotFactory, oai: OpenAIEmulator
) -> None:
    async with make_bot(OPENAI_BASE_URL=oai.url, ADMIN_USER_IDS=str(ADMIN), **QUIET) as bot:
        reply = await bot.reply_text(bot.send("/image a yellow alpaca"))
        assert "misconfigured" in reply and "endpoint was not found" in reply
        (alert,) = await admin_texts(bot, 1)
        assert "OPENAI_BASE_URL" in alert and "404/405" in alert
        second = await bot.reply_text(bot.send("/image again"))
        assert "misconfigured" in second
        await bot.settle(0.3)
        assert len(await admin_texts(bot, 1)) == 1  # at most hourly


async def test_variations_behind_litellm_are_not_offered_after_the_first_404(
    make_bot: BotFactory, bot_gateway: GatewayEmulator
) -> None:
    env = {"OPENAI_BASE_URL": bot_gateway.base_url, "IMAGE_MODEL": "dall-e-2", **QUIET}
    async with make_bot(ADMIN_USER_IDS=str(ADMIN), **env) as bot:
        photo = bot.send("", photo_bytes=render_picture(64, 64))
        first = await bot.reply_text(bot.send("/variation", reply_to=photo))
        assert "does not offer that" in first
        (alert,) = await admin_texts(bot, 1)
        assert "/images/variations" in alert
        downloads = len(bot.tg.calls_of("getFile"))
        second = await bot.reply_text(bot.send("/variation", reply_to=photo))
        assert "does not offer that" in second
        await bot.settle(0.3)
        assert bot_gateway.answers == [("/v1/images/variations", 404)]
        assert len(bot.tg.calls_of("getFile")) == downloads  # not even downloaded again
        assert len(await admin_texts(bot, 1)) == 1
        # Generations through the same gateway still work.
        (picture,) = await bot.replies(bot.send("/image still here"), kinds=("photo",))
        assert picture.text == "still here"


async def test_quota_behind_litellm_is_told_once_and_not_retried(
    make_bot: BotFactory, bot_gateway: GatewayEmulator
) -> None:
    env = {"OPENAI_BASE_URL": bot_gateway.base_url, "IMAGE_MODEL": "dall-e-3", **QUIET}
    async with make_bot(ADMIN_USER_IDS=str(ADMIN), **env) as bot:
        bot.oai.queue_faults([Fault.http(429, code="insufficient_quota")] * 3)
        reply = await bot.reply_text(bot.send("/image a yellow alpaca"))
        assert "run out of credit" in reply
        (alert,) = await admin_texts(bot, 1)
        assert "quota" in alert
        assert len(bot.oai.api_requests) == 1


async def test_alias_x2_fans_out_through_the_bot(
    make_bot: BotFactory, bot_gateway: GatewayEmulator
) -> None:
    bot_gateway.upstream_key = None
    bot_gateway.upstream.api_key = None
    env = {
        "OPENAI_BASE_URL": bot_gateway.base_url,
        "IMAGE_MODEL": "my-dalle3",
        "MODEL_ALIASES": "my-dalle3=dall-e-3",
        "IMAGE_MAX_ATTEMPTS": "1",
    }
    async with make_bot(**env) as bot:
        album = await bot.replies(bot.send("/image a yellow alpaca x2"), count=2, kinds=("photo",))
        assert len(album) == 2
        sent = [dict(r.fields) for r in bot.oai.api_requests]
        assert [(f["model"], f.get("n", 1)) for f in sent] == [("my-dalle3", 1)] * 2
