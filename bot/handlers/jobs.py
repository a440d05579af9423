"""Jobs as the chat sees them: updates become jobs (`run_job`), job events become messages.

`run_job` hands a validated request to the `JobRunner` (`bot.jobs`) and explains a refusal
(the user's cap, the quota, the credits, the day's budget). `TelegramEvents` is the worker's
`Events` for Telegram: the chat action and status message while a job waits and runs (saying so
when it resumed after a restart), the source picture of an edit, the pictures with their caption
and buttons, and the replies when something failed or a job was too old to resume. A job only
keeps ids, so every reply goes through a `Message` rebuilt from them (`reply_target`): the same
chat, forum topic and message to answer, whether the job is fresh or resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from datetime import timedelta
from typing import Any, TypeVar

from telegram import Bot, Chat, Message, User
from telegram.error import TelegramError

from bot import pricing
from bot.captions import build_caption
from bot.handlers import billing
from bot.handlers.common import reply_plain, tell_admins
from bot.handlers.delivery import (
    ChatUnavailable,
    DeliveryError,
    MaybeDelivered,
    Picture,
    TooLargeToUpload,
    discard,
    prepare,
    send_pictures,
    spool_dir,
)
from bot.handlers.keyboards import cancel_keyboard, result_keyboard
from bot.handlers.progress import Progress
from bot.handlers.replies import error_text
from bot.handlers.services import Services
from bot.handlers.sources import fetch_source
from bot.images import ImagesError, ImagesResult, PartialImage
from bot.jobs import Delivered, ImageRequest, Job, Origin
from bot.jobs.worker import Acknowledge, Watch
from bot.limiter import Ticket, UserBusy
from bot.quota import CreditsNeeded, QuotaExceeded
from bot.running import RunningRequest
from bot.store import StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")
ADMIN_ALERT_EVERY = timedelta(hours=1)
ALERT_KINDS = frozenset({"auth", "quota", "not_found", "not_offered"})


def reply_for(services: Services, lang: str, exc: Exception) -> str:
    """Return the reply explaining `exc` (an unexpected-error text when it has none)."""
    text = error_text(services.texts, lang, exc, now=services.clock())
    return text if text is not None else services.texts.get(lang, "error.unexpected")


def origin_of(message: Message, *, user: User, chat: Chat, lang: str) -> Origin:
    """Return where a request came from and what to answer."""
    return Origin(
        user_id=user.id,
        chat_id=chat.id,
        chat_type=chat.type,
        thread_id=message.message_thread_id if message.is_topic_message else None,
        message_id=message.message_id,
        lang=lang,
    )


async def run_job(
    services: Services,
    *,
    message: Message,
    user: User,
    chat: Chat,
    lang: str,
    request: ImageRequest,
) -> None:
    """Make `request` a job (it runs on its own), or reply why it cannot be taken."""
    origin = origin_of(message, user=user, chat=chat, lang=lang)
    try:
        await services.jobs.submit(origin, request)
    except UserBusy as exc:
        await reply_plain(message, reply_for(services, lang, exc))
    except QuotaExceeded as exc:  # CreditsNeeded included
        services.metrics.quota_refused("credits" if isinstance(exc, CreditsNeeded) else exc.scope)
        await reply_plain(message, billing.refusal_text(services, lang, exc))
    except pricing.BudgetExhausted as exc:
        services.metrics.quota_refused("budget")
        logger.info("daily budget reached: %s", exc)
        await reply_plain(message, billing.refusal_text(services, lang, exc))
        if exc.needed <= exc.budget:  # the day is used up, not just one huge request
            await billing.alert_budget(services, message.get_bot(), levels=(100,), spent=exc.spent)


def reply_target(bot: Bot, job: Job) -> Message:
    """Return the message a job answers, rebuilt from its ids (chat, topic, message)."""
    origin = job.origin
    message = Message(
        message_id=origin.message_id,
        date=job.created_at,
        chat=Chat(id=origin.chat_id, type=origin.chat_type),
        message_thread_id=origin.thread_id,
        is_topic_message=origin.thread_id is not None,
    )
    message.set_bot(bot)
    return message


class ChatWatch:
    """A job's `Watch` on Telegram: its status and previews, and its ❌ Cancel (`bot.running`)."""

    def __init__(
        self, services: Services, job: Job, *, request: RunningRequest, progress: Progress
    ) -> None:
        self._services = services
        self._job = job
        self._request = request
        self.progress = progress

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run the cancellable part; raise `Cancelled` when the user cancelled it."""
        return await self._request.run(work)

    def started(self) -> None:
        """The drawing time starts."""
        self.progress.running()

    async def show_partial(self, partial: PartialImage) -> None:
        """Show a streamed preview."""
        await self.progress.show_partial(partial)

    def drawn(self) -> None:
        """Too late to cancel now; remember how long it took, for the next estimates."""
        self._request.close()
        seconds = self.progress.running_for()
        if seconds is not None:
            description = self._job.request.description
            self._services.generation_times.record(
                model=description.model, quality=description.quality, seconds=seconds
            )


class TelegramEvents:
    """The job worker's `Events` on Telegram."""

    def __init__(self, bot: Bot, services: Services) -> None:
        self._bot = bot
        self._services = services
        self._watches: dict[int, ChatWatch] = {}  # the jobs between their slot and delivery

    def progress(self, job: Job, ticket: Ticket) -> AbstractAsyncContextManager[Watch]:
        """Show the chat action and the status message (at once, saying so, when resumed)."""
        return self._watch(job, ticket)

    @contextlib.asynccontextmanager
    async def _watch(self, job: Job, ticket: Ticket) -> AsyncIterator[Watch]:
        services, origin = self._services, job.origin
        description = job.request.description
        tracking = services.running.track(
            user_id=origin.user_id, chat_id=origin.chat_id, message_id=origin.message_id
        )
        async with tracking as request:
            progress = Progress(
                message=reply_target(self._bot, job),
                ticket=ticket,
                status_delay=0.0 if job.resumed else services.settings.status_message_delay_seconds,
                texts=services.texts,
                lang=origin.lang,
                in_group=origin.in_group,
                estimate=services.generation_times.estimate(
                    model=description.model, quality=description.quality
                ),
                cancel_markup=cancel_keyboard(services.texts, origin.lang, request.id),
                request=request,
                in_chat=lambda: services.running.in_chat(origin.chat_id),
                note=services.texts.get(origin.lang, "status.resumed") if job.resumed else "",
            )
            watch = ChatWatch(services, job, request=request, progress=progress)
            async with progress:
                self._watches[job.id] = watch
                try:
                    yield watch
                finally:
                    self._watches.pop(job.id, None)

    async def fetch_source(self, job: Job) -> bytes | None:
        """Download the picture to edit or vary (again, after a restart)."""
        request = job.request
        if request.source_file_id is None:
            return None
        return await fetch_source(
            reply_target(self._bot, job),
            texts=self._services.texts,
            lang=job.origin.lang,
            file_id=request.source_file_id,
            size=request.source_size,
            square=request.caps.square_uploads,
        )

    async def deliver(
        self, job: Job, result: ImagesResult, *, acknowledged: Acknowledge
    ) -> Delivered:
        """Send the pictures with caption and buttons; explain when they could not go out."""
        target = reply_target(self._bot, job)
        watch = self._watches.get(job.id)
        parcel = [result]
        del result  # `_deliver` frees the pictures once spooled; no name here may keep them
        try:
            count = await _deliver(
                self._services,
                target,
                job=job,
                result=parcel.pop(),
                acknowledged=acknowledged,
                progress=None if watch is None else watch.progress,
            )
        except DeliveryError as exc:
            await report_undelivered(
                self._services,
                exc,
                reply_to=target,
                user_id=job.origin.user_id,
                lang=job.origin.lang,
            )
            return Delivered(count=0, outcome=exc.kind)
        return Delivered(count=count, outcome="ok")

    async def failed(self, job: Job, exc: ImagesError) -> None:
        """Reply why the images call failed; alert the admins of faults only they can fix."""
        await reply_plain(
            reply_target(self._bot, job), reply_for(self._services, job.origin.lang, exc)
        )
        if exc.kind in ALERT_KINDS and exc.status is not None:  # what the host answered
            await alert_admins(self._services, self._bot, exc)

    async def cancelled(self, job: Job) -> None:
        """Tell the user the request was cancelled (and not counted)."""
        await reply_plain(
            reply_target(self._bot, job), self._services.texts.get(job.origin.lang, "cancel.done")
        )

    async def expired(self, job: Job) -> None:
        """Tell the user a request cut off by a restart was too old to resume."""
        await reply_plain(
            reply_target(self._bot, job), self._services.texts.get(job.origin.lang, "job.expired")
        )

    async def unexpected(self, job: Job, exc: Exception) -> None:
        """Log what no step expected, like the error handler, and tell the user (refunded)."""
        logger.error(
            "unexpected error in job %s: %s",
            job.id,
            type(exc).__name__,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        await reply_plain(
            reply_target(self._bot, job),
            self._services.texts.get(job.origin.lang, "error.unexpected"),
        )

    async def budget_reached(self, levels: tuple[int, ...], spent: pricing.Nanos) -> None:
        """Tell the admins how much of the day's budget is used."""
        await billing.alert_budget(self._services, self._bot, levels=levels, spent=spent)


async def _deliver(
    services: Services,
    reply_to: Message,
    *,
    job: Job,
    result: ImagesResult,
    acknowledged: Acknowledge,
    progress: Progress | None,
) -> int:
    request, origin = job.request, job.origin
    revised = next((i.revised_prompt for i in result.images if i.revised_prompt), None)
    images = [image.data for image in result.images]
    del result  # from here on `images` holds the only reference to the bytes until spooled
    # Inspecting and spooling the pictures (a worker thread) and recording the result (the
    # store's thread) are independent: run them side by side.
    pictures, result_id = await asyncio.gather(
        prepare(images, spool=spool_dir(services.settings.data_dir)),
        services.store.save_result(
            user_id=origin.user_id,
            chat_id=origin.chat_id,
            prompt=request.description.prompt,
            options=json.dumps(
                {
                    **asdict(request.options),
                    "as_file": request.as_file,
                    "kind": request.kind,
                    "source": request.source_file_id,
                }
            ),
            model=request.description.model,
        ),
    )
    try:
        return await _send_and_keep(
            services,
            reply_to,
            job=job,
            pictures=pictures,
            result_id=result_id,
            revised=revised,
            acknowledged=acknowledged,
            progress=progress,
        )
    finally:
        discard(pictures)  # whatever was not moved into the originals


async def _send_and_keep(
    services: Services,
    reply_to: Message,
    *,
    job: Job,
    pictures: list[Picture],
    result_id: str,
    revised: str | None,
    acknowledged: Acknowledge,
    progress: Progress | None,
) -> int:
    texts, lang = services.texts, job.origin.lang
    caption = build_caption(
        prompt=job.request.description.prompt,
        revised_prompt=revised,
        revised_label=texts.get(lang, "caption.revised"),
    )
    markup = result_keyboard(services.texts, lang, result_id)
    originals = [(p.filename, p.data) for p in pictures]
    # A streamed preview becomes the result (one photo) or goes once the result is sent.
    preview = await progress.hand_over_preview() if progress is not None else None
    try:
        sent = await send_pictures(
            reply_to,
            pictures,
            caption=caption,
            as_file=job.request.as_file,
            upload_limit=services.settings.telegram_upload_limit_bytes,
            reply_markup=markup if len(pictures) == 1 else None,
            replace=preview,
        )
    except MaybeDelivered as exc:
        # Telegram most likely posted them (with their buttons): count them, say nothing more.
        await acknowledged(len(pictures))
        logger.warning(
            "no answer to the upload of %s picture(s) for user %s in chat %s (%s); "
            "counted as delivered",
            len(pictures),
            job.origin.user_id,
            job.origin.chat_id,
            exc,
        )
        await services.originals.save(result_id, originals)
        return len(pictures)
    if not sent:
        return 0
    # Delivered: marked so before anything else, so that a restart never sends them again.
    await acknowledged(len(pictures))
    # Kept once the pictures are out (a press on 📄 Original needs a person, so it comes later);
    # writing them during the upload would slow it down.
    await services.originals.save(result_id, originals)
    if len(pictures) > 1 and markup is not None:
        try:
            await sent[0].reply_text(texts.get(lang, "result.actions"), reply_markup=markup)
        except TelegramError as exc:
            logger.warning("could not send the result buttons: %s", exc)
    # Documents are lossless on Telegram's side too: their ids serve 📄 Original once the kept
    # bytes are pruned. (Photo ids point at recompressed pictures, so they are not kept.)
    document_ids = [m.document.file_id for m in sent if m.document is not None]
    if document_ids:
        try:
            await services.store.set_result_files(result_id=result_id, file_ids=document_ids)
        except StoreError as exc:  # the pictures are delivered: never count them as failed
            logger.warning("could not record the file ids of %s: %s", result_id, exc)
    return len(pictures)


async def report_undelivered(
    services: Services, exc: DeliveryError, *, reply_to: Message, user_id: int, lang: str
) -> None:
    """Log why pictures were not (surely) delivered and, where it helps, tell the user."""
    chat_id = reply_to.chat_id
    if isinstance(exc, ChatUnavailable):
        logger.info(
            "chat %s is closed to the bot (%s); user %s's request dropped", chat_id, exc, user_id
        )
        return
    if isinstance(exc, MaybeDelivered):
        logger.warning("no answer to an upload for user %s in chat %s: %s", user_id, chat_id, exc)
        return
    logger.warning("pictures for user %s not delivered in chat %s: %s", user_id, chat_id, exc)
    if isinstance(exc, TooLargeToUpload):
        text = services.texts.get(
            lang, "delivery.too_large", size_mb=_megabytes(exc.size), limit_mb=_megabytes(exc.limit)
        )
    else:
        text = services.texts.get(lang, "delivery.failed")
    await reply_plain(reply_to, text)


def _megabytes(size: int) -> str:
    """Return a byte count as megabytes for a message (decimal MB, as Telegram counts)."""
    if size % 1_000_000 == 0 or size >= 10_000_000:
        return f"{size / 1_000_000:.0f}"
    return f"{size / 1_000_000:.1f}"


async def alert_admins(services: Services, bot: Bot, exc: ImagesError) -> None:
    """Tell the admins about a fault only they can fix, at most once an hour per kind."""
    admins = sorted(services.settings.admin_user_ids)
    if not admins:
        logger.error("images service fault %r and no ADMIN_USER_IDS to tell", exc.kind)
        return
    if not await services.store.should_alert(kind=exc.kind, every=ADMIN_ALERT_EVERY):
        return
    texts = services.texts
    await tell_admins(services, bot, lambda lang: texts.get(lang, f"admin.alert.{exc.kind}"))
