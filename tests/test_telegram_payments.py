"""The payments module of the Telegram emulator is as strict as the real Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import telegram
from telegram import LabeledPrice
from telegram.error import BadRequest

from tests.emulators.telegram_api import TelegramEmulator

TOKEN = "123456:TEST-token"
USER = 1001


@pytest.fixture
async def bot(tg: TelegramEmulator) -> AsyncIterator[telegram.Bot]:
    client = telegram.Bot(TOKEN, base_url=f"{tg.url}/bot", base_file_url=f"{tg.url}/file/bot")
    async with client:
        yield client


async def invoice(bot: telegram.Bot, **overrides: object) -> telegram.Message:
    fields: dict[str, object] = {
        "chat_id": USER,
        "title": "10 pictures",
        "description": "10 pictures from this bot",
        "payload": "pack:10:50",
        "currency": "XTR",
        "prices": [LabeledPrice("Pictures", 50)],
    }
    fields.update(overrides)
    return await bot.send_invoice(**fields)  # type: ignore[arg-type]


async def test_a_valid_stars_invoice_is_sent(bot: telegram.Bot, tg: TelegramEmulator) -> None:
    sent = await invoice(bot, provider_token="")
    assert sent.invoice is not None
    assert (sent.invoice.currency, sent.invoice.total_amount) == ("XTR", 50)
    [recorded] = tg.payments.invoices(USER)
    assert recorded["_payload"] == "pack:10:50"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"provider_token": "284685063:TEST:abc"}, "PROVIDER_TOKEN_INVALID"),
        ({"currency": "USD"}, "CURRENCY_INVALID"),
        ({"prices": [LabeledPrice("a", 10), LabeledPrice("b", 40)]}, "STARS_INVOICE_INVALID"),
        ({"prices": [LabeledPrice("a", 0)]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"prices": [LabeledPrice("a", 10_001)]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"title": "x" * 33}, "TITLE_INVALID"),
        ({"description": ""}, "DESCRIPTION_INVALID"),
        ({"payload": "p" * 129}, "PAYLOAD_INVALID"),
    ],
)
async def test_invalid_invoices_are_refused(
    bot: telegram.Bot, overrides: dict[str, object], error: str
) -> None:
    with pytest.raises(BadRequest, match=error.capitalize()[:8]):
        await invoice(bot, **overrides)


async def test_pre_checkout_answered_once_within_the_timeout(
    bot: telegram.Bot, tg: TelegramEmulator
) -> None:
    await invoice(bot)
    [sent_invoice] = tg.payments.invoices(USER)
    query_id = tg.payments.pre_checkout(user_id=USER, invoice=sent_invoice)
    with pytest.raises(BadRequest, match="Error_message_empty"):
        await bot.answer_pre_checkout_query(query_id, ok=False)
    assert await bot.answer_pre_checkout_query(query_id, ok=True)
    with pytest.raises(BadRequest, match="too old"):
        await bot.answer_pre_checkout_query(query_id, ok=True)
    assert tg.payments.answer(query_id).ok is True
    tg.payments.timeout = 0.2
    late = tg.payments.pre_checkout(user_id=USER, invoice=sent_invoice)
    await asyncio.sleep(0.3)
    with pytest.raises(BadRequest, match="too old"):
        await bot.answer_pre_checkout_query(late, ok=True)
    with pytest.raises(AssertionError, match="did not answer"):
        await tg.payments.wait_answer(late)


async def test_refund_only_a_known_charge_of_that_user_and_only_once(
    bot: telegram.Bot, tg: TelegramEmulator
) -> None:
    charge = tg.payments.pay(user_id=USER, chat_id=USER, payload="pack:10:50", total_amount=50)
    with pytest.raises(BadRequest, match="Charge_not_found"):
        await bot.refund_star_payment(USER + 1, charge)
    with pytest.raises(BadRequest, match="Charge_not_found"):
        await bot.refund_star_payment(USER, "stxNOPE")
    assert await bot.refund_star_payment(USER, charge)
    with pytest.raises(BadRequest, match="Charge_already_refunded"):
        await bot.refund_star_payment(USER, charge)
    assert [c.charge_id for c in tg.payments.refunds] == [charge]
    [update] = [u for u in tg.pending_updates if "message" in u]
    assert update["message"]["successful_payment"]["telegram_payment_charge_id"] == charge
