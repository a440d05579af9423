"""The worker: turns admitted requests into durable jobs and runs them to the end, once.

`JobRunner.submit` admits a request (the per-user cap, then quota and budget via
`bot.jobs.billing.book`), stores it as a job holding its reservation, and starts it. A job then
runs in its own task: the source picture for edits and variations, a generation slot (in order,
`bot.limiter`), the images call, and the hand-off to `Events.deliver`, which calls back
`acknowledged` as soon as Telegram has confirmed the pictures, so the job is marked delivered
(and its quota settled) before anything else happens. Every other end marks it failed or
cancelled and refunds it, in the same store transaction (`Store.finish_job`).

`start` resumes the unfinished jobs a previous process left (oldest first; those older than
`JOB_MAX_AGE_SECONDS` are refunded and the user told, `Events.expired`). `stop` is the quick clean
stop: queued jobs are not started, running ones get `SHUTDOWN_GRACE_SECONDS`, then their images
calls are cancelled; either way they stay in the store for the next start. `cancel` ends one job
(marked cancelled, refunded, its task stopped).

The Telegram side implements `Events`; nothing here imports `telegram`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot import pricing
from bot.config import Settings
from bot.images import ImagesClient, ImagesError, ImagesResult, OnPartial, PartialImage
from bot.jobs import billing
from bot.jobs.model import BadJob, ImageRequest, Job, Origin, encode_request, job_from_record
from bot.limiter import GenerationLimiter, Ticket
from bot.metrics import Metrics
from bot.running import Cancelled
from bot.store import UNFINISHED_STATES, JobRecord, Store, StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Acknowledge = Callable[[int], Awaitable[None]]
PRUNE_AFTER = timedelta(days=1)  # finished jobs and webhook update ids are kept this long
PRUNE_EVERY = 3600.0
INSTANCE_FILE = "instance-id"
CANCEL_WAIT = 3.0  # how long cancelled jobs may take to wind down (delete a status message)


@dataclass(frozen=True)
class Delivered:
    """How a delivery ended: pictures Telegram took, and the outcome for the statistics."""

    count: int
    outcome: str  # "ok" or a delivery error kind


class Watch(Protocol):
    """The chat's view of one job while it waits and draws (status, previews, ❌ Cancel)."""

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run the part a user may cancel (the slot wait and the images call); raise
        `bot.running.Cancelled` when they did."""
        ...

    def started(self) -> None:
        """The job holds a generation slot now: the drawing time starts."""
        ...

    async def show_partial(self, partial: PartialImage) -> None:
        """Show a streamed preview."""
        ...

    def drawn(self) -> None:
        """The pictures are there and paid for: too late to cancel; note how long it took."""
        ...


class Events(Protocol):
    """What the chat side does for a job (`bot.handlers.jobs` implements it for Telegram)."""

    def progress(self, job: Job, ticket: Ticket) -> AbstractAsyncContextManager[Watch]:
        """Keep the chat informed while the job waits for a slot and runs."""
        ...

    async def fetch_source(self, job: Job) -> bytes | None:
        """Return the picture an edit or variation works on; None (the user told) if none."""
        ...

    async def deliver(
        self, job: Job, result: ImagesResult, *, acknowledged: Acknowledge
    ) -> Delivered:
        """Send the pictures; await `acknowledged(count)` the moment Telegram has taken them."""
        ...

    async def failed(self, job: Job, exc: ImagesError) -> None:
        """Tell the user (and where it helps, the admins) why the images call failed."""
        ...

    async def expired(self, job: Job) -> None:
        """Tell the user a request cut off by a restart was too old to resume (refunded)."""
        ...

    async def cancelled(self, job: Job) -> None:
        """Tell the user their request was cancelled (and not counted)."""
        ...

    async def unexpected(self, job: Job, exc: Exception) -> None:
        """Log a failure nobody expected (with its traceback) and tell the user generically."""
        ...

    async def budget_reached(self, levels: tuple[int, ...], spent: pricing.Nanos) -> None:
        """Tell the admins the day's spend reached these levels (80, 100 percent)."""
        ...


class _Postpone(Exception):
    """The bot is stopping: leave the job for the next start."""


@dataclass
class _Live:
    job: Job
    ticket: Ticket
    hold: billing.Hold
    task: asyncio.Task[None] | None = None
    stage: str = "queued"  # queued (no slot yet), running, delivering
    cancel_requested: bool = False
    acknowledged: bool = False
    postponed: bool = False


