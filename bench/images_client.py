"""Benchmark the images client alone on megabyte answers: time, event-loop stalls, memory.

Run by hand from the repository root (not a test; a few seconds):

    .venv/bin/python bench/images_client.py

Against the loopback images emulator serving its real-sized picture (a noisy 1024x1024 PNG of
about 2.7 MB), for b64_json answers of 1 and 4 pictures and a `url` answer of 4: the median time
of `ImagesClient.generate`, the longest the event loop went without running a 1 ms ticker during
the call (what other chats would wait), and the peak of Python allocations during one call as a
multiple of the pictures' bytes (the copies the client makes). The emulator runs in a subprocess,
so that neither its GIL nor its allocations count.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.capabilities import caps_for, resolve  # noqa: E402
from bot.images import ImagesClient  # noqa: E402
from bot.prompt import ImageOptions  # noqa: E402
from tests.emulators.openai_images import big_picture  # noqa: E402

API_KEY = "sk-bench"
ROUNDS = 7
SERVE = """
import sys
from tests.emulators.openai_images import OpenAIEmulator
with OpenAIEmulator(api_key=sys.argv[1], answer_with=sys.argv[2]) as emu:
    emu.big_pictures = True
    print(emu.base_url, flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def emulator(answer_with: str) -> Iterator[str]:
    """Serve the images emulator from a subprocess; yield its base URL."""
    with subprocess.Popen(
        [sys.executable, "-c", SERVE, API_KEY, answer_with],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None and process.stdin is not None
        try:
            yield process.stdout.readline().strip()
        finally:
            process.stdin.close()
            process.wait(timeout=10)


async def _ticker(stalls: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        stalls.append(now - last)
        last = now


async def _one(client: ImagesClient, count: int) -> tuple[float, float]:
    caps = caps_for("gpt-image-1")
    description = resolve(prompt="alpaca", options=ImageOptions(count=count), caps=caps)
    stalls: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(stalls, stop))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    result = await client.generate(description, caps)
    elapsed = time.perf_counter() - started
    stop.set()
    await ticker
    assert len(result.images) == count
    return elapsed, max(stalls)


async def _peak(client: ImagesClient, count: int) -> float:
    caps = caps_for("gpt-image-1")
    description = resolve(prompt="alpaca", options=ImageOptions(count=count), caps=caps)
    tracemalloc.start()
    try:
        result = await client.generate(description, caps)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pictures = sum(len(image.data) for image in result.images)
    return peak / pictures


async def main() -> int:
    picture = big_picture()
    print(f"Picture: 1024x1024 PNG of {len(picture) / 1e6:.2f} MB; {ROUNDS} rounds each.")
    rows = []
    for answer_with, count in (("b64_json", 1), ("b64_json", 4), ("url", 4)):
        with emulator(answer_with) as base_url:
            async with ImagesClient(base_url=base_url, api_key=API_KEY) as client:
                await _one(client, count)  # warm-up
                runs = [await _one(client, count) for _ in range(ROUNDS)]
                peak = await _peak(client, count)
        times = [elapsed for elapsed, _ in runs]
        stalls = [stall for _, stall in runs]
        rows.append(
            (
                f"{answer_with} x{count}",
                f"{statistics.median(times) * 1000:.0f} ms",
                f"{statistics.median(stalls) * 1000:.1f} ms (max {max(stalls) * 1000:.1f})",
                f"{peak:.1f}x",
            )
        )
    header = ("answer", "generate (median)", "longest loop stall", "peak alloc / pictures")
    widths = [max(len(row[i]) for row in [header, *rows]) + 2 for i in range(4)]
    for row in [header, *rows]:
        print("".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
