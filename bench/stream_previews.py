"""Benchmark streamed previews on the client side: the host's event to `on_partial`.

Run by hand from the repository root (not a test; about 15 seconds):

    .venv/bin/python bench/stream_previews.py [--rounds 20]

The loopback images emulator (in a subprocess, so neither its GIL nor its encoding counts)
streams real-sized pictures (its noisy 1024x1024 PNG of about 2.7 MB, about 3.6 MB of base64 an
event) with 2 previews 0.2 s apart and the picture 0.2 s after. Per round: from the moment the
emulator starts writing the first preview event to the moment `on_partial` is called with it
(read, SSE-decoded, JSON-parsed and base64-decoded off the loop, handed to the callback's task),
the same for the second preview, and from the completed event to `generate` returning. Both
processes read CLOCK_MONOTONIC (`time.perf_counter` on Linux), so the times compare.
The `ui` lane extends this to the preview photo received by the Telegram emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.capabilities import caps_for, resolve  # noqa: E402
from bot.images import ImagesClient, PartialImage  # noqa: E402
from bot.prompt import ImageOptions  # noqa: E402

API_KEY = "sk-bench"
MODEL = "gpt-image-2"
SERVE = """
import json, sys
from tests.emulators.openai_images import OpenAIEmulator
with OpenAIEmulator(api_key=sys.argv[1]) as emu:
    emu.big_pictures = True
    emu.partial_delays = (0.2, 0.2)
    emu.final_delay = 0.2
    print(emu.base_url, flush=True)
    for line in sys.stdin:
        streams = [
            {"partials": s.partial_sent_at, "final": s.final_sent_at, "outcome": s.outcome}
            for s in emu.streams
        ]
        emu.reset()
        print(json.dumps(streams), flush=True)
"""


@contextlib.contextmanager
def emulator() -> Iterator[subprocess.Popen[str]]:
    """Serve the images emulator from a subprocess."""
    with subprocess.Popen(
        [sys.executable, "-c", SERVE, API_KEY],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            yield process
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=10)


def streams_of(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("streams\n")
    process.stdin.flush()
    result: list[dict[str, object]] = json.loads(process.stdout.readline())
    return result


def ms(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return (
        f"median {statistics.median(values) * 1000:6.1f} ms   p90 {p90 * 1000:6.1f} ms   "
        f"max {values[-1] * 1000:6.1f} ms"
    )


async def run(rounds: int) -> None:
    description = resolve(prompt="a bench alpaca", options=ImageOptions(), caps=caps_for(MODEL))
    first: list[float] = []
    second: list[float] = []
    final: list[float] = []
    with emulator() as process:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        async with ImagesClient(base_url=base_url, api_key=API_KEY, preview_images=2) as client:
            for _ in range(rounds + 1):  # the first round warms the connection and the pools
                called: list[float] = []
                sizes: list[int] = []

                async def on_partial(
                    partial: PartialImage, called: list[float] = called, sizes: list[int] = sizes
                ) -> None:
                    called.append(time.perf_counter())
                    sizes.append(len(partial.data))

                await client.generate(description, caps_for(MODEL), on_partial=on_partial)
                returned = time.perf_counter()
                [stream] = streams_of(process)
                sent = stream["partials"]
                assert isinstance(sent, list) and len(called) == len(sent) == 2, (called, stream)
                if _ == 0:
                    print(f"preview sizes: {sizes} bytes (1024x1024 PNG)")
                    continue
                first.append(called[0] - sent[0])
                second.append(called[1] - sent[1])
                final_at = stream["final"]
                assert isinstance(final_at, float)
                final.append(returned - final_at)
    print(f"{rounds} rounds, {MODEL}, PREVIEW_IMAGES=2, emulator in a subprocess")
    print(f"first preview event -> on_partial:   {ms(first)}")
    print(f"second preview event -> on_partial:  {ms(second)}")
    print(f"completed event -> generate returns: {ms(final)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
