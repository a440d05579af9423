"""Parse the text after `/image` into a prompt and trailing options.

Everything the user types is the prompt, exactly as typed (several lines too; only outer
whitespace is stripped), except a trailing run of option tokens. The run is read from the end,
token by token, and stops at the first token that is not an option; nothing before that token is
ever an option, however it looks::

    parse_image_args("a beautiful natural landscape 16:9 x2 --high")
    # -> ParsedCommand(prompt="a beautiful natural landscape",
    #                  options=ImageOptions(size="16:9", count=2, quality="high"))

Tokens that cannot be prose stand on their own (digits are ASCII only; `x` may also be written
`X`, `×` or the Cyrillic `х`/`Х`):

- size: `WxH` (normalized to `"WxH"`)
- aspect ratio: one of the common ratios in `BARE_RATIOS` (`16:9`, `3:2`, `1:1`, `9:16` …);
  any other ratio (a time such as `10:30` could be prose) needs `--ar W:H`
- count: `x1` … `x10`

Words need a marker, `--`, or the em dash `—` or en dash `–` that Telegram's apps turn `--` into:

- flags: `--square --landscape --portrait` (size), `--low --medium --high --auto --hd --standard`
  (quality), `--vivid --natural` (style), `--transparent` (background)
- key and value, as two tokens or joined by `=`: `--size 1536x1024` (also `square`, `16:9`,
  `auto`), `--ar 16:9` (`--aspect`), `--n 3` (`--count`), `--quality high`, `--style natural`,
  `--background transparent` (`opaque`, `auto`)

A marker followed by ASCII letters is an option: an unknown name, or a key without its value, is
an error naming what is accepted, so a mistyped option never silently becomes part of the prompt.
A marker followed by anything else (`—`, `--42`, `—«quote»`) is prose. Which values a model accepts
is decided later, by `bot.capabilities`.

Parsing is linear: each step looks only at the last one or two tokens and either records an
option not seen before or ends, so at most `len(OPTIONS) + 1` steps are taken.

Exceptions (all carry a stable `key` for i18n)::

    PromptError
    ├── EmptyPrompt          (for the handler: no prompt here and none in the replied-to message)
    ├── BadOption            (x0, x11, 0x0, --quality ultra, --n 99 …)
    ├── ConflictingOption    (the same option twice: "cat x2 x3", "cat --square 1024x1024")
    ├── UnknownOption        (a marked word that is no option: "cat --hdd")
    └── MissingValue         (a key at the very end: "cat --size")

An empty prompt is not an error here: the handler falls back to the replied-to message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import ClassVar, Final

__all__ = [
    "BARE_RATIOS",
    "OPTIONS",
    "BadOption",
    "ConflictingOption",
    "EmptyPrompt",
    "ImageOptions",
    "MissingValue",
    "ParsedCommand",
    "PromptError",
    "UnknownOption",
    "as_typed",
    "describe_options",
    "merge_options",
    "parse_image_args",
]

MAX_COUNT: Final = 10
MAX_SIDE: Final = 100_000
MAX_RATIO_SIDE: Final = 999
# Longer digit runs are rejected before int(), which also keeps int() away from huge strings.
_MAX_SIDE_DIGITS: Final = len(str(MAX_SIDE))
_MAX_COUNT_DIGITS: Final = 4

OPTIONS: Final = ("size", "count", "quality", "style", "background")
MARKERS: Final = ("--", "—", "–")  # two hyphens, em dash, en dash
# Ratios of screens, cameras and prints; others (10:30 is a time, 3:16 a verse) need `--ar`.
BARE_RATIOS: Final = frozenset(
    {"1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5", "16:9", "9:16", "21:9", "9:21"}
)

_TIMES = "x×х"  # Latin x, multiplication sign, Cyrillic ha (tokens are lower-cased first)
_SIZE_RE: Final = re.compile(f"([0-9]+)[{_TIMES}]([0-9]+)")
_COUNT_RE: Final = re.compile(f"[{_TIMES}]([0-9]+)")
_RATIO_RE: Final = re.compile("([0-9]+):([0-9]+)")
_NAME_RE: Final = re.compile("[A-Za-z]+")

_SIZE_WORDS: Final = ("square", "landscape", "portrait")
_QUALITIES: Final = ("low", "medium", "high", "auto", "hd", "standard")
_STYLES: Final = ("vivid", "natural")
_BACKGROUNDS: Final = ("transparent", "opaque", "auto")

_FLAGS: Final[dict[str, tuple[str, str]]] = {
    **{word: ("size", word) for word in _SIZE_WORDS},
    **{word: ("quality", word) for word in _QUALITIES},
    **{word: ("style", word) for word in _STYLES},
    "transparent": ("background", "transparent"),
}
# Key names (and their aliases) -> the option they set.
_KEYS: Final[dict[str, str]] = {
    "size": "size",
    "ar": "ratio",
    "aspect": "ratio",
    "n": "count",
    "count": "count",
    "quality": "quality",
    "style": "style",
    "background": "background",
}
ACCEPTED_MARKED: Final = (
    *(f"--{flag}" for flag in _FLAGS),
    "--size WxH",
    "--ar W:H",
    f"--n 1..{MAX_COUNT}",
    "--quality …",
    "--style …",
    "--background …",
)


@dataclass(frozen=True)
class ImageOptions:
    """Options a user may give after the prompt; None means "not given"."""

    size: str | None = None  # "WxH", "W:H", "auto", or "square"/"landscape"/"portrait"
    count: int | None = None  # 1..10
    quality: str | None = None  # low, medium, high, auto, hd, standard
    style: str | None = None  # vivid, natural
    background: str | None = None  # transparent, opaque, auto


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
    """An option with a value out of range, such as `x11`, `0x0` or `--quality ultra`."""

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


class UnknownOption(PromptError):
    """A marked word (`--hdd`) that is not an option; `allowed` lists the marked options."""

    key: ClassVar[str] = "prompt.unknown_option"

    def __init__(self, *, value: str) -> None:
        super().__init__(f"unknown option {value!r}")
        self.value = value
        self.allowed = ACCEPTED_MARKED


class MissingValue(PromptError):
    """A key option (`--size`) with nothing after it."""

    key: ClassVar[str] = "prompt.missing_value"

    def __init__(self, *, option: str, value: str, example: str) -> None:
        super().__init__(f"{value!r} needs a value, e.g. {example}")
        self.option = option
        self.value = value
        self.example = example


def _marked(token: str) -> tuple[str, str | None] | None:
    """Return (lower-cased name, inline value or None) for `--name[=value]`, else None."""
    for marker in MARKERS:
        if token.startswith(marker):
            name, equals, value = token[len(marker) :].partition("=")
            if not _NAME_RE.fullmatch(name):
                return None
            return name.lower(), (value if equals else None)
    return None


def _size(text: str, token: str) -> str | None:
    """Return `text` as a normalized "WxH", None if it is no size; raise BadOption if absurd."""
    size = _SIZE_RE.fullmatch(text)
    if size is None:
        return None
    width, height = size.groups()
    if not all(
        len(side) <= _MAX_SIDE_DIGITS and 1 <= int(side) <= MAX_SIDE for side in (width, height)
    ):
        raise BadOption(option="size", value=token, allowed=f"1..{MAX_SIDE} pixels per side")
    return f"{int(width)}x{int(height)}"


def _ratio(text: str, token: str) -> str | None:
    """Return `text` as a normalized "W:H", None if it is no ratio; raise BadOption if absurd."""
    ratio = _RATIO_RE.fullmatch(text)
    if ratio is None:
        return None
    sides = ratio.groups()
    if not all(len(side) <= 3 and 1 <= int(side) <= MAX_RATIO_SIDE for side in sides):
        raise BadOption(option="size", value=token, allowed=f"W:H, 1..{MAX_RATIO_SIDE} each")
    return f"{int(sides[0])}:{int(sides[1])}"


def _count(digits: str, token: str, *, allowed: str = f"1..{MAX_COUNT}") -> int:
    """Return the count in `digits`; raise BadOption unless it is 1..MAX_COUNT in ASCII digits."""
    if not (
        len(digits) <= _MAX_COUNT_DIGITS
        and digits.isascii()
        and digits.isdigit()
        and 1 <= int(digits) <= MAX_COUNT
    ):
        raise BadOption(option="count", value=token, allowed=allowed)
    return int(digits)


def _bare(token: str) -> tuple[str, str | int] | None:
    """Return (option, value) for a token that stands on its own, None for a prompt word."""
    word = token.lower()
    if (size := _size(word, token)) is not None:
        return "size", size
    if word in BARE_RATIOS:
        return "size", word
    if count := _COUNT_RE.fullmatch(word):
        return "count", _count(count.group(1), token, allowed=f"x1..x{MAX_COUNT}")
    return None


def _choice(option: str, value: str, token: str, accepted: tuple[str, ...]) -> str:
    word = value.lower()
    if word not in accepted:
        raise BadOption(option=option, value=token, allowed=", ".join(accepted))
    return word


def _keyed(key: str, value: str, token: str) -> tuple[str, str | int]:
    """Return (option, value) for `--key value`; raise BadOption for a value it cannot take."""
    word = value.lower()
    if key == "count":
        return "count", _count(word, token)
    if key == "ratio":
        ratio = _ratio(word, token)
        if ratio is None:
            raise BadOption(option="size", value=token, allowed="W:H, e.g. 16:9")
        return "size", ratio
    if key == "size":
        if word in (*_SIZE_WORDS, "auto"):
            return "size", word
        found = _size(word, token) or _ratio(word, token)
        if found is None:
            allowed = "WxH, W:H, " + ", ".join((*_SIZE_WORDS, "auto"))
            raise BadOption(option="size", value=token, allowed=allowed)
        return "size", found
    accepted = {"quality": _QUALITIES, "style": _STYLES, "background": _BACKGROUNDS}[key]
    return key, _choice(key, value, token, accepted)


_EXAMPLES: Final = {
    "size": "--size 1536x1024",
    "ratio": "--ar 16:9",
    "count": "--n 3",
    "quality": "--quality high",
    "style": "--style natural",
    "background": "--background transparent",
}


def _last_token(text: str, end: int) -> tuple[str, int] | None:
    """Return the last token of `text[:end]` and where it starts, or None if only spaces."""
    head = text[:end].rstrip()
    if not head:
        return None
    # rsplit from the right touches only the last token.
    token = head.rsplit(None, 1)[-1]
    return token, len(head) - len(token)


def parse_image_args(text: str) -> ParsedCommand:
    """Split `/image` arguments into the prompt and its trailing options."""
    found: dict[str, tuple[str, str | int]] = {}  # option -> (token(s) as typed, value)
    end = len(text)
    while (last := _last_token(text, end)) is not None:
        token, start = last
        marked = _marked(token)
        typed = token
        option: str
        value: str | int
        if marked is not None:
            name, inline = marked
            if name in _FLAGS and inline is None:
                option, value = _FLAGS[name]
            elif name in _KEYS and inline:
                option, value = _keyed(_KEYS[name], inline, token)
            elif name in _KEYS:
                raise MissingValue(option=_KEYS[name], value=token, example=_EXAMPLES[_KEYS[name]])
            else:
                raise UnknownOption(value=token)
        else:
            before = _last_token(text, start)
            key = _marked(before[0]) if before is not None else None
            if before is not None and key is not None and key[0] in _KEYS and key[1] is None:
                typed = f"{before[0]} {token}"
                option, value = _keyed(_KEYS[key[0]], token, typed)
                start = before[1]
            elif (bare := _bare(token)) is not None:
                option, value = bare
            else:
                break
        if option in found:
            raise ConflictingOption(option=option, values=(typed, found[option][0]))
        found[option] = (typed, value)
        end = start
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


def as_typed(option: str, value: str) -> str:
    """Return how a user types one option value: `--high`, `16:9`, `--background opaque`.

    Values that are not typed as such (a count range, a size rule's description) are returned
    unchanged.
    """
    bare = _SIZE_RE.fullmatch(value) or value in BARE_RATIOS or value == "WxH"
    if option == "count" or (option == "size" and bare) or " " in value:
        return value
    if _FLAGS.get(value) == (option, value):
        return f"--{value}"
    return f"--{option} {value}"


def _typed(option: str, value: str | None) -> str | None:
    return None if value is None else as_typed(option, value)


def describe_options(options: ImageOptions) -> str:
    """Render the set options as the user would type them, e.g. "16:9 · x2 · --high"."""
    parts = [
        _typed("size", options.size),
        None if options.count is None else f"x{options.count}",
        _typed("quality", options.quality),
        _typed("style", options.style),
        _typed("background", options.background),
    ]
    return " · ".join(part for part in parts if part is not None)
