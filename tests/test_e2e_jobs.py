"""Durable jobs through the real Application: a request cut off by a stop runs at the next start.

(`python -m bot` with kill -9 and SIGTERM is in tests/test_jobs_subprocess.py.)
"""

from __future__ import annotations

import asyncio

from tests.conftest import GROUP, USER
from tests.emulators.openai_images import Fault
from tests.test_e2e_edit import downloaded_file_ids, png

RESUMED = "restarted while working on your request"


async def test_an_edit_in_a_group_is_resumed_and_downloads_its_picture_again(make_bot) -> None:
    async with make_bot(SHUTDOWN_GRACE_SECONDS="0") as bot:
        bot.oai.queue_faults([Fault.hang(60)])
        photo = bot.send("", chat_id=GROUP, photo_bytes=png())
        msg = bot.send("/edit make it night", chat_id=GROUP, reply_to=photo)
        await asyncio.to_thread(bot.oai.wait_for_requests, 1, 10.0)
    file_id = photo["photo"][-1]["file_id"]
    assert downloaded_file_ids(bot) == [file_id]
    assert not [m for m in bot.tg.sent_messages(GROUP) if m.kind == "photo"]

    async with make_bot() as bot:
        (result,) = await bot.replies(msg, kinds=("photo",), timeout=20)
        assert result.chat_id == GROUP
        assert downloaded_file_ids(bot) == [file_id, file_id]  # fetched again on resume
        edits = [r for r in bot.oai.api_requests if r.endpoint == "edits"]
        assert len(edits) == 2 and edits[-1].fields["prompt"] == "make it night"
        statuses = [m.text or "" for m in bot.tg.sent_messages(GROUP) if m.kind == "text"]
        assert any(RESUMED in text for text in statuses), statuses
        usage = await bot.services.store.usage(user_id=USER, user_limit=10)
        assert usage.used_today == 1
