"""What a job may cost: booked before it is stored, settled when it ends.

`book` reserves the pictures against the daily quota (paying what the free allowance does not
cover from the user's Stars credits, when they are on) and holds the request's worst-case cost
against the day's ``DAILY_BUDGET_USD``; it raises the refusal (`QuotaExceeded`, `CreditsNeeded`,
`BudgetExhausted`) for the Telegram side to explain. The reservation then belongs to the job:
`Store.finish_job` settles it together with the job's final state. `settle_cost` stores the
actual cost (from the answer's ``usage``) and releases the budget hold; it returns the budget
alert levels reached, for the admins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot import pricing
from bot.capabilities import ImageDescription
from bot.config import Settings
from bot.images import ImagesResult
from bot.store import BudgetHold, Reservation, Store

logger = logging.getLogger(__name__)


@dataclass
class Hold:
    """What one job has booked: pictures (free and paid), budget, and its actual cost."""

    reservation: Reservation | None
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


async def book(
    store: Store,
    settings: Settings,
    *,
    user_id: int,
    group_id: int | None,
    description: ImageDescription,
    kind: str,
) -> Hold:
    """Book the pictures and hold the worst-case cost, or raise the refusal changing nothing."""
    model, n = description.model, description.n
    reservation = await store.reserve(
        user_id=user_id,
        chat_id=group_id,
        n=n,
        user_limit=settings.daily_image_limit,
        chat_limit=settings.daily_chat_image_limit,
        exempt=user_id in settings.admin_user_ids,
        credits=settings.stars_enabled,
    )
    price = pricing.price_for(model, settings.model_prices)
    budget: BudgetHold | None = None
    if settings.daily_budget > 0:
        worst = pricing.worst_case(
            prompt=description.prompt,
            n=n,
            size=description.size,
            quality=description.quality,
            price=price,
            source_images=0 if kind == "generate" else 1,
        )
        try:
            budget = await store.reserve_budget(amount=worst, budget=settings.daily_budget)
        except BaseException:  # refused, a store failure or a cancellation: give it all back
            await store.settle(reservation, delivered=0)
            raise
    return Hold(reservation=reservation, budget=budget, model=model, price=price)


def hold_for(
    settings: Settings, *, reservation: Reservation | None, budget: BudgetHold | None, model: str
) -> Hold:
    """Return the hold of a stored job (its actual cost is not known yet)."""
    price = pricing.price_for(model, settings.model_prices)
    return Hold(reservation=reservation, budget=budget, model=model, price=price)


async def settle_cost(
    store: Store, settings: Settings, hold: Hold, *, user_id: int, delivered: int
) -> tuple[tuple[int, ...], pricing.Nanos]:
    """Store the actual cost and release the budget hold; return the alert levels reached (80,
    100) and what the day has cost so far."""
    n = hold.reservation.n if hold.reservation is not None else delivered
    spent = await store.settle_cost(
        hold.budget,
        user_id=user_id,
        model=hold.model,
        images=max(0, min(delivered, n)),
        cost=hold.cost,
    )
    if hold.budget is not None and hold.cost > 0:
        return pricing.budget_levels(budget=settings.daily_budget, spent=spent), spent
    return (), spent
