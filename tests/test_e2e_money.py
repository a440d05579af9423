"""Issue 13 end to end: what pictures cost, a daily budget that holds, pictures paid with Stars.

Every test drives the real Application over the loopback Telegram and images emulators (the
images emulator answers GPT image models with realistic `usage`; the Telegram emulator's payments
module plays the buyer) and asserts on what the emulators and the store saw.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from tests.conftest import ADMIN, USER, Harness
from tests.emulators.openai_images import Fault
from tests.emulators.telegram_api import SentMessage

STATUS = ("🎨", "⏳")
STARS = {"STARS_PER_IMAGE": "5", "STAR_PACKS": "2,10", "ADMIN_USER_IDS": str(ADMIN)}

# Official prices in nano-dollars per token (text in, image out): $1 per 1M tokens = 1,000.
OFFICIAL = {
    "gpt-image-2": (5_000, 30_000),
    "gpt-image-1.5": (5_000, 32_000),
    "gpt-image-1": (5_000, 40_000),
    "gpt-image-1-mini": (2_000, 8_000),
    "chatgpt-image-latest": (5_000, 32_000),
}


async def answer(bot: Harness, msg: dict[str, Any], *, timeout: float = 10.0) -> SentMessage:
    """Wait (bounded) for the photo or final text that answers `msg`."""
    deadline = time.monotonic() + timeout
    wanted, chat = msg["message_id"], msg["chat"]["id"]
    while time.monotonic() < deadline:
        for sent in bot.tg.sent_messages(chat):
            if (sent.get("reply_to_message") or {}).get("message_id") != wanted or sent.deleted:
                continue
            if sent.kind == "photo" or not (sent.text or "").startswith(STATUS):
                return sent
        await asyncio.sleep(0.02)
    raise AssertionError(f"no answer to {msg.get('text')!r}")


async def texts_with(bot: Harness, chat_id: int, part: str, *, count: int = 1) -> list[str]:
    """Wait (bounded) until `count` bot texts in the chat contain `part`; return them."""
    found: list[str] = []
    for _ in range(400):
        found = [m.text or "" for m in bot.tg.sent_messages(chat_id) if part in (m.text or "")]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} texts with {part!r}, got {found}")


async def spent(bot: Harness, *, images: int) -> int:
    """Wait (bounded) until the store has the cost of `images` pictures; return today's cost."""
    for _ in range(400):
        today = (await bot.services.store.spend()).today
        if today.images >= images:
            return today.cost
        await asyncio.sleep(0.02)
    raise AssertionError(f"the store did not record {images} pictures")


async def buy(bot: Harness, pictures: int, *, user: int = USER) -> str:
    """Buy a pack as `user` through /buy, its button, the invoice and checkout; return charge."""
    before = len(bot.tg.payments.invoices(user))
    msg = bot.send("/buy", user_id=user)
    menu = await answer(bot, msg)
    bot.tg.press_button(chat_id=user, user_id=user, message=menu, data=f"buy:{pictures}")
    for _ in range(400):
        if len(bot.tg.payments.invoices(user)) > before:
            break
        await asyncio.sleep(0.02)
    invoice = bot.tg.payments.invoices(user)[-1]
    thanks = len([m for m in bot.tg.sent_messages(user) if "Thank you" in (m.text or "")])
    charge = await bot.tg.payments.checkout(user_id=user, invoice=invoice)
    assert charge is not None, "the bot declined a valid checkout"
    await texts_with(bot, user, "Thank you", count=thanks + 1)
    return charge


# -- cost ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "prices"), OFFICIAL.items())
async def test_cost_from_usage_for_each_gpt_image_model(
    make_bot, model: str, prices: tuple[int, int]
) -> None:
    text_price, output_price = prices
    async with make_bot(IMAGE_MODEL=model, ADMIN_USER_IDS=str(ADMIN)) as bot:
        msg = bot.send("/image cat --low")
        assert (await answer(bot, msg)).kind == "photo"
        # The emulator bills "cat" as 1 text token and a low 1024x1024 picture as 272 tokens.
        expected = 1 * text_price + 272 * output_price
        assert await spent(bot, images=1) == expected
        spend = await bot.services.store.spend()
        assert spend.today.by_model == [(model, expected, 1)]
        assert spend.all_time.top_users == [(USER, expected)]
        stats = await answer(bot, bot.send("/stats", user_id=ADMIN))
        shown = f"${expected / 1e9:.9f}".rstrip("0")
        assert f"Spent today: {shown} for 1 picture." in (stats.text or ""), stats.text
        assert f"{model} {shown} (1)" in (stats.text or "")
        assert "Last 7 days" in (stats.text or "") and "All time" in (stats.text or "")


