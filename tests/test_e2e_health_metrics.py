"""GET /healthz and GET /metrics of the running bot, in polling mode (METRICS_PORT) and on the
webhook server, read over HTTP on 127.0.0.1 and parsed with `prometheus_client.parser`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    API_KEY,
    OTHER_USER,
    TOKEN,
    USER,
    base_env,
    free_port,
    run_with_port_taken,
)
from tests.emulators.openai_images import Fault, OpenAIEmulator
from tests.emulators.telegram_api import TelegramEmulator
from tests.test_subprocess import _start, _stop

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def fetch(url: str, *, method: str = "GET") -> tuple[int, str, str]:
    """Return the status, content type and body of one request."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def scrape(base: str) -> Samples:
    """Read /metrics and return every sample by name and labels."""
    status, content_type, text = await fetch(f"{base}/metrics")
    assert status == 200, text
    assert content_type.startswith("text/plain"), content_type
    return parse(text)


def parse(text: str) -> Samples:
    """Return every sample of a Prometheus exposition by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return one sample's value (0 when the series does not exist yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def health(base: str) -> tuple[int, dict[str, Any]]:
    status, content_type, text = await fetch(f"{base}/healthz")
    assert content_type.startswith("application/json"), content_type
    return status, json.loads(text)


def docker_probe() -> list[str]:
    """Return the Dockerfile's HEALTHCHECK command (an exec-form JSON array)."""
    text = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[[^\n]*\])$", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "no HEALTHCHECK in exec form"
    argv = json.loads(match.group(1))
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


async def run_docker_probe(port: int) -> int:
    """Run the Dockerfile's health probe against METRICS_PORT=`port`; return its exit status."""
    proc = await asyncio.create_subprocess_exec(
        *docker_probe(),
        env={"METRICS_PORT": str(port), "PATH": os.environ.get("PATH", "")},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), timeout=30)


