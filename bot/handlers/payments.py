"""Pictures paid with Telegram Stars: /buy, the invoice, checkout, /balance, /refund and the
pages Telegram requires of bots selling digital goods (/paysupport, /terms).

Flow: /buy shows one button per pack (``STAR_PACKS``); a press sends an invoice (currency XTR,
no provider token, one price, payload ``pack:<pictures>:<stars>``); the pre-checkout query is
answered at once, accepting only a pack on sale now at today's price (Telegram cancels the payment
after 10 s); the ``successful_payment`` message credits the pictures once per
``telegram_payment_charge_id`` (the store's primary key, so also across restarts). An admin's
``/refund <charge id>`` takes the credits back first and then asks Telegram to refund the Stars,
giving the credits back if Telegram refuses.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, Message, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.config import Settings
from bot.handlers.access import admit, is_admin
from bot.handlers.common import command_args, language_of, reply_plain
from bot.handlers.replies import until
from bot.handlers.services import Services
from bot.store import PaymentError

logger = logging.getLogger(__name__)

CURRENCY = "XTR"
BUY = "buy"  # callback data prefix: "buy:<pictures>"
_PAYLOAD = re.compile(r"\Apack:([0-9]{1,6}):([0-9]{1,6})\Z")
_CHARGE_ID = re.compile(r"\A[A-Za-z0-9_.:-]{1,256}\Z")


@dataclass(frozen=True)
class Pack:
    """A number of pictures sold for a number of Stars."""

    pictures: int
    stars: int

    @property
    def payload(self) -> str:
        """Return the invoice payload that names this pack."""
        return f"pack:{self.pictures}:{self.stars}"


def packs_on_sale(settings: Settings) -> list[Pack]:
    """Return the packs sold now (none when Stars are off)."""
    if not settings.stars_enabled:
        return []
    return [Pack(p, p * settings.stars_per_image) for p in settings.star_packs]


def parse_payload(payload: str) -> Pack | None:
    """Read an invoice payload back into the pack it names (None when malformed)."""
    match = _PAYLOAD.fullmatch(payload)
    if match is None:
        return None
    return Pack(int(match[1]), int(match[2]))


async def buy_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Show the packs of pictures for sale as buttons."""
    request = await admit(update, services)
    if request is None:
        return
    message, user, lang = request.message, request.user, request.lang
    texts, settings = services.texts, services.settings
    packs = packs_on_sale(settings)
    if not packs:
        await reply_plain(message, texts.get(lang, "buy.off"))
        return
    credits = await services.store.credits(user_id=user.id)
    buttons = [
        [
            InlineKeyboardButton(
                texts.get(lang, "buy.pack", count=pack.pictures, stars=pack.stars),
                callback_data=f"{BUY}:{pack.pictures}",
            )
        ]
        for pack in packs
    ]
    text = texts.get(lang, "buy.intro", stars=settings.stars_per_image, count=credits)
    try:
        await message.reply_text(
            text, reply_markup=InlineKeyboardMarkup(buttons), do_quote=True, parse_mode=None
        )
    except TelegramError as exc:
        logger.warning("could not show the packs: %s", exc)


