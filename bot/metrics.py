"""What operators graph and alert on: the bot's Prometheus metrics, in a registry it owns.

`Metrics` holds one `prometheus_client.CollectorRegistry` (never the library's global default)
with the counters and the histogram below; the handlers and the Telegram request layer call its
few recording methods, and `bot/web.py` serves `exposition()` on GET /metrics.

- `imagebot_requests_total{kind, outcome}`: admitted requests by kind (generate, edit,
  variation) and how they ended (`ok`, an images error kind, a delivery error kind, `download`);
- `imagebot_images_delivered_total{kind}`: pictures Telegram took;
- `imagebot_generation_seconds{model}` (histogram): how long successful images calls took;
- `imagebot_backend_errors_total{kind}`: failed images calls by `ImagesError.kind`;
- `imagebot_telegram_errors_total{kind}`: failed Bot API calls (getUpdates too) by error class;
- `imagebot_quota_refusals_total{reason}`: requests refused by the quota (`user`, `chat`), for
  want of Stars credits (`credits`) or by the daily budget (`budget`);
- `imagebot_queue_depth`, `imagebot_jobs_in_flight`, `imagebot_generation_limit` (gauges read at
  scrape time): requests waiting for a slot, generations holding one, the adaptive limit;
- `imagebot_receiving_updates` (gauge read at scrape time, `Metrics.receiving`): 1 when this
  replica takes updates from Telegram (the polling leader, every replica in webhook mode), 0 on
  a polling standby;

plus the standard `process_*` and `python_info` series. Every label value comes from a fixed set
or from the operator's model list: never a user's text, an id, a token or a key. Gauges come from
one `LoadProvider` callable, read at every scrape, so the wiring decides where the numbers live
(today `bot.limiter.GenerationLimiter`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

PREFIX = "imagebot"
# Images calls take 5-60 s for GPT image models, under a second for small local ones.
GENERATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)
REQUEST_KINDS = ("generate", "edit", "variation")
REFUSAL_REASONS = ("user", "chat", "credits", "budget")


@dataclass(frozen=True)
class Load:
    """How busy the bot is right now."""

    queued: int
    in_flight: int
    limit: int


LoadProvider = Callable[[], Load]


def no_load() -> Load:
    """Return an idle load (for a `Metrics` with nothing wired yet)."""
    return Load(queued=0, in_flight=0, limit=0)


class _LoadCollector:
    """Read the gauges from the provider at scrape time."""

    def __init__(self, provider: Callable[[], LoadProvider]) -> None:
        self._provider = provider

    def collect(self) -> Iterable[Metric]:
        load = self._provider()()
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Requests waiting for a generation slot.", value=load.queued
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_jobs_in_flight", "Generations holding a slot.", value=load.in_flight
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_generation_limit",
            "How many generations may run at once now (adapts to the images service).",
            value=load.limit,
        )


class _ReceivingCollector:
    """Read at scrape time whether this replica takes updates (see `Metrics.receiving`)."""

    def __init__(self, provider: Callable[[], Callable[[], bool]]) -> None:
        self._provider = provider

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            f"{PREFIX}_receiving_updates",
            "1 when this replica takes updates from Telegram, 0 on a polling standby.",
            value=1 if self._provider()() else 0,
        )


class Metrics:
    """The bot's metrics and the few calls that record them."""

    def __init__(self, *, load: LoadProvider = no_load) -> None:
        self.registry = CollectorRegistry()
        self.load = load
        registry = self.registry

        def counter(name: str, doc: str, label: str, *labels: str) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, [label, *labels], registry=registry)

        self._requests = counter(
            "requests", "Admitted requests by kind and outcome.", "kind", "outcome"
        )
        self._images = counter("images_delivered", "Pictures delivered to Telegram.", "kind")
        self._seconds = Histogram(
            f"{PREFIX}_generation_seconds",
            "Duration of successful images calls.",
            ["model"],
            buckets=GENERATION_BUCKETS,
            registry=registry,
        )
        self._backend_errors = counter(
            "backend_errors", "Failed images calls by error kind.", "kind"
        )
        self._telegram_errors = counter(
            "telegram_errors", "Failed Telegram Bot API calls by error kind.", "kind"
        )
        self._refusals = counter(
            "quota_refusals",
            "Requests refused by the quota, the Stars credits or the daily budget.",
            "reason",
        )
        # Series that exist from the start, so rate() and alerts see a 0 before the first event.
        for kind in REQUEST_KINDS:
            self._requests.labels(kind=kind, outcome="ok")
            self._images.labels(kind=kind)
        for reason in REFUSAL_REASONS:
            self._refusals.labels(reason=reason)
        registry.register(_LoadCollector(lambda: self.load))
        self.receiving: Callable[[], bool] = lambda: True
        registry.register(_ReceivingCollector(lambda: self.receiving))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

    def request_done(self, *, kind: str, outcome: str, images: int) -> None:
        """Count one admitted request's outcome and the pictures it delivered."""
        self._requests.labels(kind=kind, outcome=outcome).inc()
        if images > 0:
            self._images.labels(kind=kind).inc(images)

    def generated(self, *, model: str, seconds: float) -> None:
        """Record how long one successful images call took."""
        self._seconds.labels(model=model).observe(seconds)

    def backend_error(self, kind: str) -> None:
        """Count one failed images call."""
        self._backend_errors.labels(kind=kind).inc()

    def telegram_error(self, kind: str) -> None:
        """Count one failed Bot API call."""
        self._telegram_errors.labels(kind=kind).inc()

    def quota_refused(self, reason: str) -> None:
        """Count one request refused before the images call (quota, credits, budget)."""
        self._refusals.labels(reason=reason).inc()

    def exposition(self) -> tuple[bytes, str]:
        """Return the current metrics in the Prometheus text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
