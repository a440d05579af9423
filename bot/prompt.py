"""Parse the text after `/image` into a prompt and trailing options.

Options are whitespace-separated tokens at the end of the text, matched case-insensitively and
read from the end until the first token that is not an option; everything before them is the
prompt, exactly as typed (only outer whitespace stripped)::

    parse_image_args("yellow alpaca 1024x1024 x2 high")
    # -> ParsedCommand(prompt="yellow alpaca",
    #                  options=ImageOptions(size="1024x1024", count=2, quality="high"))

Tokens (digits are ASCII only; `x` may also be written `X`, `×` or the Cyrillic `х`/`Х`):

- size: `WxH` (normalized to `"WxH"`), `square`, `landscape`, `portrait`
- count: `x2` … `x10`
- quality: `low`, `medium`, `high`, `auto`, `hd`, `standard`
- style: `vivid`, `natural`
- background: `transparent`

Exceptions (all carry a stable `key` for i18n)::

    PromptError
    ├── EmptyPrompt          (for the handler: no prompt here and none in the replied-to message)
    ├── BadOption            (x0, x11, 0x0, 99999999x5 …)
    └── ConflictingOption    (the same option twice: "cat x2 x3", "cat square 1024x1024")

An empty prompt is not an error here: the handler falls back to the replied-to message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import ClassVar, Final

__all__ = [
    "BadOption",
    "ConflictingOption",
    "EmptyPrompt",
    "ImageOptions",
    "ParsedCommand",
    "PromptError",
    "describe_options",
    "merge_options",
    "parse_image_args",
]

MAX_COUNT: Final = 10
MAX_SIDE: Final = 100_000
# Longer digit runs are rejected before int(), which also keeps int() away from huge strings.
_MAX_SIDE_DIGITS: Final = len(str(MAX_SIDE))
_MAX_COUNT_DIGITS: Final = 4

_TIMES = "x×х"  # Latin x, multiplication sign, Cyrillic ha (tokens are lower-cased first)
_SIZE_RE: Final = re.compile(f"([0-9]+)[{_TIMES}]([0-9]+)")
_COUNT_RE: Final = re.compile(f"[{_TIMES}]([0-9]+)")

_WORDS: Final[dict[str, tuple[str, str]]] = {
    **{word: ("size", word) for word in ("square", "landscape", "portrait")},
    **{word: ("quality", word) for word in ("low", "medium", "high", "auto", "hd", "standard")},
    **{word: ("style", word) for word in ("vivid", "natural")},
    "transparent": ("background", "transparent"),
}


@dataclass(frozen=True)
class ImageOptions:
    """Options a user may give after the prompt; None means "not given"."""

    size: str | None = None  # normalized "WxH", or "square"/"landscape"/"portrait"
    count: int | None = None  # 1..10
    quality: str | None = None  # low, medium, high, auto, hd, standard
    style: str | None = None  # vivid, natural
    background: str | None = None  # transparent


@dataclass(frozen=True)
class ParsedCommand:
    """The prompt (possibly empty) and the options that followed it."""

    prompt: str
    options: ImageOptions


class PromptError(Exception):
    """Base of the errors in the user's command text."""

    key: ClassVar[str] = "prompt.invalid"


class EmptyPrompt(PromptError):
    """No prompt given and none to fall back to."""

    key: ClassVar[str] = "prompt.empty"

    def __init__(self) -> None:
        super().__init__("the prompt is empty")


class BadOption(PromptError):
    """An option with a value out of range, such as `x11` or `0x0`."""

    key: ClassVar[str] = "prompt.bad_option"

    def __init__(self, *, option: str, value: str, allowed: str) -> None:
        super().__init__(f"bad {option} {value!r}; allowed: {allowed}")
        self.option = option
        self.value = value
        self.allowed = allowed


class ConflictingOption(PromptError):
    """The same option given more than once."""

    key: ClassVar[str] = "prompt.conflicting_option"

    def __init__(self, *, option: str, values: tuple[str, ...]) -> None:
        super().__init__(f"{option} given more than once: {', '.join(values)}")
        self.option = option
        self.values = values


def _classify(token: str) -> tuple[str, str | int] | None:
    """Return (option, value) for an option token, None for a prompt word; raise BadOption."""
    word = token.lower()
    if (known := _WORDS.get(word)) is not None:
        return known
    if size := _SIZE_RE.fullmatch(word):
        width, height = size.groups()
        if not all(
            len(side) <= _MAX_SIDE_DIGITS and 1 <= int(side) <= MAX_SIDE for side in (width, height)
        ):
            raise BadOption(option="size", value=token, allowed=f"1..{MAX_SIDE} pixels per side")
        return "size", f"{int(width)}x{int(height)}"
    if count := _COUNT_RE.fullmatch(word):
        digits = count.group(1)
        if len(digits) > _MAX_COUNT_DIGITS or not 1 <= int(digits) <= MAX_COUNT:
            raise BadOption(option="count", value=token, allowed=f"x1..x{MAX_COUNT}")
        return "count", int(digits)
    return None


def parse_image_args(text: str) -> ParsedCommand:
    """Split `/image` arguments into the prompt and its trailing options."""
    found: dict[str, tuple[str, str | int]] = {}  # option -> (token as typed, value)
    end = len(text)
    while True:
        head = text[:end].rstrip()
        if not head:
            end = 0
            break
        # rsplit from the right touches only the last token, keeping the whole parse linear.
        token = head.rsplit(None, 1)[-1]
        classified = _classify(token)
        if classified is None:
            break
        option, value = classified
        if option in found:
            raise ConflictingOption(option=option, values=(token, found[option][0]))
        found[option] = (token, value)
        end = len(head) - len(token)
    words = {option: value for option, (_, value) in found.items() if isinstance(value, str)}
    count = found["count"][1] if "count" in found else None
    options = ImageOptions(
        size=words.get("size"),
        count=count if isinstance(count, int) else None,
        quality=words.get("quality"),
        style=words.get("style"),
        background=words.get("background"),
    )
    return ParsedCommand(prompt=text[:end].strip(), options=options)


def merge_options(primary: ImageOptions, fallback: ImageOptions) -> ImageOptions:
    """Fill the fields `primary` leaves unset from `fallback`."""
    missing = {
        field.name: getattr(fallback, field.name)
        for field in fields(ImageOptions)
        if getattr(primary, field.name) is None
    }
    return replace(primary, **missing)


def describe_options(options: ImageOptions) -> str:
    """Render the set options as short text, e.g. "1024x1024 · x2 · high"."""
    parts = [
        options.size,
        None if options.count is None else f"x{options.count}",
        options.quality,
        options.style,
        options.background,
    ]
    return " · ".join(part for part in parts if part is not None)
