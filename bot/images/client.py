"""Client of an OpenAI-compatible images API; the only module that imports `httpx`.

    async with ImagesClient(base_url="https://api.openai.com/v1", api_key=key) as client:
        result = await client.generate(description, caps_for(description.model))

Errors are the family of `bot.images.errors`; no `httpx` error escapes this module.

Retries: at most `max_attempts` attempts in all. A 429 waits for `Retry-After` (seconds or an
HTTP date, capped at `max_retry_after`) or backs off; 5xx, dropped connections and garbled answers
back off exponentially with full jitter. The API key is sent only to the API (never to the hosts
of `url` answers) and is scrubbed from every error message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Self

import httpx

from bot import __version__
from bot.capabilities import ImageDescription, ModelCaps
from bot.images.bodies import build_generation_body, common_fields, endpoint_url, form, merge_extra
from bot.images.errors import (
    ImagesBadRequest,
    ImagesError,
    ImagesRateLimited,
    ImagesTimeout,
    ImagesUnavailable,
    classify_response,
)
from bot.images.types import GeneratedImage, ImagesResult, sniff_format
from bot.redaction import redact, secret_header_values

__all__ = ["ImagesClient"]

logger = logging.getLogger(__name__)

_DETAIL_LIMIT = 500
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another attempt."""

    def __init__(self, error: ImagesError, delay: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay


_Fields = dict[str, object]
_Files = dict[str, tuple[str, bytes, str]]


@dataclass(frozen=True)
class _Call:
    endpoint: str
    model: str
    json_body: _Fields | None = None
    form: dict[str, str] | None = None
    files: _Files | None = None


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
        max_download_bytes: int = 50 * 1024 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_connections: int = 32,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        headers = dict(extra_headers or {})
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # Only API calls carry these; downloads of `url` answers go to other hosts without them.
        self._api_headers = headers
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._max_retry_after = max_retry_after
        self._max_download_bytes = max_download_bytes
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(connect=10.0, read=timeout, write=60.0, pool=timeout),
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

    async def generate(self, description: ImageDescription, caps: ModelCaps) -> ImagesResult:
        """Generate `description.n` pictures (fanning out n=1 calls where the model needs it)."""
        call = _Call(
            endpoint="generations",
            model=description.model,
            json_body=build_generation_body(description, caps),
        )
        return await self._run(call, count=description.n, fan_out=caps.one_per_request)

    async def edit(
        self,
        description: ImageDescription,
        caps: ModelCaps,
        *,
        image: bytes,
        image_filename: str = "image.png",
        image_content_type: str = "image/png",
        mask: bytes | None = None,
    ) -> ImagesResult:
        """Edit one picture following `description.prompt` (multipart upload)."""
        if not caps.supports_edit:
            raise ImagesBadRequest(f"{caps.name} does not support edits", code="unsupported")
        files: _Files = {"image": (image_filename, image, image_content_type)}
        if mask is not None:
            files["mask"] = ("mask.png", mask, "image/png")
        fields = merge_extra(common_fields(description, caps), description.extra)
        call = _Call(endpoint="edits", model=description.model, form=form(fields), files=files)
        return await self._run(call, count=description.n, fan_out=caps.one_per_request)

    async def variation(
        self,
        *,
        model: str,
        caps: ModelCaps,
        image: bytes,
        n: int,
        size: str | None,
        image_filename: str = "image.png",
        image_content_type: str = "image/png",
    ) -> ImagesResult:
        """Make `n` variations of one picture (multipart upload)."""
        if not caps.supports_variation:
            raise ImagesBadRequest(f"{caps.name} does not support variations", code="unsupported")
        fields: _Fields = {"model": model, "n": 1 if caps.one_per_request else n, "size": size}
        if caps.response_format:
            fields["response_format"] = "b64_json"
        files: _Files = {"image": (image_filename, image, image_content_type)}
        call = _Call(endpoint="variations", model=model, form=form(fields), files=files)
        return await self._run(call, count=n, fan_out=caps.one_per_request)

    # -- attempts ---------------------------------------------------------------------------

    async def _run(self, call: _Call, *, count: int, fan_out: bool) -> ImagesResult:
        if not fan_out or count <= 1:
            return await self._with_retries(call)
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(self._with_retries(call) for _ in range(count)), return_exceptions=True
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
                count,
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

    async def _with_retries(self, call: _Call) -> ImagesResult:
        started = time.perf_counter()
        for attempt in range(1, self._max_attempts + 1):
            try:
                return await self._attempt(call, started)
            except _Retry as retry:
                if attempt >= self._max_attempts:
                    raise retry.error from retry.__cause__
                delay = retry.delay if retry.delay is not None else self._backoff(attempt)
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

    async def _attempt(self, call: _Call, started: float) -> ImagesResult:
        url = endpoint_url(self._base_url, call.endpoint)
        logger.debug("POST %s model=%s", url, call.model)
        try:
            response = await self._client.post(
                url,
                json=call.json_body,
                data=call.form,
                files=call.files,
                headers=self._api_headers,
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "images API") from exc
        except httpx.InvalidURL as exc:
            raise ImagesUnavailable("the images API base url is not valid") from exc
        if response.status_code != 200:
            raise self._status_error(response, method="POST", url=url)
        try:
            payload = response.json()
        except ValueError as exc:
            error = ImagesUnavailable("images API answered something that is not JSON")
            raise _Retry(error) from exc
        return await self._result(payload, call.model, started)

    def _scrub(self, text: str) -> str:
        secrets = (self._api_key, *secret_header_values(self._api_headers))
        text = " ".join(redact(text, secrets).split())
        return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"

    def _transport_error(self, exc: httpx.HTTPError, what: str) -> Exception:
        name = type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            return _Retry(ImagesUnavailable(f"could not connect to the {what} in time ({name})"))
        if isinstance(exc, httpx.TimeoutException):
            return ImagesTimeout(f"the {what} did not answer within {self._timeout:g} s ({name})")
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            return _Retry(ImagesUnavailable(f"connection to the {what} failed ({name})"))
        return ImagesUnavailable(f"request to the {what} failed ({name})")

    def _status_error(self, response: httpx.Response, *, method: str, url: str) -> Exception:
        error = classify_response(
            response.status_code,
            response.headers,
            response.content,
            now=self._clock(),
            scrub=self._scrub,
        )
        error.method, error.url = method, url
        if isinstance(error, ImagesRateLimited):
            retry_after = error.retry_after
            delay = min(retry_after, self._max_retry_after) if retry_after is not None else None
            return _Retry(error, delay)
        if isinstance(error, ImagesUnavailable):
            return _Retry(error)
        return error

    # -- responses --------------------------------------------------------------------------

    async def _result(self, payload: object, model: str, started: float) -> ImagesResult:
        if not isinstance(payload, dict):
            raise _Retry(ImagesUnavailable("images API answered JSON that is not an object"))
        data = payload.get("data")
        if not isinstance(data, list) or not data:
            raise _Retry(ImagesUnavailable("images API answered without any image data"))
        response_format = _text(payload.get("output_format"))
        images = []
        for item in data:
            if not isinstance(item, dict):
                raise _Retry(ImagesUnavailable("images API answered a malformed data item"))
            images.append(await self._image(item, response_format))
        return ImagesResult(
            model=model,
            images=tuple(images),
            usage=_usage(payload.get("usage")),
            size=_text(payload.get("size")),
            quality=_text(payload.get("quality")),
            background=_text(payload.get("background")),
            elapsed=time.perf_counter() - started,
        )

    async def _image(self, item: dict[str, Any], output_format: str | None) -> GeneratedImage:
        revised = _text(item.get("revised_prompt"))
        encoded = item.get("b64_json")
        url = item.get("url")
        source_url: str | None = None
        if isinstance(encoded, str) and encoded:
            data = self._decode(encoded)
        elif isinstance(url, str) and url:
            if url.startswith("data:"):
                data = self._decode(url.partition(",")[2])
            else:
                source_url = url
                data = await self._download(url)
        else:
            raise _Retry(ImagesUnavailable("images API answered an item without b64_json or url"))
        if not data:
            raise _Retry(ImagesUnavailable("images API answered an empty image"))
        return GeneratedImage(
            data=data,
            revised_prompt=revised,
            output_format=output_format or sniff_format(data),
            source_url=source_url,
        )

    def _decode(self, encoded: str) -> bytes:
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _Retry(ImagesUnavailable("images API answered undecodable base64")) from exc

    async def _download(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise ImagesUnavailable("images API answered a url that cannot be downloaded")
        limit = self._max_download_bytes
        too_large = ImagesUnavailable(f"the image at the answered url is over {limit} bytes")
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise _Retry(
                        ImagesUnavailable(
                            f"downloading the answered image failed with HTTP "
                            f"{response.status_code}",
                            status=response.status_code,
                        )
                    )
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > limit:
                    raise too_large
                chunks: list[bytes] = []
                received = 0
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > limit:
                        raise too_large
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "image host") from exc
        except httpx.InvalidURL as exc:
            raise ImagesUnavailable("images API answered a url that cannot be downloaded") from exc
        return b"".join(chunks)
