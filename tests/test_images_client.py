"""ImagesClient against the schema-checking OpenAI emulator, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from PIL import Image

from bot import __version__
from bot.capabilities import ImageDescription, caps_for, resolve
from bot.images import (
    ImagesAuthError,
    ImagesBadRequest,
    ImagesClient,
    ImagesError,
    ImagesQuotaExhausted,
    ImagesRateLimited,
    ImagesRefused,
    ImagesTimeout,
    ImagesUnavailable,
    build_generation_body,
    sniff_format,
)
from bot.prompt import ImageOptions
from tests.emulators.openai_images import Fault, OpenAIEmulator, render_picture

API_KEY = "sk-test-0123456789abcdef"
FIXED_NOW = datetime(2026, 1, 1, tzinfo=UTC)


class RecordingSleep:
    """Stand-in for asyncio.sleep that records the delays and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture(scope="module")
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as emu:
        yield emu


@pytest.fixture
def emu(emulator: OpenAIEmulator) -> Iterator[OpenAIEmulator]:
    emulator.reset()
    emulator.api_key = API_KEY
    emulator.answer_with = "b64_json"
    emulator.delay = 0.0
    emulator.image_bytes = None
    yield emulator
    assert emulator.invalid_requests == []


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


def make_client(emu: OpenAIEmulator, sleeps: RecordingSleep, **overrides: Any) -> ImagesClient:
    options: dict[str, Any] = {
        "base_url": emu.base_url,
        "api_key": API_KEY,
        "sleep": sleeps,
        "clock": lambda: FIXED_NOW,
        "random": lambda: 0.5,
        "timeout": 5.0,
    }
    options.update(overrides)
    return ImagesClient(**options)


@pytest.fixture
async def client(emu: OpenAIEmulator, sleeps: RecordingSleep) -> AsyncIterator[ImagesClient]:
    async with make_client(emu, sleeps) as images:
        yield images


def describe(model: str, prompt: str = "a yellow alpaca", **options: Any) -> ImageDescription:
    return resolve(prompt=prompt, options=ImageOptions(**options), caps=caps_for(model))


async def generate(client: ImagesClient, model: str, **options: Any) -> Any:
    return await client.generate(describe(model, **options), caps_for(model))


def picture_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


# -- successful answers -------------------------------------------------------------------------


async def test_b64_answer(client: ImagesClient, emu: OpenAIEmulator) -> None:
    result = await generate(client, "gpt-image-2", size="1536x864", quality="high")
    assert result.model == "gpt-image-2"
    assert len(result.images) == 1
    image = result.images[0]
    assert picture_size(image.data) == (1536, 864)
    assert image.output_format == "png"
    assert image.source_url is None
    assert (result.size, result.quality, result.background) == ("1536x864", "high", "opaque")
    # Realistic usage: 4 text tokens, 4160 output tokens per 1024x1024 high scaled to 1536x864.
    assert result.usage is not None and result.usage["total_tokens"] == 4 + 5265
    assert result.elapsed > 0
    [request] = emu.api_requests
    assert request.json == {
        "prompt": "a yellow alpaca",
        "model": "gpt-image-2",
        "n": 1,
        "size": "1536x864",
        "quality": "high",
    }
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"telegram-image-bot/{__version__}"


async def test_several_images_in_one_request(client: ImagesClient, emu: OpenAIEmulator) -> None:
    result = await generate(client, "gpt-image-1", count=4, size="portrait")
    assert len(result.images) == 4
    assert {picture_size(image.data) for image in result.images} == {(1024, 1536)}
    [request] = emu.api_requests
    assert request.json["n"] == 4


async def test_transparent_background(client: ImagesClient, emu: OpenAIEmulator) -> None:
    result = await generate(client, "gpt-image-1.5", background="transparent")
    assert result.background == "transparent"
    with Image.open(io.BytesIO(result.images[0].data)) as image:
        assert image.mode == "RGBA"
    assert emu.api_requests[0].json["output_format"] == "png"


