"""/image end to end: the real Application over the loopback Telegram and images emulators."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.handlers import progress
from tests.conftest import OTHER_USER, USER
from tests.emulators.openai_images import render_picture
from tests.emulators.telegram_api import utf16_len


def _size_of(data: bytes | None) -> tuple[int, int]:
    assert data is not None
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def test_image_replies_with_a_photo(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image yellow alpaca 1024x1024")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.data is not None and photo.data.startswith(b"\x89PNG")
        assert photo.text is not None and "yellow alpaca" in photo.text
        (request,) = bot.oai.api_requests
        assert request.fields["prompt"] == "yellow alpaca"
        assert request.fields["size"] == "1024x1024"
        assert request.fields["model"] == "gpt-image-2"
        assert bot.oai.invalid_requests == []
        assert photo.chat_id == USER


async def _until(condition, timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- captions -------------------------------------------------------------------------------------


async def test_dalle3_caption_shows_the_revised_prompt(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-3") as bot:
        msg = bot.send("/image red fox")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.text is not None
        assert photo.text.startswith("red fox")
        assert "Revised prompt:" in photo.text
        assert "A vivid rendering of: red fox" in photo.text
        (request,) = bot.oai.api_requests
        assert request.fields["response_format"] == "b64_json"
        assert bot.oai.invalid_requests == []


async def test_gpt_image_caption_has_no_revised_prompt(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image red fox")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.text == "red fox"


async def test_long_emoji_caption_is_cut_to_1024_utf16_units(make_bot) -> None:
    prompt = "🦙" * 3000  # 6000 UTF-16 units
    async with make_bot() as bot:
        msg = bot.send(f"/image {prompt}")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        caption = photo.text or ""
        assert caption.endswith("…")
        assert 1000 <= utf16_len(caption) <= 1024
        assert set(caption[:-1]) == {"🦙"}  # no surrogate cut in half
        (request,) = bot.oai.api_requests
        assert request.fields["prompt"] == prompt  # the service gets the whole prompt


async def test_markup_characters_in_the_prompt_are_escaped(make_bot) -> None:
    prompt = '<b>bold</b> & <i>cat</i> "quoted" <tg-spoiler>'
    async with make_bot() as bot:
        msg = bot.send(f"/image {prompt}")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.text == prompt  # shown literally, not parsed as markup
        assert "caption_entities" not in photo
        (request,) = bot.oai.api_requests
        assert request.fields["prompt"] == prompt


# -- options --------------------------------------------------------------------------------------


SIZE_CASES = {
    "1536x1024": "1536x1024",
    "1536×1024": "1536x1024",
    "1024X1536": "1024x1536",
    "--square": "1024x1024",
    "--landscape": "1536x1024",
    "—portrait": "1024x1536",  # em dash, as Telegram's apps write --
    "--size 1536x1024": "1536x1024",
    "16:9": "1280x720",  # gpt-image-2 takes the exact ratio, sides multiples of 16
    "9:16": "720x1280",
    "3:2": "1248x832",
    "--ar 7:5": "1232x880",
    "1:1": "1024x1024",
}


async def test_size_options_are_mapped(make_bot) -> None:
    async with make_bot(MAX_INFLIGHT_PER_USER=str(len(SIZE_CASES))) as bot:
        messages = {
            typed: bot.send(f"/image lighthouse {i}  {typed}") for i, typed in enumerate(SIZE_CASES)
        }
        photos = {
            typed: await bot.replies(msg, kinds=("photo",)) for typed, msg in messages.items()
        }
        by_prompt = {r.fields["prompt"]: r.fields["size"] for r in bot.oai.api_requests}
        for i, (typed, size) in enumerate(SIZE_CASES.items()):
            assert by_prompt[f"lighthouse {i}"] == size, typed
            width, height = (int(side) for side in size.split("x"))
            assert _size_of(photos[typed][0].data) == (width, height)
        assert len(by_prompt) == len(SIZE_CASES)
        assert bot.oai.invalid_requests == []


async def test_dalle3_named_sizes(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-3") as bot:
        sent = []
        for command in (
            "/image tall tower --portrait",
            "/image wide field --landscape",
            "/image wide sea 16:9",
            "/image tall tree 9:16",
            "/image box --ar 5:4",
        ):
            msg = bot.send(command)
            await bot.replies(msg, kinds=("photo",))
            sent.append(bot.oai.api_requests[-1].fields["size"])
        assert sent == ["1024x1792", "1792x1024", "1792x1024", "1024x1792", "1024x1024"]
        assert bot.oai.invalid_requests == []


async def test_aspect_ratio_maps_to_the_nearest_listed_size(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="gpt-image-1") as bot:
        msg = bot.send("/image wide sea 16:9")
        await bot.replies(msg, kinds=("photo",))
        (request,) = bot.oai.api_requests
        assert request.fields["size"] == "1536x1024"
        assert request.fields["prompt"] == "wide sea"
        assert bot.oai.invalid_requests == []


async def test_ratio_past_the_models_limit_is_explained_before_any_call(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image a long banner --ar 4:1")
        text = await bot.reply_text(msg)
        assert "4:1" in text and "ratio up to 3:1" in text
        await bot.settle(0.2)
        assert bot.oai.api_requests == []


async def test_x2_is_one_request_and_an_album(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image two cats x2")
        photos = await bot.replies(msg, count=2, kinds=("photo",))
        assert len(photos) == 2
        assert {p.method for p in photos} == {"sendMediaGroup"}
        assert len({p.get("media_group_id") for p in photos}) == 1
        (album,) = bot.tg.calls_of("sendMediaGroup")
        assert len(album.files) == 2, "each album item uploads its own file"
        assert all(item["media"].startswith("attach://") for item in album.params["media"])
        assert bot.tg.calls_of("sendPhoto") == []
        (request,) = bot.oai.api_requests
        assert request.fields["n"] == 2
        assert request.fields["prompt"] == "two cats"
        assert photos[0].text == "two cats"


async def test_dalle3_x3_fans_out_three_parallel_requests(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-3") as bot:
        bot.oai.delay = 0.3
        msg = bot.send("/image three owls x3")
        photos = await bot.replies(msg, count=3, kinds=("photo",))
        assert len(photos) == 3
        assert {p.method for p in photos} == {"sendMediaGroup"}
        requests = bot.oai.api_requests
        assert len(requests) == 3
        assert all(r.fields["n"] == 1 for r in requests)
        assert bot.oai.peak_in_flight == 3  # in parallel, not one after another
        assert bot.oai.invalid_requests == []


QUALITY_CASES = {
    "gpt-image-2": {
        "--hd": "high",
        "--standard": "medium",
        "--low": "low",
        "—high": "high",
        "--quality medium": "medium",
    },
    "dall-e-3": {"--high": "hd", "–hd": "hd", "--quality=standard": "standard"},
}


@pytest.mark.parametrize("model", list(QUALITY_CASES))
async def test_quality_words_are_mapped(make_bot, model: str) -> None:
    cases = QUALITY_CASES[model]
    async with make_bot(IMAGE_MODEL=model, MAX_INFLIGHT_PER_USER="10") as bot:
        messages = [bot.send(f"/image harbour {i} {typed}") for i, typed in enumerate(cases)]
        for msg in messages:
            await bot.replies(msg, kinds=("photo",))
        sent = {r.fields["prompt"]: r.fields["quality"] for r in bot.oai.api_requests}
        assert sent == {f"harbour {i}": q for i, q in enumerate(cases.values())}
        assert bot.oai.invalid_requests == []


async def test_style_goes_to_dalle3(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-3") as bot:
        msg = bot.send("/image quiet forest --natural")
        await bot.replies(msg, kinds=("photo",))
        (request,) = bot.oai.api_requests
        assert request.fields["style"] == "natural"
        assert request.fields["prompt"] == "quiet forest"


@pytest.mark.parametrize(
    "prompt",
    [
        "a beautiful natural landscape",
        "logo on a square",
        "sunset over the sea, vivid",
        "a high tower in portrait",
        "transparent glass, hd",
    ],
)
async def test_option_words_without_a_marker_stay_in_the_prompt(make_bot, prompt: str) -> None:
    """Issue #8: these used to lose words to options (or be refused for a style)."""
    async with make_bot(IMAGE_MODEL="dall-e-3") as bot:
        msg = bot.send(f"/image {prompt}")
        await bot.replies(msg, kinds=("photo",))
        (request,) = bot.oai.api_requests
        assert request.fields["prompt"] == prompt
        assert "style" not in request.fields and "quality" not in request.fields
        assert request.fields.get("size") in (None, "1024x1024")


