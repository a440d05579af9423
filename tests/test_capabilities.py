"""Table tests of the model capability table and of resolving options into descriptions."""

from __future__ import annotations

import dataclasses

import pytest

from bot.capabilities import (
    ImageDescription,
    ModelCaps,
    PromptTooLong,
    SizeRule,
    UnsupportedOption,
    caps_for,
    check_defaults,
    describe_sizes,
    known_models,
    parse_ratio,
    parse_size,
    ratio_size,
    resolve,
)
from bot.prompt import ImageOptions, PromptError

GPT_FIXED = ("gpt-image-1.5", "gpt-image-1", "gpt-image-1-mini", "chatgpt-image-latest")
GPT_FREE = ("gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-2-preview")
GPT_ALL = GPT_FIXED + GPT_FREE


def _resolve(model: str, **options: object) -> ImageDescription:
    return resolve(prompt="a yellow alpaca", options=ImageOptions(**options), caps=caps_for(model))  # type: ignore[arg-type]


# -- the table ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    (
        "model",
        "max_count",
        "one_per_request",
        "response_format",
        "prompt_limit",
        "edit",
        "variation",
    ),
    [
        *[(m, 10, False, False, 32000, True, False) for m in GPT_ALL],
        ("dall-e-3", 10, True, True, 4000, False, False),
        ("dall-e-2", 10, False, True, 1000, True, True),
        ("stable-diffusion-xl", 10, False, False, 32000, True, True),
    ],
)
def test_model_table(
    model: str,
    max_count: int,
    one_per_request: bool,
    response_format: bool,
    prompt_limit: int,
    edit: bool,
    variation: bool,
) -> None:
    caps = caps_for(model)
    assert caps.name == model
    assert caps.max_count == max_count
    assert caps.one_per_request is one_per_request
    assert caps.response_format is response_format
    assert caps.max_prompt_chars == prompt_limit
    assert caps.supports_edit is edit
    assert caps.supports_variation is variation


@pytest.mark.parametrize("model", GPT_ALL)
def test_gpt_image_family(model: str) -> None:
    caps = caps_for(model)
    assert caps.gpt_image
    assert caps.qualities == ("low", "medium", "high", "auto")
    assert caps.backgrounds == ("transparent", "opaque", "auto")
    assert caps.styles == ()
    assert caps.known


def test_free_sizes_only_for_gpt_image_2() -> None:
    for model in GPT_FREE:
        assert caps_for(model).size_rule == SizeRule()
        assert caps_for(model).sizes is None
    for model in GPT_FIXED:
        assert caps_for(model).size_rule is None
        assert caps_for(model).sizes == ("1024x1024", "1536x1024", "1024x1536", "auto")


def test_lookup_ignores_case_and_keeps_the_given_name() -> None:
    caps = caps_for("DALL-E-3")
    assert caps.one_per_request
    assert caps.name == "DALL-E-3"


def test_unknown_model_is_permissive_and_sends_nothing_extra() -> None:
    caps = caps_for("flux-dev")
    assert not caps.known
    assert caps.sizes is None and caps.size_rule is None
    assert caps.qualities is None and caps.styles is None and caps.backgrounds is None
    assert not caps.response_format and not caps.gpt_image
    description = _resolve(
        "flux-dev", size="832x1216", quality="ultra", style="anime", background="transparent"
    )
    assert (description.size, description.quality, description.style, description.background) == (
        "832x1216",
        "ultra",
        "anime",
        "transparent",
    )
    assert description.output_format is None


