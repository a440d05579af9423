"""A loopback emulator of the OpenAI images API that checks every request against the schema.

    with OpenAIEmulator(api_key="sk-test") as emu:
        client = ImagesClient(base_url=emu.base_url, api_key="sk-test")
        ...
        assert emu.invalid_requests == []

Serves `POST /v1/images/generations`, `/v1/images/edits`, `/v1/images/variations` and
`GET /files/{id}.{ext}` (for `url` answers). Every API request is validated against the official
schema vendored in tests/data/images-openapi.yaml (JSON bodies against `CreateImageRequest`,
multipart forms against `CreateImageEditRequest` / `CreateImageVariationRequest`) and against the
per-model rules the real service enforces (no `response_format` for GPT image models, `n=1` for
dall-e-3, sizes, qualities, prompt lengths). An invalid request is answered 400, like the real
API, and recorded in `invalid_requests`.

Scripted behaviour: `delay` before each answer, and `queue_faults([...])` of one-shot answers
consumed in order by the next API requests (see `Fault`), including a status after a delay (a
gateway's 524 after a long wait) and dropping the connection before or after reading a request.
`big_pictures` answers real-sized pictures (a noisy 1024x1024 PNG of 1.5-3 MB, drawn once per
process); `redirect_hops` / `redirect_to` make `url` answers a chain of 302s, on the API's origin
or via a second server (`cdn_url`, another origin; `url_origin="cdn"` answers urls there at
once) whose requests record which headers arrived; `chunked` sends bodies without a length.
Edit and variation uploads are checked like the real service checks them: png, jpeg or webp
under 50 MB for GPT image models, a square png under 4 MB for dall-e-2, the declared content type
matching the bytes.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import io
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from aiohttp import web
from jsonschema import Draft202012Validator
from PIL import Image
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.emulators import image_usage
from tests.emulators.server import ServerThread

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "data" / "images-openapi.yaml"
_SCHEMA_URI = "urn:openai-images"
_ENDPOINT_SCHEMAS = {
    "generations": "CreateImageRequest",
    "edits": "CreateImageEditRequest",
    "variations": "CreateImageVariationRequest",
}
_DEFAULT_MODEL = {"generations": "dall-e-2", "edits": "gpt-image-1.5", "variations": "dall-e-2"}
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@functools.lru_cache(maxsize=1)
def _schema_document() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _validators() -> dict[str, Draft202012Validator]:
    resource = Resource.from_contents(_schema_document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_SCHEMA_URI, resource)
    return {
        name: Draft202012Validator(
            {"$ref": f"{_SCHEMA_URI}#/components/schemas/{name}"}, registry=registry
        )
        for name in _ENDPOINT_SCHEMAS.values()
    }


def _schema_properties(name: str) -> Mapping[str, Any]:
    return _schema_document()["components"]["schemas"][name]["properties"]


def _allowed_types(prop: Mapping[str, Any]) -> set[str]:
    types: set[str] = set()
    declared = prop.get("type")
    if isinstance(declared, str):
        types.add(declared)
    elif isinstance(declared, list):
        types.update(declared)
    for branch in prop.get("anyOf", []):
        types.update(_allowed_types(branch))
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        types.update(
            _allowed_types(_schema_document()["components"]["schemas"][ref.rsplit("/")[-1]])
        )
    return types


# -- scripted answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One scripted answer to the next API request.

    kind: "status" (HTTP error with an OpenAI error body, or `body` as raw text; after `after`
    seconds when given), "hang" (answer nothing for `seconds`), "garbage" (200 with non-JSON),
    "bad_base64", "empty_data", "disconnect" (read the request, then close the connection
    without answering), "drop_before_body" (close the connection as soon as the request line
    and headers arrived, before reading the body). For streaming requests also
    "stream_error" (after `partials` previews, an `error` event with `code`/`type`/`message`),
    "stream_cut" (after `partials` previews, close the connection without the completed
    event) and "stream_bad_final" (a completed event whose base64 does not decode).
    """

    kind: str = "status"
    status: int = 500
    code: str | None = None
    type: str | None = None
    message: str | None = None
    retry_after: str | None = None
    body: str | None = None
    seconds: float = 30.0
    after: float = 0.0
    partials: int = 0

    @classmethod
    def http(
        cls,
        status: int,
        *,
        code: str | None = None,
        type: str | None = None,
        message: str | None = None,
        retry_after: str | float | None = None,
        body: str | None = None,
        after: float = 0.0,
    ) -> Fault:
        """Answer `status` with an error body (`after` seconds from reading the request)."""
        return cls(
            kind="status",
            status=status,
            code=code,
            type=type,
            message=message,
            retry_after=None if retry_after is None else _retry_after_text(retry_after),
            body=body,
            after=after,
        )

    @classmethod
    def stream_error(
        cls,
        *,
        partials: int = 0,
        code: str | None = None,
        type: str | None = None,
        message: str | None = None,
    ) -> Fault:
        """Stream `partials` previews, then an `error` event (as OpenAI's streams carry them)."""
        return cls(kind="stream_error", partials=partials, code=code, type=type, message=message)

    @classmethod
    def stream_cut(cls, partials: int = 1) -> Fault:
        """Stream `partials` previews, then close the connection before the picture."""
        return cls(kind="stream_cut", partials=partials)

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Fault:
        """Answer nothing for `seconds` (or until the client gives up)."""
        return cls(kind="hang", seconds=seconds)