async def buy_button(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Send the invoice for the pack whose button was pressed."""
    query, user = update.callback_query, update.effective_user
    if query is None or user is None or not isinstance(query.message, Message):
        return
    lang = await language_of(services, user)
    texts = services.texts
    wanted = (query.data or "").removeprefix(f"{BUY}:")
    pack = next((p for p in packs_on_sale(services.settings) if str(p.pictures) == wanted), None)
    if pack is None:
        await query.answer(texts.get(lang, "buy.stale"), show_alert=True)
        return
    await query.answer()
    try:
        await query.get_bot().send_invoice(
            chat_id=query.message.chat_id,
            title=texts.get(lang, "invoice.title", count=pack.pictures),
            description=texts.get(lang, "invoice.description", count=pack.pictures),
            payload=pack.payload,
            # Telegram Stars take no payment provider: the token is left out (the Bot API's "empty
            # token"). Not "": with Defaults, python-telegram-bot 22 turns an empty string
            # argument into [] (ExtBot._insert_defaults treats it as an empty poll-option list).
            provider_token=None,
            currency=CURRENCY,
            prices=[LabeledPrice(texts.get(lang, "invoice.label"), pack.stars)],
        )
    except TelegramError as exc:
        logger.warning("could not send the invoice for %s: %s", pack, exc)
        await reply_plain(query.message, texts.get(lang, "buy.failed"))


async def pre_checkout(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Accept the checkout only for a pack on sale now, at today's price, in Stars."""
    query = update.pre_checkout_query
    if query is None:
        return
    pack = parse_payload(query.invoice_payload)
    valid = (
        pack is not None
        and pack in packs_on_sale(services.settings)
        and query.currency == CURRENCY
        and query.total_amount == pack.stars
    )
    try:
        if valid:
            await query.answer(ok=True)
        else:
            lang = services.texts.pick(query.from_user.language_code)
            await query.answer(ok=False, error_message=services.texts.get(lang, "buy.stale"))
    except TelegramError as exc:
        logger.warning("could not answer the pre-checkout query %s: %s", query.id, exc)


async def successful_payment(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Credit the pictures a payment bought, exactly once per Telegram charge id."""
    message, user = update.message, update.effective_user
    if message is None or user is None or message.successful_payment is None:
        return
    payment = message.successful_payment
    pack = parse_payload(payment.invoice_payload)
    if pack is None or payment.currency != CURRENCY:
        logger.error(
            "payment %s with an unknown payload %r; refund it with /refund",
            payment.telegram_payment_charge_id,
            payment.invoice_payload,
        )
        return
    added = await services.store.add_payment(
        charge_id=payment.telegram_payment_charge_id,
        user_id=user.id,
        pictures=pack.pictures,
        stars=payment.total_amount,
        payload=payment.invoice_payload,
    )
    if not added:
        logger.info("payment %s was already credited", payment.telegram_payment_charge_id)
        return
    lang = await language_of(services, user)
    credits = await services.store.credits(user_id=user.id)
    texts = services.texts
    thanks = texts.get(lang, "payment.thanks", count=pack.pictures)
    await reply_plain(message, f"{thanks} {texts.get(lang, 'payment.balance', count=credits)}")


async def balance_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Show the free pictures left today and the credits bought."""
    request = await admit(update, services)
    if request is None:
        return
    message, user, lang = request.message, request.user, request.lang
    texts, settings = services.texts, services.settings
    if is_admin(settings, user.id):
        await reply_plain(message, texts.get(lang, "balance.admin"))
        return
    usage = await services.store.usage(user_id=user.id, user_limit=settings.daily_image_limit)
    credits = await services.store.credits(user_id=user.id)
    resets_in = until(texts, lang, resets_at=usage.resets_at, now=services.clock())
    if usage.remaining is not None:
        free = texts.get(
            lang,
            "balance.free",
            count=usage.remaining,
            limit=usage.limit,
            resets_in=resets_in,
        )
    elif settings.stars_enabled:
        free = texts.get(lang, "balance.no_free")
    else:
        free = texts.get(lang, "balance.unlimited")
    lines = [free]
    if settings.stars_enabled or credits:
        lines.append(texts.get(lang, "balance.credits", count=credits))
    if settings.stars_enabled:
        lines.append(texts.get(lang, "balance.buy_hint", stars=settings.stars_per_image))
    await reply_plain(message, "\n".join(lines))


async def paysupport_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Tell buyers how to get help with a payment (required by Telegram for digital goods)."""
    message, user = update.message, update.effective_user
    if message is None:
        return
    lang = await language_of(services, user)
    await reply_plain(message, services.texts.get(lang, "paysupport.body"))


async def terms_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Show the terms of sale (required by Telegram for digital goods)."""
    message, user = update.message, update.effective_user
    if message is None:
        return
    lang = await language_of(services, user)
    await reply_plain(
        message,
        services.texts.get(lang, "terms.body", stars=services.settings.stars_per_image),
    )


async def refund_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Refund a Stars payment and take back the credits it bought (admins only)."""
    message, user = update.message, update.effective_user
    if message is None or user is None or message.text is None:
        return
    lang = await language_of(services, user)
    texts = services.texts
    if not is_admin(services.settings, user.id):
        await reply_plain(message, texts.get(lang, "refund.admins_only"))
        return
    charge_id = command_args(message.text).strip()
    if not _CHARGE_ID.fullmatch(charge_id):
        await reply_plain(message, texts.get(lang, "refund.usage"))
        return
    try:
        payment = await services.store.refund_payment(charge_id=charge_id)
    except PaymentError as exc:
        key = (
            "refund.unknown"
            if exc.reason == "unknown"
            else "refund.refunded"
            if exc.reason == "refunded"
            else "refund.spent"
        )
        await reply_plain(message, texts.get(lang, key, charge_id=charge_id))
        return
    try:
        await message.get_bot().refund_star_payment(
            user_id=payment.user_id, telegram_payment_charge_id=charge_id
        )
    except TelegramError as exc:
        await services.store.undo_refund(charge_id=charge_id)
        logger.warning("Telegram refused to refund %s: %s", charge_id, exc)
        await reply_plain(message, texts.get(lang, "refund.failed", reason=exc.message))
        return
    await reply_plain(
        message,
        texts.get(
            lang,
            "refund.done",
            stars=payment.stars,
            user_id=payment.user_id,
            count=payment.pictures,
        ),
    )