class JobRunner:
    """Admit, store, run, resume and stop jobs (one per admitted request)."""

    def __init__(
        self,
        *,
        store: Store,
        images: ImagesClient,
        limiter: GenerationLimiter,
        settings: Settings,
        clock: Callable[[], datetime],
        metrics: Metrics,
        owner: str,
    ) -> None:
        self._owner = owner  # this instance (`instance_id`): it resumes its own jobs only
        self._store = store
        self._metrics = metrics
        self._images = images
        self._limiter = limiter
        self._settings = settings
        self._clock = clock
        self._events: Events | None = None
        self._live: dict[int, _Live] = {}
        self._stopping = False
        self._maintenance: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        """Return how many jobs this process is running or has queued."""
        return len(self._live)

    async def start(self, events: Events) -> int:
        """Start running jobs through `events`: resume the unfinished ones; return how many."""
        self._events = events
        resumed = 0
        max_age = timedelta(seconds=self._settings.job_max_age_seconds)
        now = self._clock()
        for record in await self._store.unfinished_jobs(owner=self._owner):
            try:
                job = job_from_record(record, aliases=self._settings.model_aliases, resumed=True)
            except BadJob as exc:
                logger.warning("job %s cannot be resumed (%s); refunded", record.id, exc)
                model = _stored_model(record)
                await self._end_stored(record, model=model, outcome="error", state="failed")
                continue
            model = job.request.description.model
            if now - record.created_at > max_age:
                logger.info("job %s is too old to resume; refunded", record.id)
                if await self._end_stored(record, model=model, outcome="expired", state="failed"):
                    await events.expired(job)
                continue
            # It was admitted before the restart: the per-user cap does not apply again.
            ticket = self._limiter.claim(record.user_id, force=True)
            hold = billing.hold_for(
                self._settings, reservation=record.reservation, budget=record.budget, model=model
            )
            self._launch(job, ticket, hold)
            resumed += 1
        if resumed:
            logger.info("resumed %d job(s) after a restart", resumed)
        self._maintenance = asyncio.create_task(self._prune_often(), name="jobs-prune")
        return resumed

    async def submit(self, origin: Origin, request: ImageRequest) -> Job:
        """Admit and store a request as a job, and start it (kept queued while stopping).

        Raises `UserBusy` (the user's cap), `QuotaExceeded`/`CreditsNeeded` (the quota),
        `BudgetExhausted` (the day's budget) or `StoreError`, having booked nothing.
        """
        stored_request = encode_request(request)
        ticket = self._limiter.claim(origin.user_id)
        try:
            hold = await billing.book(
                self._store,
                self._settings,
                user_id=origin.user_id,
                group_id=origin.chat_id if origin.in_group else None,
                description=request.description,
                kind=request.kind,
            )
            try:
                record = await self._store.create_job(
                    owner=self._owner,
                    user_id=origin.user_id,
                    chat_id=origin.chat_id,
                    chat_type=origin.chat_type,
                    thread_id=origin.thread_id,
                    message_id=origin.message_id,
                    lang=origin.lang,
                    request=stored_request,
                    reservation=hold.reservation,
                    budget=hold.budget,
                )
            except BaseException:
                await self._refund(hold, user_id=origin.user_id)
                raise
        except BaseException:
            ticket.release()
            raise
        job = Job(id=record.id, origin=origin, request=request, created_at=record.created_at)
        if self._stopping or self._events is None:
            ticket.release()  # stays queued in the store for the next start
            logger.info(
                "job %s stored while the bot is stopping; it runs at the next start", job.id
            )
            return job
        self._launch(job, ticket, hold)
        return job

    async def cancel(self, job_id: int) -> bool:
        """Cancel a job: stop it if it runs here, mark it cancelled and refund it.

        Returns whether the job was unfinished (False: unknown, already over, or its pictures
        are already with Telegram).
        """
        live = self._live.get(job_id)
        if live is not None and live.task is not None:
            if live.acknowledged or live.cancel_requested:
                return False
            live.cancel_requested = True
            live.task.cancel()
            await asyncio.wait([live.task], timeout=CANCEL_WAIT)
            return True
        record = await self._store.get_job(job_id)
        if record is None or record.state not in UNFINISHED_STATES:
            return False
        model = _stored_model(record)
        return await self._end_stored(record, model=model, outcome="cancelled", state="cancelled")

    async def stop(self, grace: float) -> None:
        """Stop quickly: start nothing new, give running jobs `grace` s, then cancel them.

        Jobs stopped this way stay unfinished in the store and are resumed at the next start.
        """
        self._stopping = True
        if self._maintenance is not None:
            self._maintenance.cancel()
        tasks = {live.task for live in self._live.values() if live.task is not None}
        for live in list(self._live.values()):
            if live.stage == "queued" and live.task is not None:
                live.task.cancel()  # not started: it waits in the store
        if tasks:
            logger.info("stopping: %d job(s) in flight get up to %.0f s", len(tasks), grace)
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                logger.info("stopping: %d job(s) cancelled, kept for the next start", len(pending))
                await asyncio.wait(pending, timeout=CANCEL_WAIT)
        if self._maintenance is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance

    # --- running one job ------------------------------------------------------------------------

    def _launch(self, job: Job, ticket: Ticket, hold: billing.Hold) -> None:
        live = _Live(job=job, ticket=ticket, hold=hold)
        self._live[job.id] = live
        live.task = asyncio.create_task(self._run(live), name=f"job-{job.id}")

    async def _run(self, live: _Live) -> None:
        """Run one job to its end (or leave it for the next start when the bot stops)."""
        delivered, outcome = 0, "error"
        try:
            delivered, outcome = await self._steps(live)
        except ImagesError as exc:
            outcome = exc.kind
            logger.warning(
                "job %s failed for user %s: %s", live.job.id, live.job.origin.user_id, exc.kind
            )
            await self._on_events().failed(live.job, exc)
        except _Postpone:
            live.postponed = True
        except Cancelled:  # ❌ Cancel or /cancel: nothing delivered, the quota goes back
            outcome = "cancelled"
            await self._on_events().cancelled(live.job)
        except Exception as exc:  # the task's boundary: nothing above it would see this
            await self._on_events().unexpected(live.job, exc)
        except asyncio.CancelledError:
            if not live.cancel_requested:
                live.postponed = True  # the bot is stopping
                raise
            outcome = "cancelled"
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # cancelled on purpose: the bookkeeping below must still run
            await self._on_events().cancelled(live.job)
        finally:
            try:
                if not live.postponed:
                    await self._finish(live, delivered=delivered, outcome=outcome)
            except StoreError as exc:  # it stays unfinished: the next start runs it again
                logger.error("job %s could not be finished: %s", live.job.id, exc)
            finally:
                live.ticket.release()
                self._live.pop(live.job.id, None)

    async def _steps(self, live: _Live) -> tuple[int, str]:
        job, events = live.job, self._on_events()
        source: bytes | None = None
        if job.request.kind != "generate":
            # Fetched only now, once the user's cap and quota let the request through.
            source = await events.fetch_source(job)
            if source is None:
                return 0, "download"
        async with events.progress(job, live.ticket) as watch:
            result = await watch.run(self._draw(live, watch, source))
            del source
            live.stage = "delivering"
            await self._store.transition_job(job.id, to="delivering", from_states=("running",))

            async def acknowledged(count: int) -> None:
                await self._acknowledged(live, count)

            # Handed over with no name left here: the delivery frees the pictures once spooled.
            parcel = [result]
            del result
            done = await events.deliver(job, parcel.pop(), acknowledged=acknowledged)
        return done.count, done.outcome

    async def _draw(self, live: _Live, watch: Watch, source: bytes | None) -> ImagesResult:
        """Wait for a slot and make the paid call: the part ❌ Cancel can stop."""
        job, ticket = live.job, live.ticket
        if not ticket.try_acquire():
            await ticket.wait()
        if self._stopping:
            raise _Postpone()
        live.stage = "running"
        watch.started()
        await self._store.transition_job(job.id, to="running", from_states=UNFINISHED_STATES)
        # The images client holds the one deadline (IMAGE_TIMEOUT_SECONDS) of the call.
        started = time.monotonic()
        try:
            result = await self._call(job.request, source, on_partial=watch.show_partial)
        except ImagesError as exc:
            self._metrics.backend_error(exc.kind)
            raise
        finally:
            # The upload and its flood-control waits need no slot (the user's claim lasts).
            ticket.release_slot()
        model = job.request.description.model
        self._metrics.generated(model=model, seconds=time.monotonic() - started)
        live.hold.charge(result)
        watch.drawn()
        return result

    async def _call(
        self, request: ImageRequest, source: bytes | None, *, on_partial: OnPartial
    ) -> ImagesResult:
        images, description = self._images, request.description
        if request.kind == "edit" and source is not None:
            return await images.edit(description, request.caps, image=source, on_partial=on_partial)
        if request.kind == "variation" and source is not None:
            return await images.variation(
                model=description.model,
                caps=request.caps,
                image=source,
                n=description.n,
                size=description.size,
            )
        return await images.generate(description, request.caps, on_partial=on_partial)

    async def _acknowledged(self, live: _Live, count: int) -> None:
        """Mark the job delivered the moment Telegram has the pictures, before anything else."""
        if live.acknowledged:
            return
        live.acknowledged = True
        try:
            await self._store.finish_job(live.job.id, state="delivered", delivered=count)
        except StoreError as exc:
            # Delivered all the same; a restart would send these pictures again.
            logger.error("job %s delivered but could not be marked so: %s", live.job.id, exc)

    async def _finish(self, live: _Live, *, delivered: int, outcome: str) -> None:
        job = live.job
        if not live.acknowledged:
            state = "cancelled" if outcome == "cancelled" else "failed"
            if delivered > 0:
                state = "delivered"
            if not await self._store.finish_job(job.id, state=state, delivered=delivered):
                return  # someone else ended it (a cancel from the store side)
        await self._settle(
            live.hold,
            user_id=job.origin.user_id,
            chat_id=job.origin.chat_id,
            requested=job.request.description.n,
            delivered=delivered,
            outcome=outcome,
        )
        self._metrics.request_done(kind=job.request.kind, outcome=outcome, images=delivered)

    async def _settle(
        self,
        hold: billing.Hold,
        *,
        user_id: int,
        chat_id: int,
        requested: int,
        delivered: int,
        outcome: str,
    ) -> None:
        """Store the cost and the statistics of a finished job; tell admins of the budget."""
        levels, spent = await billing.settle_cost(
            self._store, self._settings, hold, user_id=user_id, delivered=delivered
        )
        await self._store.record_request(
            user_id=user_id,
            chat_id=chat_id,
            images_requested=requested,
            images_delivered=delivered,
            outcome=outcome,
        )
        if levels:
            await self._on_events().budget_reached(levels, spent)

    async def _end_stored(self, record: JobRecord, *, model: str, outcome: str, state: str) -> bool:
        """Finish a job that is not running here (refunded); return whether this call did."""
        if not await self._store.finish_job(record.id, state=state, delivered=0):
            return False
        hold = billing.hold_for(
            self._settings, reservation=record.reservation, budget=record.budget, model=model
        )
        await self._settle(
            hold,
            user_id=record.user_id,
            chat_id=record.chat_id,
            requested=record.reservation.n if record.reservation is not None else 0,
            delivered=0,
            outcome=outcome,
        )
        self._metrics.request_done(kind=_stored_kind(record), outcome=outcome, images=0)
        return True

    async def _refund(self, hold: billing.Hold, *, user_id: int) -> None:
        """Give back a hold that never became a job."""
        if hold.reservation is not None:
            await self._store.settle(hold.reservation, delivered=0)
        await billing.settle_cost(self._store, self._settings, hold, user_id=user_id, delivered=0)

    def _on_events(self) -> Events:
        if self._events is None:
            raise RuntimeError("the job runner was not started")
        return self._events

    async def _prune_often(self) -> None:
        while True:
            try:
                removed = await self._store.prune_jobs(before=self._clock() - PRUNE_AFTER)
                if removed:
                    logger.debug("pruned %d finished job(s)", removed)
            except StoreError as exc:
                logger.warning("could not prune old jobs: %s", exc)
            await asyncio.sleep(PRUNE_EVERY)


def instance_id(data_dir: Path) -> str:
    """Return the id of the bot instance using `data_dir`, made once and kept there.

    Replicas sharing one PostgreSQL database each have their own `DATA_DIR`: a replica resumes
    the jobs it admitted, never those another live replica is running.
    """
    path = data_dir / INSTANCE_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(8)
    path.write_text(value + "\n", encoding="ascii")
    return value


def _stored_model(record: JobRecord) -> str:
    """Return the model a stored request names, even when the rest cannot be read."""
    return _stored(record, "description", "model")


def _stored_kind(record: JobRecord) -> str:
    """Return the kind of a stored request (generate, edit, variation), "unknown" if unreadable."""
    return _stored(record, "kind")


def _stored(record: JobRecord, *keys: str) -> str:
    try:
        value = json.loads(record.request)
        for key in keys:
            value = value[key]
    except (ValueError, KeyError, TypeError):
        return "unknown"
    return value if isinstance(value, str) else "unknown"
