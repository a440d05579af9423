"""Image inspection with Pillow: format, dimensions, transparency, photo-vs-document, PNG uploads.

Image bytes come from outside (the images backend, users' uploads), so nothing here trusts them:
`inspect_image` never raises, only a few formats are parsed at all, and nothing larger than
Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, read but never changed) is decoded.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps

__all__ = [
    "ImageInfo",
    "file_extension",
    "inspect_image",
    "mime_type",
    "photo_refusal_reason",
    "to_png_within",
]

logger = logging.getLogger(__name__)

# Telegram's limits for sendPhoto (Bot API docs, sendPhoto "photo" parameter).
PHOTO_MAX_BYTES: Final = 10 * 1024 * 1024
PHOTO_MAX_SIDES_SUM: Final = 10_000
PHOTO_MAX_ASPECT: Final = 20

_KNOWN_FORMATS: Final = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
_EXTENSIONS: Final = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}
_UPLOAD_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_MAX_SHRINK_STEPS: Final = 24


@dataclass(frozen=True)
class ImageInfo:
    """What `inspect_image` learned about some image bytes."""

    format: str | None  # "png", "jpeg", "webp", "gif" or None if unknown
    width: int | None
    height: int | None
    has_transparency: bool  # some pixel is actually not fully opaque
    size_bytes: int


def _too_many_pixels(image: Image.Image) -> bool:
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and image.width * image.height > limit


def _has_transparent_pixel(image: Image.Image) -> bool:
    """Tell whether any pixel of the (first frame of the) image is not fully opaque."""
    if image.mode in _ALPHA_MODES:
        alpha = image.getchannel("A")
    elif "transparency" in image.info:
        # Palette or colour-key transparency (PNG tRNS, GIF): only the pixels tell if it is used.
        alpha = image.convert("RGBA").getchannel("A")
    else:
        return False
    low, _ = alpha.getextrema()
    return isinstance(low, int) and low < 255


def inspect_image(data: bytes) -> ImageInfo:
    """Describe image bytes; unknown or corrupt data gives format and dimensions None."""
    unknown = ImageInfo(
        format=None, width=None, height=None, has_transparency=False, size_bytes=len(data)
    )
    try:
        with Image.open(io.BytesIO(data), formats=list(_KNOWN_FORMATS)) as image:
            if _too_many_pixels(image):
                return unknown
            image_format = _KNOWN_FORMATS.get(image.format or "")
            if image_format is None:
                return unknown
            if image.mode in _ALPHA_MODES or "transparency" in image.info:
                image.load()  # only the pixels tell whether the alpha is used
                transparent = _has_transparent_pixel(image)
            else:
                # No alpha possible: check the data (checksums, truncation) without decoding
                # every pixel, which would cost ~30 ms for a 1.5 MB picture on the hot path.
                image.verify()
                transparent = False
            return ImageInfo(
                format=image_format,
                width=image.width,
                height=image.height,
                has_transparency=transparent,
                size_bytes=len(data),
            )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return unknown
    # Pillow raises many kinds (OSError, SyntaxError, ValueError…) on bad data.
    except Exception as exc:
        logger.debug("undecodable image (%d bytes): %s", len(data), type(exc).__name__)
        return unknown


def photo_refusal_reason(info: ImageInfo) -> str | None:
    """Return why Telegram would not take the image as a photo, or None if it would."""
    if info.format is None or info.width is None or info.height is None:
        return "unknown_format"
    if info.size_bytes > PHOTO_MAX_BYTES:
        return "too_big"
    if info.width + info.height > PHOTO_MAX_SIDES_SUM:
        return "dimensions"
    if max(info.width, info.height) > PHOTO_MAX_ASPECT * min(info.width, info.height):
        return "aspect"
    if info.has_transparency:
        return "transparency"
    return None


def file_extension(info: ImageInfo) -> str:
    """Return the usual file name extension for the image, "bin" when unknown."""
    return _EXTENSIONS.get(info.format or "", "bin")


def mime_type(info: ImageInfo) -> str:
    """Return the MIME type of the image, application/octet-stream when unknown."""
    return f"image/{info.format}" if info.format in _EXTENSIONS else "application/octet-stream"


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_ready(image: Image.Image) -> Image.Image:
    """Return the image in a mode PNG stores, keeping transparency."""
    if image.mode in {"1", "L", "LA", "RGB", "RGBA"}:
        return image
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def to_png_within(
    data: bytes, *, max_bytes: int, max_side: int | None = None, square: bool = False
) -> bytes:
    """Convert an image to PNG, downscaling step by step until it fits in `max_bytes`.

    With `square`, the picture is first centre-cropped to a square (dall-e-2 takes no other).
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    if max_side is not None and max_side <= 0:
        raise ValueError("max_side must be positive")
    try:
        with Image.open(io.BytesIO(data), formats=list(_UPLOAD_FORMATS)) as opened:
            if _too_many_pixels(opened):
                raise ValueError("image has too many pixels")
            opened.load()
            # A copy that outlives the file; Pillow invalidates `opened` when it is closed.
            image = _png_ready(ImageOps.exif_transpose(opened).copy())
    except ValueError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError("image has too many pixels") from exc
    # Pillow raises many kinds (OSError, SyntaxError…) on bad data.
    except Exception as exc:
        raise ValueError(f"undecodable image: {type(exc).__name__}") from exc

    if square and image.width != image.height:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    encoded = _encode_png(image)
    for _ in range(_MAX_SHRINK_STEPS):
        if len(encoded) <= max_bytes:
            return encoded
        if image.width == 1 and image.height == 1:
            break
        # PNG size grows roughly with the pixel count: aim a little below, shrinking >= 10% a step.
        scale = min(0.9, math.sqrt(max_bytes / len(encoded)) * 0.95)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
        encoded = _encode_png(image)
    if len(encoded) <= max_bytes:
        return encoded
    raise ValueError(f"cannot fit the image into {max_bytes} bytes")
