"""Tests for bot.media: inspecting generated images and preparing PNG uploads."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.media import (
    ImageInfo,
    file_extension,
    inspect_image,
    mime_type,
    photo_refusal_reason,
    to_png_within,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 1) -> Image.Image:
    return Image.frombytes(
        "RGB", (width, height), random.Random(seed).randbytes(width * height * 3)
    )


def rgba_with_one_transparent_pixel(alpha: int = 0) -> Image.Image:
    image = Image.new("RGBA", (64, 64), (10, 200, 30, 255))
    image.putpixel((63, 63), (10, 200, 30, alpha))
    return image


def palette_image(*, use_transparent_index: bool) -> Image.Image:
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    if use_transparent_index:
        image.putpixel((5, 5), 0)
    image.info["transparency"] = 0
    return image


def png_header_only(width: int, height: int) -> bytes:
    """Return a PNG whose header claims huge dimensions, with almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


VALID_PNG = encode(rgba_with_one_transparent_pixel())


# inspect_image ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt", "size", "transparent"),
    [
        (encode(Image.new("RGB", (64, 48), "red")), "png", (64, 48), False),
        (encode(Image.new("L", (10, 20), 128)), "png", (10, 20), False),
        (encode(Image.new("RGBA", (64, 64), (1, 2, 3, 255))), "png", (64, 64), False),
        (encode(rgba_with_one_transparent_pixel()), "png", (64, 64), True),
        (encode(rgba_with_one_transparent_pixel(alpha=254)), "png", (64, 64), True),
        (encode(Image.new("LA", (8, 8), (50, 255))), "png", (8, 8), False),
        (encode(Image.new("LA", (8, 8), (50, 0))), "png", (8, 8), True),
        (encode(palette_image(use_transparent_index=True)), "png", (32, 32), True),
        (encode(palette_image(use_transparent_index=False)), "png", (32, 32), False),
        (encode(Image.new("RGB", (8, 8), "red"), transparency=(255, 0, 0)), "png", (8, 8), True),
        (encode(Image.new("RGB", (8, 8), "red"), transparency=(0, 0, 255)), "png", (8, 8), False),
        (encode(Image.new("RGB", (30, 20), "blue"), "JPEG"), "jpeg", (30, 20), False),
        (encode(Image.new("RGB", (30, 20), "blue"), "WEBP"), "webp", (30, 20), False),
        (encode(rgba_with_one_transparent_pixel(), "WEBP", lossless=True), "webp", (64, 64), True),
        (
            encode(Image.new("RGBA", (16, 16), (9, 9, 9, 255)), "WEBP", lossless=True),
            "webp",
            (16, 16),
            False,
        ),
        (encode(palette_image(use_transparent_index=False), "GIF"), "gif", (32, 32), False),
        (encode(palette_image(use_transparent_index=True), "GIF"), "gif", (32, 32), True),
    ],
)
def test_inspect_image(data: bytes, fmt: str, size: tuple[int, int], transparent: bool) -> None:
    info = inspect_image(data)
    assert info == ImageInfo(
        format=fmt,
        width=size[0],
        height=size[1],
        has_transparency=transparent,
        size_bytes=len(data),
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b"\x89PNG\r\n\x1a\n",
        encode(noise(64, 64))[:200],  # truncated PNG
        encode(noise(64, 64), "JPEG")[:300],  # truncated JPEG
        encode(Image.new("RGB", (4, 4)), "BMP"),  # a real image, but not a format we send
        encode(Image.new("RGB", (4, 4)), "TIFF"),
        b"GIF89a" + b"\xff" * 50,
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    ],
)
def test_inspect_unknown_or_corrupt(data: bytes) -> None:
    info = inspect_image(data)
    assert info == ImageInfo(
        format=None, width=None, height=None, has_transparency=False, size_bytes=len(data)
    )
    assert photo_refusal_reason(info) == "unknown_format"


def test_decompression_bomb_is_unknown_and_global_limit_untouched() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    for side in (20_000, 12_000):  # over twice the limit (error) and just over it (warning)
        info = inspect_image(png_header_only(side, side))
        assert info.format is None
        assert info.width is None
    assert limit == Image.MAX_IMAGE_PIXELS


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_over_the_pixel_limit_is_not_decoded_when_warnings_are_ignored() -> None:
    info = inspect_image(png_header_only(12_000, 12_000))
    assert info.format is None


def test_trailing_bytes_make_it_too_big() -> None:
    data = encode(Image.new("RGB", (100, 100), "red")) + b"\0" * (10 * 1024 * 1024)
    info = inspect_image(data)
    assert (info.format, info.width, info.size_bytes) == ("png", 100, len(data))
    assert photo_refusal_reason(info) == "too_big"


@pytest.mark.parametrize(
    ("mode", "size", "reason"),
    [
        ("RGB", (1024, 1024), None),
        ("RGB", (2000, 100), None),  # ratio exactly 20
        ("RGB", (100, 2000), None),
        ("RGB", (2100, 100), "aspect"),
        ("RGB", (100, 2100), "aspect"),
        ("L", (9000, 1000), None),  # sides add up to exactly 10000
        ("L", (9000, 1100), "dimensions"),
        ("L", (1100, 9000), "dimensions"),
        ("RGBA", (64, 64), None),  # an alpha channel, but every pixel opaque
    ],
)
def test_photo_refusal_of_real_images(mode: str, size: tuple[int, int], reason: str | None) -> None:
    opaque = (255,) * len(mode)
    assert photo_refusal_reason(inspect_image(encode(Image.new(mode, size, opaque)))) == reason