def _retry_after_text(value: str | float) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def http_date(seconds_from_now: float) -> str:
    """Return an HTTP date `seconds_from_now` in the future (for Retry-After)."""
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


def _as_fault(item: Fault | int | str) -> Fault:
    if isinstance(item, Fault):
        return item
    if isinstance(item, int):
        return Fault.http(item)
    if item in {
        "hang",
        "garbage",
        "bad_base64",
        "empty_data",
        "disconnect",
        "drop_before_body",
        "stream_bad_final",
    }:
        return Fault(kind=item)
    raise ValueError(f"unknown fault {item!r}")


_DEFAULT_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
}
_CODE_DEFAULTS = {
    "moderation_blocked": (
        "image_generation_user_error",
        "Your request was rejected by the safety system.",
    ),
    "content_policy_violation": (
        "invalid_request_error",
        "Your request was rejected as a result of our safety system.",
    ),
    "insufficient_quota": ("insufficient_quota", "You exceeded your current quota."),
}


def error_body(
    *, status: int, message: str | None = None, code: str | None = None, type: str | None = None
) -> dict[str, Any]:
    """Return an OpenAI-shaped error body."""
    default_type, default_code, default_message = _DEFAULT_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    code_type, code_message = _CODE_DEFAULTS.get(code or "", (None, None))
    return {
        "error": {
            "message": message or code_message or default_message,
            "type": type or code_type or default_type,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


# -- what was received --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedFile:
    """One uploaded file of a multipart request."""

    filename: str | None
    content_type: str
    data: bytes


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator received."""

    method: str
    path: str
    headers: Mapping[str, str]
    json: Any = None
    form: Mapping[str, str] | None = None
    files: Mapping[str, tuple[RecordedFile, ...]] | None = None
    at: float = 0.0
    query: Mapping[str, str] = field(default_factory=dict)  # the URL's query parameters
    server: str = "api"  # "api", or "cdn" for the second origin that redirects may lead to

    @property
    def endpoint(self) -> str | None:
        """Return generations/edits/variations for API requests, else None."""
        if self.path.startswith("/v1/images/"):
            return self.path.rsplit("/", 1)[-1]
        return None

    @property
    def fields(self) -> Mapping[str, Any]:
        """Return the JSON body or the form fields, whichever this request had."""
        if isinstance(self.json, dict):
            return self.json
        return self.form or {}


@dataclass(frozen=True)
class InvalidRequest:
    """A request that the real API would have rejected, with the reasons."""

    request: RecordedRequest
    problems: tuple[str, ...]


# -- per-model rules the schema does not express --------------------------------------------------


def _family(model: str) -> str:
    if model.startswith(("gpt-image", "chatgpt-image")):
        return "gpt"
    if model.startswith("dall-e-3"):
        return "dall-e-3"
    if model.startswith("dall-e-2"):
        return "dall-e-2"
    return "unknown"


def _free_size_ok(width: int, height: int) -> bool:
    return (
        width % 16 == 0
        and height % 16 == 0
        and max(width, height) <= 3840
        and max(width, height) <= 3 * min(width, height)
        and 655_360 <= width * height <= 3840 * 2160
    )


def model_problems(endpoint: str, body: Mapping[str, Any]) -> list[str]:
    """Return what the real service would reject in `body` for its model."""
    model = str(body.get("model") or _DEFAULT_MODEL[endpoint])
    family = _family(model)
    if family == "unknown":
        return []
    problems: list[str] = []
    if endpoint == "edits" and family == "dall-e-3":
        problems.append("dall-e-3 does not support edits")
    if endpoint == "variations" and family != "dall-e-2":
        problems.append("only dall-e-2 supports variations")
    if family == "gpt" and "response_format" in body:
        problems.append("response_format is not supported for GPT image models")
    if "style" in body and family != "dall-e-3":
        problems.append("style is only supported for dall-e-3")
    if family != "gpt":
        problems.extend(
            f"{name} is only supported for GPT image models"
            for name in ("background", "output_format", "output_compression", "moderation")
            if name in body
        )
        if body.get("stream") is True:
            problems.append("stream is only supported for GPT image models")
    n = body.get("n", 1)
    if family == "dall-e-3" and n != 1:
        problems.append("dall-e-3 supports only n=1")
    prompt = body.get("prompt")
    limit = {"gpt": 32000, "dall-e-3": 4000, "dall-e-2": 1000}[family]
    if isinstance(prompt, str) and len(prompt) > limit:
        problems.append(f"prompt longer than {limit} characters")
    quality = body.get("quality")
    qualities = {
        "gpt": {"low", "medium", "high", "auto"},
        "dall-e-3": {"standard", "hd", "auto"},
        "dall-e-2": {"standard", "auto"},
    }[family]
    if quality is not None and quality not in qualities:
        problems.append(f"quality {quality!r} is not supported by {model}")
    size = body.get("size")
    if size is not None and not _size_ok(family, model, str(size)):
        problems.append(f"size {size!r} is not supported by {model}")
    if body.get("background") == "transparent" and body.get("output_format", "png") == "jpeg":
        problems.append("transparent background needs png or webp output")
    return problems


_UPLOAD_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


def _upload_format(data: bytes) -> str | None:
    # Decoded like the service does, not sniffed: a png header on garbage is not a png.
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            found = (image.format or "").lower()
            return found if found in {"png", "jpeg", "webp"} else None
    except Exception:  # any undecodable upload is simply not an image
        return None


def upload_problems(model: str, images: Iterable[RecordedFile]) -> list[str]:
    """Return what the real service would reject in the uploaded `image` files for `model`.

    GPT image models take png, webp or jpg files of at most 50 MB; dall-e-2 a square png of at
    most 4 MB.
    The service goes by the declared content type ("unsupported mimetype"), so it must be one of
    the three and match the bytes.
    """
    family = _family(model)
    if family == "unknown":
        return []
    problems: list[str] = []
    for upload in images:
        declared = _UPLOAD_TYPES.get(upload.content_type)
        actual = _upload_format(upload.data)
        if declared is None:
            problems.append(
                f"Invalid file 'image': unsupported mimetype ({upload.content_type!r}). "
                "Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'."
            )
        elif actual != declared:
            problems.append(
                f"image declared as {upload.content_type} is {actual or 'not an image'}"
            )
        if family == "dall-e-2":
            if actual != "png" or len(upload.data) > 4 * 1024 * 1024:
                problems.append("Uploaded image must be a PNG and less than 4 MB.")
            elif not _square(upload.data):
                problems.append("Uploaded image must be square.")
        elif len(upload.data) > 50 * 1024 * 1024:
            problems.append("Uploaded image must be less than 50 MB.")
    return problems


def _square(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return bool(image.width == image.height)
    except Exception:  # any undecodable upload is simply not square
        return False


def _size_ok(family: str, model: str, size: str) -> bool:
    if family == "dall-e-2":
        return size in {"256x256", "512x512", "1024x1024"}
    if family == "dall-e-3":
        return size in {"1024x1024", "1792x1024", "1024x1792"}
    if size in {"auto", "1024x1024", "1536x1024", "1024x1536"}:
        return True
    match = _SIZE_RE.match(size)
    if model.startswith("gpt-image-2") and match:
        return _free_size_ok(int(match.group(1)), int(match.group(2)))
    return False


# -- the emulator -------------------------------------------------------------------------------


@dataclass
class StreamRecord:
    """One streamed answer: what was sent and how it ended.

    outcome: "streaming" (still going), "completed", "client_closed" (the client dropped the
    connection mid-stream), "error" (an error event was sent), "cut" (the emulator closed it).
    `partial_sent_at` holds `time.perf_counter()` just before each preview was written.
    """

    endpoint: str
    partial_sent_at: list[float] = field(default_factory=list)
    final_sent_at: float | None = None
    outcome: str = "streaming"


@dataclass
class _State:
    streams: list[StreamRecord] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    invalid: list[InvalidRequest] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    download_faults: deque[int | str] = field(default_factory=deque)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    in_flight: int = 0
    peak_in_flight: int = 0


class OpenAIEmulator:
    """Serve a schema-checking OpenAI images API on 127.0.0.1 from its own thread."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        answer_with: str = "b64_json",
        delay: float = 0.0,
        image_bytes: bytes | None = None,
    ) -> None:
        self.api_key = api_key
        self.answer_with = answer_with  # "b64_json" (model-dependent default) or "url"
        self.delay = delay
        self.image_bytes = image_bytes
        self.big_pictures = False  # answer the real-sized picture of `big_picture()`
        self.redirect_hops = 0  # `url` answers go through this many 302s before the file
        self.redirect_to = "api"  # where the redirects point: "api" (same origin) or "cdn"
        self.url_origin = "api"  # where `url` answers point first: "api" or "cdn"
        self.chunked = False  # send 200 answers without Content-Length (chunked), like proxies do
        self.answer_url: str | None = None  # answer this url (whatever it is) for every picture
        # How a request with `stream: true` is answered: "sse" (previews and the completed
        # event as `text/event-stream`), "reject" (400 naming `stream`, a host that does not
        # stream), "json" (a plain JSON answer), "error" (500, like LiteLLM failing a stream).
        self.streaming = "sse"
        self.partial_delays: tuple[float, ...] = ()  # seconds before each preview (else 0)
        self.final_delay = 0.0  # seconds between the last preview and the completed event
        self.sse_done = False  # end the stream with `data: [DONE]`
        self.stream_chunk_bytes: int | None = None  # write each event in pieces this big
        # When set, every event after the first waits (up to 10 s) for a release of this
        # semaphore: a test's callback releases it, so the next event follows its preview.
        self.stream_gate: threading.Semaphore | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = _State()
        self._images: dict[tuple[int, int, bool, str], bytes] = {}
        self._ids = itertools.count(1)
        self._server = ServerThread(functools.partial(self._app, "api"), name="openai-emulator")
        self._cdn = ServerThread(functools.partial(self._app, "cdn"), name="openai-emulator-cdn")

    def _app(self, server: str) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        if server == "api":
            app.router.add_post("/v1/images/{endpoint:generations|edits|variations}", self._api)
        app.router.add_get("/files/{name}", functools.partial(self._file, server))
        app.router.add_get("/hop/{hops:[0-9]+}/{name}", functools.partial(self._hop, server))
        return app

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving."""
        _validators()  # load the schema before the first request
        self._server.start()
        self._cdn.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._cdn.stop()
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Return the server root, e.g. http://127.0.0.1:PORT."""
        return self._server.url

    @property
    def cdn_url(self) -> str:
        """Return the root of the second server (another origin), e.g. http://127.0.0.1:PORT."""
        return self._cdn.url

    @property
    def base_url(self) -> str:
        """Return the API base to configure (`{url}/v1`)."""
        return f"{self._server.url}/v1"

    # -- scripting and inspection -----------------------------------------------------------

    def queue_faults(self, faults: Iterable[Fault | int | str]) -> None:
        """Script the next API answers, consumed in order (ints are statuses, strings kinds)."""
        with self._lock:
            self._state.faults.extend(_as_fault(item) for item in faults)

    def queue_download_faults(self, faults: Iterable[int | str]) -> None:
        """Script the next file downloads: an HTTP status, "disconnect", "hang" or "html" (a 200
        error page, as CDNs serve)."""
        with self._lock:
            self._state.download_faults.extend(faults)

    def reset(self) -> None:
        """Forget every request, fault and stored file; keep the settings."""
        with self._lock:
            self._state = _State()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Return every request received so far (API calls and downloads)."""
        with self._lock:
            return list(self._state.requests)

    @property
    def api_requests(self) -> list[RecordedRequest]:
        """Return the API calls received so far (each one a POST, paid for by a real service)."""
        return [request for request in self.requests if request.endpoint is not None]

    @property
    def downloads(self) -> list[RecordedRequest]:
        """Return the GETs of `url` answers (files and redirect hops) on either origin."""
        return [request for request in self.requests if request.endpoint is None]

    @property
    def invalid_requests(self) -> list[InvalidRequest]:
        """Return the requests the real API would have rejected."""
        with self._lock:
            return list(self._state.invalid)

    @property
    def streams(self) -> list[StreamRecord]:
        """Return the streamed answers so far (copies, in order)."""
        with self._lock:
            return [
                dataclasses.replace(s, partial_sent_at=list(s.partial_sent_at))
                for s in self._state.streams
            ]

    def wait_for_stream_end(self, index: int = 0, timeout: float = 5.0) -> StreamRecord:
        """Block until stream `index` has ended (any outcome); raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                streams = self._state.streams
                if len(streams) > index and streams[index].outcome != "streaming":
                    found = streams[index]
                    return dataclasses.replace(found, partial_sent_at=list(found.partial_sent_at))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"stream {index} did not end within {timeout} s")
                self._changed.wait(remaining)

    @property
    def peak_in_flight(self) -> int:
        """Return the most API requests that were being answered at once."""
        with self._lock:
            return self._state.peak_in_flight

    @property
    def in_flight(self) -> int:
        """Return how many API requests are being answered now (a closed connection ends one)."""
        with self._lock:
            return self._state.in_flight

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until `count` API requests have arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                received = [r for r in self._state.requests if r.endpoint is not None]
                if len(received) >= count:
                    return received
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(received)} of {count} requests within {timeout} s")
                self._changed.wait(remaining)

    # -- handlers ---------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        with self._changed:
            faults = self._state.faults
            dropped = bool(faults) and faults[0].kind == "drop_before_body"
            if dropped:
                faults.popleft()
                self._state.requests.append(
                    RecordedRequest(
                        method=request.method,
                        path=request.path,
                        headers=dict(request.headers),
                        at=time.monotonic(),
                    )
                )
                self._changed.notify_all()
        if dropped:
            # Like a proxy that gives up on an upload: the body is never read, so the service
            # behind it never saw a request it could have drawn.
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        recorded, body, problems = await self._read(request, endpoint)
        recorded = dataclasses.replace(recorded, query=dict(request.query))
        with self._changed:
            self._state.requests.append(recorded)
            self._state.in_flight += 1
            self._state.peak_in_flight = max(self._state.peak_in_flight, self._state.in_flight)
            self._changed.notify_all()
        try:
            return await self._answer(request, endpoint, recorded, body, problems)
        finally:
            with self._lock:
                self._state.in_flight -= 1

    async def _answer(
        self,
        request: web.Request,
        endpoint: str,
        recorded: RecordedRequest,
        body: dict[str, Any],
        problems: list[str],
    ) -> web.StreamResponse:
        if self.api_key is not None:
            expected = f"Bearer {self.api_key}"
            given = request.headers.get("Authorization", "")
            if given != expected:
                # Echo what was sent, so tests can prove the client scrubs keys from errors.
                token = given.removeprefix("Bearer ").strip() or "<none>"
                message = f"Incorrect API key provided: {token}."
                return _json(401, error_body(status=401, message=message))
        if problems:
            with self._lock:
                self._state.invalid.append(InvalidRequest(recorded, tuple(problems)))
            return _json(400, error_body(status=400, message="; ".join(problems)))
        with self._lock:
            fault = self._state.faults.popleft() if self._state.faults else None
        if self.delay:
            await _sleep_while_connected(request, self.delay)
        streams = body.get("stream") is True
        if fault is not None and not fault.kind.startswith("stream_"):
            scripted = await self._fault(request, fault)
            if scripted is not None:
                return scripted
        if streams and self.streaming == "reject":
            payload = error_body(
                status=400,
                message="Unknown parameter: 'stream'.",
                code="unknown_parameter",
            )
            payload["error"]["param"] = "stream"
            return _json(400, payload)
        if streams and self.streaming == "error":
            return _json(500, error_body(status=500))
        if streams and self.streaming == "sse":
            return await self._stream(request, endpoint, body, fault)
        return self._success(endpoint, body, fault)

    async def _fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        if fault.kind == "status":
            if fault.after:
                await _sleep_while_connected(request, fault.after)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            if fault.body is not None:
                return web.Response(status=fault.status, text=fault.body, headers=headers)
            payload = error_body(
                status=fault.status, message=fault.message, code=fault.code, type=fault.type
            )
            return _json(fault.status, payload, headers=headers)
        if fault.kind == "hang":
            await _sleep_while_connected(request, fault.seconds)
            return _json(500, error_body(status=500, message="hang ended"))
        if fault.kind == "garbage":
            return web.Response(status=200, text="<html>502 Bad Gateway</html>")
        if fault.kind == "empty_data":
            return _json(200, {"created": int(time.time()), "data": []})
        if fault.kind == "disconnect":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        return None  # bad_base64 is shaped by _success

    async def _stream(
        self, request: web.Request, endpoint: str, body: Mapping[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        prefix = "image_generation" if endpoint == "generations" else "image_edit"
        size = str(body.get("size") or "1024x1024")
        transparent = body.get("background") == "transparent"
        fmt = str(body.get("output_format") or "png")
        quality = body.get("quality")
        meta = {
            "size": size if size in {"1024x1024", "1536x1024", "1024x1536"} else "auto",
            "quality": quality if quality in {"low", "medium", "high"} else "medium",
            "background": "transparent" if transparent else "opaque",
            "output_format": fmt,
        }
        picture = base64.b64encode(self._picture(size, transparent=transparent, fmt=fmt))
        previews = int(body.get("partial_images") or 0)
        if fault is not None:
            previews = min(previews, fault.partials)
        record = StreamRecord(endpoint=endpoint)
        with self._changed:
            self._state.streams.append(record)
            self._changed.notify_all()
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        outcome = "client_closed"
        try:
            await response.prepare(request)
            for index in range(previews):
                delay = self.partial_delays[index] if index < len(self.partial_delays) else 0.0
                if not await _wait_connected(request, delay):
                    return response
                if index and not await self._pass_gate(request):
                    return response
                event = {
                    "type": f"{prefix}.partial_image",
                    "created_at": int(time.time()),
                    "partial_image_index": index,
                    **meta,
                }
                await self._send_event(response, event, picture, sent=record.partial_sent_at)
            if not await _wait_connected(request, self.final_delay):
                return response
            if previews and not await self._pass_gate(request):
                return response
            if fault is not None and fault.kind == "stream_error":
                error = error_body(
                    status=400, message=fault.message, code=fault.code, type=fault.type
                )
                await self._send_event(response, {"type": "error", **error}, None, name="error")
                outcome = "error"
            elif fault is not None and fault.kind == "stream_cut":
                outcome = "cut"
                if request.transport is not None:
                    request.transport.close()
                return response
            else:
                completed = {
                    "type": f"{prefix}.completed",
                    "created_at": int(time.time()),
                    **meta,
                    "usage": image_usage.usage(
                        prompt=str(body.get("prompt") or ""),
                        n=1,
                        size=meta["size"] if meta["size"] != "auto" else "1024x1024",
                        quality=str(meta["quality"]),
                        edit=endpoint == "edits",
                    ),
                }
                final = (
                    b"this is %%% not base64"
                    if fault and fault.kind == "stream_bad_final"
                    else picture
                )
                sent: list[float] = []
                await self._send_event(response, completed, final, sent=sent)
                with self._lock:
                    record.final_sent_at = sent[0]
                outcome = "completed"
            if self.sse_done:
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        except (ConnectionError, asyncio.CancelledError):
            outcome = "client_closed"
            raise
        finally:
            with self._changed:
                record.outcome = outcome
                self._changed.notify_all()

    async def _pass_gate(self, request: web.Request) -> bool:
        """Wait for `stream_gate` (bounded); return whether the client is still connected."""
        gate = self.stream_gate
        deadline = time.monotonic() + 10.0
        while gate is not None and not gate.acquire(blocking=False):
            if time.monotonic() > deadline or not await _wait_connected(request, 0.01):
                break
        return await _wait_connected(request, 0.0)

    async def _send_event(
        self,
        response: web.StreamResponse,
        event: Mapping[str, Any],
        picture: bytes | None,
        *,
        name: str | None = None,
        sent: list[float] | None = None,
    ) -> None:
        """Write one event; append to `sent` the time its first byte goes out."""
        data = json.dumps(event).encode()
        if picture is not None:  # the picture goes first, as OpenAI's events have it
            data = b'{"b64_json": "' + picture + b'", ' + data[1:]
        payload = f"event: {name or event['type']}\ndata: ".encode() + data + b"\n\n"
        if sent is not None:
            with self._lock:
                sent.append(time.perf_counter())
        step = self.stream_chunk_bytes or len(payload)
        for start in range(0, len(payload), step):
            await response.write(payload[start : start + step])

    def _success(self, endpoint: str, body: Mapping[str, Any], fault: Fault | None) -> web.Response:
        model = str(body.get("model") or _DEFAULT_MODEL[endpoint])
        family = _family(model)
        n = int(body.get("n") or 1)
        size = str(body.get("size") or "1024x1024")
        transparent = body.get("background") == "transparent"
        fmt = str(body.get("output_format") or "png")
        data = self._picture(size, transparent=transparent, fmt=fmt)
        response_format = body.get("response_format")
        use_url = self.answer_with == "url" or (
            family in {"dall-e-2", "dall-e-3"} and response_format in (None, "url")
        )
        if response_format == "b64_json":
            use_url = False
        items: list[dict[str, Any]] = []
        for _ in range(n):
            item: dict[str, Any] = {}
            if fault is not None and fault.kind == "bad_base64":
                item["b64_json"] = "this is %%% not base64 !!!"
            elif self.answer_url is not None:
                item["url"] = self.answer_url
            elif use_url:
                item["url"] = self._store(data, fmt)
            else:
                item["b64_json"] = base64.b64encode(data).decode("ascii")
            if family == "dall-e-3":
                item["revised_prompt"] = f"A vivid rendering of: {body.get('prompt', '')}"
            items.append(item)
        payload: dict[str, Any] = {"created": int(time.time()), "data": items}
        if family == "gpt":
            quality = body.get("quality")
            answered_size = size if size != "auto" else "1024x1024"
            answered_quality = quality if quality in {"low", "medium", "high"} else "medium"
            payload.update(
                size=answered_size,
                quality=answered_quality,
                background="transparent" if transparent else "opaque",
                output_format=fmt,
                usage=image_usage.usage(
                    prompt=str(body.get("prompt") or ""),
                    n=n,
                    size=answered_size,
                    quality=answered_quality,
                    edit=endpoint == "edits",
                ),
            )
        response = _json(200, payload)
        if self.chunked:
            response.enable_chunked_encoding()
        return response

    def _record_download(self, request: web.Request, server: str) -> None:
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            at=time.monotonic(),
            server=server,
        )
        with self._changed:
            self._state.requests.append(recorded)
            self._changed.notify_all()

    async def _hop(self, server: str, request: web.Request) -> web.StreamResponse:
        self._record_download(request, server)
        hops, name = int(request.match_info["hops"]), request.match_info["name"]
        root = self.cdn_url if self.redirect_to == "cdn" else self.url
        target = f"{root}/hop/{hops - 1}/{name}" if hops > 1 else f"{root}/files/{name}"
        raise web.HTTPFound(target)

    async def _file(self, server: str, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self._record_download(request, server)
        with self._changed:
            fault = self._state.download_faults.popleft() if self._state.download_faults else None
            stored = self._state.files.get(name.split(".", 1)[0])
        if fault == "disconnect":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if fault == "hang":
            await _sleep_while_connected(request, 30.0)
            return web.Response(status=500)
        if fault == "html":
            page = "<html><body>The link has expired. Please retry later.</body></html>"
            return web.Response(text=page, content_type="text/html")
        if isinstance(fault, int):
            return web.Response(status=fault, text="scripted download failure")
        if stored is None:
            return web.Response(status=404, text="no such file")
        data, content_type = stored
        response = web.Response(body=data, content_type=content_type)
        if self.chunked:
            response.enable_chunked_encoding()
        return response

    # -- helpers ----------------------------------------------------------------------------

    async def _read(
        self, request: web.Request, endpoint: str
    ) -> tuple[RecordedRequest, dict[str, Any], list[str]]:
        headers = dict(request.headers)
        problems: list[str] = []
        if request.content_type == "application/json" and endpoint == "generations":
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
                problems.append("body is not JSON")
            recorded = RecordedRequest(
                method=request.method,
                path=request.path,
                headers=headers,
                json=body,
                at=time.monotonic(),
            )
            if not isinstance(body, dict):
                return recorded, {}, problems or ["body is not a JSON object"]
            instance: dict[str, Any] = body
        elif request.content_type == "multipart/form-data" and endpoint != "generations":
            form: dict[str, str] = {}
            files: dict[str, list[RecordedFile]] = {}
            posted = await request.post()
            for name, value in posted.items():
                if isinstance(value, web.FileField):
                    files.setdefault(name, []).append(
                        RecordedFile(value.filename, value.content_type, value.file.read())
                    )
                else:
                    form[name] = str(value)
            recorded = RecordedRequest(
                method=request.method,
                path=request.path,
                headers=headers,
                form=form,
                files={name: tuple(found) for name, found in files.items()},
                at=time.monotonic(),
            )
            instance = self._form_instance(endpoint, form, files, problems)
            model = form.get("model") or _DEFAULT_MODEL[endpoint]
            problems.extend(upload_problems(model, files.get("image", [])))
        else:
            recorded = RecordedRequest(
                method=request.method, path=request.path, headers=headers, at=time.monotonic()
            )
            return recorded, {}, [f"unexpected content type {request.content_type!r}"]
        validator = _validators()[_ENDPOINT_SCHEMAS[endpoint]]
        problems.extend(
            f"{'/'.join(map(str, error.absolute_path)) or '<body>'}: {error.message}"
            for error in validator.iter_errors(instance)
        )
        problems.extend(model_problems(endpoint, instance))
        return recorded, instance, problems

    @staticmethod
    def _form_instance(
        endpoint: str,
        form: Mapping[str, str],
        files: Mapping[str, list[RecordedFile]],
        problems: list[str],
    ) -> dict[str, Any]:
        properties = _schema_properties(_ENDPOINT_SCHEMAS[endpoint])
        instance: dict[str, Any] = {}
        for name, text in form.items():
            key = name.removesuffix("[]")
            prop = properties.get(key)
            if prop is not None and prop.get("format") == "binary":
                problems.append(f"{key} must be uploaded as a file")
            types = _allowed_types(prop or {})
            if "integer" in types and re.fullmatch(r"-?\d+", text):
                instance[key] = int(text)
            elif "boolean" in types and text in {"true", "false"}:
                instance[key] = text == "true"
            else:
                instance[key] = text
        for name, uploaded in files.items():
            key = name.removesuffix("[]")
            prop = properties.get(key, {})
            if "binary" not in json.dumps(prop):
                problems.append(f"{name} is not a file field")
            for item in uploaded:
                if not item.data:
                    problems.append(f"{name} is empty")
            placeholders = ["<binary>"] * len(uploaded)
            instance[key] = placeholders if name.endswith("[]") or len(uploaded) > 1 else "<binary>"
        return instance

    def _picture(self, size: str, *, transparent: bool, fmt: str) -> bytes:
        if self.image_bytes is not None:
            return self.image_bytes
        if self.big_pictures:
            return big_picture()
        match = _SIZE_RE.match(size)
        width, height = (int(match.group(1)), int(match.group(2))) if match else (1024, 1024)
        if fmt == "jpeg":
            transparent = False
        key = (width, height, transparent, fmt)
        with self._lock:
            cached = self._images.get(key)
        if cached is not None:
            return cached
        data = render_picture(width, height, transparent=transparent, fmt=fmt)
        with self._lock:
            self._images[key] = data
        return data

    def _store(self, data: bytes, fmt: str) -> str:
        file_id = f"img-{next(self._ids)}"
        with self._lock:
            self._state.files[file_id] = (data, _CONTENT_TYPES.get(fmt, "image/png"))
        root = self.cdn_url if self.url_origin == "cdn" else self.url
        if self.redirect_hops > 0:
            return f"{root}/hop/{self.redirect_hops}/{file_id}.{fmt}"
        return f"{root}/files/{file_id}.{fmt}"


@functools.lru_cache(maxsize=1)
def big_picture() -> bytes:
    """Return a photo-like 1024x1024 PNG of 1.5-3 MB (noise over gradients), drawn once."""
    side = 1024
    gradient = Image.linear_gradient("L").resize((side, side))
    bands = [
        Image.blend(Image.effect_noise((side, side), sigma), gradient.rotate(90 * index), 0.5)
        for index, sigma in enumerate((32, 40, 48))
    ]
    buffer = io.BytesIO()
    Image.merge("RGB", bands).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render_picture(
    width: int, height: int, *, transparent: bool = False, fmt: str = "png"
) -> bytes:
    """Draw a small two-colour picture of the given size and encode it."""
    mode = "RGBA" if transparent else "RGB"
    background = (0, 0, 0, 0) if transparent else (250, 220, 40)
    image = Image.new(mode, (width, height), background)
    box = (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
    image.paste((30, 90, 200, 255) if transparent else (30, 90, 200), box)
    buffer = io.BytesIO()
    pil_format = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}.get(fmt, "PNG")
    options: dict[str, Any] = {"compress_level": 1} if pil_format == "PNG" else {"quality": 80}
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def _json(status: int, payload: Any, *, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(payload),
        content_type="application/json",
        headers=dict(headers or {}),
    )


async def _wait_connected(request: web.Request, seconds: float) -> bool:
    """Wait `seconds` (0: just look); return whether the client is still connected."""
    if seconds > 0:
        await _sleep_while_connected(request, seconds)
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def _sleep_while_connected(request: web.Request, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