def test_caps_are_frozen_and_hashable() -> None:
    caps = caps_for("gpt-image-2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.max_count = 3  # type: ignore[misc]
    assert hash(caps) == hash(caps_for("gpt-image-2"))
    assert isinstance(caps, ModelCaps)


# -- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "typed", "sent"),
    [
        *[(m, "square", "1024x1024") for m in GPT_ALL],
        *[(m, "landscape", "1536x1024") for m in GPT_ALL],
        *[(m, "portrait", "1024x1536") for m in GPT_ALL],
        ("dall-e-3", "square", "1024x1024"),
        ("dall-e-3", "landscape", "1792x1024"),
        ("dall-e-3", "portrait", "1024x1792"),
        ("dall-e-2", "square", "1024x1024"),
        ("flux-dev", "landscape", "1536x1024"),
        ("gpt-image-1", "1536x1024", "1536x1024"),
        ("gpt-image-1", "1024X1536", "1024x1536"),
        ("gpt-image-1", "auto", "auto"),
        ("gpt-image-2", "auto", "auto"),
        ("gpt-image-2", "1536x864", "1536x864"),
        ("gpt-image-2", "3840x2160", "3840x2160"),
        ("gpt-image-2", "2160x3840", "2160x3840"),
        ("gpt-image-2", "2048x2048", "2048x2048"),
        ("gpt-image-2", "1920x640", "1920x640"),  # exactly 3:1
        ("gpt-image-2", "1024x640", "1024x640"),  # exactly the pixel minimum
        ("gpt-image-2-2026-04-21", "2560x1440", "2560x1440"),
        ("dall-e-3", "1792x1024", "1792x1024"),
        ("dall-e-2", "256x256", "256x256"),
        ("dall-e-2", "512x512", "512x512"),
        ("flux-dev", "1000x700", "1000x700"),
    ],
)
def test_accepted_sizes(model: str, typed: str, sent: str) -> None:
    assert _resolve(model, size=typed).size == sent


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("gpt-image-2", "1000x1000"),  # not a multiple of 16
        ("gpt-image-2", "4000x1000"),  # ratio 4:1 and edge over 3840
        ("gpt-image-2", "3008x992"),  # ratio over 3:1
        ("gpt-image-2", "3840x3840"),  # too many pixels
        ("gpt-image-2", "3856x1920"),  # edge over 3840
        ("gpt-image-2", "512x512"),  # too few pixels
        ("gpt-image-2", "0x1024"),
        ("gpt-image-1", "1792x1024"),
        ("gpt-image-1", "1536x864"),
        ("gpt-image-1.5", "2048x2048"),
        ("chatgpt-image-latest", "512x512"),
        ("dall-e-3", "1536x1024"),
        ("dall-e-3", "auto"),
        ("dall-e-2", "1792x1024"),
        ("dall-e-2", "landscape"),
        ("dall-e-2", "portrait"),
        ("flux-dev", "0x0"),
        ("gpt-image-1", "big"),
    ],
)
def test_rejected_sizes(model: str, size: str) -> None:
    with pytest.raises(UnsupportedOption) as caught:
        _resolve(model, size=size)
    error = caught.value
    assert isinstance(error, PromptError)
    assert error.option == "size"
    assert error.value == size
    assert error.allowed == describe_sizes(caps_for(model))
    assert size in str(error)


def test_describe_sizes() -> None:
    assert describe_sizes(caps_for("gpt-image-1")) == (
        "1024x1024",
        "1536x1024",
        "1024x1536",
        "square",
        "landscape",
        "portrait",
    )
    free = describe_sizes(caps_for("gpt-image-2"))
    assert free[:6] == describe_sizes(caps_for("gpt-image-1"))
    assert "16" in free[6] and "3840" in free[6] and "3:1" in free[6]
    assert describe_sizes(caps_for("dall-e-3")) == (
        "1024x1024",
        "1792x1024",
        "1024x1792",
        "square",
        "landscape",
        "portrait",
    )
    assert describe_sizes(caps_for("dall-e-2")) == ("256x256", "512x512", "1024x1024", "square")
    assert describe_sizes(caps_for("flux-dev")) == ("WxH", "square", "landscape", "portrait")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1024x768", (1024, 768)),
        (" 10X20 ", (10, 20)),
        ("5×6", (5, 6)),
        ("1024", None),
        ("x", None),
    ],
)
def test_parse_size(text: str, parsed: tuple[int, int] | None) -> None:
    assert parse_size(text) == parsed


# -- qualities ----------------------------------------------------------------------------------

QUALITY_TABLE = [
    # typed,     gpt-image,  dall-e-3,    dall-e-2
    ("low", "low", "standard", "standard"),
    ("medium", "medium", "standard", "standard"),
    ("high", "high", "hd", UnsupportedOption),
    ("hd", "high", "hd", UnsupportedOption),
    ("standard", "medium", "standard", "standard"),
    ("auto", "auto", None, None),
]


@pytest.mark.parametrize(("typed", "gpt", "dalle3", "dalle2"), QUALITY_TABLE)
def test_quality_mapping(typed: str, gpt: str, dalle3: str | None, dalle2: object) -> None:
    for model in GPT_ALL:
        assert _resolve(model, quality=typed).quality == gpt
    assert _resolve("dall-e-3", quality=typed).quality == dalle3
    if dalle2 is UnsupportedOption:
        with pytest.raises(UnsupportedOption) as caught:
            _resolve("dall-e-2", quality=typed)
        assert caught.value.option == "quality"
        assert caught.value.allowed == ("standard",)
    else:
        assert _resolve("dall-e-2", quality=typed).quality == dalle2
    assert _resolve("flux-dev", quality=typed).quality == typed


