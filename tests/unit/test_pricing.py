"""The pricing table and integer cost arithmetic."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.providers.images import ImageUsage
from bot.services.price_file import PriceFileError
from bot.services.pricing import (
    DEFAULT_IMAGE_PRICES,
    DEFAULT_TOKEN_PRICES,
    ImagePrice,
    LongPromptBand,
    ModelUse,
    PriceTable,
    TokenPrice,
    TokenRates,
    TokenUsage,
    UnknownModelError,
    apply_markup,
    image_cost_micros,
    token_cost_micros,
    worst_case_token_cost_micros,
)

TABLE = PriceTable()

# USD per million tokens: input, output, cache write, cache read.
EXPECTED_TOKEN_RATES = {
    "claude-sonnet-5-5": ("2", "10", "2.50", "0.10"),
    "claude-opus-5-5": ("4", "20", "5.00", "0.20"),
    "claude-haiku-5-5": ("0.10", "0.50", "0.125", "0.01"),
    "claude-sonnet-5": ("2", "10", "2.50", "0.20"),
    "claude-opus-5": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-6": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-5": ("5", "25", "6.25", "0.50"),
    "claude-sonnet-4-6": ("3", "15", "3.75", "0.30"),
    "claude-sonnet-4-5": ("3", "15", "3.75", "0.30"),
    "claude-haiku-4-5": ("1", "5", "1.25", "0.10"),
    "claude-haiku-4-5-20251001": ("1", "5", "1.25", "0.10"),
    "gemini-3.5-flash": ("1.50", "9", "1.50", "1.50"),
}
RETIRED_IMAGE_MODELS = (
    "gemini-3-pro-image-preview",
    "gemini-3.1-flash-image-preview",
    "gemini-2.5-flash-image",
)
# USD per million tokens: text input, image input, text output, image output.
EXPECTED_IMAGE_RATES = {
    "gemini-3-pro-image": ("2", "2", "12", "120"),
    "gemini-3.1-flash-image": ("0.50", "0.50", "3", "60"),
    "gpt-image-2.6-sunburst": ("5", "8", "30", "30"),
}

EXPECTED_IMAGE_PRICES = {
    ("gemini-3-pro-image", "1K"): 134_000,
    ("gemini-3-pro-image", "2K"): 134_000,
    ("gemini-3-pro-image", "4K"): 240_000,
    ("gemini-3.1-flash-image", "512"): 45_000,
    ("gemini-3.1-flash-image", "1K"): 67_000,
    ("gemini-3.1-flash-image", "2K"): 101_000,
    ("gemini-3.1-flash-image", "4K"): 151_000,
    ("gpt-image-2.6-sunburst", "1K"): 130_000,
    ("gpt-image-2.6-sunburst", "2K"): 200_000,
    ("gpt-image-2.6-sunburst", "4K"): 400_000,
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


@pytest.mark.parametrize(("model", "rates"), EXPECTED_IMAGE_RATES.items())
def test_image_token_rates_match_design_section_6(model: str, rates: tuple[str, ...]) -> None:
    price = TABLE.image_prices(model)
    assert (price.text_input, price.image_input, price.text_output, price.image_output) == tuple(
        _micros_per_mtok(r) for r in rates
    )


def test_retired_models_are_not_priced() -> None:
    for model in RETIRED_IMAGE_MODELS:
        assert model not in DEFAULT_IMAGE_PRICES
        with pytest.raises(UnknownModelError):
            TABLE.image_prices(model)


def test_image_holds_are_the_per_image_price_plus_a_quarter_rounded_up() -> None:
    assert TABLE.image_hold("gemini-3-pro-image", "2K") == 167_500
    assert TABLE.image_hold("gemini-3-pro-image", "4K") == 300_000
    assert TABLE.image_hold("gemini-3.1-flash-image", "2K") == 126_250
    assert TABLE.image_hold("gemini-3.1-flash-image", "1K") == 83_750  # 83750 exactly
    odd = PriceTable(image_prices_by_model={"m": ImagePrice({"1K": 3}, "v")})
    assert odd.image_hold("m", "1K") == 4  # 3.75 -> 4


def test_gemini_image_cost_from_reported_usage() -> None:
    pro = TABLE.image_prices("gemini-3-pro-image")
    # A 2K image: 1120 image tokens at 120, 10 prompt tokens at 2, 50 thought tokens at 12.
    usage = ImageUsage(text_input_tokens=10, text_output_tokens=50, image_output_tokens=1120)
    assert image_cost_micros(pro, usage, "2K") == 1120 * 120 + 10 * 2 + 50 * 12  # 135_020
    # 4K: 2000 tokens; one prompt token at 2 USD/MTok is 2 micro-USD.
    assert image_cost_micros(pro, ImageUsage(image_output_tokens=2000), "4K") == 240_000
    # rounded up once: 1 text token at 12 + 1 at 2 = 14 micro-USD; 1 flash token 0.5 -> 1
    flash = TABLE.image_prices("gemini-3.1-flash-image")
    assert image_cost_micros(flash, ImageUsage(text_input_tokens=1), "1K") == 1
    assert (
        image_cost_micros(flash, ImageUsage(text_input_tokens=3, image_input_tokens=3), "1K") == 3
    )


def test_image_cost_without_usage_is_the_per_image_price() -> None:
    pro = TABLE.image_prices("gemini-3-pro-image")
    assert image_cost_micros(pro, None, "2K") == 134_000
    assert image_cost_micros(pro, None, "4K") == 240_000
    with pytest.raises(UnknownModelError, match="'8K'"):
        image_cost_micros(pro, None, "8K")


def test_openai_image_cost_from_reported_usage() -> None:
    gpt = TABLE.image_prices("gpt-image-2.6-sunburst")
    usage = ImageUsage(
        text_input_tokens=12,
        image_input_tokens=1000,
        text_output_tokens=0,
        image_output_tokens=4160,
    )
    assert image_cost_micros(gpt, usage, "1K") == 12 * 5 + 1000 * 8 + 4160 * 30


def test_every_listed_image_size_is_expected() -> None:
    listed = {(m, s) for m, p in DEFAULT_IMAGE_PRICES.items() for s in p.by_size}
    assert listed == set(EXPECTED_IMAGE_PRICES)


def test_every_claude_entry_is_consistent() -> None:
    for model, price in DEFAULT_TOKEN_PRICES.items():
        if price.provider != "anthropic":
            continue
        assert price.cache_read < price.input < price.cache_write < price.output, model


def test_transcription_price_is_the_designed_one() -> None:
    # gemini-3.5-flash: 1.50 USD/MTok in (audio and text alike), 9 USD/MTok out.
    price = TABLE.token_price("gemini-3.5-flash")
    assert (price.input, price.output) == (1_500_000, 9_000_000)


def test_unknown_models_and_sizes_fail_with_a_clear_message() -> None:
    with pytest.raises(UnknownModelError, match="claude-nonexistent"):
        TABLE.token_price("claude-nonexistent")
    with pytest.raises(UnknownModelError, match="dall-e"):
        TABLE.image_price("dall-e", "1K")
    with pytest.raises(UnknownModelError, match="'8K'"):
        TABLE.image_price("gemini-3-pro-image", "8K")


def test_check_models_accepts_the_defaults_and_rejects_unknown_ones() -> None:
    TABLE.check_models("claude-sonnet-5-5", "claude-sonnet-5-5", "gemini-3-pro-image")
    with pytest.raises(UnknownModelError, match="claude-typo"):
        TABLE.check_models("claude-sonnet-5-5", "claude-typo", "gemini-3-pro-image")
    with pytest.raises(UnknownModelError, match="imagen"):
        TABLE.check_models("claude-sonnet-5-5", "claude-sonnet-5-5", "imagen")


def test_an_unpriced_model_is_one_line_naming_it_the_setting_and_the_ways_to_price_it() -> None:
    with pytest.raises(UnknownModelError) as raised:
        TABLE.check([ModelUse("gemini-3-pro-image-preview", "IMAGE_MODEL", "image", "google")])
    message = str(raised.value)
    assert "\n" not in message
    assert "'gemini-3-pro-image-preview' (IMAGE_MODEL)" in message
    assert "PRICES_FILE" in message
    assert "gemini-3-pro-image," in message  # the built-in choices
    with pytest.raises(UnknownModelError, match="priced as a google model, not openai"):
        TABLE.check([ModelUse("gemini-3-pro-image", "IMAGE_MODEL", "image", "openai")])


PRICES_TOML = """
[models."claude-sonnet-5-5"]
provider = "anthropic"
price_version = "ops-2026-12"
input = 2_500_000
output = 12_000_000
cache_write = 3_000_000
cache_read = 250_000

