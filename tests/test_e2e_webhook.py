"""Webhook mode: with WEBHOOK_URL set the bot registers a webhook and serves updates over HTTP."""

from __future__ import annotations

import string

import aiohttp

from bot.app import derived_webhook_secret
from tests.conftest import TOKEN, USER, free_port, run_with_port_taken


async def test_webhook_mode_registers_and_serves_updates(make_bot) -> None:
    port = free_port()
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


def test_webhook_port_in_use_stops_with_one_clear_message(tmp_path) -> None:
    port, done = run_with_port_taken(
        tmp_path,
        WEBHOOK_URL="https://bot.example.org/hook",
        WEBHOOK_LISTEN="127.0.0.1",
        WEBHOOK_PORT="{port}",
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"Cannot start the webhook server on 127.0.0.1:{port}" in done.stderr
    assert TOKEN not in done.stderr


async def test_webhook_without_a_configured_secret_makes_one_up(make_bot) -> None:
    port = free_port()
    async with make_bot(
        WEBHOOK_URL="https://bot.example.org/hook",
        WEBHOOK_LISTEN="127.0.0.1",
        WEBHOOK_PORT=str(port),
    ) as bot:
        secret = str(bot.tg.webhook.get("secret_token") or "")
        assert len(secret) >= 32
        assert secret not in repr(bot.settings)
        # Derived from the token, so every replica of the bot registers and checks the same.
        assert secret == derived_webhook_secret(TOKEN)
        assert set(secret) <= set(string.ascii_letters + string.digits + "_-")  # Telegram's rule
        local = f"http://127.0.0.1:{port}/hook"
        with bot.tg._cond:
            bot.tg._state.webhook["url"] = local

        # Telegram's own calls carry the secret and are served.
        msg = bot.send("/image signed alpaca")
        await bot.replies(msg, kinds=("photo",))

        forged = {"update_id": 999_999, "message": dict(msg, message_id=4242, text="/image x")}
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "guessed-" + "x" * 30}):
                async with session.post(local, json=forged, headers=headers) as response:
                    assert response.status == 403
        await bot.settle(0.3)
        assert len(bot.oai.api_requests) == 1


async def test_the_made_up_secret_is_never_logged(make_bot, caplog) -> None:
    import logging

    port = free_port()
    with caplog.at_level(logging.DEBUG):
        async with make_bot(
            WEBHOOK_URL="https://bot.example.org/hook",
            WEBHOOK_LISTEN="127.0.0.1",
            WEBHOOK_PORT=str(port),
        ) as bot:
            secret = str(bot.tg.webhook.get("secret_token") or "")
            assert secret
    assert "setWebhook" in caplog.text  # the call itself is logged at DEBUG...
    assert secret not in caplog.text  # ...its secret never