# -- budget -------------------------------------------------------------------------------------

# gpt-image-1, "/image cat N --low 1024x1024" (5 bytes of prompt): the worst case is
# 5 * 5,000 + 272 * 40,000 = 10,905,000 n$; the emulator bills 2 text tokens, 10,890,000 n$.
WORST, ACTUAL = 10_905_000, 10_890_000


async def test_budget_burst_of_many_users_never_goes_over(make_bot) -> None:
    budget = 38_000_000
    assert 3 * WORST <= budget < 4 * WORST
    async with make_bot(
        IMAGE_MODEL="gpt-image-1", DAILY_BUDGET_USD="0.038", MAX_CONCURRENT_GENERATIONS="16"
    ) as bot:
        bot.oai.delay = 0.3
        users = [USER + i for i in range(8)]
        msgs = [bot.send(f"/image cat {i} --low 1024x1024", user_id=u) for i, u in enumerate(users)]
        answers = [await answer(bot, msg) for msg in msgs]
        photos = [a for a in answers if a.kind == "photo"]
        refusals = [a.text or "" for a in answers if a.kind == "text"]
        assert len(photos) == 3 and len(bot.oai.api_requests) == 3
        assert len(refusals) == 5
        assert all("budget" in t and "00:00 UTC" in t for t in refusals), refusals
        cost = await spent(bot, images=3)
        assert cost == 3 * ACTUAL <= budget
        # What is left cannot take another worst case: still refused, nothing sent.
        late = await answer(bot, bot.send("/image cat 9 --low 1024x1024", user_id=USER + 9))
        assert late.kind == "text" and "budget" in (late.text or "")
        assert len(bot.oai.api_requests) == 3
        assert (await bot.services.store.spend()).budget_held == 0


async def test_admins_are_told_once_at_80_and_once_at_100_percent(make_bot) -> None:
    async with make_bot(
        IMAGE_MODEL="gpt-image-1", DAILY_BUDGET_USD="0.013", ADMIN_USER_IDS=str(ADMIN)
    ) as bot:
        first = await answer(bot, bot.send("/image cat 1 --low 1024x1024"))
        assert first.kind == "photo"
        assert ACTUAL * 100 >= 13_000_000 * 80  # 84 % used
        alerts = await texts_with(bot, ADMIN, "80%")
        assert "$0.01089 of $0.013" in alerts[0], alerts
        assert not [m for m in bot.tg.sent_messages(ADMIN) if "used up" in (m.text or "")]
        for i in (2, 3, 4):
            refused = await answer(bot, bot.send(f"/image cat {i} --low 1024x1024"))
            assert "budget" in (refused.text or "")
        await texts_with(bot, ADMIN, "used up")
        await bot.settle(0.3)
        texts = [m.text or "" for m in bot.tg.sent_messages(ADMIN)]
        assert len([t for t in texts if "80%" in t]) == 1, texts
        assert len([t for t in texts if "used up" in t]) == 1, texts
        assert len(bot.oai.api_requests) == 1
        stats = await answer(bot, bot.send("/stats", user_id=ADMIN))
        assert "of $0.013" in (stats.text or ""), stats.text


# -- Telegram Stars -----------------------------------------------------------------------------


