"""The price table: the built-in entries (`bot.services.builtin_prices`) with the entries of
``PRICES_FILE`` (TOML) added or replacing a built-in entry of the same id whole (design section 6).
Every entry has a ``price_version`` that is stored with each api_calls row, so an admin can
recompute any row from its token counts (``PriceTable.token_price_at``).

The shape of a price and the cost arithmetic live in `bot.services.price_model` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from bot.services.builtin_prices import (
    ANTHROPIC_2026_12_PRICE_VERSION,
    ANTHROPIC_PRICE_VERSION,
    DEFAULT_IMAGE_PRICES,
    DEFAULT_TOKEN_PRICES,
    GOOGLE_PRICE_VERSION,
    OPENAI_PRICE_VERSION,
    SUPERSEDED_TOKEN_PRICES,
)
from bot.services.price_model import (
    MICROS_PER_USD,
    PROVIDERS,
    TOKENS_PER_RATE_UNIT,
    ImagePrice,
    LongPromptBand,
    Provider,
    TokenPrice,
    TokenRates,
    TokenUsage,
    UnknownModelError,
    apply_markup,
    ceil_div,
    image_cost_micros,
    rates_for_prompt,
    token_cost_micros,
    worst_case_token_cost_micros,
)

__all__ = [
    "ANTHROPIC_2026_12_PRICE_VERSION",
    "ANTHROPIC_PRICE_VERSION",
    "DEFAULT_IMAGE_PRICES",
    "DEFAULT_TOKEN_PRICES",
    "GOOGLE_PRICE_VERSION",
    "MICROS_PER_USD",
    "OPENAI_PRICE_VERSION",
    "PROVIDERS",
    "TOKENS_PER_RATE_UNIT",
    "ImagePrice",
    "LongPromptBand",
    "ModelUse",
    "PriceTable",
    "Provider",
    "TokenPrice",
    "TokenRates",
    "TokenUsage",
    "UnknownModelError",
    "apply_markup",
    "image_cost_micros",
    "rates_for_prompt",
    "token_cost_micros",
    "worst_case_token_cost_micros",
]

# The hold for an image: its per-image price plus 25%, rounded up (design section 6).
IMAGE_HOLD_NUMERATOR, IMAGE_HOLD_DENOMINATOR = 5, 4

PRICING_HELP = (
    'add a [models."{model}"] table to the TOML file named by PRICES_FILE (see the README), '
    "or choose a model the built-in table prices"
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

    def token_price_at(self, model: str, price_version: str) -> TokenPrice | None:
        """The rates a recorded call of `model` at `price_version` was charged at (None when
        neither this table nor the superseded built-in entries know that version)."""
        current = self.token_prices.get(model)
        if current is not None and current.price_version == price_version:
            return current
        return SUPERSEDED_TOKEN_PRICES.get((model, price_version))

    def image_price(self, model: str, size: str) -> int:
        """Micro-USD for one image of `size` from `model` when no usage is reported."""
        return self.image_prices(model).by_size[self._checked_size(model, size)]

    def image_hold(self, model: str, size: str) -> int:
        """The provider-cost base of an image's hold: the per-image price plus 25%, rounded up."""
        return ceil_div(
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
