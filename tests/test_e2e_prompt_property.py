"""Property, end to end: whatever prose a user types after /image is the prompt the API gets.

Hypothesis drives the running bot (the real Application over the loopback emulators) with a
bounded number of prompts made of words and punctuation, over one line or several. The bot runs
on its own event loop in a thread for the whole test, so each example is one message and one
images request, and a failing prompt is shrunk to a small one.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

from hypothesis import given, settings

from bot.app import running
from bot.config import load_settings
from tests.conftest import base_env
from tests.emulators.openai_images import OpenAIEmulator, render_picture
from tests.emulators.telegram_api import TelegramEmulator
from tests.prose import prose

FIRST_USER = 70_000
EXAMPLES = 30
WAIT = 15.0


def test_any_prose_prompt_reaches_the_images_api_verbatim(
    tg: TelegramEmulator, oai: OpenAIEmulator, tmp_path: Path
) -> None:
    env = base_env(tg, oai, tmp_path / "data")
    env.update(LOG_LEVEL="WARNING", STATUS_MESSAGE_DELAY_SECONDS="60")
    oai.image_bytes = render_picture(16, 16)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bot", daemon=True)
    thread.start()
    bot = running(load_settings(env))
    started = False
    try:
        asyncio.run_coroutine_threadsafe(bot.__aenter__(), loop).result(timeout=WAIT)
        started = True
        users = itertools.count(FIRST_USER)

        @settings(max_examples=EXAMPLES, deadline=None, database=None)
        @given(prose())
        def typed_prompt_is_sent(prompt: str) -> None:
            before = len(oai.api_requests)
            user = next(users)  # one user each: no per-user cap between examples
            tg.send_message(chat_id=user, user_id=user, text=f"/image {prompt}")
            received = oai.wait_for_requests(before + 1, timeout=WAIT)
            assert received[before].fields["prompt"] == prompt

        typed_prompt_is_sent()
        assert len(oai.api_requests) >= EXAMPLES
        assert oai.invalid_requests == []
    finally:
        if started:
            stop = bot.__aexit__(None, None, None)
            asyncio.run_coroutine_threadsafe(stop, loop).result(timeout=WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()
