"""What a generation may cost, held before the images call and settled after it.

`reserve` is the one step `run_generation` takes before calling the service: it books the
pictures against the daily quota (paying what the free allowance does not cover from the user's
Stars credits, when they are on) and holds the request's worst-case cost against the day's
``DAILY_BUDGET_USD``. `settle` undoes or confirms both together, on every path: delivered
pictures are counted and paid, the rest given back, and the actual cost (from the answer's
``usage``) stored with the request. Admins are told once at 80 % and once at 100 % of the budget.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from telegram import Chat, Message, User

from bot import pricing
from bot.capabilities import ImageDescription
from bot.handlers.access import is_admin
from bot.handlers.common import is_group, reply_plain, tell_admins
from bot.handlers.replies import error_text, until
from bot.handlers.services import Services
from bot.images import ImagesResult
from bot.quota import CreditsNeeded, QuotaExceeded, utc_day
from bot.store import BudgetHold, Reservation, SpendTotals

logger = logging.getLogger(__name__)

# Alert kinds carry the day, so "once per level per day" is one should_alert row each.
_ALERT_KEEP = timedelta(days=2)


@dataclass
class Hold:
    """What one request has booked: pictures (free and paid), budget, and its actual cost."""

    reservation: Reservation
    budget: BudgetHold | None
    model: str
    price: pricing.ModelPrice
    cost: pricing.Nanos = 0

    def charge(self, result: ImagesResult) -> None:
        """Remember what the service's answer cost (from its usage, else per picture)."""
        self.cost = pricing.cost_of(result.usage, images=len(result.images), price=self.price)
        if self.budget is not None and self.cost > self.budget.amount:
            logger.warning(
                "%s cost %s, more than its worst case %s",
                self.model,
                pricing.format_usd(self.cost),
                pricing.format_usd(self.budget.amount),
            )


def _source_images(kind: str) -> int:
    return 0 if kind == "generate" else 1


async def reserve(
    services: Services,
    *,
    reply_to: Message,
    user: User,
    chat: Chat,
    lang: str,
    description: ImageDescription,
    kind: str,
) -> Hold | None:
    """Book the pictures and hold the worst-case cost; on refusal reply and return None."""
    settings, store = services.settings, services.store
    model, n = description.model, description.n
    try:
        reservation = await store.reserve(
            user_id=user.id,
            chat_id=chat.id if is_group(chat) else None,
            n=n,
            user_limit=settings.daily_image_limit,
            chat_limit=settings.daily_chat_image_limit,
            exempt=is_admin(settings, user.id),
            credits=settings.stars_enabled,
        )
    except QuotaExceeded as exc:
        services.metrics.quota_refused("credits" if isinstance(exc, CreditsNeeded) else exc.scope)
        await reply_plain(reply_to, refusal_text(services, lang, exc))
        return None
    price = pricing.price_for(model, settings.model_prices)
    budget: BudgetHold | None = None
    if settings.daily_budget > 0:
        worst = pricing.worst_case(
            prompt=description.prompt,
            n=n,
            size=description.size,
            quality=description.quality,
            price=price,
            source_images=_source_images(kind),
        )
        try:
            budget = await store.reserve_budget(amount=worst, budget=settings.daily_budget)
        except pricing.BudgetExhausted as exc:
            await store.settle(reservation, delivered=0)
            services.metrics.quota_refused("budget")
            logger.info("daily budget reached: %s", exc)
            await reply_plain(reply_to, refusal_text(services, lang, exc))
            if exc.needed <= exc.budget:  # the day is used up, not just one huge request
                await _alert_budget(services, reply_to, levels=(100,), spent=exc.spent)
            return None
        except BaseException:  # a store failure or a cancellation: give the pictures back
            await store.settle(reservation, delivered=0)
            raise
    return Hold(reservation=reservation, budget=budget, model=model, price=price)


