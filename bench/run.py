"""Benchmark the bot against the loopback emulators and print its figures next to their targets.

Run by hand from the repository root (not a test; it takes one to two minutes):

    /work/venv/bin/python bench/run.py            # everything
    /work/venv/bin/python bench/run.py --quick    # fewer requests, no profile

The bot runs in-process exactly as the e2e tests run it (`bot.app.running(settings)` against
`TelegramEmulator` and `OpenAIEmulator`), except for the RSS figure, which needs the bot alone in a
process: there `python -m bot` runs as a subprocess against the same emulators. All times are
`time.monotonic()` readings taken in this process (the emulators record theirs the same way).

Figures (see bench/README.md for what each one means exactly):
  1. bot overhead per image with an instant backend, from the getUpdates answer carrying the
     update to the sendPhoto request fully received by the Telegram emulator (nothing subtracted);
  2. 50 users at once with a 2 s backend: wall time / 2 s;
  3. peak RSS of `python -m bot` in that run;
  4. figure 1 with quotas off and on;
  5. the extra time of an /edit (reply to a user's photo) over an /image.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import io
import logging
import os
import pstats
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Opt in to python-telegram-bot's timedelta `retry_after` before it is imported (as __main__ does).
os.environ.setdefault("PTB_TIMEDELTA", "1")

from PIL import Image, ImageChops  # noqa: E402

from bot.__main__ import configure_logging  # noqa: E402
from bot.app import running  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.handlers.services import Services  # noqa: E402
from bot.store import SqliteStore  # noqa: E402
from tests.conftest import API_KEY, TOKEN, base_env  # noqa: E402
from tests.emulators.openai_images import OpenAIEmulator, render_picture  # noqa: E402
from tests.emulators.telegram_api import SentMessage, TelegramEmulator  # noqa: E402

T = TypeVar("T")

USER = 1001
BURST_USERS = range(2001, 2051)
BACKEND_DELAY = 2.0
PROMPT = "/image yellow alpaca 1024x1024"
EDIT = "/edit make the alpaca blue"
WAIT = 20.0  # the longest any single wait may take
SUBPROCESS_TAIL = 0.05  # enough for the store writes after a photo when the bot is alone

TARGET_OVERHEAD_MS = 5.0
TARGET_RATIO = 1.05
TARGET_RSS_MB = 80.0
TARGET_QUOTA_MS = 1.0


# -- pictures ---------------------------------------------------------------------------------


def photo_png(sigma: float = 8) -> bytes:
    """Return a 1024x1024 RGB PNG, about 1.5 MB (1.8 MB with sigma 15): a real picture's size."""
    side = 1024
    gx = Image.linear_gradient("L").resize((side, side))
    gy = gx.transpose(Image.Transpose.ROTATE_90)
    noise = Image.effect_noise((side, side), sigma)
    red = ImageChops.add(gx, noise, scale=2.0)
    green = ImageChops.add(gy, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT), scale=2.0)
    blue = ImageChops.difference(gx, gy)
    buffer = io.BytesIO()
    Image.merge("RGB", (red, green, blue)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# -- instrumented emulators ------------------------------------------------------------------


class TimedOpenAI(OpenAIEmulator):
    """The images emulator, also recording how long each API request took to answer."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timings: list[tuple[str, float, float]] = []  # (endpoint, start, end)
        self._timings_lock = threading.Lock()

    async def _api(self, request: Any) -> Any:
        start = time.monotonic()
        try:
            return await super()._api(request)
        finally:
            with self._timings_lock:
                self.timings.append((request.match_info["endpoint"], start, time.monotonic()))

    def backend_between(self, start: float, end: float) -> float | None:
        """Return the total answer time of the API requests that started in [start, end]."""
        with self._timings_lock:
            spans = [(s, e) for _, s, e in self.timings if start <= s <= end]
        return sum(e - s for s, e in spans) if spans else None


class QueuedTelegram(TelegramEmulator):
    """The Bot API emulator, also handing every message the bot creates to a queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created: queue.Queue[SentMessage] = queue.Queue()
        # The figures are the bot's own cost: the emulator's flood limits (one message a second
        # per chat) would make them Telegram's. The bot's own pacing (bot.flood) stays on.
        self.flood_limits = False

    def _record_sent(self, method: str, message: dict[str, Any], **kwargs: Any) -> None:
        super()._record_sent(method, message, **kwargs)
        sent = self.sent_messages(int(message["chat"]["id"]))[-1]
        self.created.put(sent)

    def drain(self) -> None:
        """Forget queued messages."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.created.get_nowait()

    def wait_photo(self, chat_id: int, message_id: int, *, timeout: float = WAIT) -> SentMessage:
        """Block until the bot sends a photo replying to (chat_id, message_id); fail on text."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no photo reply to message {message_id} in chat {chat_id}")
            try:
                sent = self.created.get(timeout=left)
            except queue.Empty:
                continue
            reply = (sent.get("reply_to_message") or {}).get("message_id")
            if sent.chat_id != chat_id or reply != message_id:
                continue
            if sent.kind == "photo":
                return sent
            if sent.kind == "document":
                raise RuntimeError("the bot sent a document instead of a photo")
            raise RuntimeError(f"the bot answered with text: {sent.text!r}")

    def wait_long_poll(self, *, timeout: float = WAIT) -> None:
        """Block until the bot has a getUpdates long poll pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            polls = self.calls_of("getUpdates")
            if polls and polls[-1].finished_at is None:
                return
            time.sleep(0.001)
        raise RuntimeError("the bot is not polling")

    def answered_at(self) -> dict[int, float]:
        """Map update_id to when the getUpdates answer carrying it was sent."""
        found: dict[int, float] = {}
        for call in self.calls_of("getUpdates"):
            for update in call.result or []:
                if call.finished_at is not None:
                    found.setdefault(int(update["update_id"]), call.finished_at)
        return found


# -- running the bot in-process ----------------------------------------------------------------


def bot_env(tg: TelegramEmulator, oai: OpenAIEmulator, data_dir: Path) -> dict[str, str]:
    """Return the environment of a production-like bot wired to the two emulators."""
    env = base_env(tg, oai, data_dir)
    env.pop("STATUS_MESSAGE_DELAY_SECONDS")  # the production default
    env.update(MAX_CONCURRENT_GENERATIONS="50", LOG_LEVEL="INFO")
    return env


@dataclass
class Bench:
    """The emulators, a scratch directory and the driver thread shared by every run."""

    tg: QueuedTelegram
    oai: TimedOpenAI
    scratch: Path
    log_file: Path
    driver: ThreadPoolExecutor
    log: Any
    pythonpath: str = str(ROOT)  # of the `python -m bot` subprocess
    runs: int = 0

    def env(self, **overrides: str) -> dict[str, str]:
        """Return a fresh bot environment (its own DATA_DIR) with overrides."""
        self.runs += 1
        env = bot_env(self.tg, self.oai, self.scratch / f"data-{self.runs}")
        env.update(overrides)
        return env

    def with_bot(
        self,
        env: dict[str, str],
        body: Callable[[Services], T],
        *,
        setup: Callable[[Services], None] | None = None,
        profile: cProfile.Profile | None = None,
    ) -> T:
        """Run the bot in this thread's event loop while `body` drives it from another thread."""
        settings = load_settings(env)
        configure_logging(settings)  # as `python -m bot` does, but into the log file
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(self.log)

        async def main() -> T:
            async with running(settings) as (_app, services):
                if setup is not None:
                    setup(services)
                loop = asyncio.get_running_loop()
                if profile is not None:
                    profile.enable()
                try:
                    return await loop.run_in_executor(self.driver, body, services)
                finally:
                    if profile is not None:
                        profile.disable()

        self.oai.delay = 0.0
        self.tg.drain()
        return asyncio.run(main())


