"""The images boundary: the one place that talks to an OpenAI-compatible images API.

`client` holds `ImagesClient` (the only module importing `httpx`); `errors` its exception family
and the reading of error answers; `bodies` the request bodies; `types` what a call returns (and
the streamed `PartialImage`); `sse` the event-stream decoder and `events` the reading of streamed
events.
"""

from bot.images.bodies import build_generation_body
from bot.images.client import ImagesClient, tune_http_reads
from bot.images.errors import (
    ImagesAuthError,
    ImagesBadRequest,
    ImagesError,
    ImagesQuotaExhausted,
    ImagesRateLimited,
    ImagesRefused,
    ImagesTimeout,
    ImagesUnavailable,
)
from bot.images.types import GeneratedImage, ImagesResult, OnPartial, PartialImage, sniff_format

__all__ = [
    "GeneratedImage",
    "ImagesAuthError",
    "ImagesBadRequest",
    "ImagesClient",
    "ImagesError",
    "ImagesQuotaExhausted",
    "ImagesRateLimited",
    "ImagesRefused",
    "ImagesResult",
    "ImagesTimeout",
    "ImagesUnavailable",
    "OnPartial",
    "PartialImage",
    "build_generation_body",
    "sniff_format",
    "tune_http_reads",
]
