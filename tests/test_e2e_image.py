"""/image end to end: the real Application over the loopback Telegram and images emulators."""

from __future__ import annotations

from tests.conftest import USER


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