@dataclass(frozen=True)
class Sample:
    """One request: when its update was injected and answered, and when the photo arrived."""

    kind: str
    chat_id: int
    message_id: int
    update_id: int
    injected: float
    photo_at: float


@dataclass
class Result:
    """Samples of one run, with the times the update reached the bot filled in afterwards."""

    samples: list[Sample]
    available: dict[int, float] = field(default_factory=dict)

    def overhead_ms(self, kind: str | None = None) -> list[float]:
        """Return update-available → photo-received, in ms."""
        return [
            (s.photo_at - self.available[s.update_id]) * 1000
            for s in self.samples
            if kind is None or s.kind == kind
        ]

    def from_injection_ms(self, kind: str | None = None) -> list[float]:
        """Return injection → photo-received, in ms (adds the emulator's long-poll step)."""
        return [
            (s.photo_at - s.injected) * 1000 for s in self.samples if kind is None or s.kind == kind
        ]

    def backend_ms(self, oai: TimedOpenAI, kind: str | None = None) -> list[float]:
        """Return the images emulator's answer time for each request, in ms."""
        found = []
        for s in self.samples:
            if kind is None or s.kind == kind:
                value = oai.backend_between(s.injected, s.photo_at)
                if value is not None:
                    found.append(value * 1000)
        return found


