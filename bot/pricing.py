"""Pure money math: what a picture costs, what a request may cost at most, the budget's errors.

Money is an exact integer count of nano-dollars (`Nanos`, 1e-9 USD): every official per-token
price is a whole number of nano-dollars per token ($5 per 1M tokens = 5,000 n$ per token), so
costs add up without the drift of floats. Amounts typed by operators (``DAILY_BUDGET_USD``,
``MODEL_PRICES``) are read as decimals and must be exact in nano-dollars.

Prices in USD per 1M tokens (text input / image input / image output), checked December 2026;
where each figure comes from:

* gpt-image-2: 5 / 8 / 30 -- OpenAI's model page and openai.com/api/pricing, as quoted by
  xairouter.com/en/models/gpt-image-2 ("updated from OpenAI's official model page") and
  llmreference.com/model/gpt-image-2.
* gpt-image-1.5: 5 / 8 / 32 -- openai.com/api/pricing, as quoted by
  imagine.art/blogs/gpt-image-1-5-pricing and llmreference.com/model/gpt-image-1.5.
* chatgpt-image-latest: the alias of the current ChatGPT snapshot, priced like gpt-image-1.5
  (aifreeapi.com/en/posts/gpt-image-1-5-pricing).
* gpt-image-1: 5 / 10 / 40 -- developers.openai.com/api/docs/models/gpt-image-1.
* gpt-image-1-mini: 2 / 2.5 / 8 -- developers.openai.com/api/docs/models/gpt-image-1-mini.

Models that answer without ``usage`` (dall-e-2, dall-e-3 on gateways, self-hosted servers) have
no official per-token figure: they are free unless ``MODEL_PRICES`` gives them a per-image price
(dall-e-3 was $0.04 per standard 1024x1024 picture, but gateways charge what they like).

Output image tokens per picture for the fixed sizes of the GPT image models
(community.openai.com/t/gpt-image-1-collected-pricing-information…/1275254, from OpenAI's image
generation guide): low 272/408/400, medium 1056/1584/1568, high 4160/6240/6208 for
1024x1024 / 1024x1536 / 1536x1024. There is no official table for gpt-image-2's free sizes; the
worst case scales the largest per-pixel figure of each quality (6240 tokens for 1024x1536 at
high) by the picture's pixels, times `UNPUBLISHED_MARGIN` for models without a published table.

Exception family (the budget boundary)::

    BudgetExhausted   the day's DAILY_BUDGET_USD cannot take this request's worst case
    PriceError        a MODEL_PRICES entry is malformed (a start-up ConfigError line)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

__all__ = [
    "NANOS_PER_USD",
    "BudgetExhausted",
    "ModelPrice",
    "Nanos",
    "PriceError",
    "budget_levels",
    "cost_of",
    "format_usd",
    "parse_model_prices",
    "parse_usd",
    "price_for",
    "worst_case",
]

Nanos = int
NANOS_PER_USD = 1_000_000_000
_PER_MILLION = NANOS_PER_USD // 1_000_000  # nano-dollars per token for $1 per 1M tokens

# A safe bound on a request's input tokens that the bot cannot count before the call: one text
# token per UTF-8 byte of the prompt (a token is never shorter than a byte), and this many image
# tokens per uploaded picture (an edit of a 4K photo at high input fidelity stays below it).
MAX_IMAGE_INPUT_TOKENS = 12_000
# Models whose output tokens per size are not published get this much headroom on the table.
UNPUBLISHED_MARGIN = 2
ALERT_LEVELS = (80, 100)  # percent of the day's budget at which the admins are told, once each

# Output image tokens per picture, by quality, for the published fixed sizes.
_OUTPUT_TOKENS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "low": MappingProxyType({"1024x1024": 272, "1024x1536": 408, "1536x1024": 400}),
        "medium": MappingProxyType({"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568}),
        "high": MappingProxyType({"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208}),
    }
)
_WORST_QUALITY = "high"  # "auto" and unknown words may turn out high
_LARGEST_SIZE = (1024, 1536)  # "auto" may pick any of the fixed sizes


class PriceError(ValueError):
    """A price given by the operator is malformed; the message says what is expected."""


class BudgetExhausted(Exception):
    """The day's budget cannot take this request's worst-case cost; it resets at `resets_at`."""

    def __init__(self, *, budget: Nanos, spent: Nanos, needed: Nanos, resets_at: datetime) -> None:
        super().__init__(
            f"daily budget of {format_usd(budget)} reached: {format_usd(spent)} spent or "
            f"reserved, this request may cost {format_usd(needed)}; resets at "
            f"{resets_at.isoformat()}"
        )
        self.budget = budget
        self.spent = spent
        self.needed = needed
        self.resets_at = resets_at


@dataclass(frozen=True)
class ModelPrice:
    """What one model costs: nano-dollars per token of each kind, or per picture."""

    text_input: Nanos = 0
    image_input: Nanos = 0
    image_output: Nanos = 0
    per_image: Nanos = 0
    published_tokens: bool = False  # the output tokens per size are in `_OUTPUT_TOKENS`

    @property
    def by_tokens(self) -> bool:
        """Return whether the model is billed by tokens (else per picture, or free)."""
        return bool(self.text_input or self.image_input or self.image_output)


def _tokens(text_in: str, image_in: str, image_out: str, *, published: bool) -> ModelPrice:
    def per_token(usd_per_million: str) -> Nanos:
        return int(Decimal(usd_per_million) * _PER_MILLION)

    return ModelPrice(
        text_input=per_token(text_in),
        image_input=per_token(image_in),
        image_output=per_token(image_out),
        published_tokens=published,
    )


# Longest prefix first, like the capability table: dated snapshots share their family's price.
DEFAULT_PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        "gpt-image-2": _tokens("5", "8", "30", published=False),
        "gpt-image-1.5": _tokens("5", "8", "32", published=True),
        "gpt-image-1-mini": _tokens("2", "2.5", "8", published=True),
        "gpt-image-1": _tokens("5", "10", "40", published=True),
        "chatgpt-image-latest": _tokens("5", "8", "32", published=True),
    }
)
FREE = ModelPrice()


def price_for(model: str, overrides: Mapping[str, ModelPrice] | None = None) -> ModelPrice:
    """Return the price of `model`: an exact override, else the longest matching prefix."""
    table = {**DEFAULT_PRICES, **(overrides or {})}
    if model in table:
        return table[model]
    for prefix in sorted(table, key=len, reverse=True):
        if model.startswith(prefix):
            return table[prefix]
    return FREE


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def cost_of(usage: Mapping[str, object] | None, *, images: int, price: ModelPrice) -> Nanos:
    """Return the cost of an answer from its `usage` (tokens) or its number of pictures."""
    if usage is None or not price.by_tokens:
        return price.per_image * max(0, images)
    details = usage.get("input_tokens_details")
    input_tokens = _int(usage.get("input_tokens"))
    if isinstance(details, Mapping):
        text_in = _int(details.get("text_tokens"))
        image_in = _int(details.get("image_tokens"))
        text_in += max(0, input_tokens - text_in - image_in)  # unsplit remainder billed as text
    else:
        text_in, image_in = input_tokens, 0
    output = _int(usage.get("output_tokens"))
    return text_in * price.text_input + image_in * price.image_input + output * price.image_output


def _output_tokens(size: str | None, quality: str | None, *, published: bool) -> int:
    known = quality if quality is not None and quality in _OUTPUT_TOKENS else _WORST_QUALITY
    table = _OUTPUT_TOKENS[known]
    if published and size is not None and size in table:
        return table[size]
    width, height = _LARGEST_SIZE
    if size and "x" in size:
        left, _, right = size.partition("x")
        if left.isdigit() and right.isdigit():
            width, height = int(left), int(right)
    largest = max(table.values())
    tokens = math.ceil(width * height * largest / (_LARGEST_SIZE[0] * _LARGEST_SIZE[1]))
    tokens = max(tokens, largest if size in (None, "", "auto") else 0)
    return tokens if published else tokens * UNPUBLISHED_MARGIN


def worst_case(
    *,
    prompt: str,
    n: int,
    size: str | None,
    quality: str | None,
    price: ModelPrice,
    source_images: int = 0,
) -> Nanos:
    """Return the most a request can cost: n pictures of that size and quality, input bounded."""
    if not price.by_tokens:
        return price.per_image * max(0, n)
    text_tokens = len(prompt.encode("utf-8"))
    image_tokens = MAX_IMAGE_INPUT_TOKENS * max(0, source_images)
    output = _output_tokens(size, quality, published=price.published_tokens) * max(0, n)
    return (
        text_tokens * price.text_input
        + image_tokens * price.image_input
        + output * price.image_output
    )


def budget_levels(*, budget: Nanos, spent: Nanos) -> tuple[int, ...]:
    """Return the alert levels (80, 100 percent) that `spent` has reached under `budget`."""
    if budget <= 0:
        return ()
    return tuple(level for level in ALERT_LEVELS if spent * 100 >= budget * level)


def parse_usd(text: str) -> Nanos | None:
    """Read a dollar amount like ``5`` or ``0.25`` (≥ 0, exact in nano-dollars), else None."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    nanos = amount * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        return None
    return int(nanos)