def test_photo_refusal_of_a_transparent_image() -> None:
    assert photo_refusal_reason(inspect_image(VALID_PNG)) == "transparency"


def info(
    *,
    fmt: str | None = "png",
    width: int | None = 1024,
    height: int | None = 1024,
    transparent: bool = False,
    size: int = 1000,
) -> ImageInfo:
    return ImageInfo(
        format=fmt, width=width, height=height, has_transparency=transparent, size_bytes=size
    )


@pytest.mark.parametrize(
    ("image_info", "reason"),
    [
        (info(), None),
        (info(fmt="jpeg"), None),
        (info(fmt=None), "unknown_format"),
        (info(width=None), "unknown_format"),
        (info(height=None), "unknown_format"),
        (info(size=10 * 1024 * 1024), None),
        (info(size=10 * 1024 * 1024 + 1), "too_big"),
        (info(width=5000, height=5000), None),
        (info(width=5000, height=5001), "dimensions"),
        (info(width=20, height=1), None),
        (info(width=21, height=1), "aspect"),
        (info(width=1, height=21), "aspect"),
        (info(transparent=True), "transparency"),
        # The first applicable reason is reported.
        (info(size=11 * 1024 * 1024, width=20000, height=1, transparent=True), "too_big"),
        (info(width=10000, height=1, transparent=True), "dimensions"),
        (info(width=2100, height=100, transparent=True), "aspect"),
    ],
)
def test_photo_refusal_reason(image_info: ImageInfo, reason: str | None) -> None:
    assert photo_refusal_reason(image_info) == reason


@pytest.mark.parametrize(
    ("fmt", "extension", "mime"),
    [
        ("png", "png", "image/png"),
        ("jpeg", "jpg", "image/jpeg"),
        ("webp", "webp", "image/webp"),
        ("gif", "gif", "image/gif"),
        (None, "bin", "application/octet-stream"),
    ],
)
def test_extension_and_mime(fmt: str | None, extension: str, mime: str) -> None:
    assert file_extension(info(fmt=fmt)) == extension
    assert mime_type(info(fmt=fmt)) == mime


@PROPERTY
@given(st.binary(max_size=2000))
def test_inspect_never_raises_on_random_bytes(data: bytes) -> None:
    result = inspect_image(data)
    assert result.size_bytes == len(data)


@PROPERTY
@given(st.lists(st.tuples(st.integers(0, len(VALID_PNG) - 1), st.integers(0, 255)), max_size=8))
def test_inspect_never_raises_on_mangled_png(changes: list[tuple[int, int]]) -> None:
    data = bytearray(VALID_PNG)
    for position, value in changes:
        data[position] = value
    result = inspect_image(bytes(data))
    assert (result.format is None) == (result.width is None)


# to_png_within ------------------------------------------------------------------------------


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def test_jpeg_becomes_png_of_the_same_size() -> None:
    png = to_png_within(encode(noise(40, 30), "JPEG"), max_bytes=1_000_000)
    image = decode(png)
    assert image.size == (40, 30)
    assert image.mode == "RGB"


def test_transparency_survives_conversion() -> None:
    for source in (
        encode(rgba_with_one_transparent_pixel(), "WEBP", lossless=True),
        encode(palette_image(use_transparent_index=True)),
        encode(palette_image(use_transparent_index=True), "GIF"),
    ):
        result = inspect_image(to_png_within(source, max_bytes=1_000_000))
        assert result.format == "png"
        assert result.has_transparency


def test_png_that_fits_keeps_its_size() -> None:
    source = encode(Image.new("RGB", (300, 200), "green"))
    assert decode(to_png_within(source, max_bytes=len(source) + 1000)).size == (300, 200)


def test_large_image_is_downscaled_until_it_fits() -> None:
    source = encode(noise(512, 512))
    assert len(source) > 500_000
    png = to_png_within(source, max_bytes=100_000)
    assert len(png) <= 100_000
    image = decode(png)
    assert image.width < 512
    assert abs(image.width - image.height) <= 1  # aspect kept


def test_max_side_limits_the_longer_side() -> None:
    png = to_png_within(encode(Image.new("RGB", (300, 150), "red")), max_bytes=10**6, max_side=64)
    assert decode(png).size == (64, 32)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    source = encode(Image.new("RGB", (40, 20), "red"), "JPEG", exif=exif)
    assert decode(to_png_within(source, max_bytes=10**6)).size == (20, 40)


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", encode(noise(64, 64))[:200], png_header_only(20_000, 20_000)],
)
def test_undecodable_input_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        to_png_within(data, max_bytes=10**6)


def test_impossible_budget_raises_value_error() -> None:
    with pytest.raises(ValueError, match="cannot fit"):
        to_png_within(encode(noise(64, 64)), max_bytes=10)


@pytest.mark.parametrize(("max_bytes", "max_side"), [(0, None), (-1, None), (1000, 0)])
def test_bad_limits_raise_value_error(max_bytes: int, max_side: int | None) -> None:
    with pytest.raises(ValueError):
        to_png_within(encode(Image.new("RGB", (4, 4))), max_bytes=max_bytes, max_side=max_side)