def wait_idle(services: Services, user_id: int, *, timeout: float = WAIT) -> None:
    """Block until the bot has nothing in flight for `user_id` (settle and stats written)."""
    deadline = time.monotonic() + timeout
    while services.limiter.in_flight(user_id) and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.003)


def sequential(
    bench: Bench,
    services: Services | None,
    plan: list[tuple[str, dict[str, Any]]],
    *,
    warmup: int,
) -> Result:
    """Send the planned messages one at a time, each after the previous one is fully done.

    Without `services` (the bot is a subprocess) "done" is a fixed pause after the photo.
    """
    tg = bench.tg
    samples: list[Sample] = []
    for i, (kind, message) in enumerate(plan):
        tg.wait_long_poll()
        injected = time.monotonic()
        update = tg.send_message(chat_id=USER, user_id=USER, **message)
        msg = update["message"]
        photo = tg.wait_photo(USER, msg["message_id"])
        if i >= warmup:
            samples.append(
                Sample(
                    kind=kind,
                    chat_id=USER,
                    message_id=msg["message_id"],
                    update_id=update["update_id"],
                    injected=injected,
                    photo_at=photo.received_at,
                )
            )
        if services is None:
            time.sleep(SUBPROCESS_TAIL)
        else:
            wait_idle(services, USER)
    result = Result(samples)
    result.available = tg.answered_at()
    return result


def image_plan(count: int) -> list[tuple[str, dict[str, Any]]]:
    """Return `count` identical /image commands."""
    return [("image", {"text": PROMPT})] * count


def send_burst(
    tg: QueuedTelegram,
    users: Iterable[int],
    *,
    poll: float,
    wait: float = WAIT,
    on_tick: Callable[[], None] | None = None,
    on_other: Callable[[SentMessage], None] | None = None,
) -> tuple[float, float]:
    """Send one /image from each user at once and wait for every photo (at most `wait` s).

    Return (when the burst started, when the last photo was received). `on_tick` runs on every
    poll (RSS sampling); `on_other` gets each other message that replies to a burst command.
    """
    started = time.monotonic()
    wanted: dict[tuple[int, int], float | None] = {}
    for user in users:
        update = tg.send_message(chat_id=user, user_id=user, text=PROMPT)
        wanted[(user, update["message"]["message_id"])] = None
    last = started
    deadline = started + wait
    while None in wanted.values():
        if on_tick is not None:
            on_tick()
        try:
            sent = tg.created.get(timeout=poll)
        except queue.Empty:
            if time.monotonic() > deadline:
                missing = sum(v is None for v in wanted.values())
                raise RuntimeError(f"{missing} photos missing") from None
            continue
        key = (sent.chat_id, (sent.get("reply_to_message") or {}).get("message_id"))
        if key in wanted and sent.kind == "photo":
            wanted[key] = sent.received_at
            last = max(last, sent.received_at)
        elif key in wanted and on_other is not None:
            on_other(sent)
    return started, last


def burst(
    bench: Bench, services: Services | None, *, sample_pid: int | None = None
) -> dict[str, float]:
    """Inject one /image from each of 50 users at once; return wall time and RSS samples."""
    tg = bench.tg
    tg.wait_long_poll()
    tg.drain()
    rss_peak = 0.0
    statuses = 0

    def sample() -> None:
        nonlocal rss_peak
        if sample_pid is not None:
            rss_peak = max(rss_peak, proc_status_mb(sample_pid, "VmRSS"))

    def count_status(_sent: SentMessage) -> None:
        nonlocal statuses
        statuses += 1  # a status message ("Drawing…") or, if no photo follows, an error

    started, last = send_burst(tg, BURST_USERS, poll=0.02, on_tick=sample, on_other=count_status)
    if services is not None:
        for user in BURST_USERS:
            wait_idle(services, user)
    wall = last - started
    return {
        "wall": wall,
        "ratio": wall / BACKEND_DELAY,
        "rss_during": rss_peak,
        "statuses": statuses,
    }


