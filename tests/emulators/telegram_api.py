"""An emulated Telegram Bot API server on 127.0.0.1 for tests and benchmarks.

It speaks the wire protocol python-telegram-bot uses (JSON, url-encoded and multipart bodies),
keeps just enough state for a bot's life (updates, chats, messages, files, commands) and
enforces the real limits the bot must cope with (caption/text length, photo dimensions, HTML
entity parsing, album size, blocked users, flood limits, expiring button presses). Tests inject
traffic with `send_message` and `press_button`, script faults with `fail_next`/`set_latency`/
`lose_answer`, and inspect what the bot did with `calls`, `sent_messages` and the bounded
`wait_for`/`wait_for_async`.

Behaviour matched to the real Bot API (core.telegram.org/bots/faq, /bots/api):
- Flood limits, applied on their own (`flood_limits = False` turns them off): about one message a
  second per chat with a short burst allowed, 20 a minute per group, about 30 a second for the
  whole bot; a call over a limit is answered 429 "Too Many Requests: retry after N" with
  `parameters.retry_after`, and nothing is posted. An album counts as one message per item.
- Photos are stored at most 2560 px on their longest side (recompressed as JPEG), and the sizes
  reported say so.
- A button press must be answered within `callback_query_ttl` seconds, else answerCallbackQuery
  is 400 "query is too old and response timeout expired or query ID is invalid".
- A webhook update that is not answered 2xx within `webhook_timeout` is sent again (the same
  update_id) after `webhook_retry_delays`, then given up.

    with TelegramEmulator() as tg:
        bot = telegram.Bot(tg.token, base_url=f"{tg.url}/bot", base_file_url=f"{tg.url}/file/bot")
        tg.send_message(chat_id=1, user_id=1, text="/image alpaca")
        tg.wait_for("sendPhoto")

All state is guarded by one lock: it is touched from test threads and from the server loop.
Times (`Call.at`, `Call.finished_at`, `SentMessage.at`) are `time.monotonic()` readings.
"""

from __future__ import annotations

import asyncio
import contextvars
import html
import io
import json
import math
import mimetypes
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import ClientSession, ClientTimeout, web
from PIL import Image

from tests.emulators.server import ServerThread
from tests.emulators.telegram_payments import TelegramPayments

JSON = dict[str, Any]

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
MAX_LONG_POLL = 5.0
POLL_STEP = 0.005
MAX_PHOTO_SIDE = 2560
CALLBACK_QUERY_TTL = 15.0
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_RETRY_DELAYS = (1.0, 2.0, 4.0)
# Methods that post or change a message and so count against the flood limits.
_FLOOD_COUNTED = frozenset(
    {
        "sendmessage",
        "sendphoto",
        "senddocument",
        "sendmediagroup",
        "editmessagetext",
        "editmessagecaption",
        "editmessagereplymarkup",
        "editmessagemedia",
    }
)

