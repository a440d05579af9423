"""ImagesClient streaming previews against the OpenAI emulator, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from PIL import Image

from bot.capabilities import ImageDescription, caps_for, resolve
from bot.images import (
    ImagesBadRequest,
    ImagesClient,
    ImagesRefused,
    ImagesTimeout,
    ImagesUnavailable,
    PartialImage,
)
from bot.prompt import ImageOptions
from tests.conftest import API_KEY
from tests.emulators.openai_images import Fault, OpenAIEmulator, big_picture, render_picture

GPT = "gpt-image-1.5"
WAIT = 10.0  # generous bound on every wait of these tests (a loaded 2-core machine)


@pytest.fixture
def emu(oai: OpenAIEmulator) -> Iterator[OpenAIEmulator]:
    """A fresh images emulator (conftest's `oai`) that must see only valid requests."""
    yield oai
    assert oai.invalid_requests == []


def make_client(emu: OpenAIEmulator, **overrides: Any) -> ImagesClient:
    options: dict[str, Any] = {"base_url": emu.base_url, "api_key": API_KEY, "timeout": 60.0}
    options.update(overrides)
    return ImagesClient(**options)


@pytest.fixture
async def client(emu: OpenAIEmulator) -> AsyncIterator[ImagesClient]:
    async with make_client(emu) as images:
        yield images


def describe(model: str = GPT, **options: Any) -> ImageDescription:
    return resolve(prompt="a yellow alpaca", options=ImageOptions(**options), caps=caps_for(model))


class Previews:
    """An on_partial callback that records what it gets (and can be told to dawdle or fail)."""

    def __init__(
        self, *, hold: float = 0.0, fail: bool = False, gate: threading.Semaphore | None = None
    ) -> None:
        self.got: list[PartialImage] = []
        self.first = asyncio.Event()
        self.cancelled = 0
        self.hold = hold
        self.fail = fail
        self.gate = gate  # released after each preview: the emulator's next event follows

    async def __call__(self, partial: PartialImage) -> None:
        self.got.append(partial)
        self.first.set()
        try:
            if self.hold:
                await asyncio.sleep(self.hold)
            if self.fail:
                raise RuntimeError("the chat is gone")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            if self.gate is not None:
                self.gate.release()


def gated(emu: OpenAIEmulator, **options: Any) -> Previews:
    """Return a callback that lets the emulator send each next event once it has run."""
    emu.stream_gate = threading.Semaphore(0)
    return Previews(gate=emu.stream_gate, **options)


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


# -- streaming ----------------------------------------------------------------------------------


async def test_previews_arrive_in_order_then_the_picture(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    # Each next event waits for the callback (a preview still waiting when the picture comes
    # is dropped: it is worth nothing then).
    previews = gated(emu)
    result = await client.generate(describe(quality="low"), caps_for(GPT), on_partial=previews)
    assert [(p.image_index, p.partial_index, p.previews) for p in previews.got] == [
        (0, 0, 2),
        (0, 1, 2),
    ]
    assert all(p.output_format == "png" and size_of(p.data) == (1024, 1024) for p in previews.got)
    assert previews.got[0].elapsed <= previews.got[1].elapsed
    [image] = result.images
    assert size_of(image.data) == (1024, 1024) and image.output_format == "png"
    assert (result.size, result.quality, result.background) == ("1024x1024", "low", "opaque")
    # The completed event's usage is the result's, so the money code keeps working.
    assert result.usage is not None and result.usage["output_tokens"] == 272
    [request] = emu.api_requests
    assert request.json["stream"] is True and request.json["partial_images"] == 2
    assert emu.wait_for_stream_end(0).outcome == "completed"


async def test_an_edit_streams_its_image_edit_events(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    previews = gated(emu)
    result = await client.edit(
        describe(),
        caps_for(GPT),
        image=render_picture(64, 64),
        on_partial=previews,
    )
    assert [p.partial_index for p in previews.got] == [0, 1]
    assert len(result.images) == 1 and result.usage is not None
    [request] = emu.api_requests
    assert request.form is not None
    assert (request.form["stream"], request.form["partial_images"]) == ("true", "2")
    assert emu.streams[0].endpoint == "edits"


async def test_big_pictures_in_small_pieces_and_a_done_marker(emu: OpenAIEmulator) -> None:
    emu.big_pictures = True
    emu.stream_chunk_bytes = 16 * 1024
    emu.sse_done = True
    previews = Previews()
    async with make_client(emu, preview_images=3) as client:
        result = await client.generate(describe(), caps_for(GPT), on_partial=previews)
    assert [p.data for p in previews.got] == [big_picture()] * 3
    assert result.images[0].data == big_picture()
    assert emu.api_requests[0].json["partial_images"] == 3


async def test_without_a_callback_nothing_streams(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    await client.generate(describe(), caps_for(GPT))
    assert "stream" not in emu.api_requests[0].json
    assert emu.streams == []


async def test_which_models_stream() -> None:
    async def streams(mode: str, model: str) -> bool:
        async with ImagesClient(
            base_url="http://127.0.0.1:9", api_key="", stream_previews=mode
        ) as client:
            return client.streams(caps_for(model))

    assert await streams("auto", "gpt-image-2") and await streams("auto", "chatgpt-image-latest")
    assert not await streams("auto", "dall-e-3") and not await streams("auto", "flux-local")
    assert await streams("on", "flux-local") and await streams("on", "dall-e-3")
    assert not await streams("off", "gpt-image-2")


async def test_n_above_one_streams_the_first_picture_beside_one_plain_call(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    previews = gated(emu)
    result = await client.generate(describe(count=3), caps_for(GPT), on_partial=previews)
    assert len(result.images) == 3
    assert {p.image_index for p in previews.got} == {0}
    bodies = sorted((r.json for r in emu.api_requests), key=lambda body: body["n"])
    assert [(b["n"], b.get("stream"), b.get("partial_images")) for b in bodies] == [
        (1, True, 2),
        (2, None, None),
    ]


# -- callbacks that misbehave -------------------------------------------------------------------


async def test_a_failing_callback_does_not_break_the_stream(
    client: ImagesClient, emu: OpenAIEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    previews = gated(emu, fail=True)
    result = await client.generate(describe(), caps_for(GPT), on_partial=previews)
    assert len(result.images) == 1
    assert [p.partial_index for p in previews.got] == [0, 1]
    assert "on_partial failed for preview 0 (RuntimeError)" in caplog.text


async def test_a_slow_callback_is_bounded_and_newer_previews_replace_waiting_ones(
    emu: OpenAIEmulator,
) -> None:
    previews = Previews(hold=30.0)
    emu.partial_delays = (0.0, 0.1, 0.1)
    async with make_client(emu, preview_timeout=2.0, preview_images=3) as client:
        result = await asyncio.wait_for(
            client.generate(describe(), caps_for(GPT), on_partial=previews), WAIT
        )
    assert len(result.images) == 1
    # The first preview held the callback; the others came meanwhile, only the newest waited,
    # and it was dropped when the picture came; the picture waited for the callback's bound
    # (then cancelled it), no more.
    assert len(previews.got) == 1 and previews.cancelled == 1


# -- hosts that do not stream -------------------------------------------------------------------


async def test_a_host_refusing_stream_is_asked_once_more_without_and_remembered(
    client: ImagesClient, emu: OpenAIEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.streaming = "reject"
    caplog.set_level(logging.INFO, logger="bot.images.client")
    previews = Previews()
    async with make_client(emu, max_attempts=1) as single:
        first = await single.generate(describe(), caps_for(GPT), on_partial=previews)
        assert not single.streams(caps_for(GPT))
        assert single.streams(caps_for("gpt-image-2"))  # remembered per model
        second = await single.generate(describe(), caps_for(GPT), on_partial=previews)
    assert len(first.images) == len(second.images) == 1
    assert previews.got == []
    assert [r.json.get("stream") for r in emu.api_requests] == [True, None, None]
    remembered = [r for r in caplog.records if "without streaming" in r.getMessage()]
    assert len(remembered) == 1 and remembered[0].levelno == logging.INFO
    assert API_KEY not in caplog.text


async def test_a_plain_json_answer_to_a_streaming_request_is_the_result(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.streaming = "json"
    previews = Previews()
    result = await client.generate(describe(), caps_for(GPT), on_partial=previews)
    assert len(result.images) == 1 and result.usage is not None
    assert previews.got == []
    assert len(emu.api_requests) == 1


async def test_a_500_to_a_stream_is_final_and_the_host_is_not_asked_to_stream_again(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.streaming = "error"
    with pytest.raises(ImagesUnavailable):
        await client.generate(describe(), caps_for(GPT), on_partial=Previews())
    assert len(emu.api_requests) == 1  # a 500 may come after the host drew: never re-POSTed
    assert not client.streams(caps_for(GPT))
    await client.generate(describe(), caps_for(GPT), on_partial=Previews())
    assert [r.json.get("stream") for r in emu.api_requests] == [True, None]


async def test_a_quick_503_to_a_stream_is_retried_without_streaming(
    emu: OpenAIEmulator,
) -> None:
    emu.queue_faults([503])
    async with make_client(emu, sleep=lambda _: asyncio.sleep(0)) as client:
        result = await client.generate(describe(), caps_for(GPT), on_partial=Previews())
    assert len(result.images) == 1
    assert [r.json.get("stream") for r in emu.api_requests] == [True, None]


# -- errors, cancel, deadline, cap --------------------------------------------------------------


async def test_an_error_event_is_the_usual_error_kind(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.queue_faults([Fault.stream_error(partials=1, code="moderation_blocked")])
    previews = gated(emu)
    with pytest.raises(ImagesRefused) as info:
        await client.generate(describe(), caps_for(GPT), on_partial=previews)
    assert info.value.code == "moderation_blocked"
    assert info.value.url is not None and info.value.url.endswith("/images/generations")
    assert [p.partial_index for p in previews.got] == [0]
    assert len(emu.api_requests) == 1
    assert client.streams(caps_for(GPT))  # a refusal is not the host refusing streams


async def test_a_stream_cut_before_the_picture_is_final(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.queue_faults([Fault.stream_cut(partials=1)])
    with pytest.raises(ImagesUnavailable):
        await client.generate(describe(), caps_for(GPT), on_partial=Previews())
    assert len(emu.api_requests) == 1  # the host may have drawn it: no second POST


async def test_a_completed_event_that_does_not_decode_is_unavailable(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.queue_faults(["stream_bad_final"])
    with pytest.raises(ImagesUnavailable, match="base64"):
        await client.generate(describe(), caps_for(GPT), on_partial=Previews())


async def test_cancelling_closes_the_connection_at_once(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.partial_delays = (0.0, 30.0)
    previews = Previews(hold=30.0)  # a callback still running is cancelled as well
    task = asyncio.create_task(client.generate(describe(), caps_for(GPT), on_partial=previews))
    await asyncio.wait_for(previews.first.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = await asyncio.to_thread(emu.wait_for_stream_end, 0, WAIT)
    assert record.outcome == "client_closed"
    assert len(record.partial_sent_at) == 1
    assert [t for t in asyncio.all_tasks() if t.get_name() == "on_partial"] == []


async def test_the_deadline_covers_the_stream(emu: OpenAIEmulator) -> None:
    emu.partial_delays = (0.0, 30.0)
    previews = Previews()
    async with make_client(emu, timeout=3.0) as client:
        with pytest.raises(ImagesTimeout):
            await client.generate(describe(), caps_for(GPT), on_partial=previews)
    assert len(previews.got) == 1
    record = await asyncio.to_thread(emu.wait_for_stream_end, 0, WAIT)
    assert record.outcome == "client_closed"


async def test_the_response_cap_covers_the_whole_stream(emu: OpenAIEmulator) -> None:
    emu.big_pictures = True  # 1.5-3 MB a picture, 2-4 MB of base64 an event
    async with make_client(emu, max_response_bytes=5 * 1024 * 1024, preview_images=3) as client:
        with pytest.raises(ImagesUnavailable, match="over"):
            await client.generate(describe(), caps_for(GPT), on_partial=Previews())
    assert len(emu.api_requests) == 1


async def test_a_model_that_does_not_stream_with_stream_previews_on(
    oai: OpenAIEmulator,
) -> None:
    # The real service refuses `stream` for dall-e-3 with a 400 naming it: the fan-out's first
    # call is asked again without streaming, the second never streams.
    async with make_client(oai, stream_previews="on") as client:
        result = await client.generate(
            describe("dall-e-3", count=2), caps_for("dall-e-3"), on_partial=Previews()
        )
        assert not client.streams(caps_for("dall-e-3"))
    assert len(result.images) == 2
    streamed = [r.json.get("stream") for r in oai.api_requests]
    assert sorted(streamed, key=str) == [None, None, True]
    [refused] = oai.invalid_requests
    assert "stream is only supported for GPT image models" in refused.problems


async def test_stream_fields_in_the_extra_body_are_the_clients_own(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    extra = {"stream": True, "partial_images": 3, "moderation": "low"}
    description = resolve(
        prompt="a yellow alpaca", options=ImageOptions(), caps=caps_for(GPT), extra=extra
    )
    await client.generate(description, caps_for(GPT))
    [request] = emu.api_requests
    assert "stream" not in request.json and "partial_images" not in request.json
    assert request.json["moderation"] == "low"


async def test_an_error_event_never_shows_the_key(
    client: ImagesClient, emu: OpenAIEmulator
) -> None:
    emu.queue_faults([Fault.stream_error(message=f"Incorrect API key provided: {API_KEY}.")])
    with pytest.raises(ImagesBadRequest) as info:
        await client.generate(describe(), caps_for(GPT), on_partial=Previews())
    assert API_KEY not in str(info.value) and API_KEY not in (info.value.detail or "")
