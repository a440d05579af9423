"""/usage for everyone and /stats for admins."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.handlers import billing
from bot.handlers.access import admit, is_admin
from bot.handlers.common import language_of, reply_plain
from bot.handlers.replies import until
from bot.handlers.services import Services

# Failure outcomes a job records besides the images errors' kinds; each has a name in the
# catalogues (`stats.kind.<outcome>`), and an outcome without one is shown as recorded.
OUTCOMES = frozenset({"error", "download", "expired", "cancelled"})


async def usage_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Show what the user has used today and what is left."""
    request = await admit(update, services)
    if request is None:
        return
    message, user, lang = request.message, request.user, request.lang
    texts, settings = services.texts, services.settings
    exempt = is_admin(settings, user.id)
    usage = await services.store.usage(
        user_id=user.id, user_limit=0 if exempt else settings.daily_image_limit
    )
    if usage.remaining is None:
        body = texts.get(lang, "usage.unlimited", count=usage.used_today)
    else:
        body = texts.get(
            lang,
            "usage.limited",
            used=usage.used_today,
            count=usage.limit,
            remaining=usage.remaining,
            resets_in=until(texts, lang, resets_at=usage.resets_at, now=services.clock()),
        )
    total = texts.get(lang, "usage.total", count=usage.total_all_time)
    await reply_plain(message, f"{body}\n{total}")


async def stats_command(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, services: Services
) -> None:
    """Show today's and all-time totals to an admin."""
    message, user = update.message, update.effective_user
    if message is None or user is None:
        return
    lang = await language_of(services, user)
    texts = services.texts
    if not is_admin(services.settings, user.id):
        await reply_plain(message, texts.get(lang, "stats.admins_only"))
        return
    stats = await services.store.stats(top=5)

    def failures(by_kind: dict[str, int]) -> str:
        if not by_kind:
            return texts.get(lang, "stats.no_failures")
        return ", ".join(f"{kind_name(kind)}: {count}" for kind, count in sorted(by_kind.items()))

    def kind_name(kind: str) -> str:
        name = f"stats.kind.{kind}"
        return texts.get(lang, f"stats.kind.{kind}") if texts.has(name) else kind

    def top(users: list[tuple[int, int]]) -> str:
        if not users:
            return "—"
        return ", ".join(f"{user_id} ({images})" for user_id, images in users)

    spend = await billing.spend_report(services, lang)
    await reply_plain(
        message,
        texts.get(
            lang,
            "stats.body",
            day=stats.day.isoformat(),
            images_today=texts.get(lang, "stats.pictures", count=stats.images_today),
            requests_today=texts.get(lang, "stats.requests", count=stats.requests_today),
            failures_today=failures(stats.failures_today),
            top_today=top(stats.top_users_today),
            images_all=texts.get(lang, "stats.pictures", count=stats.images_all_time),
            requests_all=texts.get(lang, "stats.requests", count=stats.requests_all_time),
            failures_all=failures(stats.failures_all_time),
            top_all=top(stats.top_users_all_time),
            users=texts.get(lang, "stats.users", count=stats.distinct_users),
        )
        + f"\n\n{spend}",
    )
