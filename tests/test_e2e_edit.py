"""/edit and /variation end to end: download through the Bot API, multipart upload, the result."""

from __future__ import annotations

import io
import os

from PIL import Image

from tests.conftest import USER

DALLE2_MAX_UPLOAD = 4 * 1024 * 1024  # dall-e-2 takes a square PNG of at most 4 MB
MAX_UPLOAD = 50 * 1024 * 1024  # GPT image models take png, jpeg or webp of at most 50 MB


def png(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """Return a small solid PNG with a distinctive corner pixel."""
    image = Image.new("RGB", (width, height), color)
    image.putpixel((0, 0), (1, 2, 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_png(side: int) -> bytes:
    """Return an incompressible PNG of random pixels (about 3 bytes a pixel)."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def pixels(data: bytes) -> tuple[tuple[int, int], bytes]:
    """Return the size and RGB pixels of an image."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        return rgb.size, rgb.tobytes()


def buttons(message) -> list[dict]:
    """Return the inline buttons of a bot message."""
    markup = message.get("reply_markup") or {}
    return [button for row in markup.get("inline_keyboard", []) for button in row]


def only_edit_request(bot, *, content_type: str = "image/png", limit: int = MAX_UPLOAD):
    """Return the one API request, checking it is a valid multipart edit."""
    (request,) = bot.oai.api_requests
    assert request.endpoint == "edits"
    assert request.form is not None and request.json is None
    assert bot.oai.invalid_requests == []
    (image,) = request.files["image"]
    assert image.content_type == content_type
    if content_type == "image/png":
        assert image.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(image.data) <= limit
    return request, image.data


def downloaded_file_ids(bot) -> list[str]:
    """Return the file ids the bot asked for through getFile."""
    return [str(call.params.get("file_id")) for call in bot.tg.calls_of("getFile")]


async def test_edit_replying_to_a_users_photo(make_bot) -> None:
    source = png(96, 64)
    async with make_bot() as bot:
        photo = bot.send("", photo_bytes=source)
        msg = bot.send("/edit make it night 1024x1024 --high", reply_to=photo)
        (result,) = await bot.replies(msg, kinds=("photo",))
        request, uploaded = only_edit_request(bot)
        assert request.fields["prompt"] == "make it night"
        assert request.fields["size"] == "1024x1024"
        assert request.fields["quality"] == "high"
        assert request.fields["model"] == "gpt-image-2"
        assert uploaded == source  # already a PNG within the limit: sent as it is
        assert downloaded_file_ids(bot) == [photo["photo"][-1]["file_id"]]
        assert result.text is not None and "make it night" in result.text
        assert len(buttons(result)) == 3


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 200)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


async def test_jpeg_photo_is_sent_as_it_is(make_bot) -> None:
    # GPT image models take jpeg: no re-encoding, named and typed for what it is.
    source = jpeg(160, 120)
    async with make_bot() as bot:
        photo = bot.send("", photo_bytes=source)
        msg = bot.send("/edit make it night", reply_to=photo)
        await bot.replies(msg, kinds=("photo",))
        request, uploaded = only_edit_request(bot, content_type="image/jpeg")
        assert uploaded == source
        assert request.files["image"][0].filename == "image.jpg"


async def test_jpeg_photo_becomes_a_square_png_for_dalle2(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-2") as bot:
        photo = bot.send("", photo_bytes=jpeg(160, 120))
        msg = bot.send("/edit make it night", reply_to=photo)
        await bot.replies(msg, kinds=("photo",))
        _, uploaded = only_edit_request(bot, limit=DALLE2_MAX_UPLOAD)
        assert pixels(uploaded)[0] == (120, 120)


async def test_photo_with_edit_caption(make_bot) -> None:
    source = png(80, 80, (10, 200, 10))
    async with make_bot() as bot:
        msg = bot.send("", photo_bytes=source, caption="/edit make it night")
        (result,) = await bot.replies(msg, kinds=("photo",))
        request, uploaded = only_edit_request(bot)
        assert request.fields["prompt"] == "make it night"
        assert pixels(uploaded) == pixels(source)
        assert "make it night" in (result.text or "")
        assert len(buttons(result)) == 3


async def test_caption_for_another_bot_is_ignored(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("", photo_bytes=png(), caption="/edit@OtherBot make it night")
        await bot.settle(0.6)
        assert bot.oai.requests == []
        assert bot.tg.calls_of("getFile") == []
        assert bot.tg.sent_messages(USER) == []
        assert msg["caption"].startswith("/edit@OtherBot")


async def test_edit_replying_to_the_bots_own_result(make_bot) -> None:
    async with make_bot() as bot:
        first = bot.send("/image yellow alpaca")
        (own,) = await bot.replies(first, kinds=("photo",))
        msg = bot.send("/edit add a red hat", reply_to=own)
        (result,) = await bot.replies(msg, kinds=("photo",))
        requests = bot.oai.api_requests
        assert [r.endpoint for r in requests] == ["generations", "edits"]
        assert bot.oai.invalid_requests == []
        assert downloaded_file_ids(bot) == [own["photo"][-1]["file_id"]]
        (image,) = requests[1].files["image"]
        assert own.data is not None and pixels(image.data) == pixels(own.data)
        assert requests[1].fields["prompt"] == "add a red hat"
        assert "add a red hat" in (result.text or "")


async def test_edit_replying_to_one_picture_of_an_album(make_bot) -> None:
    async with make_bot() as bot:
        first = bot.send("/image yellow alpaca x2")
        album = await bot.replies(first, count=2, kinds=("photo",))
        assert album[0]["media_group_id"] == album[1]["media_group_id"]
        second = album[1]
        msg = bot.send("/edit make it blue", reply_to=second)
        (result,) = await bot.replies(msg, kinds=("photo",))
        assert downloaded_file_ids(bot) == [second["photo"][-1]["file_id"]]
        edit = bot.oai.api_requests[-1]
        assert edit.endpoint == "edits"
        (image,) = edit.files["image"]
        assert second.data is not None and pixels(image.data) == pixels(second.data)
        assert bot.oai.invalid_requests == []
        assert "make it blue" in (result.text or "")


async def test_edit_without_a_photo(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/edit make it night")
        text = await bot.reply_text(msg)
        assert "no picture to edit" in text.lower()
        await bot.settle(0.2)
        assert bot.oai.requests == []
        assert bot.tg.calls_of("getFile") == []


async def test_edit_replying_to_text_is_nothing_to_edit(make_bot) -> None:
    async with make_bot() as bot:
        earlier = bot.send("just some words")
        msg = bot.send("/edit make it night", reply_to=earlier)
        text = await bot.reply_text(msg)
        assert "no picture to edit" in text.lower()
        assert bot.oai.requests == []


async def test_edit_without_a_prompt(make_bot) -> None:
    async with make_bot() as bot:
        photo = bot.send("", photo_bytes=png())
        msg = bot.send("/edit", reply_to=photo)
        text = await bot.reply_text(msg)
        assert "/edit <what to change>" in text
        await bot.settle(0.2)
        assert bot.oai.requests == []
        assert bot.tg.calls_of("getFile") == []


async def test_picture_over_4_mb_is_sent_as_it_is_to_gpt_image(make_bot) -> None:
    source = noisy_png(1200)
    assert len(source) > DALLE2_MAX_UPLOAD
    async with make_bot() as bot:
        photo = bot.send("", photo_bytes=source)
        msg = bot.send("/edit make it night", reply_to=photo)
        (result,) = await bot.replies(msg, kinds=("photo",))
        _, uploaded = only_edit_request(bot)
        assert uploaded == source
        assert result.data is not None


async def test_oversized_picture_is_shrunk_under_the_limit_for_dalle2(make_bot) -> None:
    source = noisy_png(1200)
    assert len(source) > DALLE2_MAX_UPLOAD
    async with make_bot(IMAGE_MODEL="dall-e-2") as bot:
        photo = bot.send("", photo_bytes=source)
        msg = bot.send("/edit make it night", reply_to=photo)
        (result,) = await bot.replies(msg, kinds=("photo",))
        _, uploaded = only_edit_request(bot, limit=DALLE2_MAX_UPLOAD)
        (width, height), _ = pixels(uploaded)
        assert width == height and 0 < width < 1200
        assert result.data is not None


async def test_edit_of_an_image_sent_as_a_file(make_bot) -> None:
    source = png(120, 90, (20, 20, 220))
    async with make_bot() as bot:
        document = bot.send("", document_bytes=source, document_name="drawing.png")
        msg = bot.send("/edit add stars", reply_to=document)
        (result,) = await bot.replies(msg, kinds=("photo",))
        _, uploaded = only_edit_request(bot)
        assert pixels(uploaded) == pixels(source)
        assert downloaded_file_ids(bot) == [document["document"]["file_id"]]
        assert "add stars" in (result.text or "")


async def test_image_file_with_edit_caption(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send(
            "", document_bytes=png(), document_name="drawing.png", caption="/edit add stars"
        )
        await bot.replies(msg, kinds=("photo",), timeout=1.0)
        only_edit_request(bot)


async def test_model_that_cannot_edit(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-3") as bot:
        photo = bot.send("", photo_bytes=png())
        msg = bot.send("/edit make it night", reply_to=photo)
        text = await bot.reply_text(msg)
        assert "dall-e-3" in text and "cannot edit" in text
        await bot.settle(0.2)
        assert bot.oai.requests == []
        assert bot.tg.calls_of("getFile") == []


async def test_variation_with_dalle2(make_bot) -> None:
    source = png(64, 64, (250, 200, 0))
    async with make_bot(IMAGE_MODEL="dall-e-2") as bot:
        photo = bot.send("", photo_bytes=source)
        msg = bot.send("/variation x2", reply_to=photo)
        album = await bot.replies(msg, count=2, kinds=("photo",))
        (request,) = bot.oai.api_requests
        assert request.endpoint == "variations"
        assert bot.oai.invalid_requests == []
        assert request.fields["n"] == "2"
        assert request.fields["model"] == "dall-e-2"
        (image,) = request.files["image"]
        assert pixels(image.data) == pixels(source)
        assert len(album) == 2


async def test_variation_uploads_a_square_png_for_dalle2(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-2") as bot:
        photo = bot.send("", photo_bytes=png(120, 60))
        msg = bot.send("/variation", reply_to=photo)
        await bot.replies(msg, kinds=("photo",))
        (request,) = bot.oai.api_requests
        (image,) = request.files["image"]
        (width, height), _ = pixels(image.data)
        assert width == height, "dall-e-2 variations need a square PNG"


async def test_variation_with_a_model_that_cannot(make_bot) -> None:
    async with make_bot() as bot:
        photo = bot.send("", photo_bytes=png())
        msg = bot.send("/variation x2", reply_to=photo)
        text = await bot.reply_text(msg)
        assert "/edit" in text and "gpt-image-2" in text
        await bot.settle(0.2)
        assert bot.oai.requests == []
        assert bot.tg.calls_of("getFile") == []


async def test_edit_with_a_count_comes_back_as_an_album(make_bot) -> None:
    async with make_bot() as bot:
        photo = bot.send("", photo_bytes=png())
        msg = bot.send("/edit make it night x2", reply_to=photo)
        album = await bot.replies(msg, count=2, kinds=("photo",))
        request, _ = only_edit_request(bot)
        assert request.fields["n"] == "2"
        assert album[0]["media_group_id"] == album[1]["media_group_id"]
        assert "make it night" in (album[0].text or "")


async def test_edit_counts_against_the_daily_limit(make_bot) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="1") as bot:
        first = bot.send("/image yellow alpaca")
        (own,) = await bot.replies(first, kinds=("photo",))
        msg = bot.send("/edit add a hat", reply_to=own)
        text = await bot.reply_text(msg)
        assert "limit" in text.lower()
        await bot.settle(0.2)
        assert [r.endpoint for r in bot.oai.api_requests] == ["generations"]
        assert bot.tg.calls_of("getFile") == [], "nothing is downloaded for a refused request"


async def test_picture_too_large_to_download(make_bot) -> None:
    async with make_bot() as bot:
        big = bot.send(
            "", document_bytes=b"\x89PNG" + bytes(21 * 1024 * 1024), document_name="a.png"
        )
        msg = bot.send("/edit make it night", reply_to=big)
        text = await bot.reply_text(msg)
        assert "too large" in text and "20 MB" in text
        assert bot.tg.calls_of("getFile") == []
        assert bot.oai.requests == []


async def test_file_that_is_not_a_picture(make_bot) -> None:
    async with make_bot() as bot:
        junk = bot.send("", document_bytes=b"not really a png", document_name="fake.png")
        msg = bot.send("/edit make it night", reply_to=junk)
        text = await bot.reply_text(msg)
        assert "not a picture" in text
        assert len(bot.tg.calls_of("getFile")) == 1
        assert bot.oai.requests == []


async def test_again_under_an_edit_result_edits_again(make_bot) -> None:
    async with make_bot() as bot:
        photo = bot.send("", photo_bytes=png())
        msg = bot.send("/edit make it night", reply_to=photo)
        (result,) = await bot.replies(msg, kinds=("photo",))
        markup = result["reply_markup"]["inline_keyboard"][0]
        (again,) = [b["callback_data"] for b in markup if b["text"].startswith("🔁")]
        bot.tg.press_button(chat_id=USER, user_id=USER, message=result, data=again)
        await bot.replies(result.message, kinds=("photo",))
        assert [r.endpoint for r in bot.oai.api_requests] == ["edits", "edits"]


async def test_caption_addressed_to_this_bot_works(make_bot) -> None:
    async with make_bot() as bot:
        username = bot.app.bot.username
        msg = bot.send("", photo_bytes=png(), caption=f"/edit@{username} make it night")
        await bot.replies(msg, kinds=("photo",))
        request, _ = only_edit_request(bot)
        assert request.fields["prompt"] == "make it night"


async def test_variation_without_a_picture(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-2") as bot:
        msg = bot.send("/variation")
        text = await bot.reply_text(msg)
        assert "/variation" in text
        await bot.settle(0.2)
        assert bot.oai.requests == []