def test_unknown_quality_word_is_rejected_by_known_models() -> None:
    with pytest.raises(UnsupportedOption) as caught:
        _resolve("gpt-image-2", quality="ultra")
    assert caught.value.allowed == ("low", "medium", "high", "auto")
    with pytest.raises(UnsupportedOption) as caught:
        _resolve("dall-e-3", quality="ultra")
    assert caught.value.allowed == ("standard", "hd")


# -- styles, backgrounds, counts, prompt length --------------------------------------------------


@pytest.mark.parametrize("style", ["vivid", "natural"])
def test_style_only_on_dalle3(style: str) -> None:
    assert _resolve("dall-e-3", style=style).style == style
    for model in (*GPT_ALL, "dall-e-2"):
        with pytest.raises(UnsupportedOption) as caught:
            _resolve(model, style=style)
        assert (caught.value.option, caught.value.value, caught.value.allowed) == (
            "style",
            style,
            (),
        )


def test_transparent_background() -> None:
    for model in GPT_ALL:
        description = _resolve(model, background="transparent")
        assert description.background == "transparent"
        assert description.output_format == "png"
    for model in ("dall-e-3", "dall-e-2"):
        with pytest.raises(UnsupportedOption) as caught:
            _resolve(model, background="transparent")
        assert caught.value.option == "background"


@pytest.mark.parametrize("model", [*GPT_ALL, "dall-e-3", "dall-e-2", "flux-dev"])
def test_counts(model: str) -> None:
    assert _resolve(model).n == 1
    assert _resolve(model, count=10).n == 10
    for bad in (0, 11):
        with pytest.raises(UnsupportedOption) as caught:
            _resolve(model, count=bad)
        assert (caught.value.option, caught.value.value, caught.value.allowed) == (
            "count",
            bad,
            ("1–10",),
        )


@pytest.mark.parametrize(
    ("model", "limit"), [("gpt-image-2", 32000), ("dall-e-3", 4000), ("dall-e-2", 1000)]
)
def test_prompt_length(model: str, limit: int) -> None:
    caps = caps_for(model)
    assert resolve(prompt="a" * limit, options=ImageOptions(), caps=caps).prompt == "a" * limit
    with pytest.raises(PromptTooLong) as caught:
        resolve(prompt="a" * (limit + 1), options=ImageOptions(), caps=caps)
    assert (caught.value.limit, caught.value.length) == (limit, limit + 1)
    assert isinstance(caught.value, PromptError)


# -- defaults and extra ---------------------------------------------------------------------------


def test_defaults_apply_when_options_are_missing() -> None:
    caps = caps_for("gpt-image-2")
    description = resolve(
        prompt="p",
        options=ImageOptions(),
        caps=caps,
        default_size="landscape",
        default_quality="hd",
        default_count=2,
        extra={"moderation": "low"},
    )
    assert description == ImageDescription(
        prompt="p",
        model="gpt-image-2",
        n=2,
        size="1536x1024",
        quality="high",
        extra={"moderation": "low"},
    )
    typed = resolve(
        prompt="p",
        options=ImageOptions(size="square", quality="low", count=1),
        caps=caps,
        default_size="landscape",
        default_quality="hd",
        default_count=2,
    )
    assert (typed.size, typed.quality, typed.n) == ("1024x1024", "low", 1)
    assert dict(typed.extra) == {}


def test_extra_is_copied() -> None:
    extra = {"user": "u1"}
    description = resolve(prompt="p", options=ImageOptions(), caps=caps_for("x"), extra=extra)
    extra["user"] = "changed"
    assert description.extra == {"user": "u1"}


def test_a_bad_default_is_reported_by_resolve_too() -> None:
    with pytest.raises(UnsupportedOption):
        resolve(
            prompt="p", options=ImageOptions(), caps=caps_for("dall-e-2"), default_size="portrait"
        )


@pytest.mark.parametrize(
    ("model", "size", "quality", "problems"),
    [
        ("gpt-image-2", None, None, []),
        ("gpt-image-2", "2048x1152", "high", []),
        ("gpt-image-2", "landscape", "hd", []),
        ("gpt-image-2", "1000x1000", None, ["DEFAULT_IMAGE_SIZE"]),
        ("gpt-image-1", "2048x1152", "ultra", ["DEFAULT_IMAGE_SIZE", "DEFAULT_IMAGE_QUALITY"]),
        ("dall-e-2", "portrait", "hd", ["DEFAULT_IMAGE_SIZE", "DEFAULT_IMAGE_QUALITY"]),
        ("dall-e-3", "1792x1024", "standard", []),
        ("flux-dev", "777x555", "whatever", []),
    ],
)
def test_check_defaults(
    model: str, size: str | None, quality: str | None, problems: list[str]
) -> None:
    found = check_defaults(caps_for(model), default_size=size, default_quality=quality)
    assert [problem.split("=", 1)[0] for problem in found] == problems
    for problem in found:
        assert model in problem


