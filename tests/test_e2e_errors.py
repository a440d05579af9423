"""Every images-service failure kind, end to end: one clear plain-text reply, then business goes on.

Faults are scripted on the images emulator (tests/emulators/openai_images.py `Fault`); the images
client makes at most 3 attempts in all, and another POST only when the service cannot have drawn
the pictures (a 429, honouring Retry-After capped at 60 s; a quick 502/503/504; a connection that
failed before the request was sent). A 500, a garbled 200 or a connection dropped after the
request are final, like refusals, bad requests, auth errors, `insufficient_quota` and timeouts.
"""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN, OTHER_USER, USER
from tests.emulators.openai_images import Fault

UNEXPECTED = "Something went wrong on my side"
# No status message in these tests: the first text reply is the answer under test.
QUIET = {"STATUS_MESSAGE_DELAY_SECONDS": "30"}
SECOND_ADMIN = 9002


async def _still_serves(bot, user_id: int = OTHER_USER) -> None:
    """Another user's request right after a failure still gets its picture."""
    msg = bot.send("/image proof of life", user_id=user_id)
    (photo,) = await bot.replies(msg, kinds=("photo",))
    assert photo.text == "proof of life"


async def _refunded(bot) -> None:
    """Wait until the user's reservation is given back (settled just after the reply)."""
    for _ in range(100):
        usage = await bot.services.store.usage(user_id=USER, user_limit=5)
        if usage.used_today == 0:
            return
        await bot.settle(0.02)
    raise AssertionError(f"not refunded: {usage}")


def _no_unexpected(bot) -> None:
    texts = [m.text or "" for m in bot.tg.sent_messages()]
    assert not any(UNEXPECTED in text for text in texts), texts


FAILURES = [
    pytest.param(
        [Fault.http(400, code="moderation_blocked")], "safety system", 1, id="moderation_blocked"
    ),
    pytest.param(
        [Fault.http(400, code="content_policy_violation")],
        "safety system",
        1,
        id="content_policy_violation",
    ),
    pytest.param([Fault.http(400, message="Invalid size.")], "invalid", 1, id="bad_request"),
    pytest.param([503, 503, 503], "unavailable", 3, id="3x503"),
    pytest.param([500], "unavailable", 1, id="500"),
    pytest.param(["garbage"], "unavailable", 1, id="garbage"),
    pytest.param(["bad_base64"], "unavailable", 1, id="bad_base64"),
    pytest.param(["disconnect"], "unavailable", 1, id="disconnect"),
    pytest.param(
        [Fault.http(429, retry_after=0.2)] * 3, "try again in 1 s", 3, id="3x429_retry_after"
    ),
    pytest.param([Fault.http(429, retry_after=0)] * 3, "try again in 1 s", 3, id="3x429_zero"),
]


@pytest.mark.parametrize(("faults", "expected", "attempts"), FAILURES)
async def test_failure_gets_a_clear_reply(make_bot, faults, expected: str, attempts: int) -> None:
    async with make_bot(**QUIET) as bot:
        bot.oai.queue_faults(faults)
        msg = bot.send("/image stormy sea")
        text = await bot.reply_text(msg)
        assert expected in text
        assert "Traceback" not in text and "HTTP" not in text
        (call,) = [c for c in bot.tg.calls_of("sendMessage") if c.params.get("chat_id") == USER]
        assert call.params.get("parse_mode") is None  # plain text, never markup
        assert len(bot.oai.api_requests) == attempts
        assert [m for m in bot.tg.sent_messages(USER) if m.kind != "text"] == []
        await _still_serves(bot)
        _no_unexpected(bot)


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([503], id="503_then_ok"),
        pytest.param([Fault.http(429, retry_after=0)], id="429_retry_after_0_then_ok"),
        pytest.param([Fault.http(429, retry_after=1)], id="429_retry_after_1_then_ok"),
    ],
)
async def test_transient_failure_is_retried_and_the_photo_arrives(make_bot, faults) -> None:
    async with make_bot(**QUIET) as bot:
        bot.oai.queue_faults(faults)
        msg = bot.send("/image stormy sea")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.text == "stormy sea"
        requests = bot.oai.api_requests
        assert len(requests) == 2
        if isinstance(faults[0], Fault) and faults[0].retry_after == "1":
            assert requests[1].at - requests[0].at >= 0.9  # Retry-After honoured
        assert [m for m in bot.tg.sent_messages(USER) if m.kind == "text" and not m.deleted] == []


async def test_hang_past_the_timeout_says_it_took_too_long(make_bot) -> None:
    async with make_bot(IMAGE_TIMEOUT_SECONDS="1", **QUIET) as bot:
        bot.oai.queue_faults([Fault.hang(5)])
        msg = bot.send("/image stormy sea")
        text = await bot.reply_text(msg, timeout=5)
        assert "took too long" in text
        assert len(bot.oai.api_requests) == 1  # a timeout is not retried
        await _still_serves(bot)
        _no_unexpected(bot)


