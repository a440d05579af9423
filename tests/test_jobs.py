"""bot.jobs: the request's JSON, and the worker over a real store and a real images client.

The images client talks to the loopback OpenAI emulator; the Telegram side is a recording
`Events` (the real one is driven end to end by the e2e and subprocess tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.capabilities import caps_for, resolve
from bot.config import Settings, load_settings
from bot.images import ImagesClient, ImagesError, ImagesResult
from bot.jobs import BadJob, Delivered, ImageRequest, Job, JobRunner, Origin
from bot.jobs.model import decode_request, encode_request
from bot.jobs.worker import Watch
from bot.limiter import GenerationLimiter, Ticket, UserBusy
from bot.metrics import Metrics
from bot.prompt import ImageOptions
from bot.quota import QuotaExceeded
from bot.store import SqliteStore
from tests.emulators.openai_images import Fault, OpenAIEmulator

API_KEY = "sk-test-secret-key"
ORIGIN = Origin(
    user_id=7, chat_id=-100200, chat_type="supergroup", thread_id=3, message_id=11, lang="de"
)


def _request(prompt: str = "a red fox", *, n: int = 1, kind: str = "generate") -> ImageRequest:
    caps = caps_for("gpt-image-2")
    options = ImageOptions(count=n, quality="low")
    description = resolve(prompt=prompt, options=options, caps=caps, extra={"moderation": "low"})
    return ImageRequest(
        description=description,
        caps=caps,
        options=options,
        as_file=True,
        kind=kind,
        source_file_id="file-1" if kind != "generate" else None,
        source_size=1234 if kind != "generate" else None,
    )


def test_request_json_round_trips() -> None:
    for request in (_request(n=2), _request(kind="edit")):
        again = decode_request(encode_request(request), aliases={})
        assert again == request
        assert dict(again.description.extra) == {"moderation": "low"}


@pytest.mark.parametrize(
    "text",
    ["", "[]", '{"v": 99}', '{"v": 1, "kind": "dance"}', '{"v": 1, "kind": "generate"}'],
)
def test_unreadable_requests_raise_bad_job(text: str) -> None:
    with pytest.raises(BadJob):
        decode_request(text, aliases={})


def test_an_edit_without_its_source_is_refused() -> None:
    text = encode_request(_request(kind="edit")).replace('"file-1"', "null")
    with pytest.raises(BadJob):
        decode_request(text, aliases={})


class PlainWatch:
    """A watch that shows nothing and cannot be cancelled from the chat."""

    async def run(self, work: Any) -> Any:
        return await work

    def started(self) -> None:
        pass

    async def show_partial(self, partial: Any) -> None:
        pass

    def drawn(self) -> None:
        pass


@dataclass
class Recorder:
    """A Telegram side that records what the worker asks of it."""

    store: SqliteStore
    states_at_ack: list[str] = field(default_factory=list)
    sent: list[Job] = field(default_factory=list)
    failures: list[tuple[Job, str]] = field(default_factory=list)
    too_old: list[Job] = field(default_factory=list)
    progress_entered: asyncio.Event = field(default_factory=asyncio.Event)

    @contextlib.asynccontextmanager
    async def _progress(self) -> AsyncIterator[Watch]:
        self.progress_entered.set()
        yield PlainWatch()

    def progress(self, job: Job, ticket: Ticket) -> contextlib.AbstractAsyncContextManager[Watch]:
        return self._progress()

    async def cancelled(self, job: Job) -> None:
        self.failures.append((job, "cancelled"))

    async def fetch_source(self, job: Job) -> bytes | None:
        return None  # "the download failed"

    async def deliver(self, job: Job, result: ImagesResult, *, acknowledged: Any) -> Delivered:
        await acknowledged(len(result.images))
        record = await self.store.get_job(job.id)
        assert record is not None
        self.states_at_ack.append(record.state)
        self.sent.append(job)
        return Delivered(count=len(result.images), outcome="ok")

    async def failed(self, job: Job, exc: ImagesError) -> None:
        self.failures.append((job, exc.kind))

    async def expired(self, job: Job) -> None:
        self.too_old.append(job)

    async def unexpected(self, job: Job, exc: Exception) -> None:
        self.failures.append((job, type(exc).__name__))

    async def budget_reached(self, levels: tuple[int, ...], spent: int) -> None:
        pass


@dataclass
class World:
    settings: Settings
    store: SqliteStore
    images: ImagesClient
    oai: OpenAIEmulator

    def runner(self, *, clock: Any = None, max_per_user: int = 2, owner: str = "here") -> JobRunner:
        return JobRunner(
            store=self.store,
            images=self.images,
            limiter=GenerationLimiter(max_concurrent=4, max_per_user=max_per_user),
            settings=self.settings,
            clock=clock or (lambda: datetime.now(UTC)),
            metrics=Metrics(),
            owner=owner,
        )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    with OpenAIEmulator(api_key=API_KEY) as oai:
        settings = load_settings(
            {
                "OPENAI_BASE_URL": oai.base_url,
                "OPENAI_API_KEY": API_KEY,
                "DATA_DIR": str(tmp_path / "data"),
                "DAILY_IMAGE_LIMIT": "5",
                "IMAGE_MAX_ATTEMPTS": "1",
            },
            require_telegram=False,
        )
        store = await SqliteStore.open(settings.data_dir, clock=lambda: datetime.now(UTC))
        images = ImagesClient(base_url=oai.base_url, api_key=API_KEY, timeout=20, max_attempts=1)
        try:
            yield World(settings=settings, store=store, images=images, oai=oai)
        finally:
            await images.aclose()
            await store.close()


async def _used(world: World) -> int:
    return (await world.store.usage(user_id=ORIGIN.user_id, user_limit=5)).used_today


async def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_job_is_marked_delivered_when_telegram_takes_it(world: World) -> None:
    events = Recorder(world.store)
    runner = world.runner()
    await runner.start(events)
    job = await runner.submit(ORIGIN, _request(n=2))
    assert job.id > 0 and not job.resumed

    async def finished() -> bool:
        record = await world.store.get_job(job.id)
        return record is not None and record.state == "delivered" and runner.running == 0

    await _until(finished)
    assert events.states_at_ack == ["delivered"]  # before the delivery went on
    assert await _used(world) == 2
    assert (await world.store.stats()).images_today == 2
    assert await world.store.unfinished_jobs(owner="here") == []
    await runner.stop(1)


async def test_a_failed_call_refunds_and_tells_the_user(world: World) -> None:
    world.oai.queue_faults([Fault(status=400, code="invalid_request_error")])
    events = Recorder(world.store)
    runner = world.runner()
    await runner.start(events)
    job = await runner.submit(ORIGIN, _request())

    async def failed() -> bool:
        return bool(events.failures) and runner.running == 0

    await _until(failed)
    record = await world.store.get_job(job.id)
    assert record is not None and record.state == "failed"
    assert await _used(world) == 0
    assert (await world.store.stats()).failures_today == {events.failures[0][1]: 1}
    await runner.stop(1)


async def test_a_failed_source_download_refunds(world: World) -> None:
    events = Recorder(world.store)
    runner = world.runner()
    await runner.start(events)
    job = await runner.submit(ORIGIN, _request(kind="edit"))
    await _until(lambda: _state_is(world, job.id, "failed"))
    assert await _used(world) == 0 and world.oai.api_requests == []
    await runner.stop(1)


async def _called(world: World) -> None:
    """Wait (without blocking the loop) until the images service has the request."""

    async def called() -> bool:
        return bool(world.oai.api_requests)

    await _until(called)


async def _state_is(world: World, job_id: int, state: str) -> bool:
    record = await world.store.get_job(job_id)
    return record is not None and record.state == state


async def test_refusals_book_nothing(world: World) -> None:
    events = Recorder(world.store)
    runner = world.runner(max_per_user=1)
    await runner.start(events)
    world.oai.queue_faults([Fault.hang(10)])
    await runner.submit(ORIGIN, _request())
    with pytest.raises(UserBusy):
        await runner.submit(ORIGIN, _request())
    other = Origin(**{**ORIGIN.__dict__, "user_id": 8})
    with pytest.raises(QuotaExceeded):
        await runner.submit(other, _request(n=6))
    assert len(await world.store.unfinished_jobs(owner="here")) == 1
    await runner.stop(0)


async def test_stop_leaves_running_and_queued_jobs_for_the_next_start(world: World) -> None:
    world.oai.queue_faults([Fault.hang(30)])
    events = Recorder(world.store)
    runner = world.runner()
    await runner.start(events)
    job = await runner.submit(ORIGIN, _request())
    await _called(world)
    started = time.monotonic()
    await runner.stop(0.5)
    assert time.monotonic() - started < 8  # the hung call was cancelled after the grace
    (left,) = await world.store.unfinished_jobs(owner="here")
    assert left.id == job.id and left.state == "running"
    assert await _used(world) == 1  # still held by the job: neither counted nor lost
    # Stored while stopping: kept queued, never started.
    late = await runner.submit(ORIGIN, _request("late"))
    assert [j.id for j in await world.store.unfinished_jobs(owner="here")] == [job.id, late.id]

    second = Recorder(world.store)
    again = world.runner()
    assert await again.start(second) == 2
    await _until(lambda: _all_done(world))
    assert [j.id for j in second.sent] == [job.id, late.id]
    assert all(j.resumed for j in second.sent)
    assert await _used(world) == 2
    await again.stop(1)


async def _all_done(world: World) -> bool:
    return await world.store.unfinished_jobs(owner="here") == []


async def test_too_old_jobs_are_refunded_with_a_notice(world: World) -> None:
    world.oai.queue_faults([Fault.hang(30)])
    runner = world.runner()
    await runner.start(Recorder(world.store))
    job = await runner.submit(ORIGIN, _request())
    await _called(world)
    await runner.stop(0)

    later = datetime.now(UTC) + timedelta(seconds=world.settings.job_max_age_seconds + 1)
    events = Recorder(world.store)
    again = world.runner(clock=lambda: later)
    assert await again.start(events) == 0
    assert [j.id for j in events.too_old] == [job.id]
    assert await _state_is(world, job.id, "failed")
    assert await _used(world) == 0
    assert (await world.store.stats()).failures_today == {"expired": 1}
    await again.stop(0)


async def test_cancel_stops_a_running_job_and_refunds_it(world: World) -> None:
    world.oai.queue_faults([Fault.hang(30)])
    runner = world.runner()
    await runner.start(Recorder(world.store))
    job = await runner.submit(ORIGIN, _request())
    await _called(world)
    assert await runner.cancel(job.id)
    assert await _state_is(world, job.id, "cancelled")
    assert runner.running == 0 and await _used(world) == 0
    assert not await runner.cancel(job.id)  # already over
    assert (await world.store.stats()).failures_today == {"cancelled": 1}
    await runner.stop(0)


async def test_cancel_ends_a_stored_job_that_is_not_running(world: World) -> None:
    runner = world.runner()
    await runner.stop(0)  # stopping: submitted jobs are only stored
    await runner.start(Recorder(world.store))
    job = await runner.submit(ORIGIN, _request())
    assert await runner.cancel(job.id)
    assert await _state_is(world, job.id, "cancelled")
    assert await _used(world) == 0


class Broken(Recorder):
    async def deliver(self, job: Job, result: ImagesResult, *, acknowledged: Any) -> Delivered:
        raise RuntimeError("a bug on the Telegram side")


async def test_an_unexpected_failure_is_told_and_refunded(world: World) -> None:
    events = Broken(world.store)
    runner = world.runner()
    await runner.start(events)
    job = await runner.submit(ORIGIN, _request())
    await _until(lambda: _state_is(world, job.id, "failed"))
    assert [kind for _, kind in events.failures] == ["RuntimeError"]
    assert await _used(world) == 0
    await runner.stop(1)