_INT_KEYS = frozenset(
    {
        "chat_id",
        "message_id",
        "offset",
        "limit",
        "timeout",
        "user_id",
        "reply_to_message_id",
        "cache_time",
        "message_thread_id",
        "max_connections",
        "from_chat_id",
    }
)
# Values that are free text and never decoded, whatever they look like.
_TEXT_KEYS = frozenset(
    {
        "text",
        "caption",
        "data",
        "query",
        "callback_query_id",
        "url",
        "secret_token",
        "description",
        "short_description",
        "name",
        "file_id",
        "language_code",
        "parse_mode",
        "action",
        "inline_message_id",
        "photo",
        "document",
    }
)
_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_ENTITY_OF_TAG = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
    "blockquote": "blockquote",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "tg-emoji": "custom_emoji",
}
_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)>")
_ATTR_RE = re.compile(r"""([a-zA-Z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_RETRY_RE = re.compile(r"retry after (\d+)", re.IGNORECASE)
_FORBIDDEN_START = "Forbidden: bot can't initiate conversation with a user"


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    """One multipart file part of a request."""

    field: str
    data: bytes
    filename: str | None
    content_type: str | None


@dataclass
class Call:
    """One request the bot made: decoded params, uploaded files, times and the outcome."""

    method: str
    params: JSON
    files: dict[str, UploadedFile]
    at: float
    finished_at: float | None = None
    status: int | None = None
    response: JSON | None = None
    answer_lost: bool = False  # done, but the answer was delayed past the client or dropped

    @property
    def ok(self) -> bool:
        """Tell whether the call was answered with ok=true."""
        return self.status == 200

    @property
    def result(self) -> Any:
        """Return the `result` of a successful response (None otherwise)."""
        return None if self.response is None else self.response.get("result")


_CURRENT_CALL: contextvars.ContextVar[Call] = contextvars.ContextVar("telegram_emulator_call")


@dataclass
class SentMessage:
    """A message the bot created, with the bytes it uploaded for photos and documents.

    `message` is the live dict (edits update it); item access delegates to it. `data` is what the
    message shows now; `media_edits` holds each upload of editMessageMedia, in order.
    """

    method: str
    message: JSON
    call: Call = field(repr=False)
    data: bytes | None = None
    filename: str | None = None
    mime_type: str | None = None
    deleted: bool = False
    media_edits: list[bytes] = field(default_factory=list, repr=False)

    @property
    def at(self) -> float:
        """Return when the request that created it finished (received, while still running)."""
        return self.call.finished_at if self.call.finished_at is not None else self.call.at

    @property
    def received_at(self) -> float:
        """Return when the request that created it arrived."""
        return self.call.at

    @property
    def chat_id(self) -> int:
        """Return the chat id."""
        return int(self.message["chat"]["id"])

    @property
    def message_id(self) -> int:
        """Return the message id."""
        return int(self.message["message_id"])

    @property
    def kind(self) -> str:
        """Return "photo", "document" or "text"."""
        if "photo" in self.message:
            return "photo"
        if "document" in self.message:
            return "document"
        return "text"

    @property
    def text(self) -> str | None:
        """Return the text or caption."""
        value = self.message.get("text", self.message.get("caption"))
        return None if value is None else str(value)

    def __getitem__(self, key: str) -> Any:
        return self.message[key]

    def __contains__(self, key: object) -> bool:
        return key in self.message

    def get(self, key: str, default: Any = None) -> Any:
        """Return a field of the message dict."""
        return self.message.get(key, default)


@dataclass
class StoredFile:
    """A file the emulator can hand out through getFile and the file download route."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes


@dataclass
class _Fault:
    status: int
    description: str
    retry_after: int | None
    times: int
    chat_id: int | None = None


@dataclass
class _LostAnswer:
    delay: float
    drop: bool
    times: int
    chat_id: int | None


@dataclass
class FloodLimits:
    """Telegram's flood limits as token buckets: a rate and the burst allowed above it."""

    chat_per_second: float = 1.0
    chat_burst: int = 20
    group_per_minute: float = 20.0
    group_burst: int = 20
    bot_per_second: float = 30.0
    bot_burst: int = 30


@dataclass
class _Bucket:
    rate: float  # tokens per second
    burst: int
    tokens: float
    at: float

    def wait(self, n: int, now: float) -> float:
        """Return how long until `n` tokens are there (0: now), refilling first."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        need = min(n, self.burst)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate


@dataclass
class WebhookDelivery:
    """One attempt to POST an update to the webhook."""

    update_id: int
    status: int | None
    error: str | None
    at: float


@dataclass
class _Chat:
    data: JSON
    next_message_id: int = 1


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    sent: list[SentMessage] = field(default_factory=list)
    updates: list[JSON] = field(default_factory=list)
    next_update_id: int = 1000
    chats: dict[int, _Chat] = field(default_factory=dict)
    messages: dict[tuple[int, int], JSON] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    files_by_path: dict[str, StoredFile] = field(default_factory=dict)
    file_counter: int = 0
    commands: dict[tuple[str, str], list[JSON]] = field(default_factory=dict)
    faults: dict[str, list[_Fault]] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    callback_queries: dict[str, bool] = field(default_factory=dict)
    callback_query_times: dict[str, float] = field(default_factory=dict)
    lost_answers: dict[str, list[_LostAnswer]] = field(default_factory=dict)
    buckets: dict[object, _Bucket] = field(default_factory=dict)
    media_group_counter: int = 0
    webhook: JSON = field(default_factory=dict)
    webhook_deliveries: list[WebhookDelivery] = field(default_factory=list)
    members: dict[tuple[int, int], str] = field(default_factory=dict)


class ApiError(Exception):
    """A Bot API error answer: HTTP status, description and optional parameters."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def payload(self) -> JSON:
        """Return the JSON body Telegram would send."""
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


# -- pure helpers ----------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Count UTF-16 code units, the unit Telegram measures lengths and offsets in."""
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> tuple[str, list[JSON]]:
    """Strip Telegram-HTML tags, returning plain text and entities; raise ApiError like Telegram."""
    out: list[str] = []
    length = 0
    stack: list[tuple[str, int, JSON]] = []
    entities: list[JSON] = []
    pos = 0
    while pos < len(text):
        lt = text.find("<", pos)
        chunk = text[pos:] if lt < 0 else text[pos:lt]
        if chunk:
            plain = html.unescape(chunk)
            out.append(plain)
            length += utf16_len(plain)
        if lt < 0:
            break
        match = _TAG_RE.match(text, lt)
        byte_offset = len(text[:lt].encode())
        if match is None:
            raise _bad(f"can't parse entities: Unsupported start tag at byte offset {byte_offset}")
        closing, name, attrs = match.group(1) == "/", match.group(2).lower(), match.group(3)
        if name not in _ENTITY_OF_TAG:
            raise _bad(
                f'can\'t parse entities: Unsupported start tag "{name}" at byte offset '
                f"{byte_offset}"
            )
        if closing:
            if not stack:
                raise _bad(f"can't parse entities: Unexpected end tag at byte offset {byte_offset}")
            open_name, start, extra = stack.pop()
            if open_name != name:
                raise _bad(
                    f"can't parse entities: Unmatched end tag at byte offset {byte_offset}, "
                    f'expected "</{open_name}>", found "</{name}>"'
                )
            _close_entity(entities, stack, name=name, start=start, end=length, extra=extra)
        else:
            extra = _tag_extra(name, attrs, byte_offset)
            stack.append((name, length, extra))
        pos = match.end()
    if stack:
        raise _bad(
            "can't parse entities: Can't find end tag corresponding to start tag "
            f'"{stack[-1][0]}"'
        )
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _tag_extra(name: str, attrs: str, byte_offset: int) -> JSON:
    values = {
        m.group(1).lower(): m.group(2) or m.group(3) or m.group(4) or ""
        for m in _ATTR_RE.finditer(attrs)
    }
    if name == "a":
        return {"url": html.unescape(values.get("href", ""))}
    if name == "span" and values.get("class") != "tg-spoiler":
        raise _bad(
            f'can\'t parse entities: Tag "span" must have class "tg-spoiler" at byte offset '
            f"{byte_offset}"
        )
    if name == "code" and values.get("class", "").startswith("language-"):
        return {"language": values["class"].removeprefix("language-")}
    if name == "tg-emoji":
        return {"custom_emoji_id": values.get("emoji-id", "")}
    if name == "blockquote" and "expandable" in attrs:
        return {"expandable": True}
    return {}


def _close_entity(
    entities: list[JSON],
    stack: list[tuple[str, int, JSON]],
    *,
    name: str,
    start: int,
    end: int,
    extra: JSON,
) -> None:
    if name == "code" and stack and stack[-1][0] == "pre":
        if "language" in extra:
            stack[-1][2]["language"] = extra["language"]
        return
    if end <= start:
        return
    kind = _ENTITY_OF_TAG[name]
    if name == "blockquote" and extra.get("expandable"):
        kind = "expandable_blockquote"
    entity: JSON = {"type": kind, "offset": start, "length": end - start}
    entity.update({k: v for k, v in extra.items() if k != "expandable"})
    if kind == "text_link" and not entity.get("url"):
        return
    entities.append(entity)


def render_text(text: str, parse_mode: str | None) -> tuple[str, list[JSON]]:
    """Apply parse_mode (HTML is parsed; other modes pass through) and return text, entities."""
    if parse_mode is not None and parse_mode.upper() == "HTML":
        return parse_html(text)
    return text, []


def command_entities(text: str | None) -> list[JSON]:
    """Return the bot_command entity Telegram adds when a text starts with "/"."""
    if not text or not text.startswith("/"):
        return []
    token = re.split(r"\s", text, maxsplit=1)[0]
    if len(token) < 2:
        return []
    return [{"type": "bot_command", "offset": 0, "length": utf16_len(token)}]


def _coerce(key: str, value: str) -> Any:
    if key in _TEXT_KEYS:
        return value
    if value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if key in _INT_KEYS and re.fullmatch(r"-?\d+", value):
        return int(value)
    if value in ("true", "false"):
        return value == "true"
    return value


def _downscaled_jpeg(data: bytes, side: int) -> bytes:
    """Return the picture as a JPEG at most `side` px on its longest side, as Telegram keeps it."""
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=87)
    return out.getvalue()


def _chat_key(params: JSON) -> int | None:
    chat = params.get("chat_id")
    if isinstance(chat, int):
        return chat
    if isinstance(chat, str) and re.fullmatch(r"-?\d+", chat):
        return int(chat)
    return None


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # Pillow raises many kinds (and bomb warnings may be errors in tests)
        return None