async def test_retries_never_outlast_the_timeout(make_bot) -> None:
    async with make_bot(IMAGE_TIMEOUT_SECONDS="1", **QUIET) as bot:
        bot.oai.queue_faults([Fault.http(429, retry_after=2)])
        msg = bot.send("/image stormy sea")
        text = await bot.reply_text(msg, timeout=5)
        # The 2 s wait would end past the 1 s deadline: the 429 itself is the answer, at once.
        assert "try again in 2 s" in text
        assert len(bot.oai.api_requests) == 1
        await _refunded(bot)
        await _still_serves(bot)
        _no_unexpected(bot)


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_error_tells_the_user_and_alerts_the_admin_once(make_bot, status) -> None:
    async with make_bot(ADMIN_USER_IDS=str(ADMIN), **QUIET) as bot:
        bot.oai.queue_faults([status, status])
        msg = bot.send("/image stormy sea")
        text = await bot.reply_text(msg)
        assert "misconfigured" in text
        assert len(bot.oai.api_requests) == 1  # not retried
        alerts = await bot.tg.wait_for_async(
            lambda c: c.method == "sendMessage" and c.params.get("chat_id") == ADMIN
        )
        assert len(alerts) == 1
        (alert,) = bot.tg.sent_messages(ADMIN)
        assert "credentials" in (alert.text or "")
        assert "sk-test" not in (alert.text or "")

        again = bot.send("/image calm sea", user_id=OTHER_USER)
        assert "misconfigured" in await bot.reply_text(again)
        await bot.settle(0.3)
        assert len(bot.tg.sent_messages(ADMIN)) == 1  # at most once an hour per kind
        await _still_serves(bot, user_id=1003)
        _no_unexpected(bot)


async def test_admin_who_blocked_the_bot_is_skipped(make_bot) -> None:
    async with make_bot(ADMIN_USER_IDS=f"{ADMIN},{SECOND_ADMIN}", **QUIET) as bot:
        bot.tg.blocked_users.add(ADMIN)
        bot.oai.queue_faults([401])
        msg = bot.send("/image stormy sea")
        assert "misconfigured" in await bot.reply_text(msg)
        await bot.tg.wait_for_async(
            lambda c: c.method == "sendMessage" and c.params.get("chat_id") == SECOND_ADMIN
        )
        refused = [
            c
            for c in bot.tg.calls_of("sendMessage")
            if c.params.get("chat_id") == ADMIN and c.finished_at is not None
        ]
        assert [c.status for c in refused] == [403]
        assert len(bot.tg.sent_messages(SECOND_ADMIN)) == 1
        await _still_serves(bot)
        _no_unexpected(bot)


async def test_insufficient_quota_is_not_retried_and_alerts_the_admin(make_bot) -> None:
    async with make_bot(ADMIN_USER_IDS=str(ADMIN), **QUIET) as bot:
        bot.oai.queue_faults(
            [Fault.http(429, code="insufficient_quota", type="insufficient_quota")] * 3
        )
        msg = bot.send("/image stormy sea")
        text = await bot.reply_text(msg)
        assert "credit" in text
        await bot.tg.wait_for_async(
            lambda c: c.method == "sendMessage" and c.params.get("chat_id") == ADMIN
        )
        (alert,) = bot.tg.sent_messages(ADMIN)
        assert "quota" in (alert.text or "")
        await bot.settle(0.3)
        assert len(bot.oai.api_requests) == 1
        bot.oai.reset()
        await _still_serves(bot)
        _no_unexpected(bot)


async def test_failure_without_admins_configured_still_replies(make_bot) -> None:
    async with make_bot(**QUIET) as bot:
        bot.oai.queue_faults([401])
        msg = bot.send("/image stormy sea")
        assert "misconfigured" in await bot.reply_text(msg)
        await _still_serves(bot)
        _no_unexpected(bot)


async def test_one_failed_call_of_a_fanned_out_request_keeps_the_other(make_bot) -> None:
    """dall-e-3 x2 where one of the two parallel calls fails: the other picture still arrives."""
    async with make_bot(IMAGE_MODEL="dall-e-3", **QUIET) as bot:
        bot.oai.queue_faults([Fault.http(400, code="content_policy_violation")])
        msg = bot.send("/image two foxes x2")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.text is not None and photo.text.startswith("two foxes")
        assert len(bot.oai.api_requests) == 2
        _no_unexpected(bot)


async def test_a_cdn_that_redirects_costs_one_generation(make_bot) -> None:
    """A `url` answer behind 302s to another host: one POST, the picture, no key to the CDN."""
    async with make_bot(**QUIET) as bot:
        bot.oai.answer_with = "url"
        bot.oai.redirect_hops = 2
        bot.oai.redirect_to = "cdn"
        msg = bot.send("/image stormy sea")
        (photo,) = await bot.replies(msg, kinds=("photo",))
        assert photo.text == "stormy sea"
        assert len(bot.oai.api_requests) == 1
        cdn = [d for d in bot.oai.downloads if d.server == "cdn"]
        assert len(cdn) == 2
        assert all("Authorization" not in d.headers for d in cdn)
        _no_unexpected(bot)


async def test_a_dead_url_is_unavailable_after_one_generation_and_refunded(make_bot) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="5", **QUIET) as bot:
        bot.oai.answer_with = "url"
        bot.oai.queue_download_faults([404, 404, 404])
        msg = bot.send("/image stormy sea")
        assert "unavailable" in await bot.reply_text(msg)
        assert len(bot.oai.api_requests) == 1  # the download was retried, never the POST
        assert len(bot.oai.downloads) == 3
        await _refunded(bot)
        await _still_serves(bot)
        _no_unexpected(bot)
