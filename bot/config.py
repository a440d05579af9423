"""Own the bot's settings: the frozen `Settings` object and `load_settings`, which parses them.

`load_settings(env)` reads every variable of the configuration contract (DEVELOPERS.md) from a
mapping (``os.environ`` in ``bot.__main__``; nothing else reads the environment), collects every
problem it finds and raises one `ConfigError` naming each bad variable and the expected form.
Secrets are wrapped in `Secret`, so neither a `Settings` repr nor an error message shows them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bot import pricing
from bot.redaction import redact

ENV_VARS: tuple[str, ...] = (
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_URL",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "IMAGE_MODEL",
    "IMAGE_MODELS",
    "MODEL_ALIASES",
    "OPENAI_EXTRA_HEADERS",
    "OPENAI_EXTRA_BODY",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_IMAGE_QUALITY",
    "IMAGE_TIMEOUT_SECONDS",
    "IMAGE_MAX_ATTEMPTS",
    "IMAGE_MAX_RESPONSE_MB",
    "MAX_CONCURRENT_GENERATIONS",
    "MAX_INFLIGHT_PER_USER",
    "STATUS_MESSAGE_DELAY_SECONDS",
    "ALLOWED_USER_IDS",
    "ALLOWED_CHAT_IDS",
    "ADMIN_USER_IDS",
    "DAILY_IMAGE_LIMIT",
    "DAILY_CHAT_IMAGE_LIMIT",
    "DATA_DIR",
    "LOG_LEVEL",
    "STARTUP_FAILURE_DELAY_SECONDS",
    "WEBHOOK_URL",
    "WEBHOOK_LISTEN",
    "WEBHOOK_PORT",
    "WEBHOOK_SECRET_TOKEN",
    "TELEGRAM_UPLOAD_LIMIT_MB",
    "ORIGINALS_MAX_MB",
    "STALE_COMMAND_SECONDS",
    "DAILY_BUDGET_USD",
    "MODEL_PRICES",
    "STARS_PER_IMAGE",
    "STAR_PACKS",
    "STREAM_PREVIEWS",
    "PREVIEW_IMAGES",
    "METRICS_PORT",
    "METRICS_LISTEN",
    "STORE_URL",
    "JOB_MAX_AGE_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
)
"""Every environment variable `load_settings` reads, in the order of the contract table."""

STREAM_MODES: tuple[str, ...] = ("auto", "on", "off")
"""STREAM_PREVIEWS: auto streams the models known to stream (the GPT image family)."""

LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_IMAGE_MODEL = "gpt-image-2"
DEFAULT_STAR_PACKS: tuple[int, ...] = (10, 50, 200)
MAX_STARS = 10_000  # Telegram's largest single Stars payment

_TOKEN_RE = re.compile(r"\A[0-9]+:[A-Za-z0-9_-]+\Z")
_HEADER_NAME_RE = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_WEBHOOK_SECRET_RE = re.compile(r"\A[A-Za-z0-9_-]{1,256}\Z")
_SIZE_RE = re.compile(r"\A[0-9]{1,5}[x×][0-9]{1,5}\Z", re.IGNORECASE)
_SIZE_WORDS = ("square", "landscape", "portrait", "auto")
_SHOWN_MAX = 60

PLACEHOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "TELEGRAM_BOT_TOKEN": "123456789:AAExampleTokenReplaceMe_with-your-own",
        "OPENAI_API_KEY": "sk-replace-me",
        "WEBHOOK_SECRET_TOKEN": "replace-with-a-long-random-string",
    }
)
"""The example values of .env.example's secrets; start-up refuses them by name."""
# Also a half-edited example ("sk-replace-me-too", "...ReplaceMe...").
_PLACEHOLDER_RE = re.compile(r"replace[-_]?(?:me|with)", re.IGNORECASE)

_T = TypeVar("_T")


class Secret:
    """A string that never shows itself in `repr`, `str` or formatting."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def get(self) -> str:
        """Return the secret value."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "**********" if self._value else ""


