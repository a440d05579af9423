"""bot/metrics.py on its own: a registry per instance, gauges read at scrape time."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Load, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_each_metrics_has_its_own_registry_and_the_global_one_stays_untouched() -> None:
    first, second = Metrics(), Metrics()
    first.request_done(kind="edit", outcome="ok", images=2)
    assert samples(first)[("imagebot_images_delivered_total", (("kind", "edit"),))] == 2
    assert samples(second)[("imagebot_images_delivered_total", (("kind", "edit"),))] == 0
    assert b"imagebot_" not in generate_latest(REGISTRY)


def test_gauges_are_read_from_the_provider_at_scrape_time_and_can_be_rewired() -> None:
    load = {"queued": 3}
    metrics = Metrics(load=lambda: Load(queued=load["queued"], in_flight=2, limit=8))
    assert samples(metrics)[("imagebot_queue_depth", ())] == 3
    load["queued"] = 0
    assert samples(metrics)[("imagebot_queue_depth", ())] == 0
    metrics.load = lambda: Load(queued=7, in_flight=1, limit=4)  # e.g. durable jobs' numbers
    read = samples(metrics)
    assert (read[("imagebot_queue_depth", ())], read[("imagebot_jobs_in_flight", ())]) == (7, 1)
    assert read[("imagebot_generation_limit", ())] == 4


def test_a_request_that_delivered_nothing_counts_no_pictures() -> None:
    metrics = Metrics()
    metrics.request_done(kind="generate", outcome="timeout", images=0)
    metrics.quota_refused("budget")
    metrics.generated(model="dall-e-3", seconds=12.5)
    read = samples(metrics)
    assert read[("imagebot_requests_total", (("kind", "generate"), ("outcome", "timeout")))] == 1
    assert read[("imagebot_images_delivered_total", (("kind", "generate"),))] == 0
    assert read[("imagebot_quota_refusals_total", (("reason", "budget"),))] == 1
    assert (
        read[("imagebot_generation_seconds_bucket", (("le", "10.0"), ("model", "dall-e-3")))] == 0
    )
    assert (
        read[("imagebot_generation_seconds_bucket", (("le", "15.0"), ("model", "dall-e-3")))] == 1
    )
