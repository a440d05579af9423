"""Client of an OpenAI-compatible images API; the only module that imports `httpx`.

    async with ImagesClient(base_url="https://api.openai.com/v1", api_key=key) as client:
        result = await client.generate(description, caps_for(description.model))

Errors are the family of `bot.images.errors`; no `httpx` (or encoding) error escapes this module:
whatever goes wrong while building, sending or reading a request becomes an `ImagesError`.

One paid call per picture. Every POST may cost the operator money, so another POST is made only
when the service cannot have produced pictures:

    what happened                                         next
    ----------------------------------------------------  ----------------------------------
    connect error / connect timeout / pool timeout        POST again (nothing was sent)
    connection broke before the body was fully written    POST again (no complete request)
    429                                                   POST again after Retry-After
                                                          (capped at `max_retry_after`) or
                                                          backoff
    502 / 503 / 504 within `quick_failure_seconds` (10)   POST again after backoff
    502 / 503 / 504 later, 500, 524, any other 5xx        final: ImagesUnavailable
    connection reset or closed after the request was sent final: ImagesUnavailable
    no answer (read timeout)                              final: ImagesTimeout
    200 whose body is over the cap, not JSON, has no      final: ImagesUnavailable
    data, bad base64 or only unusable pictures
    200 with `url` items                                  the download alone is retried
                                                          (`_DOWNLOAD_ATTEMPTS`), redirects
                                                          followed by hand (`_MAX_REDIRECTS`)
    any 4xx, refusals, quota, auth                        final (see `classify_response`)
    400/422 naming `stream`/`partial_images` to a stream  POST again at once without
                                                          streaming (not an attempt); the
                                                          model no longer streams
    any 5xx to a stream                                   as above; the model no longer
                                                          streams (a retry goes without)
    a stream broken, cut or over the cap after the 200    final: ImagesUnavailable
    an `error` event in a stream                          final: its kind
                                                          (`classify_stream_error`)

Why 10 s for a "quick" 502/503/504: a gateway that is overloaded, restarting or has no upstream
answers at once, while a generation takes longer than that (the fastest image models need 10+ s),
so a gateway error that quick cannot stand for a finished-but-lost generation; a 504 or 524 after
a long wait usually means the upstream was drawing (and may bill) the pictures.

A 200 answer with several pictures where some are unusable returns the usable ones.

One deadline (`timeout`) covers the whole call: every attempt, Retry-After and backoff waits,
`url` downloads and every call of a fan-out. When it cuts through retries, the last real error
seen (the 429, the 503, the failed download) is raised; `ImagesTimeout` only when nothing else
happened. A wait that would end past the deadline is not started.

The answer body is read streaming and capped (`max_response_bytes`, also for downloads); the
JSON parse and the base64 decode run in a worker thread, off the event loop. The API headers (the
key, `extra_headers`) are sent only to the API's own origin: a `url` on another origin, or any
download after a redirect to another origin, gets none. The key is scrubbed from every error.

Streamed previews (`on_partial`, see `streams`): the first picture of a call is asked with
`stream: true`; its `text/event-stream` answer is read event by event (`bot.images.sse`,
`bot.images.events`) and each preview handed to `on_partial` from a task of its own (`_Previews`:
in order, one at a time, bounded, errors swallowed), so a slow callback never holds up the
stream. Cancelling the call closes the connection at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random as _random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import Self
from urllib.parse import urlsplit

import httpcore
import httpx
import orjson

from bot import __version__
from bot.capabilities import ImageDescription, ModelCaps
from bot.images.bodies import build_generation_body, common_fields, endpoint_url, form, merge_extra
from bot.images.errors import (
    ImagesAuthError,
    ImagesBadRequest,
    ImagesError,
    ImagesNotOffered,
    ImagesRateLimited,
    ImagesTimeout,
    ImagesUnavailable,
    classify_response,
    classify_stream_error,
    error_fields,
)
from bot.images.events import StreamEvent, decode_base64, read_event
from bot.images.sse import ServerSentEvent, SSEDecoder, SSETooLarge
from bot.images.types import (
    GeneratedImage,
    ImagesResult,
    OnPartial,
    Pacer,
    PartialImage,
    sniff_format,
)
from bot.redaction import redact, secret_header_values

__all__ = ["QUICK_FAILURE_SECONDS", "ImagesClient", "tune_http_reads"]

logger = logging.getLogger(__name__)

QUICK_FAILURE_SECONDS = 10.0
_DETAIL_LIMIT = 500
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0
_LOGGED_BODY = 200
# A gateway's "all deployments cooling down" 429 this soon after a 401/403 is that auth fault.
_AUTH_MEMORY = timedelta(minutes=10)
_DOWNLOAD_ATTEMPTS = 3
_MAX_REDIRECTS = 5
_ERROR_BODY_LIMIT = 1024 * 1024  # enough of an error answer to read its message
_RETRYABLE_GATEWAY = frozenset({502, 503, 504})
_INLINE_EVENT_BYTES = 64 * 1024  # bigger stream events are parsed and decoded off the loop
# A 400/422 whose message, code or param names one of these refuses streaming itself.
_STREAM_WORDS = re.compile(r"\b(?:stream|partial_images)\b", re.IGNORECASE)
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}
_NOT_PICTURES = ("text/", "application/json", "application/xml")
# Raised by httpx or the codecs while a request is built or sent, for reasons of our own making.
_UNSENDABLE = (httpx.InvalidURL, httpx.StreamError, httpx.CookieConflict, UnicodeError, ValueError)


# One socket read of an HTTP/1.1 answer: asyncio's transports hand over up to 256 KiB at a time,
# and httpcore's own 64 KiB made every megabyte answer 4x as many trips through httpcore, anyio
# and h11 (each cut off a bigger piece with a copy).
HTTP_READ_BYTES = 256 * 1024


def tune_http_reads(read_bytes: int = HTTP_READ_BYTES) -> None:
    """Let httpcore read HTTP/1.1 answers in pieces of up to `read_bytes` (it reads 64 KiB).

    Process-wide (a class attribute of httpcore's, the same for python-telegram-bot's
    connections), so it is set once by `bot.app.run` for `python -m bot`, never at import time.
    A 2.4 MB images answer then takes about 10 reads instead of 38, about 2 ms less CPU.
    """
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = read_bytes


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another attempt."""

    def __init__(
        self, error: ImagesError, delay: float | None = None, *, counted: bool = True
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay
        self.counted = counted  # False: not an attempt of the policy (a refused stream)


_Fields = dict[str, object]
_Files = dict[str, tuple[str, bytes, str]]
_Origin = tuple[str, str, int | None]


@dataclass(frozen=True)
class _Call:
    endpoint: str
    model: str
    json_body: _Fields | None = None
    form: dict[str, str] | None = None
    files: _Files | None = None
    on_partial: OnPartial | None = None  # set on the one call that streams

    def with_fields(self, **fields: object) -> _Call:
        """Return this call with `fields` set in its body (None removes a field)."""
        if self.json_body is not None:
            body = {k: v for k, v in {**self.json_body, **fields}.items() if v is not None}
            return dataclasses.replace(self, json_body=body)
        merged = {**(self.form or {}), **form(fields)}
        for key in [key for key, value in fields.items() if value is None]:
            merged.pop(key, None)
        return dataclasses.replace(self, form=merged)

    def without_streaming(self) -> _Call:
        return dataclasses.replace(
            self.with_fields(stream=None, partial_images=None), on_partial=None
        )


@dataclass
class _Deadline:
    """The one deadline of a call, and the last real error seen before it."""

    at: float
    timeout: float
    clock: Callable[[], float]
    last_error: ImagesError | None = None

    def remaining(self) -> float:
        return self.at - self.clock()

    def expired(self) -> ImagesError:
        if self.last_error is not None:
            return self.last_error
        return ImagesTimeout(f"no pictures within {self.timeout:g} s")


@dataclass
class _Item:
    """One `data` item of an answer: decoded bytes, a url to download, or why it is unusable."""

    data: bytes | None = None
    url: str | None = None
    revised_prompt: str | None = None
    problem: str | None = None


@dataclass
class _Answer:
    meta: dict[str, object]
    items: list[_Item] = field(default_factory=list)


class _SentTracker(httpx.AsyncByteStream):
    """Wrap a request body; `finished` once its last byte has been written to the connection."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk
        # Reached only after the transport wrote the last chunk and asked for the next.
        self.finished = True

    async def aclose(self) -> None:
        await self._stream.aclose()


def _usage(value: object) -> Mapping[str, object] | None:
    return MappingProxyType(dict(value)) if isinstance(value, dict) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _combine_usage(results: list[ImagesResult]) -> Mapping[str, object] | None:
    usages = [result.usage for result in results if result.usage is not None]
    if not usages:
        return None
    total: dict[str, object] = {}
    for usage in usages:
        for key, value in usage.items():
            previous = total.get(key)
            if isinstance(value, int) and isinstance(previous, int):
                total[key] = previous + value
            elif key not in total:
                total[key] = value
    return MappingProxyType(total)


def _read_item(item: object) -> _Item:
    if not isinstance(item, dict):
        return _Item(problem="images API answered a malformed data item")
    revised = _text(item.get("revised_prompt"))
    encoded, url = item.get("b64_json"), item.get("url")
    if isinstance(encoded, str) and encoded:
        data = decode_base64(encoded)
    elif isinstance(url, str) and url.startswith("data:"):
        data = decode_base64(url.partition(",")[2])
    elif isinstance(url, str) and url:
        return _Item(url=url, revised_prompt=revised)
    else:
        return _Item(problem="images API answered an item without b64_json or url")
    if data is None:
        return _Item(problem="images API answered undecodable base64")
    if not data:
        return _Item(problem="images API answered an empty image")
    return _Item(data=data, revised_prompt=revised)


def _read_answer(holder: list[bytearray]) -> _Answer:
    """Parse a 200 answer and decode its pictures (runs in a worker thread).

    The body comes in a list that this empties, so that each copy of megabytes (body, base64
    strings, pictures) is freed as soon as the next one is made: at most two live at once.
    orjson parses the bytes directly (no decoded text copy; 0.7 ms for 2.4 MB, json 2.5 ms).
    """
    body = holder.pop()
    try:
        payload = orjson.loads(body)
        del body
    except ValueError as exc:  # orjson.JSONDecodeError, invalid UTF-8 included
        raise ImagesUnavailable("images API answered something that is not JSON") from exc
    if not isinstance(payload, dict):
        raise ImagesUnavailable("images API answered JSON that is not an object")
    data = payload.pop("data", None)
    if not isinstance(data, list) or not data:
        raise ImagesUnavailable("images API answered without any image data")
    answer = _Answer(meta=payload)
    while data:  # decoded items replace their base64 text one by one
        answer.items.append(_read_item(data.pop(0)))
    return answer


def _error_param(body: bytes) -> str:
    """Return the `param` an OpenAI-shaped error body names, or ""."""
    try:
        payload = orjson.loads(body)
    except ValueError:
        return ""
    error = payload.get("error") if isinstance(payload, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    return param if isinstance(param, str) else ""


def _origin(url: httpx.URL) -> _Origin:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, url.port or default)


def _upload(image: bytes, filename: str | None, content_type: str | None) -> tuple[str, bytes, str]:
    """Name and type an uploaded picture after its bytes unless the caller said."""
    fmt = sniff_format(image)
    if filename is None:
        filename = f"image.{_EXTENSIONS.get(fmt or '', 'bin')}"
    if content_type is None:
        content_type = f"image/{fmt}" if fmt else "application/octet-stream"
    return filename, image, content_type


class _Previews:
    """Hand streamed previews to `on_partial` one at a time, never holding up the stream.

    The callback runs in its own task, each call bounded by `timeout`; its errors are logged
    and swallowed. A preview that arrives while the callback is busy waits, and a newer one
    replaces it (an old preview is worth nothing once a newer one exists).
    """

    def __init__(
        self, callback: OnPartial | None, timeout: float, previews: int, started: float
    ) -> None:
        self._callback = callback
        self._timeout = timeout
        self._previews = previews
        self._started = started
        self._pending: PartialImage | None = None
        self._task: asyncio.Task[None] | None = None

    def offer(self, event: StreamEvent) -> None:
        if self._callback is None:
            return
        meta = event.meta
        self._pending = PartialImage(
            image_index=0,
            partial_index=event.partial_index,
            previews=self._previews,
            data=event.data,
            output_format=_text(meta.get("output_format")) or sniff_format(event.data),
            size=_text(meta.get("size")),
            quality=_text(meta.get("quality")),
            background=_text(meta.get("background")),
            elapsed=time.perf_counter() - self._started,
        )
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._deliver(self._callback), name="on_partial")

    async def _deliver(self, callback: OnPartial) -> None:
        while self._pending is not None:
            partial, self._pending = self._pending, None
            try:
                async with asyncio.timeout(self._timeout):
                    await callback(partial)
            except TimeoutError:
                logger.warning(
                    "on_partial took over %g s for preview %d; cancelled, the stream goes on",
                    self._timeout,
                    partial.partial_index,
                )
            except Exception as exc:  # the caller's code: whatever it raises, the stream goes on
                logger.warning(
                    "on_partial failed for preview %d (%s); the stream goes on",
                    partial.partial_index,
                    type(exc).__name__,
                )
                logger.debug("on_partial failure", exc_info=True)

    async def finish(self) -> None:
        """The picture is here: drop a waiting preview, let a running callback end (bounded)."""
        self._pending = None
        if self._task is not None:
            await asyncio.wait([self._task])

    async def close(self) -> None:
        """The stream failed or was cancelled: stop the callback at once."""
        self._pending = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])


class ImagesClient:
    """Talk to `{base_url}/images/*` through one long-lived connection pool."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float = 180.0,
        max_attempts: int = 3,
        max_retry_after: float = 60.0,
        max_response_bytes: int = 64 * 1024 * 1024,
        quick_failure_seconds: float = QUICK_FAILURE_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        max_connections: int = 32,
        random: Callable[[], float] = _random.random,
        pacer: Pacer | None = None,
        max_buffered_answers: int = 4,
        stream_previews: str = "auto",
        preview_images: int = 2,
        preview_timeout: float = 10.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if stream_previews not in ("auto", "on", "off"):
            raise ValueError("stream_previews must be auto, on or off")
        if not 1 <= preview_images <= 3:
            raise ValueError("preview_images must be from 1 to 3")
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        headers = dict(extra_headers or {})
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # Only the API's own origin gets these (see `_fetch`).
        self._api_headers = headers
        try:
            self._api_origin: _Origin | None = _origin(httpx.URL(self._base_url))
        except _UNSENDABLE:
            self._api_origin = None  # every call fails as unsendable; nothing is trusted
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._max_retry_after = max_retry_after
        self._max_response_bytes = max_response_bytes
        self._quick_failure_seconds = quick_failure_seconds
        self._sleep = sleep
        self._clock = clock
        self._monotonic = monotonic
        self._random = random
        self._pacer = pacer
        self._buffered = asyncio.Semaphore(max_buffered_answers)
        # Process-lifetime memory of what the host told us (see `offers`, `_status_error`).
        self._not_offered: set[tuple[str, str]] = set()
        self._stream_previews = stream_previews
        self._preview_images = preview_images
        self._preview_timeout = preview_timeout
        self._not_streaming: set[str] = set()  # models this host will not stream (see `streams`)
        self._last_auth_failure: datetime | None = None
        self._client = httpx.AsyncClient(
            transport=transport,
            # The deadline bounds every call as a whole; these only bound single steps.
            timeout=httpx.Timeout(
                connect=min(10.0, timeout), read=timeout, write=60.0, pool=timeout
            ),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": f"telegram-image-bot/{__version__}"},
            follow_redirects=False,
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"ImagesClient(base_url={self._base_url!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- public calls -----------------------------------------------------------------------

    def offers(self, endpoint: str, model: str) -> bool:
        """Tell whether the host may serve `endpoint` ("edits", "variations") for `model`.

        False once the host answered 404/405 with a non-OpenAI body there (a gateway without
        that route); remembered until the process restarts.
        """
        return (endpoint, model) not in self._not_offered

    def streams(self, caps: ModelCaps) -> bool:
        """Tell whether a call for `caps.name` with an `on_partial` callback will stream now.

        `stream_previews` "off": never; "on": every model; "auto": the GPT image family. False
        once this host refused streaming for that model (a 400 naming `stream` or
        `partial_images`, or a 5xx to a streaming request), until the process restarts.
        """
        if self._stream_previews == "off" or caps.name in self._not_streaming:
            return False
        return self._stream_previews == "on" or caps.gpt_image

    def _check_offered(self, endpoint: str, model: str) -> None:
        if not self.offers(endpoint, model):
            raise ImagesNotOffered(
                f"the images API does not offer /images/{endpoint} for {model}",
                code="not_offered",
            )

    async def generate(
        self,
        description: ImageDescription,
        caps: ModelCaps,
        *,
        on_partial: OnPartial | None = None,
    ) -> ImagesResult:
        """Generate `description.n` pictures (fanning out n=1 calls where the model needs it).

        With `on_partial`, and when `streams(caps)`, the first picture is streamed and each of
        its previews handed to `on_partial` as it arrives (see "Streamed previews" in
        DEVELOPERS.md).
        """
        call = _Call(
            endpoint="generations",
            model=description.model,
            json_body=build_generation_body(description, caps),
        )
        return await self._run(
            call,
            count=description.n,
            fan_out=caps.one_per_request,
            on_partial=on_partial if self.streams(caps) else None,
        )

    async def edit(
        self,
        description: ImageDescription,
        caps: ModelCaps,
        *,
        image: bytes,
        image_filename: str | None = None,
        image_content_type: str | None = None,
        mask: bytes | None = None,
        on_partial: OnPartial | None = None,
    ) -> ImagesResult:
        """Edit one picture following `description.prompt` (multipart upload).

        The picture is named and typed after its bytes (png, jpeg, webp) unless the caller says.
        `on_partial` as for `generate`.
        """
        if not caps.supports_edit:
            raise ImagesBadRequest(f"{caps.name} does not support edits", code="unsupported")
        self._check_offered("edits", description.model)
        files: _Files = {"image": _upload(image, image_filename, image_content_type)}
        if mask is not None:
            files["mask"] = ("mask.png", mask, "image/png")
        fields = merge_extra(common_fields(description, caps), description.extra)
        call = _Call(endpoint="edits", model=description.model, form=form(fields), files=files)
        return await self._run(
            call,
            count=description.n,
            fan_out=caps.one_per_request,
            on_partial=on_partial if self.streams(caps) else None,
        )

    async def variation(
        self,
        *,
        model: str,
        caps: ModelCaps,
        image: bytes,
        n: int,
        size: str | None,
        image_filename: str | None = None,
        image_content_type: str | None = None,
    ) -> ImagesResult:
        """Make `n` variations of one picture (multipart upload)."""
        if not caps.supports_variation:
            raise ImagesBadRequest(f"{caps.name} does not support variations", code="unsupported")
        self._check_offered("variations", model)
        fields: _Fields = {"model": model, "n": 1 if caps.one_per_request else n, "size": size}
        if caps.response_format:
            fields["response_format"] = "b64_json"
        files: _Files = {"image": _upload(image, image_filename, image_content_type)}
        call = _Call(endpoint="variations", model=model, form=form(fields), files=files)
        return await self._run(call, count=n, fan_out=caps.one_per_request)

    # -- attempts ---------------------------------------------------------------------------

    async def _run(
        self, call: _Call, *, count: int, fan_out: bool, on_partial: OnPartial | None = None
    ) -> ImagesResult:
        at = self._monotonic() + self._timeout
        calls = [call] * count if fan_out and count > 1 else [call]
        if on_partial is not None:
            # The stream events carry no picture index, so only an n=1 call streams: the first
            # picture; the others of an n > 1 request go in one plain call beside it.
            streamed = dataclasses.replace(
                call.with_fields(n=1, stream=True, partial_images=self._preview_images),
                on_partial=on_partial,
            )
            rest = [] if fan_out or count <= 1 else [call.with_fields(n=count - 1)]
            calls = [streamed, *calls[1:], *rest]
        if len(calls) == 1:
            return await self._with_retries(calls[0], self._deadline(at))
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(self._with_retries(one, self._deadline(at)) for one in calls),
            return_exceptions=True,
        )
        results = [outcome for outcome in outcomes if isinstance(outcome, ImagesResult)]
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        unexpected = [failure for failure in failures if not isinstance(failure, ImagesError)]
        if unexpected:
            raise unexpected[0]
        if not results:
            raise failures[0]
        if failures:
            logger.warning(
                "%d of %d parallel %s calls failed (%s); returning the rest",
                len(failures),
                len(calls),
                call.endpoint,
                ", ".join(sorted({type(failure).__name__ for failure in failures})),
            )
        first = results[0]
        return ImagesResult(
            model=first.model,
            images=tuple(image for result in results for image in result.images),
            usage=_combine_usage(results),
            size=first.size,
            quality=first.quality,
            background=first.background,
            elapsed=time.perf_counter() - started,
        )

    def _deadline(self, at: float) -> _Deadline:
        return _Deadline(at=at, timeout=self._timeout, clock=self._monotonic)

    async def _with_retries(self, call: _Call, deadline: _Deadline) -> ImagesResult:
        started = time.perf_counter()
        attempt = 0
        while attempt < self._max_attempts:
            if call.on_partial is not None and call.model in self._not_streaming:
                call = call.without_streaming()
            attempt += 1
            try:
                try:
                    async with asyncio.timeout(deadline.remaining()):
                        result = await self._attempt(call, started, deadline)
                    if self._pacer is not None:
                        self._pacer.succeeded()
                    return result
                except TimeoutError as exc:
                    raise deadline.expired() from exc
            except _Retry as retry:
                deadline.last_error = retry.error
                if not retry.counted:
                    attempt -= 1
                    continue
                if attempt >= self._max_attempts:
                    raise retry.error from retry.__cause__
                delay = retry.delay if retry.delay is not None else self._backoff(attempt)
                if delay >= deadline.remaining():
                    logger.warning(
                        "images %s attempt %d/%d failed (%s); a %.2f s wait would pass the "
                        "%g s deadline",
                        call.endpoint,
                        attempt,
                        self._max_attempts,
                        retry.error,
                        delay,
                        self._timeout,
                    )
                    raise retry.error from retry.__cause__
                logger.warning(
                    "images %s attempt %d/%d failed (%s); retrying in %.2f s",
                    call.endpoint,
                    attempt,
                    self._max_attempts,
                    retry.error,
                    delay,
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        ceiling: float = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** (attempt - 1))
        return self._random() * ceiling

    def _build(self, call: _Call, url: str) -> tuple[httpx.Request, _SentTracker]:
        try:
            request = self._client.build_request(
                "POST",
                url,
                json=call.json_body,
                data=call.form,
                files=call.files,
                headers=self._api_headers,
            )
        except (*_UNSENDABLE, TypeError, httpx.HTTPError) as exc:
            raise self._unsendable(exc, url) from exc
        stream = request.stream
        if not isinstance(stream, httpx.AsyncByteStream):  # pragma: no cover - httpx builds both
            raise ImagesUnavailable("the request body cannot be sent asynchronously")
        tracker = _SentTracker(stream)
        request.stream = tracker
        return request, tracker

    def _unsendable(self, exc: Exception, url: str) -> ImagesError:
        # The type name only: a message could quote a header value, which may be a credential.
        error = ImagesUnavailable(
            f"the request to the images API could not be sent ({type(exc).__name__})"
        )
        error.method, error.url = "POST", url
        return error

    async def _attempt(self, call: _Call, started: float, deadline: _Deadline) -> ImagesResult:
        url = endpoint_url(self._base_url, call.endpoint)
        logger.debug("POST %s model=%s", url, call.model)
        request, body = self._build(call, url)
        sent_at = self._monotonic()
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._send_error(exc, url=url, body_sent=body.finished) from exc
        except _UNSENDABLE as exc:
            raise self._unsendable(exc, url) from exc
        quick = self._monotonic() - sent_at < self._quick_failure_seconds
        try:
            if response.status_code != 200:
                error_body = await self._read_body(response, limit=_ERROR_BODY_LIMIT, cut=True)
                raise self._status_error(
                    response.status_code,
                    response.headers,
                    bytes(error_body),
                    url=url,
                    quick=quick,
                    endpoint=call.endpoint,
                    model=call.model,
                    streaming=call.on_partial is not None,
                )
            content_type = response.headers.get("content-type", "").lower()
            if content_type.startswith("text/event-stream"):
                answer = await self._read_stream(response, call, started, url=url)
            else:
                # A host that does not stream may answer a streaming request with plain JSON:
                # that is the final result.
                answer = await self._read_json(response, url=url)
        finally:
            await response.aclose()
        try:
            images = await self._pictures(answer, deadline)
        except ImagesError as exc:
            exc.method, exc.url = "POST", url
            raise
        meta = answer.meta
        return ImagesResult(
            model=call.model,
            images=images,
            usage=_usage(meta.get("usage")),
            size=_text(meta.get("size")),
            quality=_text(meta.get("quality")),
            background=_text(meta.get("background")),
            elapsed=time.perf_counter() - started,
        )

    async def _read_json(self, response: httpx.Response, *, url: str) -> _Answer:
        """Read and parse a 200 JSON answer (capped, parsed and decoded in a worker thread)."""
        # Answers beyond `max_buffered_answers` wait unread (in the kernel's socket buffer,
        # not in this process) while others are read and parsed: 200 answers arriving at
        # once would otherwise be 200 bodies of megabytes in memory together.
        async with self._buffered:
            try:
                raw = await self._read_body(
                    response, limit=self._max_response_bytes, what="the images API's answer"
                )
            except httpx.HTTPError as exc:
                raise self._send_error(exc, url=url, body_sent=True) from exc
            holder = [raw]
            del raw  # the worker thread owns the body now and frees it once parsed
            try:
                return await asyncio.to_thread(_read_answer, holder)
            except ImagesError as exc:
                exc.method, exc.url = "POST", url
                raise

    async def _read_stream(
        self, response: httpx.Response, call: _Call, started: float, *, url: str
    ) -> _Answer:
        """Read a `text/event-stream` answer, handing each preview on as it arrives.

        The whole stream is capped like a JSON answer; big events are parsed and decoded in a
        worker thread. Not held under `max_buffered_answers`: a stream lasts the whole drawing,
        and one event is at most one picture.
        """
        limit = self._max_response_bytes
        decoder = SSEDecoder(max_event_bytes=limit)
        previews = _Previews(call.on_partial, self._preview_timeout, self._preview_images, started)
        completed: StreamEvent | None = None
        received = 0
        done = False
        try:
            try:
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > limit:
                        raise ImagesUnavailable(f"the images API's answer is over {limit} bytes")
                    for sse in decoder.feed(chunk):
                        completed = await self._stream_event(call.endpoint, sse, previews)
                        done = completed is not None or sse.data == b"[DONE]"
                        if done:
                            break
                    if done:
                        break
            except httpx.HTTPError as exc:
                raise self._send_error(exc, url=url, body_sent=True) from exc
            except SSETooLarge as exc:
                raise ImagesUnavailable(str(exc)) from exc
            if completed is None:
                raise ImagesUnavailable("the images API's stream ended before the picture came")
            await previews.finish()
        except BaseException as exc:  # failed, cancelled or past the deadline: stop at once
            await previews.close()
            if isinstance(exc, ImagesError):
                exc.method, exc.url = "POST", url
            raise
        meta = dict(completed.meta)
        meta.pop("type", None)
        return _Answer(meta=meta, items=[_Item(data=completed.data)])

    async def _stream_event(
        self, endpoint: str, sse: ServerSentEvent, previews: _Previews
    ) -> StreamEvent | None:
        """Act on one event; return it when it is the completed picture."""
        if sse.data == b"[DONE]":
            return None
        if len(sse.data) > _INLINE_EVENT_BYTES:
            event = await asyncio.to_thread(read_event, endpoint, sse.event, sse.data)
        else:
            event = read_event(endpoint, sse.event, sse.data)
        if event.kind == "completed":
            return event
        if event.kind == "partial":
            previews.offer(event)
        elif event.kind == "error":
            raise classify_stream_error(
                event.error, now=self._clock(), scrub=self._scrub, endpoint=endpoint
            )
        elif event.kind == "invalid" and event.meta.get("final"):
            raise ImagesUnavailable(event.problem)
        elif event.kind == "invalid":
            logger.warning("skipping a streamed preview: %s", event.problem)
        else:
            logger.debug("skipping a streamed event: %s", event.problem)
        return None

    def _stop_streaming(self, model: str, why: str) -> None:
        if model not in self._not_streaming:
            self._not_streaming.add(model)
            logger.info(
                "the images API %s for %s; asking without streaming until restart", why, model
            )

    def _scrub(self, text: str) -> str:
        secrets = (self._api_key, *secret_header_values(self._api_headers))
        text = " ".join(redact(text, secrets).split())
        return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"

    def _send_error(self, exc: httpx.HTTPError, *, url: str, body_sent: bool) -> Exception:
        """Decide from a transport error whether the service can have seen the whole request."""
        name = type(exc).__name__
        error: ImagesError
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            error = ImagesUnavailable(f"could not connect to the images API ({name})")
            retry = True
        elif isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol):
            error = ImagesUnavailable(f"the request to the images API could not be sent ({name})")
            retry = False
        elif not body_sent and isinstance(exc, httpx.TransportError):
            error = ImagesUnavailable(f"the connection broke before the request was sent ({name})")
            retry = True
        elif isinstance(exc, httpx.TimeoutException):
            error = ImagesTimeout(f"the images API did not answer within {self._timeout:g} s")
            retry = False
        else:
            # The service had the whole request: it may have drawn (and billed) the pictures.
            error = ImagesUnavailable(
                f"the connection to the images API broke after the request was sent ({name})"
            )
            retry = False
        error.method, error.url = "POST", url
        return _Retry(error) if retry else error

    def _status_error(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        *,
        url: str,
        quick: bool,
        endpoint: str = "generations",
        model: str = "",
        streaming: bool = False,
    ) -> Exception:
        error = self._classify(
            status, headers, body, method="POST", url=url, endpoint=endpoint, model=model
        )
        error.method, error.url = "POST", url
        if streaming and status in (400, 422) and type(error) is ImagesBadRequest:
            message, code, _ = error_fields(body)
            if _STREAM_WORDS.search(f"{message} {code or ''} {_error_param(body)}"):
                # Nothing was drawn: ask again without streaming, outside the retry policy.
                self._stop_streaming(model, f"refused a streaming request ({error})")
                return _Retry(error, 0.0, counted=False)
        if streaming and status >= 500:
            self._stop_streaming(model, f"failed a streaming request with HTTP {status}")
        if isinstance(error, ImagesRateLimited):
            retry_after = error.retry_after
            if self._pacer is not None:
                self._pacer.throttled(retry_after)
            delay = min(retry_after, self._max_retry_after) if retry_after is not None else None
            return _Retry(error, delay)
        if isinstance(error, ImagesUnavailable) and status in _RETRYABLE_GATEWAY and quick:
            return _Retry(error)
        return error

    def _classify(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        *,
        method: str,
        url: str,
        endpoint: str,
        model: str,
    ) -> ImagesError:
        """`classify_response`, plus what this client remembers of the host.

        A gateway's cooldown 429 soon after a 401/403 is that auth fault; an endpoint the host
        does not serve is remembered (see `offers`). Every 4xx but 429 is logged with the method,
        the URL path (never the query, which may carry a key), the status and the body's start.
        """
        now = self._clock()
        last_auth = self._last_auth_failure
        error = classify_response(
            status,
            headers,
            body,
            now=now,
            scrub=self._scrub,
            endpoint=endpoint,
            recent_auth_failure=last_auth is not None and now - last_auth <= _AUTH_MEMORY,
        )
        if 400 <= status < 500 and status != 429:
            text = self._scrub(body.decode("utf-8", "replace"))[:_LOGGED_BODY]
            path = urlsplit(url).path
            logger.warning("images API %s %s answered HTTP %d: %s", method, path, status, text)
        if isinstance(error, ImagesAuthError) and status in (401, 403):
            self._last_auth_failure = now
        if isinstance(error, ImagesNotOffered):
            self._not_offered.add((endpoint, model))
        return error

    # -- responses --------------------------------------------------------------------------
    async def _read_body(
        self, response: httpx.Response, *, limit: int, what: str = "", cut: bool = False
    ) -> bytearray:
        """Read a body streaming, at most `limit` bytes: cut there, or refuse it as too large.

        With a Content-Length the buffer is allocated once and filled in place (no joining copy).
        """
        too_large = ImagesUnavailable(f"{what} is over {limit} bytes")
        length = response.headers.get("content-length", "")
        expected = int(length) if length.isdigit() else None
        if not cut and expected is not None and expected > limit:
            raise too_large
        buffer = bytearray(min(expected, limit) if expected is not None else 0)
        received = 0
        try:
            async for chunk in response.aiter_bytes():
                if received + len(chunk) > limit and not cut:
                    raise too_large
                part = chunk[: limit - received]
                end = received + len(part)
                if end <= len(buffer):
                    buffer[received:end] = part
                else:
                    del buffer[received:]
                    buffer += part
                received = end
                if cut and received >= limit:
                    break
        except httpx.HTTPError:
            if not cut:
                raise
        del buffer[received:]
        return buffer

    # -- pictures ---------------------------------------------------------------------------

    async def _pictures(self, answer: _Answer, deadline: _Deadline) -> tuple[GeneratedImage, ...]:
        output_format = _text(answer.meta.get("output_format"))
        downloads = [item for item in answer.items if item.url is not None]
        if downloads:
            fetched = await asyncio.gather(
                *(self._download(item.url or "", deadline) for item in downloads),
                return_exceptions=True,
            )
            for item, outcome in zip(downloads, fetched, strict=True):
                if isinstance(outcome, ImagesError):
                    item.problem = str(outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    item.data = outcome
        images = [
            GeneratedImage(
                data=item.data,
                revised_prompt=item.revised_prompt,
                output_format=output_format or sniff_format(item.data),
                source_url=item.url,
            )
            for item in answer.items
            if item.data is not None
        ]
        problems = [item.problem for item in answer.items if item.problem is not None]
        if not images:
            raise ImagesUnavailable(problems[0] if problems else "images API answered no image")
        if problems:
            logger.warning(
                "%d of %d pictures of the answer are unusable (%s); returning the rest",
                len(problems),
                len(answer.items),
                problems[0],
            )
        return tuple(images)

    async def _download(self, url: str, deadline: _Deadline) -> bytes:
        """Download one answered picture, retrying the download alone (never the POST)."""
        for attempt in range(1, _DOWNLOAD_ATTEMPTS + 1):
            try:
                return await self._fetch(url)
            except _Retry as retry:
                deadline.last_error = retry.error
                if attempt >= _DOWNLOAD_ATTEMPTS:
                    raise retry.error from retry.__cause__
                delay = self._backoff(attempt)
                logger.warning(
                    "downloading an answered image failed (%s); retrying the download in %.2f s",
                    retry.error,
                    delay,
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch(self, url: str) -> bytes:
        """GET `url`, following up to `_MAX_REDIRECTS` redirects by hand."""
        unusable = ImagesUnavailable("images API answered a url that cannot be downloaded")
        current = url
        trusted = True  # stays True only while every hop is on the API's own origin
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                target = httpx.URL(current)
            except _UNSENDABLE as exc:
                raise unusable from exc
            if target.scheme not in {"http", "https"} or not target.host:
                raise unusable
            trusted = trusted and _origin(target) == self._api_origin
            try:
                request = self._client.build_request(
                    "GET", target, headers=self._api_headers if trusted else None
                )
                response = await self._client.send(request, stream=True)
            except (*_UNSENDABLE, httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
                raise unusable from exc
            except httpx.HTTPError as exc:
                failed = ImagesUnavailable(
                    f"downloading the answered image failed ({type(exc).__name__})"
                )
                raise _Retry(failed) from exc
            try:
                if response.is_redirect:
                    current = str(response.url.join(response.headers["location"]))
                    continue
                if response.status_code != 200:
                    raise _Retry(
                        ImagesUnavailable(
                            f"downloading the answered image failed with HTTP "
                            f"{response.status_code}",
                            status=response.status_code,
                        )
                    )
                content_type = response.headers.get("content-type", "").lower()
                if content_type.startswith(_NOT_PICTURES):
                    # A CDN's error page served with 200: not the picture, maybe next time.
                    raise _Retry(ImagesUnavailable("the answered url served a page, not a picture"))
                async with self._buffered:
                    picture = await self._read_body(
                        response,
                        limit=self._max_response_bytes,
                        what="the image at the answered url",
                    )
                return bytes(picture)
            except httpx.HTTPError as exc:
                failed = ImagesUnavailable(
                    f"downloading the answered image broke off ({type(exc).__name__})"
                )
                raise _Retry(failed) from exc
            except _UNSENDABLE as exc:  # a Location header that is not a URL
                raise unusable from exc
            finally:
                await response.aclose()
        raise ImagesUnavailable(f"the answered url redirected more than {_MAX_REDIRECTS} times")
