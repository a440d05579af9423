"""Tests for the entry points: `python -m bot` start-up validation and `python -m bot generate`."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import __main__ as entry
from bot.config import ENV_VARS, Settings
from tests.emulators.openai_images import Fault, OpenAIEmulator

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456789:AAE-cli-secret-token"


def base_env(home: Path) -> dict[str, str]:
    """A minimal environment for subprocesses: nothing from the developer's shell or .env."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONPATH": str(ROOT)}


def run_bot(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env={**base_env(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- python -m bot (start-up) ---------------------------------------------------------------


def test_empty_environment_exits_2_naming_the_token(tmp_path: Path) -> None:
    done = run_bot([], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == "Configuration error — fix these settings (see .env.example):"
    assert len(lines) == 2
    assert "TELEGRAM_BOT_TOKEN" in lines[1]
    assert "Traceback" not in done.stderr


def test_every_bad_variable_is_named_once_without_secrets(tmp_path: Path) -> None:
    bad = {
        "TELEGRAM_BOT_TOKEN": "not-a-token-SECRETPART",
        "OPENAI_API_KEY": "sk-has space-SECRETKEY",
        "OPENAI_BASE_URL": "api.example.com",
        "OPENAI_EXTRA_HEADERS": "{",
        "DAILY_IMAGE_LIMIT": "abc",
        "WEBHOOK_PORT": "70000",
        "WEBHOOK_URL": "http://insecure.example.com",
        "LOG_LEVEL": "loud",
        "ALLOWED_USER_IDS": "1,two",
    }
    done = run_bot(["run"], cwd=tmp_path, env=bad)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    problem_lines = done.stderr.splitlines()[1:]
    assert sorted(line.split(":")[0].strip(" -") for line in problem_lines) == sorted(bad)
    assert "SECRETPART" not in done.stderr
    assert "SECRETKEY" not in done.stderr
    assert 'DAILY_IMAGE_LIMIT: expected a whole number ≥ 0, got "abc"' in done.stderr


def test_dotenv_in_the_current_directory_is_read_without_override(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "DAILY_IMAGE_LIMIT=minus-one\nLOG_LEVEL=bogus\n", encoding="utf-8"
    )
    done = run_bot([], cwd=tmp_path, env={"LOG_LEVEL": "DEBUG"})
    assert done.returncode == 2
    assert "DAILY_IMAGE_LIMIT" in done.stderr  # read from .env
    assert "LOG_LEVEL" not in done.stderr  # the real environment wins
    assert "TELEGRAM_BOT_TOKEN" in done.stderr


def test_help_and_version(tmp_path: Path) -> None:
    done = run_bot(["--help"], cwd=tmp_path)
    assert done.returncode == 0
    assert "python -m bot [run]" in done.stdout
    assert "python -m bot generate" in done.stdout
    assert "telegram-image-bot [run]" in done.stdout  # the console script is the same program
    done = run_bot(["--version"], cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("telegram-image-bot ")
    short = run_bot(["-V"], cwd=tmp_path)
    assert (short.returncode, short.stdout) == (0, done.stdout)


def test_generate_version_flag() -> None:
    from bot import __version__

    for flag in ("-V", "--version"):
        done = subprocess.run(
            [sys.executable, "-c", f"from bot.cli import main; main([{flag!r}], env={{}})"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"telegram-image-bot {__version__}\n"


def test_unknown_arguments_exit_2(tmp_path: Path) -> None:
    done = run_bot(["frobnicate"], cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restore_logging")
def test_valid_settings_reach_app_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[Settings] = []

    def fake_run(settings: Settings) -> int:
        seen.append(settings)
        return 7

    monkeypatch.setitem(sys.modules, "bot.app", types.SimpleNamespace(run=fake_run))
    monkeypatch.chdir(tmp_path)
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert entry.main([]) == 7
    assert seen[0].telegram_bot_token.get() == TOKEN
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("httpx").level == logging.WARNING
    assert logging.getLogger("httpcore").level == logging.WARNING


def test_redacting_formatter_hides_secrets_in_messages_and_tracebacks() -> None:
    formatter = entry.RedactingFormatter(entry.LOG_FORMAT, secrets=[TOKEN, ""])
    try:
        raise RuntimeError(f"GET https://api.telegram.org/bot{TOKEN}/getMe failed")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "url %s", (f"/bot{TOKEN}/x",), sys.exc_info()
        )
    text = formatter.format(record)
    assert TOKEN not in text
    assert "url /bot***/x" in text
    assert "https://api.telegram.org/bot***/getMe failed" in text
    assert "RuntimeError" in text


def test_format_config_error() -> None:
    from bot.config import ConfigError

    text = entry.format_config_error(ConfigError(["A: expected x", "B: expected y"]))
    assert text.splitlines() == [
        "Configuration error — fix these settings (see .env.example):",
        "  - A: expected x",
        "  - B: expected y",
    ]


# -- python -m bot generate: argument handling without a service ----------------------------


def generate(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    from bot import cli

    out, err = io.StringIO(), io.StringIO()
    status = cli.main(argv, env=env or {}, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def assert_one_line_failure(status: int, out: str, err: str, expected_status: int) -> None:
    assert status == expected_status, err
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("python -m bot generate: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "prompt is required"),
        (["   "], "prompt is required"),
        (["cat", "-n", "two"], "invalid int"),
        (["cat", "--bogus"], "unrecognized"),
        (["cat", "--descr", "[1]"], "--descr"),
        (["cat", "--descr", "{bad json"], "--descr"),
        (
            ["cat", "--descr", "/nonexistent/descr.json"],
            "--descr: '/nonexistent/descr.json' is neither JSON nor an existing file",
        ),
        (["cat", "--descr", "size=1024x1024"], "is neither JSON nor an existing file"),
        (["cat", "--descr", "[1]"], "--descr: expected a JSON object, got list"),
        (["cat", "--descr", "{bad json"], "--descr: not valid JSON"),
        (["cat", "--descr", '{"n": "2"}'], "'n'"),
        (["cat", "--url", "ftp://x"], "--url (OPENAI_BASE_URL)"),
        (["cat", "--headers", "[]"], "--headers (OPENAI_EXTRA_HEADERS)"),
        (["cat", "--timeout", "0"], "--timeout (IMAGE_TIMEOUT_SECONDS)"),
        (["cat", "--size", "999x3"], "size"),
        (["cat", "-n", "11"], "count"),
        (["cat", "--quality", "ultra"], "quality"),
        (["cat", "--model", "dall-e-3", "--background", "transparent"], "background"),
    ],
)
def test_generate_usage_errors_exit_2_with_one_line(argv: list[str], needle: str) -> None:
    status, out, err = generate(argv)
    assert_one_line_failure(status, out, err, 2)
    assert needle in err


def test_generate_config_errors_name_the_variable() -> None:
    status, out, err = generate(["cat"], env={"DAILY_IMAGE_LIMIT": "x", "LOG_LEVEL": "?"})
    assert_one_line_failure(status, out, err, 2)
    assert "DAILY_IMAGE_LIMIT" in err
    assert "LOG_LEVEL" in err


def test_generate_needs_no_telegram_token() -> None:
    status, _, err = generate(["cat", "--size", "1x1"], env={"TELEGRAM_BOT_TOKEN": "junk"})
    assert status == 2
    assert "TELEGRAM_BOT_TOKEN" not in err
    assert "size" in err


def test_generate_help() -> None:
    status, _, _ = generate(["--help"])
    assert status == 0


def test_generate_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    status, out, err = generate(["cat", "-o", str(blocker / "sub")])
    assert_one_line_failure(status, out, err, 2)
    assert "output folder" in err


def test_generate_key_never_shown_in_errors() -> None:
    key = "sk-cli-very-secret-key"
    status, _, err = generate(["cat", "--token", key, "--url", "nope"])
    assert status == 2
    assert key not in err
    status, _, err = generate(["cat", "--token", key + " x"])
    assert status == 2
    assert "very-secret" not in err


# -- python -m bot generate against the OpenAI emulator -------------------------------------

API_KEY = "sk-emulator-key-0123456789"
STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as emu:
        yield emu


def emu_env(emu: OpenAIEmulator, **extra: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": emu.base_url, "OPENAI_API_KEY": API_KEY, **extra}


def generate_at(
    argv: list[str], env: dict[str, str], *, now: datetime = STAMP
) -> tuple[int, str, str]:
    from bot import cli

    out, err = io.StringIO(), io.StringIO()
    status = cli.main(argv, env=env, clock=lambda: now, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_generate_subprocess_saves_images_and_prints_summary(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    done = run_bot(
        ["generate", "yellow alpaca", "--size", "1024x1024", "-n", "2", "-o", "out/"],
        cwd=tmp_path,
        env=emu_env(emulator),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    summary = json.loads(done.stdout)
    assert summary["model"] == "gpt-image-2"
    assert summary["usage"]["total_tokens"] > 0
    assert len(summary["images"]) == 2
    names = set()
    for image in summary["images"]:
        path = tmp_path / image["file"]
        assert path.parent == tmp_path / "out"
        assert re.fullmatch(r"image-\d{8}T\d{6}Z-[0-9a-f]{6}-[12]\.png", path.name)
        assert path.stat().st_size == image["bytes"]
        assert (image["width"], image["height"]) == (1024, 1024)
        assert image["revised_prompt"] is None
        names.add(path.name)
    assert len(names) == 2
    assert len({name.rsplit("-", 1)[0] for name in names}) == 1  # one run id for the batch
    # GPT image models say what they made.
    assert (summary["size"], summary["quality"], summary["background"]) == (
        "1024x1024",
        "medium",
        "opaque",
    )
    (request,) = emulator.api_requests
    assert request.json == {
        "prompt": "yellow alpaca",
        "model": "gpt-image-2",
        "n": 2,
        "size": "1024x1024",
    }
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert emulator.invalid_requests == []


def test_generate_subprocess_flags_override_settings(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-wrong"}
    done = run_bot(
        [
            "generate",
            "a lighthouse",
            "--url",
            emulator.base_url,
            "--token",
            API_KEY,
            "--model",
            "dall-e-3",
            "--size",
            "landscape",
            "--quality",
            "high",
            "--style",
            "natural",
            "-n",
            "2",
            "-o",
            "pics",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["model"] == "dall-e-3"
    # dall-e-3 answers say neither size nor quality: the summary gives what was asked for.
    assert (summary["size"], summary["quality"], summary["background"]) == ("1792x1024", "hd", None)
    assert [(i["width"], i["height"]) for i in summary["images"]] == [(1792, 1024)] * 2
    assert summary["images"][0]["revised_prompt"] == "A vivid rendering of: a lighthouse"
    requests = emulator.api_requests
    assert len(requests) == 2  # dall-e-3 takes one image per request
    for request in requests:
        assert request.json["quality"] == "hd"
        assert request.json["style"] == "natural"
        assert request.json["n"] == 1
    assert emulator.invalid_requests == []


def test_generate_subprocess_service_failure_is_one_line(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    wrong = "sk-wrong-secret-987654321"
    done = run_bot(
        ["generate", "cat", "-o", "out"],
        cwd=tmp_path,
        env=emu_env(emulator, OPENAI_API_KEY=wrong),
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "auth" in done.stderr
    assert wrong not in done.stderr
    assert "Traceback" not in done.stderr


def test_generate_descr_file_headers_and_extra_body(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    descr = tmp_path / "descr.json"
    descr.write_text(
        json.dumps({"prompt": "red fox", "n": 1, "size": "256x256", "user": "cli-test"}),
        encoding="utf-8",
    )
    env = emu_env(emulator, IMAGE_MODEL="dall-e-2", OPENAI_EXTRA_BODY='{"user": "env"}')
    status, out, err = generate_at(
        ["--descr", str(descr), "--headers", '{"X-Trace": "abc"}', "-o", str(tmp_path / "o")],
        env,
    )
    assert status == 0, err
    summary = json.loads(out)
    assert (summary["images"][0]["width"], summary["images"][0]["height"]) == (256, 256)
    (request,) = emulator.api_requests
    assert request.json["prompt"] == "red fox"
    assert request.json["size"] == "256x256"
    assert request.json["user"] == "cli-test"  # --descr wins over OPENAI_EXTRA_BODY
    assert request.json["response_format"] == "b64_json"
    assert request.headers["X-Trace"] == "abc"
    assert emulator.invalid_requests == []


def test_generate_inline_descr_and_flag_precedence(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    descr = json.dumps({"prompt": "ignored", "model": "dall-e-2", "size": "512x512", "n": 2})
    status, out, err = generate_at(
        ["a boat", "--descr", descr, "--size", "256x256", "-o", str(tmp_path)],
        emu_env(emulator),
    )
    assert status == 0, err
    assert len(json.loads(out)["images"]) == 2
    (request,) = emulator.api_requests
    assert request.json["prompt"] == "a boat"
    assert request.json["model"] == "dall-e-2"
    assert request.json["size"] == "256x256"
    assert request.json["n"] == 2


def test_generate_never_overwrites(tmp_path: Path, emulator: OpenAIEmulator) -> None:
    env = emu_env(emulator, IMAGE_MODEL="dall-e-2")
    argv = ["cat", "--size", "256x256", "-o", str(tmp_path / "o")]
    first = json.loads(generate_at(argv, env)[1])["images"][0]["file"]
    second = json.loads(generate_at(argv, env)[1])["images"][0]["file"]
    assert re.fullmatch(r"image-20260102T030405Z-[0-9a-f]{6}-1\.png", Path(first).name)
    assert re.fullmatch(r"image-20260102T030405Z-[0-9a-f]{6}-1\.png", Path(second).name)
    assert first != second
    assert Path(first).exists()
    assert Path(second).exists()


def test_generate_same_run_id_twice_takes_a_new_id_for_the_whole_batch(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    from bot import cli

    ids = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    env = emu_env(emulator, IMAGE_MODEL="dall-e-2")
    argv = ["cat", "--size", "256x256", "-n", "2", "-o", str(tmp_path)]
    names = []
    for _ in range(2):
        out = io.StringIO()
        status = cli.main(argv, env=env, clock=lambda: STAMP, run_id=lambda: next(ids), stdout=out)
        assert status == 0
        names.append([Path(i["file"]).name for i in json.loads(out.getvalue())["images"]])
    assert names == [
        ["image-20260102T030405Z-aaaaaa-1.png", "image-20260102T030405Z-aaaaaa-2.png"],
        ["image-20260102T030405Z-bbbbbb-1.png", "image-20260102T030405Z-bbbbbb-2.png"],
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[0] + names[1])


def test_generate_transparent_background(tmp_path: Path, emulator: OpenAIEmulator) -> None:
    status, out, err = generate_at(
        ["logo", "--background", "transparent", "--size", "square", "-o", str(tmp_path)],
        emu_env(emulator, IMAGE_MODEL="gpt-image-1"),
    )
    assert status == 0, err
    image = json.loads(out)["images"][0]
    assert image["format"] == "png"
    assert json.loads(out)["background"] == "transparent"
    (request,) = emulator.api_requests
    assert request.json["background"] == "transparent"
    assert request.json["output_format"] == "png"


def test_generate_url_answers_and_keyless_server(tmp_path: Path) -> None:
    with OpenAIEmulator(answer_with="url") as emu:
        status, out, err = generate_at(
            ["cat", "--size", "256x256", "-o", str(tmp_path)],
            {"OPENAI_BASE_URL": emu.base_url, "IMAGE_MODEL": "dall-e-2"},
        )
        assert status == 0, err
        image = json.loads(out)["images"][0]
        assert Path(image["file"]).read_bytes()[:4] == b"\x89PNG"
        (request,) = emu.api_requests
        assert "Authorization" not in request.headers


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault.http(400, code="moderation_blocked"), "refused"),
        (Fault.http(429, code="insufficient_quota"), "quota"),
        (Fault.http(404, code="model_not_found"), "bad_request"),
    ],
)
def test_generate_service_errors_exit_1(
    tmp_path: Path, emulator: OpenAIEmulator, fault: Fault, kind: str
) -> None:
    emulator.queue_faults([fault])
    status, out, err = generate_at(["cat", "-o", str(tmp_path / "o")], emu_env(emulator))
    assert_one_line_failure(status, out, err, 1)
    assert f"({kind})" in err
    assert API_KEY not in err
    assert not any((tmp_path / "o").iterdir())


def test_generate_timeout(tmp_path: Path, emulator: OpenAIEmulator) -> None:
    emulator.queue_faults([Fault.hang(5)])
    status, out, err = generate_at(
        ["cat", "--timeout", "0.5", "-o", str(tmp_path)], emu_env(emulator)
    )
    assert_one_line_failure(status, out, err, 1)
    assert "(timeout)" in err


def test_generate_deadline_covers_retry_waits(tmp_path: Path, emulator: OpenAIEmulator) -> None:
    # The images client holds the whole-call deadline, so the CLI has it too: a Retry-After
    # longer than what is left is not waited for; the 429 is the answer.
    emulator.queue_faults([Fault.http(429, retry_after=30)])
    status, out, err = generate_at(
        ["cat", "--timeout", "2", "-o", str(tmp_path)], emu_env(emulator)
    )
    assert_one_line_failure(status, out, err, 1)
    assert "(rate_limited)" in err
    assert len(emulator.api_requests) == 1


def test_generate_subprocess_retries_stay_off_stderr(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    emulator.queue_faults([503, 503, 503])  # quick 503s: the ones worth another POST
    done = run_bot(["generate", "cat", "-o", "out"], cwd=tmp_path, env=emu_env(emulator))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "python -m bot generate: images service error (unavailable) from POST "
        f"{emulator.base_url}/images/generations: "
        + done.stderr.split("/images/generations: ", 1)[1].strip()
    ]
    assert len(emulator.api_requests) == 3


def test_generate_flags_keep_working_and_take_aspect_ratios(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    """The CLI's own flags are unchanged; --size also takes a ratio; the prompt is verbatim."""
    status, out, err = generate_at(
        ["a natural landscape --high", "--size", "16:9", "--quality", "low", "-o", str(tmp_path)],
        emu_env(emulator),
    )
    assert status == 0, err
    (request,) = emulator.api_requests
    assert request.json["prompt"] == "a natural landscape --high"
    assert request.json["size"] == "1280x720"
    assert request.json["quality"] == "low"
    assert (json.loads(out)["images"][0]["width"], json.loads(out)["images"][0]["height"]) == (
        1280,
        720,
    )
