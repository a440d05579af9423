"""Own the one-shot `python -m bot generate` command: make images once, save them, print JSON.

The command line form of the seed's ``oint openai GetImages --url --token --model --descr
--headers``. Settings come from the environment like the bot's (no Telegram token needed), and
the flags override them. Exit statuses: 0 on success, 2 for usage, configuration, option or
output-folder problems, 1 when the images service fails; every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from bot import __version__
from bot.capabilities import ImageDescription, ModelCaps, caps_for, resolve
from bot.config import ConfigError, Settings, load_settings
from bot.images import ImagesClient, ImagesError, ImagesRateLimited, ImagesResult
from bot.images.bodies import endpoint_url
from bot.media import file_extension, inspect_image
from bot.prompt import ImageOptions, PromptError
from bot.redaction import Redactor, secret_header_values

PROG = "python -m bot generate"
EXIT_SERVICE = 1
EXIT_USAGE = 2
_DESCR_OPTIONS = ("size", "quality", "style", "background")
_MAX_NAME_TRIES = 100

# Flags that override an environment variable, so problems name the flag the user typed.
_FLAG_VARS = {
    "url": ("--url", "OPENAI_BASE_URL"),
    "token": ("--token", "OPENAI_API_KEY"),
    "model": ("--model", "IMAGE_MODEL"),
    "headers": ("--headers", "OPENAI_EXTRA_HEADERS"),
    "timeout": ("--timeout", "IMAGE_TIMEOUT_SECONDS"),
}


class UsageError(Exception):
    """The command line is malformed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the `generate` command."""
    parser = _Parser(
        prog=PROG,
        description=(
            "Generate images once through the configured OpenAI-compatible endpoint, save them "
            "and print a JSON summary. Settings come from the environment and .env; flags win."
        ),
    )
    parser.add_argument("prompt", nargs="?", help="what to draw (or give it in --descr)")
    parser.add_argument("--size", help="WxH like 1024x1024, or square, landscape, portrait")
    parser.add_argument("-n", "--count", type=int, help="number of images (1-10)")
    parser.add_argument("--quality", help="low, medium, high, auto, hd or standard")
    parser.add_argument("--style", help="vivid or natural (dall-e-3)")
    parser.add_argument("--background", help="transparent (gpt-image models)")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("out"), help="folder to save into (out)"
    )
    parser.add_argument("--url", help="images API base URL (OPENAI_BASE_URL)")
    parser.add_argument("--token", help="images API key (OPENAI_API_KEY)")
    parser.add_argument("--model", help="model name (IMAGE_MODEL)")
    parser.add_argument(
        "--descr",
        help="request body fields as a JSON object, or the path of a .json file holding one",
    )
    parser.add_argument("--headers", help="extra request headers as a JSON object")
    parser.add_argument("--timeout", help="seconds to wait for the images (IMAGE_TIMEOUT_SECONDS)")
    parser.add_argument(
        "-V", "--version", action="version", version=f"telegram-image-bot {__version__}"
    )
    return parser


@dataclass(frozen=True)
class Job:
    """Everything one `generate` run needs, validated."""

    settings: Settings
    caps: ModelCaps
    description: ImageDescription
    output_dir: Path


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def read_description(text: str) -> dict[str, Any]:
    """Read `--descr`: a JSON object, or the path of a file holding one."""
    source = text.strip()
    where = "--descr"
    if not source.startswith("{") and not _is_json(source):
        path = Path(source)
        if not path.is_file():
            raise UsageError(
                f"--descr: {text!r} is neither JSON nor an existing file "
                '(give a JSON object like {"size": "1024x1024"}, or the path of a .json file)'
            )
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise UsageError(f"--descr: cannot read the file {text!r}: {reason}") from exc
        where = f"--descr file {text!r}"
    try:
        loaded: Any = json.loads(source)
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(loaded).__name__}")
    return loaded


def _descr_text(descr: Mapping[str, Any], name: str) -> str | None:
    value = descr.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"--descr: {name!r} must be a string")
    return value


def _descr_count(descr: Mapping[str, Any]) -> int | None:
    value = descr.get("n")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError("--descr: 'n' must be a whole number")
    return value


def _overlay_env(
    env: Mapping[str, str], args: argparse.Namespace, model: str | None
) -> dict[str, str]:
    merged = dict(env)
    for attr, (_flag, var) in _FLAG_VARS.items():
        value = model if attr == "model" else getattr(args, attr)
        if value is not None:
            merged[var] = value
    if model is not None and model != env.get("IMAGE_MODEL", "").strip():
        # The configured defaults were checked against the configured model, not this one.
        merged["DEFAULT_IMAGE_SIZE"] = ""
        merged["DEFAULT_IMAGE_QUALITY"] = ""
    return merged


def _flag_problem(problem: str, args: argparse.Namespace) -> str:
    for attr, (flag, var) in _FLAG_VARS.items():
        if getattr(args, attr) is not None and problem.startswith(f"{var}:"):
            return f"{flag} ({var}){problem[len(var) :]}"
    return problem


def prepare(args: argparse.Namespace, env: Mapping[str, str]) -> Job:
    """Turn parsed arguments and the environment into a validated `Job`."""
    descr = read_description(args.descr) if args.descr is not None else {}
    model = args.model if args.model is not None else _descr_text(descr, "model")
    try:
        settings = load_settings(_overlay_env(env, args, model), require_telegram=False)
    except ConfigError as exc:
        problems = [_flag_problem(p, args) for p in exc.problems]
        raise ConfigError(problems) from None
    prompt = args.prompt if args.prompt is not None else _descr_text(descr, "prompt")
    if prompt is None or not prompt.strip():
        raise UsageError("a prompt is required (as the first argument or in --descr)")
    picked = {name: getattr(args, name) for name in _DESCR_OPTIONS}
    for name in _DESCR_OPTIONS:
        if picked[name] is None:
            picked[name] = _descr_text(descr, name)
    count = args.count if args.count is not None else _descr_count(descr)
    options = ImageOptions(count=count, **picked)
    known = {"prompt", "model", "n", *_DESCR_OPTIONS}
    extra = {**settings.openai_extra_body, **{k: v for k, v in descr.items() if k not in known}}
    caps = caps_for(settings.image_model, settings.model_aliases)
    description = resolve(
        prompt=prompt.strip(),
        options=options,
        caps=caps,
        default_size=settings.default_image_size,
        default_quality=settings.default_image_quality,
        default_count=1,
        extra=extra,
    )
    return Job(settings=settings, caps=caps, description=description, output_dir=args.output)


async def fetch(job: Job) -> ImagesResult:
    """Generate the job's images."""
    settings = job.settings
    async with ImagesClient(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get(),
        extra_headers=settings.openai_extra_headers,
        timeout=settings.image_timeout_seconds,
        max_attempts=settings.image_max_attempts,
        max_response_bytes=settings.image_max_response_bytes,
    ) as client:
        return await client.generate(job.description, job.caps)


