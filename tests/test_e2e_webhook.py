"""Webhook mode: with WEBHOOK_URL set the bot registers a webhook and serves updates over HTTP."""

from __future__ import annotations

import socket

import aiohttp

from tests.conftest import USER


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_webhook_mode_registers_and_serves_updates(make_bot) -> None:
    port = _free_port()
    async with make_bot(
        WEBHOOK_URL="https://bot.example.org/telegram/hook",
        WEBHOOK_LISTEN="127.0.0.1",
        WEBHOOK_PORT=str(port),
        WEBHOOK_SECRET_TOKEN="s3cret-Token",
    ) as bot:
        hook = bot.tg.webhook
        assert hook["url"] == "https://bot.example.org/telegram/hook"
        assert hook.get("secret_token") == "s3cret-Token"
        assert not bot.tg.calls_of("getUpdates"), "webhook mode must not poll"

        # Telegram would reach the public URL through a TLS proxy; the emulator posts to the
        # bot's local listener instead.
        local = f"http://127.0.0.1:{port}/telegram/hook"
        with bot.tg._cond:
            bot.tg._state.webhook["url"] = local

        msg = bot.send("/image webhook alpaca")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.chat_id == USER

        # An update without the secret is refused and never handled.
        async with aiohttp.ClientSession() as session:
            forged = {"update_id": 999_999, "message": dict(msg, message_id=4242)}
            async with session.post(local, json=forged) as response:
                assert response.status == 403
        await bot.settle(0.3)
        assert len(bot.oai.api_requests) == 1