[models."gemini-3-pro-image"]
provider = "google"
price_version = "ops-2026-12"
text_input = 2_000_000
image_input = 2_000_000
text_output = 12_000_000
image_output = 130_000_000
per_image = { "1K" = 145_600, "2K" = 145_600, "4K" = 260_000 }

[models."gemini-nano-banana-2.1"]
provider = "google"
price_version = "ops-2026-12b"
text_input = 1_500_000
image_input = 1_500_000
text_output = 7_500_000
image_output = 30_000_000
per_image = { "1K" = 33_600, "2K" = 50_400, "4K" = 90_000 }

[models."gemini-3.5-flash-lite"]
provider = "google"
price_version = "ops-2026-12"
input = 500_000
output = 3_000_000
"""


def test_prices_file_adds_and_replaces_whole_entries(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES_TOML)
    table = PriceTable.load(path)
    sonnet = table.token_price("claude-sonnet-5-5")
    assert (sonnet.input, sonnet.output, sonnet.cache_write, sonnet.cache_read) == (
        2_500_000,
        12_000_000,
        3_000_000,
        250_000,
    )
    assert sonnet.price_version == "ops-2026-12"
    pro = table.image_prices("gemini-3-pro-image")
    assert pro.image_output == 130_000_000
    assert dict(pro.by_size) == {"1K": 145_600, "2K": 145_600, "4K": 260_000}
    assert table.image_price_version("gemini-3-pro-image") == "ops-2026-12"
    added = table.image_prices("gemini-nano-banana-2.1")
    assert (added.provider, added.price_version, added.by_size["2K"]) == (
        "google",
        "ops-2026-12b",
        50_400,
    )
    lite = table.token_price("gemini-3.5-flash-lite")
    assert (lite.input, lite.output, lite.cache_read, lite.provider) == (
        500_000,
        3_000_000,
        500_000,
        "google",
    )
    # Entries the file does not name keep their built-in prices.
    assert table.token_price("claude-opus-5-5") == DEFAULT_TOKEN_PRICES["claude-opus-5-5"]
    assert (
        table.image_prices("gpt-image-2.6-sunburst")
        == DEFAULT_IMAGE_PRICES["gpt-image-2.6-sunburst"]
    )
    # The built-in table itself is untouched.
    assert PriceTable().image_prices("gemini-3-pro-image").image_output == 120_000_000


LONG_PROMPT_TOML = """
[models."claude-haiku-5-5"]
provider = "anthropic"
price_version = "ops-2026-12"
input = 100_000
output = 500_000
cache_write = 125_000
cache_read = 10_000
long_prompt = { above_tokens = 100_000, input = 500_000, output = 2_500_000, cache_write = 625_000, cache_read = 50_000 }

