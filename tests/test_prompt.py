"""Tests for bot.prompt: parsing `/image` arguments into a prompt and options."""

from __future__ import annotations

import contextlib
import time
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.prompt import (
    BARE_RATIOS,
    MARKERS,
    BadOption,
    ConflictingOption,
    EmptyPrompt,
    ImageOptions,
    MissingValue,
    ParsedCommand,
    PromptError,
    UnknownOption,
    as_typed,
    describe_options,
    merge_options,
    parse_image_args,
)
from tests.prose import prose

Opts = ImageOptions


@pytest.mark.parametrize(
    ("text", "prompt", "options"),
    [
        ("yellow alpaca", "yellow alpaca", Opts()),
        ("yellow alpaca 1024x1024", "yellow alpaca", Opts(size="1024x1024")),
        ("yellow alpaca 1024X1536", "yellow alpaca", Opts(size="1024x1536")),
        ("yellow alpaca 1536×1024", "yellow alpaca", Opts(size="1536x1024")),
        ("жёлтая альпака 1024х1024", "жёлтая альпака", Opts(size="1024x1024")),  # Cyrillic х
        ("жёлтая альпака 1024Х1024 Х2", "жёлтая альпака", Opts(size="1024x1024", count=2)),
        ("cat 0256x00512", "cat", Opts(size="256x512")),
        ("cat 100000x1", "cat", Opts(size="100000x1")),
        ("cat --square", "cat", Opts(size="square")),
        ("cat --LANDSCAPE", "cat", Opts(size="landscape")),
        ("cat --Portrait", "cat", Opts(size="portrait")),
        ("cat x2", "cat", Opts(count=2)),
        ("cat x1", "cat", Opts(count=1)),
        ("cat X10", "cat", Opts(count=10)),
        ("cat ×3", "cat", Opts(count=3)),
        ("cat x01", "cat", Opts(count=1)),
        ("cat --high", "cat", Opts(quality="high")),
        ("cat --low", "cat", Opts(quality="low")),
        ("cat --medium", "cat", Opts(quality="medium")),
        ("cat --auto", "cat", Opts(quality="auto")),
        ("cat --HD", "cat", Opts(quality="hd")),
        ("cat --standard", "cat", Opts(quality="standard")),
        ("cat --vivid", "cat", Opts(style="vivid")),
        ("cat --natural", "cat", Opts(style="natural")),
        ("cat --transparent", "cat", Opts(background="transparent")),
        # Telegram's apps turn -- into an em dash (sometimes an en dash): the same option.
        ("cat —hd", "cat", Opts(quality="hd")),
        ("cat –vivid", "cat", Opts(style="vivid")),
        ("cat —ar 16:9 –n 3", "cat", Opts(size="16:9", count=3)),
        # Bare aspect ratios (the common ones) and --ar for any ratio.
        ("cat 16:9", "cat", Opts(size="16:9")),
        ("cat 9:16", "cat", Opts(size="9:16")),
        ("cat 3:2", "cat", Opts(size="3:2")),
        ("cat 1:1", "cat", Opts(size="1:1")),
        ("cat 21:9", "cat", Opts(size="21:9")),
        ("cat --ar 7:5", "cat", Opts(size="7:5")),
        ("cat --aspect 05:04", "cat", Opts(size="5:4")),
        ("cat --ar=2:1", "cat", Opts(size="2:1")),
        # Key and value, as two tokens or joined by =.
        ("cat --size 1536x1024", "cat", Opts(size="1536x1024")),
        ("cat --size=1536×1024", "cat", Opts(size="1536x1024")),
        ("cat --size square", "cat", Opts(size="square")),
        ("cat --size auto", "cat", Opts(size="auto")),
        ("cat --size 16:9", "cat", Opts(size="16:9")),
        ("cat --n 3", "cat", Opts(count=3)),
        ("cat --count=10", "cat", Opts(count=10)),
        ("cat --quality high", "cat", Opts(quality="high")),
        ("cat --quality=HD", "cat", Opts(quality="hd")),
        ("cat --style natural", "cat", Opts(style="natural")),
        ("cat --background transparent", "cat", Opts(background="transparent")),
        ("cat --background opaque", "cat", Opts(background="opaque")),
        (
            "yellow alpaca 1024x1024 x2 --high --vivid --transparent",
            "yellow alpaca",
            Opts(
                size="1024x1024", count=2, quality="high", style="vivid", background="transparent"
            ),
        ),
        (
            "yellow alpaca --background transparent --style vivid --quality high --n 2 --ar 1:1",
            "yellow alpaca",
            Opts(size="1:1", count=2, quality="high", style="vivid", background="transparent"),
        ),
        # Unmarked words are never options (issue #8's examples).
        ("a beautiful natural landscape", "a beautiful natural landscape", Opts()),
        ("logo on a square", "logo on a square", Opts()),
        ("sunset over the sea, vivid", "sunset over the sea, vivid", Opts()),
        ("cat high", "cat high", Opts()),
        ("cat transparent hd", "cat transparent hd", Opts()),
        ("cat portrait x2", "cat portrait", Opts(count=2)),
        # The scan stops at the first non-option from the end; earlier options are prompt.
        ("--high x2 cat", "--high x2 cat", Opts()),
        ("a --high tower x2", "a --high tower", Opts(count=2)),
        ("cat --hdd dog", "cat --hdd dog", Opts()),
        ("cat --size 1024x1024 dog", "cat --size 1024x1024 dog", Opts()),
        # A value without its key is prose unless it stands on its own.
        ("cat --hd high", "cat --hd high", Opts()),
        ("chapter 3", "chapter 3", Opts()),
        # Ratios that could be prose stay prose: times, verses, scores.
        ("meet me at 10:30", "meet me at 10:30", Opts()),
        ("john 3:16", "john 3:16", Opts()),
        ("final score 2:1", "final score 2:1", Opts()),
        ("cat 16:9:1", "cat 16:9:1", Opts()),
        # A marker followed by anything but ASCII letters is prose.
        ("to be — or not", "to be — or not", Opts()),
        ("wait for it —", "wait for it —", Opts()),
        ("the end --", "the end --", Opts()),
        ("count down --42", "count down --42", Opts()),
        ("a quote —Shakespeare.", "a quote —Shakespeare.", Opts()),
        ("a --кот", "a --кот", Opts()),
        ("a --HiGh2", "a --HiGh2", Opts()),
        ("a --ar16:9 x2", "a --ar16:9", Opts(count=2)),
        ("a ---hd", "a ---hd", Opts()),
        ("a -hd", "a -hd", Opts()),
        # Number-ish words that are not options.
        ("room 101", "room 101", Opts()),
        ("an x-ray", "an x-ray", Opts()),
        ("x2y", "x2y", Opts()),
        ("a cat x", "a cat x", Opts()),
        ("a cat 1024x", "a cat 1024x", Opts()),
        ("a cat x1024x", "a cat x1024x", Opts()),
        ("rubik's cube 3x3x3", "rubik's cube 3x3x3", Opts()),
        ("cat 1024x1024x2", "cat 1024x1024x2", Opts()),
        ("cat -1x5", "cat -1x5", Opts()),
        ("cat x-2", "cat x-2", Opts()),
        ("cat x2.5", "cat x2.5", Opts()),
        ("cat 2x", "cat 2x", Opts()),
        ("cat highx2", "cat highx2", Opts()),
        ("cat 1024*1024", "cat 1024*1024", Opts()),
        # Non-ASCII digits are not digits here.
        ("cat １０２４x１０２４", "cat １０２４x１０２４", Opts()),
        ("cat x٢", "cat x٢", Opts()),
        ("cat ²x²", "cat ²x²", Opts()),
        # Whitespace: outer stripped, inner kept exactly, any whitespace separates tokens.
        ("  cat  ", "cat", Opts()),
        ("\n\ncat\n\n", "cat", Opts()),
        ("a  big\n\ncat \t x2", "a  big\n\ncat", Opts(count=2)),
        ("a big cat\nx2", "a big cat", Opts(count=2)),
        ("a big cat\n\n--square\n--high\n", "a big cat", Opts(size="square", quality="high")),
        ("a big cat\t--square", "a big cat", Opts(size="square")),
        ("line one\nline two\n\nline three 16:9", "line one\nline two\n\nline three", Opts("16:9")),
        ("a big cat\u00a0x2", "a big cat", Opts(count=2)),  # NBSP
        ("a big cat\u2003x2", "a big cat", Opts(count=2)),  # em space
        ("a big cat\u3000x2", "a big cat", Opts(count=2)),  # ideographic space
        ("a big cat\u200bx2", "a big cat\u200bx2", Opts()),  # zero-width space is not whitespace
        ("a big cat x2\u200b", "a big cat x2\u200b", Opts()),
        # Options only, or nothing at all: empty prompt, never an error here.
        ("", "", Opts()),
        ("   \n\t ", "", Opts()),
        ("x2", "", Opts(count=2)),
        ("  1024x1024 x4 --hd  ", "", Opts(size="1024x1024", count=4, quality="hd")),
        ("--n 2", "", Opts(count=2)),
        # Markup and odd characters pass through untouched.
        ("<b>cat</b> & dog x2", "<b>cat</b> & dog", Opts(count=2)),
        ("`code` *bold* _it_ --square", "`code` *bold* _it_", Opts(size="square")),
        ("emoji 🐱‍👤 x3", "emoji 🐱‍👤", Opts(count=3)),
        ("ctrl \x00\x07 chars x2", "ctrl \x00\x07 chars", Opts(count=2)),
    ],
)
def test_parse_table(text: str, prompt: str, options: ImageOptions) -> None:
    assert parse_image_args(text) == ParsedCommand(prompt=prompt, options=options)