async def test_url_answer_is_downloaded_without_credentials(
    emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.answer_with = "url"
    async with make_client(emu, sleeps, extra_headers={"X-Org": "acme"}) as client:
        result = await generate(client, "gpt-image-1", count=2)
    assert len(result.images) == 2
    for image in result.images:
        assert image.source_url is not None and image.source_url.startswith(emu.url + "/files/")
        assert picture_size(image.data) == (1024, 1024)
        assert image.output_format == "png"
    downloads = [request for request in emu.requests if request.path.startswith("/files/")]
    assert len(downloads) == 2
    for download in downloads:
        assert "Authorization" not in download.headers
        assert "X-Org" not in download.headers


async def test_data_url_answer(sleeps: RecordingSleep) -> None:
    # Some compatible hosts answer data: URLs; they are decoded, not downloaded.
    import base64

    picture = render_picture(64, 64, fmt="webp")
    encoded = base64.b64encode(picture).decode()

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/images/generations"
        payload = {"created": 1, "data": [{"url": f"data:image/webp;base64,{encoded}"}]}
        return httpx.Response(200, json=payload)

    async with ImagesClient(
        base_url="http://images.invalid/v1",
        api_key="",
        transport=httpx.MockTransport(answer),
        sleep=sleeps,
    ) as client:
        result = await generate(client, "local-model")
    assert result.images[0].data == picture
    assert result.images[0].output_format == "webp"
    assert result.images[0].source_url is None


@pytest.mark.parametrize(
    ("model", "sends_response_format"),
    [
        ("dall-e-2", True),
        ("dall-e-3", True),
        ("gpt-image-2", False),
        ("gpt-image-1", False),
        ("chatgpt-image-latest", False),
        ("stable-diffusion-xl", False),
    ],
)
async def test_response_format_only_for_dalle(
    client: ImagesClient, emu: OpenAIEmulator, model: str, sends_response_format: bool
) -> None:
    result = await generate(client, model)
    [request] = emu.api_requests
    assert ("response_format" in request.json) is sends_response_format
    if sends_response_format:
        assert request.json["response_format"] == "b64_json"
    assert result.images[0].source_url is None  # answered b64 in every case


async def test_dalle3_fans_out_one_request_per_image(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.delay = 0.3
    started = time.perf_counter()
    task = asyncio.create_task(generate(client, "dall-e-3", count=3, quality="hd", style="natural"))
    arrived = await asyncio.to_thread(emu.wait_for_requests, 3, 2.0)
    assert len(arrived) == 3
    assert not task.done()  # all three were in flight before any answer
    result = await task
    elapsed = time.perf_counter() - started
    assert len(result.images) == 3
    assert all(image.revised_prompt for image in result.images)
    requests = emu.api_requests
    assert len(requests) == 3
    assert [request.json["n"] for request in requests] == [1, 1, 1]
    assert {request.json["style"] for request in requests} == {"natural"}
    assert {request.json["quality"] for request in requests} == {"hd"}
    assert emu.peak_in_flight == 3
    assert elapsed < 0.85  # parallel, not 3 × 0.3 s


async def test_fan_out_returns_the_successes(client: ImagesClient, emu: OpenAIEmulator) -> None:
    emu.queue_faults([Fault.http(400, code="content_policy_violation")])
    result = await generate(client, "dall-e-3", count=3)
    assert len(result.images) == 2
    assert len(emu.api_requests) == 3


async def test_fan_out_raises_the_first_error_when_all_fail(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.queue_faults([Fault.http(400, code="content_policy_violation")] * 2)
    with pytest.raises(ImagesRefused):
        await generate(client, "dall-e-3", count=2)
    assert len(emu.api_requests) == 2


async def test_extra_headers_and_body(emu: OpenAIEmulator, sleeps: RecordingSleep) -> None:
    extra = {"moderation": "low", "user": "tg-42", "prompt": "hijacked", "model": "x", "n": 9}
    description = resolve(
        prompt="a yellow alpaca",
        options=ImageOptions(count=2),
        caps=caps_for("gpt-image-2"),
        extra=extra,
    )
    async with make_client(emu, sleeps, extra_headers={"X-Org": "acme"}) as client:
        result = await client.generate(description, caps_for("gpt-image-2"))
    assert len(result.images) == 2
    [request] = emu.api_requests
    assert request.headers["X-Org"] == "acme"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.json == {
        "prompt": "a yellow alpaca",
        "model": "gpt-image-2",
        "n": 2,
        "moderation": "low",
        "user": "tg-42",
    }


async def test_no_authorization_header_without_a_key(
    emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.api_key = None
    async with make_client(emu, sleeps, api_key="", base_url=emu.base_url + "/") as client:
        await generate(client, "gpt-image-1")
    [request] = emu.api_requests
    assert "Authorization" not in request.headers
    assert request.path == "/v1/images/generations"  # trailing slash of the base tolerated


async def test_edit_multipart(client: ImagesClient, emu: OpenAIEmulator) -> None:
    source = render_picture(256, 256)
    mask = render_picture(256, 256, transparent=True)
    description = describe("gpt-image-1", prompt="add a hat", size="square", quality="low")
    result = await client.edit(description, caps_for("gpt-image-1"), image=source, mask=mask)
    assert picture_size(result.images[0].data) == (1024, 1024)
    [request] = emu.api_requests
    assert request.endpoint == "edits"
    assert request.form == {
        "prompt": "add a hat",
        "model": "gpt-image-1",
        "n": "1",
        "size": "1024x1024",
        "quality": "low",
    }
    assert request.files is not None
    assert request.files["image"][0].data == source
    assert request.files["image"][0].content_type == "image/png"
    assert request.files["mask"][0].data == mask


async def test_edit_dalle2_sends_response_format(client: ImagesClient, emu: OpenAIEmulator) -> None:
    description = describe("dall-e-2", prompt="add a hat", size="512x512", count=2)
    result = await client.edit(
        description, caps_for("dall-e-2"), image=render_picture(64, 64), image_filename="in.png"
    )
    assert len(result.images) == 2
    [request] = emu.api_requests
    assert request.form is not None and request.form["response_format"] == "b64_json"
    assert request.files is not None and request.files["image"][0].filename == "in.png"


async def test_edit_refused_locally_for_models_without_edits(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    with pytest.raises(ImagesBadRequest):
        await client.edit(describe("dall-e-3"), caps_for("dall-e-3"), image=b"png")
    assert emu.api_requests == []


async def test_variation(client: ImagesClient, emu: OpenAIEmulator) -> None:
    result = await client.variation(
        model="dall-e-2",
        caps=caps_for("dall-e-2"),
        image=render_picture(64, 64),
        n=2,
        size="256x256",
    )
    assert [picture_size(image.data) for image in result.images] == [(256, 256), (256, 256)]
    [request] = emu.api_requests
    assert request.endpoint == "variations"
    assert request.form == {
        "model": "dall-e-2",
        "n": "2",
        "size": "256x256",
        "response_format": "b64_json",
    }


# -- errors that are not retried ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error_type", "kind", "status", "code"),
    [
        (
            Fault.http(400, code="moderation_blocked"),
            ImagesRefused,
            "refused",
            400,
            "moderation_blocked",
        ),
        (
            Fault.http(400, code="content_policy_violation"),
            ImagesRefused,
            "refused",
            400,
            "content_policy_violation",
        ),
        (
            Fault.http(400, code=None, message="Your request was rejected by the safety system."),
            ImagesRefused,
            "refused",
            400,
            None,
        ),
        (
            Fault.http(400, code="invalid_value"),
            ImagesBadRequest,
            "bad_request",
            400,
            "invalid_value",
        ),
        (Fault.http(404), ImagesBadRequest, "bad_request", 404, "model_not_found"),
        (Fault.http(422, body="unprocessable"), ImagesBadRequest, "bad_request", 422, None),
        (Fault.http(401), ImagesAuthError, "auth", 401, "invalid_api_key"),
        (Fault.http(403), ImagesAuthError, "auth", 403, "unsupported_country_region_territory"),
        (
            Fault.http(429, code="insufficient_quota", retry_after=1),
            ImagesQuotaExhausted,
            "quota",
            429,
            "insufficient_quota",
        ),
        (Fault.http(400, type="insufficient_quota"), ImagesQuotaExhausted, "quota", 400, None),
    ],
)
async def test_errors_not_retried(
    client: ImagesClient,
    emu: OpenAIEmulator,
    sleeps: RecordingSleep,
    fault: Fault,
    error_type: type[ImagesError],
    kind: str,
    status: int,
    code: str | None,
) -> None:
    emu.queue_faults([fault])
    with pytest.raises(error_type) as caught:
        await generate(client, "gpt-image-2")
    error = caught.value
    assert error.kind == kind
    assert error.status == status
    assert error.code == code
    assert error.detail
    assert len(emu.api_requests) == 1
    assert sleeps.calls == []


async def test_bad_request_keeps_the_service_message(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.queue_faults([Fault.http(400, code="invalid_value", message="Invalid size   '7x7'.\n")])
    with pytest.raises(ImagesBadRequest) as caught:
        await generate(client, "gpt-image-2")
    assert caught.value.detail == "Invalid size '7x7'."
    assert "Invalid size '7x7'." in str(caught.value)


async def test_long_detail_is_trimmed(client: ImagesClient, emu: OpenAIEmulator) -> None:
    emu.queue_faults([Fault.http(400, message="x" * 5000)])
    with pytest.raises(ImagesBadRequest) as caught:
        await generate(client, "gpt-image-2")
    assert caught.value.detail is not None and len(caught.value.detail) <= 500


async def test_read_timeout(emu: OpenAIEmulator, sleeps: RecordingSleep) -> None:
    emu.queue_faults([Fault.hang(10)])
    started = time.perf_counter()
    async with make_client(emu, sleeps, timeout=0.5) as client:
        with pytest.raises(ImagesTimeout) as caught:
            await generate(client, "gpt-image-2")
    assert time.perf_counter() - started < 3
    assert caught.value.kind == "timeout"
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert len(emu.api_requests) == 1
    assert sleeps.calls == []


# -- retries ------------------------------------------------------------------------------------


async def test_retry_after_seconds(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.queue_faults([Fault.http(429, retry_after=2)])
    result = await generate(client, "gpt-image-2")
    assert len(result.images) == 1
    assert sleeps.calls == [2.0]
    assert len(emu.api_requests) == 2


async def test_retry_after_http_date(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.queue_faults([Fault.http(429, retry_after="Thu, 01 Jan 2026 00:00:05 GMT")])
    await generate(client, "gpt-image-2")
    assert sleeps.calls == [5.0]
    assert len(emu.api_requests) == 2


async def test_retry_after_is_capped(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.queue_faults([Fault.http(429, retry_after=600)])
    await generate(client, "gpt-image-2")
    assert sleeps.calls == [60.0]


async def test_429_without_retry_after_backs_off(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.queue_faults([429, 429])
    await generate(client, "gpt-image-2")
    assert sleeps.calls == [0.25, 0.5]  # random()=0.5 × 0.5 s × 2^attempt
    assert len(emu.api_requests) == 3


async def test_rate_limited_after_every_attempt(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.queue_faults([Fault.http(429, retry_after=7)] * 3)
    with pytest.raises(ImagesRateLimited) as caught:
        await generate(client, "gpt-image-2")
    assert caught.value.kind == "rate_limited"
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429
    assert sleeps.calls == [7.0, 7.0]
    assert len(emu.api_requests) == 3


async def test_server_error_then_success(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.queue_faults([500])
    result = await generate(client, "gpt-image-2")
    assert len(result.images) == 1
    assert sleeps.calls == [0.25]
    assert len(emu.api_requests) == 2


@pytest.mark.parametrize(
    "fault",
    [
        500,
        502,
        503,
        "garbage",
        "bad_base64",
        "empty_data",
        "disconnect",
        Fault.http(500, body="oops"),
    ],
)
async def test_unavailable_after_every_attempt(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep, fault: Fault | int | str
) -> None:
    emu.queue_faults([fault] * 3)
    with pytest.raises(ImagesUnavailable) as caught:
        await generate(client, "gpt-image-2")
    assert caught.value.kind == "unavailable"
    assert len(emu.api_requests) == 3
    assert sleeps.calls == [0.25, 0.5]


@pytest.mark.parametrize("fault", ["garbage", "bad_base64", "empty_data", "disconnect"])
async def test_garbled_answer_then_success(
    client: ImagesClient, emu: OpenAIEmulator, fault: str
) -> None:
    emu.queue_faults([fault])
    result = await generate(client, "gpt-image-2")
    assert len(result.images) == 1
    assert len(emu.api_requests) == 2


async def test_backoff_is_capped(emu: OpenAIEmulator, sleeps: RecordingSleep) -> None:
    emu.queue_faults([500] * 6)
    async with make_client(emu, sleeps, max_attempts=7, random=lambda: 1.0) as client:
        await generate(client, "gpt-image-2")
    assert sleeps.calls == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


async def test_connection_refused(sleeps: RecordingSleep) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with ImagesClient(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, sleep=sleeps, random=lambda: 0.5
    ) as client:
        with pytest.raises(ImagesUnavailable) as caught:
            await generate(client, "gpt-image-2")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert sleeps.calls == [0.25, 0.5]


async def test_download_failure_is_retried(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.answer_with = "url"
    emu.queue_download_faults([404])
    result = await generate(client, "gpt-image-1")
    assert len(result.images) == 1
    assert len(emu.api_requests) == 2
    assert sleeps.calls == [0.25]


async def test_download_too_large(emu: OpenAIEmulator, sleeps: RecordingSleep) -> None:
    emu.answer_with = "url"
    async with make_client(emu, sleeps, max_download_bytes=1000) as client:
        with pytest.raises(ImagesUnavailable) as caught:
            await generate(client, "gpt-image-1")
    assert "1000 bytes" in str(caught.value)
    assert len(emu.api_requests) == 1


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault.http(400, message=f"bad key {API_KEY} here"),
        Fault.http(500, body=f"proxy saw Bearer {API_KEY}"),
        Fault.http(429, message=f"slow down {API_KEY}", retry_after=1),
        "garbage",
        "disconnect",
    ],
)
async def test_key_never_in_errors_or_logs(
    client: ImagesClient,
    emu: OpenAIEmulator,
    caplog: pytest.LogCaptureFixture,
    fault: Fault | str,
) -> None:
    caplog.set_level(logging.DEBUG)
    emu.queue_faults([fault] * 3)
    with pytest.raises(ImagesError) as caught:
        await generate(client, "gpt-image-2")
    error = caught.value
    for text in (str(error), repr(error), error.detail or "", caplog.text, repr(client)):
        assert API_KEY not in text


async def test_wrong_key_is_not_echoed(emu: OpenAIEmulator, sleeps: RecordingSleep) -> None:
    wrong = "sk-wrong-key-fedcba9876543210"
    async with make_client(emu, sleeps, api_key=wrong) as client:
        with pytest.raises(ImagesAuthError) as caught:
            await generate(client, "gpt-image-2")
    assert caught.value.detail is not None and "Incorrect API key" in caught.value.detail
    for text in (str(caught.value), repr(caught.value), caught.value.detail):
        assert wrong not in text
        assert "fedcba9876543210" not in text


# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (render_picture(8, 8), "png"),
        (render_picture(8, 8, fmt="jpeg"), "jpeg"),
        (render_picture(8, 8, fmt="webp"), "webp"),
        (b"GIF89a....", "gif"),
        (b"not a picture", None),
        (b"", None),
    ],
)
def test_sniff_format(data: bytes, name: str | None) -> None:
    assert sniff_format(data) == name


def test_generation_body_only_sends_what_the_model_accepts() -> None:
    description = ImageDescription(
        prompt="p",
        model="dall-e-3",
        n=3,
        size="1024x1024",
        quality="hd",
        style="vivid",
        background="transparent",
        output_format="png",
    )
    assert build_generation_body(description, caps_for("dall-e-3")) == {
        "prompt": "p",
        "model": "dall-e-3",
        "n": 1,
        "size": "1024x1024",
        "quality": "hd",
        "style": "vivid",
        "response_format": "b64_json",
    }
    gpt = ImageDescription(prompt="p", model="gpt-image-2", n=3, style="vivid", background="auto")
    assert build_generation_body(gpt, caps_for("gpt-image-2")) == {
        "prompt": "p",
        "model": "gpt-image-2",
        "n": 3,
        "background": "auto",
    }


# -- the emulator's own checks (so the empty invalid_requests above means something) ------------


async def test_emulator_rejects_what_the_real_api_rejects(emu: OpenAIEmulator) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    bad_bodies = [
        {"model": "gpt-image-1", "prompt": "p", "response_format": "b64_json"},
        {"model": "gpt-image-1", "prompt": "p", "n": 11},
        {"model": "gpt-image-2", "prompt": "p", "size": "1000x1000"},
        {"model": "dall-e-3", "prompt": "p", "n": 2},
        {"model": "dall-e-2", "prompt": "p", "quality": "hd"},
        {"model": "dall-e-3", "prompt": "p", "style": "loud"},
        {"model": "gpt-image-1"},
    ]
    async with httpx.AsyncClient(headers=headers) as raw:
        for body in bad_bodies:
            response = await raw.post(f"{emu.base_url}/images/generations", json=body)
            assert response.status_code == 400, body
            assert response.json()["error"]["type"] == "invalid_request_error"
        response = await raw.post(
            f"{emu.base_url}/images/variations",
            data={"model": "dall-e-2", "size": "999x999", "n": "1"},
            files={"image": ("a.png", render_picture(8, 8), "image/png")},
        )
        assert response.status_code == 400
        response = await raw.post(
            f"{emu.base_url}/images/edits",
            data={"model": "gpt-image-1", "prompt": "p"},
            files={"mask": ("m.png", b"x", "image/png")},
        )
        assert response.status_code == 400  # image missing
    assert len(emu.invalid_requests) == len(bad_bodies) + 2
    emu.reset()
