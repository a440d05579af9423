"""upload_ready: what an /edit or /variation uploads, as it is whenever the model takes it."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from bot.handlers.sources import MAX_EDIT_UPLOAD, upload_ready
from bot.media import inspect_image
from tests.emulators.openai_images import render_picture


def encoded(width: int, height: int, fmt: str, *, noisy: bool = False) -> bytes:
    if noisy:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), (200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_gpt_models_take_png_jpeg_and_webp_as_they_are(fmt: str) -> None:
    data = render_picture(300, 200, fmt=fmt)
    assert upload_ready(data, square=False) is data


def test_a_png_over_4_mb_is_sent_as_it_is_when_not_square_only() -> None:
    data = encoded(1300, 1300, "PNG", noisy=True)
    assert len(data) > MAX_EDIT_UPLOAD
    assert upload_ready(data, square=False) is data


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_become_png(fmt: str) -> None:
    uploaded = upload_ready(encoded(120, 80, fmt), square=False)
    info = inspect_image(uploaded)
    assert (info.format, info.width, info.height) == ("png", 120, 80)


def test_dalle2_takes_a_square_png_as_it_is() -> None:
    data = render_picture(256, 256)
    assert upload_ready(data, square=True) is data


@pytest.mark.parametrize(
    ("data", "side"),
    [
        (render_picture(300, 200, fmt="jpeg"), 200),
        (render_picture(300, 200, fmt="webp"), 200),
        (render_picture(120, 160), 120),
    ],
)
def test_dalle2_gets_a_square_png(data: bytes, side: int) -> None:
    info = inspect_image(upload_ready(data, square=True))
    assert (info.format, info.width, info.height) == ("png", side, side)


@pytest.mark.parametrize("square", [False, True])
def test_not_a_picture(square: bool) -> None:
    with pytest.raises(ValueError):
        upload_ready(b"not a picture at all", square=square)