@pytest.mark.parametrize(
    ("text", "option", "value"),
    [
        ("cat x0", "count", "x0"),
        ("cat x11", "count", "x11"),
        ("cat X999", "count", "X999"),
        ("cat x00", "count", "x00"),
        ("cat x" + "9" * 5000, "count", "x" + "9" * 5000),
        ("cat 0x0", "size", "0x0"),
        ("cat 0x1024", "size", "0x1024"),
        ("cat 1024x0", "size", "1024x0"),
        ("cat 100001x1", "size", "100001x1"),
        ("cat 99999999x5", "size", "99999999x5"),
        ("cat 5x" + "9" * 5000, "size", "5x" + "9" * 5000),
        ("cat 1024х0", "size", "1024х0"),
        ("cat x0 1024x1024", "count", "x0"),
        ("cat --n 0", "count", "--n 0"),
        ("cat --n 11", "count", "--n 11"),
        ("cat --n three", "count", "--n three"),
        ("cat --n=٣", "count", "--n=٣"),
        ("cat --n " + "9" * 5000, "count", "--n " + "9" * 5000),
        ("cat --size big", "size", "--size big"),
        ("cat --size 0x0", "size", "--size 0x0"),
        ("cat --ar 16", "size", "--ar 16"),
        ("cat --ar 0:1", "size", "--ar 0:1"),
        ("cat --ar 1000:1", "size", "--ar 1000:1"),
        ("cat --quality ultra", "quality", "--quality ultra"),
        ("cat --style vivid2", "style", "--style vivid2"),
        ("cat --background pink", "background", "--background pink"),
    ],
)
def test_bad_option(text: str, option: str, value: str) -> None:
    with pytest.raises(BadOption) as caught:
        parse_image_args(text)
    assert caught.value.option == option
    assert caught.value.value == value
    assert caught.value.allowed
    assert caught.value.key == "prompt.bad_option"
    assert isinstance(caught.value, PromptError)