async def scrape_when(
    base: str, ready: Callable[[Samples], bool], *, timeout: float = 10.0
) -> Samples:
    """Scrape until `ready(samples)` (a request is counted just after its reply goes out)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(base)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def test_polling_health_and_metrics_follow_generations_refusals_and_errors(
    make_bot,
) -> None:
    port = free_port()
    async with make_bot(
        METRICS_PORT=str(port), DAILY_IMAGE_LIMIT="2", IMAGE_MAX_ATTEMPTS="1"
    ) as bot:
        base = f"http://127.0.0.1:{port}"
        assert await health(base) == (200, {"status": "ok"})
        before = await scrape(base)
        assert value(before, "imagebot_requests_total", kind="generate", outcome="ok") == 0
        assert value(before, "imagebot_generation_limit") == 64
        assert value(before, "imagebot_queue_depth") == 0
        assert ("process_resident_memory_bytes", ()) in before

        msg = bot.send("/image metered alpaca")
        await bot.replies(msg, kinds=("photo",))
        bot.oai.queue_faults([Fault.http(500)])
        failed = bot.send("/image failing alpaca")
        await bot.reply_text(failed)
        refused = bot.send("/image one too many")  # the failure was refunded: 1 of 2 used
        await bot.replies(refused, kinds=("photo",))
        over = bot.send("/image over the limit")
        await bot.reply_text(over)

        after = await scrape_when(
            base,
            lambda s: (
                value(s, "imagebot_quota_refusals_total", reason="user") == 1
                and value(s, "imagebot_images_delivered_total", kind="generate") == 2
            ),
        )
        assert value(after, "imagebot_quota_refusals_total", reason="user") == 1
        assert value(after, "imagebot_requests_total", kind="generate", outcome="ok") == 2
        assert value(after, "imagebot_requests_total", kind="generate", outcome="unavailable") == 1
        assert value(after, "imagebot_images_delivered_total", kind="generate") == 2
        assert value(after, "imagebot_backend_errors_total", kind="unavailable") == 1
        assert value(after, "imagebot_generation_seconds_count", model="gpt-image-2") == 2
        assert value(after, "imagebot_generation_seconds_sum", model="gpt-image-2") > 0
        assert value(after, "imagebot_quota_refusals_total", reason="budget") == 0
        assert len(bot.oai.api_requests) == 3

        # Only GET on the two routes; nothing else is served.
        assert (await fetch(f"{base}/nothing-here"))[0] == 404
        assert (await fetch(f"{base}/healthz", method="POST"))[0] == 405


async def test_gauges_show_jobs_in_flight_and_the_queue(make_bot) -> None:
    port = free_port()
    async with make_bot(METRICS_PORT=str(port), MAX_CONCURRENT_GENERATIONS="1") as bot:
        base = f"http://127.0.0.1:{port}"
        bot.oai.delay = 1.5
        first = bot.send("/image slow one")
        second = bot.send("/image slow two", user_id=OTHER_USER)

        def gauges(samples: Samples) -> tuple[float, float]:
            in_flight = value(samples, "imagebot_jobs_in_flight")
            return in_flight, value(samples, "imagebot_queue_depth")

        busy = await scrape_when(base, lambda s: gauges(s) == (1, 1))
        assert gauges(busy) == (1, 1)
        await bot.replies(first, kinds=("photo",))
        await bot.replies(second, kinds=("photo",))
        idle = await scrape_when(base, lambda s: gauges(s) == (0, 0))
        assert gauges(idle) == (0, 0)


async def test_healthz_is_503_with_a_reason_when_the_store_fails(make_bot) -> None:
    port = free_port()
    async with make_bot(METRICS_PORT=str(port)) as bot:
        base = f"http://127.0.0.1:{port}"
        assert (await health(base))[0] == 200
        assert await run_docker_probe(port) == 0
        await bot.services.store.close()  # what a lost database looks like to the bot
        status, body = await health(base)
        assert status == 503
        assert body == {"status": "unavailable", "reason": "store not answering"}
        assert await run_docker_probe(port) != 0
        assert str(bot.settings.data_dir) not in json.dumps(body)
        # Metrics go on being served: they are what shows why.
        await scrape(base)


async def test_healthz_is_503_when_the_bot_stops_polling(make_bot) -> None:
    port = free_port()
    async with make_bot(METRICS_PORT=str(port)) as bot:
        base = f"http://127.0.0.1:{port}"
        assert (await health(base))[0] == 200
        assert bot.app.updater is not None
        await bot.app.updater.stop()
        assert await health(base) == (
            503,
            {"status": "unavailable", "reason": "not receiving updates"},
        )


async def test_telegram_errors_are_counted_by_kind(make_bot) -> None:
    port = free_port()
    async with make_bot(METRICS_PORT=str(port)) as bot:
        base = f"http://127.0.0.1:{port}"
        bot.tg.fail_next(
            "sendPhoto", status=403, description="Forbidden: bot was blocked by the user"
        )
        msg = bot.send("/image to a closed chat")

        samples = await scrape_when(
            base,
            lambda s: value(s, "imagebot_requests_total", kind="generate", outcome="blocked") > 0,
        )
        assert value(samples, "imagebot_telegram_errors_total", kind="forbidden") == 1
        assert value(samples, "imagebot_requests_total", kind="generate", outcome="blocked") == 1
        assert value(samples, "imagebot_images_delivered_total", kind="generate") == 0
        assert not [m for m in bot.tg.sent_messages(msg["chat"]["id"]) if m.kind == "photo"]


async def test_failed_polling_is_counted_and_unhealthy_until_answered(make_bot) -> None:
    port = free_port()
    async with make_bot(METRICS_PORT=str(port)) as bot:
        base = f"http://127.0.0.1:{port}"
        bot.tg.fail_next(
            "getUpdates", status=409, description="Conflict: terminated by other getUpdates request"
        )
        samples = await scrape_when(
            base, lambda s: value(s, "imagebot_telegram_errors_total", kind="conflict") > 0
        )
        assert value(samples, "imagebot_telegram_errors_total", kind="conflict") == 1
        # Until a getUpdates is answered again (the retry waits for an update: a long poll).
        assert await health(base) == (503, {"status": "unavailable", "reason": "polling failing"})
        msg = bot.send("/image after the conflict")  # polling goes on
        await bot.replies(msg, kinds=("photo",))
        assert await health(base) == (200, {"status": "ok"})


async def test_webhook_server_serves_health_metrics_and_updates(make_bot) -> None:
    port = free_port()
    async with make_bot(
        WEBHOOK_URL="https://bot.example.org/telegram/hook",
        WEBHOOK_LISTEN="127.0.0.1",
        WEBHOOK_PORT=str(port),
        WEBHOOK_SECRET_TOKEN="s3cret-Token-for-metrics",
    ) as bot:
        base = f"http://127.0.0.1:{port}"
        with bot.tg._cond:
            bot.tg._state.webhook["url"] = f"{base}/telegram/hook"
        assert await health(base) == (200, {"status": "ok"})
        msg = bot.send("/image hooked alpaca")
        await bot.replies(msg, kinds=("photo",))
        samples = await scrape_when(
            base, lambda s: value(s, "imagebot_requests_total", kind="generate", outcome="ok") > 0
        )
        assert value(samples, "imagebot_requests_total", kind="generate", outcome="ok") == 1
        # The webhook route takes POSTs only, and only with the secret, of a JSON update.
        assert (await fetch(f"{base}/telegram/hook"))[0] == 405
        signed = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token-for-metrics"}
        update = {"update_id": 777, "message": dict(msg, message_id=4242, text="/image again")}
        async with aiohttp.ClientSession() as session:
            for headers, body, expected in (
                ({}, json.dumps(update), 403),
                ({"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token-for-metricz"}, "{}", 403),
                ({**signed, "Content-Type": "text/plain"}, json.dumps(update), 415),
                ({**signed, "Content-Type": "application/json"}, "{not json", 400),
                ({**signed, "Content-Type": "application/json"}, "[1, 2]", 400),
                ({**signed, "Content-Type": "application/json"}, '{"message": {}}', 400),
            ):
                async with session.post(
                    f"{base}/telegram/hook", data=body, headers=headers
                ) as response:
                    assert response.status == expected, (headers, body)
            async with session.post(f"{base}/telegram/hook/", json=update, headers=signed) as ok:
                assert ok.status == 200
        # Message 4242 is unknown to the emulator, so the photo goes out without the reply.
        deadline = time.monotonic() + 10
        while not [m for m in bot.tg.sent_messages(USER) if m.text == "again"]:
            assert time.monotonic() < deadline, "the update posted to the webhook was not handled"
            await asyncio.sleep(0.05)
        assert len(bot.oai.api_requests) == 2
        await bot.services.store.close()
        assert (await health(base))[0] == 503


async def test_webhook_mode_with_a_separate_metrics_port_serves_both(make_bot) -> None:
    hook_port, metrics_port = free_port(), free_port()
    async with make_bot(
        WEBHOOK_URL="https://bot.example.org/hook",
        WEBHOOK_LISTEN="127.0.0.1",
        WEBHOOK_PORT=str(hook_port),
        METRICS_PORT=str(metrics_port),
    ):
        for port in (hook_port, metrics_port):
            assert await health(f"http://127.0.0.1:{port}") == (200, {"status": "ok"})
    # The same port for both is one server, not a failure to bind.
    async with make_bot(
        WEBHOOK_URL="https://bot.example.org/hook",
        WEBHOOK_LISTEN="127.0.0.1",
        WEBHOOK_PORT=str(hook_port),
        METRICS_PORT=str(hook_port),
    ):
        assert (await health(f"http://127.0.0.1:{hook_port}"))[0] == 200


async def test_no_secret_ever_reaches_metrics_or_health(make_bot) -> None:
    port = free_port()
    secret = "s3cret-Token-never-in-metrics"
    async with make_bot(
        WEBHOOK_URL="https://bot.example.org/hook",
        WEBHOOK_LISTEN="127.0.0.1",
        WEBHOOK_PORT=str(port),
        WEBHOOK_SECRET_TOKEN=secret,
        IMAGE_MAX_ATTEMPTS="1",
    ) as bot:
        base = f"http://127.0.0.1:{port}"
        with bot.tg._cond:
            bot.tg._state.webhook["url"] = f"{base}/hook"
        bot.oai.queue_faults([Fault.http(401, message=f"Incorrect API key provided: {API_KEY}")])
        msg = bot.send("/image rejected key")
        await bot.reply_text(msg)
        await bot.services.store.close()
        texts = [(await fetch(f"{base}/metrics"))[2], (await fetch(f"{base}/healthz"))[2]]
    for text in texts:
        for hidden in (TOKEN, TOKEN.split(":")[1], API_KEY, secret):
            assert hidden not in text
    assert 'imagebot_backend_errors_total{kind="auth"} 1.0' in texts[0]
    # Label values are words from fixed sets and model names: no ids, no text of users.
    for family in text_string_to_metric_families(texts[0]):
        for sample in family.samples:
            if sample.name.startswith("imagebot_"):
                for label, word in sample.labels.items():
                    assert label == "le" or re.fullmatch(r"[a-z][a-z0-9_.-]*", word), sample
                    assert str(USER) not in word


def _get(url: str) -> tuple[int, str]:
    """GET with the standard library, as the Docker HEALTHCHECK does."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_python_m_bot_serves_healthz_and_metrics(tmp_path: Path) -> None:
    port = free_port()
    with TelegramEmulator(TOKEN) as tg, OpenAIEmulator(api_key=API_KEY) as oai:
        env = base_env(tg, oai, tmp_path / "data")
        env["METRICS_PORT"] = str(port)
        proc = _start(env, tmp_path)
        try:
            deadline = time.monotonic() + 30
            status, body = 0, ""
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError):
                    status, body = _get(f"http://127.0.0.1:{port}/healthz")
                    if status == 200:
                        break
                time.sleep(0.1)
            assert (status, json.loads(body or "{}")) == (200, {"status": "ok"})
            msg = tg.send_message(chat_id=USER, user_id=USER, text="/image process alpaca")
            tg.wait_for("sendPhoto", timeout=20)
            key = ("imagebot_images_delivered_total", (("kind", "generate"),))
            samples: Samples = {}
            deadline = time.monotonic() + 10
            while samples.get(key) != 1 and time.monotonic() < deadline:
                status, text = _get(f"http://127.0.0.1:{port}/metrics")
                assert status == 200
                samples = parse(text)
                time.sleep(0.05)
            assert samples[key] == 1, msg
            assert TOKEN not in text and API_KEY not in text
        finally:
            code, err = _stop(proc)
        assert code == 0, err[-3000:]
        assert "Traceback" not in err


def test_metrics_port_in_use_stops_with_one_clear_message(tmp_path: Path) -> None:
    port, done = run_with_port_taken(tmp_path, METRICS_PORT="{port}")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"Cannot start the metrics server on 127.0.0.1:{port}" in done.stderr
    assert TOKEN not in done.stderr