class ConfigError(Exception):
    """Start-up configuration is missing or malformed; `problems` names each bad variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class Settings:
    """Every setting of the configuration contract, parsed and validated."""

    telegram_bot_token: Secret = field(default_factory=Secret)
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    openai_base_url: str = DEFAULT_OPENAI_BASE_URL
    openai_api_key: Secret = field(default_factory=Secret)
    image_model: str = DEFAULT_IMAGE_MODEL
    image_models: tuple[str, ...] = ()
    openai_extra_headers: Mapping[str, str] = field(
        default_factory=lambda: _frozen_mapping(None), hash=False
    )
    openai_extra_body: Mapping[str, Any] = field(
        default_factory=lambda: _frozen_mapping(None), hash=False
    )
    default_image_size: str | None = None
    default_image_quality: str | None = None
    image_timeout_seconds: float = 180.0
    image_max_response_mb: int = 64
    max_concurrent_generations: int = 64
    max_inflight_per_user: int = 2
    status_message_delay_seconds: float = 8.0
    allowed_user_ids: frozenset[int] = frozenset()
    allowed_chat_ids: frozenset[int] = frozenset()
    admin_user_ids: frozenset[int] = frozenset()
    daily_image_limit: int = 0
    daily_chat_image_limit: int = 0
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    startup_failure_delay_seconds: float = 0.0
    webhook_url: str | None = None
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = 8443
    webhook_secret_token: Secret = field(default_factory=Secret)
    image_max_attempts: int = 3
    # Operator model name -> capability table family ("dall-e-3", ... or "unknown").
    model_aliases: Mapping[str, str] = field(
        default_factory=lambda: _frozen_mapping(None), hash=False
    )
    telegram_upload_limit_mb: int = 50
    originals_max_mb: int = 1024
    stale_command_seconds: float = 600.0
    daily_budget: pricing.Nanos = 0  # DAILY_BUDGET_USD in nano-dollars; 0 = no budget
    model_prices: Mapping[str, pricing.ModelPrice] = field(
        default_factory=lambda: _frozen_mapping(None), hash=False
    )
    stars_per_image: int = 0
    star_packs: tuple[int, ...] = DEFAULT_STAR_PACKS
    stream_previews: str = "auto"
    preview_images: int = 2
    metrics_port: int | None = None  # /healthz and /metrics in polling mode; None = off
    metrics_listen: str = "127.0.0.1"
    # Empty: SQLite in DATA_DIR; postgresql://user:password@host/db: PostgreSQL (a secret: the
    # URL carries the password).
    store_url: Secret = field(default_factory=Secret)
    job_max_age_seconds: float = 1800.0  # older unfinished jobs are refunded, not resumed
    shutdown_grace_seconds: float = 15.0  # what running jobs get on SIGTERM before cancellation

    def __post_init__(self) -> None:
        # Normalize values given directly (tests, other callers) the way load_settings does.
        for name in ("telegram_bot_token", "openai_api_key", "webhook_secret_token", "store_url"):
            value: object = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Secret(value))
        object.__setattr__(self, "telegram_api_url", self.telegram_api_url.rstrip("/"))
        object.__setattr__(self, "openai_base_url", self.openai_base_url.rstrip("/"))
        object.__setattr__(self, "image_models", _models_list(self.image_model, self.image_models))
        object.__setattr__(self, "openai_extra_headers", _frozen_mapping(self.openai_extra_headers))
        object.__setattr__(self, "openai_extra_body", _frozen_mapping(self.openai_extra_body))
        object.__setattr__(self, "model_aliases", _frozen_mapping(self.model_aliases))
        for name in ("allowed_user_ids", "allowed_chat_ids", "admin_user_ids"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "model_prices", _frozen_mapping(self.model_prices))
        object.__setattr__(self, "star_packs", tuple(self.star_packs))

    @property
    def bot_api_base_url(self) -> str:
        """Return the Bot API base URL to which python-telegram-bot appends the token."""
        return f"{self.telegram_api_url}/bot"

    @property
    def bot_file_base_url(self) -> str:
        """Return the Bot API file base URL to which python-telegram-bot appends the token."""
        return f"{self.telegram_api_url}/file/bot"

    @property
    def stars_enabled(self) -> bool:
        """Return whether pictures beyond the free allowance can be bought with Telegram Stars."""
        return self.stars_per_image > 0

    @property
    def telegram_upload_limit_bytes(self) -> int:
        """Return the largest file the Bot API server accepts, in bytes (MB as Telegram counts)."""
        return self.telegram_upload_limit_mb * 1_000_000

    @property
    def originals_max_bytes(self) -> int:
        """Return the disk space the kept originals may use, in bytes."""
        return self.originals_max_mb * 1_000_000

    @property
    def image_max_response_bytes(self) -> int:
        """Return the cap on one images answer body (and one `url` download), in bytes."""
        return self.image_max_response_mb * 1024 * 1024

    @property
    def use_webhook(self) -> bool:
        """Return whether the bot serves a webhook instead of long polling."""
        return self.webhook_url is not None


def _models_list(first: str, models: Iterable[str]) -> tuple[str, ...]:
    ordered = [first, *models]
    return tuple(dict.fromkeys(m for m in ordered if m))


def _shown(value: str) -> str:
    """Quote a (non-secret) value for an error message, cut to a readable length."""
    text = value if len(value) <= _SHOWN_MAX else value[: _SHOWN_MAX - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


class _Reader:
    """Read variables from `env`, recording one problem per bad variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        """Return the stripped value, or None when unset or empty."""
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def bad(self, name: str, expected: str, value: str | None = None) -> None:
        """Record that `name` is not of the `expected` form (showing `value` if given)."""
        got = f", got {_shown(value)}" if value is not None else ""
        self.problems.append(f"{name}: expected {expected}{got}")

    def placeholder(self, name: str, value: str, expected: str) -> bool:
        """Record, and return, whether `value` is still the example value from .env.example."""
        if value != PLACEHOLDERS.get(name) and not _PLACEHOLDER_RE.search(value):
            return False
        self.problems.append(f"{name}: still the example value from .env.example; put {expected}")
        return True

    def parsed(
        self, name: str, default: _T, parse: Callable[[str], _T | None], expected: str
    ) -> _T:
        """Return `parse(value)`, the default when unset, or the default plus a problem."""
        value = self.raw(name)
        if value is None:
            return default
        result = parse(value)
        if result is None:
            self.bad(name, expected, value)
            return default
        return result


