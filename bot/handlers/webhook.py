"""Webhook updates: check one POST from Telegram and put its update on the Application's queue.

The bot serves its webhook itself (`bot/web.py`, beside /healthz and /metrics) instead of
python-telegram-bot's `Updater.start_webhook`, whose server has no room for other routes. What
that server checked is checked here too: the secret token (compared in constant time), a JSON
body, an update python-telegram-bot can read.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from telegram import Update
from telegram.ext import Application, ExtBot

from bot.web import WebhookReceiver

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_receiver(
    app: Application[Any, Any, Any, Any, Any, Any], *, secret: str
) -> WebhookReceiver:
    """Return the receiver of Telegram's webhook POSTs for `app`, checking `secret`."""
    expected = secret.encode()

    async def receive(headers: Mapping[str, str], body: bytes) -> int:
        token = headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(token, expected):
            logger.debug("webhook call without the right secret token refused")
            return HTTPStatus.FORBIDDEN
        media_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return HTTPStatus.UNSUPPORTED_MEDIA_TYPE
        try:
            data = json.loads(body)
            update = Update.de_json(data, app.bot) if isinstance(data, dict) else None
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("webhook body is not an update: %s", type(exc).__name__)
            return HTTPStatus.BAD_REQUEST
        if update is None:
            return HTTPStatus.BAD_REQUEST
        if isinstance(app.bot, ExtBot):
            app.bot.insert_callback_data(update)
        await app.update_queue.put(update)
        return HTTPStatus.OK

    return receive
