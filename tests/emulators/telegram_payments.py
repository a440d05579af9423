"""Telegram Stars payments for the emulated Bot API: sendInvoice, answerPreCheckoutQuery,
refundStarPayment, and test helpers that play the buyer (pre-checkout and successful payment).

As strict as the real API where a bot can get it wrong (Bot API "Payments" and "Telegram Stars"):

* ``sendInvoice``: title 1-32 characters, description 1-255, payload 1-128 bytes; currency
  ``XTR`` (digital goods are sold in Stars only) with an empty or absent ``provider_token`` and
  exactly one price, a whole number of Stars from 1 to 10,000.
* ``answerPreCheckoutQuery``: only for a live query, once, within 10 seconds of it being sent
  (`PRE_CHECKOUT_TIMEOUT`); ``error_message`` is required when ``ok`` is false. A query not
  answered in time is declined, and no payment follows.
* ``refundStarPayment``: only a charge of that user, only once.

`TelegramPayments` is attached to a `TelegramEmulator` as ``tg.payments``; tests call
`checkout` (or `pre_checkout` and `pay` separately) and inspect `answers` and `refunds`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.emulators.telegram_api import SentMessage, TelegramEmulator

JSON = dict[str, Any]
Handler = Callable[[JSON, dict[str, Any]], Any]

PRE_CHECKOUT_TIMEOUT = 10.0
MAX_STARS = 10_000
_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"


@dataclass
class PreCheckout:
    """A pre-checkout query sent to the bot, and how (and when) the bot answered it."""

    id: str
    user_id: int
    chat_id: int
    payload: str
    currency: str
    total_amount: int
    sent_at: float
    ok: bool | None = None
    error_message: str | None = None
    answered_at: float | None = None


@dataclass
class Charge:
    """A completed Stars payment the bot may refund."""

    charge_id: str
    user_id: int
    total_amount: int
    refunded: bool = False


class TelegramPayments:
    """Payment methods and buyer helpers for one emulator (state guarded by its lock)."""

    def __init__(self, tg: TelegramEmulator, *, timeout: float = PRE_CHECKOUT_TIMEOUT) -> None:
        self._tg = tg
        self.timeout = timeout
        self._queries: dict[str, PreCheckout] = {}
        self._charges: dict[str, Charge] = {}
        self.refunds: list[Charge] = []

    def handlers(self) -> dict[str, Handler]:
        """Return the Bot API methods this module serves, keyed by lower-case name."""
        return {
            "sendinvoice": self._m_sendInvoice,
            "answerprecheckoutquery": self._m_answerPreCheckoutQuery,
            "refundstarpayment": self._m_refundStarPayment,
        }

    # -- the buyer's side (test helpers) ---------------------------------------------------------

    def invoices(self, chat_id: int) -> list[SentMessage]:
        """Return the invoices the bot sent in a chat, in order."""
        return [m for m in self._tg.sent_messages(chat_id) if "invoice" in m.message]

    def pre_checkout(
        self,
        *,
        user_id: int,
        invoice: SentMessage,
        total_amount: int | None = None,
        payload: str | None = None,
        language_code: str = "en",
    ) -> str:
        """Send the bot a pre_checkout_query for an invoice (fields overridable); return its id."""
        from tests.emulators.telegram_api import _user

        details = invoice.message["invoice"]
        query = PreCheckout(
            id=str(secrets.randbelow(10**18)),
            user_id=user_id,
            chat_id=invoice.chat_id,
            payload=payload if payload is not None else invoice.message["_payload"],
            currency=str(details["currency"]),
            total_amount=total_amount if total_amount is not None else details["total_amount"],
            sent_at=time.monotonic(),
        )
        with self._tg._cond:
            self._queries[query.id] = query
        self._tg.push_update(
            {
                "pre_checkout_query": {
                    "id": query.id,
                    "from": _user(user_id, first_name="Tester", language_code=language_code),
                    "currency": query.currency,
                    "total_amount": query.total_amount,
                    "invoice_payload": query.payload,
                }
            }
        )
        return query.id

    def answer(self, query_id: str) -> PreCheckout:
        """Return a pre-checkout query with the bot's answer so far."""
        with self._tg._cond:
            return self._queries[query_id]

    async def wait_answer(self, query_id: str) -> PreCheckout:
        """Wait (at most the 10 s Telegram waits) for the bot to answer a pre-checkout query."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            query = self.answer(query_id)
            if query.ok is not None:
                return query
            await asyncio.sleep(0.01)
        raise AssertionError(f"the bot did not answer pre-checkout query {query_id} in time")

    def pay(
        self,
        *,
        user_id: int,
        chat_id: int,
        payload: str,
        total_amount: int,
        charge_id: str | None = None,
    ) -> str:
        """Send the bot a successful_payment message (again, with the same `charge_id`)."""
        from tests.emulators.telegram_api import _user

        charge = charge_id or f"stxTEST{secrets.token_hex(12)}"
        user = _user(user_id, first_name="Tester", language_code="en")
        with self._tg._cond:
            self._charges.setdefault(
                charge, Charge(charge_id=charge, user_id=user_id, total_amount=total_amount)
            )
            self._tg._register_chat(chat_id, "private", user)
            message = self._tg._new_message(
                chat_id,
                {
                    "from": user,
                    "successful_payment": {
                        "currency": "XTR",
                        "total_amount": total_amount,
                        "invoice_payload": payload,
                        "telegram_payment_charge_id": charge,
                        "provider_payment_charge_id": "",
                    },
                },
            )
        self._tg.push_update({"message": message})
        return charge

    async def checkout(self, *, user_id: int, invoice: SentMessage) -> str | None:
        """Play a whole purchase: pre-checkout, then the payment if the bot accepted it."""
        query = await self.wait_answer(self.pre_checkout(user_id=user_id, invoice=invoice))
        if not query.ok:
            return None
        return self.pay(
            user_id=user_id,
            chat_id=query.chat_id,
            payload=query.payload,
            total_amount=query.total_amount,
        )

    # -- Bot API methods -------------------------------------------------------------------------

    def _m_sendInvoice(self, params: JSON, files: dict[str, Any]) -> JSON:
        from tests.emulators.telegram_api import _bad

        with self._tg._cond:
            chat = self._tg._chat(params.get("chat_id"))
        self._tg._check_blocked(chat)
        title = str(params.get("title") or "")
        description = str(params.get("description") or "")
        payload = str(params.get("payload") or "")
        if not 1 <= len(title) <= 32:
            raise _bad("TITLE_INVALID")
        if not 1 <= len(description) <= 255:
            raise _bad("DESCRIPTION_INVALID")
        if not 1 <= len(payload.encode("utf-8")) <= 128:
            raise _bad("PAYLOAD_INVALID")
        currency = params.get("currency")
        if currency != "XTR":
            raise _bad("CURRENCY_INVALID: digital goods must be sold in Telegram Stars (XTR)")
        if params.get("provider_token") not in (None, ""):
            raise _bad("PROVIDER_TOKEN_INVALID: payments in Telegram Stars take no provider")
        prices = params.get("prices")
        if not isinstance(prices, list) or len(prices) != 1:
            raise _bad("STARS_INVOICE_INVALID: an invoice in Telegram Stars has exactly one price")
        price = prices[0]
        amount = price.get("amount") if isinstance(price, dict) else None
        if not isinstance(price, dict) or not str(price.get("label") or ""):
            raise _bad("can't parse prices JSON object")
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_STARS:
            raise _bad("CURRENCY_TOTAL_AMOUNT_INVALID")
        fields: JSON = {
            "invoice": {
                "title": title,
                "description": description,
                "start_parameter": "",
                "currency": currency,
                "total_amount": amount,
            },
        }
        fields.update(self._tg._reply_fields(chat.data["id"], params))
        fields.update(self._tg._markup_fields(params))
        message = self._tg._bot_message(chat, fields)
        # The payload is not part of the Message object; kept aside for the buyer's helpers.
        sent = dict(message)
        self._tg._record_sent("sendInvoice", sent)
        sent["_payload"] = payload
        return message

    def _m_answerPreCheckoutQuery(self, params: JSON, files: dict[str, Any]) -> bool:
        from tests.emulators.telegram_api import _bad

        query_id = str(params.get("pre_checkout_query_id") or "")
        ok = params.get("ok")
        if not isinstance(ok, bool):
            raise _bad("ok must be a boolean")
        error = params.get("error_message")
        if not ok and not str(error or "").strip():
            raise _bad("ERROR_MESSAGE_EMPTY")
        now = time.monotonic()
        with self._tg._cond:
            query = self._queries.get(query_id)
            if query is None or query.ok is not None or now - query.sent_at > self.timeout:
                raise _bad(_TOO_OLD)
            query.ok = ok
            query.error_message = None if ok else str(error)
            query.answered_at = now
        return True

    def _m_refundStarPayment(self, params: JSON, files: dict[str, Any]) -> bool:
        from tests.emulators.telegram_api import _bad

        charge_id = str(params.get("telegram_payment_charge_id") or "")
        user_id = params.get("user_id")
        with self._tg._cond:
            charge = self._charges.get(charge_id)
            if charge is None or charge.user_id != user_id:
                raise _bad("CHARGE_NOT_FOUND")
            if charge.refunded:
                raise _bad("CHARGE_ALREADY_REFUNDED")
            charge.refunded = True
            self.refunds.append(charge)
        return True
