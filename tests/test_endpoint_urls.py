"""Endpoint URLs keep the base URL's query (Azure-style fronts), end to end through the emulator."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot import cli
from bot.images.bodies import endpoint_url
from tests.conftest import BotFactory
from tests.emulators.openai_images import Fault, OpenAIEmulator

AZURE_KEY = "azure-key-0123456789abcdef"
API_VERSION = "2025-04-01-preview"


@pytest.mark.parametrize(
    ("base", "endpoint", "expected"),
    [
        (
            "https://api.openai.com/v1",
            "generations",
            "https://api.openai.com/v1/images/generations",
        ),
        ("https://api.openai.com/v1/", "edits", "https://api.openai.com/v1/images/edits"),
        (
            "https://r.openai.azure.com/openai/deployments/img?api-version=2025-04-01-preview",
            "generations",
            "https://r.openai.azure.com/openai/deployments/img/images/generations"
            "?api-version=2025-04-01-preview",
        ),
        (
            "http://127.0.0.1:8080/v1/?a=1&b=two",
            "variations",
            "http://127.0.0.1:8080/v1/images/variations?a=1&b=two",
        ),
        ("http://localai:8080", "generations", "http://localai:8080/images/generations"),
    ],
)
def test_the_path_is_joined_before_the_query(base: str, endpoint: str, expected: str) -> None:
    assert endpoint_url(base, endpoint) == expected


def azure_env(emu: OpenAIEmulator) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": f"{emu.base_url}?api-version={API_VERSION}",
        "OPENAI_API_KEY": "",
        "OPENAI_EXTRA_HEADERS": json.dumps({"api-key": AZURE_KEY}),
        "IMAGE_MODEL": "gpt-image-1",
    }


def assert_azure_style_request(emu: OpenAIEmulator) -> None:
    """The one request arrived with the query after the joined path, and only the api-key."""
    (request,) = emu.api_requests
    assert request.path == "/v1/images/generations"
    assert dict(request.query) == {"api-version": API_VERSION}
    assert request.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in request.headers
    assert emu.invalid_requests == []


def test_cli_azure_style_query_and_api_key_header_arrive(tmp_path: Path) -> None:
    with OpenAIEmulator() as emu:
        out, err = io.StringIO(), io.StringIO()
        status = cli.main(
            ["a red kite", "-o", str(tmp_path)], env=azure_env(emu), stdout=out, stderr=err
        )
        assert status == 0, err.getvalue()
        assert_azure_style_request(emu)


def test_cli_service_error_names_the_url_without_secrets(tmp_path: Path) -> None:
    with OpenAIEmulator() as emu:
        emu.queue_faults([Fault.http(400, message=f"bad request (you sent {AZURE_KEY})")])
        env = azure_env(emu)
        env["OPENAI_BASE_URL"] += "&sig=SIGNATURE-SECRET-42"
        out, err = io.StringIO(), io.StringIO()
        status = cli.main(["a red kite", "-o", str(tmp_path)], env=env, stdout=out, stderr=err)
        message = err.getvalue()
        assert status == 1
        assert (
            f"from POST {emu.base_url}/images/generations?api-version={API_VERSION}&sig=***: "
            in message
        )
        assert "SIGNATURE-SECRET-42" not in message
        assert AZURE_KEY not in message


def test_cli_short_key_does_not_mangle_the_message(tmp_path: Path) -> None:
    # A keyless LocalAI server configured with OPENAI_API_KEY=none.
    with OpenAIEmulator() as emu:
        emu.queue_faults([Fault.http(400, message="none of the sizes is supported here")])
        env = {"OPENAI_BASE_URL": emu.base_url, "OPENAI_API_KEY": "none"}
        err = io.StringIO()
        status = cli.main(["cat", "-o", str(tmp_path)], env=env, stdout=io.StringIO(), stderr=err)
        assert status == 1
        assert "none of the sizes is supported here" in err.getvalue()
        assert "images service error (bad_request)" in err.getvalue()
        (request,) = emu.api_requests
        assert request.headers["Authorization"] == "Bearer none"


async def test_bot_azure_style_image_request(make_bot: BotFactory, oai: OpenAIEmulator) -> None:
    oai.api_key = None  # Azure checks its own `api-key` header; asserted below
    async with make_bot(**azure_env(oai)) as bot:
        message = bot.send("/image a lighthouse at dusk")
        await bot.replies(message, kinds=("photo",))
        assert_azure_style_request(oai)