# -- aspect ratios ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "ratio", "size"),
    [
        # Listed sizes: the one of the nearest shape.
        ("dall-e-3", "16:9", "1792x1024"),
        ("dall-e-3", "9:16", "1024x1792"),
        ("dall-e-3", "1:1", "1024x1024"),
        ("dall-e-3", "3:2", "1792x1024"),
        ("dall-e-3", "5:4", "1024x1024"),
        ("dall-e-3", "21:9", "1792x1024"),
        ("gpt-image-1", "16:9", "1536x1024"),
        ("gpt-image-1", "4:3", "1536x1024"),
        ("gpt-image-1", "2:3", "1024x1536"),
        ("gpt-image-1", "1:1", "1024x1024"),
        ("gpt-image-1-mini", "9:16", "1024x1536"),
        ("gpt-image-1.5", "3:2", "1536x1024"),
        ("dall-e-2", "16:9", "1024x1024"),  # only squares: the one nearest the pixel budget
        ("dall-e-2", "1:1", "1024x1024"),
        # Free-form sizes (gpt-image-2): the exact ratio, sides multiples of 16, near 1024x1024.
        ("gpt-image-2", "1:1", "1024x1024"),
        ("gpt-image-2", "16:9", "1280x720"),
        ("gpt-image-2", "9:16", "720x1280"),
        ("gpt-image-2", "3:2", "1248x832"),
        ("gpt-image-2", "2:3", "832x1248"),
        ("gpt-image-2", "4:3", "1152x864"),
        ("gpt-image-2", "5:4", "1120x896"),
        ("gpt-image-2", "21:9", "1568x672"),
        ("gpt-image-2", "3:1", "1776x592"),
        ("gpt-image-2", "7:5", "1232x880"),
        ("gpt-image-2", "32:18", "1280x720"),  # not reduced first: the same shape as 16:9
        ("gpt-image-2-2026-04-21", "16:9", "1280x720"),
        # No exact size within the rule: the nearest rounded one.
        ("gpt-image-2", "999:998", "1024x1024"),
        ("gpt-image-2", "997:500", "1440x720"),
        # Unknown models take any WxH: the exact ratio the same way.
        ("flux-dev", "16:9", "1280x720"),
    ],
)
def test_ratio_maps_to_a_size_the_model_accepts(model: str, ratio: str, size: str) -> None:
    caps = caps_for(model)
    width, height = (int(part) for part in ratio.split(":"))
    assert ratio_size(caps, width, height) == size
    assert resolve(prompt="p", options=ImageOptions(size=ratio), caps=caps).size == size
    if caps.known:
        assert caps.accepts_size(size)
    if caps.size_rule is not None and caps.known:
        wide, high = (int(side) for side in size.split("x"))
        exact = wide * height == high * width
        assert exact == (ratio not in ("999:998", "997:500")), (size, ratio)


@pytest.mark.parametrize("ratio", ["4:1", "1:4", "10:1"])
def test_ratio_past_the_free_form_limit_is_refused_with_the_rule(ratio: str) -> None:
    caps = caps_for("gpt-image-2")
    with pytest.raises(UnsupportedOption) as caught:
        resolve(prompt="p", options=ImageOptions(size=ratio), caps=caps)
    assert caught.value.value == ratio
    assert caps.size_rule is not None and caps.size_rule.describe() in caught.value.allowed


@pytest.mark.parametrize("ratio", ["1:1", "16:9", "9:16", "3:2", "2:3", "4:3", "21:9", "9:21"])
def test_every_bare_ratio_resolves_for_every_known_model(ratio: str) -> None:
    for model in known_models():
        caps = caps_for(model)
        size = resolve(prompt="p", options=ImageOptions(size=ratio), caps=caps).size
        assert size is not None and caps.accepts_size(size), (model, ratio, size)


def test_parse_ratio() -> None:
    assert parse_ratio("16:9") == (16, 9)
    assert parse_ratio(" 3 : 2 ") == (3, 2)
    assert parse_ratio("16x9") is None
    assert parse_ratio("1000:1") is None
    assert parse_ratio("16:") is None