def _parse_url(*, https_only: bool) -> Callable[[str], str | None]:
    schemes = ("https",) if https_only else ("http", "https")

    def parse(value: str) -> str | None:
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError on a malformed port
        except ValueError:
            return None
        if parts.scheme.lower() not in schemes or not parts.hostname:
            return None
        if any(ch.isspace() for ch in value):
            return None
        return value.rstrip("/")

    return parse


def _parse_base_url(value: str) -> str | None:
    # A query string is kept on every endpoint URL (Azure-style ?api-version=); a fragment
    # would never reach the server, so it is a mistake.
    return None if "#" in value else _parse_url(https_only=False)(value)


def _parse_int(minimum: int, maximum: int | None = None) -> Callable[[str], int | None]:
    def parse(value: str) -> int | None:
        if not re.fullmatch(r"[+-]?[0-9]+", value):
            return None
        number = int(value)
        if number < minimum or (maximum is not None and number > maximum):
            return None
        return number

    return parse


def _parse_seconds(*, allow_zero: bool) -> Callable[[str], float | None]:
    def parse(value: str) -> float | None:
        try:
            number = float(value)
        except ValueError:
            return None
        if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
            return None
        return number

    return parse


def _parse_log_level(value: str) -> str | None:
    level = value.upper()
    return level if level in LOG_LEVELS else None


def _parse_listen(value: str) -> str | None:
    return value if re.fullmatch(r"[A-Za-z0-9.:_\[\]-]+", value) else None


def _parse_size(value: str) -> str | None:
    lowered = value.lower()
    if lowered in _SIZE_WORDS:
        return lowered
    if _SIZE_RE.fullmatch(value):
        return lowered.replace("×", "x")
    return None


def _parse_quality(value: str) -> str | None:
    return value.lower() if re.fullmatch(r"[A-Za-z]+", value) else None


def _parse_model(value: str) -> str | None:
    return None if any(ch.isspace() or ord(ch) < 32 for ch in value) else value


