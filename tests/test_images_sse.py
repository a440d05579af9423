"""The SSE decoder and the reading of streamed images events (pure, table-driven)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from bot.images import ImagesQuotaExhausted, ImagesRateLimited, ImagesRefused, ImagesUnavailable
from bot.images.errors import ImagesBadRequest, classify_stream_error
from bot.images.events import read_event
from bot.images.sse import ServerSentEvent, SSEDecoder, SSETooLarge

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
B64 = base64.b64encode(PNG).decode()


def decode(
    stream: bytes, *, chunk: int | None = None, limit: int = 1 << 20
) -> list[ServerSentEvent]:
    decoder = SSEDecoder(max_event_bytes=limit)
    events: list[ServerSentEvent] = []
    step = chunk or len(stream) or 1
    for start in range(0, len(stream), step):
        events += decoder.feed(stream[start : start + step])
    return events + decoder.close()


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 7])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_events_whatever_the_line_ends_and_chunks(chunk: int | None, eol: bytes) -> None:
    stream = eol.join(
        [
            b": a comment",
            b"event: image_generation.partial_image",
            b'data: {"a":',
            b"data:1}",
            b"id: 7",
            b"",
            b"data: second",
            b"",
            b"",
            b"event: ignored-without-data",
            b"",
            b"",
        ]
    )
    assert decode(stream, chunk=chunk) == [
        ServerSentEvent("image_generation.partial_image", b'{"a":\n1}', "7"),
        ServerSentEvent(None, b"second", "7"),
    ]


def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped() -> None:
    assert decode(b"data: one\n\ndata: two") == [ServerSentEvent(None, b"one")]
    assert decode(b"data: one\n\ndata: two\n") == [ServerSentEvent(None, b"one")]


def test_only_one_space_after_the_colon_is_dropped_and_fields_without_colon() -> None:
    assert decode(b"data:  two spaces\ndata\n\n") == [ServerSentEvent(None, b" two spaces\n")]


def test_a_big_line_split_into_many_chunks_is_read_once() -> None:
    data = b"x" * 300_000
    assert decode(b"data: " + data + b"\n\n", chunk=4096) == [ServerSentEvent(None, data)]


@pytest.mark.parametrize(
    "stream",
    [b"data: " + b"x" * 2000, b"data: " + b"x" * 600 + b"\ndata: " + b"x" * 600 + b"\n"],
)
def test_an_event_over_the_limit_is_refused_before_it_is_held(stream: bytes) -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(SSETooLarge):
        for start in range(0, len(stream), 100):
            decoder.feed(stream[start : start + 100])


def event(kind: str, **fields: object) -> bytes:
    return json.dumps({"type": kind, **fields}).encode()


META = {"created_at": 1, "size": "1024x1024", "quality": "low", "background": "opaque"}


def test_a_partial_image_event_is_decoded() -> None:
    read = read_event(
        "generations",
        "image_generation.partial_image",
        event(
            "image_generation.partial_image",
            b64_json=B64,
            partial_image_index=1,
            output_format="png",
            **META,
        ),
    )
    assert (read.kind, read.data, read.partial_index) == ("partial", PNG, 1)
    assert read.meta["output_format"] == "png" and "b64_json" not in read.meta


def test_a_completed_event_keeps_its_usage() -> None:
    usage = {"total_tokens": 5, "input_tokens": 2, "output_tokens": 3}
    read = read_event(
        "edits", None, event("image_edit.completed", b64_json=B64, usage=usage, error=None, **META)
    )
    assert (read.kind, read.data, read.meta["usage"]) == ("completed", PNG, usage)


@pytest.mark.parametrize(
    ("endpoint", "data", "kind", "final"),
    [
        ("generations", event("image_generation.completed", b64_json="%%%"), "invalid", True),
        ("generations", event("image_generation.completed"), "invalid", True),
        ("generations", event("image_generation.partial_image", b64_json=B64), "invalid", False),
        (
            "generations",
            event("image_generation.partial_image", b64_json=B64, partial_image_index=-1),
            "invalid",
            False,
        ),
        ("generations", b"not json", "invalid", False),
        ("generations", b"[1, 2]", "invalid", False),
        # An edit's events on the generations endpoint are not this stream's events.
        ("generations", event("image_edit.completed", b64_json=B64), "ignored", False),
        ("edits", event("image_edit.keepalive"), "ignored", False),
    ],
)
def test_events_that_are_not_usable(endpoint: str, data: bytes, kind: str, final: bool) -> None:
    read = read_event(endpoint, None, data)
    assert read.kind == kind
    assert bool(read.meta.get("final")) is final


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("error", json.dumps({"error": {"message": "boom", "code": None}}).encode()),
        (None, json.dumps({"type": "error", "error": {"message": "boom"}}).encode()),
        ("error", json.dumps({"type": "error", "code": "x", "message": "boom"}).encode()),
        ("error", b"plain text boom"),
    ],
)
def test_error_events(name: str | None, data: bytes) -> None:
    read = read_event("generations", name, data)
    assert read.kind == "error"
    assert b"boom" in read.error


def _error(**fields: object) -> bytes:
    return json.dumps({"error": {"message": "m", "type": None, "code": None, **fields}}).encode()


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (_error(code="moderation_blocked", type="image_generation_user_error"), ImagesRefused),
        (_error(message="Your request was rejected by the safety system."), ImagesRefused),
        (_error(code="insufficient_quota"), ImagesQuotaExhausted),
        (_error(code="rate_limit_exceeded", type="requests"), ImagesRateLimited),
        (_error(type="invalid_request_error", message="Invalid size"), ImagesBadRequest),
        (_error(type="server_error"), ImagesUnavailable),
        (b"garbled", ImagesUnavailable),
    ],
)
def test_error_events_become_the_usual_kinds(body: bytes, kind: type[Exception]) -> None:
    error = classify_stream_error(body, now=datetime(2026, 1, 1, tzinfo=UTC), scrub=str)
    assert type(error) is kind
    assert error.status is None
    assert "streamed an error" in str(error)
