"""A few hundred hostile /image commands through the running bot: one reply each, never a crash.

The inputs are a deterministic mix (seeded) of awkward prompts (very long, emoji, RTL, zero-width,
markup and control characters) and awkward option tails (absurd sizes and counts, conflicting or
unsupported options, options only, whitespace only). They are sent all at once from distinct users
against an instant backend that answers a tiny picture, and every one must end in exactly one
reply (a photo, an album, a document or a text), never the error handler's generic answer, and
the service must never receive a request the real API would reject.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict

from tests.emulators.openai_images import render_picture

UNEXPECTED = "Something went wrong on my side"
UNEXPECTED_RU = "что-то пошло не так"
FIRST_USER = 50_000
COUNT = 250
BATCH = 50

PROMPTS = [
    "yellow alpaca",
    "a" * 4000,
    "🦙" * 2000,
    "👨‍👩‍👧‍👦 family " * 100,
    "مرحبا بالعالم قطة صفراء",
    "שלום עולם חתול",
    "\u202eevil override\u202c text",
    "zero\u200bwidth\u200cjoin\u200dhere\ufeff",
    "\u200b",
    "<b>bold</b> <i>unclosed",
    "</i></b>",
    "<script>alert(1)</script>",
    "*bold* _it_ [link](http://x) `code` ~strike~ ||spoiler||",
    "&amp; &lt; &gt; &#0; &#x110000; &bogus;",
    "tab\there\x01\x02\x7f\x1b[31mred",
    "line one\nline two\r\nline three\u2028four\u2029five",
    "e\u0301\u0301\u0301 z\u0336a\u0336l\u0336g\u0336o\u0336",
    "{prompt} {0} %s %(x)s {{}}",
    "\\n \\x00 \\u0000",
    "x2x2x2 1024x1024x1024",
    "ｘ２ １０２４x１０２４",
    "𝓯𝓪𝓷𝓬𝔂 𝕥𝕖𝕩𝕥",
    "/image /image /image",
    "@ImageTestBot mention",
]

TAILS = [
    "",
    "1024x1024",
    "99999x99999",
    "100000x100000",
    "0x0",
    "1x1",
    "16x16",
    "3840x2160",
    "4000x4000",
    "1024×1536",
    "1024х1024",  # Cyrillic ha
    "1" * 3000 + "x1",
    "x0",
    "x1",
    "x10",
    "x11",
    "x999999999999",
    "x" + "9" * 3000,
    "x2 x3",
    "square square",
    "square 1024x1024",
    "vivid",
    "natural hd",
    "transparent",
    "auto",
    "standard low",
    "HIGH X2 SQUARE",
    "landscape portrait",
    "--square --hd x2",
    "—ar 16:9 –n 3",
    "--ar 999:1",
    "--ar 0:0",
    "16:9 1:1",
    "--hdd",
    "--size",
    "--size=",
    "--n 99",
    "--n " + "9" * 3000,
    "--quality ultra",
    "--" + "a" * 3000,
    "—" * 50,
    "-- -- --",
]

WHOLE = [
    "/image",
    "/image ",
    "/image    \n\t  ",
    "/image \u3000\u00a0",
    "/image x2",
    "/image square hd x3",
    "/image 0x0",
    "/image x999999999999",
    "/image@ImageTestBot",
    "/image@ImageTestBot  x2",
    "/imagecat",
    "/image\u200b",
    "/image " + " " * 4000,
    "/image " + "x2 " * 1300,
    "/image " + "<" * 4000,
    "/image " + "&" * 4000,
    "/image " + "1" * 4050 + "x1",  # echoing the token back would overflow a message
    "/image x" + "9" * 4080,
    "/image cat " + "7" * 2040 + "x" + "7" * 2040,
]


def hostile_commands(count: int, seed: int = 20260) -> list[str]:
    """Return `count` commands: every fixed case, then seeded combinations."""
    rng = random.Random(seed)
    commands = list(WHOLE)
    commands += [f"/image {prompt}" for prompt in PROMPTS]
    commands += [f"/image cat {tail}" for tail in TAILS]
    while len(commands) < count:
        prompt = rng.choice(PROMPTS)
        tail = " ".join(rng.sample(TAILS, rng.randint(1, 3)))
        separator = rng.choice([" ", "\n", "  ", "\t"])
        text = f"/image {prompt}{separator}{tail}"
        if len(text.encode("utf-16-le")) // 2 > 4096:  # Telegram's own message limit
            text = text[:4000]
        commands.append(text)
    return commands[:count]


async def test_every_hostile_input_gets_exactly_one_reply(make_bot) -> None:
    commands = hostile_commands(COUNT)
    assert len(set(commands)) > COUNT * 0.9
    env = {
        "MAX_INFLIGHT_PER_USER": "10",
        "MAX_CONCURRENT_GENERATIONS": "64",
        "STATUS_MESSAGE_DELAY_SECONDS": "60",
        "LOG_LEVEL": "WARNING",
    }
    async with make_bot(**env) as bot:
        bot.oai.image_bytes = render_picture(32, 32)

        def answered() -> dict[int, set[int]]:
            """Map each chat to the distinct requests that replied to its command."""
            calls: dict[int, set[int]] = defaultdict(set)
            for m in bot.tg.sent_messages():
                replied = (m.get("reply_to_message") or {}).get("message_id")
                if replied is not None and not m.deleted:
                    calls[m.chat_id].add(id(m.call))
            return calls

        sent: list[dict] = []
        deadline = time.monotonic() + 25
        for start in range(0, COUNT, BATCH):
            batch = [
                bot.send(text, user_id=FIRST_USER + i, language_code=("en", "ru", None)[i % 3])
                for i, text in enumerate(commands[start : start + BATCH], start=start)
            ]
            sent.extend(batch)
            while time.monotonic() < deadline:
                calls = answered()
                if all(calls.get(msg["chat"]["id"]) for msg in batch):
                    break
                await asyncio.sleep(0.02)
        await bot.settle(0.3)

        calls = answered()
        chats = [msg["chat"]["id"] for msg in sent]
        missing = [commands[i][:80] for i, chat in enumerate(chats) if not calls.get(chat)]
        assert missing == [], f"{len(missing)} inputs got no reply, e.g. {missing[:5]}"
        doubled = [commands[i][:80] for i, chat in enumerate(chats) if len(calls[chat]) > 1]
        assert doubled == [], f"{len(doubled)} inputs got several replies, e.g. {doubled[:5]}"

        texts = [m.text or "" for m in bot.tg.sent_messages()]
        assert not any(UNEXPECTED in text or UNEXPECTED_RU in text for text in texts)
        assert bot.oai.invalid_requests == []
        kinds = {m.kind for m in bot.tg.sent_messages()}
        assert {"photo", "text"} <= kinds  # both pictures and refusals happened
        failed = [c for c in bot.tg.calls if c.finished_at is not None and not c.ok]
        assert failed == [], [(c.method, c.response) for c in failed[:5]]

        after = bot.send("/image still alive", user_id=FIRST_USER + COUNT)
        (photo,) = await bot.replies(after, kinds=("photo",))
        assert photo.text == "still alive"
