"""The bot behind a REAL LiteLLM proxy (pinned in .ci/run), in front of the images emulator.

`.ci/run` installs `litellm[proxy]` into its own virtual environment (`.venv-litellm`, so its
pins never touch the bot's) and exports LITELLM_PROXY, the path of its `litellm` command; the
default is `.venv-litellm/bin/litellm` in this checkout. The proxy starts once per session on
127.0.0.1 with tests/litellm/config.yaml, offline (local cost map, no telemetry). If it is not
installed or does not start, every test here FAILS saying why: it never skips.

The upstream-call counts are LiteLLM 1.108's own: on a 429, 5xx or 408 it calls the upstream 3
times per request (its OpenAI client's retries, even with `num_retries: 0`), which is why the
README recommends IMAGE_MAX_ATTEMPTS=1 behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.capabilities import caps_for, resolve
from bot.images import ImagesClient, ImagesResult
from bot.images.errors import (
    ImagesAuthError,
    ImagesError,
    ImagesNotOffered,
    ImagesQuotaExhausted,
    ImagesRateLimited,
    ImagesRefused,
)
from bot.prompt import ImageOptions
from tests.conftest import ADMIN, USER, BotFactory
from tests.emulators.openai_images import Fault, OpenAIEmulator, render_picture

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "litellm" / "config.yaml"
DEFAULT_PROXY = ROOT / ".venv-litellm" / "bin" / "litellm"
MASTER_KEY = "sk-litellm-master-test-4711"
UPSTREAM_KEY = "sk-upstream-behind-litellm-0815"
START_TIMEOUT = 180.0  # a cold start on a loaded 2-core machine
# Every model group of the config that stands for dall-e-3 (the bot learns it from MODEL_ALIASES).
ALIASES = dict.fromkeys(
    ("my-dalle3", "dalle3-refusal", "dalle3-quota", "dalle3-busy", "dalle3-cli"), "dall-e-3"
)
ALIASES["dalle3-revoked"] = "dall-e-3"
ALIASES["gpt-image-stream"] = "gpt-image-1.5"
MODEL_ALIASES = ",".join(f"{name}={family}" for name, family in ALIASES.items())


@dataclass
class Proxy:
    """A running LiteLLM proxy and the images emulator behind it."""

    base_url: str
    upstream: OpenAIEmulator
    log: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def litellm_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """Start the real proxy once per session; fail (never skip) when it cannot start."""
    command = Path(os.environ.get("LITELLM_PROXY") or DEFAULT_PROXY)
    if not command.is_file():
        pytest.fail(
            f"the LiteLLM proxy is not installed at {command}: run `bash .ci/run` (it installs "
            "litellm[proxy] into .venv-litellm) or set LITELLM_PROXY to its `litellm` command",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("litellm")
    log = home / "proxy.log"
    with OpenAIEmulator(api_key=UPSTREAM_KEY) as upstream:
        port = _free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "UPSTREAM_BASE_URL": upstream.base_url,
            "UPSTREAM_API_KEY": UPSTREAM_KEY,
            "LITELLM_MASTER_KEY": MASTER_KEY,
            # Offline: the bundled cost map, no telemetry, no update checks.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
            "NO_DOCS": "True",
            "DISABLE_ADMIN_UI": "True",
        }
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(command), "--config", str(CONFIG), "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=home,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_live(process, base, log)
            yield Proxy(base_url=f"{base}/v1", upstream=upstream, log=log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_until_live(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the LiteLLM proxy exited with {process.returncode} before it served:\n"
                + _tail(log),
                pytrace=False,
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health/liveliness", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    pytest.fail(
        f"the LiteLLM proxy did not answer within {START_TIMEOUT:g} s:\n" + _tail(log),
        pytrace=False,
    )


@pytest.fixture
def proxy(litellm_proxy: Proxy) -> Iterator[Proxy]:
    upstream = litellm_proxy.upstream
    upstream.reset()
    upstream.answer_with = "b64_json"
    yield litellm_proxy
    assert upstream.invalid_requests == []


def client(proxy: Proxy, **overrides: Any) -> ImagesClient:
    options: dict[str, Any] = {
        "base_url": proxy.base_url,
        "api_key": MASTER_KEY,
        "timeout": 60.0,
        "max_attempts": 1,
    }
    options.update(overrides)
    return ImagesClient(**options)


async def generate(proxy: Proxy, model: str, n: int = 1, **overrides: Any) -> ImagesResult:
    caps = caps_for(model, ALIASES)
    description = resolve(prompt="a yellow alpaca", options=ImageOptions(count=n), caps=caps)
    async with client(proxy, **overrides) as images:
        return await images.generate(description, caps)


async def failure(proxy: Proxy, model: str, **overrides: Any) -> ImagesError:
    with pytest.raises(ImagesError) as caught:
        await generate(proxy, model, **overrides)
    return caught.value


# -- the bot's own client -----------------------------------------------------------------------


async def test_generation_b64(proxy: Proxy) -> None:
    result = await generate(proxy, "dall-e-3")
    (image,) = result.images
    assert image.data.startswith(b"\x89PNG")
    (request,) = proxy.upstream.api_requests
    assert request.fields["model"] == "dall-e-3"
    assert request.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_streaming_through_the_proxy_fails_once_then_is_not_asked_again(
    proxy: Proxy,
) -> None:
    # LiteLLM 1.108 passes `stream: true` on, the upstream streams the picture to the end, and
    # the proxy answers the bot with a 5xx (issue #15): one failed request, never re-POSTed (the
    # upstream drew it), and the model is not asked to stream again.
    model = "gpt-image-stream"
    caps = caps_for(model, ALIASES)
    description = resolve(prompt="a yellow alpaca", options=ImageOptions(), caps=caps)
    previews: list[int] = []

    async def on_partial(partial: Any) -> None:
        previews.append(partial.partial_index)

    async with client(proxy, max_attempts=3) as images:
        assert images.streams(caps)
        with pytest.raises(ImagesError) as caught:
            await images.generate(description, caps, on_partial=on_partial)
        assert caught.value.kind == "unavailable" and (caught.value.status or 0) >= 500
        assert not images.streams(caps)
        result = await images.generate(description, caps, on_partial=on_partial)
    assert len(result.images) == 1 and previews == []
    assert [r.fields.get("stream") for r in proxy.upstream.api_requests] == [True, None]
    assert [stream.outcome for stream in proxy.upstream.streams] == ["completed"]


async def test_generation_url(proxy: Proxy) -> None:
    proxy.upstream.answer_with = "url"
    result = await generate(proxy, "gpt-image-1.5")
    (image,) = result.images
    assert image.source_url is not None and image.data.startswith(b"\x89PNG")
    assert len(proxy.upstream.api_requests) == 1


async def test_edit(proxy: Proxy) -> None:
    caps = caps_for("gpt-image-1.5")
    description = resolve(prompt="add a hat", options=ImageOptions(), caps=caps)
    async with client(proxy) as images:
        result = await images.edit(description, caps, image=render_picture(64, 64))
    assert len(result.images) == 1
    (request,) = proxy.upstream.api_requests
    assert request.endpoint == "edits"
    uploads = [file for files in request.files.values() for file in files]
    assert [file.data[:4] for file in uploads] == [b"\x89PNG"], list(request.files)


async def test_refusal(proxy: Proxy) -> None:
    proxy.upstream.queue_faults([Fault.http(400, code="content_policy_violation")])
    error = await failure(proxy, "dalle3-refusal")
    assert isinstance(error, ImagesRefused)
    assert error.detail == "Your request was rejected as a result of our safety system."
    assert len(proxy.upstream.api_requests) == 1


async def test_out_of_credit_is_quota_and_not_retried_by_the_bot(proxy: Proxy) -> None:
    proxy.upstream.queue_faults([Fault.http(429, code="insufficient_quota")] * 9)
    error = await failure(proxy, "dalle3-quota", max_attempts=3)
    assert isinstance(error, ImagesQuotaExhausted)
    assert error.status == 429
    assert len(proxy.upstream.api_requests) == 3  # LiteLLM's own tries; the bot asked once


async def test_rate_limit(proxy: Proxy) -> None:
    proxy.upstream.queue_faults([Fault.http(429, retry_after=1)] * 3)
    error = await failure(proxy, "dalle3-busy")
    assert isinstance(error, ImagesRateLimited)
    assert len(proxy.upstream.api_requests) == 3


async def test_alias_fans_out_one_picture_calls(proxy: Proxy) -> None:
    result = await generate(proxy, "my-dalle3", n=2)
    assert len(result.images) == 2
    sent = [dict(request.fields) for request in proxy.upstream.api_requests]
    assert [(fields["model"], fields.get("n", 1)) for fields in sent] == [("dall-e-3", 1)] * 2


async def test_revoked_upstream_key_then_cooldown_is_auth(proxy: Proxy) -> None:
    async with client(proxy) as images:
        caps = caps_for("dalle3-revoked", ALIASES)
        description = resolve(prompt="x", options=ImageOptions(), caps=caps)
        with pytest.raises(ImagesAuthError) as first:
            await images.generate(description, caps)
        with pytest.raises(ImagesAuthError) as second:
            await images.generate(description, caps)
    assert first.value.status == 401
    assert second.value.status == 429  # LiteLLM's cooldown, read as the auth fault it is
    assert len(proxy.upstream.api_requests) == 1


async def test_variations_are_not_offered(proxy: Proxy) -> None:
    caps = caps_for("dall-e-2")
    async with client(proxy) as images:
        with pytest.raises(ImagesNotOffered):
            await images.variation(
                model="dall-e-2", caps=caps, image=render_picture(64, 64), n=1, size=None
            )
        assert not images.offers("variations", "dall-e-2")
    assert proxy.upstream.api_requests == []


# -- the bot, and `python -m bot generate` --------------------------------------------------------


async def test_bot_behind_litellm(make_bot: BotFactory, proxy: Proxy) -> None:
    env = {
        "OPENAI_BASE_URL": proxy.base_url,
        "OPENAI_API_KEY": MASTER_KEY,
        "IMAGE_MODEL": "my-dalle3",
        "IMAGE_MODELS": "dalle3-quota",
        "MODEL_ALIASES": MODEL_ALIASES,
        "IMAGE_MAX_ATTEMPTS": "1",
        "ADMIN_USER_IDS": str(ADMIN),
        "STATUS_MESSAGE_DELAY_SECONDS": "60",
    }
    async with make_bot(**env) as bot:
        album = await bot.replies(bot.send("/image a yellow alpaca x2"), count=2, kinds=("photo",))
        assert len(album) == 2
        assert len(proxy.upstream.api_requests) == 2
        proxy.upstream.reset()
        proxy.upstream.queue_faults([Fault.http(429, code="insufficient_quota")] * 3)
        await bot.services.store.set_setting(
            scope="user", scope_id=USER, key="model", value="dalle3-quota"
        )
        reply = await bot.reply_text(bot.send("/image another"))
        assert "run out of credit" in reply
        deadline = time.monotonic() + 10
        while not bot.tg.sent_messages(ADMIN) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        (alert,) = [m.text or "" for m in bot.tg.sent_messages(ADMIN)]
        assert "quota" in alert
        assert len(proxy.upstream.api_requests) == 3


def run_generate(proxy: Proxy, tmp_path: Path, model: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "OPENAI_BASE_URL": proxy.base_url,
        "OPENAI_API_KEY": MASTER_KEY,
        "IMAGE_MODEL": model,
        "MODEL_ALIASES": MODEL_ALIASES,
        "IMAGE_MAX_ATTEMPTS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", "generate", "a yellow alpaca", "-n", "2", "-o", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_generate_through_litellm(proxy: Proxy, tmp_path: Path) -> None:
    done = run_generate(proxy, tmp_path, "dalle3-cli")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert len(summary["images"]) == 2
    assert len(proxy.upstream.api_requests) == 2  # n=1 twice: the alias knows dall-e-3


def test_cli_refusal_through_litellm(proxy: Proxy, tmp_path: Path) -> None:
    proxy.upstream.queue_faults([Fault.http(400, code="moderation_blocked")] * 2)
    done = run_generate(proxy, tmp_path, "dalle3-refusal")
    assert done.returncode == 1
    assert "refused" in done.stderr
    assert MASTER_KEY not in done.stderr and "Traceback" not in done.stderr
