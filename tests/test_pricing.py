"""bot.pricing: official prices, cost from usage, worst cases, operator prices, formatting."""

from __future__ import annotations

import pytest

from bot import pricing
from bot.pricing import ModelPrice, cost_of, parse_model_prices, parse_usd, price_for, worst_case
from tests.emulators import image_usage

# USD per 1M tokens (text in, image in, image out), as cited in bot/pricing.py, in nano-dollars
# per token: $1 per 1M tokens is 1,000 nano-dollars per token.
OFFICIAL = {
    "gpt-image-2": (5_000, 8_000, 30_000),
    "gpt-image-2-2026-04-21": (5_000, 8_000, 30_000),
    "gpt-image-1.5": (5_000, 8_000, 32_000),
    "gpt-image-1": (5_000, 10_000, 40_000),
    "gpt-image-1-mini": (2_000, 2_500, 8_000),
    "chatgpt-image-latest": (5_000, 8_000, 32_000),
}


@pytest.mark.parametrize(("model", "prices"), OFFICIAL.items())
def test_cost_from_usage_for_each_gpt_image_model(model: str, prices: tuple[int, ...]) -> None:
    text_in, image_in, image_out = prices
    usage = {
        "input_tokens": 150,
        "output_tokens": 4160,
        "total_tokens": 4310,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 100},
    }
    assert cost_of(usage, images=1, price=price_for(model)) == (
        50 * text_in + 100 * image_in + 4160 * image_out
    )


def test_gpt_image_1_high_square_costs_the_published_amount() -> None:
    usage = {"input_tokens": 0, "output_tokens": 4160, "input_tokens_details": {}}
    # $0.1664 for one high 1024x1024 picture (4160 tokens at $40 per 1M).
    assert cost_of(usage, images=1, price=price_for("gpt-image-1")) == 166_400_000
    assert pricing.format_usd(166_400_000) == "$0.1664"


def test_usage_without_details_is_billed_as_text_and_garbage_is_ignored() -> None:
    price = price_for("gpt-image-1")
    assert cost_of({"input_tokens": 10, "output_tokens": 1}, images=1, price=price) == (
        10 * 5_000 + 40_000
    )
    assert cost_of({"input_tokens": "x", "output_tokens": -5}, images=1, price=price) == 0


def test_models_without_usage_are_free_unless_priced() -> None:
    assert price_for("dall-e-3") == pricing.FREE
    assert cost_of(None, images=3, price=price_for("dall-e-3")) == 0
    prices = parse_model_prices('{"dall-e-3": {"per_image": 0.04}}')
    assert cost_of(None, images=3, price=price_for("dall-e-3", prices)) == 120_000_000
    # A token-priced model answering without usage (a gateway) falls back to its per-image price.
    assert cost_of(None, images=2, price=price_for("gpt-image-1")) == 0


def test_overrides_replace_single_fields_and_add_models() -> None:
    prices = parse_model_prices(
        '{"gpt-image-1": {"output_image_per_1m": 20}, "my-flux": {"per_image": "0.003"}}'
    )
    gpt = price_for("gpt-image-1-2025", prices)
    assert (gpt.text_input, gpt.image_input, gpt.image_output) == (5_000, 10_000, 20_000)
    assert price_for("my-flux", prices).per_image == 3_000_000
    assert price_for("gpt-image-1-mini", prices).image_output == 8_000  # longer prefix wins


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{",
        '{"m": 1}',
        '{"m": {}}',
        '{"m": {"per_pic": 1}}',
        '{"m": {"per_image": -1}}',
        '{"m": {"per_image": "abc"}}',
        '{"m": {"per_image": null}}',
        '{"m": {"per_image": 1e-12}}',
        '{"a b": {"per_image": 1}}',
    ],
)
def test_malformed_model_prices_are_refused(text: str) -> None:
    with pytest.raises(pricing.PriceError):
        parse_model_prices(text)


@pytest.mark.parametrize(
    ("text", "nanos"),
    [("0", 0), ("5", 5_000_000_000), ("0.25", 250_000_000), ("1e-9", 1), (" 2.5 ", 2_500_000_000)],
)
def test_parse_usd(text: str, nanos: int) -> None:
    assert parse_usd(text) == nanos


@pytest.mark.parametrize("text", ["-1", "abc", "inf", "NaN", "1e-10", ""])
def test_parse_usd_refuses(text: str) -> None:
    assert parse_usd(text) is None


@pytest.mark.parametrize(
    ("nanos", "shown"),
    [(0, "$0"), (1_234_560_000, "$1.23"), (10_880_000, "$0.01088"), (5, "$0.000000005")],
)
def test_format_usd(nanos: int, shown: str) -> None:
    assert pricing.format_usd(nanos) == shown


SIZES = ["1024x1024", "1024x1536", "1536x1024"]


@pytest.mark.parametrize("model", list(OFFICIAL))
@pytest.mark.parametrize("quality", ["low", "medium", "high"])
@pytest.mark.parametrize("size", [*SIZES, "2048x2048", "3840x2160"])
def test_worst_case_covers_a_realistic_answer(model: str, quality: str, size: str) -> None:
    price = price_for(model)
    if size not in SIZES and not model.startswith("gpt-image-2"):
        return  # free sizes are a gpt-image-2 feature
    prompt = "a lighthouse at dusk, öl painting " * 20
    usage = image_usage.usage(prompt=prompt, n=3, size=size, quality=quality, edit=True)
    actual = cost_of(usage, images=3, price=price)
    worst = worst_case(prompt=prompt, n=3, size=size, quality=quality, price=price, source_images=1)
    assert actual <= worst
    # ... and is not absurdly far above it for the published sizes.
    if size in SIZES and price.published_tokens:
        assert worst < actual * 2 + 12_000 * price.image_input


@pytest.mark.parametrize("model", list(OFFICIAL))
def test_unknown_size_and_quality_take_the_largest(model: str) -> None:
    price = price_for(model)
    largest = worst_case(prompt="", n=1, size="1024x1536", quality="high", price=price)
    assert worst_case(prompt="", n=1, size=None, quality=None, price=price) >= largest
    assert worst_case(prompt="", n=1, size="auto", quality="auto", price=price) >= largest


def test_worst_case_per_image_model() -> None:
    price = ModelPrice(per_image=40_000_000)
    assert worst_case(prompt="x" * 999, n=4, size=None, quality=None, price=price) == 160_000_000


def test_budget_levels() -> None:
    assert pricing.budget_levels(budget=0, spent=10) == ()
    assert pricing.budget_levels(budget=100, spent=79) == ()
    assert pricing.budget_levels(budget=100, spent=80) == (80,)
    assert pricing.budget_levels(budget=100, spent=100) == (80, 100)
