"""The price table and the cost arithmetic. Every amount is an integer in micro-USD.

Prices are data (design section 6): a built-in table, plus ``PRICES_FILE`` (TOML) whose entries
add models or replace a built-in entry of the same id whole. Every entry has a ``price_version``
that is stored with each api_calls row, so an admin can recompute any row from its token counts.

Rates are micro-USD per million tokens (2 USD/MTok is stored as 2_000_000):
- Claude (and other token-priced models, such as the transcription model): input, output,
  cache write and cache read.
- Image models, per token kind as the providers bill them: text input, image input, text output
  (thinking included) and image output; plus ``per_image``, a price per image by size, charged
  only for a response that reports no usage, and the base of the hold (plus 25%).

Rounding rule (one rule, applied once per provider call): the cost of a call is
``ceil(sum(tokens_i * rate_i) / 1_000_000)`` over its token kinds. The exact rational cost is never
undercharged and is overcharged by less than one micro-USD. The markup is applied to that integer
with exact Decimal arithmetic and rounded up once more (``apply_markup``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, Inexact, localcontext
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from bot.providers.images import ImageUsage

MICROS_PER_USD = 1_000_000
TOKENS_PER_RATE_UNIT = 1_000_000
# The hold for an image: its per-image price plus 25%, rounded up (design section 6).
IMAGE_HOLD_NUMERATOR, IMAGE_HOLD_DENOMINATOR = 5, 4

ANTHROPIC_PRICE_VERSION = "anthropic-2026-11"
GOOGLE_PRICE_VERSION = "google-2026-12"
OPENAI_PRICE_VERSION = "openai-2026-12"

Provider = Literal["anthropic", "google", "openai"]
PROVIDERS: tuple[Provider, ...] = ("anthropic", "google", "openai")
PRICING_HELP = (
    'add a [models."{model}"] table to the TOML file named by PRICES_FILE (see the README), '
    "or choose a model the built-in table prices"
)


class UnknownModelError(LookupError):
    """A model (or image size) that has no entry in the price table."""


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """Micro-USD per million tokens."""

    input: int
    output: int
    cache_write: int
    cache_read: int
    price_version: str
    provider: Provider = "anthropic"


@dataclass(frozen=True, slots=True)
class ImagePrice:
    """An image model: micro-USD per million tokens of each kind, and per image by size
    ("512", "1K", "2K", "4K") for a response that reports no usage."""

    by_size: Mapping[str, int]
    price_version: str
    provider: Provider = "google"
    text_input: int = 0
    image_input: int = 0
    text_output: int = 0
    image_output: int = 0


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
        text_input=_usd_per_mtok(text_input),
        image_input=_usd_per_mtok(image_input),
        text_output=_usd_per_mtok(text_output),
        image_output=_usd_per_mtok(image_output),
    )


_SONNET_5 = _claude("2", "10", "2.50", "0.20")
_OPUS_5_5 = _claude("4", "20", "5.00", "0.40")
_HAIKU_5_5 = _claude("1", "5", "1.25", "0.10")
_OPUS_5 = _claude("5", "25", "6.25", "0.50")
_OPUS_4_5 = _claude("5", "25", "6.25", "0.50")
_SONNET_4 = _claude("3", "15", "3.75", "0.30")
_HAIKU_4_5 = _claude("1", "5", "1.25", "0.10")
# Gemini 3.5 Flash (voice transcription): text and audio input alike; no context caching used.
_GEMINI_3_5_FLASH = TokenPrice(
    input=_usd_per_mtok("1.50"),
    output=_usd_per_mtok("9"),
    cache_write=_usd_per_mtok("1.50"),
    cache_read=_usd_per_mtok("1.50"),
    price_version=GOOGLE_PRICE_VERSION,
    provider="google",
)

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
        "gemini-3.5-flash": _GEMINI_3_5_FLASH,
    }
)

# Live models only: the -preview ids and gemini-2.5-flash-image were shut down in 2026.
DEFAULT_IMAGE_PRICES: Mapping[str, ImagePrice] = MappingProxyType(
    {
        # An image is 1120 output tokens at 1K and 2K, 2000 at 4K.
        "gemini-3-pro-image": _images(
            "google",
            GOOGLE_PRICE_VERSION,
            text_input="2",
            image_input="2",
            text_output="12",
            image_output="120",
            per_image={"1K": 134_000, "2K": 134_000, "4K": 240_000},
        ),
        "gemini-3.1-flash-image": _images(
            "google",
            GOOGLE_PRICE_VERSION,
            text_input="0.50",
            image_input="0.50",
            text_output="3",
            image_output="60",
            per_image={"512": 45_000, "1K": 67_000, "2K": 101_000, "4K": 151_000},
        ),
        # Text output, if it is ever reported, at the image-output rate.
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


@dataclass(frozen=True, slots=True)
class ModelUse:
    """A configured model and the setting that names it, for the start-up check."""

    model: str
    setting: str
    kind: Literal["tokens", "image"]
    provider: Provider | None = None


@dataclass
class PriceTable:
    """Looks up prices; unknown models fail loudly instead of being charged as free."""

    token_prices: Mapping[str, TokenPrice] = field(default_factory=lambda: DEFAULT_TOKEN_PRICES)
    image_prices_by_model: Mapping[str, ImagePrice] = field(
        default_factory=lambda: DEFAULT_IMAGE_PRICES
    )

    @classmethod
    def load(cls, prices_file: Path | None) -> PriceTable:
        """The built-in table with the entries of `prices_file` (if any) added or replacing."""
        tokens = dict(DEFAULT_TOKEN_PRICES)
        images = dict(DEFAULT_IMAGE_PRICES)
        if prices_file is not None:
            from bot.services.price_file import read_prices_file

            for model, entry in read_prices_file(prices_file).items():
                tokens.pop(model, None)
                images.pop(model, None)
                if isinstance(entry, ImagePrice):
                    images[model] = entry
                else:
                    tokens[model] = entry
        return cls(MappingProxyType(tokens), MappingProxyType(images))

    def has_token_price(self, model: str) -> bool:
        return model in self.token_prices

    def token_price(self, model: str) -> TokenPrice:
        price = self.token_prices.get(model)
        if price is None:
            raise UnknownModelError(f"No price for model {model!r} (token-priced)")
        return price

    def image_price(self, model: str, size: str) -> int:
        """Micro-USD for one image of `size` from `model` when no usage is reported."""
        return self.image_prices(model).by_size[self._checked_size(model, size)]

    def image_hold(self, model: str, size: str) -> int:
        """The provider-cost base of an image's hold: the per-image price plus 25%, rounded up."""
        return _ceil_div(
            self.image_price(model, size) * IMAGE_HOLD_NUMERATOR, IMAGE_HOLD_DENOMINATOR
        )

    def image_prices(self, model: str) -> ImagePrice:
        price = self.image_prices_by_model.get(model)
        if price is None:
            raise UnknownModelError(f"No price for image model {model!r}")
        return price

    def image_price_version(self, model: str) -> str:
        return self.image_prices(model).price_version

    def check_models(self, chat_model: str, vision_model: str, image_model: str) -> None:
        """Startup check: every configured model has a price (raises UnknownModelError)."""
        self.check(
            [
                ModelUse(chat_model, "CLAUDE_MODEL", "tokens"),
                ModelUse(vision_model, "VISION_MODEL", "tokens"),
                ModelUse(image_model, "IMAGE_MODEL", "image"),
            ]
        )

    def check(self, uses: Iterable[ModelUse]) -> None:
        """Raises UnknownModelError with one line naming the first unpriced model, the setting
        that chose it and the ways to price it."""
        for use in uses:
            if use.kind == "image":
                price: ImagePrice | TokenPrice | None = self.image_prices_by_model.get(use.model)
            else:
                price = self.token_prices.get(use.model)
            if price is None:
                raise UnknownModelError(
                    f"No price for model {use.model!r} ({use.setting}): "
                    + PRICING_HELP.format(model=use.model)
                    + f": {', '.join(sorted(self._known(use.kind)))}."
                )
            if use.provider is not None and price.provider != use.provider:
                raise UnknownModelError(
                    f"Model {use.model!r} ({use.setting}) is priced as a {price.provider} model, "
                    f"not {use.provider}: fix its provider in PRICES_FILE or choose another model."
                )

    def _known(self, kind: str) -> Iterable[str]:
        return self.image_prices_by_model if kind == "image" else self.token_prices

    def _checked_size(self, model: str, size: str) -> str:
        sizes = self.image_prices(model).by_size
        if size not in sizes:
            known = ", ".join(sizes)
            raise UnknownModelError(
                f"No price for image size {size!r} of model {model!r}; known: {known}"
            )
        return size


# Arithmetic -----------------------------------------------------------------------------------


def image_cost_micros(price: ImagePrice, usage: ImageUsage | None, size: str) -> int:
    """The provider cost of one image call: from the reported usage, rounded up once; the
    per-image price for `size` only when no usage was reported."""
    if usage is None:
        if size not in price.by_size:
            raise UnknownModelError(f"No price for image size {size!r}")
        return price.by_size[size]
    weighted = (
        usage.text_input_tokens * price.text_input
        + usage.image_input_tokens * price.image_input
        + usage.text_output_tokens * price.text_output
        + usage.image_output_tokens * price.image_output
    )
    return _ceil_div(weighted, TOKENS_PER_RATE_UNIT)


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