[models."claude-haiku-9"]
provider = "anthropic"
price_version = "ops-2026-12b"
input = 200_000
output = 1_000_000

[models."claude-haiku-9".long_prompt]
above_tokens = 50_000
input = 400_000
output = 2_000_000
"""


def test_a_prices_file_can_give_a_long_prompt_band(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(LONG_PROMPT_TOML)
    table = PriceTable.load(path)
    haiku = table.token_price("claude-haiku-5-5")
    assert haiku.price_version == "ops-2026-12"
    assert haiku.long_prompt == LongPromptBand(
        100_000, TokenRates(500_000, 2_500_000, 625_000, 50_000)
    )
    # the same exact charges as the built-in entry, on both sides of the threshold
    at_edge = TokenUsage(20_000, 1_000, 30_000, 50_000)
    over = TokenUsage(20_001, 1_000, 30_000, 50_000)
    assert (token_cost_micros(haiku, at_edge), token_cost_micros(haiku, over)) == (6_750, 33_751)
    assert worst_case_token_cost_micros(haiku, 100_001, 4096) == 72_741
    # a band without cache keys prices cached input as its input, like an entry does
    other = table.token_price("claude-haiku-9")
    assert other.long_prompt == LongPromptBand(
        50_000, TokenRates(400_000, 2_000_000, 400_000, 400_000)
    )
    assert token_cost_micros(other, TokenUsage(cache_read_tokens=50_001)) == 20_001


@pytest.mark.parametrize(
    ("band", "error"),
    [
        ("long_prompt = 3", "long_prompt must be a table"),
        ("long_prompt = { input = 1, output = 1 }", "above_tokens must be a positive integer"),
        (
            "long_prompt = { above_tokens = 0, input = 1, output = 1 }",
            "above_tokens must be a positive integer",
        ),
        ("long_prompt = { above_tokens = 10, output = 1 }", "long_prompt: input is missing"),
        (
            "long_prompt = { above_tokens = 10, input = 1, output = 1, image_output = 2 }",
            "long_prompt: unknown keys image_output",
        ),
        (
            "long_prompt = { above_tokens = 10, input = 1.5, output = 1 }",
            "long_prompt: input must be a non-negative integer",
        ),
    ],
)
def test_a_bad_long_prompt_band_is_one_clear_line(tmp_path: Path, band: str, error: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        "[models.x]\nprovider = 'anthropic'\nprice_version = 'v'\ninput = 1\noutput = 1\n" + band
    )
    with pytest.raises(PriceFileError, match=error) as raised:
        PriceTable.load(path)
    assert "\n" not in str(raised.value)


def test_an_image_model_has_no_long_prompt_band(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        "[models.x]\nprovider = 'google'\nprice_version = 'v'\nimage_output = 1\n"
        'per_image = { "1K" = 1 }\nlong_prompt = { above_tokens = 1, input = 1, output = 1 }\n'
    )
    with pytest.raises(PriceFileError, match="unknown keys long_prompt"):
        PriceTable.load(path)


def test_a_file_entry_replaces_the_built_in_one_whole(tmp_path: Path) -> None:
    """A model priced by tokens in the file is no longer an image model (no merging of keys)."""
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."gemini-3-pro-image"]\nprovider = "google"\nprice_version = "x"\n'
        "input = 1\noutput = 2\n"
    )
    table = PriceTable.load(path)
    assert table.token_price("gemini-3-pro-image").input == 1
    with pytest.raises(UnknownModelError):
        table.image_prices("gemini-3-pro-image")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("models = 3", "no \\[models"),
        ("[models.x]\nprovider = 'acme'\nprice_version = 'v'\ninput = 1\noutput = 1", "provider"),
        ("[models.x]\nprovider = 'google'\ninput = 1\noutput = 1", "price_version"),
        ("[models.x]\nprovider = 'google'\nprice_version = 'v'\ninput = 1.5\noutput = 1", "input"),
        ("[models.x]\nprovider = 'google'\nprice_version = 'v'\noutput = 1", "input is missing"),
        (
            "[models.x]\nprovider = 'google'\nprice_version = 'v'\nimage_output = 1",
            "per_image is missing",
        ),
        (
            "[models.x]\nprovider = 'google'\nprice_version = 'v'\ninput = 1\noutput = 1\nfoo = 2",
            "unknown keys foo",
        ),
        ("[models.x\n", "not valid TOML"),
    ],
)
def test_bad_prices_files_are_one_clear_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceFileError, match=error) as raised:
        PriceTable.load(path)
    assert "\n" not in str(raised.value)


def test_a_missing_prices_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="cannot be read"):
        PriceTable.load(tmp_path / "nope.toml")


def test_token_cost_known_values() -> None:
    sonnet = TABLE.token_price("claude-sonnet-5-5")
    # 1000 * 2 + 500 * 10 + 2000 * 2.5 + 10000 * 0.1 USD/MTok = 13000 micro-USD exactly
    usage = TokenUsage(
        input_tokens=1000, output_tokens=500, cache_write_tokens=2000, cache_read_tokens=10000
    )
    assert token_cost_micros(sonnet, usage) == 13_000
    # one cache-read token costs 0.1 micro-USD: rounded up once to 1
    assert token_cost_micros(sonnet, TokenUsage(cache_read_tokens=1)) == 1
    # 17 cache reads = 1.7, plus 3 input tokens = 6: 7.7 -> 8 (one rounding per call, not per kind)
    assert token_cost_micros(sonnet, TokenUsage(input_tokens=3, cache_read_tokens=17)) == 8
    assert token_cost_micros(sonnet, TokenUsage()) == 0
    # Sonnet 5 keeps 0.20 cache reads: 10000 of them are 2000 micro-USD
    sonnet_5 = TABLE.token_price("claude-sonnet-5")
    assert token_cost_micros(sonnet_5, TokenUsage(cache_read_tokens=10_000)) == 2_000
    # Opus 5.5: 1000 * 4 + 500 * 20 + 2000 * 5 + 10000 * 0.2 = 26000
    assert token_cost_micros(TABLE.token_price("claude-opus-5-5"), usage) == 26_000


HAIKU = TABLE.token_price("claude-haiku-5-5")


@pytest.mark.parametrize(
    ("usage", "cost"),
    [
        # prompt exactly 100,000 (20,000 + 30,000 + 50,000): the short band,
        # 20,000 * 0.10 + 30,000 * 0.125 + 50,000 * 0.01 + 1000 * 0.50
        (TokenUsage(20_000, 1_000, 30_000, 50_000), 2_000 + 3_750 + 500 + 500),
        # 100,001: the long band on every token, output included,
        # 20,001 * 0.50 + 30,000 * 0.625 + 50,000 * 0.05 + 1000 * 2.50 = 33,750.5 -> 33,751
        (TokenUsage(20_001, 1_000, 30_000, 50_000), 33_751),
        # the threshold counts cache reads alone too: 100,001 read tokens at 0.05
        (TokenUsage(cache_read_tokens=100_001), 5_001),
        (TokenUsage(cache_read_tokens=100_000), 1_000),
        # output alone never makes a prompt long
        (TokenUsage(input_tokens=10, output_tokens=200_000), 100_001),
    ],
)
def test_haiku_5_5_is_priced_by_the_prompt_length(usage: TokenUsage, cost: int) -> None:
    assert token_cost_micros(HAIKU, usage) == cost


def test_haiku_5_5_hold_uses_the_band_the_estimate_can_reach() -> None:
    # 100,000 estimated input at the short band's dearest input rate (0.125) + 4096 out at 0.50
    assert worst_case_token_cost_micros(HAIKU, 100_000, 4096) == 12_500 + 2_048
    # 100,001: the long band (0.625 in, 2.50 out): 62,500.625 + 10,240 -> 72,741
    assert worst_case_token_cost_micros(HAIKU, 100_001, 4096) == 72_741
    # a call whose server tools may add results can cross the threshold from any estimate
    assert worst_case_token_cost_micros(HAIKU, 1_000, 4096, prompt_may_grow=True) == 625 + 10_240
    assert worst_case_token_cost_micros(HAIKU, 1_000, 4096) == 125 + 2_048
    # a model without a band is unaffected
    sonnet = TABLE.token_price("claude-sonnet-5-5")
    assert worst_case_token_cost_micros(sonnet, 1_000, 10, prompt_may_grow=True) == 2_600


def test_changed_entries_have_a_new_version_and_the_old_rates_stay_known() -> None:
    for model in ("claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5"):
        assert TABLE.token_price(model).price_version == "anthropic-2026-12"
        assert TABLE.token_price_at(model, "anthropic-2026-12") == TABLE.token_price(model)
    # Rows charged before the change recompute at the rates they were charged.
    old_sonnet = TABLE.token_price_at("claude-sonnet-5-5", "anthropic-2026-11")
    old_opus = TABLE.token_price_at("claude-opus-5-5", "anthropic-2026-11")
    old_haiku = TABLE.token_price_at("claude-haiku-5-5", "anthropic-2026-11")
    assert old_sonnet is not None and old_sonnet.cache_read == 200_000
    assert old_opus is not None and old_opus.cache_read == 400_000
    assert old_haiku is not None and (old_haiku.input, old_haiku.long_prompt) == (1_000_000, None)
    # Unchanged entries keep their version, so one version always means one set of rates.
    assert TABLE.token_price("claude-sonnet-5").price_version == "anthropic-2026-11"
    assert TABLE.token_price_at("claude-sonnet-5", "anthropic-2026-11") is not None
    assert TABLE.token_price_at("claude-sonnet-5-5", "anthropic-2025-01") is None


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
# Any band, even one cheaper than the short rates (a PRICES_FILE may say so).
bands = st.builds(
    LongPromptBand,
    above_tokens=st.integers(min_value=1, max_value=20_000_000),
    rates=st.builds(TokenRates, input=rates, output=rates, cache_write=rates, cache_read=rates),
)
prices = st.builds(
    TokenPrice,
    input=rates,
    output=rates,
    cache_write=rates,
    cache_read=rates,
    price_version=st.just("p"),
    long_prompt=st.none() | bands,
)
usages = st.builds(
    TokenUsage,
    input_tokens=counts,
    output_tokens=counts,
    cache_write_tokens=counts,
    cache_read_tokens=counts,
)


def _exact_cost(price: TokenPrice, usage: TokenUsage) -> Fraction:
    prompt = usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens
    band = price.long_prompt
    r = band.rates if band is not None and prompt > band.above_tokens else price.rates
    return Fraction(
        usage.input_tokens * r.input
        + usage.output_tokens * r.output
        + usage.cache_write_tokens * r.cache_write
        + usage.cache_read_tokens * r.cache_read,
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
    """(Across a threshold only when the long band is the dearer one, as every real band is.)"""
    band = price.long_prompt
    if band is not None and not _dearer_or_equal(band.rates, price.rates):
        price = replace(price, long_prompt=None)
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


def _dearer_or_equal(long: TokenRates, short: TokenRates) -> bool:
    return all(
        getattr(long, k) >= getattr(short, k)
        for k in ("input", "output", "cache_write", "cache_read")
    )


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


def test_the_readme_prices_file_example_loads_at_the_built_in_claude_rates(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("# prices.toml, used with PRICES_FILE")
    path = tmp_path / "prices.toml"
    path.write_text(readme[start : readme.index("```", start)])
    table = PriceTable.load(path)
    for model in ("claude-sonnet-5-5", "claude-haiku-5-5"):
        documented = table.token_price(model)
        assert replace(documented, price_version="x") == replace(
            DEFAULT_TOKEN_PRICES[model], price_version="x"
        )