@pytest.mark.parametrize(
    ("text", "option", "values"),
    [
        ("cat x2 x3", "count", ("x2", "x3")),
        ("cat --square 1024x1024", "size", ("--square", "1024x1024")),
        ("cat --square —portrait", "size", ("--square", "—portrait")),
        ("cat 16:9 --size 1024x1024", "size", ("16:9", "--size 1024x1024")),
        ("cat --high x2 --low", "quality", ("--high", "--low")),
        ("cat --hd --quality low", "quality", ("--hd", "--quality low")),
        ("cat --vivid --natural", "style", ("--vivid", "--natural")),
        ("cat --transparent --TRANSPARENT", "background", ("--transparent", "--TRANSPARENT")),
        ("cat --n 2 x3", "count", ("--n 2", "x3")),
        ("cat x2 X2", "count", ("x2", "X2")),
        ("x2 x3", "count", ("x2", "x3")),
    ],
)
def test_conflicting_option(text: str, option: str, values: tuple[str, str]) -> None:
    with pytest.raises(ConflictingOption) as caught:
        parse_image_args(text)
    assert caught.value.option == option
    assert caught.value.values == values
    assert caught.value.key == "prompt.conflicting_option"


def test_duplicate_before_a_prompt_word_is_not_a_conflict() -> None:
    assert parse_image_args("x2 cat x3") == ParsedCommand("x2 cat", Opts(count=3))


