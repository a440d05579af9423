"""What the chat sees while a picture is being made: the chat action and a sparse status message.

The "sending photo" action is refreshed about every 4 s (Telegram shows it for 5 s). A status
message appears at once when the request has to queue, or after `STATUS_MESSAGE_DELAY_SECONDS` of
waiting otherwise. It tells the truth: the queue position while queued, then the time spent drawing
and, once the bot has seen pictures of that model and quality, how long they usually take (the
median of the recent ones, `bot.eta`). It carries the ❌ Cancel button of the request. It is
edited only when its text changes and never more often than every `MIN_EDIT_INTERVAL` seconds
(`MIN_EDIT_INTERVAL_GROUP` in groups, where Telegram allows about 20 messages a minute for the
whole group and the bot's edits count), and it is deleted when the result arrives.

When the images service streams previews (`show_partial`, the images client's `on_partial`), the
first one replaces the status message with a photo replying to the command ("Preview 1 of 2 ·
14 s", with the same Cancel button) and later ones edit that photo's media, at most every
`PREVIEW_EDIT_INTERVAL` seconds (`PREVIEW_EDIT_INTERVAL_GROUP` in groups); a preview Telegram
refuses is skipped. Delivery takes the preview over (`hand_over_preview`) to put the final picture
in its place, or to delete it after sending an album or a document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType

from telegram import InlineKeyboardMarkup, InputMediaPhoto, Message
from telegram.constants import ChatAction
from telegram.error import TelegramError

from bot.eta import rounded_seconds
from bot.i18n import Texts
from bot.images import PartialImage
from bot.limiter import Ticket
from bot.running import RunningRequest

logger = logging.getLogger(__name__)

ACTION_EVERY = 4.0
# The first "sending photo" waits this long: a picture that is ready sooner needs no indicator,
# and an instant answer is not slowed by a request competing with its upload.
FIRST_ACTION_AFTER = 0.5
TICK = 0.5
MIN_EDIT_INTERVAL = 5.0
# Three requests drawing at once in a group then cost 6 of the group's 20 messages a minute;
# with more, each waits longer, so that all of them together stay at 6 a minute.
MIN_EDIT_INTERVAL_GROUP = 30.0
GROUP_STATUS_EDITS_PER_MINUTE = 6
PREVIEW_EDIT_INTERVAL = 3.0
PREVIEW_EDIT_INTERVAL_GROUP = 15.0
PREVIEW_UPLOAD_TIMEOUT = 20.0


def edit_interval(*, in_group: bool, in_chat: int = 1) -> float:
    """Return the least time between two edits of one status message.

    `in_chat` is how many requests are in flight in that chat; in a group their status edits
    together stay within `GROUP_STATUS_EDITS_PER_MINUTE`.
    """
    if not in_group:
        return MIN_EDIT_INTERVAL
    shared = 60.0 * max(1, in_chat) / GROUP_STATUS_EDITS_PER_MINUTE
    return max(MIN_EDIT_INTERVAL_GROUP, shared)


def status_text(
    texts: Texts,
    lang: str,
    *,
    position: int,
    running_for: float | None,
    estimate: float | None,
    waited: float,
    status_delay: float,
) -> str:
    """Return the status to show now ("" for none yet): queued, or drawing for how long."""
    if position:
        return texts.get(lang, "status.queued", position=position)
    if waited < status_delay:
        return ""
    if running_for is None:
        return texts.get(lang, "status.working")
    elapsed = rounded_seconds(running_for)
    if estimate is None:
        return texts.get(lang, "status.running", elapsed=elapsed)
    return texts.get(
        lang, "status.running_eta", elapsed=elapsed, estimate=rounded_seconds(estimate)
    )


class Progress:
    """Keep the chat informed while one request waits and runs (an async context manager)."""

    def __init__(
        self,
        *,
        message: Message,
        ticket: Ticket,
        status_delay: float,
        texts: Texts,
        lang: str,
        in_group: bool,
        estimate: float | None = None,
        cancel_markup: InlineKeyboardMarkup | None = None,
        request: RunningRequest | None = None,
        in_chat: Callable[[], int] = lambda: 1,
        monotonic: Callable[[], float] = time.monotonic,
        note: str = "",
    ) -> None:
        self._message = message
        self._note = note  # a first line above every status (a job resumed after a restart)
        self._ticket = ticket
        self._status_delay = status_delay
        self._texts = texts
        self._lang = lang
        self._estimate = estimate
        self._markup = cancel_markup
        self._request = request
        self._monotonic = monotonic
        self._in_group = in_group
        self._in_chat = in_chat
        self._preview_interval = PREVIEW_EDIT_INTERVAL_GROUP if in_group else PREVIEW_EDIT_INTERVAL
        # The status message and the preview change one at a time.
        self._lock = asyncio.Lock()
        self._preview: Message | None = None
        # Like the status message's send: a preview upload cut short still creates the photo.
        self._preview_sending: asyncio.Future[Message] | None = None
        self._preview_at = float("-inf")
        self._handed_over = False
        self._status: Message | None = None
        # The status message's own send, shielded: if the result arrives while it is in flight,
        # Telegram still creates the message, so `remove_status` waits for it and deletes it.
        self._sending: asyncio.Future[Message] | None = None
        self._shown = ""
        self._task: asyncio.Task[None] | None = None
        self._thread_id = message.message_thread_id if message.is_topic_message else None
        self._running_since: float | None = None

    def running(self) -> None:
        """The request holds a generation slot now: the drawing time starts."""
        self._running_since = self._monotonic()

    def running_for(self) -> float | None:
        """Return how long the request has been drawing (None while it waits)."""
        if self._running_since is None:
            return None
        return self._monotonic() - self._running_since

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
        async with self._lock:
            await self.remove_status()
            preview = await self._take_preview()
        if preview is not None and not self._handed_over:
            await _delete(preview, "preview")

    async def hand_over_preview(self) -> Message | None:
        """Stop showing previews and return the preview message, now the caller's to replace."""
        async with self._lock:
            self._handed_over = True
            return await self._take_preview()

    async def _take_preview(self) -> Message | None:
        sending, self._preview_sending = self._preview_sending, None
        preview, self._preview = self._preview or await _sent(sending, "preview"), None
        return preview

    async def show_partial(self, partial: PartialImage) -> None:
        """Show a streamed preview: the first replaces the status message, later ones edit it."""
        async with self._lock:
            if self._handed_over:
                return
            now = self._monotonic()
            if self._preview is not None and now - self._preview_at < self._preview_interval:
                logger.debug(
                    "preview %s skipped: the last one is too recent", partial.partial_index
                )
                return
            running_for = self.running_for()
            caption = self._texts.get(
                self._lang,
                "preview.caption",
                index=partial.partial_index + 1,
                total=max(partial.previews, partial.partial_index + 1),
                elapsed=rounded_seconds(partial.elapsed if running_for is None else running_for),
            )
            try:
                if self._preview is None:
                    self._preview_sending = asyncio.ensure_future(
                        self._message.reply_photo(
                            partial.data,
                            caption=caption,
                            do_quote=True,
                            reply_markup=self._markup,
                            read_timeout=PREVIEW_UPLOAD_TIMEOUT,
                            write_timeout=PREVIEW_UPLOAD_TIMEOUT,
                        )
                    )
                    self._preview = await asyncio.shield(self._preview_sending)
                    self._preview_sending = None
                    if self._request is not None:
                        self._request.attach(self._preview.message_id)
                    await self.remove_status()
                else:
                    await self._preview.edit_media(
                        InputMediaPhoto(partial.data, caption=caption),
                        reply_markup=self._markup,
                        read_timeout=PREVIEW_UPLOAD_TIMEOUT,
                        write_timeout=PREVIEW_UPLOAD_TIMEOUT,
                    )
                self._preview_at = now
            except TelegramError as exc:  # a refused preview is skipped, never fatal
                logger.info("preview %s not shown: %s", partial.partial_index, exc)

    async def remove_status(self) -> None:
        """Delete the status message if one was shown (or is still being sent)."""
        sending, self._sending = self._sending, None
        status, self._status = self._status or await _sent(sending, "status message"), None
        if status is not None:
            await _delete(status, "status message")

    def _wanted(self, waited: float) -> str:
        text = status_text(
            self._texts,
            self._lang,
            position=self._ticket.position,
            running_for=self.running_for(),
            estimate=self._estimate,
            waited=waited,
            status_delay=self._status_delay,
        )
        return f"{self._note}\n{text}" if self._note and text else text

    async def _run(self) -> None:
        started = self._monotonic()
        next_action = started + FIRST_ACTION_AFTER
        last_edit = -1e9
        while True:
            now = self._monotonic()
            if now >= next_action:
                next_action = now + ACTION_EVERY
                await self._chat_action()
            wanted = self._wanted(now - started)
            interval = edit_interval(in_group=self._in_group, in_chat=self._in_chat())
            if wanted and wanted != self._shown and now - last_edit >= interval:
                last_edit = now
                async with self._lock:
                    if self._preview is None and not self._handed_over:
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
                self._sending = asyncio.ensure_future(
                    self._message.reply_text(text, do_quote=True, reply_markup=self._markup)
                )
                self._status = await asyncio.shield(self._sending)
                if self._request is not None:
                    self._request.attach(self._status.message_id)
            else:
                # An edit without the keyboard would remove the Cancel button.
                await self._status.edit_text(text, reply_markup=self._markup)
            self._shown = text
        except TelegramError as exc:
            logger.debug("status message failed: %s", exc)


async def _sent(sending: asyncio.Future[Message] | None, what: str) -> Message | None:
    """Return the message a shielded send created (None if there was none or it failed)."""
    if sending is None:
        return None
    try:
        return await sending
    except TelegramError as exc:
        logger.debug("%s failed: %s", what, exc)
        return None


async def _delete(message: Message, what: str) -> None:
    try:
        await message.delete()
    except TelegramError as exc:
        logger.debug("could not delete the %s: %s", what, exc)
