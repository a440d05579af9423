"""Tests for bot.captions: UTF-16 lengths, truncation and the HTML caption."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.captions import build_caption, truncate_utf16, utf16_len, visible_text

CAT = "\U0001f431"  # astral: two UTF-16 units
PROPERTY = settings(max_examples=250, deadline=None)


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("", 0),
        ("abc", 3),
        ("привет", 6),
        ("€", 1),
        (CAT, 2),
        (f"a{CAT}b", 4),
        ("👨‍👩‍👧", 8),  # three astral people joined by two ZWJs
        ("\U0010ffff", 2),
    ],
)
def test_utf16_len(text: str, length: int) -> None:
    assert utf16_len(text) == length


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("hello", 10, "hello"),
        ("hello", 5, "hello"),
        ("hello", 4, "hel…"),
        ("hello", 1, "…"),
        ("hello", 0, ""),
        ("", 0, ""),
        ("hello world", 7, "hello…"),  # trailing space before the ellipsis dropped
        (f"ab{CAT}", 3, "ab…"),
        (f"ab{CAT}cd", 4, "ab…"),  # the pair does not fit with the ellipsis: not split
        (f"ab{CAT}cd", 5, f"ab{CAT}…"),
        (f"{CAT}{CAT}", 2, "…"),
        ("a\u200d" + CAT + "xyz", 3, "a…"),  # no dangling zero-width joiner
    ],
)
def test_truncate_utf16(text: str, limit: int, expected: str) -> None:
    assert truncate_utf16(text, limit) == expected


def test_truncate_utf16_custom_ellipsis() -> None:
    assert truncate_utf16("hello world", 8, ellipsis="...") == "hello..."
    assert truncate_utf16("hello", 2, ellipsis="...") == "he"  # no room for the ellipsis
    assert truncate_utf16("hello", 3, ellipsis="") == "hel"


def test_truncate_utf16_rejects_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        truncate_utf16("x", -1)


@PROPERTY
@given(st.text(), st.integers(0, 300), st.sampled_from(["…", "...", "", CAT]))
def test_truncate_utf16_property(text: str, limit: int, ellipsis: str) -> None:
    result = truncate_utf16(text, limit, ellipsis=ellipsis)
    assert utf16_len(result) <= limit
    if utf16_len(text) <= limit:
        assert result == text
    else:
        body = result.removesuffix(ellipsis) if ellipsis else result
        assert text.startswith(body)
    result.encode("utf-16-le")  # strict: no lone surrogate was produced


LABEL = "Revised prompt:"


def test_caption_with_prompt_only() -> None:
    assert build_caption(prompt="a cat", revised_prompt=None, revised_label=LABEL) == "a cat"
    assert build_caption(prompt="  a cat \n", revised_prompt="", revised_label=LABEL) == "a cat"


def test_caption_with_revised_prompt_and_options() -> None:
    caption = build_caption(
        prompt="a <cat> & dog",
        revised_prompt="A photo of a <cat> & a dog.",
        revised_label=LABEL,
        options_line="1024x1024 · x2",
    )
    assert caption == (
        "a &lt;cat&gt; &amp; dog\n\n"
        "<i>Revised prompt:</i> A photo of a &lt;cat&gt; &amp; a dog.\n"
        "1024x1024 · x2"
    )
    assert visible_text(caption) == (
        "a <cat> & dog\n\nRevised prompt: A photo of a <cat> & a dog.\n1024x1024 · x2"
    )


@pytest.mark.parametrize("revised", ["a cat", "A CAT", "  a cat  ", "\na Cat\n", "", None])
def test_revised_prompt_same_as_prompt_is_left_out(revised: str | None) -> None:
    caption = build_caption(prompt="a cat", revised_prompt=revised, revised_label=LABEL)
    assert caption == "a cat"


def test_empty_prompt_with_revision_and_options() -> None:
    caption = build_caption(
        prompt="", revised_prompt="a cat", revised_label=LABEL, options_line="x2"
    )
    assert caption == "<i>Revised prompt:</i> a cat\nx2"
    assert build_caption(prompt="", revised_prompt=None, revised_label=LABEL) == ""
    only_options = build_caption(
        prompt="", revised_prompt=None, revised_label=LABEL, options_line="hd"
    )
    assert only_options == "hd"


def test_label_is_escaped_and_empty_label_has_no_tag() -> None:
    caption = build_caption(prompt="a", revised_prompt="b", revised_label="R&D <says>:")
    assert caption == "a\n\n<i>R&amp;D &lt;says&gt;:</i> b"
    assert build_caption(prompt="a", revised_prompt="b", revised_label="") == "a\n\nb"


def test_long_prompt_is_cut_with_ellipsis_and_entities_stay_whole() -> None:
    prompt = "&" * 2000
    caption = build_caption(prompt=prompt, revised_prompt=None, revised_label=LABEL)
    assert utf16_len(visible_text(caption)) == 1024
    assert caption.endswith("&amp;…")
    assert caption == "&amp;" * 1023 + "…"


def test_long_prompt_and_revision_share_the_room() -> None:
    caption = build_caption(
        prompt="p" * 2000, revised_prompt="r" * 2000, revised_label=LABEL, options_line="x2"
    )
    text = visible_text(caption)
    assert utf16_len(text) <= 1024
    prompt_part, rest = text.split("\n\n")
    revised_part, options = rest.rsplit("\n", 1)
    assert options == "x2"
    assert revised_part.startswith(LABEL + " r")
    assert prompt_part.endswith("…") and revised_part.endswith("…")
    # Shared about evenly, the prompt taking any odd unit.
    revised_body = revised_part.removeprefix(LABEL + " ")
    assert 0 <= len(prompt_part) - len(revised_body) <= 1
    assert len(text) >= 1020


def test_short_prompt_leaves_the_rest_to_the_revision() -> None:
    caption = build_caption(prompt="cat", revised_prompt="r" * 5000, revised_label=LABEL)
    text = visible_text(caption)
    assert utf16_len(text) == 1024
    assert text.startswith(f"cat\n\n{LABEL} rrr")


def test_short_revision_leaves_the_rest_to_the_prompt() -> None:
    caption = build_caption(prompt="p" * 5000, revised_prompt="cat", revised_label=LABEL)
    text = visible_text(caption)
    assert utf16_len(text) == 1024
    assert text.endswith(f"…\n\n{LABEL} cat")


def test_tiny_limit_drops_the_revision_not_the_prompt() -> None:
    caption = build_caption(prompt="a cat", revised_prompt="a dog", revised_label=LABEL, limit=10)
    assert caption == "a cat"
    caption = build_caption(
        prompt="a long cat", revised_prompt="a dog", revised_label=LABEL, limit=5
    )
    assert caption == "a lo…"


def test_astral_characters_count_twice() -> None:
    caption = build_caption(prompt=CAT * 600, revised_prompt=None, revised_label=LABEL)
    assert caption == CAT * 511 + "…"
    assert utf16_len(caption) == 1023


TAG_RE = re.compile(r"<[^>]*>")
ENTITY_RE = re.compile(r"&(?!(?:amp|lt|gt);)")

ANY_TEXT = st.one_of(
    st.text(max_size=1500),
    st.text(st.sampled_from(["<", ">", "&", "a", " ", "\n", CAT, "é", "\u200d"]), max_size=1500),
)


@PROPERTY
@given(
    prompt=ANY_TEXT,
    revised=st.none() | ANY_TEXT,
    label=st.sampled_from([LABEL, "", "Переработано:", "<b>&</b>", CAT * 3]),
    options=st.none() | st.sampled_from(["1024x1024 · x2 · high", "", "a&b<c>", CAT]),
    limit=st.sampled_from([1024, 1024, 200, 30, 5, 1, 0]),
)
def test_caption_property(
    prompt: str, revised: str | None, label: str, options: str | None, limit: int
) -> None:
    caption = build_caption(
        prompt=prompt,
        revised_prompt=revised,
        revised_label=label,
        options_line=options,
        limit=limit,
    )
    text = visible_text(caption)
    assert utf16_len(text) <= limit
    # Only <i>…</i> markup, balanced, and every & starts a whole entity.
    tags = TAG_RE.findall(caption)
    assert tags in ([], ["<i>", "</i>"])
    assert not ENTITY_RE.search(caption)
    text.encode("utf-16-le")  # no lone surrogates
    if revised is None and options is None:
        assert text == truncate_utf16(prompt.strip(), limit)
