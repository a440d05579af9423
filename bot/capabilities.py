"""Model capability table, and turning parsed `ImageOptions` into a valid `ImageDescription`.

Pure: no I/O. The table follows the official images API schema (late 2026); models it does not
know get a permissive fallback that passes the user's options through unchanged and sends nothing
the user did not ask for, because OpenAI-compatible hosts (LocalAI, gateways) reject fields they do
not know far more often than they miss ones they were not sent.

Quality words are mapped per family, only where two words mean the same thing:

| typed      | GPT image (low/medium/high/auto) | dall-e-3 (standard/hd) | dall-e-2 (standard) |
|------------|----------------------------------|------------------------|---------------------|
| `low`      | low                              | standard               | standard            |
| `medium`   | medium                           | standard               | standard            |
| `high`     | high                             | hd                     | rejected            |
| `hd`       | high                             | hd                     | rejected            |
| `standard` | medium                           | standard               | standard            |
| `auto`     | auto                             | omitted (default)      | omitted (default)   |

Unknown models receive the typed word unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bot.prompt import ImageOptions, PromptError

__all__ = [
    "UNKNOWN_FAMILY",
    "ImageDescription",
    "ModelCaps",
    "PromptTooLong",
    "SizeRule",
    "UnsupportedOption",
    "caps_for",
    "check_defaults",
    "describe_sizes",
    "family_of",
    "known_models",
    "parse_size",
    "resolve",
]

NAMED_SIZES = ("square", "landscape", "portrait")
_SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")
_EMPTY: Mapping[str, object] = MappingProxyType({})


class UnsupportedOption(PromptError):
    """An option the chosen model does not accept; `allowed` lists what it does accept."""

    def __init__(self, *, option: str, value: object, model: str, allowed: tuple[str, ...]) -> None:
        self.option = option
        self.value = value
        self.model = model
        self.allowed = allowed
        accepted = ", ".join(allowed) if allowed else "none"
        super().__init__(f"{model} does not accept {option} {value!r} (accepted: {accepted})")


class PromptTooLong(PromptError):
    """The prompt is longer than the model accepts."""

    def __init__(self, *, limit: int, length: int) -> None:
        self.limit = limit
        self.length = length
        super().__init__(f"prompt has {length} characters; the model accepts at most {limit}")


@dataclass(frozen=True)
class SizeRule:
    """Free-form `WxH` sizes a model accepts (the gpt-image-2 family)."""

    multiple: int = 16
    max_ratio: float = 3.0
    max_edge: int = 3840
    min_pixels: int = 655_360
    max_pixels: int = 3840 * 2160

    def accepts(self, width: int, height: int) -> bool:
        """Tell whether `width`x`height` satisfies the rule."""
        if width <= 0 or height <= 0:
            return False
        if width % self.multiple or height % self.multiple:
            return False
        if max(width, height) > self.max_edge:
            return False
        if max(width, height) / min(width, height) > self.max_ratio:
            return False
        return self.min_pixels <= width * height <= self.max_pixels

    def describe(self) -> str:
        """Return the rule as one human-readable line."""
        ratio = f"{self.max_ratio:g}"
        return (
            f"WxH: sides multiples of {self.multiple}, ratio up to {ratio}:1, "
            f"sides up to {self.max_edge}, {self.min_pixels}–{self.max_pixels} pixels"
        )


def _frozen(mapping: Mapping[str, str | None]) -> Mapping[str, str | None]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class ModelCaps:
    """What one model accepts; `None` in a tuple field means "anything, passed through"."""

    name: str
    sizes: tuple[str, ...] | None
    size_rule: SizeRule | None = None
    named_sizes: Mapping[str, str] = field(default_factory=dict, hash=False)
    max_count: int = 10
    one_per_request: bool = False
    qualities: tuple[str, ...] | None = None
    quality_map: Mapping[str, str | None] | None = field(default=None, hash=False)
    styles: tuple[str, ...] | None = None
    backgrounds: tuple[str, ...] | None = None
    max_prompt_chars: int = 32_000
    response_format: bool = False
    supports_edit: bool = True
    supports_variation: bool = False
    gpt_image: bool = False
    known: bool = True
    square_uploads: bool = False  # edits/variations take only square PNGs (dall-e-2)

    def accepts_size(self, size: str) -> bool:
        """Tell whether a concrete size (`WxH` or `auto`) is accepted."""
        if self.sizes is not None and size in self.sizes:
            return True
        if size == "auto":
            return self.sizes is None and (self.size_rule is not None or not self.known)
        parsed = parse_size(size)
        if parsed is None or min(parsed) <= 0:
            return False
        if self.size_rule is not None:
            return self.size_rule.accepts(*parsed)
        return self.sizes is None


_GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
_GPT_NAMED = MappingProxyType(
    {"square": "1024x1024", "landscape": "1536x1024", "portrait": "1024x1536"}
)
_GPT_QUALITY = _frozen(
    {
        "low": "low",
        "medium": "medium",
        "high": "high",
        "auto": "auto",
        "hd": "high",
        "standard": "medium",
    }
)
_DALLE3_QUALITY = _frozen(
    {
        "standard": "standard",
        "hd": "hd",
        "high": "hd",
        "low": "standard",
        "medium": "standard",
        "auto": None,
    }
)
_DALLE2_QUALITY = _frozen(
    {"standard": "standard", "low": "standard", "medium": "standard", "auto": None}
)


def _gpt_image(name: str, *, free_sizes: bool) -> ModelCaps:
    return ModelCaps(
        name=name,
        sizes=None if free_sizes else _GPT_SIZES,
        size_rule=SizeRule() if free_sizes else None,
        named_sizes=_GPT_NAMED,
        max_count=10,
        qualities=("low", "medium", "high", "auto"),
        quality_map=_GPT_QUALITY,
        styles=(),
        backgrounds=("transparent", "opaque", "auto"),
        max_prompt_chars=32_000,
        response_format=False,
        supports_edit=True,
        supports_variation=False,
        gpt_image=True,
    )


def _dalle3(name: str) -> ModelCaps:
    return ModelCaps(
        name=name,
        sizes=("1024x1024", "1792x1024", "1024x1792"),
        named_sizes=MappingProxyType(
            {"square": "1024x1024", "landscape": "1792x1024", "portrait": "1024x1792"}
        ),
        max_count=10,
        one_per_request=True,
        qualities=("standard", "hd"),
        quality_map=_DALLE3_QUALITY,
        styles=("vivid", "natural"),
        backgrounds=(),
        max_prompt_chars=4000,
        response_format=True,
        supports_edit=False,
        supports_variation=False,
    )


def _dalle2(name: str) -> ModelCaps:
    return ModelCaps(
        name=name,
        sizes=("256x256", "512x512", "1024x1024"),
        named_sizes=MappingProxyType({"square": "1024x1024"}),
        max_count=10,
        qualities=("standard",),
        quality_map=_DALLE2_QUALITY,
        styles=(),
        backgrounds=(),
        max_prompt_chars=1000,
        response_format=True,
        supports_edit=True,
        supports_variation=True,
        square_uploads=True,
    )


def _unknown(name: str) -> ModelCaps:
    return ModelCaps(
        name=name,
        sizes=None,
        named_sizes=_GPT_NAMED,
        max_count=10,
        max_prompt_chars=32_000,
        response_format=False,
        supports_edit=True,
        supports_variation=True,
        known=False,
    )


# Longest prefix first: dated snapshots ("gpt-image-2-2026-04-21") share their family's caps.
_PREFIXES = (
    ("gpt-image-2", lambda name: _gpt_image(name, free_sizes=True)),
    ("gpt-image-1.5", lambda name: _gpt_image(name, free_sizes=False)),
    ("gpt-image-1-mini", lambda name: _gpt_image(name, free_sizes=False)),
    ("gpt-image-1", lambda name: _gpt_image(name, free_sizes=False)),
    ("chatgpt-image-latest", lambda name: _gpt_image(name, free_sizes=False)),
    ("dall-e-3", _dalle3),
    ("dall-e-2", _dalle2),
)


def known_models() -> tuple[str, ...]:
    """Return the model names (families) the table knows."""
    return tuple(prefix for prefix, _ in _PREFIXES)


UNKNOWN_FAMILY = "unknown"


def family_of(model: str) -> str | None:
    """Return the table family `model` belongs to, or None when the table does not know it.

    A provider prefix (`openai/dall-e-3`, `azure/gpt-image-1`), as gateways name models, is
    read past.
    """
    key = model.strip().lower().rsplit("/", 1)[-1]
    for prefix, _ in _PREFIXES:
        if key.startswith(prefix):
            return prefix
    return None


def caps_for(model: str, aliases: Mapping[str, str] | None = None) -> ModelCaps:
    """Return the capabilities of `model`, or the permissive fallback for unknown ones.

    `aliases` maps an operator's model name (a gateway's `my-dalle3`) to the table entry it
    stands for (`dall-e-3`, or `unknown` for the permissive fallback); the caps keep the
    operator's name, which is what is sent.
    """
    target = (aliases or {}).get(model.strip(), model)
    family = family_of(target)
    for prefix, build in _PREFIXES:
        if prefix == family:
            return build(model)
    return _unknown(model)


def parse_size(text: str) -> tuple[int, int] | None:
    """Parse `WxH` into (width, height), or return None."""
    match = _SIZE_RE.match(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class ImageDescription:
    """One validated request for the images API (what to ask for, already in the model's terms)."""

    prompt: str
    model: str
    n: int = 1
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    extra: Mapping[str, object] = field(default_factory=lambda: _EMPTY, hash=False)


def describe_sizes(caps: ModelCaps) -> tuple[str, ...]:
    """Return the sizes a user may type for this model, for /help and error replies."""
    listed: list[str] = []
    if caps.sizes is not None:
        listed.extend(size for size in caps.sizes if size != "auto")
    elif caps.size_rule is not None:
        listed.extend(size for size in _GPT_SIZES if size != "auto")
    listed.extend(name for name in NAMED_SIZES if name in caps.named_sizes)
    if caps.size_rule is not None:
        listed.append(caps.size_rule.describe())
    elif caps.sizes is None:
        listed.insert(0, "WxH")
    return tuple(listed)


def _resolve_size(size: str, caps: ModelCaps) -> str:
    text = size.strip().lower()
    if text in NAMED_SIZES:
        named = caps.named_sizes.get(text)
        if named is None:
            raise UnsupportedOption(
                option="size", value=size, model=caps.name, allowed=describe_sizes(caps)
            )
        return named
    parsed = parse_size(text)
    concrete = f"{parsed[0]}x{parsed[1]}" if parsed is not None else text
    if not caps.accepts_size(concrete):
        raise UnsupportedOption(
            option="size", value=size, model=caps.name, allowed=describe_sizes(caps)
        )
    return concrete


def _resolve_quality(quality: str, caps: ModelCaps) -> str | None:
    word = quality.strip().lower()
    if caps.quality_map is None:
        return word
    if word not in caps.quality_map:
        raise UnsupportedOption(
            option="quality", value=quality, model=caps.name, allowed=caps.qualities or ()
        )
    return caps.quality_map[word]


def _resolve_choice(option: str, value: str, accepted: tuple[str, ...] | None, model: str) -> str:
    word = value.strip().lower()
    if accepted is not None and word not in accepted:
        raise UnsupportedOption(option=option, value=value, model=model, allowed=accepted)
    return word


def resolve(
    *,
    prompt: str,
    options: ImageOptions,
    caps: ModelCaps,
    default_size: str | None = None,
    default_quality: str | None = None,
    default_count: int = 1,
    extra: Mapping[str, object] | None = None,
) -> ImageDescription:
    """Validate `options` against `caps` and map them into the model's own terms."""
    if len(prompt) > caps.max_prompt_chars:
        raise PromptTooLong(limit=caps.max_prompt_chars, length=len(prompt))
    count = options.count if options.count is not None else default_count
    if not 1 <= count <= caps.max_count:
        raise UnsupportedOption(
            option="count", value=count, model=caps.name, allowed=(f"1–{caps.max_count}",)
        )
    size_text = options.size or default_size
    size = _resolve_size(size_text, caps) if size_text else None
    quality_text = options.quality or default_quality
    quality = _resolve_quality(quality_text, caps) if quality_text else None
    style = (
        _resolve_choice("style", options.style, caps.styles, caps.name) if options.style else None
    )
    background = (
        _resolve_choice("background", options.background, caps.backgrounds, caps.name)
        if options.background
        else None
    )
    # Transparency needs an alpha channel: PNG is the GPT image default, but say so explicitly.
    output_format = "png" if caps.gpt_image and background == "transparent" else None
    return ImageDescription(
        prompt=prompt,
        model=caps.name,
        n=count,
        size=size,
        quality=quality,
        style=style,
        background=background,
        output_format=output_format,
        extra=MappingProxyType(dict(extra)) if extra else _EMPTY,
    )


def check_defaults(
    caps: ModelCaps, *, default_size: str | None, default_quality: str | None
) -> list[str]:
    """Return the problems with configured defaults for this model (empty when fine)."""
    problems: list[str] = []
    if default_size:
        try:
            _resolve_size(default_size, caps)
        except UnsupportedOption as exc:
            problems.append(
                f"DEFAULT_IMAGE_SIZE={default_size!r} is not accepted by {caps.name} "
                f"(accepted: {', '.join(exc.allowed)})"
            )
    if default_quality:
        try:
            _resolve_quality(default_quality, caps)
        except UnsupportedOption as exc:
            problems.append(
                f"DEFAULT_IMAGE_QUALITY={default_quality!r} is not accepted by {caps.name} "
                f"(accepted: {', '.join(exc.allowed) or 'none'})"
            )
    return problems