@pytest.mark.parametrize(
    ("model", "command", "expected"),
    [
        ("dall-e-3", "/image cat 1000x1000", ("dall-e-3", "1000x1000", "1024x1024", "1792x1024")),
        ("gpt-image-2", "/image cat --vivid", ("gpt-image-2", "style", "vivid")),
        ("dall-e-3", "/image cat --transparent", ("dall-e-3", "background", "transparent")),
        ("dall-e-2", "/image cat —hd", ("dall-e-2", "hd", "It accepts: --standard.")),
        ("gpt-image-2", "/image cat --hdd", ("--hdd", "--high", "--ar W:H", "full stop")),
        ("gpt-image-2", "/image cat --size", ("--size", "--size 1536x1024")),
        ("gpt-image-2", "/image cat --quality ultra", ("--quality ultra", "low, medium, high")),
        ("gpt-image-2", "/image cat 100x100", ("gpt-image-2", "100x100", "1024x1024")),
    ],
)
async def test_unsupported_option_is_explained_before_any_call(
    make_bot, model: str, command: str, expected: tuple[str, ...]
) -> None:
    async with make_bot(IMAGE_MODEL=model) as bot:
        msg = bot.send(command)
        text = await bot.reply_text(msg)
        for part in expected:
            assert part in text
        assert not text.rstrip().endswith(": .")  # never an empty list of accepted values
        await bot.settle(0.2)
        assert bot.oai.api_requests == []


