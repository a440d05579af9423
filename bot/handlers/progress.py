"""What the chat sees while a picture is being made: the chat action and a sparse status message.

The "sending photo" action is refreshed about every 4 s (Telegram shows it for 5 s). A status
message appears at once when the request has to queue, or after `STATUS_MESSAGE_DELAY_SECONDS` of
waiting otherwise; it is edited only when its text changes and never more often than every
`MIN_EDIT_INTERVAL` seconds (longer in groups), so group flood limits are not approached, and it is
deleted when the result arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType

from telegram import Message
from telegram.constants import ChatAction
from telegram.error import TelegramError

from bot.limiter import Ticket

logger = logging.getLogger(__name__)

ACTION_EVERY = 4.0
# The first "sending photo" waits this long: a picture that is ready sooner needs no indicator,
# and an instant answer is not slowed by a request competing with its upload.
FIRST_ACTION_AFTER = 0.5
TICK = 0.5
MIN_EDIT_INTERVAL = 5.0
MIN_EDIT_INTERVAL_GROUP = 15.0


class Progress:
    """Keep the chat informed while one request waits and runs (an async context manager)."""

    def __init__(
        self,
        *,
        message: Message,
        ticket: Ticket,
        status_delay: float,
        queued_text: str,
        working_text: str,
        in_group: bool,
    ) -> None:
        self._message = message
        self._ticket = ticket
        self._status_delay = status_delay
        self._queued_text = queued_text
        self._working_text = working_text
        self._edit_interval = MIN_EDIT_INTERVAL_GROUP if in_group else MIN_EDIT_INTERVAL
        self._status: Message | None = None
        # The status message's own send, shielded: if the result arrives while it is in flight,
        # Telegram still creates the message, so `remove_status` waits for it and deletes it.
        self._sending: asyncio.Future[Message] | None = None
        self._shown = ""
        self._task: asyncio.Task[None] | None = None
        self._thread_id = message.message_thread_id if message.is_topic_message else None

    async def __aenter__(self) -> Progress:
        self._task = asyncio.create_task(self._run(), name="progress")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.remove_status()

    async def remove_status(self) -> None:
        """Delete the status message if one was shown (or is still being sent)."""
        sending, self._sending = self._sending, None
        if self._status is None and sending is not None:
            try:
                self._status = await sending
            except TelegramError as exc:
                logger.debug("status message failed: %s", exc)
        status, self._status = self._status, None
        if status is not None:
            try:
                await status.delete()
            except TelegramError as exc:
                logger.debug("could not delete status message: %s", exc)

    def _wanted(self, waited: float) -> str:
        position = self._ticket.position
        if position:
            return self._queued_text.format(position=position)
        if waited >= self._status_delay:
            return self._working_text
        return ""

    async def _run(self) -> None:
        started = time.monotonic()
        next_action = started + FIRST_ACTION_AFTER
        last_edit = -1e9
        while True:
            now = time.monotonic()
            if now >= next_action:
                next_action = now + ACTION_EVERY
                await self._chat_action()
            wanted = self._wanted(now - started)
            if wanted and wanted != self._shown and now - last_edit >= self._edit_interval:
                last_edit = now
                await self._show(wanted)
            await asyncio.sleep(TICK)

    async def _chat_action(self) -> None:
        try:
            await self._message.get_bot().send_chat_action(
                chat_id=self._message.chat_id,
                action=ChatAction.UPLOAD_PHOTO,
                message_thread_id=self._thread_id,
            )
        except TelegramError as exc:
            logger.debug("chat action failed: %s", exc)

    async def _show(self, text: str) -> None:
        try:
            if self._status is None:
                self._sending = asyncio.ensure_future(self._message.reply_text(text, do_quote=True))
                self._status = await asyncio.shield(self._sending)
            else:
                await self._status.edit_text(text)
            self._shown = text
        except TelegramError as exc:
            logger.debug("status message failed: %s", exc)