def _read_token(reader: _Reader, *, required: bool) -> Secret:
    name = "TELEGRAM_BOT_TOKEN"
    value = reader.raw(name)
    if not required:
        return Secret(value or "")
    if value is None:
        reader.bad(name, "the bot token from @BotFather, like 123456789:AAE… (it is missing)")
        return Secret()
    if reader.placeholder(name, value, "the bot token from @BotFather here"):
        return Secret()
    if not _TOKEN_RE.fullmatch(value):
        # Never echo the value: it may be a real token with a typo.
        reader.bad(name, "the bot token from @BotFather, like 123456789:AAE… (value not shown)")
        return Secret()
    return Secret(value)


def _read_api_key(reader: _Reader) -> Secret:
    value = reader.raw("OPENAI_API_KEY")
    if value is None:
        return Secret()
    if reader.placeholder(
        "OPENAI_API_KEY", value, "your key here, or leave it empty for a keyless server"
    ):
        return Secret()
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) > 126 for ch in value):
        reader.bad(
            "OPENAI_API_KEY",
            "a key of printable ASCII without spaces or line breaks (value not shown)",
        )
        return Secret()
    return Secret(value)


def _read_webhook_secret(reader: _Reader) -> Secret:
    value = reader.raw("WEBHOOK_SECRET_TOKEN")
    if value is None:
        return Secret()
    if reader.placeholder("WEBHOOK_SECRET_TOKEN", value, "a long random string of your own"):
        return Secret()
    if not _WEBHOOK_SECRET_RE.fullmatch(value):
        reader.bad(
            "WEBHOOK_SECRET_TOKEN",
            "1-256 characters of A-Z, a-z, 0-9, _ and - (value not shown)",
        )
        return Secret()
    return Secret(value)


def _read_json_object(reader: _Reader, name: str) -> dict[str, Any] | None:
    value = reader.raw(name)
    if value is None:
        return {}
    try:
        loaded: Any = json.loads(value)
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict):
        reader.bad(name, 'a JSON object like {"key": "value"}', value)
        return None
    return loaded


def _read_headers(reader: _Reader) -> dict[str, str]:
    name = "OPENAI_EXTRA_HEADERS"
    loaded = _read_json_object(reader, name)
    if loaded is None:
        return {}
    for key, item in loaded.items():
        if not _HEADER_NAME_RE.fullmatch(key):
            reader.bad(name, "header names of letters, digits and dashes", key)
            return {}
        if not isinstance(item, str) or any(ch in item for ch in "\r\n\0"):
            # Header values are often credentials, so they are not shown.
            reader.bad(
                name, f'a JSON object of string values, but "{key}" is not a one-line string'
            )
            return {}
        if not all(ch == "\t" or " " <= ch <= "~" for ch in item):
            # HTTP sends header values as ASCII; anything else cannot be sent at all.
            reader.bad(
                name,
                f'header values of printable ASCII, but "{key}" has other characters '
                "(value not shown)",
            )
            return {}
    return {str(key): str(item) for key, item in loaded.items()}


def _read_ids(reader: _Reader, name: str) -> frozenset[int]:
    value = reader.raw(name)
    if value is None:
        return frozenset()
    ids: set[int] = set()
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if not re.fullmatch(r"[+-]?[0-9]{1,20}", item):
            reader.bad(name, "comma-separated numeric Telegram ids like 12345,-1001234567890", item)
            return frozenset()
        ids.add(int(item))
    return frozenset(ids)


def _read_models(reader: _Reader) -> tuple[str, ...]:
    value = reader.raw("IMAGE_MODELS")
    if value is None:
        return ()
    models = [part.strip() for part in value.split(",") if part.strip()]
    for model in models:
        if _parse_model(model) is None:
            reader.bad("IMAGE_MODELS", "comma-separated model names", value)
            return ()
    return tuple(models)


def _read_aliases(reader: _Reader) -> dict[str, str]:
    """Read MODEL_ALIASES (`my-dalle3=dall-e-3,flux=unknown`), each target a known family."""
    from bot.capabilities import UNKNOWN_FAMILY, family_of, known_models

    name = "MODEL_ALIASES"
    value = reader.raw(name)
    if value is None:
        return {}
    families = (*known_models(), UNKNOWN_FAMILY)
    aliases: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        alias, sep, target = (piece.strip() for piece in item.partition("="))
        if not sep or not alias or not target or _parse_model(alias) is None:
            reader.bad(name, "comma-separated model=family pairs like my-dalle3=dall-e-3", item)
            return {}
        family = UNKNOWN_FAMILY if target.lower() == UNKNOWN_FAMILY else family_of(target)
        if family is None:
            reader.bad(name, f"a known model family ({', '.join(families)}) after =", target)
            return {}
        aliases[alias] = family
    return aliases