_PRICE_FIELDS = {
    "input_text_per_1m": ("text_input", _PER_MILLION),
    "input_image_per_1m": ("image_input", _PER_MILLION),
    "output_image_per_1m": ("image_output", _PER_MILLION),
    "per_image": ("per_image", NANOS_PER_USD),
}
_FIELDS_HINT = ", ".join(_PRICE_FIELDS)


def _amount(model: str, key: str, value: object, scale: int) -> Nanos:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceError(f'"{model}".{key} must be a number of dollars')
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise PriceError(f'"{model}".{key} must be a number of dollars') from None
    if not amount.is_finite() or amount < 0:
        raise PriceError(f'"{model}".{key} must be a number of dollars ≥ 0')
    nanos = amount * scale
    if nanos != nanos.to_integral_value():
        raise PriceError(f'"{model}".{key} is finer than a nano-dollar per token or picture')
    return int(nanos)


def parse_model_prices(text: str) -> Mapping[str, ModelPrice]:
    """Read ``MODEL_PRICES`` (a JSON object of model -> price fields); raise PriceError."""
    try:
        loaded = json.loads(text)
    except ValueError:
        raise PriceError("not valid JSON") from None
    if not isinstance(loaded, dict):
        raise PriceError('a JSON object like {"dall-e-3": {"per_image": 0.04}}')
    prices: dict[str, ModelPrice] = {}
    for model, fields in loaded.items():
        if not model or any(ch.isspace() for ch in model):
            raise PriceError(f"model names without spaces, not {json.dumps(model)}")
        if not isinstance(fields, dict) or not fields:
            raise PriceError(f'"{model}" must be an object with some of {_FIELDS_HINT}')
        values: dict[str, Nanos] = {}
        for key, value in fields.items():
            if key not in _PRICE_FIELDS:
                raise PriceError(f'"{model}" has {json.dumps(key)}; known fields: {_FIELDS_HINT}')
            name, scale = _PRICE_FIELDS[key]
            values[name] = _amount(model, key, value, scale)
        base = price_for(model)
        merged = ModelPrice(
            text_input=values.get("text_input", base.text_input),
            image_input=values.get("image_input", base.image_input),
            image_output=values.get("image_output", base.image_output),
            per_image=values.get("per_image", base.per_image),
            published_tokens=base.published_tokens,
        )
        prices[model] = merged
    return MappingProxyType(prices)


def format_usd(nanos: Nanos) -> str:
    """Return an amount as dollars: to the cent from $1, exactly (up to 9 decimals) below."""
    amount = Decimal(nanos) / NANOS_PER_USD
    if amount == 0:
        return "$0"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    text = f"{amount:.9f}".rstrip("0").rstrip(".")
    return f"${text}"