# -- figures ---------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    """Return the median."""
    return statistics.median(values)


def p90(values: list[float]) -> float:
    """Return the 90th percentile."""
    return statistics.quantiles(values, n=10)[8] if len(values) >= 10 else max(values)


def fig_overhead(
    bench: Bench, *, limit: str, count: int, warmup: int, picture: bytes | None
) -> Result:
    """Run `count` sequential /image requests against an instant backend."""
    bench.oai.image_bytes = picture
    env = bench.env(DAILY_IMAGE_LIMIT=limit)
    return bench.with_bot(
        env, lambda services: sequential(bench, services, image_plan(warmup + count), warmup=warmup)
    )


def fig_edit(bench: Bench, *, count: int, warmup: int, picture: bytes) -> Result:
    """Alternate /image and /edit (a reply to a user's PNG photo); return both kinds' samples."""
    bench.oai.image_bytes = picture

    def body(services: Services) -> Result:
        tg = bench.tg
        tg.wait_long_poll()
        photo = tg.send_message(chat_id=USER, user_id=USER, photo_bytes=picture)
        time.sleep(0.5)  # the bot answers a bare photo with a hint; let that pass
        wait_idle(services, USER)
        plan: list[tuple[str, dict[str, Any]]] = []
        for _ in range(warmup + count):
            plan.append(("image", {"text": PROMPT}))
            plan.append(("edit", {"text": EDIT, "reply_to": photo}))
        return sequential(bench, services, plan, warmup=2 * warmup)

    return bench.with_bot(bench.env(), body)


# -- where the time goes (evidence for bot/ changes) -------------------------------------------


@dataclass
class Spans:
    """(name, start, end) of instrumented bot calls, recorded from the bot's event loop."""

    items: list[tuple[str, float, float]] = field(default_factory=list)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Return an async wrapper of `fn` recording its span."""

        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.items.append((name, start, time.monotonic()))

        return timed


def instrument(services: Services, spans: Spans) -> Callable[[], None]:
    """Time the steps of /image (patched in place); return a function undoing it."""
    import bot.handlers.image as image

    patched: list[tuple[object, str, Any]] = []

    def patch(owner: object, attr: str, name: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # the bot changed shape; time what is still there
            return
        patched.append((owner, attr, original))
        setattr(owner, attr, spans.wrap(name, original))

    patch(image, "language_of", "handler: language_of (store read)")
    patch(image, "load_preferences", "handler: load_preferences (store read)")
    patch(services.store, "reserve", "store.reserve (write)")
    patch(services.images, "generate", "images.generate (HTTP + b64)")
    patch(image, "prepare", "delivery.prepare (inspect_image)")
    patch(services.store, "save_result", "store.save_result (write)")
    patch(image, "send_pictures", "send_pictures (upload)")
    patch(services.originals, "save", "originals.save (after photo)")
    patch(services.store, "set_result_files", "store.set_result_files (after)")
    patch(services.store, "settle", "store.settle (after)")
    patch(services.store, "record_request", "store.record_request (after)")

    def undo() -> None:
        for owner, attr, original in reversed(patched):
            if isinstance(owner, type(image)):
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)

    return undo


def fig_breakdown(bench: Bench, *, count: int, picture: bytes) -> tuple[Result, Spans, str]:
    """Run figure 1 with step timers and cProfile on the bot's event loop thread."""
    bench.oai.image_bytes = picture
    spans = Spans()
    profile = cProfile.Profile()
    undo: list[Callable[[], None]] = []

    def setup(services: Services) -> None:
        undo.append(instrument(services, spans))

    try:
        result = bench.with_bot(
            bench.env(),
            lambda services: sequential(bench, services, image_plan(10 + count), warmup=10),
            setup=setup,
            profile=profile,
        )
    finally:
        for fn in undo:
            fn()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(14)
    return result, spans, out.getvalue()


def print_breakdown(result: Result, spans: Spans) -> None:
    """Print each step's median start offset and duration relative to the update's arrival."""
    offsets: dict[str, list[float]] = {}
    durations: dict[str, list[float]] = {}
    starts = sorted((result.available[s.update_id], s.photo_at) for s in result.samples)
    for name, start, end in spans.items:
        owner = next((a for a, _ in reversed(starts) if a <= start), None)
        if owner is None or start - owner > 1.0:
            continue
        offsets.setdefault(name, []).append((start - owner) * 1000)
        durations.setdefault(name, []).append((end - start) * 1000)
    photo = median([(p - a) * 1000 for a, p in starts])
    print("\nWhere the time goes (median ms from the getUpdates answer; bot loop + its threads):")
    print(f"  {'step':<44}{'starts at':>10}{'takes':>9}")
    for name in sorted(offsets, key=lambda n: median(offsets[n])):
        print(f"  {name:<44}{median(offsets[name]):>10.2f}{median(durations[name]):>9.2f}")
    print(f"  {'photo fully received by the emulator':<44}{photo:>10.2f}")