async def settle(services: Services, hold: Hold, *, reply_to: Message, delivered: int) -> None:
    """Count the delivered pictures, give back the rest, and store the actual cost."""
    store, settings = services.store, services.settings
    await store.settle(hold.reservation, delivered=delivered)
    spent = await store.settle_cost(
        hold.budget,
        user_id=hold.reservation.user_id,
        model=hold.model,
        images=max(0, min(delivered, hold.reservation.n)),
        cost=hold.cost,
    )
    if hold.budget is not None and hold.cost > 0:
        levels = pricing.budget_levels(budget=settings.daily_budget, spent=spent)
        await _alert_budget(services, reply_to, levels=levels, spent=spent)


def refusal_text(services: Services, lang: str, exc: Exception) -> str:
    """Return the reply for a request the quota, the credits or the budget cannot take."""
    texts, now = services.texts, services.clock()
    if isinstance(exc, CreditsNeeded):
        stars = services.settings.stars_per_image
        resets_in = until(texts, lang, resets_at=exc.resets_at, now=now)
        # Each counted part governs its own noun: the free pictures, then the credits needed.
        shortfall = texts.get(lang, "credits.shortfall", count=exc.needed, credits=exc.credits)
        if exc.limit > 0:
            return texts.get(
                lang,
                "credits.needed_free_used",
                count=exc.limit,
                remaining=exc.remaining,
                stars=stars,
                shortfall=shortfall,
                resets_in=resets_in,
            )
        return texts.get(lang, "credits.needed", stars=stars, shortfall=shortfall)
    if isinstance(exc, pricing.BudgetExhausted) and exc.needed > exc.budget:
        return texts.get(
            lang,
            "budget.too_expensive",
            cost=pricing.format_usd(exc.needed),
            budget=pricing.format_usd(exc.budget),
        )
    if isinstance(exc, pricing.BudgetExhausted):
        return texts.get(
            lang,
            "budget.exhausted",
            resets_in=until(texts, lang, resets_at=exc.resets_at, now=now),
        )
    return error_text(texts, lang, exc, now=now) or texts.get(lang, "error.unexpected")


async def _alert_budget(
    services: Services, message: Message, *, levels: tuple[int, ...], spent: pricing.Nanos
) -> None:
    """Tell the admins, once per level per UTC day, how much of the budget is used."""
    settings, texts = services.settings, services.texts
    day = utc_day(services.clock()).isoformat()
    spent_usd = pricing.format_usd(spent)
    budget_usd = pricing.format_usd(settings.daily_budget)
    for level in levels:
        if not await services.store.should_alert(kind=f"budget{level}:{day}", every=_ALERT_KEEP):
            continue
        key = "admin.budget.100" if level >= 100 else "admin.budget.80"

        def text_for(lang: str, key: str = key) -> str:
            return texts.get(lang, key, spent=spent_usd, budget=budget_usd)

        if not settings.admin_user_ids:
            logger.warning("%s (no ADMIN_USER_IDS to tell)", text_for(texts.default))
            continue
        await tell_admins(services, message.get_bot(), text_for)


async def spend_report(services: Services, lang: str) -> str:
    """Return the spend lines of /stats: today, 7 days, all time, by model and top users."""
    texts, settings = services.texts, services.settings
    spend = await services.store.spend(top=5)
    usd = pricing.format_usd

    def fields(totals: SpendTotals) -> dict[str, object]:
        return {
            "cost": usd(totals.cost),
            "images": texts.get(lang, "stats.pictures", count=totals.images),
            "models": ", ".join(f"{m} {usd(c)} ({i})" for m, c, i in totals.by_model) or "—",
            "users": ", ".join(f"{u} {usd(c)}" for u, c in totals.top_users) or "—",
        }

    lines = [
        texts.get(lang, "stats.spend_today", **fields(spend.today)),
        texts.get(lang, "stats.spend_week", **fields(spend.week)),
        texts.get(lang, "stats.spend_all", **fields(spend.all_time)),
    ]
    if settings.daily_budget > 0:
        lines.append(
            texts.get(
                lang,
                "stats.budget",
                spent=usd(spend.today.cost),
                held=usd(spend.budget_held),
                budget=usd(settings.daily_budget),
            )
        )
    return "\n".join(lines)
