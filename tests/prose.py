"""A hypothesis strategy for prompts made of words and punctuation (what people type as prose).

Shared by the parser's property test and the end-to-end one: for any such prompt the bot must
send exactly what was typed. Punctuation may stand alone or close a word; it never opens a word
with a dash, because `--word` (or `—word`) is how an option is marked.
"""

from __future__ import annotations

from hypothesis import strategies as st

from bot.prompt import MARKERS

DASHES = {marker[0] for marker in MARKERS}

# Words that used to be read as options (issue #8) come up often, next to any letters at all.
OPTION_WORDS = (
    "natural vivid square landscape portrait high low medium hd standard auto transparent"
)
WORDS = st.one_of(
    st.sampled_from(OPTION_WORDS.split()),
    st.text(st.characters(categories=["L"]), min_size=1, max_size=12),
)
PUNCTUATION = st.text(st.characters(categories=["P"]), min_size=1, max_size=3)
OPENING = st.text(st.characters(categories=["P"], exclude_characters=DASHES), max_size=2)
TOKENS = st.one_of(
    WORDS,
    st.builds(lambda word, after: word + after, WORDS, PUNCTUATION),
    st.builds(lambda before, word: before + word, OPENING, WORDS),
    PUNCTUATION,
)
SEPARATORS = st.sampled_from([" ", "  ", "\n", " \n", "\n\n"])


@st.composite
def prose(draw: st.DrawFn, *, max_tokens: int = 15) -> str:
    """Draw a prompt of words and punctuation over one or more lines."""
    tokens = draw(st.lists(TOKENS, min_size=1, max_size=max_tokens))
    text = tokens[0]
    for token in tokens[1:]:
        text += draw(SEPARATORS) + token
    return text
