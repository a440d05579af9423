"""Benchmark streamed previews end to end: the host's event to the picture received by Telegram.

Run by hand from the repository root (not a test; about a minute):

    .venv/bin/python bench/chat_previews.py [--rounds 12]

`python -m bot` runs in its own process (production defaults: status after 8 s, LOG_LEVEL=INFO,
STREAM_PREVIEWS=auto, PREVIEW_IMAGES=2) against the loopback emulators in this process. The images
emulator streams its real-sized picture (a noisy 1024x1024 PNG of about 2.7 MB, about 3.6 MB of
base64 an event): the first preview 0.2 s after the request, the second 3.1 s later (the bot
edits a private chat's preview at most every 3 s), the completed event 0.3 s after that. Each
round is a new user (so no chat's flood limit is in the way). Per round:

- first preview event written by the images emulator -> the sendPhoto of the preview fully
  received by the Telegram emulator (read, decoded, uploaded);
- second preview event -> its editMessageMedia fully received;
- completed event -> the editMessageMedia putting the final picture in the preview's place
  fully received (decoded, inspected, spooled, recorded, uploaded).

Both sides read CLOCK_MONOTONIC (`time.perf_counter` in the images emulator and
`time.monotonic` in the Telegram emulator are the same clock on Linux), so the times compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.issue9 import bot_process  # noqa: E402
from bench.run import QueuedTelegram  # noqa: E402
from bench.stream_previews import ms  # noqa: E402
from tests.conftest import API_KEY, TOKEN  # noqa: E402
from tests.emulators.openai_images import OpenAIEmulator  # noqa: E402
from tests.emulators.telegram_api import Call, TelegramEmulator  # noqa: E402

PROMPT = "a bench heron at dawn"
WAIT = 60.0
STREAMING = {"STREAM_PREVIEWS": "auto", "PREVIEW_IMAGES": "2"}


def _caption(call: Call) -> str:
    media = call.params.get("media")
    if isinstance(media, str):
        media = json.loads(media)
    return str((media or {}).get("caption") or "")


def _wait(tg: TelegramEmulator, method: str, match: Callable[[Call], bool]) -> Call:
    """Block until a successful call of `method` matches; return the first such."""
    return tg.wait_for(lambda c: c.method == method and c.ok and match(c), timeout=WAIT)[0]


def one_round(tg: TelegramEmulator, *, chat: int, command: int) -> tuple[Call, Call, Call]:
    """Wait for the preview photo, its edit to preview 2 and the final picture in its place."""

    def preview(c: Call) -> bool:
        return c.params.get("chat_id") == chat and (
            c.result["reply_to_message"]["message_id"] == command
        )

    def second(c: Call) -> bool:
        return c.params.get("chat_id") == chat and _caption(c).startswith("Preview 2")

    def final(c: Call) -> bool:
        return c.params.get("chat_id") == chat and _caption(c) == PROMPT

    return (
        _wait(tg, "sendPhoto", preview),
        _wait(tg, "editMessageMedia", second),
        _wait(tg, "editMessageMedia", final),
    )


def run(rounds: int) -> None:
    first: list[float] = []
    second: list[float] = []
    final: list[float] = []
    with (
        QueuedTelegram(TOKEN) as tg,  # the emulator's flood limits off; the bot's pacing stays on
        OpenAIEmulator(api_key=API_KEY) as oai,
        tempfile.TemporaryDirectory() as scratch,
    ):
        oai.big_pictures = True
        oai.partial_delays = (0.2, 3.1)
        oai.final_delay = 0.3
        with bot_process(tg, oai, Path(scratch), STREAMING, profile=""):
            for i in range(rounds + 1):  # the first round warms the connections and the pools
                user = 7001 + i
                update = tg.send_message(chat_id=user, user_id=user, text=f"/image {PROMPT}")
                command = update["message"]["message_id"]

                preview, edit, done = one_round(tg, chat=user, command=command)
                stream = oai.wait_for_stream_end(i, timeout=WAIT)
                assert stream.outcome == "completed", stream
                assert len(stream.partial_sent_at) == 2 and stream.final_sent_at is not None
                if i == 0:
                    size = len(preview.files[next(iter(preview.files))].data)
                    print(f"preview upload: {size} bytes (1024x1024 PNG)")
                    continue
                first.append(preview.at - stream.partial_sent_at[0])
                second.append(edit.at - stream.partial_sent_at[1])
                final.append(done.at - stream.final_sent_at)
    print(f"{rounds} rounds, gpt-image-2, PREVIEW_IMAGES=2, python -m bot in a subprocess")
    print(f"first preview event -> preview photo received:       {ms(first)}")
    print(f"second preview event -> its editMessageMedia received: {ms(second)}")
    print(f"completed event -> final picture received (edit):     {ms(final)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    run(parser.parse_args().rounds)


if __name__ == "__main__":
    main()
