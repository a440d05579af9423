"""Print every figure of issue #9's table for the small and the realistic picture.

Run by hand from the repository root (not a test):

    .venv/bin/python bench/issue9.py            # about 4 minutes
    .venv/bin/python bench/issue9.py --quick    # about 2 minutes: fewer sequential requests
    .venv/bin/python bench/issue9.py --profile out.prof   # cProfile of the bot (sequential runs)

The bot runs as `python -m bot` (its own process, so its CPU time and RSS are its own) against the
loopback emulators of tests/emulators/, which run in this process. For each picture (the
emulator's small flat 1024x1024 PNG and a photo-like noisy 1024x1024 PNG of about 1.8 MB) and each
answer shape (`b64_json` and `url`):

- start-up: from `Popen` to the first getUpdates request reaching the Telegram emulator;
- idle RSS once it polls;
- overhead per picture, instant backend: from the getUpdates answer carrying the update to the
  sendPhoto request fully received (median of the sequential run), and bot CPU per picture
  (utime+stime of the bot process over the run ÷ pictures);
- 50 users at once, 2 s backend, default settings: wall ÷ 2 s, peak RSS (VmRSS sampled every
  10 ms) and bot CPU per picture;
- 200 users at once, 2 s backend, the concurrency cap lifted (MAX_CONCURRENT_GENERATIONS=1000):
  the same.

Everything else is the production default (status messages after 8 s, LOG_LEVEL=INFO).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import QueuedTelegram, TimedOpenAI, photo_png, send_burst  # noqa: E402
from tests.conftest import API_KEY, TOKEN, base_env  # noqa: E402
from tests.emulators.openai_images import OpenAIEmulator, render_picture  # noqa: E402
from tests.emulators.telegram_api import SentMessage  # noqa: E402

PROMPT = "/image yellow alpaca 1024x1024"
BACKEND_DELAY = 2.0
WAIT = 120.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def realistic_png() -> bytes:
    """Return a noisy photo-like 1024x1024 RGB PNG of about 1.8 MB."""
    return photo_png(15)


class CachedOpenAI(TimedOpenAI):
    """The images emulator (timed), answering b64_json from one cached body (not ours to pay)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cache: dict[tuple[str, int], bytes] = {}
        self._cache_lock = threading.Lock()

    def _success(self, endpoint: str, body: Any, fault: Any) -> Any:
        if self.answer_with == "url" or fault is not None:
            return super()._success(endpoint, body, fault)
        key = (str(body.get("size")), id(self.image_bytes))
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is None:
            response = super()._success(endpoint, body, fault)
            with self._cache_lock:
                self._cache[key] = response.body
            return response
        from aiohttp import web

        return web.Response(body=cached, content_type="application/json")


def cpu_seconds(pid: int) -> float:
    """Return utime+stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    """Return a /proc/<pid>/status memory line in MiB (0 when unreadable)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Run:
    """The figures of one bot process."""

    startup: float = 0.0
    idle_rss: float = 0.0
    overhead_ms: list[float] = field(default_factory=list)
    cpu_ms_seq: float = 0.0
    bursts: dict[int, dict[str, float]] = field(default_factory=dict)