# -- the emulator ----------------------------------------------------------------------------


Handler = Callable[[JSON, dict[str, UploadedFile]], Any]


class TelegramEmulator:
    """Emulated Bot API on a loopback port; thread-safe test API to drive and inspect it."""

    def __init__(
        self,
        token: str = "123456:TEST-token",
        *,
        bot_id: int | None = None,
        bot_username: str = "ImageTestBot",
        bot_name: str = "Image Test Bot",
        port: int = 0,
    ) -> None:
        self.token = token
        prefix = token.split(":", 1)[0]
        self.bot_id = bot_id if bot_id is not None else (int(prefix) if prefix.isdigit() else 1)
        self.bot_username = bot_username
        self.bot_name = bot_name
        self.blocked_users: set[int] = set()
        self.kicked_from: set[int] = set()  # group chats the bot was removed from
        self.flood_limits = True
        self.limits = FloodLimits()
        self.callback_query_ttl = CALLBACK_QUERY_TTL
        self.webhook_timeout = WEBHOOK_TIMEOUT
        self.webhook_retry_delays: tuple[float, ...] = WEBHOOK_RETRY_DELAYS
        self._cond = threading.Condition(threading.RLock())
        self._state = _State()
        self._closing = False
        self._server = ServerThread(self._make_app, port=port, name="telegram-emulator")
        self._handlers: dict[str, Handler] = {
            name.lower(): getattr(self, f"_m_{name}")
            for name in (
                "getMe",
                "getUpdates",
                "deleteWebhook",
                "setWebhook",
                "getWebhookInfo",
                "setMyCommands",
                "getMyCommands",
                "deleteMyCommands",
                "sendMessage",
                "sendPhoto",
                "sendDocument",
                "sendMediaGroup",
                "sendChatAction",
                "editMessageText",
                "editMessageCaption",
                "editMessageReplyMarkup",
                "editMessageMedia",
                "deleteMessage",
                "answerCallbackQuery",
                "getFile",
                "getChatMember",
                "getChat",
                "close",
                "logOut",
            )
        }
        self.payments = TelegramPayments(self)
        self._handlers.update(self.payments.handlers())

    def __repr__(self) -> str:
        return f"<TelegramEmulator bot=@{self.bot_username} running={self._server.running}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the HTTP server (blocks until it listens)."""
        self._closing = False
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop the server; pending long polls return at once."""
        self._closing = True
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
    def url(self) -> str:
        """Return the API root to use as TELEGRAM_API_URL."""
        return self._server.url

    @property
    def port(self) -> int:
        """Return the bound port."""
        return self._server.port

    @property
    def base_url(self) -> str:
        """Return the value for telegram.Bot(base_url=...)."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """Return the value for telegram.Bot(base_file_url=...)."""
        return f"{self.url}/file/bot"

    # -- scripting -----------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        description: str = "Too Many Requests: retry after 1",
        retry_after: int | None = None,
        times: int = 1,
        chat_id: int | None = None,
    ) -> None:
        """Answer the next `times` calls of `method` (or "*"), in `chat_id` if given, with an error.

        A 429 says "Too Many Requests: retry after N" and carries `retry_after`, as Telegram's do.
        """
        if status == 429 and retry_after is None:
            match = _RETRY_RE.search(description)
            retry_after = int(match.group(1)) if match else 1
        if status == 429:
            description = f"Too Many Requests: retry after {retry_after}"
        with self._cond:
            self._state.faults.setdefault(method.lower(), []).append(
                _Fault(
                    status=status,
                    description=description,
                    retry_after=retry_after,
                    times=times,
                    chat_id=chat_id,
                )
            )

    def lose_answer(
        self,
        method: str,
        *,
        delay: float = 0.0,
        drop: bool = False,
        times: int = 1,
        chat_id: int | None = None,
    ) -> None:
        """Do the next `times` calls of `method` for real, then answer `delay` s late or never.

        With `drop` the connection is closed without an answer (after `delay`), so the client
        cannot tell whether the message was posted: it was.
        """
        with self._cond:
            self._state.lost_answers.setdefault(method.lower(), []).append(
                _LostAnswer(delay=delay, drop=drop, times=times, chat_id=chat_id)
            )

    def set_latency(self, method: str, seconds: float) -> None:
        """Delay every answer to `method` (or "*" for all) by `seconds`; 0 removes it."""
        with self._cond:
            if seconds > 0:
                self._state.latency[method.lower()] = seconds
            else:
                self._state.latency.pop(method.lower(), None)

    def set_chat_admins(
        self, chat_id: int, user_ids: list[int] | set[int], *, creator_id: int | None = None
    ) -> None:
        """Make getChatMember report these users as administrators (and one as creator)."""
        with self._cond:
            for user_id in user_ids:
                self._state.members[(chat_id, user_id)] = "administrator"
            if creator_id is not None:
                self._state.members[(chat_id, creator_id)] = "creator"

    def set_chat_member(self, chat_id: int, user_id: int, status: str) -> None:
        """Set one getChatMember status: creator, administrator, member, left or kicked."""
        if status not in {"creator", "administrator", "member", "left", "kicked"}:
            raise ValueError(f"unsupported status {status!r}")
        with self._cond:
            self._state.members[(chat_id, user_id)] = status

    def reset(self) -> None:
        """Forget all calls, messages, updates, files, commands and scripted faults."""
        with self._cond:
            self._state = _State()
            self.blocked_users.clear()
            self.kicked_from.clear()
            self._cond.notify_all()

    # -- injecting traffic --------------------------------------------------------------------

    def push_update(self, update: JSON) -> JSON:
        """Queue an update (assigning update_id if missing) for getUpdates or the webhook."""
        with self._cond:
            if "update_id" not in update:
                update["update_id"] = self._state.next_update_id
            self._state.next_update_id = max(self._state.next_update_id, update["update_id"]) + 1
            webhook = dict(self._state.webhook)
            if not webhook.get("url"):
                self._state.updates.append(update)
            self._cond.notify_all()
        if webhook.get("url"):
            self._server.call_soon(lambda: asyncio.ensure_future(self._deliver(webhook, update)))
        return update

    def send_message(
        self,
        *,
        chat_id: int,
        user_id: int,
        text: str | None = None,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "Tester",
        language_code: str | None = "en",
        reply_to: JSON | SentMessage | None = None,
        photo_bytes: bytes | None = None,
        caption: str | None = None,
        document_bytes: bytes | None = None,
        document_name: str = "image.png",
        chat_title: str | None = None,
    ) -> JSON:
        """Inject a user's message and return its update dict (the message is update["message"])."""
        user = _user(user_id, first_name=first_name, username=username, language_code=language_code)
        fields: JSON = {"from": user}
        if photo_bytes is not None:
            fields["photo"] = self._photo_sizes(photo_bytes)
        if document_bytes is not None:
            fields["document"] = self._document(document_bytes, document_name, None)
        has_media = photo_bytes is not None or document_bytes is not None
        body = caption if caption is not None else text if has_media else None
        if has_media:
            if body:
                fields["caption"] = body
                if entities := command_entities(body):
                    fields["caption_entities"] = entities
        else:
            fields["text"] = text or ""
            if entities := command_entities(text):
                fields["entities"] = entities
        reply = _unwrap_message(reply_to)
        if reply is not None:
            fields["reply_to_message"] = _minimal(reply)
        with self._cond:
            self._register_chat(chat_id, chat_type, user, title=chat_title, username=username)
            message = self._new_message(chat_id, fields)
        return self.push_update({"message": message})

    def press_button(
        self,
        *,
        chat_id: int,
        user_id: int,
        message: JSON | SentMessage,
        data: str,
        username: str | None = None,
        first_name: str = "Tester",
        language_code: str | None = "en",
        age: float = 0.0,
    ) -> JSON:
        """Inject a callback_query for a bot message's inline button; return the update.

        `age` says how long ago the press happened (a press queued while the bot was offline).
        """
        msg = _unwrap_message(message)
        if msg is None:
            raise ValueError("press_button needs the bot message")
        if msg.get("chat", {}).get("id") != chat_id:
            raise ValueError("the message does not belong to chat_id")
        query_id = str(secrets.randbelow(10**18))
        with self._cond:
            self._state.callback_queries[query_id] = False
            self._state.callback_query_times[query_id] = time.monotonic() - age
            live = self._state.messages.get((chat_id, int(msg["message_id"])), msg)
            query: JSON = {
                "id": query_id,
                "from": _user(
                    user_id, first_name=first_name, username=username, language_code=language_code
                ),
                "message": json.loads(json.dumps(live)),
                "chat_instance": str(abs(chat_id) * 7919),
                "data": data,
            }
        return self.push_update({"callback_query": query})

    def add_file(self, data: bytes, *, file_path_hint: str = "documents/file.bin") -> str:
        """Store bytes as a downloadable file and return its file_id."""
        with self._cond:
            return self._store_file(data, file_path_hint).file_id

    # -- inspection ----------------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Return every recorded call, in arrival order."""
        with self._cond:
            return list(self._state.calls)

    def calls_of(self, method: str) -> list[Call]:
        """Return the recorded calls of one method (case-insensitive)."""
        wanted = method.lower()
        with self._cond:
            return [c for c in self._state.calls if c.method.lower() == wanted]

    def sent_messages(self, chat_id: int | None = None) -> list[SentMessage]:
        """Return the messages the bot created (optionally in one chat), in order."""
        with self._cond:
            return [s for s in self._state.sent if chat_id is None or s.chat_id == chat_id]

    @property
    def commands(self) -> dict[tuple[str, str], list[JSON]]:
        """Return the stored command lists keyed by (scope key, language_code).

        The scope key is the scope type, plus ":chat_id" and ":user_id" when the scope has them,
        e.g. ("default", ""), ("all_private_chats", "ru"), ("chat:-100", "").
        """
        with self._cond:
            return {k: list(v) for k, v in self._state.commands.items()}

    @property
    def pending_updates(self) -> list[JSON]:
        """Return updates not yet confirmed by getUpdates."""
        with self._cond:
            return list(self._state.updates)

    @property
    def webhook(self) -> JSON:
        """Return the current webhook settings (url, secret_token, ...), empty when unset."""
        with self._cond:
            return dict(self._state.webhook)

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Return the attempts made to POST updates to the webhook."""
        with self._cond:
            return list(self._state.webhook_deliveries)

    def file_bytes(self, file_id: str) -> bytes:
        """Return the bytes stored under a file_id."""
        with self._cond:
            return self._state.files[file_id].data

    def wait_for(
        self,
        what: Callable[[Call], bool] | str,
        *,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[Call]:
        """Block until `count` finished calls match; return them all or raise AssertionError."""
        match = _matcher(what)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self._state.calls if c.finished_at is not None and match(c)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(self._timeout_message(what, count, len(found), timeout))
                self._cond.wait(min(left, 0.2))

    async def wait_for_async(
        self,
        what: Callable[[Call], bool] | str,
        *,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[Call]:
        """Like wait_for, but poll with asyncio.sleep so the caller's loop keeps running."""
        match = _matcher(what)
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                found = [c for c in self._state.calls if c.finished_at is not None and match(c)]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(self._timeout_message(what, count, len(found), timeout))
            await asyncio.sleep(0.01)

    def _timeout_message(
        self, what: Callable[[Call], bool] | str, count: int, found: int, timeout: float
    ) -> str:
        with self._cond:
            calls = list(self._state.calls)
        per_method: dict[str, int] = {}
        for c in calls:
            per_method[c.method] = per_method.get(c.method, 0) + 1
        recent = [c for c in calls if c.method.lower() != "getupdates"][-15:]
        lines = [
            f"timed out after {timeout} s waiting for {count} x {_describe(what)}; matched {found}",
            f"calls per method: {per_method}",
            "recent calls (getUpdates omitted):",
        ]
        lines += [f"  {c.method} -> {c.status} {_short(c.params)}" for c in recent]
        return "\n".join(lines)

    # -- HTTP layer ------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 8 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        return app

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, files = await _read_params(request)
        call = Call(method=method, params=params, files=files, at=time.monotonic())
        _CURRENT_CALL.set(call)
        with self._cond:
            self._state.calls.append(call)
            delay = self._state.latency.get(method.lower(), self._state.latency.get("*", 0.0))
        if request.match_info["token"] != self.token:
            return self._finish(call, ApiError(401, "Unauthorized").payload(), 401)
        handler = self._handlers.get(method.lower())
        if handler is None:
            return self._finish(call, ApiError(404, "Not Found").payload(), 404)
        if delay:
            await asyncio.sleep(delay)
        try:
            self._take_fault(method, params)
            self._check_flood(method, params)
            result = handler(params, files)
            if asyncio.iscoroutine(result):
                result = await result
        except ApiError as exc:
            return self._finish(call, exc.payload(), exc.status)
        lost = self._take_lost_answer(method, params)
        if lost is None:
            return self._finish(call, {"ok": True, "result": result}, 200)
        call.answer_lost = True
        response = self._finish(call, {"ok": True, "result": result}, 200)
        answer_at = time.monotonic() + lost.delay
        while not self._closing and (left := answer_at - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))  # cut short when the emulator stops
        if lost.drop and request.transport is not None:
            request.transport.close()
        return response

    def _finish(self, call: Call, body: JSON, status: int) -> web.Response:
        with self._cond:
            call.finished_at = time.monotonic()
            call.status = status
            call.response = body
            self._cond.notify_all()
        return web.json_response(body, status=status)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(ApiError(401, "Unauthorized").payload(), status=401)
        with self._cond:
            stored = self._state.files_by_path.get(request.match_info["path"])
        if stored is None:
            return web.json_response(ApiError(404, "Not Found").payload(), status=404)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    def _take_fault(self, method: str, params: JSON) -> None:
        chat = _chat_key(params)
        with self._cond:
            for key in (method.lower(), "*"):
                queue = self._state.faults.get(key) or []
                fault = next((f for f in queue if f.chat_id in (None, chat)), None)
                if fault is None:
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    queue.remove(fault)
                parameters = (
                    {"retry_after": fault.retry_after} if fault.retry_after is not None else None
                )
                raise ApiError(fault.status, fault.description, parameters)

    def _take_lost_answer(self, method: str, params: JSON) -> _LostAnswer | None:
        chat = _chat_key(params)
        with self._cond:
            queue = self._state.lost_answers.get(method.lower()) or []
            lost = next((item for item in queue if item.chat_id in (None, chat)), None)
            if lost is not None:
                lost.times -= 1
                if lost.times <= 0:
                    queue.remove(lost)
            return lost

    def _check_flood(self, method: str, params: JSON) -> None:
        """Refuse a message over the chat's, the group's or the bot's limit with a 429."""
        if not self.flood_limits or method.lower() not in _FLOOD_COUNTED:
            return
        chat = _chat_key(params)
        media = params.get("media")
        n = len(media) if method.lower() == "sendmediagroup" and isinstance(media, list) else 1
        limits = self.limits
        now = time.monotonic()
        with self._cond:
            buckets = [self._bucket("bot", limits.bot_per_second, limits.bot_burst, now)]
            if chat is not None and chat < 0:
                rate = limits.group_per_minute / 60
                buckets.append(self._bucket(("group", chat), rate, limits.group_burst, now))
            elif chat is not None:
                rate = limits.chat_per_second
                buckets.append(self._bucket(("chat", chat), rate, limits.chat_burst, now))
            wait = max(bucket.wait(n, now) for bucket in buckets)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                raise ApiError(
                    429,
                    f"Too Many Requests: retry after {retry_after}",
                    {"retry_after": retry_after},
                )
            for bucket in buckets:
                bucket.tokens -= min(n, bucket.burst)

    def _bucket(self, key: object, rate: float, burst: int, now: float) -> _Bucket:
        bucket = self._state.buckets.get(key)
        if bucket is None:
            bucket = self._state.buckets[key] = _Bucket(
                rate=rate, burst=burst, tokens=float(burst), at=now
            )
        return bucket

    async def _deliver(self, webhook: JSON, update: JSON) -> None:
        """POST one update to the webhook; send it again while it is not answered 2xx in time."""
        for attempt, pause in enumerate((0.0, *self.webhook_retry_delays)):
            if attempt:
                await asyncio.sleep(pause)
                with self._cond:
                    webhook = dict(self._state.webhook)
                if not webhook.get("url") or self._closing:
                    return
            status, error = await self._post_update(webhook, update)
            with self._cond:
                self._state.webhook_deliveries.append(
                    WebhookDelivery(
                        update_id=update["update_id"],
                        status=status,
                        error=error,
                        at=time.monotonic(),
                    )
                )
                self._cond.notify_all()
            if status is not None and 200 <= status < 300:
                return

    async def _post_update(self, webhook: JSON, update: JSON) -> tuple[int | None, str | None]:
        headers = {}
        if webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = str(webhook["secret_token"])
        try:
            async with (
                ClientSession(timeout=ClientTimeout(total=self.webhook_timeout)) as session,
                session.post(webhook["url"], json=update, headers=headers) as response,
            ):
                return response.status, None
        except Exception as exc:  # recorded for the test to inspect
            return None, repr(exc)

    # -- state helpers (call with the lock held) ------------------------------------------------

    def _bot_user(self) -> JSON:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_name,
            "username": self.bot_username,
        }

    def _register_chat(
        self,
        chat_id: int,
        chat_type: str,
        user: JSON,
        *,
        title: str | None = None,
        username: str | None = None,
    ) -> None:
        if chat_id in self._state.chats:
            return
        if chat_type == "private":
            data: JSON = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
            if username:
                data["username"] = username
        else:
            data = {"id": chat_id, "type": chat_type, "title": title or f"Test chat {chat_id}"}
        self._state.chats[chat_id] = _Chat(data=data)

    def _chat(self, chat_ref: Any) -> _Chat:
        if isinstance(chat_ref, str) and chat_ref.startswith("@"):
            for chat in self._state.chats.values():
                if chat.data.get("username", "").lower() == chat_ref[1:].lower():
                    return chat
            raise _bad("chat not found")
        try:
            chat_id = int(chat_ref)
        except (TypeError, ValueError):
            raise _bad("chat_id is empty") from None
        known = self._state.chats.get(chat_id)
        if known is not None:
            return known
        if chat_id > 0:
            data: JSON = {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}
        else:
            kind = "supergroup" if str(chat_id).startswith("-100") else "group"
            data = {"id": chat_id, "type": kind, "title": f"Test chat {chat_id}"}
        chat = self._state.chats[chat_id] = _Chat(data=data)
        return chat

    def _new_message(self, chat_id: int, fields: JSON) -> JSON:
        chat = self._state.chats[chat_id]
        message: JSON = {
            "message_id": chat.next_message_id,
            "date": int(time.time()),
            "chat": dict(chat.data),
        }
        chat.next_message_id += 1
        message.update(fields)
        self._state.messages[(chat_id, message["message_id"])] = message
        return message

    def _store_file(self, data: bytes, hint: str) -> StoredFile:
        self._state.file_counter += 1
        n = self._state.file_counter
        folder, _, name = hint.rpartition("/")
        suffix = name[name.rfind(".") :] if "." in name else ""
        path = f"{folder or 'documents'}/file_{n}{suffix}"
        stored = StoredFile(
            file_id=f"BQACAgIAAx{secrets.token_hex(12)}{n}",
            file_unique_id=f"AgAD{n:06d}",
            file_path=path,
            data=data,
        )
        self._state.files[stored.file_id] = stored
        self._state.files_by_path[path] = stored
        return stored

    def _photo_sizes(self, data: bytes) -> list[JSON]:
        size = _image_size(data)
        if size is None:
            raise _bad("IMAGE_PROCESS_FAILED")
        width, height = size
        longest = max(width, height)
        if longest > MAX_PHOTO_SIDE:
            data = _downscaled_jpeg(data, MAX_PHOTO_SIDE)
        with self._cond:
            stored = self._store_file(data, "photos/file.jpg")
        sizes: list[JSON] = []
        for limit in (90, 320, 800, 1280, 2560):
            scale = min(1.0, limit / longest)
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            is_last = scale == 1.0 or limit == 2560
            if is_last:
                sizes.append(_photo_size(stored, w, h, len(data)))
                break
            with self._cond:
                thumb = self._store_file(data, "photos/file.jpg")
            sizes.append(_photo_size(thumb, w, h, max(1, int(len(data) * scale * scale))))
        return sizes

    def _document(self, data: bytes, filename: str | None, content_type: str | None) -> JSON:
        name = filename or "file"
        mime = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        if mime == "application/octet-stream":
            mime = mimetypes.guess_type(name)[0] or mime
        with self._cond:
            stored = self._store_file(data, f"documents/{name}")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": name,
            "mime_type": mime,
            "file_size": len(data),
        }

    def _resolve_file(
        self, ref: Any, files: dict[str, UploadedFile], field_name: str
    ) -> UploadedFile | StoredFile:
        if ref is None and field_name in files:
            return files[field_name]
        if isinstance(ref, str) and ref.startswith("attach://"):
            part = files.get(ref.removeprefix("attach://"))
            if part is None:
                raise _bad(f"file of field {ref.removeprefix('attach://')} not found")
            return part
        if isinstance(ref, str):
            with self._cond:
                stored = self._state.files.get(ref)
            if stored is not None:
                return stored
            raise _bad("wrong file identifier/HTTP URL specified")
        raise _bad(f"there is no {field_name} in the request")

    def _check_blocked(self, chat: _Chat) -> None:
        if chat.data["type"] == "private" and chat.data["id"] in self.blocked_users:
            raise ApiError(403, _FORBIDDEN_START)
        if chat.data["id"] in self.kicked_from:
            kind = "supergroup chat" if chat.data["type"] == "supergroup" else "group chat"
            raise ApiError(403, f"Forbidden: bot was kicked from the {kind}")

    def _reply_fields(self, chat_id: int, params: JSON) -> JSON:
        reply_params = params.get("reply_parameters")
        reply_id = params.get("reply_to_message_id")
        allow = bool(params.get("allow_sending_without_reply"))
        if isinstance(reply_params, dict):
            reply_id = reply_params.get("message_id")
            allow = allow or bool(reply_params.get("allow_sending_without_reply"))
            chat_id = int(reply_params.get("chat_id", chat_id))
        if reply_id is None:
            return {}
        with self._cond:
            target = self._state.messages.get((chat_id, int(reply_id)))
        if target is None:
            if allow:
                return {}
            raise _bad("message to be replied not found")
        return {"reply_to_message": _minimal(target)}

    def _markup_fields(self, params: JSON) -> JSON:
        markup = params.get("reply_markup")
        if not isinstance(markup, dict) or "inline_keyboard" not in markup:
            return {}
        for row in markup["inline_keyboard"]:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise _bad("BUTTON_DATA_INVALID")
        return {"reply_markup": markup}

    def _caption_fields(self, caption: Any, parse_mode: Any) -> JSON:
        if caption is None or caption == "":
            return {}
        plain, entities = render_text(str(caption), parse_mode)
        if utf16_len(plain) > MAX_CAPTION:
            raise _bad("message caption is too long")
        fields: JSON = {"caption": plain}
        if entities:
            fields["caption_entities"] = entities
        return fields

    def _record_sent(
        self,
        method: str,
        message: JSON,
        *,
        upload: UploadedFile | StoredFile | None = None,
        filename: str | None = None,
        mime_type: str | None = None,
    ) -> None:
        data = upload.data if upload is not None else None
        with self._cond:
            self._state.sent.append(
                SentMessage(
                    method=method,
                    message=message,
                    call=_CURRENT_CALL.get(),
                    data=data,
                    filename=filename,
                    mime_type=mime_type,
                )
            )

    def _bot_message(self, chat: _Chat, fields: JSON) -> JSON:
        with self._cond:
            return self._new_message(chat.data["id"], {"from": self._bot_user(), **fields})

    def _validated_photo(self, upload: UploadedFile | StoredFile) -> None:
        data = upload.data
        if len(data) > MAX_PHOTO_BYTES:
            raise _bad("PHOTO_INVALID_DIMENSIONS")
        size = _image_size(data)
        if size is None:
            raise _bad("IMAGE_PROCESS_FAILED")
        width, height = size
        if width + height > 10000 or max(width, height) > 20 * min(width, height):
            raise _bad("PHOTO_INVALID_DIMENSIONS")

    # -- Bot API methods -------------------------------------------------------------------------

    def _m_getMe(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _m_getUpdates(self, params: JSON, files: dict[str, UploadedFile]) -> list[JSON]:
        offset = int(params.get("offset") or 0)
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = max(0.0, min(MAX_LONG_POLL, float(params.get("timeout") or 0)))
        with self._cond:
            if self._state.webhook.get("url"):
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            updates = self._state.updates
            if offset > 0:
                updates[:] = [u for u in updates if u["update_id"] >= offset]
            elif offset < 0:
                updates[:] = updates[offset:]
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                ready = [json.loads(json.dumps(u)) for u in self._state.updates[:limit]]
            if ready or self._closing or time.monotonic() >= deadline:
                return ready
            await asyncio.sleep(POLL_STEP)

    def _m_deleteWebhook(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        with self._cond:
            self._state.webhook = {}
            if params.get("drop_pending_updates"):
                self._state.updates.clear()
        return True

    def _m_setWebhook(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        url = str(params.get("url") or "")
        if url and not url.startswith(("http://", "https://")):
            raise _bad("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
        with self._cond:
            self._state.webhook = {k: v for k, v in params.items() if v is not None} if url else {}
            if params.get("drop_pending_updates"):
                self._state.updates.clear()
            pending, self._state.updates = list(self._state.updates), []
        if url:
            for update in pending:
                self.push_update(update)
        return True

    def _m_getWebhookInfo(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        with self._cond:
            return {
                "url": str(self._state.webhook.get("url", "")),
                "has_custom_certificate": False,
                "pending_update_count": len(self._state.updates),
            }

    @staticmethod
    def _commands_key(params: JSON) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        if not isinstance(scope, dict) or "type" not in scope:
            raise _bad("invalid scope")
        key = str(scope["type"])
        for part in ("chat_id", "user_id"):
            if part in scope:
                key += f":{scope[part]}"
        return key, str(params.get("language_code") or "")

    def _m_setMyCommands(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("commands must be a list of at most 100 BotCommand")
        for command in commands:
            if not _COMMAND_RE.fullmatch(str(command.get("command", ""))):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        with self._cond:
            self._state.commands[self._commands_key(params)] = [
                {"command": c["command"], "description": c["description"]} for c in commands
            ]
        return True

    def _m_getMyCommands(self, params: JSON, files: dict[str, UploadedFile]) -> list[JSON]:
        with self._cond:
            return list(self._state.commands.get(self._commands_key(params), []))

    def _m_deleteMyCommands(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        with self._cond:
            self._state.commands.pop(self._commands_key(params), None)
        return True

    def _m_sendMessage(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        with self._cond:
            chat = self._chat(params.get("chat_id"))
        self._check_blocked(chat)
        text, entities = render_text(str(params.get("text") or ""), params.get("parse_mode"))
        if not text.strip():
            raise _bad("message text is empty")
        if utf16_len(text) > MAX_TEXT:
            raise _bad("message is too long")
        fields: JSON = {"text": text}
        if entities:
            fields["entities"] = entities
        fields.update(self._reply_fields(chat.data["id"], params))
        fields.update(self._markup_fields(params))
        message = self._bot_message(chat, fields)
        self._record_sent("sendMessage", message)
        return message

    def _m_sendPhoto(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        with self._cond:
            chat = self._chat(params.get("chat_id"))
        self._check_blocked(chat)
        upload = self._resolve_file(params.get("photo"), files, "photo")
        self._validated_photo(upload)
        fields = self._caption_fields(params.get("caption"), params.get("parse_mode"))
        fields.update(self._reply_fields(chat.data["id"], params))
        fields.update(self._markup_fields(params))
        fields["photo"] = self._photo_sizes(upload.data)
        if params.get("has_spoiler"):
            fields["has_media_spoiler"] = True
        message = self._bot_message(chat, fields)
        self._record_sent(
            "sendPhoto",
            message,
            upload=upload,
            filename=getattr(upload, "filename", None),
            mime_type=getattr(upload, "content_type", None),
        )
        return message

    def _m_sendDocument(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        with self._cond:
            chat = self._chat(params.get("chat_id"))
        self._check_blocked(chat)
        upload = self._resolve_file(params.get("document"), files, "document")
        document = self._document_for(upload)
        fields = self._caption_fields(params.get("caption"), params.get("parse_mode"))
        fields.update(self._reply_fields(chat.data["id"], params))
        fields.update(self._markup_fields(params))
        fields["document"] = document
        message = self._bot_message(chat, fields)
        self._record_sent(
            "sendDocument",
            message,
            upload=upload,
            filename=document["file_name"],
            mime_type=document["mime_type"],
        )
        return message

    def _document_for(self, upload: UploadedFile | StoredFile) -> JSON:
        if len(upload.data) > MAX_UPLOAD_BYTES:
            raise ApiError(413, "Request Entity Too Large")
        if isinstance(upload, StoredFile):
            name = upload.file_path.rpartition("/")[2]
            return self._document(upload.data, name, None)
        return self._document(upload.data, upload.filename, upload.content_type)

    def _m_sendMediaGroup(self, params: JSON, files: dict[str, UploadedFile]) -> list[JSON]:
        with self._cond:
            chat = self._chat(params.get("chat_id"))
        self._check_blocked(chat)
        media = params.get("media")
        if not isinstance(media, list):
            raise _bad("media must be an array")
        if len(media) < 2:
            raise _bad("wrong number of media specified: an album must contain 2-10 items")
        if len(media) > 10:
            raise _bad("too many messages to send as an album")
        kinds = {str(item.get("type")) for item in media}
        if "document" in kinds and kinds != {"document"}:
            raise _bad("document can't be mixed with other media types")
        prepared: list[tuple[JSON, UploadedFile | StoredFile, JSON]] = []
        for item in media:
            if not item.get("media"):
                # Real Telegram: an album item must name its file (attach://<part> or file_id).
                raise _bad("media not found")
            upload = self._resolve_file(item.get("media"), files, "media")
            if item.get("type") == "photo":
                self._validated_photo(upload)
            elif item.get("type") != "document":
                raise _bad(f"unsupported media type {item.get('type')!r} in the emulator")
            caption = self._caption_fields(item.get("caption"), item.get("parse_mode"))
            prepared.append((item, upload, caption))
        reply = self._reply_fields(chat.data["id"], params)
        with self._cond:
            self._state.media_group_counter += 1
            group_id = str(13_000_000_000_000_000 + self._state.media_group_counter)
        messages: list[JSON] = []
        for item, upload, caption in prepared:
            fields: JSON = {"media_group_id": group_id, **caption, **reply}
            if item.get("type") == "photo":
                fields["photo"] = self._photo_sizes(upload.data)
                filename = getattr(upload, "filename", None)
                mime = getattr(upload, "content_type", None)
            else:
                fields["document"] = self._document_for(upload)
                filename = fields["document"]["file_name"]
                mime = fields["document"]["mime_type"]
            message = self._bot_message(chat, fields)
            self._record_sent(
                "sendMediaGroup", message, upload=upload, filename=filename, mime_type=mime
            )
            messages.append(message)
        return messages

    def _m_sendChatAction(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        with self._cond:
            chat = self._chat(params.get("chat_id"))
        self._check_blocked(chat)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    def _editable(self, params: JSON) -> JSON:
        if params.get("inline_message_id"):
            raise _bad("inline messages are not supported by the emulator")
        with self._cond:
            chat = self._chat(params.get("chat_id"))
            message = self._state.messages.get(
                (chat.data["id"], int(params.get("message_id") or 0))
            )
        if message is None:
            raise _bad("message to edit not found")
        if message.get("from", {}).get("id") != self.bot_id:
            raise _bad("message can't be edited")
        return message

    def _apply_edit(self, message: JSON, changes: JSON, drop: tuple[str, ...]) -> JSON:
        with self._cond:
            before = {k: message.get(k) for k in (*changes, *drop)}
            after = {**dict.fromkeys(drop), **changes}
            if before == after:
                raise _bad(
                    "message is not modified: specified new message content and reply markup "
                    "are exactly the same as a current content and reply markup of the message"
                )
            for key in drop:
                message.pop(key, None)
            message.update(changes)
            message["edit_date"] = int(time.time())
            copy: JSON = json.loads(json.dumps(message))
            return copy

    def _m_editMessageText(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        message = self._editable(params)
        if "text" not in message:
            raise _bad("there is no text in the message to edit")
        text, entities = render_text(str(params.get("text") or ""), params.get("parse_mode"))
        if not text.strip():
            raise _bad("message text is empty")
        if utf16_len(text) > MAX_TEXT:
            raise _bad("message is too long")
        changes: JSON = {"text": text}
        if entities:
            changes["entities"] = entities
        changes.update(self._markup_fields(params))
        drop = tuple(k for k in ("entities", "reply_markup") if k not in changes)
        return self._apply_edit(message, changes, drop)

    def _m_editMessageCaption(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        message = self._editable(params)
        if "text" in message:
            raise _bad("there is no caption in the message to edit")
        changes = self._caption_fields(params.get("caption"), params.get("parse_mode"))
        changes.update(self._markup_fields(params))
        drop = tuple(k for k in ("caption", "caption_entities", "reply_markup") if k not in changes)
        return self._apply_edit(message, changes, drop)

    def _m_editMessageReplyMarkup(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        message = self._editable(params)
        changes = self._markup_fields(params)
        drop = () if changes else ("reply_markup",)
        return self._apply_edit(message, changes, drop)

    def _m_editMessageMedia(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        """Replace a message's photo or document (or add one to a text message), as Telegram does.

        The new media's caption replaces the old one (none given: no caption); an album item
        stays of its album's kind (a photo for photo albums, a document for document albums);
        the keyboard is the one passed, none when none is.
        """
        message = self._editable(params)
        media = params.get("media")
        if isinstance(media, str):
            try:
                media = json.loads(media)
            except ValueError:
                raise _bad("can't parse InputMedia JSON object") from None
        if not isinstance(media, dict) or media.get("type") not in {"photo", "document"}:
            raise _bad("there is no media in the request")
        kind = str(media["type"])
        if message.get("media_group_id") and kind not in message:
            raise _bad("can't edit the media of an album item to another kind")
        upload = self._resolve_file(media.get("media"), files, "media")
        changes = self._caption_fields(media.get("caption"), media.get("parse_mode"))
        if kind == "photo":
            self._validated_photo(upload)
            changes["photo"] = self._photo_sizes(upload.data)
            filename, mime = (
                getattr(upload, "filename", None),
                getattr(upload, "content_type", None),
            )
        else:
            changes["document"] = self._document_for(upload)
            filename, mime = changes["document"]["file_name"], changes["document"]["mime_type"]
        changes.update(self._markup_fields(params))
        drop = tuple(
            key
            for key in (
                "text",
                "entities",
                "photo",
                "document",
                "caption",
                "caption_entities",
                "reply_markup",
                "has_media_spoiler",
            )
            if key not in changes
        )
        edited = self._apply_edit(message, changes, drop)
        with self._cond:
            for sent in self._state.sent:
                if (sent.chat_id, sent.message_id) == (edited["chat"]["id"], edited["message_id"]):
                    sent.data, sent.filename, sent.mime_type = upload.data, filename, mime
                    sent.media_edits.append(upload.data)
        return edited

    def _m_deleteMessage(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        with self._cond:
            chat = self._chat(params.get("chat_id"))
            key = (chat.data["id"], int(params.get("message_id") or 0))
            if self._state.messages.pop(key, None) is None:
                raise _bad("message to delete not found")
            for sent in self._state.sent:
                if (sent.chat_id, sent.message_id) == key:
                    sent.deleted = True
        return True

    def _m_answerCallbackQuery(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        with self._cond:
            pressed = self._state.callback_query_times.get(query_id, 0.0)
            too_old = time.monotonic() - pressed > self.callback_query_ttl
            if self._state.callback_queries.get(query_id, True) or too_old:
                raise _bad("query is too old and response timeout expired or query ID is invalid")
            self._state.callback_queries[query_id] = True
        if len(str(params.get("text") or "")) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        return True

    def _m_getFile(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        with self._cond:
            stored = self._state.files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise _bad("invalid file_id")
        if len(stored.data) > MAX_DOWNLOAD_BYTES:
            raise _bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

    def _m_getChatMember(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        user_id = int(params.get("user_id") or 0)
        with self._cond:
            chat = self._chat(params.get("chat_id"))
            status = self._state.members.get((chat.data["id"], user_id), "member")
        user = _user(user_id, first_name=f"User{user_id}")
        if user_id == self.bot_id:
            user = self._bot_user()
        if status == "administrator":
            return {"status": status, "user": user, **_ADMIN_RIGHTS}
        if status == "creator":
            return {"status": status, "user": user, "is_anonymous": False}
        if status == "kicked":
            return {"status": status, "user": user, "until_date": 0}
        return {"status": status, "user": user}

    def _m_getChat(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        with self._cond:
            chat = self._chat(params.get("chat_id"))
        return {
            **chat.data,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    def _m_close(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        return True

    def _m_logOut(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        return True


_ADMIN_RIGHTS: JSON = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": True,
    "can_restrict_members": True,
    "can_promote_members": False,
    "can_change_info": True,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
    "can_pin_messages": True,
}


# -- module helpers ----------------------------------------------------------------------------


async def _read_params(request: web.Request) -> tuple[JSON, dict[str, UploadedFile]]:
    params: JSON = {}
    files: dict[str, UploadedFile] = {}
    for key, query_value in request.query.items():
        params[key] = _coerce(key, query_value)
    if request.method == "GET" or not request.can_read_body:
        return params, files
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
        return params, files
    form = await request.post()
    for key, item in form.items():
        value: Any = item
        if isinstance(value, web.FileField):
            files[key] = UploadedFile(
                field=key,
                data=value.file.read(),
                filename=value.filename,
                content_type=value.content_type,
            )
        else:
            params[key] = _coerce(key, str(value))
    return params, files


def _user(
    user_id: int,
    *,
    first_name: str,
    username: str | None = None,
    language_code: str | None = None,
) -> JSON:
    user: JSON = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username:
        user["username"] = username
    if language_code:
        user["language_code"] = language_code
    return user


def _photo_size(stored: StoredFile, width: int, height: int, file_size: int) -> JSON:
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "width": width,
        "height": height,
        "file_size": file_size,
    }


def _minimal(message: JSON) -> JSON:
    return {k: v for k, v in message.items() if k not in ("reply_to_message", "reply_markup")}


def _unwrap_message(value: JSON | SentMessage | None) -> JSON | None:
    if value is None:
        return None
    if isinstance(value, SentMessage):
        return value.message
    if "message_id" not in value:
        for key in ("message", "edited_message", "channel_post"):
            if isinstance(value.get(key), dict):
                return dict(value[key])
        callback = value.get("callback_query")
        if isinstance(callback, dict) and isinstance(callback.get("message"), dict):
            return dict(callback["message"])
    return value


def _matcher(what: Callable[[Call], bool] | str) -> Callable[[Call], bool]:
    if isinstance(what, str):
        wanted = what.lower()
        return lambda call: call.method.lower() == wanted
    return what


def _describe(what: Callable[[Call], bool] | str) -> str:
    return repr(what) if isinstance(what, str) else getattr(what, "__name__", "predicate")


def _short(params: JSON) -> str:
    parts = []
    for key, value in params.items():
        text = repr(value)
        parts.append(f"{key}={text[:60]}{'…' if len(text) > 60 else ''}")
    return ", ".join(parts)