@pytest.mark.parametrize("text", ["cat --hdd", "cat —colour", "cat –Squares", "--x"])
def test_unknown_marked_option_names_what_is_accepted(text: str) -> None:
    with pytest.raises(UnknownOption) as caught:
        parse_image_args(text)
    assert caught.value.value == text.rsplit(maxsplit=1)[-1]
    assert "--high" in caught.value.allowed and "--ar W:H" in caught.value.allowed
    assert caught.value.key == "prompt.unknown_option"


@pytest.mark.parametrize(
    ("text", "option", "example"),
    [
        ("cat --size", "size", "--size 1536x1024"),
        ("cat —ar", "ratio", "--ar 16:9"),
        ("cat --n=", "count", "--n 3"),
        ("cat --quality --hd", "quality", "--quality high"),
        ("--style", "style", "--style natural"),
    ],
)
def test_key_without_a_value(text: str, option: str, example: str) -> None:
    with pytest.raises(MissingValue) as caught:
        parse_image_args(text)
    assert caught.value.option == option
    assert caught.value.example == example
    assert caught.value.key == "prompt.missing_value"


def test_error_keys_are_distinct_and_stable() -> None:
    keys = {
        PromptError.key,
        EmptyPrompt.key,
        BadOption.key,
        ConflictingOption.key,
        UnknownOption.key,
        MissingValue.key,
    }
    assert len(keys) == 6
    assert EmptyPrompt().key == "prompt.empty"
    assert isinstance(EmptyPrompt(), PromptError)


def test_merge_options_primary_wins_field_by_field() -> None:
    primary = Opts(size="square", count=None, quality=None, style="vivid")
    fallback = Opts(size="1024x1024", count=2, quality="high", style="natural", background=None)
    assert merge_options(primary, fallback) == Opts(
        size="square", count=2, quality="high", style="vivid", background=None
    )
    assert merge_options(Opts(), fallback) == fallback
    assert merge_options(primary, Opts()) == primary


@pytest.mark.parametrize(
    ("options", "text"),
    [
        (Opts(), ""),
        (Opts(size="1024x1024", count=2, quality="high"), "1024x1024 · x2 · --high"),
        (Opts(count=1), "x1"),
        (Opts(style="vivid", background="transparent"), "--vivid · --transparent"),
        (
            Opts(size="square", count=10, quality="hd", style="natural", background="transparent"),
            "--square · x10 · --hd · --natural · --transparent",
        ),
        (Opts(size="16:9", background="opaque"), "16:9 · --background opaque"),
        (Opts(size="7:5"), "--size 7:5"),
        (Opts(size="auto"), "--size auto"),
    ],
)
def test_describe_options(options: ImageOptions, text: str) -> None:
    assert describe_options(options) == text


