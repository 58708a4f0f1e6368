"""The shape of a price and the cost arithmetic. Every amount is an integer in micro-USD.

Rates are micro-USD per million tokens (2 USD/MTok is stored as 2_000_000):
- token-priced models (Claude, the transcription model): input, output, cache write and cache
  read; optionally a long-prompt band (``LongPromptBand``): a request whose prompt (input + cache
  writes + cache reads) is over ``above_tokens`` pays the band's rates on every token of that
  request, output included (Claude Haiku 5.5: over 100,000 tokens, five times the short rates).
- image models, per token kind as the providers bill them: text input, image input, text output
  (thinking included) and image output; plus ``per_image``, a price per image by size, charged
  only for a response that reports no usage, and the base of the hold (plus 25%).

Rounding rule (one rule, applied once per provider call): the cost of a call is
``ceil(sum(tokens_i * rate_i) / 1_000_000)`` over its token kinds, at the rates of the band the
call's reported prompt falls in. The exact rational cost is never undercharged and is overcharged
by less than one micro-USD. The markup is applied to that integer with exact Decimal arithmetic
and rounded up once more (``apply_markup``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, Inexact, localcontext
from typing import Literal

from bot.providers.images import ImageUsage

MICROS_PER_USD = 1_000_000
TOKENS_PER_RATE_UNIT = 1_000_000

Provider = Literal["anthropic", "google", "openai"]
PROVIDERS: tuple[Provider, ...] = ("anthropic", "google", "openai")


class UnknownModelError(LookupError):
    """A model (or image size) that has no entry in the price table."""


@dataclass(frozen=True, slots=True)
class TokenRates:
    """Micro-USD per million tokens of each kind."""

    input: int
    output: int
    cache_write: int
    cache_read: int


@dataclass(frozen=True, slots=True)
class LongPromptBand:
    """The rates of a request whose prompt is over `above_tokens` tokens (on all its tokens)."""

    above_tokens: int
    rates: TokenRates


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """Micro-USD per million tokens; `long_prompt` replaces them for a long prompt."""

    input: int
    output: int
    cache_write: int
    cache_read: int
    price_version: str
    provider: Provider = "anthropic"
    long_prompt: LongPromptBand | None = None

    @property
    def rates(self) -> TokenRates:
        return TokenRates(self.input, self.output, self.cache_write, self.cache_read)

    @classmethod
    def of(
        cls,
        rates: TokenRates,
        price_version: str,
        provider: Provider = "anthropic",
        long_prompt: LongPromptBand | None = None,
    ) -> TokenPrice:
        """A price from its base rates."""
        return cls(
            rates.input,
            rates.output,
            rates.cache_write,
            rates.cache_read,
            price_version,
            provider,
            long_prompt,
        )


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

    @property
    def prompt_tokens(self) -> int:
        """The prompt as a long-prompt band counts it: fresh input, cache writes and reads."""
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens


def rates_for_prompt(price: TokenPrice, prompt_tokens: int) -> TokenRates:
    """The rates a request with a prompt of `prompt_tokens` pays."""
    band = price.long_prompt
    if band is not None and prompt_tokens > band.above_tokens:
        return band.rates
    return price.rates


def token_cost_micros(price: TokenPrice, usage: TokenUsage) -> int:
    """Cost of one provider call from its reported usage, rounded up once (see the module
    docstring); the band is chosen by the reported prompt."""
    rates = rates_for_prompt(price, usage.prompt_tokens)
    weighted = (
        usage.input_tokens * rates.input
        + usage.output_tokens * rates.output
        + usage.cache_write_tokens * rates.cache_write
        + usage.cache_read_tokens * rates.cache_read
    )
    return ceil_div(weighted, TOKENS_PER_RATE_UNIT)


def worst_case_token_cost_micros(
    price: TokenPrice, input_tokens_estimate: int, max_tokens: int, *, prompt_may_grow: bool = False
) -> int:
    """The most one call can cost: all input at the dearest input-side rate (cache writes cost
    more than fresh input), plus `max_tokens` of output, in the dearest band the call can reach.

    `input_tokens_estimate` is a generous estimate of the prompt; a long-prompt band is reachable
    when the estimate is over its threshold, or whatever the estimate when `prompt_may_grow` (a
    call whose server tools add their results to the prompt while it runs)."""
    bands = [price.rates]
    band = price.long_prompt
    if band is not None and (prompt_may_grow or input_tokens_estimate > band.above_tokens):
        bands.append(band.rates)
    return max(_worst_at(rates, input_tokens_estimate, max_tokens) for rates in bands)


def _worst_at(rates: TokenRates, input_tokens: int, max_tokens: int) -> int:
    input_rate = max(rates.input, rates.cache_write, rates.cache_read)
    weighted = input_tokens * input_rate + max_tokens * rates.output
    return ceil_div(weighted, TOKENS_PER_RATE_UNIT)


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
    return ceil_div(weighted, TOKENS_PER_RATE_UNIT)


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


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