# -- the subprocess (RSS) ------------------------------------------------------------------------


def proc_status_mb(pid: int, key: str) -> float:
    """Return a /proc/<pid>/status memory line (VmRSS, VmHWM) in MB (0 when unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


@contextlib.contextmanager
def bot_process(bench: Bench) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m bot` against the emulators; stop it with SIGTERM afterwards."""
    env = bench.env()
    full = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(bench.scratch),
        "PYTHONPATH": bench.pythonpath,
    }
    full.update(env)
    with bench.log_file.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot"], cwd=bench.scratch, env=full, stdout=log, stderr=log
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def fig_subprocess(
    bench: Bench, *, picture: bytes | None, count: int, warmup: int
) -> tuple[dict[str, float], Result]:
    """Run figure 1 against `python -m bot`, then the 50-user burst; read its memory."""
    tg = bench.tg
    bench.oai.image_bytes = picture
    bench.oai.delay = 0.0
    tg.drain()
    with bot_process(bench) as proc:
        tg.wait_long_poll()
        result = sequential(bench, None, image_plan(warmup + count), warmup=warmup)
        time.sleep(0.3)
        before = proc_status_mb(proc.pid, "VmRSS")
        bench.oai.delay = BACKEND_DELAY
        try:
            figures = burst(bench, None, sample_pid=proc.pid)
        finally:
            bench.oai.delay = 0.0
        time.sleep(0.5)
        figures.update(
            rss_before=before,
            hwm=proc_status_mb(proc.pid, "VmHWM"),
            rss_after=proc_status_mb(proc.pid, "VmRSS"),
        )
    return figures, result


def fig_reserve(data_dir: Path, *, count: int) -> tuple[list[float], list[float]]:
    """Time `store.reserve` + `settle` directly, alternating no limit and a limit, in ms."""

    async def run() -> tuple[list[float], list[float]]:
        store = await SqliteStore.open(data_dir, clock=lambda: datetime.now(UTC))
        off: list[float] = []
        on: list[float] = []
        try:
            for i in range(2 * count):
                limit, bucket = (0, off) if i % 2 else (100_000, on)
                start = time.perf_counter()
                booked = await store.reserve(
                    user_id=USER, chat_id=None, n=1, user_limit=limit, chat_limit=0, exempt=False
                )
                await store.settle(booked, delivered=1)
                bucket.append((time.perf_counter() - start) * 1000)
        finally:
            await store.close()
        return off, on

    return asyncio.run(run())


# -- main -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    """Return the table's last column."""
    return "ok" if ok else "MISSED"


