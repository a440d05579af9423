"""ImagesClient against the schema-checking OpenAI emulator, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpcore
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
from bot.images import client as client_module
from bot.images.client import HTTP_READ_BYTES, tune_http_reads
from bot.prompt import ImageOptions
from tests.emulators.openai_images import Fault, OpenAIEmulator, big_picture, render_picture

API_KEY = "sk-test-0123456789abcdef"
FIXED_NOW = datetime(2026, 1, 1, tzinfo=UTC)


class RecordingSleep:
    """Stand-in for asyncio.sleep that records the delays and returns at once.

    `monotonic` is the client's clock: real time plus every wait "slept", so the whole-call
    deadline sees the waits as if they had happened.
    """

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    def monotonic(self) -> float:
        return time.monotonic() + sum(self.calls)


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
    emulator.big_pictures = False
    emulator.redirect_hops = 0
    emulator.redirect_to = "api"
    emulator.url_origin = "api"
    emulator.chunked = False
    emulator.answer_url = None
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
        "monotonic": sleeps.monotonic,
        "clock": lambda: FIXED_NOW,
        "random": lambda: 0.5,
        "timeout": 120.0,
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


async def generate_from_urls(
    emu: OpenAIEmulator, sleeps: RecordingSleep, *, count: int = 1, **emulator: Any
) -> Any:
    """Generate with `url` answers (emulator attributes as given), sending an extra header."""
    emu.answer_with = "url"
    for name, value in emulator.items():
        setattr(emu, name, value)
    async with make_client(emu, sleeps, extra_headers={"X-Org": "acme"}) as client:
        return await generate(client, "gpt-image-1", count=count)


def assert_without_api_headers(downloads: list[Any]) -> None:
    for download in downloads:
        assert "Authorization" not in download.headers
        assert "X-Org" not in download.headers


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


async def test_url_answer_on_another_origin_is_downloaded_without_credentials(
    emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    result = await generate_from_urls(emu, sleeps, count=2, url_origin="cdn")
    assert len(result.images) == 2
    for image in result.images:
        assert image.source_url is not None
        assert image.source_url.startswith(emu.cdn_url + "/files/")
        assert picture_size(image.data) == (1024, 1024)
        assert image.output_format == "png"
    downloads = emu.downloads
    assert [download.server for download in downloads] == ["cdn", "cdn"]
    assert_without_api_headers(downloads)


async def test_url_answer_on_the_api_origin_gets_the_api_headers(
    emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    # A self-hosted server may guard its files with the same key; it is its own origin.
    result = await generate_from_urls(emu, sleeps)
    assert len(result.images) == 1
    [download] = emu.downloads
    assert download.server == "api"
    assert download.headers["Authorization"] == f"Bearer {API_KEY}"
    assert download.headers["X-Org"] == "acme"


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
    # The whole-call deadline or httpx's read timeout, whichever fires first; never retried.
    assert isinstance(caught.value.__cause__, TimeoutError | httpx.ReadTimeout)
    assert len(emu.api_requests) == 1
    assert sleeps.calls == []


# -- the retry policy, case by case: every test counts the POSTs (each one a paid call) ---------


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


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_quick_gateway_error_then_success(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep, status: int
) -> None:
    emu.queue_faults([status])
    result = await generate(client, "gpt-image-2")
    assert len(result.images) == 1
    assert sleeps.calls == [0.25]
    assert len(emu.api_requests) == 2


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_quick_gateway_error_after_every_attempt(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep, status: int
) -> None:
    emu.queue_faults([status] * 3)
    with pytest.raises(ImagesUnavailable) as caught:
        await generate(client, "gpt-image-2")
    assert caught.value.status == status
    assert len(emu.api_requests) == 3
    assert sleeps.calls == [0.25, 0.5]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(500, id="500"),
        pytest.param(Fault.http(500, body="oops"), id="500_text"),
        pytest.param(Fault.http(501), id="501"),
        pytest.param("garbage", id="malformed_json"),
        pytest.param("bad_base64", id="bad_base64"),
        pytest.param("empty_data", id="no_data"),
        pytest.param("disconnect", id="reset_after_send"),
    ],
)
async def test_final_without_a_second_post(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep, fault: Fault | int | str
) -> None:
    # The service had the whole request and may have drawn (and billed) the pictures.
    emu.queue_faults([fault, fault])
    with pytest.raises(ImagesUnavailable) as caught:
        await generate(client, "gpt-image-2")
    assert caught.value.kind == "unavailable"
    assert caught.value.method == "POST"
    assert len(emu.api_requests) == 1
    assert sleeps.calls == []


@pytest.mark.parametrize("status", [524, 504, 503])
async def test_gateway_error_after_a_long_wait_is_final(
    emu: OpenAIEmulator, sleeps: RecordingSleep, status: int
) -> None:
    # Like Cloudflare's 524 after 100 s: the upstream may have been drawing all along.
    emu.queue_faults([Fault.http(status, after=0.4), 200])
    async with make_client(emu, sleeps, quick_failure_seconds=0.2) as client:
        with pytest.raises(ImagesUnavailable) as caught:
            await generate(client, "gpt-image-2")
    assert caught.value.status == status
    assert len(emu.api_requests) == 1
    assert sleeps.calls == []


async def test_524_even_when_quick_is_final(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.queue_faults([524])
    with pytest.raises(ImagesUnavailable):
        await generate(client, "gpt-image-2")
    assert len(emu.api_requests) == 1


async def test_backoff_is_capped(emu: OpenAIEmulator, sleeps: RecordingSleep) -> None:
    emu.queue_faults([503] * 6)
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


def noisy_png(side: int) -> bytes:
    """Return an incompressible PNG of random pixels (about 3 bytes a pixel)."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def test_dropped_before_the_upload_was_sent_is_posted_again(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    # A proxy that closes the connection while a 12 MB upload is still being written: the
    # service never had a whole request, so the POST is made again.
    source = noisy_png(2000)
    assert len(source) > 10 * 1024 * 1024
    emu.queue_faults(["drop_before_body"])
    description = describe("gpt-image-1", prompt="add a hat")
    result = await client.edit(description, caps_for("gpt-image-1"), image=source)
    assert len(result.images) == 1
    first, second = emu.api_requests
    assert first.files is None  # its body was never read
    assert second.files is not None and second.files["image"][0].data == source
    assert sleeps.calls == [0.25]