async def test_buying_a_pack_credits_it_and_the_menu_offers_it(make_bot) -> None:
    async with make_bot(**STARS) as bot:
        assert {c["command"] for c in bot.tg.commands[("default", "")]} >= {"buy", "balance"}
        msg = bot.send("/buy")
        menu = await answer(bot, msg)
        buttons = [b for row in menu["reply_markup"]["inline_keyboard"] for b in row]
        assert [b["callback_data"] for b in buttons] == ["buy:2", "buy:10"]
        assert "2 pictures for 10 ⭐" in buttons[0]["text"]
        charge = await buy(bot, 10)
        [invoice] = bot.tg.calls_of("sendInvoice")
        params = invoice.params
        assert params["currency"] == "XTR" and params.get("provider_token", "") == ""
        assert params["prices"] == [{"label": "Pictures", "amount": 50}]
        assert params["payload"] == "pack:10:50"
        [answered] = bot.tg.calls_of("answerPreCheckoutQuery")
        assert answered.params["ok"] is True
        assert await bot.services.store.credits(user_id=USER) == 10
        balance = await answer(bot, bot.send("/balance"))
        assert "Credits: 10 pictures" in (balance.text or ""), balance.text
        assert charge.startswith("stx")


async def test_checkout_accepts_only_a_current_pack_at_its_price(make_bot) -> None:
    async with make_bot(**STARS) as bot:
        bot.tg.press_button(
            chat_id=USER, user_id=USER, message=await answer(bot, bot.send("/buy")), data="buy:2"
        )
        await bot.tg.wait_for_async("sendInvoice")
        invoice = bot.tg.payments.invoices(USER)[-1]
        payments = bot.tg.payments
        for overrides in ({"payload": "pack:3:15"}, {"total_amount": 1}, {"payload": "junk"}):
            query = await payments.wait_answer(
                payments.pre_checkout(user_id=USER, invoice=invoice, **overrides)
            )
            assert query.ok is False and "no longer on sale" in (query.error_message or "")
        query = await payments.wait_answer(payments.pre_checkout(user_id=USER, invoice=invoice))
        assert query.ok is True
        assert query.answered_at is not None and query.answered_at - query.sent_at < 10
        stale = await answer(bot, bot.send("/buy"))
        bot.tg.press_button(chat_id=USER, user_id=USER, message=stale, data="buy:7")
        await bot.tg.wait_for_async("answerCallbackQuery", count=2)
        assert len(bot.tg.calls_of("sendInvoice")) == 1


async def test_duplicated_payment_is_credited_once_also_after_a_restart(make_bot) -> None:
    async with make_bot(**STARS) as bot:
        charge = await buy(bot, 2)
        bot.tg.payments.pay(
            user_id=USER, chat_id=USER, payload="pack:2:10", total_amount=10, charge_id=charge
        )
        await bot.settle(0.5)
        assert await bot.services.store.credits(user_id=USER) == 2
        assert len(await texts_with(bot, USER, "Thank you")) == 1
    async with make_bot(**STARS) as bot:  # the same DATA_DIR, a new process life
        bot.tg.payments.pay(
            user_id=USER, chat_id=USER, payload="pack:2:10", total_amount=10, charge_id=charge
        )
        await bot.settle(0.5)
        assert await bot.services.store.credits(user_id=USER) == 2
        assert len(await texts_with(bot, USER, "Thank you")) == 1
        await buy(bot, 2)
        assert await bot.services.store.credits(user_id=USER) == 4


async def test_pictures_beyond_the_free_allowance_are_paid_from_credits(make_bot) -> None:
    async with make_bot(DAILY_IMAGE_LIMIT="1", **STARS) as bot:
        store = bot.services.store
        await buy(bot, 2)
        assert (await answer(bot, bot.send("/image free cat"))).kind == "photo"
        assert await store.credits(user_id=USER) == 2
        assert (await answer(bot, bot.send("/image paid cat"))).kind == "photo"
        for _ in range(200):
            if await store.credits(user_id=USER) == 1:
                break
            await asyncio.sleep(0.02)
        assert await store.credits(user_id=USER) == 1
        refused = await answer(bot, bot.send("/image two cats x2"))
        text = refused.text or ""
        assert "needs 2 credits and you have 1" in text and "/buy" in text, text
        assert len(bot.oai.api_requests) == 2
        balance = await answer(bot, bot.send("/balance"))
        assert "0 free pictures left today out of 1" in (balance.text or ""), balance.text
        assert "Credits: 1 picture." in (balance.text or ""), balance.text


