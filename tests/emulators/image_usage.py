"""Realistic `usage` of the GPT image models, for the images emulator's answers.

Output tokens per picture are OpenAI's published figures for the fixed sizes (low 272/408/400,
medium 1056/1584/1568, high 4160/6240/6208 for 1024x1024 / 1024x1536 / 1536x1024); other sizes
(gpt-image-2's free sizes) scale the 1024x1024 figure by the picture's pixels. Text input is about
one token per four characters of the prompt; an edit's input picture costs image tokens.
"""

from __future__ import annotations

import math
from typing import Any

OUTPUT_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
EDIT_IMAGE_TOKENS = 1_088  # one 1024x1024 input picture at high input fidelity


def output_tokens(size: str, quality: str) -> int:
    """Return the output image tokens of one picture of `size` at `quality`."""
    table = OUTPUT_TOKENS[quality]
    if size in table:
        return table[size]
    width, _, height = size.partition("x")
    return math.ceil(table["1024x1024"] * int(width) * int(height) / (1024 * 1024))


def usage(*, prompt: str, n: int, size: str, quality: str, edit: bool) -> dict[str, Any]:
    """Return the `usage` object of an answer with `n` pictures."""
    text = max(1, math.ceil(len(prompt) / 4))
    image = EDIT_IMAGE_TOKENS if edit else 0
    output = output_tokens(size, quality) * n
    return {
        "input_tokens": text + image,
        "output_tokens": output,
        "total_tokens": text + image + output,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
    }
