"""Caption text for generated images: HTML escaping, UTF-16 length and truncation.

Telegram counts caption length in UTF-16 code units of the visible text, after it has parsed the
HTML markup, and rejects captions over 1024 units. Truncation therefore happens on plain text and
escaping afterwards, so an entity such as `&amp;` is never cut in half.
"""

from __future__ import annotations

import html
import re
from typing import Final

__all__ = ["build_caption", "truncate_utf16", "utf16_len", "visible_text"]

CAPTION_LIMIT: Final = 1024
_TAG_RE: Final = re.compile(r"<[^>]*>")
# Characters that only make sense joined to what follows them; never leave one dangling at a cut.
_JOINERS: Final = "\u200d\ufe0e\ufe0f"


def utf16_len(text: str) -> int:
    """Return the length of `text` in UTF-16 code units, as Telegram counts it."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def truncate_utf16(text: str, limit: int, *, ellipsis: str = "…") -> str:
    """Cut `text` to at most `limit` UTF-16 units, ending it with `ellipsis` when cut."""
    if limit < 0:
        raise ValueError("limit must not be negative")
    if utf16_len(text) <= limit:
        return text
    room = limit - utf16_len(ellipsis)
    if room < 0:
        ellipsis, room = "", limit
    used = 0
    cut = 0
    # Python indexes code points, so a cut between characters never splits a surrogate pair.
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > room:
            break
        used += width
        cut += 1
    return text[:cut].rstrip().rstrip(_JOINERS) + ellipsis


def _share(budget: int, first: int, second: int) -> tuple[int, int]:
    """Split `budget` between two texts of the given lengths, the first taking any odd unit."""
    if first + second <= budget:
        return first, second
    half = (budget + 1) // 2
    if first <= half:
        return first, budget - first
    if second <= budget - half:
        return budget - second, second
    return half, budget - half


def build_caption(
    *,
    prompt: str,
    revised_prompt: str | None,
    revised_label: str,
    options_line: str | None = None,
    limit: int = CAPTION_LIMIT,
) -> str:
    """Build an HTML caption of the prompt, the model's revision of it and an options line."""
    prompt = prompt.strip()
    revised = (revised_prompt or "").strip()
    label = revised_label.strip()
    show_revised = bool(revised) and revised.casefold() != prompt.casefold()

    options = truncate_utf16((options_line or "").strip(), limit)
    room = limit - utf16_len(options)
    if options and (prompt or show_revised):
        room -= 1  # the newline before the options line
    room = max(room, 0)

    label_cost = utf16_len(label) + 1 if label else 0  # the label and the space after it
    revised_overhead = label_cost + (2 if prompt else 0)  # plus the blank line after the prompt
    prompt_len, revised_len = utf16_len(prompt), utf16_len(revised)
    if show_revised:
        prompt_room, revised_room = _share(room - revised_overhead, prompt_len, revised_len)
        # A revision squeezed to almost nothing is noise: give its room back to the prompt.
        if revised_room < min(revised_len, 2) or revised_room <= 0:
            show_revised = False
    if not show_revised:
        prompt_room, revised_room = room, 0

    blocks: list[str] = []
    if prompt_text := truncate_utf16(prompt, prompt_room):
        blocks.append(html.escape(prompt_text, quote=False))
    if show_revised:
        revised_text = html.escape(truncate_utf16(revised, revised_room), quote=False)
        if label:
            revised_text = f"<i>{html.escape(label, quote=False)}</i> {revised_text}"
        blocks.append(revised_text)
    caption = "\n\n".join(blocks)
    if options:
        options_html = html.escape(options, quote=False)
        caption = f"{caption}\n{options_html}" if caption else options_html
    return caption


def visible_text(markup: str) -> str:
    """Return the text Telegram shows for HTML `markup`: tags removed, entities decoded."""
    return html.unescape(_TAG_RE.sub("", markup))
