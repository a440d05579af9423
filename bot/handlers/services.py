"""The objects every handler needs, built once in `bot.app` and passed in explicitly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bot.config import Settings
from bot.eta import GenerationTimes
from bot.i18n import Texts
from bot.images import ImagesClient
from bot.jobs import JobRunner
from bot.limiter import GenerationLimiter
from bot.metrics import Metrics
from bot.running import RunningRequests
from bot.store import KeptOriginals, Store


@dataclass
class Services:
    """Shared, long-lived collaborators of the handlers (no Telegram objects here)."""

    settings: Settings
    images: ImagesClient
    store: Store
    texts: Texts
    limiter: GenerationLimiter
    clock: Callable[[], datetime]
    originals: KeptOriginals  # the store's (`Store.originals`)
    jobs: JobRunner  # every generation is one of its jobs
    # (chat_id, user_id) -> when a "not allowed" notice was last sent in that group.
    denied_notices: dict[tuple[int, int], datetime] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    # The requests in flight that ❌ Cancel and /cancel can stop.
    running: RunningRequests = field(default_factory=RunningRequests)
    # Recent generation times by model and quality, for the status message's estimate.
    generation_times: GenerationTimes = field(default_factory=GenerationTimes)