def test_long_input_is_parsed_in_linear_time() -> None:
    started = time.perf_counter()
    for text in (
        "word " * 200_000 + "x2",
        "a" * 1_000_000 + " --square",
        "--hd " * 200_000,
        "--n " * 200_000,
        "— " * 500_000 + "--ar 16:9",
        "cat --size " + "1" * 1_000_000 + "x1",
        " " * 1_000_000,
        "\n" * 500_000 + "x2",
        "1" * 1_000_000 + "x" + "1" * 1_000_000,
        "x" + "9" * 1_000_000,
    ):
        with contextlib.suppress(PromptError):
            parse_image_args(text)
    assert time.perf_counter() - started < 2.0


# Property tests -----------------------------------------------------------------------------

OPTION_TOKENS: dict[str, st.SearchStrategy[str]] = {
    "size": st.one_of(
        st.builds(
            lambda m, word: m + word,
            st.sampled_from(MARKERS),
            st.sampled_from(["square", "landscape", "portrait", "SQUARE"]),
        ),
        st.builds(
            lambda w, sep, h: f"{w}{sep}{h}",
            st.integers(1, 100_000),
            st.sampled_from(["x", "X", "×", "х", "Х"]),
            st.integers(1, 100_000),
        ),
        st.sampled_from(sorted(BARE_RATIOS)),
        st.builds(
            lambda m, key, sep, w, h: f"{m}{key}{sep}{w}:{h}",
            st.sampled_from(MARKERS),
            st.sampled_from(["ar", "aspect", "size"]),
            st.sampled_from([" ", "=", "\n"]),
            st.integers(1, 999),
            st.integers(1, 999),
        ),
    ),
    "count": st.one_of(
        st.builds(
            lambda sep, n: f"{sep}{n}", st.sampled_from(["x", "X", "×", "х"]), st.integers(1, 10)
        ),
        st.builds(lambda m, n: f"{m}n {n}", st.sampled_from(MARKERS), st.integers(1, 10)),
    ),
    "quality": st.one_of(
        st.builds(
            lambda m, word: m + word,
            st.sampled_from(MARKERS),
            st.sampled_from(["low", "medium", "high", "auto", "hd", "standard", "High"]),
        ),
        st.sampled_from(["--quality high", "—quality=low"]),
    ),
    "style": st.sampled_from(["--vivid", "--natural", "—Vivid", "--style natural"]),
    "background": st.sampled_from(["--transparent", "–Transparent", "--background opaque"]),
}

WHITESPACE = st.text(st.sampled_from(" \t\n\u00a0\u2003"), min_size=1, max_size=3)

PROPERTY = settings(max_examples=250, deadline=None)


@PROPERTY
@given(prose(max_tokens=40))
def test_any_prose_is_the_prompt_verbatim(text: str) -> None:
    """Words and punctuation are never options, on one line or several."""
    assert parse_image_args(text) == ParsedCommand(prompt=text, options=Opts())
    # Options after it are read, and the prose stays exactly as typed.
    assert parse_image_args(f"{text}\n16:9 x2 --hd") == ParsedCommand(
        prompt=text, options=Opts(size="16:9", count=2, quality="hd")
    )


@PROPERTY
@given(st.text(max_size=300))
def test_never_raises_anything_but_prompt_error(text: str) -> None:
    try:
        parsed = parse_image_args(text)
    except PromptError:
        return
    assert text.strip().startswith(parsed.prompt)
    assert parsed.prompt == parsed.prompt.strip()


ALPHABET = st.sampled_from([*list("ax×хX019 \n\t\xa0"), "high", "square", "x2", "x11", "1x1"])


@PROPERTY
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_option_like_noise_never_raises_anything_else(text: str) -> None:
    try:
        parsed = parse_image_args(text)
    except PromptError:
        return
    assert text.strip().startswith(parsed.prompt)
    # Outer whitespace never changes the result.
    assert parse_image_args(f" \n{text}\t ") == parsed