async def test_money_texts_agree_with_their_numbers_in_english_and_russian(make_bot) -> None:
    """One picture, one credit: no "1 pictures" or "1 credits", and the Russian forms by number."""
    packs = {"STARS_PER_IMAGE": "5", "STAR_PACKS": "1,2,5", "ADMIN_USER_IDS": str(ADMIN)}
    async with make_bot(DAILY_IMAGE_LIMIT="1", **packs) as bot:

        async def labels(language_code: str) -> tuple[str, list[str]]:
            menu = await answer(bot, bot.send("/buy", language_code=language_code))
            rows = menu["reply_markup"]["inline_keyboard"]
            return menu.text or "", [b["text"] for row in rows for b in row]

        intro, buttons = await labels("en")
        assert "You have 0 credits." in intro, intro
        assert buttons == ["1 picture for 5 ⭐", "2 pictures for 10 ⭐", "5 pictures for 25 ⭐"]
        intro, buttons = await labels("ru")
        assert "У вас 0 кредитов." in intro, intro
        assert buttons == ["1 картинка за 5 ⭐", "2 картинки за 10 ⭐", "5 картинок за 25 ⭐"]

        charge = await buy(bot, 1)
        [invoice] = bot.tg.calls_of("sendInvoice")
        assert invoice.params["title"] == "1 picture"
        assert invoice.params["description"].startswith("1 picture from this bot"), invoice.params
        [thanks] = await texts_with(bot, USER, "Thank you")
        assert thanks == "Thank you! 1 picture was added. You now have 1 credit.", thanks
        balance = (await answer(bot, bot.send("/balance"))).text or ""
        assert "1 free picture left today out of 1" in balance and "Credits: 1 picture." in balance
        balance = (await answer(bot, bot.send("/balance", language_code="ru"))).text or ""
        assert "Сегодня осталась 1 бесплатная картинка из 1" in balance, balance
        assert "В запасе 1 оплаченная картинка." in balance, balance

        assert (await answer(bot, bot.send("/image free cat"))).kind == "photo"
        refused = (await answer(bot, bot.send("/image two cats x2"))).text or ""
        assert "You have used your 1 free picture for today" in refused, refused
        assert "this needs 2 credits and you have 1" in refused, refused
        refused = (await answer(bot, bot.send("/image two cats x2", language_code="ru"))).text
        assert "Вы уже использовали 1 бесплатную картинку" in (refused or ""), refused
        assert "нужно 2 кредита, а у вас 1" in (refused or ""), refused
        done = (await answer(bot, bot.send(f"/refund {charge}", user_id=ADMIN))).text or ""
        assert done == f"Refunded 5 ⭐ to user {USER}; 1 credit was removed.", done

        english = [m.text or "" for m in bot.tg.sent_messages(USER)]
        wrong = [t for t in english if re.search(r"(?<![\d.])1 (pictures|credits)\b", t)]
        assert wrong == [], wrong


async def test_with_stars_and_no_free_allowance_every_picture_is_paid(make_bot) -> None:
    async with make_bot(**STARS) as bot:
        refused = await answer(bot, bot.send("/image cat"))
        assert "paid with Telegram Stars" in (refused.text or ""), refused.text
        assert bot.oai.api_requests == []
        await buy(bot, 2)
        assert (await answer(bot, bot.send("/image cat"))).kind == "photo"


async def test_failed_generation_gives_the_credits_back(make_bot) -> None:
    async with make_bot(**STARS) as bot:
        store = bot.services.store
        await buy(bot, 2)
        bot.oai.queue_faults([Fault.http(400, code="moderation_blocked")])
        failed = await answer(bot, bot.send("/image cats x2"))
        assert failed.kind == "text" and "safety" in (failed.text or "").lower()
        for _ in range(100):
            if (await store.stats()).requests_all_time >= 1:
                break
            await asyncio.sleep(0.02)
        assert await store.credits(user_id=USER) == 2
        bot.tg.blocked_users.add(USER)  # the picture is made (and billed) but cannot be sent
        bot.send("/image cat")
        await bot.tg.wait_for_async(lambda c: c.method == "sendPhoto" and c.status == 403)
        for _ in range(200):
            if (await store.spend()).today.cost > 0:
                break
            await asyncio.sleep(0.02)
        assert await store.credits(user_id=USER) == 2
        spend = (await store.spend()).today
        assert spend.cost > 0 and spend.images == 0  # what the service billed is still counted


