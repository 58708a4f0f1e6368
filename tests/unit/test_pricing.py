"""The pricing table and integer cost arithmetic."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.services.pricing import (
    DEFAULT_IMAGE_PRICES,
    DEFAULT_TOKEN_PRICES,
    PriceTable,
    TokenPrice,
    TokenUsage,
    UnknownModelError,
    apply_markup,
    token_cost_micros,
    worst_case_token_cost_micros,
)

TABLE = PriceTable()

# USD per million tokens: input, output, cache write, cache read.
EXPECTED_TOKEN_RATES = {
    "claude-sonnet-5-5": ("2", "10", "2.50", "0.20"),
    "claude-opus-5-5": ("4", "20", "5.00", "0.40"),
    "claude-haiku-5-5": ("1", "5", "1.25", "0.10"),
    "claude-sonnet-5": ("2", "10", "2.50", "0.20"),
    "claude-opus-5": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-6": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-5": ("5", "25", "6.25", "0.50"),
    "claude-sonnet-4-6": ("3", "15", "3.75", "0.30"),
    "claude-sonnet-4-5": ("3", "15", "3.75", "0.30"),
    "claude-haiku-4-5": ("1", "5", "1.25", "0.10"),
    "claude-haiku-4-5-20251001": ("1", "5", "1.25", "0.10"),
}

EXPECTED_IMAGE_PRICES = {
    ("gemini-3-pro-image", "1K"): 134_000,
    ("gemini-3-pro-image", "2K"): 134_000,
    ("gemini-3-pro-image", "4K"): 240_000,
    ("gemini-3.1-flash-image", "512"): 45_000,
    ("gemini-3.1-flash-image", "1K"): 67_000,
    ("gemini-3.1-flash-image", "2K"): 101_000,
    ("gemini-3.1-flash-image", "4K"): 151_000,
    ("gemini-3-pro-image-preview", "1K"): 134_000,
    ("gemini-3-pro-image-preview", "2K"): 134_000,
    ("gemini-3-pro-image-preview", "4K"): 240_000,
    ("gemini-3.1-flash-image-preview", "512"): 45_000,
    ("gemini-3.1-flash-image-preview", "1K"): 67_000,
    ("gemini-3.1-flash-image-preview", "2K"): 67_000,
    ("gemini-3.1-flash-image-preview", "4K"): 120_000,
    ("gemini-2.5-flash-image", "1K"): 39_000,
}


def _micros_per_mtok(usd: str) -> int:
    return int(Decimal(usd) * 1_000_000)


@pytest.mark.parametrize(("model", "rates"), EXPECTED_TOKEN_RATES.items())
def test_token_prices_match_the_published_rates(model: str, rates: tuple[str, ...]) -> None:
    price = TABLE.token_price(model)
    assert (price.input, price.output, price.cache_write, price.cache_read) == tuple(
        _micros_per_mtok(r) for r in rates
    )
    assert price.price_version


@pytest.mark.parametrize(("model_size", "micros"), EXPECTED_IMAGE_PRICES.items())
def test_image_prices_per_size(model_size: tuple[str, str], micros: int) -> None:
    model, size = model_size
    assert TABLE.image_price(model, size) == micros
    assert TABLE.image_price_version(model)


def test_every_listed_image_size_is_expected() -> None:
    listed = {(m, s) for m, p in DEFAULT_IMAGE_PRICES.items() for s in p.by_size}
    assert listed == set(EXPECTED_IMAGE_PRICES)


def test_every_claude_entry_is_consistent() -> None:
    for model, price in DEFAULT_TOKEN_PRICES.items():
        if model.startswith("claude-"):
            assert price.cache_read < price.input < price.cache_write < price.output, model


def test_transcription_price_is_the_designed_one() -> None:
    # gemini-3.5-flash: 1.50 USD/MTok in (audio and text alike), 9 USD/MTok out; no caching.
    price = TABLE.token_price("gemini-3.5-flash")
    assert (price.input, price.output) == (1_500_000, 9_000_000)
    assert price.cache_read == price.cache_write == price.input


def test_unknown_models_and_sizes_fail_with_a_clear_message() -> None:
    with pytest.raises(UnknownModelError, match="claude-nonexistent"):
        TABLE.token_price("claude-nonexistent")
    with pytest.raises(UnknownModelError, match="dall-e"):
        TABLE.image_price("dall-e", "1K")
    with pytest.raises(UnknownModelError, match="'8K'"):
        TABLE.image_price("gemini-3-pro-image-preview", "8K")


def test_check_models_accepts_the_defaults_and_rejects_unknown_ones() -> None:
    TABLE.check_models("claude-sonnet-5-5", "claude-sonnet-5-5", "gemini-3-pro-image-preview")
    with pytest.raises(UnknownModelError, match="claude-typo"):
        TABLE.check_models("claude-sonnet-5-5", "claude-typo", "gemini-3-pro-image-preview")
    with pytest.raises(UnknownModelError, match="imagen"):
        TABLE.check_models("claude-sonnet-5-5", "claude-sonnet-5-5", "imagen")


def test_token_cost_known_values() -> None:
    sonnet = TABLE.token_price("claude-sonnet-5-5")
    # 1000 * 2 + 500 * 10 + 2000 * 2.5 + 10000 * 0.2 USD/MTok = 14000 micro-USD exactly
    usage = TokenUsage(
        input_tokens=1000, output_tokens=500, cache_write_tokens=2000, cache_read_tokens=10000
    )
    assert token_cost_micros(sonnet, usage) == 14_000
    # one cache-read token costs 0.2 micro-USD: rounded up once to 1
    assert token_cost_micros(sonnet, TokenUsage(cache_read_tokens=1)) == 1
    # 7 cache reads = 1.4, plus 3 input tokens = 6: 7.4 -> 8 (one rounding per call, not per kind)
    assert token_cost_micros(sonnet, TokenUsage(input_tokens=3, cache_read_tokens=7)) == 8
    assert token_cost_micros(sonnet, TokenUsage()) == 0


def test_worst_case_uses_the_dearer_input_rate_and_max_tokens() -> None:
    sonnet = TABLE.token_price("claude-sonnet-5-5")
    # 10000 input at 2.50 (cache write is dearer than 2.00) + 4096 output at 10
    assert worst_case_token_cost_micros(sonnet, 10_000, 4096) == 25_000 + 40_960
    cheap_writes = TokenPrice(
        input=3_000_000, output=15_000_000, cache_write=1_000_000, cache_read=1, price_version="t"
    )
    assert worst_case_token_cost_micros(cheap_writes, 1, 0) == 3


def test_apply_markup_is_exact_and_rounds_up() -> None:
    assert apply_markup(134_000, Decimal("1.0")) == 134_000
    assert apply_markup(134_000, Decimal("1.5")) == 201_000
    assert apply_markup(1, Decimal("1.5")) == 2
    assert apply_markup(3, Decimal("1.1")) == 4  # 3.3 -> 4, never a float 3.3000000000000003
    assert apply_markup(10, Decimal("1.1")) == 11  # exactly 11, not 12
    assert apply_markup(0, Decimal("2")) == 0
    with pytest.raises(ValueError, match="markup"):
        apply_markup(1, Decimal("NaN"))
    with pytest.raises(ValueError, match="cost"):
        apply_markup(-1, Decimal("1"))


rates = st.integers(min_value=0, max_value=100_000_000)
counts = st.integers(min_value=0, max_value=10_000_000)
prices = st.builds(
    TokenPrice,
    input=rates,
    output=rates,
    cache_write=rates,
    cache_read=rates,
    price_version=st.just("p"),
)
usages = st.builds(
    TokenUsage,
    input_tokens=counts,
    output_tokens=counts,
    cache_write_tokens=counts,
    cache_read_tokens=counts,
)


def _exact_cost(price: TokenPrice, usage: TokenUsage) -> Fraction:
    return Fraction(
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_tokens * price.cache_write
        + usage.cache_read_tokens * price.cache_read,
        1_000_000,
    )


@given(prices, usages)
def test_cost_is_never_below_the_exact_value_and_below_it_plus_one(
    price: TokenPrice, usage: TokenUsage
) -> None:
    exact = _exact_cost(price, usage)
    cost = token_cost_micros(price, usage)
    assert exact <= cost < exact + 1


@given(prices, usages, st.sampled_from(["input", "output", "cache_write", "cache_read"]), counts)
def test_cost_is_monotone_in_every_token_count(
    price: TokenPrice, usage: TokenUsage, kind: str, extra: int
) -> None:
    more = TokenUsage(
        **{
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            f"{kind}_tokens": getattr(usage, f"{kind}_tokens") + extra,
        }
    )
    assert token_cost_micros(price, more) >= token_cost_micros(price, usage)


@given(prices, counts, counts, counts)
def test_worst_case_covers_any_split_of_the_input(
    price: TokenPrice, fresh: int, written: int, max_tokens: int
) -> None:
    """Any mix of fresh, cache-written and cache-read input plus up to max_tokens output costs no
    more than the hold."""
    read = fresh // 3
    usage = TokenUsage(
        input_tokens=fresh - read,
        cache_read_tokens=read,
        cache_write_tokens=written,
        output_tokens=max_tokens,
    )
    hold = worst_case_token_cost_micros(price, fresh + written, max_tokens)
    assert token_cost_micros(price, usage) <= hold


markups = st.decimals(min_value=1, max_value=10, places=4, allow_nan=False, allow_infinity=False)


@given(st.integers(min_value=0, max_value=10**15), markups)
def test_markup_is_the_ceiling_of_the_exact_product(cost: int, markup: Decimal) -> None:
    exact = Fraction(cost) * Fraction(markup)
    charged = apply_markup(cost, markup)
    assert exact <= charged < exact + 1


@given(
    st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=10**6), markups
)
def test_markup_is_monotone(cost: int, extra: int, markup: Decimal) -> None:
    assert apply_markup(cost + extra, markup) >= apply_markup(cost, markup)
