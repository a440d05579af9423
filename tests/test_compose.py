"""Check the deployment files (docker-compose.yml, Dockerfile, .env.example, README) against
the settings bot/config.py actually reads. Docker cannot run here, so the structure is checked."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from bot.config import ENV_VARS, LOG_LEVELS, load_settings

ROOT = Path(__file__).resolve().parent.parent
_ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def compose_service() -> dict[str, object]:
    compose = yaml.safe_load(read("docker-compose.yml"))
    assert isinstance(compose, dict)
    service = compose["services"]["bot"]
    assert isinstance(service, dict)
    return service


def as_env_dict(environment: object) -> dict[str, str]:
    if isinstance(environment, dict):
        return {str(k): str(v) for k, v in environment.items()}
    assert isinstance(environment, list)
    return dict(str(item).split("=", 1) for item in environment)


def test_variables_read_by_config_match_the_contract() -> None:
    source = read("bot/config.py")
    quoted = set(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"', source))
    assert quoted - set(LOG_LEVELS) == set(ENV_VARS)
    table = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", read("DEVELOPERS.md"), flags=re.MULTILINE)
    assert table == list(ENV_VARS)


def test_compose_service_structure() -> None:
    service = compose_service()
    assert service["build"] == "."
    env_file = service["env_file"]
    assert env_file == ".env" or env_file == [".env"]
    assert service["restart"] == "unless-stopped"
    data_dir = as_env_dict(service["environment"])["DATA_DIR"]
    assert data_dir == "/data"


def test_compose_mounts_a_named_volume_at_data_dir() -> None:
    compose = yaml.safe_load(read("docker-compose.yml"))
    service = compose_service()
    data_dir = as_env_dict(service["environment"])["DATA_DIR"]
    volumes = service["volumes"]
    assert isinstance(volumes, list)
    mounts = {}
    for volume in volumes:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        mounts[target] = source
    assert data_dir in mounts
    assert mounts[data_dir] in compose["volumes"]
    assert not mounts[data_dir].startswith((".", "/"))  # named, not a bind mount


def test_compose_environment_uses_only_known_settings() -> None:
    assert set(as_env_dict(compose_service()["environment"])) <= set(ENV_VARS)


def test_dockerfile() -> None:
    text = read("Dockerfile")
    assert re.search(r"^FROM python:3\.11-slim\b", text, flags=re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    assert re.search(r"pip install --no-cache-dir \.", text)
    assert re.search(r"DATA_DIR=/data\b", text)
    assert 'VOLUME ["/data"]' in text
    assert 'CMD ["python", "-m", "bot"]' in text


def test_dockerignore_keeps_secrets_out() -> None:
    lines = read(".dockerignore").splitlines()
    assert ".env" in lines
    assert ".git" in lines


def env_example_assignments() -> dict[str, tuple[bool, str]]:
    """Map each variable in .env.example to (commented out?, example value)."""
    found: dict[str, tuple[bool, str]] = {}
    for line in read(".env.example").splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            assert match.group(2) not in found, f"{match.group(2)} listed twice"
            found[match.group(2)] = (match.group(1) is not None, match.group(3))
    return found


# Read by python-telegram-bot, set by `python -m bot` itself; documented for completeness.
LIBRARY_VARS = ("PTB_TIMEDELTA",)


def test_env_example_lists_every_setting_with_a_comment() -> None:
    assignments = env_example_assignments()
    assert list(assignments) == [*ENV_VARS, *LIBRARY_VARS]
    lines = read(".env.example").splitlines()
    for name in ENV_VARS:
        index = next(i for i, line in enumerate(lines) if _ASSIGNMENT.match(line) and name in line)
        above = lines[index - 1]
        assert above.startswith("# ") and not _ASSIGNMENT.match(above), name


def test_env_example_required_settings_are_uncommented() -> None:
    commented, value = env_example_assignments()["TELEGRAM_BOT_TOKEN"]
    assert not commented
    assert value


def test_env_example_is_a_valid_configuration() -> None:
    values = {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}
    settings = load_settings(values)
    assert settings.telegram_bot_token


def test_env_example_with_everything_uncommented_is_valid() -> None:
    text = re.sub(r"^#\s*(?=[A-Z][A-Z0-9_]*=)", "", read(".env.example"), flags=re.MULTILINE)
    env = {k: v or "" for k, v in dotenv_values(stream=io.StringIO(text)).items()}
    assert set(env) == {*ENV_VARS, *LIBRARY_VARS}
    settings = load_settings(env)
    assert dict(settings.openai_extra_headers) == {"X-Gateway-Project": "image-bot"}
    assert settings.webhook_url is not None
    assert settings.admin_user_ids


def test_readme_lists_every_setting() -> None:
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.fail("README.md is missing; it must list every setting")
    text = readme.read_text(encoding="utf-8")
    missing = [name for name in ENV_VARS if name not in text]
    assert not missing, f"README.md does not mention: {', '.join(missing)}"
