"""The built-in price table (design section 6) and the entries it has superseded.

Every entry carries the `price_version` stored on each api_calls row it charged. A version names
one set of rates for a model and is never reused for other rates: a changed entry gets a new
version, and its old rates stay in `SUPERSEDED_TOKEN_PRICES`, so every recorded row can be
recomputed from its token counts at the rates it was charged.

Sources, checked 2026-12-05 (USD per million tokens unless stated):
- Claude: platform.claude.com model overview pages. Cache writes are the 5-minute rate (the bot's
  cache breakpoints use the default 5-minute lifetime; 1-hour writes are never requested).
- Gemini: ai.google.dev/gemini-api/docs/pricing (as transcribed 2026-10-07) and the Vertex model
  pages for image token counts.
- OpenAI: developers.openai.com/api/docs/models/gpt-image-2.6-sunburst.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

from bot.services.price_model import (
    MICROS_PER_USD,
    ImagePrice,
    LongPromptBand,
    Provider,
    TokenPrice,
    TokenRates,
)

# Entries unchanged since November 2026 keep their version.
ANTHROPIC_PRICE_VERSION = "anthropic-2026-11"
# Sonnet 5.5 cache reads cut to 0.10 (2026-10-07), Opus 5.5 cache reads 0.20 (0.05x input, not
# 0.1x), Haiku 5.5 priced by prompt length (released 2026-10-07).
ANTHROPIC_2026_12_PRICE_VERSION = "anthropic-2026-12"
GOOGLE_PRICE_VERSION = "google-2026-12"
OPENAI_PRICE_VERSION = "openai-2026-12"
HAIKU_5_5_LONG_PROMPT_TOKENS = 100_000


def usd_per_mtok(usd: str) -> int:
    micros = Decimal(usd) * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError("token rates have at most six decimals")
    return int(micros)


def _rates(input_usd: str, output_usd: str, write_usd: str, read_usd: str) -> TokenRates:
    return TokenRates(
        input=usd_per_mtok(input_usd),
        output=usd_per_mtok(output_usd),
        cache_write=usd_per_mtok(write_usd),
        cache_read=usd_per_mtok(read_usd),
    )


def _claude(
    rates: TokenRates,
    version: str = ANTHROPIC_PRICE_VERSION,
    long_prompt: LongPromptBand | None = None,
) -> TokenPrice:
    return TokenPrice.of(rates, version, long_prompt=long_prompt)


def _images(
    provider: Provider,
    version: str,
    *,
    text_input: str,
    image_input: str,
    text_output: str,
    image_output: str,
    per_image: Mapping[str, int],
) -> ImagePrice:
    return ImagePrice(
        by_size=MappingProxyType(dict(per_image)),
        price_version=version,
        provider=provider,
        text_input=usd_per_mtok(text_input),
        image_input=usd_per_mtok(image_input),
        text_output=usd_per_mtok(text_output),
        image_output=usd_per_mtok(image_output),
    )


_SONNET_5_5 = _claude(_rates("2", "10", "2.50", "0.10"), ANTHROPIC_2026_12_PRICE_VERSION)
_OPUS_5_5 = _claude(_rates("4", "20", "5.00", "0.20"), ANTHROPIC_2026_12_PRICE_VERSION)
# Prompts up to 100,000 tokens / over: 0.10 / 0.50 in, 0.50 / 2.50 out, 0.125 / 0.625 write,
# 0.01 / 0.05 read (1-hour writes, not used: 0.20 / 1.00).
_HAIKU_5_5 = _claude(
    _rates("0.10", "0.50", "0.125", "0.01"),
    ANTHROPIC_2026_12_PRICE_VERSION,
    LongPromptBand(HAIKU_5_5_LONG_PROMPT_TOKENS, _rates("0.50", "2.50", "0.625", "0.05")),
)
_SONNET_5 = _claude(_rates("2", "10", "2.50", "0.20"))
_OPUS_5 = _claude(_rates("5", "25", "6.25", "0.50"))
_OPUS_4_5 = _claude(_rates("5", "25", "6.25", "0.50"))
_SONNET_4 = _claude(_rates("3", "15", "3.75", "0.30"))
_HAIKU_4_5 = _claude(_rates("1", "5", "1.25", "0.10"))
# Gemini 3.5 Flash (voice transcription): 1.50 in, 9 out. Google's page gives one input rate with
# no separate audio row; that audio is billed at it too is not confirmed there. No context caching
# is used, so cached input is priced as input.
_GEMINI_3_5_FLASH = TokenPrice(
    input=usd_per_mtok("1.50"),
    output=usd_per_mtok("9"),
    cache_write=usd_per_mtok("1.50"),
    cache_read=usd_per_mtok("1.50"),
    price_version=GOOGLE_PRICE_VERSION,
    provider="google",
)

# claude-sonnet-4-5 (-20250929) reached its end of life on 2026-11-30: it stays priced so that its
# recorded calls keep a price, but it must not be offered (CLAUDE_MODEL / CHAT_MODELS).
DEFAULT_TOKEN_PRICES: Mapping[str, TokenPrice] = MappingProxyType(
    {
        "claude-sonnet-5-5": _SONNET_5_5,
        "claude-opus-5-5": _OPUS_5_5,
        "claude-haiku-5-5": _HAIKU_5_5,
        "claude-sonnet-5": _SONNET_5,
        "claude-opus-5": _OPUS_5,
        "claude-opus-4-6": _OPUS_4_5,
        "claude-opus-4-5": _OPUS_4_5,
        "claude-opus-4-5-20251101": _OPUS_4_5,
        "claude-sonnet-4-6": _SONNET_4,
        "claude-sonnet-4-5": _SONNET_4,
        "claude-sonnet-4-5-20250929": _SONNET_4,
        "claude-haiku-4-5": _HAIKU_4_5,
        "claude-haiku-4-5-20251001": _HAIKU_4_5,
        "gemini-3.5-flash": _GEMINI_3_5_FLASH,
    }
)

# (model, price_version) -> the rates rows of that version were charged at, for entries the
# table no longer carries at that version.
SUPERSEDED_TOKEN_PRICES: Mapping[tuple[str, str], TokenPrice] = MappingProxyType(
    {
        ("claude-sonnet-5-5", ANTHROPIC_PRICE_VERSION): _claude(_rates("2", "10", "2.50", "0.20")),
        ("claude-opus-5-5", ANTHROPIC_PRICE_VERSION): _claude(_rates("4", "20", "5.00", "0.40")),
        ("claude-haiku-5-5", ANTHROPIC_PRICE_VERSION): _claude(_rates("1", "5", "1.25", "0.10")),
    }
)

# Live models only: the -preview ids and gemini-2.5-flash-image were shut down in 2026.
DEFAULT_IMAGE_PRICES: Mapping[str, ImagePrice] = MappingProxyType(
    {
        # An image is 1120 output tokens at 1K and 2K, 2000 at 4K (1120 x 120 = 134,400 micro-USD;
        # Google lists 0.134 USD, which the per-image fallback keeps).
        "gemini-3-pro-image": _images(
            "google",
            GOOGLE_PRICE_VERSION,
            text_input="2",
            image_input="2",
            text_output="12",
            image_output="120",
            per_image={"1K": 134_000, "2K": 134_000, "4K": 240_000},
        ),
        # 747 / 1120 / 1680 / 2520 image tokens at 512 / 1K / 2K / 4K; Google's per-image figures
        # are those at 60 USD/MTok, rounded to a tenth of a cent.
        "gemini-3.1-flash-image": _images(
            "google",
            GOOGLE_PRICE_VERSION,
            text_input="0.50",
            image_input="0.50",
            text_output="3",
            image_output="60",
            per_image={"512": 45_000, "1K": 67_000, "2K": 101_000, "4K": 151_000},
        ),
        # OpenAI lists text and image input (5, 8) and image output (30) only, no text output:
        # text output, if it is ever reported, is charged at the image-output rate. The model is
        # priced by tokens only; the per-image figures are our own fallback and hold base, not
        # OpenAI's.
        "gpt-image-2.6-sunburst": _images(
            "openai",
            OPENAI_PRICE_VERSION,
            text_input="5",
            image_input="8",
            text_output="30",
            image_output="30",
            per_image={"1K": 130_000, "2K": 200_000, "4K": 400_000},
        ),
    }
)