def main() -> int:
    """Run every figure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, no profile")
    parser.add_argument("-n", type=int, default=200, help="measured requests for figure 1")
    parser.add_argument(
        "--try",
        dest="try_dir",
        type=Path,
        help="a directory with a sitecustomize.py patching bot/ to try a fix: imported here and "
        "put first on the subprocess's PYTHONPATH",
    )
    args = parser.parse_args()
    pythonpath = str(ROOT)
    if args.try_dir is not None:
        pythonpath = f"{args.try_dir.resolve()}{os.pathsep}{pythonpath}"
        sys.path.insert(0, str(args.try_dir.resolve()))
        import sitecustomize  # noqa: F401  (the patches apply on import)

        print(f"Trying the patches in {args.try_dir / 'sitecustomize.py'}")
    n = 60 if args.quick else args.n
    warmup = 10
    rounds = 4  # figure 1/4: quota off and on, interleaved as off, on, off, on, ...
    per_round = max(10, n // rounds)

    began = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:4.0f} s] {text}", flush=True)

    picture = photo_png()
    flat = render_picture(1024, 1024)
    print(
        f"Pictures: 1024x1024 PNG of {len(picture) / 1e6:.2f} MB (photo-like, used throughout); "
        f"the emulator's flat one is {len(flat) / 1e3:.0f} kB.",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="bot-bench-") as tmp,
        QueuedTelegram(TOKEN) as tg,
        TimedOpenAI(api_key=API_KEY) as oai,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="driver") as driver,
        contextlib.ExitStack() as stack,
    ):
        scratch = Path(tmp)
        log_file = scratch / "bot.log"
        log = stack.enter_context(log_file.open("a", encoding="utf-8"))
        bench = Bench(
            tg=tg,
            oai=oai,
            scratch=scratch,
            log_file=log_file,
            driver=driver,
            log=log,
            pythonpath=pythonpath,
        )

        off: list[Result] = []
        on: list[Result] = []
        for _ in range(rounds):
            for limit, bucket in (("0", off), ("100000", on)):
                print(
                    f"figure 1/4: {per_round} requests, DAILY_IMAGE_LIMIT={limit} ...", flush=True
                )
                bucket.append(
                    fig_overhead(
                        bench, limit=limit, count=per_round, warmup=warmup, picture=picture
                    )
                )
        say("figure 1 (context): the flat picture ...")
        flat_run = fig_overhead(bench, limit="0", count=per_round, warmup=warmup, picture=flat)
        edit_count = 20 if args.quick else 30
        say(f"figure 5: {edit_count} /image and {edit_count} /edit ...")
        edits = fig_edit(bench, count=edit_count, warmup=3, picture=picture)

        say("figure 2: 50 users at once, in-process ...")
        bench.oai.image_bytes = picture

        def burst_in_process(services: Services) -> dict[str, float]:
            bench.oai.delay = BACKEND_DELAY
            try:
                return burst(bench, services)
            finally:
                bench.oai.delay = 0.0

        fig2 = bench.with_bot(bench.env(), burst_in_process)
        say("figures 2/3: 50 users at once, python -m bot subprocess ...")
        sub_count = 30 if args.quick else 100
        fig3, sub_run = fig_subprocess(bench, picture=picture, count=sub_count, warmup=warmup)
        say("figures 1/2/3 (context): the same with the flat picture ...")
        fig3_flat, sub_flat = fig_subprocess(bench, picture=None, count=sub_count, warmup=warmup)
        say("figure 4 (direct): store.reserve + settle with and without a limit ...")
        reserve_off, reserve_on = fig_reserve(scratch / "reserve", count=100)

        breakdown = None
        if not args.quick:
            say("profile: figure 1 with step timers and cProfile ...")
            breakdown = fig_breakdown(bench, count=30, picture=picture)
        elapsed = time.monotonic() - began

        def pooled(results: list[Result], fn: Callable[[Result], list[float]]) -> list[float]:
            return [v for r in results for v in fn(r)]

        o_off = pooled(off, Result.overhead_ms)
        o_on = pooled(on, Result.overhead_ms)
        inj = pooled(off, Result.from_injection_ms)
        back = pooled(off, lambda r: r.backend_ms(oai))
        o_flat = flat_run.overhead_ms()
        img, edt = edits.overhead_ms("image"), edits.overhead_ms("edit")
        b_img, b_edt = edits.backend_ms(oai, "image"), edits.backend_ms(oai, "edit")
        diff = median(o_on) - median(o_off)
        o_sub, o_sub_flat = sub_run.overhead_ms(), sub_flat.overhead_ms()
        r_diff = median(reserve_on) - median(reserve_off)

        rows = [
            (
                f"1  overhead per image, instant backend (n={len(o_off)})",
                f"median {median(o_off):.1f} ms, p90 {p90(o_off):.1f} ms",
                f"≤ {TARGET_OVERHEAD_MS:g} ms",
                verdict(median(o_off) <= TARGET_OVERHEAD_MS),
            ),
            (
                "     of which images-emulator answer time",
                f"median {median(back):.1f} ms",
                "",
                "",
            ),
            (
                "     from injection (+ emulator's 5 ms poll step)",
                f"median {median(inj):.1f} ms, p90 {p90(inj):.1f} ms",
                "",
                "",
            ),
            (
                f"     with the flat {len(flat) // 1000} kB picture",
                f"median {median(o_flat):.1f} ms, p90 {p90(o_flat):.1f} ms",
                "",
                "",
            ),
            (
                f"1s overhead, python -m bot subprocess (n={len(o_sub)})",
                f"median {median(o_sub):.1f} ms, p90 {p90(o_sub):.1f} ms",
                f"≤ {TARGET_OVERHEAD_MS:g} ms",
                verdict(median(o_sub) <= TARGET_OVERHEAD_MS),
            ),
            (
                "     of which images-emulator answer time",
                f"median {median(sub_run.backend_ms(oai)):.1f} ms",
                "",
                "",
            ),
            (
                "     with the flat picture",
                f"median {median(o_sub_flat):.1f} ms, p90 {p90(o_sub_flat):.1f} ms",
                "",
                "",
            ),
            (
                "2  50 users, 2 s backend: wall / 2 s (in-process)",
                f"{fig2['ratio']:.3f} ({fig2['wall']:.2f} s)",
                f"≤ {TARGET_RATIO:g}",
                verdict(fig2["ratio"] <= TARGET_RATIO),
            ),
            (
                "   the same, python -m bot subprocess",
                f"{fig3['ratio']:.3f} ({fig3['wall']:.2f} s)",
                f"≤ {TARGET_RATIO:g}",
                verdict(fig3["ratio"] <= TARGET_RATIO),
            ),
            (
                "   the same, flat picture (subprocess)",
                f"{fig3_flat['ratio']:.3f} ({fig3_flat['wall']:.2f} s)",
                f"≤ {TARGET_RATIO:g}",
                verdict(fig3_flat["ratio"] <= TARGET_RATIO),
            ),
            (
                "3  peak RSS of python -m bot (VmHWM)",
                f"{fig3['hwm']:.1f} MB",
                f"≤ {TARGET_RSS_MB:g} MB",
                verdict(fig3["hwm"] <= TARGET_RSS_MB),
            ),
            (
                "     RSS before burst / max during / after",
                f"{fig3['rss_before']:.1f} / {fig3['rss_during']:.1f} / {fig3['rss_after']:.1f} MB",
                "",
                "",
            ),
            (
                "   peak RSS, flat picture",
                f"{fig3_flat['hwm']:.1f} MB (before burst {fig3_flat['rss_before']:.1f} MB)",
                f"≤ {TARGET_RSS_MB:g} MB",
                verdict(fig3_flat["hwm"] <= TARGET_RSS_MB),
            ),
            (
                "4  overhead quotas off / on (median)",
                f"{median(o_off):.2f} / {median(o_on):.2f} ms, diff {diff:+.2f} ms",
                f"≤ {TARGET_QUOTA_MS:g} ms",
                verdict(diff <= TARGET_QUOTA_MS),
            ),
            (
                "     p90 off / on",
                f"{p90(o_off):.2f} / {p90(o_on):.2f} ms",
                "",
                "",
            ),
            (
                "4d store.reserve+settle off / on (direct)",
                f"{median(reserve_off):.2f} / {median(reserve_on):.2f} ms, diff {r_diff:+.2f} ms",
                f"≤ {TARGET_QUOTA_MS:g} ms",
                verdict(r_diff <= TARGET_QUOTA_MS),
            ),
            (
                f"5  /edit vs /image overhead (median, n={len(edt)})",
                f"{median(edt):.1f} vs {median(img):.1f} ms",
                "",
                "",
            ),
            (
                "     extra time of an /edit",
                f"{median(edt) - median(img):+.1f} ms",
                "",
                "",
            ),
            (
                "     of which images-emulator answer time",
                f"{median(b_edt):.1f} vs {median(b_img):.1f} ms",
                "",
                "",
            ),
        ]
        print()
        width = max(len(r[0]) for r in rows) + 2
        vwidth = max(len(r[1]) for r in rows) + 2
        print(f"{'figure':<{width}}{'measured':<{vwidth}}{'target':<10}")
        for name, value, target, ok in rows:
            print(f"{name:<{width}}{value:<{vwidth}}{target:<10}{ok}")
        if breakdown is not None:
            print_breakdown(breakdown[0], breakdown[1])
            print(
                "\ncProfile of the bot's event-loop thread, top by own time (epoll.poll is idle "
                "waiting; in-process, C calls also absorb waits for the GIL held by the emulators):"
            )
            print("\n".join(line for line in breakdown[2].splitlines() if line.strip())[:4000])
        print(f"\nTotal bench time {elapsed:.0f} s; bot logs in the (deleted) scratch dir.")
        invalid = oai.invalid_requests
        if invalid:
            print(
                f"WARNING: {len(invalid)} requests the real API would reject: {invalid[0].problems}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
