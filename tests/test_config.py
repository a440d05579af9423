"""Tests for bot.config: every variable's defaults, good and bad forms, and secret hiding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bot.config import (
    ENV_VARS,
    ConfigError,
    Secret,
    Settings,
    load_settings,
    startup_failure_delay,
    startup_warnings,
)

TOKEN = "123456789:AAE-secret_Token-value"
KEY = "sk-very-secret-api-key-1234"


def load(**env: str) -> Settings:
    return load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, **env})


def problems(**env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, **env})
    return info.value.problems


def single_problem(name: str, value: str) -> str:
    found = problems(**{name: value})
    assert len(found) == 1, found
    assert found[0].startswith(f"{name}: "), found
    return found[0]


def test_defaults() -> None:
    s = load()
    assert s.telegram_bot_token.get() == TOKEN
    assert s.telegram_api_url == "https://api.telegram.org"
    assert s.bot_api_base_url == "https://api.telegram.org/bot"
    assert s.bot_file_base_url == "https://api.telegram.org/file/bot"
    assert s.openai_base_url == "https://api.openai.com/v1"
    assert s.openai_api_key.get() == ""
    assert not s.openai_api_key
    assert s.image_model == "gpt-image-2"
    assert s.image_models == ("gpt-image-2",)
    assert dict(s.openai_extra_headers) == {}
    assert dict(s.openai_extra_body) == {}
    assert s.default_image_size is None
    assert s.default_image_quality is None
    assert s.image_timeout_seconds == 180.0
    assert s.image_max_response_mb == 64
    assert s.image_max_response_bytes == 64 * 1024 * 1024
    assert s.max_concurrent_generations == 64
    assert s.max_inflight_per_user == 2
    assert s.status_message_delay_seconds == 8.0
    assert s.allowed_user_ids == frozenset()
    assert s.allowed_chat_ids == frozenset()
    assert s.admin_user_ids == frozenset()
    assert s.daily_image_limit == 0
    assert s.daily_chat_image_limit == 0
    assert s.data_dir == Path("data")
    assert s.log_level == "INFO"
    assert s.startup_failure_delay_seconds == 0.0
    assert s.webhook_url is None
    assert not s.use_webhook
    assert s.webhook_listen == "0.0.0.0"
    assert s.webhook_port == 8443
    assert s.webhook_secret_token.get() == ""
    assert s.telegram_upload_limit_mb == 50
    assert s.telegram_upload_limit_bytes == 50_000_000
    assert s.originals_max_mb == 1024
    assert s.stale_command_seconds == 600.0


def test_every_contract_variable_is_read() -> None:
    source = Path("bot/config.py").read_text(encoding="utf-8")
    for name in ENV_VARS:
        assert source.count(f'"{name}"') >= 2, name  # listed in ENV_VARS and parsed
    assert len(ENV_VARS) == len(set(ENV_VARS))
    example = Path(".env.example").read_text(encoding="utf-8")
    readme = Path("README.md").read_text(encoding="utf-8")
    for name in ENV_VARS:
        assert f"{name}=" in example, f"{name} is not in .env.example"
        assert f"`{name}`" in readme, f"{name} is not in the README"


def test_every_field_is_set_from_the_environment() -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": "http://127.0.0.1:8081/",
        "OPENAI_BASE_URL": "https://gateway.example.com/openai/v1/",
        "OPENAI_API_KEY": KEY,
        "IMAGE_MODEL": "dall-e-3",
        "IMAGE_MODELS": "gpt-image-2, dall-e-3 ,,gpt-image-1",
        "OPENAI_EXTRA_HEADERS": '{"X-Project": "bot", "api-key": "abc"}',
        "OPENAI_EXTRA_BODY": '{"moderation": "low", "user": {"id": 1}}',
        "DEFAULT_IMAGE_SIZE": "1792×1024",
        "DEFAULT_IMAGE_QUALITY": "HD",
        "IMAGE_TIMEOUT_SECONDS": "60.5",
        "IMAGE_MAX_ATTEMPTS": "1",
        "MODEL_ALIASES": "my-dalle3=dall-e-3, flux=unknown,openai/gpt-image-1=gpt-image-1",
        "IMAGE_MAX_RESPONSE_MB": "128",
        "MAX_CONCURRENT_GENERATIONS": "4",
        "MAX_INFLIGHT_PER_USER": "1",
        "STATUS_MESSAGE_DELAY_SECONDS": "0",
        "ALLOWED_USER_IDS": " 1, 2 ,,3 ",
        "ALLOWED_CHAT_IDS": "-1001234567890",
        "ADMIN_USER_IDS": "42",
        "DAILY_IMAGE_LIMIT": "10",
        "DAILY_CHAT_IMAGE_LIMIT": "100",
        "DATA_DIR": "/var/lib/bot",
        "LOG_LEVEL": "debug",
        "STARTUP_FAILURE_DELAY_SECONDS": "30",
        "WEBHOOK_URL": "https://bot.example.com/hook",
        "WEBHOOK_LISTEN": "127.0.0.1",
        "WEBHOOK_PORT": "8080",
        "WEBHOOK_SECRET_TOKEN": "s3cret_-TOKEN",
        "TELEGRAM_UPLOAD_LIMIT_MB": "2000",
        "ORIGINALS_MAX_MB": "64",
        "STALE_COMMAND_SECONDS": "120",
        "DAILY_BUDGET_USD": "2.50",
        "MODEL_PRICES": '{"dall-e-3": {"per_image": 0.04}}',
        "STARS_PER_IMAGE": "5",
        "STAR_PACKS": "50, 10,200",
        "STREAM_PREVIEWS": "ON",
        "PREVIEW_IMAGES": "3",
        "METRICS_PORT": "9464",
        "METRICS_LISTEN": "0.0.0.0",
        "STORE_URL": "postgresql://bot:pg-Secret-9@db.internal:5433/botdb",
        "JOB_MAX_AGE_SECONDS": "600",
        "SHUTDOWN_GRACE_SECONDS": "0",
    }
    assert set(env) == set(ENV_VARS)
    s = load_settings(env)
    assert s.telegram_api_url == "http://127.0.0.1:8081"
    assert s.bot_api_base_url == "http://127.0.0.1:8081/bot"
    assert s.bot_file_base_url == "http://127.0.0.1:8081/file/bot"
    assert s.openai_base_url == "https://gateway.example.com/openai/v1"
    assert s.openai_api_key.get() == KEY
    assert s.image_model == "dall-e-3"
    assert s.image_models == ("dall-e-3", "gpt-image-2", "gpt-image-1")
    assert dict(s.openai_extra_headers) == {"X-Project": "bot", "api-key": "abc"}
    assert dict(s.openai_extra_body) == {"moderation": "low", "user": {"id": 1}}
    assert s.default_image_size == "1792x1024"
    assert s.default_image_quality == "hd"
    assert s.image_timeout_seconds == 60.5
    assert s.image_max_response_bytes == 128 * 1024 * 1024
    assert s.max_concurrent_generations == 4
    assert s.max_inflight_per_user == 1
    assert s.status_message_delay_seconds == 0.0
    assert s.allowed_user_ids == frozenset({1, 2, 3})
    assert s.allowed_chat_ids == frozenset({-1001234567890})
    assert s.admin_user_ids == frozenset({42})
    assert s.daily_image_limit == 10
    assert s.daily_chat_image_limit == 100
    assert s.data_dir == Path("/var/lib/bot")
    assert s.log_level == "DEBUG"
    assert s.startup_failure_delay_seconds == 30.0
    assert s.webhook_url == "https://bot.example.com/hook"
    assert s.use_webhook
    assert s.webhook_listen == "127.0.0.1"
    assert s.webhook_port == 8080
    assert s.webhook_secret_token.get() == "s3cret_-TOKEN"
    assert s.image_max_attempts == 1
    assert dict(s.model_aliases) == {
        "my-dalle3": "dall-e-3",
        "flux": "unknown",
        "openai/gpt-image-1": "gpt-image-1",
    }
    assert s.telegram_upload_limit_mb == 2000
    assert s.originals_max_mb == 64
    assert s.stale_command_seconds == 120.0
    assert s.daily_budget == 2_500_000_000
    assert s.model_prices["dall-e-3"].per_image == 40_000_000
    assert s.stars_per_image == 5
    assert s.job_max_age_seconds == 600.0
    assert s.shutdown_grace_seconds == 0.0
    assert s.stars_enabled
    assert s.star_packs == (10, 50, 200)
    assert s.stream_previews == "on"
    assert s.preview_images == 3
    assert s.metrics_port == 9464
    assert s.metrics_listen == "0.0.0.0"
    assert s.store_url.get() == "postgresql://bot:pg-Secret-9@db.internal:5433/botdb"
    assert "pg-Secret-9" not in repr(s)


def test_settings_is_frozen_and_mappings_are_read_only() -> None:
    s = load(OPENAI_EXTRA_BODY='{"a": 1}')
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.image_model = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.openai_extra_body["b"] = 2  # type: ignore[index]


def test_empty_strings_count_as_unset() -> None:
    env = dict.fromkeys(ENV_VARS, "")
    env["TELEGRAM_BOT_TOKEN"] = TOKEN
    assert load_settings(env) == load()


def test_image_models_always_start_with_image_model() -> None:
    assert load(IMAGE_MODELS="dall-e-3").image_models == ("gpt-image-2", "dall-e-3")
    assert load(IMAGE_MODEL="m1", IMAGE_MODELS="m2,m1,m2").image_models == ("m1", "m2")
    assert Settings(image_model="x", image_models=("y",)).image_models == ("x", "y")


@pytest.mark.parametrize("token", ["", "   "])
def test_missing_token(token: str) -> None:
    found = problems(TELEGRAM_BOT_TOKEN=token)
    assert len(found) == 1
    assert found[0].startswith("TELEGRAM_BOT_TOKEN: expected")
    assert "missing" in found[0]


@pytest.mark.parametrize(
    "token",
    ["abc:Zq7Secret", "987654321", "987654321:", ":Zq7Secret", "98 7:Zq7", "987:Zq/7", "9:Zq7 x"],
)
def test_malformed_token_is_reported_without_echo(token: str) -> None:
    message = single_problem("TELEGRAM_BOT_TOKEN", token)
    assert "Zq7" not in message
    assert "987" not in message
    assert message == (
        "TELEGRAM_BOT_TOKEN: expected the bot token from @BotFather, "
        "like 123456789:AAE… (value not shown)"
    )


def test_malformed_token_secret_part_not_echoed() -> None:
    message = single_problem("TELEGRAM_BOT_TOKEN", "123456789:AAE secret-typo")
    assert "secret-typo" not in message


def test_token_not_required_for_the_cli() -> None:
    s = load_settings({}, require_telegram=False)
    assert s.telegram_bot_token.get() == ""
    s = load_settings({"TELEGRAM_BOT_TOKEN": "garbage"}, require_telegram=False)
    assert s.openai_base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize("name", ["TELEGRAM_API_URL", "OPENAI_BASE_URL"])
@pytest.mark.parametrize(
    "value", ["api.openai.com", "ftp://example.com", "https://", "http://:80/x", "https://a b.com"]
)
def test_bad_urls(name: str, value: str) -> None:
    message = single_problem(name, value)
    assert "http(s) URL" in message


@pytest.mark.parametrize("name", ["TELEGRAM_API_URL", "OPENAI_BASE_URL"])
@pytest.mark.parametrize("value", ["http://localhost:8080", "HTTPS://Example.com/v1/"])
def test_good_urls(name: str, value: str) -> None:
    s = load(**{name: value})
    assert getattr(s, name.lower()) == value.rstrip("/")


def test_api_key_with_line_break_is_rejected_without_echo() -> None:
    message = single_problem("OPENAI_API_KEY", "sk-abc\ndef")
    assert "sk-abc" not in message
    assert "def" not in message.split("expected")[0]


def test_api_key_is_stripped() -> None:
    assert load(OPENAI_API_KEY=f"  {KEY}\n").openai_api_key.get() == KEY


@pytest.mark.parametrize("value", ["bad model", "a\tb"])
def test_bad_image_model(value: str) -> None:
    single_problem("IMAGE_MODEL", value)


def test_bad_image_models() -> None:
    single_problem("IMAGE_MODELS", "a, b c")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENAI_EXTRA_HEADERS", "not json"),
        ("OPENAI_EXTRA_HEADERS", "[1, 2]"),
        ("OPENAI_EXTRA_HEADERS", '{"X-A": 1}'),
        ("OPENAI_EXTRA_HEADERS", '{"X-A": "a\\nb"}'),
        ("OPENAI_EXTRA_HEADERS", '{"bad name": "v"}'),
        ("OPENAI_EXTRA_BODY", "{oops"),
        ("OPENAI_EXTRA_BODY", '"string"'),
        ("OPENAI_EXTRA_BODY", "null"),
    ],
)
def test_bad_json_settings(name: str, value: str) -> None:
    message = single_problem(name, value)
    assert "JSON object" in message or "header names" in message


def test_header_values_are_not_echoed() -> None:
    message = single_problem("OPENAI_EXTRA_HEADERS", '{"api-key": ["hidden-value"]}')
    assert "hidden-value" not in message
    assert "api-key" in message


@pytest.mark.parametrize("value", ["sécret-clé", "ключ", "tab\tok\u0001", "emoji 🔑"])
def test_header_values_must_be_printable_ascii(value: str) -> None:
    # HTTP cannot send them (a UnicodeEncodeError escaped the images client before).
    headers = json.dumps({"X-Api-Key": value})
    message = single_problem("OPENAI_EXTRA_HEADERS", headers)
    assert "printable ASCII" in message
    assert "X-Api-Key" in message
    assert value not in message and headers not in message


def test_header_value_with_a_tab_is_fine() -> None:
    settings = load(OPENAI_EXTRA_HEADERS='{"X-Title": "my\\tbot ~ v1"}')
    assert dict(settings.openai_extra_headers) == {"X-Title": "my\tbot ~ v1"}


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "lots", "4097"])
def test_bad_max_response(value: str) -> None:
    assert "megabytes" in single_problem("IMAGE_MAX_RESPONSE_MB", value)


@pytest.mark.parametrize("value", ["yes", "true", "1", "stream"])
def test_bad_stream_previews(value: str) -> None:
    assert "auto, on, off" in single_problem("STREAM_PREVIEWS", value)


@pytest.mark.parametrize("value", ["0", "4", "two", "1.5"])
def test_bad_preview_images(value: str) -> None:
    assert "1 to 3" in single_problem("PREVIEW_IMAGES", value)


def test_stream_settings_default_to_auto_with_two_previews() -> None:
    s = load()
    assert (s.stream_previews, s.preview_images) == ("auto", 2)


@pytest.mark.parametrize("name", ["ALLOWED_USER_IDS", "ALLOWED_CHAT_IDS", "ADMIN_USER_IDS"])
@pytest.mark.parametrize("value", ["abc", "1,2,x", "1;2", "1.5", "@user"])
def test_bad_id_lists(name: str, value: str) -> None:
    message = single_problem(name, value)
    assert "comma-separated" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", {1}), ("1,2", {1, 2}), (" 7 , ,8,", {7, 8}), (",", set()), ("-100123,+5", {-100123, 5})],
)
def test_good_id_lists(value: str, expected: set[int]) -> None:
    assert load(ADMIN_USER_IDS=value).admin_user_ids == frozenset(expected)


@pytest.mark.parametrize("name", ["DAILY_IMAGE_LIMIT", "DAILY_CHAT_IMAGE_LIMIT"])
@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "1e3", "ten"])
def test_bad_limits(name: str, value: str) -> None:
    message = single_problem(name, value)
    assert message == f'{name}: expected a whole number ≥ 0, got "{value}"'


@pytest.mark.parametrize("name", ["MAX_CONCURRENT_GENERATIONS", "MAX_INFLIGHT_PER_USER"])
@pytest.mark.parametrize("value", ["0", "-3", "two", "2.0"])
def test_bad_concurrency(name: str, value: str) -> None:
    assert "whole number ≥ 1" in single_problem(name, value)


@pytest.mark.parametrize("value", ["0", "-5", "abc", "nan", "inf"])
def test_bad_timeout(value: str) -> None:
    assert "> 0" in single_problem("IMAGE_TIMEOUT_SECONDS", value)


@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_bad_status_delay(value: str) -> None:
    assert "≥ 0" in single_problem("STATUS_MESSAGE_DELAY_SECONDS", value)


@pytest.mark.parametrize("value", ["verbose", "INF", "5"])
def test_bad_log_level(value: str) -> None:
    assert "DEBUG" in single_problem("LOG_LEVEL", value)


@pytest.mark.parametrize("value", ["debug", "Info", "WARNING", "error", "critical"])
def test_good_log_levels(value: str) -> None:
    assert load(LOG_LEVEL=value).log_level == value.upper()


@pytest.mark.parametrize("value", ["0", "65536", "-1", "http", "80.5"])
def test_bad_webhook_port(value: str) -> None:
    assert "1 to 65535" in single_problem("WEBHOOK_PORT", value)


@pytest.mark.parametrize("value", ["1", "65535", "443"])
def test_good_webhook_port(value: str) -> None:
    assert load(WEBHOOK_PORT=value).webhook_port == int(value)


def test_metrics_server_is_off_by_default_on_loopback_when_on() -> None:
    assert load().metrics_port is None
    assert load(METRICS_PORT="9464").metrics_port == 9464
    assert load(METRICS_PORT="9464").metrics_listen == "127.0.0.1"
    assert load(METRICS_LISTEN="::").metrics_listen == "::"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METRICS_PORT", "0"),
        ("METRICS_PORT", "x"),
        ("METRICS_PORT", "70000"),
        ("METRICS_LISTEN", "a b"),
    ],
)
def test_bad_metrics_settings(name: str, value: str) -> None:
    assert single_problem(name, value).startswith(f"{name}: expected ")


@pytest.mark.parametrize("value", ["http://bot.example.com/hook", "bot.example.com", "https://"])
def test_webhook_url_must_be_https(value: str) -> None:
    assert "https URL" in single_problem("WEBHOOK_URL", value)


def test_bad_webhook_listen() -> None:
    single_problem("WEBHOOK_LISTEN", "0.0.0.0 1")


@pytest.mark.parametrize("value", ["has space", "bad!char", "x" * 257])
def test_bad_webhook_secret_is_not_echoed(value: str) -> None:
    message = single_problem("WEBHOOK_SECRET_TOKEN", value)
    assert value not in message


@pytest.mark.parametrize("value", ["big", "10x", "axb", "1024*1024"])
def test_malformed_default_size(value: str) -> None:
    assert "WxH" in single_problem("DEFAULT_IMAGE_SIZE", value)


def test_malformed_default_quality() -> None:
    assert "quality word" in single_problem("DEFAULT_IMAGE_QUALITY", "very-high")


@pytest.mark.parametrize(
    ("model", "size", "quality"),
    [
        ("gpt-image-2", "1024x1024", "high"),
        ("gpt-image-2", "landscape", "hd"),
        ("dall-e-3", "1792x1024", "hd"),
        ("dall-e-2", "512x512", None),
        ("some-local-model", "640x480", "ultra"),
    ],
)
def test_defaults_accepted_by_the_model(model: str, size: str, quality: str | None) -> None:
    env = {"IMAGE_MODEL": model, "DEFAULT_IMAGE_SIZE": size}
    if quality:
        env["DEFAULT_IMAGE_QUALITY"] = quality
    s = load(**env)
    assert s.default_image_size == size


@pytest.mark.parametrize(
    ("model", "name", "value"),
    [
        ("dall-e-3", "DEFAULT_IMAGE_SIZE", "1536x1024"),
        ("gpt-image-1", "DEFAULT_IMAGE_SIZE", "1792x1024"),
        ("dall-e-2", "DEFAULT_IMAGE_QUALITY", "hd"),
        ("gpt-image-2", "DEFAULT_IMAGE_QUALITY", "ultra"),
    ],
)
def test_defaults_checked_against_the_model(model: str, name: str, value: str) -> None:
    found = problems(IMAGE_MODEL=model, **{name: value})
    assert len(found) == 1, found
    assert found[0].startswith(name)
    assert model in found[0]


def test_all_problems_reported_at_once() -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": "",
        "TELEGRAM_API_URL": "nope",
        "OPENAI_BASE_URL": "nope",
        "OPENAI_EXTRA_HEADERS": "[]",
        "OPENAI_EXTRA_BODY": "[]",
        "IMAGE_TIMEOUT_SECONDS": "0",
        "MAX_CONCURRENT_GENERATIONS": "x",
        "MAX_INFLIGHT_PER_USER": "x",
        "STATUS_MESSAGE_DELAY_SECONDS": "x",
        "ALLOWED_USER_IDS": "x",
        "ALLOWED_CHAT_IDS": "x",
        "ADMIN_USER_IDS": "x",
        "DAILY_IMAGE_LIMIT": "x",
        "DAILY_CHAT_IMAGE_LIMIT": "x",
        "LOG_LEVEL": "x",
        "WEBHOOK_URL": "http://x",
        "WEBHOOK_PORT": "0",
        "WEBHOOK_SECRET_TOKEN": "bad secret",
        "DEFAULT_IMAGE_SIZE": "big",
        "TELEGRAM_UPLOAD_LIMIT_MB": "0",
        "ORIGINALS_MAX_MB": "x",
        "STALE_COMMAND_SECONDS": "-1",
        "METRICS_PORT": "0",
        "METRICS_LISTEN": "a b",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    named = [p.split(":", 1)[0] for p in info.value.problems]
    assert sorted(named) == sorted(env)
    assert str(info.value) == "; ".join(info.value.problems)


def test_secrets_never_in_repr_or_str() -> None:
    s = load(OPENAI_API_KEY=KEY, WEBHOOK_SECRET_TOKEN="hook-secret-value")
    for text in (repr(s), str(s), f"{s}", repr(s.openai_api_key), str(s.telegram_bot_token)):
        assert TOKEN not in text
        assert "AAE-secret" not in text
        assert KEY not in text
        assert "hook-secret-value" not in text
    assert "gpt-image-2" in repr(s)


def test_secret_behaviour() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert bool(Secret("")) is False
    assert repr(Secret("")) == "Secret('')"
    assert "x" not in repr(Secret("x"))
    assert Settings(openai_api_key="k").openai_api_key == Secret("k")  # type: ignore[arg-type]


def test_settings_built_directly_are_normalized() -> None:
    s = Settings(
        telegram_api_url="http://h:1/",
        openai_extra_body={"a": 1},
        admin_user_ids={1},  # type: ignore[arg-type]
        data_dir="d",  # type: ignore[arg-type]
    )
    assert s.bot_api_base_url == "http://h:1/bot"
    assert s.admin_user_ids == frozenset({1})
    assert s.data_dir == Path("d")
    with pytest.raises(TypeError):
        s.openai_extra_body["a"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "value", "attr", "expected"),
    [
        ("TELEGRAM_UPLOAD_LIMIT_MB", "2000", "telegram_upload_limit_mb", 2000),
        ("ORIGINALS_MAX_MB", "1", "originals_max_mb", 1),
        ("STALE_COMMAND_SECONDS", "0", "stale_command_seconds", 0.0),
        ("STALE_COMMAND_SECONDS", "90.5", "stale_command_seconds", 90.5),
    ],
)
def test_telegram_limits_are_read(name: str, value: str, attr: str, expected: object) -> None:
    assert getattr(load(**{name: value}), attr) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TELEGRAM_UPLOAD_LIMIT_MB", "2001"),
        ("TELEGRAM_UPLOAD_LIMIT_MB", "0"),
        ("ORIGINALS_MAX_MB", "0"),
        ("ORIGINALS_MAX_MB", "1.5"),
        ("STALE_COMMAND_SECONDS", "soon"),
    ],
)
def test_bad_telegram_limits(name: str, value: str) -> None:
    assert "expected" in single_problem(name, value)


# -- an operator's first hour (issue #14) ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TELEGRAM_BOT_TOKEN", "123456789:AAExampleTokenReplaceMe_with-your-own"),
        ("OPENAI_API_KEY", "sk-replace-me"),
        ("WEBHOOK_SECRET_TOKEN", "replace-with-a-long-random-string"),
        ("OPENAI_API_KEY", "sk-REPLACE-ME-please"),  # half edited
    ],
)
def test_placeholders_from_env_example_are_refused_by_name(name: str, value: str) -> None:
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, name: value}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    (problem,) = info.value.problems
    assert problem.startswith(f"{name}: still the example value from .env.example")
    assert value not in problem


def test_the_cli_refuses_the_placeholder_key_too() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"OPENAI_API_KEY": "sk-replace-me"}, require_telegram=False)
    assert info.value.problems[0].startswith("OPENAI_API_KEY: still the example value")


@pytest.mark.parametrize(
    "value",
    [
        "https://res.openai.azure.com/openai/deployments/img?api-version=2025-04-01-preview",
        "http://127.0.0.1:8080/v1?a=1&b=2",
    ],
)
def test_base_url_with_a_query_is_accepted(value: str) -> None:
    assert load(OPENAI_BASE_URL=value).openai_base_url == value


def test_base_url_with_a_fragment_is_refused() -> None:
    message = single_problem("OPENAI_BASE_URL", "https://api.example.com/v1#images")
    assert "no #fragment" in message


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_bad_startup_failure_delay(value: str) -> None:
    single_problem("STARTUP_FAILURE_DELAY_SECONDS", value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 0.0),
        ({"STARTUP_FAILURE_DELAY_SECONDS": "30"}, 30.0),
        ({"STARTUP_FAILURE_DELAY_SECONDS": "2.5", "DAILY_IMAGE_LIMIT": "bad"}, 2.5),
        ({"STARTUP_FAILURE_DELAY_SECONDS": "bad"}, 0.0),
    ],
)
def test_startup_failure_delay_is_read_even_when_other_settings_are_bad(
    env: dict[str, str], expected: float
) -> None:
    assert startup_failure_delay(env) == expected


def test_an_open_bot_is_warned_about_naming_both_settings() -> None:
    (warning,) = startup_warnings(load())
    assert "ALLOWED_USER_IDS" in warning
    assert "ALLOWED_CHAT_IDS" in warning
    assert "everyone" in warning


@pytest.mark.parametrize(
    "env", [{"ALLOWED_USER_IDS": "1"}, {"ALLOWED_CHAT_IDS": "-100"}, {"ALLOWED_USER_IDS": "1,2"}]
)
def test_a_closed_bot_gets_no_warning(env: dict[str, str]) -> None:
    assert startup_warnings(load(**env)) == []


# --- money settings (issue #13) ----------------------------------------------------------------


def test_money_defaults() -> None:
    s = load()
    assert s.daily_budget == 0
    assert dict(s.model_prices) == {}
    assert s.stars_per_image == 0
    assert not s.stars_enabled
    assert s.star_packs == (10, 50, 200)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DAILY_BUDGET_USD", "-1"),
        ("DAILY_BUDGET_USD", "five"),
        ("DAILY_BUDGET_USD", "0.0000000001"),
        ("DAILY_BUDGET_USD", "NaN"),
        ("MODEL_PRICES", "[]"),
        ("MODEL_PRICES", "{"),
        ("MODEL_PRICES", '{"dall-e-3": 0.04}'),
        ("MODEL_PRICES", '{"dall-e-3": {"per_picture": 0.04}}'),
        ("MODEL_PRICES", '{"dall-e-3": {"per_image": -1}}'),
        ("MODEL_PRICES", '{"dall-e-3": {"per_image": true}}'),
        ("MODEL_PRICES", '{"bad model": {"per_image": 1}}'),
        ("STARS_PER_IMAGE", "-1"),
        ("STARS_PER_IMAGE", "1.5"),
        ("STARS_PER_IMAGE", "10001"),
        ("STAR_PACKS", "ten"),
        ("STAR_PACKS", "0,10"),
        ("STAR_PACKS", ","),
    ],
)
def test_bad_money_values_name_the_variable(name: str, value: str) -> None:
    single_problem(name, value)


def test_star_packs_must_fit_one_payment() -> None:
    found = problems(STARS_PER_IMAGE="100", STAR_PACKS="10,200")
    assert len(found) == 1 and found[0].startswith("STAR_PACKS: "), found
    assert "100 pictures" in found[0]


def test_model_prices_override_and_add() -> None:
    s = load(
        MODEL_PRICES='{"gpt-image-2": {"output_image_per_1m": "25"}, "flux": {"per_image": 0.003}}'
    )
    gpt = s.model_prices["gpt-image-2"]
    assert gpt.image_output == 25_000 and gpt.text_input == 5_000  # the rest stays official
    assert s.model_prices["flux"].per_image == 3_000_000


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bot:pw@localhost/bot",
        "postgres://bot@db:5432/bot?sslmode=require",
        "postgresql://bot:p%40ss@[::1]:5432/bot",
    ],
)
def test_store_url_accepts_postgresql_urls(url: str) -> None:
    assert load(STORE_URL=url).store_url.get() == url
    assert load().store_url.get() == ""


@pytest.mark.parametrize(
    "url",
    [
        "mysql://bot:hunter2-Secret@localhost/bot",
        "postgresql://bot:hunter2-Secret@/bot",
        "postgresql://bot:hunter2-Secret@localhost",
        "postgresql://bot:hunter2-Secret@localhost:99999/bot",
        "postgresql://bot:hunter2-Secret@localhost/a/b",
        "sqlite:///data/bot.sqlite3?hunter2-Secret",
    ],
)
def test_bad_store_url_is_one_problem_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(STORE_URL=url, DAILY_IMAGE_LIMIT="-1")
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == ["DAILY_IMAGE_LIMIT", "STORE_URL"]
    assert "postgresql://user:password@host:5432/database" in problems[1]
    if "@" in url:
        assert "hunter2-Secret" not in str(info.value)