@st.composite
def prompt_and_options(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    prompt = draw(st.text(max_size=80)).strip()
    # A prompt whose last word is itself an option would be consumed; keep such prompts out.
    if prompt:
        last = prompt.split()[-1]
        try:
            if parse_image_args(last).prompt == "":
                prompt += " word"
        except PromptError:
            prompt += " word"
    kinds = draw(st.lists(st.sampled_from(sorted(OPTION_TOKENS)), unique=True, max_size=5))
    tokens = [(kind, draw(OPTION_TOKENS[kind])) for kind in kinds]
    return prompt, tokens


@PROPERTY
@given(prompt_and_options(), st.data())
def test_prompt_and_options_round_trip(
    case: tuple[str, list[tuple[str, str]]], data: st.DataObject
) -> None:
    prompt, tokens = case
    text = prompt
    for _, token in tokens:
        text += data.draw(WHITESPACE) + token
    text = data.draw(st.sampled_from(["", " ", "\n"])) + text + data.draw(WHITESPACE)

    parsed = parse_image_args(text)

    assert parsed.prompt == prompt
    given_kinds = {kind for kind, _ in tokens}
    for field in fields(ImageOptions):
        assert (getattr(parsed.options, field.name) is not None) == (field.name in given_kinds)
    # Describing the options and parsing that description gives the same options back.
    description = describe_options(parsed.options).replace(" · ", " ")
    assert parse_image_args(description) == ParsedCommand("", parsed.options)


@PROPERTY
@given(prompt_and_options())
def test_repeated_option_kind_conflicts(case: tuple[str, list[tuple[str, str]]]) -> None:
    prompt, tokens = case
    if not tokens:
        return
    kind, token = tokens[0]
    text = " ".join([prompt, token, *(t for _, t in tokens[1:]), token])
    with pytest.raises(ConflictingOption) as caught:
        parse_image_args(text)
    assert caught.value.option == kind


@PROPERTY
@given(
    st.builds(
        ImageOptions,
        size=st.none() | st.sampled_from(["square", "1024x1024"]),
        count=st.none() | st.integers(1, 10),
        quality=st.none() | st.sampled_from(["high", "low"]),
        style=st.none() | st.sampled_from(["vivid", "natural"]),
        background=st.none() | st.just("transparent"),
    ),
    st.builds(
        ImageOptions,
        size=st.none() | st.just("portrait"),
        count=st.none() | st.integers(1, 10),
        quality=st.none() | st.just("medium"),
        style=st.none() | st.just("natural"),
        background=st.none() | st.just("transparent"),
    ),
)
def test_merge_options_property(primary: ImageOptions, fallback: ImageOptions) -> None:
    merged = merge_options(primary, fallback)
    for field in fields(ImageOptions):
        mine = getattr(primary, field.name)
        expected = mine if mine is not None else getattr(fallback, field.name)
        assert getattr(merged, field.name) == expected


@pytest.mark.parametrize(
    ("option", "value", "typed"),
    [
        ("quality", "high", "--high"),
        ("quality", "hd", "--hd"),
        ("style", "natural", "--natural"),
        ("background", "transparent", "--transparent"),
        ("background", "opaque", "--background opaque"),
        ("size", "square", "--square"),
        ("size", "1024x1536", "1024x1536"),
        ("size", "16:9", "16:9"),
        ("size", "7:5", "--size 7:5"),
    ],
)
def test_accepted_values_are_shown_as_typed(option: str, value: str, typed: str) -> None:
    assert as_typed(option, value) == typed
    assert getattr(parse_image_args(f"cat {typed}").options, option) == value


@pytest.mark.parametrize(
    ("option", "value"),
    [("size", "WxH"), ("size", "WxH: sides multiples of 16"), ("count", "1–10")],
)
def test_descriptions_of_accepted_values_are_shown_unchanged(option: str, value: str) -> None:
    assert as_typed(option, value) == value