def new_run_id() -> str:
    """Return a short random id that tells this run's files from another run's."""
    return secrets.token_hex(3)


def _write_batch(
    folder: Path, stem: str, files: Sequence[tuple[str, bytes]], run_id: Callable[[], str]
) -> list[Path]:
    """Write every (extension, data) as `{stem}-{run}-{index}.{ext}`, never overwriting a file.

    All files of one run share the run id; if any name is taken (another run with the same id),
    this run's files are removed and the whole batch is written again under a new id.
    """
    for _ in range(_MAX_NAME_TRIES):
        run = run_id()
        written: list[Path] = []
        try:
            for index, (ext, data) in enumerate(files, start=1):
                path = folder / f"{stem}-{run}-{index}.{ext}"
                with path.open("xb") as file:
                    written.append(path)
                    file.write(data)
        except FileExistsError:
            for path in written:
                path.unlink(missing_ok=True)
            continue
        return written
    raise FileExistsError(f"no free file names for {stem} in {folder}")


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def save(
    result: ImagesResult,
    *,
    folder: Path,
    now: datetime,
    asked: ImageDescription | None = None,
    run_id: Callable[[], str] = new_run_id,
) -> dict[str, object]:
    """Save every image of `result` into `folder` and return the JSON summary.

    `size`, `quality` and `background` are the answer's, or what `asked` asked for when the
    answer does not say.
    """
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    infos = [inspect_image(image.data) for image in result.images]
    paths = _write_batch(
        folder,
        f"image-{stamp}",
        [
            (file_extension(info), image.data)
            for info, image in zip(infos, result.images, strict=True)
        ],
        run_id,
    )
    images: list[dict[str, object]] = []
    for path, info, image in zip(paths, infos, result.images, strict=True):
        images.append(
            {
                "file": str(path),
                "format": info.format,
                "width": info.width,
                "height": info.height,
                "bytes": info.size_bytes,
                "revised_prompt": image.revised_prompt,
            }
        )
    return {
        "model": result.model,
        "size": result.size or (asked.size if asked else None),
        "quality": result.quality or (asked.quality if asked else None),
        "background": result.background or (asked.background if asked else None),
        "elapsed": round(result.elapsed, 3),
        "images": images,
        "usage": _jsonable(result.usage),
    }


def _service_message(exc: ImagesError, url: str) -> str:
    message = (
        f"images service error ({exc.kind}) from {exc.method or 'POST'} {exc.url or url}: {exc}"
    )
    if exc.detail and exc.detail not in message:
        message += f" — {exc.detail}"
    if isinstance(exc, ImagesRateLimited) and exc.retry_after is not None:
        message += f" (retry after {exc.retry_after:g} s)"
    return message


def _utc_now() -> datetime:
    return datetime.now(UTC)


def main(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    clock: Callable[[], datetime] = _utc_now,
    run_id: Callable[[], str] = new_run_id,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run `generate` with `argv` (after the subcommand) and return the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    known = [env.get("OPENAI_API_KEY", "")]

    def fail(status: int, message: str) -> int:
        print(f"{PROG}: {' '.join(Redactor(known)(message).split())}", file=err)
        return status

    try:
        args = build_parser().parse_args(list(argv))
    except UsageError as exc:
        return fail(EXIT_USAGE, f"{exc} (see --help)")
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    if args.token:
        known.append(args.token)
    try:
        job = prepare(args, env)
    except UsageError as exc:
        return fail(EXIT_USAGE, str(exc))
    except ConfigError as exc:
        return fail(EXIT_USAGE, "configuration error: " + "; ".join(exc.problems))
    except PromptError as exc:
        return fail(EXIT_USAGE, f"invalid options: {exc}")
    known.extend(secret_header_values(job.settings.openai_extra_headers))
    try:
        job.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return fail(EXIT_USAGE, f"cannot create output folder {str(job.output_dir)!r}: {exc}")
    try:
        result = asyncio.run(fetch(job))
    except ImagesError as exc:
        url = endpoint_url(job.settings.openai_base_url, "generations")
        return fail(EXIT_SERVICE, _service_message(exc, url))
    except KeyboardInterrupt:
        return fail(130, "interrupted")
    try:
        summary = save(
            result, folder=job.output_dir, now=clock(), asked=job.description, run_id=run_id
        )
    except OSError as exc:
        return fail(EXIT_SERVICE, f"cannot save images into {str(job.output_dir)!r}: {exc}")
    print(json.dumps(summary, ensure_ascii=False, indent=2), file=out)
    return 0
