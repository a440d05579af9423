"""A loopback emulator of a LiteLLM proxy in front of the OpenAI images emulator.

    with OpenAIEmulator(api_key="sk-up") as upstream, GatewayEmulator(upstream) as gateway:
        client = ImagesClient(base_url=gateway.base_url, api_key="anything")

Successful answers pass through unchanged; error answers are re-shaped the way LiteLLM 1.108
shapes them (observed against the real proxy, see tests/test_litellm_proxy.py):

- the code is the status as a string (`"400"`), the type LiteLLM's (`throttling_error` for every
  429, quota included), the upstream's message wrapped:
  `litellm.RateLimitError: RateLimitError: OpenAIException - <upstream message>` followed by
  `\\n\\nLiteLLM: model group '<model>' failed with the error above. ...`;
- `Retry-After` is dropped (edits pass it on as `llm_provider-retry-after`);
- after an upstream 401 the model "cools down": for `cooldown_seconds` every request is answered
  429 `all_deployments_in_cooldown` ("Try again in 5 seconds") without reaching the upstream;
- routes the proxy does not serve (`/images/variations`, anything unknown) answer
  404 `{"detail": "Not Found"}`.

`litellm_error` is the pure reshaping, unit-tested shape by shape in tests/test_gateways.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from aiohttp import ClientSession, ClientTimeout, web

from tests.emulators.openai_images import OpenAIEmulator
from tests.emulators.server import ServerThread

NOT_FOUND_BODY = {"detail": "Not Found"}

# status -> (LiteLLM exception name, LiteLLM error type; None keeps the upstream's type)
_EXCEPTIONS: dict[int, tuple[str, str | None]] = {
    400: ("BadRequestError", None),
    401: ("AuthenticationError", "authentication_error"),
    403: ("PermissionDeniedError", "permission_denied_error"),
    404: ("NotFoundError", None),
    408: ("Timeout", "invalid_request_error"),
    422: ("UnprocessableEntityError", None),
    429: ("RateLimitError", "throttling_error"),
}
_TRAILER = (
    "\n\nLiteLLM: model group '{model}' failed with the error above. No fallback was attempted."
)


def _upstream_error(body: bytes) -> tuple[str, str | None]:
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace"), None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or ""), error.get("type")
    return body.decode("utf-8", "replace"), None


def litellm_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    model: str,
    endpoint: str,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Return (status, headers, JSON body) LiteLLM answers for an upstream error answer."""
    message, upstream_type = _upstream_error(body)
    server_error = ("InternalServerError", "internal_server_error")
    fallback: tuple[str, str | None] = server_error if status >= 500 else ("APIError", None)
    name, error_type = _EXCEPTIONS.get(status, fallback)
    if name == "Timeout":
        prefix = "litellm.Timeout: Timeout Error: OpenAIException - "
    elif name == "BadRequestError":
        prefix = "litellm.BadRequestError: OpenAIException - "
    else:
        prefix = f"litellm.{name}: {name}: OpenAIException - "
    if endpoint == "edits" and status != 400:
        # On edits LiteLLM keeps the upstream's whole error body inside the message.
        message = body.decode("utf-8", "replace")
    answer_headers: dict[str, str] = {}
    retry_after = headers.get("Retry-After")
    if retry_after is not None and endpoint == "edits":
        answer_headers["llm_provider-retry-after"] = retry_after
    return (
        status,
        answer_headers,
        {
            "error": {
                "message": prefix + message + _TRAILER.format(model=model),
                "type": error_type or upstream_type or "None",
                "param": None,
                "code": str(status),
            }
        },
    )


def cooldown_error(model: str, seconds: float) -> dict[str, Any]:
    """Return LiteLLM's answer while every deployment of `model` is cooling down."""
    return {
        "error": {
            "message": (
                f"No deployments available for selected model, Try again in {seconds:g} seconds. "
                "All deployments for selected model are in cooldown. "
                f"Passed model={model}. pre-call-checks=False, cooldown_list=['0d18e9a0']"
            ),
            "type": "all_deployments_in_cooldown",
            "param": None,
            "code": "429",
        }
    }


def _model_of(content_type: str, raw: bytes) -> str:
    if content_type.startswith("application/json"):
        try:
            payload = json.loads(raw)
        except ValueError:
            return ""
        return str(payload.get("model") or "") if isinstance(payload, dict) else ""
    marker = b'name="model"\r\n\r\n'
    start = raw.find(marker)
    if start < 0:
        return ""
    start += len(marker)
    return raw[start : raw.find(b"\r\n", start)].decode("utf-8", "replace")


class GatewayEmulator:
    """Serve a LiteLLM-shaped proxy of `upstream` on 127.0.0.1 from its own thread."""

    def __init__(self, upstream: OpenAIEmulator, *, cooldown_seconds: float = 5.0) -> None:
        self.upstream = upstream
        # The gateway's own key for the upstream, fixed now: change `upstream.api_key` later to
        # make the upstream answer 401 (a revoked key).
        self.upstream_key = upstream.api_key
        self.cooldown_seconds = cooldown_seconds
        self._lock = threading.Lock()
        self._cooling: dict[str, float] = {}  # model -> monotonic time the cooldown ends
        self.answers: list[tuple[str, int]] = []  # (path, status) of every answer given
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for prefix in ("/v1", ""):
            app.router.add_post(prefix + "/images/{endpoint:generations|edits}", self._proxy)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._server = ServerThread(app, name="gateway-emulator")

    def start(self) -> Self:
        """Start serving."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Return the API base to configure (`{url}/v1`)."""
        return f"{self._server.url}/v1"

    def reset(self) -> None:
        """Forget cooldowns and answers."""
        with self._lock:
            self._cooling.clear()
            self.answers.clear()

    def _answer(self, request: web.Request, response: web.Response) -> web.Response:
        with self._lock:
            self.answers.append((request.path, response.status))
        return response

    async def _not_found(self, request: web.Request) -> web.Response:
        await request.read()
        return self._answer(request, web.json_response(NOT_FOUND_BODY, status=404))

    async def _proxy(self, request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        raw = await request.read()
        content_type = request.headers.get("Content-Type", "")
        model = _model_of(content_type, raw)
        with self._lock:
            until = self._cooling.get(model, 0.0)
        if time.monotonic() < until:
            body = cooldown_error(model, self.cooldown_seconds)
            return self._answer(request, web.json_response(body, status=429))
        headers = {"Content-Type": content_type}
        if self.upstream_key is not None:
            headers["Authorization"] = f"Bearer {self.upstream_key}"
        async with (
            ClientSession(timeout=ClientTimeout(total=60)) as session,
            session.post(
                f"{self.upstream.base_url}/images/{endpoint}", data=raw, headers=headers
            ) as upstream,
        ):
            answer = await upstream.read()
            status, upstream_headers = upstream.status, dict(upstream.headers)
        if status == 200:
            return self._answer(request, web.Response(body=answer, content_type="application/json"))
        if status == 401:
            with self._lock:
                self._cooling[model] = time.monotonic() + self.cooldown_seconds
        status, extra, body = litellm_error(
            status, upstream_headers, answer, model=model, endpoint=endpoint
        )
        return self._answer(request, web.json_response(body, status=status, headers=extra))
