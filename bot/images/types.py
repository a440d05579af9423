"""What an images call returns: the pictures as bytes and the answer's metadata."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "GeneratedImage",
    "ImagesResult",
    "OnPartial",
    "Pacer",
    "PartialImage",
    "sniff_format",
]


class Pacer(Protocol):
    """Told how the service copes, so callers can pace themselves (the generation limiter)."""

    def throttled(self, retry_after: float | None) -> None:
        """The service answered 429 (with its Retry-After in seconds, if any)."""

    def succeeded(self) -> None:
        """A call succeeded."""


@dataclass(frozen=True)
class GeneratedImage:
    """One picture as bytes, with what the service said about it."""

    data: bytes
    revised_prompt: str | None = None
    output_format: str | None = None
    source_url: str | None = None

    def __repr__(self) -> str:
        return (
            f"GeneratedImage(<{len(self.data)} bytes>, output_format={self.output_format!r}, "
            f"revised_prompt={self.revised_prompt!r}, source_url={self.source_url!r})"
        )


@dataclass(frozen=True)
class ImagesResult:
    """The pictures of one call (or of one fanned-out batch) and the response metadata."""

    model: str
    images: tuple[GeneratedImage, ...]
    usage: Mapping[str, object] | None = None
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class PartialImage:
    """One streamed preview of a picture that is still being drawn.

    `image_index` is which picture of the call it previews (0: only the first picture of a
    call streams); `partial_index` the host's 0-based number of this preview (they arrive in
    order, up to `previews - 1`); `elapsed` seconds since the call started.
    """

    image_index: int
    partial_index: int
    previews: int
    data: bytes
    output_format: str | None
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    elapsed: float = 0.0

    def __repr__(self) -> str:
        return (
            f"PartialImage(image_index={self.image_index}, partial_index={self.partial_index}, "
            f"<{len(self.data)} bytes>, output_format={self.output_format!r})"
        )


OnPartial = Callable[[PartialImage], Awaitable[None]]
"""Called with each preview as it arrives (one at a time, in order; see `ImagesClient`)."""


def sniff_format(data: bytes) -> str | None:
    """Name the image format from its magic bytes: png, jpeg, webp, gif, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    return None