def _read_budget(reader: _Reader) -> pricing.Nanos:
    return reader.parsed(
        "DAILY_BUDGET_USD",
        0,
        pricing.parse_usd,
        "a dollar amount ≥ 0 like 5 or 2.50 (0 for no budget)",
    )


def _read_model_prices(reader: _Reader) -> Mapping[str, pricing.ModelPrice]:
    value = reader.raw("MODEL_PRICES")
    if value is None:
        return {}
    try:
        return pricing.parse_model_prices(value)
    except pricing.PriceError as exc:
        reader.problems.append(
            "MODEL_PRICES: expected a JSON object of model -> prices in dollars, like "
            f'{{"dall-e-3": {{"per_image": 0.04}}}} ({exc})'
        )
        return {}


def _read_star_packs(reader: _Reader, stars_per_image: int) -> tuple[int, ...]:
    name = "STAR_PACKS"
    value = reader.raw(name)
    expected = "comma-separated numbers of pictures like 10,50,200"
    if value is None:
        packs = DEFAULT_STAR_PACKS
    else:
        items = [part.strip() for part in value.split(",") if part.strip()]
        if not items or not all(re.fullmatch(r"[0-9]{1,6}", item) for item in items):
            reader.bad(name, expected, value)
            return DEFAULT_STAR_PACKS
        packs = tuple(sorted({int(item) for item in items}))
        if packs[0] < 1:
            reader.bad(name, expected + " (each at least 1)", value)
            return DEFAULT_STAR_PACKS
    if stars_per_image and packs[-1] * stars_per_image > MAX_STARS:
        reader.bad(
            name,
            f"packs of at most {MAX_STARS // stars_per_image} pictures at STARS_PER_IMAGE="
            f"{stars_per_image} (Telegram takes at most {MAX_STARS} Stars in one payment)",
            value if value is not None else ",".join(map(str, packs)),
        )
        return DEFAULT_STAR_PACKS
    return packs


STORE_SCHEMES = ("postgresql", "postgres")


def _read_store_url(reader: _Reader) -> Secret:
    """Read STORE_URL: empty, or a postgresql:// URL with a host and a database name."""
    name = "STORE_URL"
    value = reader.raw(name)
    if value is None:
        return Secret()
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
        ok = (
            parts.scheme.lower() in STORE_SCHEMES
            and bool(parts.hostname)
            and bool(parts.path.strip("/"))
            and "/" not in parts.path.strip("/")
            and not any(ch.isspace() for ch in value)
        )
    except ValueError:
        ok = False
    if not ok:
        # Shown with its password hidden: it may be a real one next to a typo.
        reader.bad(
            name,
            "empty (SQLite in DATA_DIR) or a PostgreSQL URL like "
            "postgresql://user:password@host:5432/database",
            redact(value),
        )
        return Secret()
    return Secret(value)


def _check_model_defaults(
    reader: _Reader,
    *,
    model: str,
    size: str | None,
    quality: str | None,
    aliases: Mapping[str, str] | None = None,
) -> None:
    """Check the default size and quality against the model's capabilities."""
    if size is None and quality is None:
        return
    try:
        from bot.capabilities import caps_for, check_defaults
    except ImportError:  # pragma: no cover - only while the capability table is being written
        return
    caps = caps_for(model, aliases)
    for problem in check_defaults(caps, default_size=size, default_quality=quality):
        reader.problems.append(problem)


def _read_failure_delay(reader: _Reader) -> float:
    return reader.parsed(
        "STARTUP_FAILURE_DELAY_SECONDS",
        0.0,
        _parse_seconds(allow_zero=True),
        "a number of seconds ≥ 0 (0 exits at once)",
    )


def startup_failure_delay(env: Mapping[str, str]) -> float:
    """Return STARTUP_FAILURE_DELAY_SECONDS even when other settings are bad (0 if it is bad)."""
    return _read_failure_delay(_Reader(env))