@contextlib.contextmanager
def bot_process(
    tg: QueuedTelegram, oai: OpenAIEmulator, scratch: Path, extra: dict[str, str], profile: str
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Run `python -m bot`; yield it and its start-up time to the first getUpdates."""
    data = Path(tempfile.mkdtemp(dir=scratch))
    env = base_env(tg, oai, data)
    env.pop("STATUS_MESSAGE_DELAY_SECONDS")
    env.update(LOG_LEVEL="INFO", **extra)
    full = {"PATH": os.environ.get("PATH", ""), "HOME": str(scratch), "PYTHONPATH": str(ROOT)}
    full.update(env)
    polls_before = len(tg.calls_of("getUpdates"))
    cmd = [sys.executable, "-m", "bot"]
    if profile:
        cmd = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "bot"]
    with (scratch / "bot.log").open("ab") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=data, env=full, stdout=log, stderr=log)
    try:
        deadline = started + 30
        while len(tg.calls_of("getUpdates")) == polls_before:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the bot did not poll; see its log")
            time.sleep(0.001)
        startup = tg.calls_of("getUpdates")[polls_before].at - started
        yield proc, startup
    finally:
        proc.send_signal(signal.SIGINT if profile else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def sequential(
    tg: QueuedTelegram, pid: int, *, count: int, warmup: int
) -> tuple[list[float], float]:
    """Send /image one at a time; return overheads (ms) and bot CPU per picture (ms)."""
    overheads: list[float] = []
    cpu_start = 0.0
    for i in range(warmup + count):
        if i == warmup:
            cpu_start = cpu_seconds(pid)
        tg.wait_long_poll()
        update = tg.send_message(chat_id=1001, user_id=1001, text=PROMPT)
        photo = tg.wait_photo(1001, update["message"]["message_id"], timeout=WAIT)
        if i >= warmup:
            answered = tg.answered_at()[int(update["update_id"])]
            overheads.append((photo.received_at - answered) * 1000)
        time.sleep(0.05)  # the store writes after the photo
    cpu = (cpu_seconds(pid) - cpu_start) * 1000 / count
    return overheads, cpu


def burst(tg: QueuedTelegram, oai: CachedOpenAI, pid: int, users: int) -> dict[str, float]:
    """Inject one /image from each of `users` users at once; return wall ÷ 2 s, RSS, CPU.

    `backend_ratio` is the same up to the last images answer: what the generation limit allows,
    before Telegram's flood control (about 30 messages a second) spreads out the uploads.
    """
    tg.wait_long_poll()
    tg.drain()
    cpu_start = cpu_seconds(pid)
    peak = 0.0

    def sample() -> None:
        nonlocal peak
        peak = max(peak, rss_mib(pid))

    def refuse_documents(sent: SentMessage) -> None:
        if sent.kind == "document":
            raise RuntimeError("the bot sent a document instead of a photo")

    started, last = send_burst(
        tg,
        range(5001, 5001 + users),
        poll=0.01,
        wait=WAIT,
        on_tick=sample,
        on_other=refuse_documents,
    )
    time.sleep(1.0)  # the writes after the photos, then read the CPU
    peak = max(peak, rss_mib(pid))
    wall = last - started
    with oai._timings_lock:
        answered = max(end for _, start, end in oai.timings if start >= started)
    return {
        "ratio": wall / BACKEND_DELAY,
        "backend_ratio": (answered - started) / BACKEND_DELAY,
        "wall": wall,
        "peak_rss": peak,
        "cpu_ms": (cpu_seconds(pid) - cpu_start) * 1000 / users,
    }


def measure(
    tg: QueuedTelegram,
    oai: CachedOpenAI,
    scratch: Path,
    *,
    picture: bytes,
    answer_with: str,
    count: int,
    big: int,
    profile: str,
    extra: dict[str, str],
) -> Run:
    """Run every figure for one picture and answer shape (two bot processes)."""
    oai.image_bytes = picture
    oai.answer_with = answer_with
    run = Run()
    oai.delay = 0.0
    with bot_process(tg, oai, scratch, extra, profile) as (proc, startup):
        run.startup = startup
        tg.wait_long_poll()
        time.sleep(0.5)
        run.idle_rss = rss_mib(proc.pid)
        run.overhead_ms, run.cpu_ms_seq = sequential(tg, proc.pid, count=count, warmup=5)
        oai.delay = BACKEND_DELAY
        try:
            run.bursts[50] = burst(tg, oai, proc.pid, 50)
        finally:
            oai.delay = 0.0
    if big:
        oai.delay = BACKEND_DELAY
        try:
            lifted = {**extra, "MAX_CONCURRENT_GENERATIONS": "1000"}
            with bot_process(tg, oai, scratch, lifted, "") as (proc, _):
                run.bursts[big] = burst(tg, oai, proc.pid, big)
        finally:
            oai.delay = 0.0
    oai.reset()
    return run


def main() -> int:
    """Run the figures and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 sequential requests, not 100")
    parser.add_argument("--users", type=int, default=200, help="the big burst (0: skip it)")
    parser.add_argument("--profile", default="", help="cProfile the sequential bot into FILE")
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the bot's environment (repeat)"
    )
    parser.add_argument("--only", default="", help="run one column: e.g. 'realistic b64_json'")
    args = parser.parse_args()
    count = 30 if args.quick else 100
    extra = dict(item.split("=", 1) for item in args.env)
    began = time.monotonic()
    pictures = {"small": render_picture(1024, 1024), "realistic": realistic_png()}
    print(
        "Pictures (1024x1024 PNG): "
        + ", ".join(f"{k} {len(v) / 1e6:.3f} MB" for k, v in pictures.items())
    )
    print(
        f"Settings: production defaults (status messages after 8 s, LOG_LEVEL=INFO, "
        f"MAX_CONCURRENT_GENERATIONS default) except the {args.users}-user burst "
        f"(MAX_CONCURRENT_GENERATIONS=1000); {count} sequential requests after 5 warm-up; "
        f"backend delay {BACKEND_DELAY:g} s for bursts; {os.cpu_count()} cores shared with the "
        f"emulators. Extra environment: {extra or 'none'}.",
        flush=True,
    )
    results: dict[tuple[str, str], Run] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bot-bench9-") as tmp,
        QueuedTelegram(TOKEN) as tg,
        CachedOpenAI(api_key=API_KEY) as oai,
    ):
        for name, picture in pictures.items():
            for answer_with in ("b64_json", "url"):
                if args.only and args.only != f"{name} {answer_with}":
                    continue
                print(
                    f"[{time.monotonic() - began:4.0f} s] {name} picture, {answer_with} ...",
                    flush=True,
                )
                profile = args.profile if (name, answer_with) == ("realistic", "b64_json") else ""
                results[(name, answer_with)] = measure(
                    tg,
                    oai,
                    Path(tmp),
                    picture=picture,
                    answer_with=answer_with,
                    count=count,
                    big=args.users,
                    profile=profile,
                    extra=extra,
                )
        invalid = oai.invalid_requests
    print()
    cols = list(results)
    head = "".join(f"{f'{n} {a}':>22}" for n, a in cols)
    print(f"{'figure':<52}{head}")

    def row(label: str, fmt: Any) -> None:
        print(f"{label:<52}" + "".join(f"{fmt(results[c]):>22}" for c in cols))

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    row("overhead per picture, instant backend (median ms)", lambda r: f"{med(r.overhead_ms):.1f}")
    row("  p90 ms", lambda r: f"{statistics.quantiles(r.overhead_ms, n=10)[8]:.1f}")
    row("bot CPU per picture, one at a time (ms)", lambda r: f"{r.cpu_ms_seq:.1f}")
    row("50 users, 2 s backend, defaults: wall / 2 s", lambda r: f"{r.bursts[50]['ratio']:.2f}")
    row("  up to the last images answer: / 2 s", lambda r: f"{r.bursts[50]['backend_ratio']:.2f}")
    row("  bot CPU per picture (ms)", lambda r: f"{r.bursts[50]['cpu_ms']:.1f}")
    if args.users:
        u = args.users
        row(f"{u} users, cap lifted: wall / 2 s", lambda r: f"{r.bursts[u]['ratio']:.2f}")
        row(
            "  up to the last images answer: / 2 s", lambda r: f"{r.bursts[u]['backend_ratio']:.2f}"
        )
        row(f"bot CPU per picture, {u} users (ms)", lambda r: f"{r.bursts[u]['cpu_ms']:.1f}")
    row(
        f"peak RSS, 50 / {args.users} users (MiB)",
        lambda r: (
            f"{r.bursts[50]['peak_rss']:.0f} / "
            + (f"{r.bursts[args.users]['peak_rss']:.0f}" if args.users else "-")
        ),
    )
    row("idle RSS (MiB)", lambda r: f"{r.idle_rss:.0f}")
    row("start-up to the first getUpdates (s)", lambda r: f"{r.startup:.2f}")
    print(f"\nTotal {time.monotonic() - began:.0f} s.")
    if invalid:
        print(f"WARNING: {len(invalid)} requests the real API would reject: {invalid[0].problems}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
