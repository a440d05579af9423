"""The money side of a request, as the chat sees it: refusals, budget alerts, /stats spend.

What a job books and settles (quota, Stars credits, the daily budget) is `bot.jobs.billing`;
here are the replies when a request is refused (`refusal_text`), the admins' alerts at 80 % and
100 % of ``DAILY_BUDGET_USD`` (`alert_budget`, once per level per day), and the spend lines of
/stats.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from telegram import Bot

from bot import pricing
from bot.handlers.common import tell_admins
from bot.handlers.replies import error_text, until
from bot.handlers.services import Services
from bot.quota import CreditsNeeded, utc_day
from bot.store import SpendTotals

logger = logging.getLogger(__name__)

# Alert kinds carry the day, so "once per level per day" is one should_alert row each.
_ALERT_KEEP = timedelta(days=2)


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


async def alert_budget(
    services: Services, bot: Bot, *, levels: tuple[int, ...], spent: pricing.Nanos
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
        await tell_admins(services, bot, text_for)


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