def startup_warnings(settings: Settings) -> list[str]:
    """Return what an operator should know about a valid but risky configuration."""
    warnings = []
    if not settings.allowed_user_ids and not settings.allowed_chat_ids:
        warnings.append(
            "the bot is open to everyone: neither ALLOWED_USER_IDS nor ALLOWED_CHAT_IDS is set, "
            "so anyone who finds it can make pictures on your API key"
        )
    return warnings


def load_settings(env: Mapping[str, str], *, require_telegram: bool = True) -> Settings:
    """Parse `env` into `Settings`, raising one `ConfigError` that lists every bad variable."""
    r = _Reader(env)
    token = _read_token(r, required=require_telegram)
    telegram_api_url = r.parsed(
        "TELEGRAM_API_URL",
        DEFAULT_TELEGRAM_API_URL,
        _parse_url(https_only=False),
        "an http(s) URL with a host, like https://api.telegram.org",
    )
    openai_base_url = r.parsed(
        "OPENAI_BASE_URL",
        DEFAULT_OPENAI_BASE_URL,
        _parse_base_url,
        "an http(s) URL with a host and no #fragment, like https://api.openai.com/v1",
    )
    api_key = _read_api_key(r)
    before_model = len(r.problems)
    image_model = r.parsed(
        "IMAGE_MODEL", DEFAULT_IMAGE_MODEL, _parse_model, "a model name without spaces"
    )
    model_ok = len(r.problems) == before_model
    image_models = _read_models(r)
    headers = _read_headers(r)
    body = _read_json_object(r, "OPENAI_EXTRA_BODY") or {}
    aliases = _read_aliases(r)
    before_defaults = len(r.problems)
    default_size = r.parsed(
        "DEFAULT_IMAGE_SIZE",
        None,
        _parse_size,
        "WxH like 1024x1024, or square, landscape or portrait",
    )
    default_quality = r.parsed(
        "DEFAULT_IMAGE_QUALITY", None, _parse_quality, "a quality word like low, medium or high"
    )
    if model_ok and len(r.problems) == before_defaults:
        _check_model_defaults(
            r, model=image_model, size=default_size, quality=default_quality, aliases=aliases
        )
    timeout = r.parsed(
        "IMAGE_TIMEOUT_SECONDS",
        180.0,
        _parse_seconds(allow_zero=False),
        "a number of seconds > 0",
    )
    max_response_mb = r.parsed(
        "IMAGE_MAX_RESPONSE_MB",
        64,
        _parse_int(1, 4096),
        "a whole number of megabytes from 1 to 4096",
    )
    max_concurrent = r.parsed("MAX_CONCURRENT_GENERATIONS", 64, _parse_int(1), "a whole number ≥ 1")
    max_inflight = r.parsed("MAX_INFLIGHT_PER_USER", 2, _parse_int(1), "a whole number ≥ 1")
    status_delay = r.parsed(
        "STATUS_MESSAGE_DELAY_SECONDS",
        8.0,
        _parse_seconds(allow_zero=True),
        "a number of seconds ≥ 0",
    )
    allowed_users = _read_ids(r, "ALLOWED_USER_IDS")
    allowed_chats = _read_ids(r, "ALLOWED_CHAT_IDS")
    admins = _read_ids(r, "ADMIN_USER_IDS")
    daily_limit = r.parsed("DAILY_IMAGE_LIMIT", 0, _parse_int(0), "a whole number ≥ 0")
    daily_chat_limit = r.parsed("DAILY_CHAT_IMAGE_LIMIT", 0, _parse_int(0), "a whole number ≥ 0")
    data_dir = r.parsed("DATA_DIR", Path("data"), Path, "a directory path")
    log_level = r.parsed("LOG_LEVEL", "INFO", _parse_log_level, "one of " + ", ".join(LOG_LEVELS))
    failure_delay = _read_failure_delay(r)
    webhook_url = r.parsed(
        "WEBHOOK_URL",
        None,
        _parse_url(https_only=True),
        "an https URL with a host, like https://bot.example.com/telegram (or empty for polling)",
    )
    webhook_listen = r.parsed(
        "WEBHOOK_LISTEN", "0.0.0.0", _parse_listen, "an address to bind, like 0.0.0.0"
    )
    webhook_port = r.parsed(
        "WEBHOOK_PORT", 8443, _parse_int(1, 65535), "a port number from 1 to 65535"
    )
    webhook_secret = _read_webhook_secret(r)
    max_attempts = r.parsed(
        "IMAGE_MAX_ATTEMPTS", 3, _parse_int(1, 10), "a whole number from 1 to 10"
    )
    upload_limit = r.parsed(
        "TELEGRAM_UPLOAD_LIMIT_MB",
        50,
        _parse_int(1, 2000),
        "a whole number of megabytes from 1 to 2000 (50 for api.telegram.org)",
    )
    originals_max = r.parsed(
        "ORIGINALS_MAX_MB", 1024, _parse_int(1), "a whole number of megabytes ≥ 1"
    )
    stale_seconds = r.parsed(
        "STALE_COMMAND_SECONDS",
        600.0,
        _parse_seconds(allow_zero=True),
        "a number of seconds ≥ 0 (0 runs every command, however old)",
    )
    daily_budget = _read_budget(r)
    model_prices = _read_model_prices(r)
    stars_per_image = r.parsed(
        "STARS_PER_IMAGE",
        0,
        _parse_int(0, MAX_STARS),
        f"a whole number of Stars from 0 to {MAX_STARS}",
    )
    star_packs = _read_star_packs(r, stars_per_image)
    stream_previews = r.parsed(
        "STREAM_PREVIEWS",
        "auto",
        lambda value: value.lower() if value.lower() in STREAM_MODES else None,
        "one of " + ", ".join(STREAM_MODES),
    )
    preview_images = r.parsed("PREVIEW_IMAGES", 2, _parse_int(1, 3), "a whole number from 1 to 3")
    metrics_port = r.parsed(
        "METRICS_PORT", None, _parse_int(1, 65535), "a port number from 1 to 65535 (or empty: off)"
    )
    metrics_listen = r.parsed(
        "METRICS_LISTEN", "127.0.0.1", _parse_listen, "an address to bind, like 127.0.0.1"
    )
    store_url = _read_store_url(r)
    job_max_age = r.parsed(
        "JOB_MAX_AGE_SECONDS", 1800.0, _parse_seconds(allow_zero=False), "a number of seconds > 0"
    )
    shutdown_grace = r.parsed(
        "SHUTDOWN_GRACE_SECONDS", 15.0, _parse_seconds(allow_zero=True), "a number of seconds ≥ 0"
    )
    if r.problems:
        raise ConfigError(r.problems)
    return Settings(
        telegram_bot_token=token,
        telegram_api_url=telegram_api_url,
        openai_base_url=openai_base_url,
        openai_api_key=api_key,
        image_model=image_model,
        image_models=image_models,
        openai_extra_headers=headers,
        openai_extra_body=body,
        default_image_size=default_size,
        default_image_quality=default_quality,
        image_timeout_seconds=timeout,
        image_max_response_mb=max_response_mb,
        max_concurrent_generations=max_concurrent,
        max_inflight_per_user=max_inflight,
        status_message_delay_seconds=status_delay,
        allowed_user_ids=allowed_users,
        allowed_chat_ids=allowed_chats,
        admin_user_ids=admins,
        daily_image_limit=daily_limit,
        daily_chat_image_limit=daily_chat_limit,
        data_dir=data_dir,
        log_level=log_level,
        startup_failure_delay_seconds=failure_delay,
        webhook_url=webhook_url,
        webhook_listen=webhook_listen,
        webhook_port=webhook_port,
        webhook_secret_token=webhook_secret,
        image_max_attempts=max_attempts,
        model_aliases=aliases,
        telegram_upload_limit_mb=upload_limit,
        originals_max_mb=originals_max,
        stale_command_seconds=stale_seconds,
        daily_budget=daily_budget,
        model_prices=model_prices,
        stars_per_image=stars_per_image,
        star_packs=star_packs,
        stream_previews=stream_previews,
        preview_images=preview_images,
        metrics_port=metrics_port,
        metrics_listen=metrics_listen,
        store_url=store_url,
        job_max_age_seconds=job_max_age,
        shutdown_grace_seconds=shutdown_grace,
    )