# -- `url` answers: the download alone is retried -----------------------------------------------


async def test_failed_download_retries_the_download_alone(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.answer_with = "url"
    emu.queue_download_faults([404, "disconnect"])
    result = await generate(client, "gpt-image-1")
    assert len(result.images) == 1
    assert len(emu.api_requests) == 1
    assert len(emu.downloads) == 3
    assert sleeps.calls == [0.25, 0.5]


async def test_error_page_served_as_200_is_a_failed_download(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.answer_with = "url"
    emu.queue_download_faults(["html"])
    result = await generate(client, "gpt-image-1")
    assert result.images[0].data.startswith(b"\x89PNG")
    assert len(emu.api_requests) == 1
    assert len(emu.downloads) == 2


async def test_dead_url_is_unavailable_after_one_post(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.answer_with = "url"
    emu.queue_download_faults([404, 500, "disconnect", 404])
    with pytest.raises(ImagesUnavailable) as caught:
        await generate(client, "gpt-image-1")
    assert "download" in str(caught.value)
    assert len(emu.api_requests) == 1
    assert len(emu.downloads) == 3
    assert sleeps.calls == [0.25, 0.5]


async def test_some_dead_urls_return_the_other_pictures(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.answer_with = "url"
    # Two downloads of up to 3 tries each and 5 failures: one picture fails every try.
    emu.queue_download_faults([404] * 5)
    result = await generate(client, "gpt-image-1", count=2)
    assert len(result.images) == 1
    assert len(emu.api_requests) == 1


async def test_302_chain_on_the_api_origin_is_followed(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.answer_with = "url"
    emu.redirect_hops = 3
    result = await generate(client, "gpt-image-1")
    assert picture_size(result.images[0].data) == (1024, 1024)
    assert len(emu.api_requests) == 1
    downloads = emu.downloads
    assert [d.path.split("/")[1] for d in downloads] == ["hop", "hop", "hop", "files"]
    assert all(d.headers.get("Authorization") == f"Bearer {API_KEY}" for d in downloads)
    assert sleeps.calls == []


async def test_302_to_another_origin_never_gets_the_key(
    emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    result = await generate_from_urls(emu, sleeps, redirect_hops=2, redirect_to="cdn")
    assert picture_size(result.images[0].data) == (1024, 1024)
    assert len(emu.api_requests) == 1
    first, *elsewhere = emu.downloads
    assert first.server == "api" and first.headers["Authorization"] == f"Bearer {API_KEY}"
    assert [d.server for d in elsewhere] == ["cdn", "cdn"]
    assert_without_api_headers(elsewhere)


async def test_redirect_back_to_the_api_origin_stays_without_the_key(
    emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    # Once the chain has left the API's origin, nothing it points to is trusted again.
    await generate_from_urls(emu, sleeps, url_origin="cdn", redirect_hops=1, redirect_to="api")
    assert [d.server for d in emu.downloads] == ["cdn", "api"]
    assert_without_api_headers(emu.downloads)


async def test_too_many_redirects(
    client: ImagesClient, emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.answer_with = "url"
    emu.redirect_hops = 6
    with pytest.raises(ImagesUnavailable) as caught:
        await generate(client, "gpt-image-1")
    assert "more than 5" in str(caught.value)
    assert len(emu.api_requests) == 1
    assert len(emu.downloads) == 6
    assert sleeps.calls == []


# -- real-sized pictures, the size cap, off the event loop --------------------------------------


def test_big_picture_is_real_sized() -> None:
    data = big_picture()
    assert 1.5e6 <= len(data) <= 3e6
    assert picture_size(data) == (1024, 1024)
    assert big_picture() is data  # drawn once


@pytest.fixture(params=["64 KiB reads", "256 KiB reads"])
def reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """httpcore's own read size, or the bigger one `python -m bot` sets (restored afterwards)."""
    connection = httpcore.AsyncHTTP11Connection
    monkeypatch.setattr(connection, "READ_NUM_BYTES", connection.READ_NUM_BYTES)
    if request.param == "256 KiB reads":
        tune_http_reads()
        assert connection.READ_NUM_BYTES == HTTP_READ_BYTES == 256 * 1024
    return int(connection.READ_NUM_BYTES)


@pytest.mark.parametrize("answer_with", ["b64_json", "url"])
@pytest.mark.parametrize("chunked", [False, True])
async def test_megabyte_pictures(
    client: ImagesClient, emu: OpenAIEmulator, answer_with: str, chunked: bool, reads: int
) -> None:
    emu.big_pictures = True
    emu.answer_with = answer_with
    emu.chunked = chunked
    result = await generate(client, "gpt-image-1", count=3)
    assert [image.data for image in result.images] == [big_picture()] * 3
    assert len(emu.api_requests) == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_answer_is_final(
    emu: OpenAIEmulator, sleeps: RecordingSleep, chunked: bool, reads: int
) -> None:
    emu.big_pictures = True
    emu.chunked = chunked  # without a Content-Length the cap is met while streaming
    async with make_client(emu, sleeps, max_response_bytes=5 * 1024 * 1024) as client:
        with pytest.raises(ImagesUnavailable) as caught:
            await generate(client, "gpt-image-1", count=2)  # about 7.3 MB of base64
    assert f"over {5 * 1024 * 1024} bytes" in str(caught.value)
    assert len(emu.api_requests) == 1
    assert sleeps.calls == []


@pytest.mark.parametrize("chunked", [False, True])
async def test_download_too_large(
    emu: OpenAIEmulator, sleeps: RecordingSleep, chunked: bool
) -> None:
    emu.answer_with = "url"
    emu.big_pictures = True
    emu.chunked = chunked
    async with make_client(emu, sleeps, max_response_bytes=1024 * 1024) as client:
        with pytest.raises(ImagesUnavailable) as caught:
            await generate(client, "gpt-image-1")
    assert f"{1024 * 1024} bytes" in str(caught.value)
    assert len(emu.api_requests) == 1
    assert len(emu.downloads) == 1  # a too large picture is not fetched again


async def test_answer_is_parsed_and_decoded_off_the_event_loop(
    client: ImagesClient, emu: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []
    original = client_module._read_answer

    def recording(body: bytes) -> Any:
        threads.append(threading.get_ident())
        return original(body)

    monkeypatch.setattr(client_module, "_read_answer", recording)
    emu.big_pictures = True
    result = await generate(client, "gpt-image-1", count=2)
    assert len(result.images) == 2
    assert threads and loop_thread not in threads


# -- one deadline over the whole call -----------------------------------------------------------


async def test_deadline_leaves_no_time_for_retry_after(
    emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.queue_faults([Fault.http(429, retry_after=30)])
    async with make_client(emu, sleeps, timeout=10) as client:
        with pytest.raises(ImagesRateLimited) as caught:
            await generate(client, "gpt-image-2")
    assert caught.value.retry_after == 30
    assert len(emu.api_requests) == 1
    assert sleeps.calls == []  # a wait that ends past the deadline is not started


async def test_deadline_counts_the_waits(emu: OpenAIEmulator, sleeps: RecordingSleep) -> None:
    emu.queue_faults([Fault.http(429, retry_after=4)] * 3)
    async with make_client(emu, sleeps, timeout=10, max_attempts=5) as client:
        with pytest.raises(ImagesRateLimited):
            await generate(client, "gpt-image-2")
    assert sleeps.calls == [4.0, 4.0]  # a third 4 s wait would end past 10 s
    assert len(emu.api_requests) == 3


async def test_deadline_cutting_a_retry_raises_the_error_before(
    emu: OpenAIEmulator, sleeps: RecordingSleep
) -> None:
    emu.queue_faults([503, Fault.hang(10)])
    started = time.perf_counter()
    async with make_client(emu, sleeps, timeout=0.6) as client:
        with pytest.raises(ImagesUnavailable) as caught:
            await generate(client, "gpt-image-2")
    assert time.perf_counter() - started < 4
    assert caught.value.status == 503
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert len(emu.api_requests) == 2


async def test_deadline_covers_downloads(emu: OpenAIEmulator, sleeps: RecordingSleep) -> None:
    emu.answer_with = "url"
    emu.queue_download_faults([500, "hang"])
    started = time.perf_counter()
    async with make_client(emu, sleeps, timeout=0.6) as client:
        with pytest.raises(ImagesUnavailable) as caught:
            await generate(client, "gpt-image-1")
    assert time.perf_counter() - started < 4
    assert "HTTP 500" in str(caught.value)  # the last real error, not a timeout
    assert len(emu.api_requests) == 1


# -- nothing but the client's family escapes ----------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Title": "café crème"}, id="non_ascii"),
        pytest.param({"X-Title": "two\r\nX-Evil: 1"}, id="header_injection"),
    ],
)
async def test_unsendable_header_is_an_images_error(
    emu: OpenAIEmulator, sleeps: RecordingSleep, headers: dict[str, str]
) -> None:
    async with make_client(emu, sleeps, extra_headers=headers) as client:
        with pytest.raises(ImagesUnavailable) as caught:
            await generate(client, "gpt-image-2")
    assert "could not be sent" in str(caught.value)
    assert headers["X-Title"] not in str(caught.value)
    assert emu.api_requests == []
    assert sleeps.calls == []


@pytest.mark.parametrize("base_url", ["http://[::1/v1", "ftp://x/v1"])
async def test_unusable_base_url_is_an_images_error(sleeps: RecordingSleep, base_url: str) -> None:
    async with ImagesClient(base_url=base_url, api_key=API_KEY, sleep=sleeps) as client:
        with pytest.raises(ImagesUnavailable):
            await generate(client, "gpt-image-2")
    assert sleeps.calls == []


@pytest.mark.parametrize("url", ["ftp://host/a.png", "http://[::1/a.png", "file:///etc/x"])
async def test_unusable_answered_url_is_final(
    client: ImagesClient, sleeps: RecordingSleep, emu: OpenAIEmulator, url: str
) -> None:
    emu.answer_url = url
    with pytest.raises(ImagesUnavailable) as caught:
        await generate(client, "gpt-image-1")
    assert "cannot be downloaded" in str(caught.value)
    assert len(emu.api_requests) == 1
    assert emu.downloads == []
    assert sleeps.calls == []


# -- uploads named after their bytes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "filename", "content_type"),
    [
        ("png", "image.png", "image/png"),
        ("jpeg", "image.jpg", "image/jpeg"),
        ("webp", "image.webp", "image/webp"),
    ],
)
async def test_edit_upload_is_typed_after_its_bytes(
    client: ImagesClient, emu: OpenAIEmulator, fmt: str, filename: str, content_type: str
) -> None:
    source = render_picture(300, 200, fmt=fmt)
    description = describe("gpt-image-1.5", prompt="add a hat")
    await client.edit(description, caps_for("gpt-image-1.5"), image=source)
    [request] = emu.api_requests
    assert request.files is not None
    [upload] = request.files["image"]
    assert (upload.filename, upload.content_type, upload.data) == (filename, content_type, source)


async def test_emulator_refuses_a_mistyped_upload(emu: OpenAIEmulator) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    jpeg = render_picture(64, 64, fmt="jpeg")
    async with httpx.AsyncClient(headers=headers) as raw:
        for name, data, content_type, model in [
            ("a.png", jpeg, "image/png", "gpt-image-1"),
            ("a.bin", jpeg, "application/octet-stream", "gpt-image-1"),
            ("a.jpg", jpeg, "image/jpeg", "dall-e-2"),
            ("a.png", render_picture(64, 32), "image/png", "dall-e-2"),
        ]:
            response = await raw.post(
                f"{emu.base_url}/images/edits",
                data={"model": model, "prompt": "p"},
                files={"image": (name, data, content_type)},
            )
            assert response.status_code == 400, (name, content_type, model)
    assert len(emu.invalid_requests) == 4
    emu.reset()


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