async def test_prompt_too_long_for_dalle2(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-2") as bot:
        msg = bot.send("/image " + "a" * 1001)
        text = await bot.reply_text(msg)
        assert "1001" in text and "1000" in text
        await bot.settle(0.2)
        assert bot.oai.api_requests == []


async def test_multiline_prompt_is_kept_exactly(make_bot) -> None:
    prompt = "a cat\n  wearing a hat\n\non a mat"
    async with make_bot() as bot:
        msg = bot.send(f"/image {prompt}\n--square x2")
        await bot.replies(msg, count=2, kinds=("photo",))
        (request,) = bot.oai.api_requests
        assert request.fields["prompt"] == prompt
        assert request.fields["size"] == "1024x1024"
        assert request.fields["n"] == 2


# -- prompt from the replied-to message -----------------------------------------------------------


async def test_image_as_reply_to_a_text_uses_that_text(make_bot) -> None:
    async with make_bot() as bot:
        original = bot.send("a green parrot on a branch")
        msg = bot.send("/image", reply_to=original)
        (photo,) = await bot.replies(msg, kinds=("photo",))
        (request,) = bot.oai.api_requests
        assert request.fields["prompt"] == "a green parrot on a branch"
        assert photo.text == "a green parrot on a branch"


async def test_image_as_reply_to_a_photo_caption(make_bot) -> None:
    async with make_bot() as bot:
        original = bot.tg.send_message(
            chat_id=USER,
            user_id=USER,
            photo_bytes=render_picture(64, 64),
            caption="a blue whale at night",
        )["message"]
        msg = bot.send("/image", reply_to=original)
        await bot.replies(msg, kinds=("photo",))
        (request,) = bot.oai.api_requests
        assert request.fields["prompt"] == "a blue whale at night"


async def test_image_x2_as_reply_keeps_the_options(make_bot) -> None:
    async with make_bot() as bot:
        original = bot.send("misty mountains")
        msg = bot.send("/image x2 --landscape", reply_to=original)
        await bot.replies(msg, count=2, kinds=("photo",))
        (request,) = bot.oai.api_requests
        assert request.fields["prompt"] == "misty mountains"
        assert request.fields["n"] == 2
        assert request.fields["size"] == "1536x1024"


async def test_image_without_prompt_or_reply_gets_usage(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image")
        text = await bot.reply_text(msg)
        assert "/image" in text
        msg2 = bot.send("/image x2 --square")
        text2 = await bot.reply_text(msg2)
        assert text2 == text
        await bot.settle(0.2)
        assert bot.oai.api_requests == []


# -- answer forms ---------------------------------------------------------------------------------


async def test_url_answer_is_downloaded_and_uploaded_as_bytes(make_bot) -> None:
    async with make_bot() as bot:
        bot.oai.answer_with = "url"
        bot.oai.url_origin = "cdn"  # pictures on another host, as with OpenAI's blob storage
        msg = bot.send("/image sunflower 1024x1536")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        downloads = [r for r in bot.oai.requests if r.path.startswith("/files/")]
        assert len(downloads) == 1
        assert downloads[0].server == "cdn"
        assert "Authorization" not in downloads[0].headers  # the key goes only to the API
        (call,) = bot.tg.calls_of("sendPhoto")
        assert "photo" in call.files  # uploaded, not passed on as a URL
        assert photo.data == render_picture(1024, 1536)


async def test_b64_answer_is_decoded(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image sunflower 1536x1024")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert [r for r in bot.oai.requests if r.path.startswith("/files/")] == []
        assert photo.data == render_picture(1536, 1024)


# -- document fallback ----------------------------------------------------------------------------


async def test_transparent_picture_goes_as_a_document(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image neon cat logo --transparent")
        (doc,) = await bot.replies(msg, kinds=("document", "photo"))
        assert doc.kind == "document"
        assert bot.tg.calls_of("sendPhoto") == []  # decided before sending
        (request,) = bot.oai.api_requests
        assert request.fields["background"] == "transparent"
        assert request.fields["output_format"] == "png"
        assert doc.data is not None
        with Image.open(io.BytesIO(doc.data)) as image:
            assert image.mode == "RGBA"
        assert doc.text == "neon cat logo"


async def test_extreme_aspect_ratio_goes_as_a_document_without_trying_a_photo(make_bot) -> None:
    async with make_bot() as bot:
        bot.oai.image_bytes = render_picture(2100, 100)
        msg = bot.send("/image long banner")
        (doc,) = await bot.replies(msg, kinds=("document", "photo"))
        assert doc.kind == "document"
        assert doc.data == bot.oai.image_bytes
        assert bot.tg.calls_of("sendPhoto") == []


async def test_photo_refused_by_telegram_is_resent_as_a_document(make_bot) -> None:
    async with make_bot() as bot:
        bot.tg.fail_next(
            "sendPhoto", status=400, description="Bad Request: PHOTO_INVALID_DIMENSIONS"
        )
        msg = bot.send("/image small fox")
        (doc,) = await bot.replies(msg, kinds=("document", "photo"))
        assert doc.kind == "document"
        assert doc.text == "small fox"
        assert len(bot.tg.calls_of("sendPhoto")) == 1
        assert doc.data == render_picture(1024, 1024)


async def test_album_refused_by_telegram_is_resent_as_documents(make_bot) -> None:
    async with make_bot() as bot:
        bot.tg.fail_next(
            "sendMediaGroup", status=400, description="Bad Request: PHOTO_INVALID_DIMENSIONS"
        )
        msg = bot.send("/image small fox x2")
        docs = await bot.replies(msg, count=2, kinds=("document", "photo"))
        assert {d.kind for d in docs} == {"document"}
        assert len(bot.tg.calls_of("sendMediaGroup")) == 2


# -- progress -------------------------------------------------------------------------------------


async def test_chat_action_and_status_message_while_waiting(make_bot, monkeypatch) -> None:
    monkeypatch.setattr(progress, "ACTION_EVERY", 0.4)  # refreshed every 4 s in production
    monkeypatch.setattr(progress, "FIRST_ACTION_AFTER", 0.0)  # 0.5 s in production
    async with make_bot(STATUS_MESSAGE_DELAY_SECONDS="0.5") as bot:
        bot.oai.delay = 1.4
        msg = bot.send("/image slow snail")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        actions = bot.tg.calls_of("sendChatAction")
        assert len(actions) >= 2
        assert {c.params["action"] for c in actions} == {"upload_photo"}
        assert all(c.params["chat_id"] == USER for c in actions)
        statuses = [m for m in bot.tg.sent_messages(USER) if m.kind == "text"]
        assert len(statuses) == 1
        status = statuses[0]
        assert "Drawing" in (status.text or "")
        assert status["reply_to_message"]["message_id"] == msg["message_id"]
        sent_after = status.received_at - bot.tg.calls_of("sendChatAction")[0].at
        assert sent_after >= 0.4
        assert status.received_at < photo.received_at
        await bot.settle(0.3)
        assert status.deleted  # removed once the result arrived


async def test_no_status_message_for_a_fast_answer(make_bot) -> None:
    async with make_bot(STATUS_MESSAGE_DELAY_SECONDS="2") as bot:
        msg = bot.send("/image quick hare")
        await bot.replies(msg, kinds=("photo",))
        await bot.settle(0.2)
        assert [m for m in bot.tg.sent_messages(USER) if m.kind == "text"] == []
        assert bot.tg.calls_of("deleteMessage") == []


async def test_queued_request_shows_its_position_and_runs_in_order(make_bot) -> None:
    async with make_bot(MAX_CONCURRENT_GENERATIONS="1", STATUS_MESSAGE_DELAY_SECONDS="5") as bot:
        bot.oai.delay = 0.8
        first = bot.send("/image first picture")
        await asyncio.to_thread(bot.oai.wait_for_requests, 1, 5.0)
        second = bot.send("/image second picture", user_id=OTHER_USER)
        (queued,) = await bot.replies(second, kinds=("text",), timeout=3)
        assert "queued" in (queued.text or "")
        assert "position 1" in (queued.text or "")
        (photo1,) = await bot.replies(first, kinds=("photo",))
        (photo2,) = await bot.replies(second, kinds=("photo",))
        assert photo1.received_at < photo2.received_at
        assert bot.oai.peak_in_flight == 1
        prompts = [r.fields["prompt"] for r in bot.oai.api_requests]
        assert prompts == ["first picture", "second picture"]
        await bot.settle(0.3)
        assert queued.deleted


async def test_second_request_of_a_busy_user_is_refused(make_bot) -> None:
    async with make_bot(MAX_INFLIGHT_PER_USER="1") as bot:
        bot.oai.delay = 0.8
        first = bot.send("/image first")
        await asyncio.to_thread(bot.oai.wait_for_requests, 1, 5.0)
        second = bot.send("/image second")
        text = await bot.reply_text(second, timeout=3)
        assert "wait" in text.lower()
        await bot.replies(first, kinds=("photo",))
        assert [r.fields["prompt"] for r in bot.oai.api_requests] == ["first"]
        await _until(lambda: bot.services.limiter.in_flight(USER) == 0)
        third = bot.send("/image third")  # free again once the first is done
        await bot.replies(third, kinds=("photo",))


# -- Telegram flood control -----------------------------------------------------------------------


async def test_telegram_flood_control_delays_the_photo(make_bot) -> None:
    async with make_bot() as bot:
        bot.tg.fail_next("sendPhoto", status=429, retry_after=1)
        msg = bot.send("/image patient tortoise")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        calls = bot.tg.calls_of("sendPhoto")
        assert [c.status for c in calls] == [429, 200]
        assert calls[1].at - calls[0].at >= 0.8  # retry_after=1; `at` is read after the upload
        assert photo.text == "patient tortoise"


# -- /start and /help -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["/start", "/help"])
async def test_help_mentions_command_options_model_and_sizes(make_bot, command: str) -> None:
    async with make_bot() as bot:
        msg = bot.send(command)
        text = await bot.reply_text(msg)
        for part in ("/image", "x2", "--square", "--transparent", "gpt-image-2", "1536x1024"):
            assert part in text
        sizes = next(line for line in text.splitlines() if line.startswith("Sizes:"))
        assert "--landscape" in sizes and "16:9" in sizes, sizes  # as they are typed


async def test_help_follows_the_configured_model(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-3") as bot:
        msg = bot.send("/help")
        text = await bot.reply_text(msg)
        sizes = next(line for line in text.splitlines() if line.startswith("Sizes:"))
        assert "dall-e-3" in text
        assert "1792x1024" in sizes
        assert "1536x1024" not in sizes


async def test_an_instant_answer_sends_no_chat_action(make_bot) -> None:
    async with make_bot() as bot:
        msg = bot.send("/image quick hare")
        await bot.replies(msg, kinds=("photo",))
        await bot.settle(0.7)
        assert bot.tg.calls_of("sendChatAction") == []


async def test_reply_to_own_result_reuses_its_prompt_not_the_revised_one(make_bot) -> None:
    async with make_bot(IMAGE_MODEL="dall-e-3") as bot:
        msg = bot.send("/image a red fox\nin the snow")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert "Revised prompt:" in (photo.text or "")
        again = bot.send("/image", reply_to=photo)
        await bot.replies(again, kinds=("photo",))
        first, second = bot.oai.api_requests
        assert second.fields["prompt"] == first.fields["prompt"] == "a red fox\nin the snow"
