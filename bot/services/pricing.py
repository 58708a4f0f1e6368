"""The pricing table and the cost arithmetic. Every amount is an integer in micro-USD.

Rates:
- Claude models: micro-USD per million tokens for input, output, cache write and cache read
  (2 USD/MTok is stored as 2_000_000).
- Image models: micro-USD per image, by output size.

Rounding rule (one rule, applied once per provider call): the cost of a call is
``ceil(sum(tokens_i * rate_i) / 1_000_000)`` over the four token kinds. The exact rational
cost is never undercharged and is overcharged by less than one micro-USD. The markup is applied
to that integer with exact Decimal arithmetic and rounded up once more (``apply_markup``).

Every entry carries a ``price_version`` that is stored with each api_calls row, so an admin can
recompute any row from its stored token counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, Inexact, localcontext
from types import MappingProxyType

MICROS_PER_USD = 1_000_000
TOKENS_PER_RATE_UNIT = 1_000_000

ANTHROPIC_PRICE_VERSION = "anthropic-2026-11"
GOOGLE_PRICE_VERSION = "google-2026-11"


class UnknownModelError(LookupError):
    """A model (or image size) that has no entry in the pricing table."""


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """Micro-USD per million tokens."""

    input: int
    output: int
    cache_write: int
    cache_read: int
    price_version: str


@dataclass(frozen=True, slots=True)
class ImagePrice:
    """Micro-USD per generated image, by image size ("512", "1K", "2K", "4K")."""

    by_size: Mapping[str, int]
    price_version: str


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0


def _usd_per_mtok(usd: str) -> int:
    micros = Decimal(usd) * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError("token rates have at most six decimals")
    return int(micros)


def _claude(input_usd: str, output_usd: str, write_usd: str, read_usd: str) -> TokenPrice:
    return TokenPrice(
        input=_usd_per_mtok(input_usd),
        output=_usd_per_mtok(output_usd),
        cache_write=_usd_per_mtok(write_usd),
        cache_read=_usd_per_mtok(read_usd),
        price_version=ANTHROPIC_PRICE_VERSION,
    )


def _images(by_size: Mapping[str, int]) -> ImagePrice:
    return ImagePrice(by_size=MappingProxyType(dict(by_size)), price_version=GOOGLE_PRICE_VERSION)


_SONNET_5 = _claude("2", "10", "2.50", "0.20")
_OPUS_5_5 = _claude("4", "20", "5.00", "0.40")
_HAIKU_5_5 = _claude("1", "5", "1.25", "0.10")
_OPUS_5 = _claude("5", "25", "6.25", "0.50")
_OPUS_4_5 = _claude("5", "25", "6.25", "0.50")
_SONNET_4 = _claude("3", "15", "3.75", "0.30")
_HAIKU_4_5 = _claude("1", "5", "1.25", "0.10")

DEFAULT_TOKEN_PRICES: Mapping[str, TokenPrice] = MappingProxyType(
    {
        "claude-sonnet-5-5": _SONNET_5,
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
    }
)

DEFAULT_IMAGE_PRICES: Mapping[str, ImagePrice] = MappingProxyType(
    {
        "gemini-3-pro-image": _images({"1K": 134_000, "2K": 134_000, "4K": 240_000}),
        "gemini-3.1-flash-image": _images(
            {"512": 45_000, "1K": 67_000, "2K": 101_000, "4K": 151_000}
        ),
        "gemini-3-pro-image-preview": _images({"1K": 134_000, "2K": 134_000, "4K": 240_000}),
        "gemini-3.1-flash-image-preview": _images(
            {"512": 45_000, "1K": 67_000, "2K": 67_000, "4K": 120_000}
        ),
        # Always about 1024 px (about 1290 output tokens at 30 USD/MTok); no size choice.
        "gemini-2.5-flash-image": _images({"1K": 39_000}),
    }
)


class PriceTable:
    """Looks up prices; unknown models fail loudly instead of being charged as free."""

    def __init__(
        self,
        token_prices: Mapping[str, TokenPrice] = DEFAULT_TOKEN_PRICES,
        image_prices: Mapping[str, ImagePrice] = DEFAULT_IMAGE_PRICES,
    ) -> None:
        self._tokens = token_prices
        self._images = image_prices

    def has_token_price(self, model: str) -> bool:
        return model in self._tokens

    def token_price(self, model: str) -> TokenPrice:
        price = self._tokens.get(model)
        if price is None:
            known = ", ".join(sorted(self._tokens))
            raise UnknownModelError(f"No token price for Claude model {model!r}; known: {known}")
        return price

    def image_price(self, model: str, size: str) -> int:
        """Micro-USD for one image of `size` from `model`."""
        return self.image_prices(model).by_size[self._checked_size(model, size)]

    def image_prices(self, model: str) -> ImagePrice:
        price = self._images.get(model)
        if price is None:
            known = ", ".join(sorted(self._images))
            raise UnknownModelError(f"No image price for model {model!r}; known: {known}")
        return price

    def image_price_version(self, model: str) -> str:
        return self.image_prices(model).price_version

    def check_models(self, chat_model: str, vision_model: str, image_model: str) -> None:
        """Startup check: every configured model has a price."""
        self.token_price(chat_model)
        self.token_price(vision_model)
        self.image_prices(image_model)

    def _checked_size(self, model: str, size: str) -> str:
        sizes = self.image_prices(model).by_size
        if size not in sizes:
            known = ", ".join(sizes)
            raise UnknownModelError(
                f"No price for image size {size!r} of model {model!r}; known: {known}"
            )
        return size


def token_cost_micros(price: TokenPrice, usage: TokenUsage) -> int:
    """Cost of one provider call, rounded up once (see the module docstring)."""
    weighted = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_tokens * price.cache_write
        + usage.cache_read_tokens * price.cache_read
    )
    return _ceil_div(weighted, TOKENS_PER_RATE_UNIT)


def worst_case_token_cost_micros(
    price: TokenPrice, input_tokens_estimate: int, max_tokens: int
) -> int:
    """The most one call can cost: all input at the dearest input-side rate (cache writes cost
    more than fresh input), plus `max_tokens` of output."""
    input_rate = max(price.input, price.cache_write, price.cache_read)
    weighted = input_tokens_estimate * input_rate + max_tokens * price.output
    return _ceil_div(weighted, TOKENS_PER_RATE_UNIT)


def apply_markup(cost_micros: int, markup: Decimal) -> int:
    """What the user pays for a provider cost: cost x markup, rounded up to a whole micro-USD."""
    if not markup.is_finite() or markup < 0:
        raise ValueError("markup must be a finite, non-negative number")
    if cost_micros < 0:
        raise ValueError("cost must not be negative")
    with localcontext() as exact:
        exact.prec = 200
        exact.traps[Inexact] = True
        charged = (Decimal(cost_micros) * markup).to_integral_value(rounding=ROUND_CEILING)
    return int(charged)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