async def test_refund_removes_the_credits_and_refuses_when_spent(make_bot) -> None:
    async with make_bot(**STARS) as bot:
        refunded = await buy(bot, 2)
        spent_pack = await buy(bot, 10)
        denied = await answer(bot, bot.send(f"/refund {refunded}"))
        assert "for the bot's admins" in (denied.text or "")
        done = await answer(bot, bot.send(f"/refund {refunded}", user_id=ADMIN))
        assert f"Refunded 10 ⭐ to user {USER}" in (done.text or ""), done.text
        [refund] = bot.tg.calls_of("refundStarPayment")
        assert refund.params["user_id"] == USER
        assert refund.params["telegram_payment_charge_id"] == refunded
        assert await bot.services.store.credits(user_id=USER) == 10
        again = await answer(bot, bot.send(f"/refund {refunded}", user_id=ADMIN))
        assert "already been refunded" in (again.text or "")
        assert (await answer(bot, bot.send("/image cat"))).kind == "photo"
        spent_text = await answer(bot, bot.send(f"/refund {spent_pack}", user_id=ADMIN))
        assert "already used" in (spent_text.text or ""), spent_text.text
        unknown = await answer(bot, bot.send("/refund nope", user_id=ADMIN))
        assert "No payment" in (unknown.text or "")
        assert len(bot.tg.calls_of("refundStarPayment")) == 1
        assert await bot.services.store.credits(user_id=USER) == 9


async def test_paysupport_terms_and_payments_off(make_bot) -> None:
    async with make_bot() as bot:
        off = await answer(bot, bot.send("/buy"))
        assert "does not sell" in (off.text or "")
        assert "buy" not in {c["command"] for c in bot.tg.commands[("default", "")]}
        support = await answer(bot, bot.send("/paysupport"))
        assert "Telegram support cannot help" in (support.text or "")
        terms = await answer(bot, bot.send("/terms", language_code="ru"))
        assert "Условия" in (terms.text or "")


async def test_a_timed_out_call_releases_credits_and_budget_together(make_bot) -> None:
    async with make_bot(IMAGE_TIMEOUT_SECONDS="0.5", DAILY_BUDGET_USD="1", **STARS) as bot:
        store = bot.services.store
        await buy(bot, 2)
        bot.oai.queue_faults([Fault.hang(5)])
        failed = await answer(bot, bot.send("/image cat x2"))
        assert "too long" in (failed.text or ""), failed.text
        for _ in range(200):
            if (await store.stats()).requests_all_time >= 1:
                break
            await asyncio.sleep(0.02)
        assert await store.credits(user_id=USER) == 2
        spend = await store.spend()
        assert spend.budget_held == 0 and spend.today.cost == 0


async def test_refund_refused_by_telegram_gives_the_credits_back(make_bot) -> None:
    async with make_bot(**STARS) as bot:
        charge = await buy(bot, 2)
        bot.tg.fail_next(
            "refundStarPayment", status=400, description="Bad Request: CHARGE_NOT_FOUND"
        )
        failed = await answer(bot, bot.send(f"/refund {charge}", user_id=ADMIN))
        assert "Telegram refused the refund" in (failed.text or ""), failed.text
        assert await bot.services.store.credits(user_id=USER) == 2
        done = await answer(bot, bot.send(f"/refund {charge}", user_id=ADMIN))
        assert "Refunded 10 ⭐" in (done.text or ""), done.text
        assert await bot.services.store.credits(user_id=USER) == 0


async def test_a_request_dearer_than_the_whole_budget_says_so(make_bot) -> None:
    async with make_bot(
        IMAGE_MODEL="gpt-image-1", DAILY_BUDGET_USD="0.013", ADMIN_USER_IDS=str(ADMIN)
    ) as bot:
        refused = await answer(bot, bot.send("/image cat --high 1024x1536 x4"))
        text = refused.text or ""
        assert "more than the bot's whole daily budget of $0.013" in text, text
        assert bot.oai.api_requests == []
        assert (await answer(bot, bot.send("/image cat --low 1024x1024"))).kind == "photo"
        await bot.settle(0.3)
        assert not [m for m in bot.tg.sent_messages(ADMIN) if "used up" in (m.text or "")]
