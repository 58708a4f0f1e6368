"""PRICES_FILE: a TOML file whose `[models."<id>"]` tables add models to the built-in price table or
replace a built-in entry of the same id whole (design section 6), and the start-up check that
every configured model has a price."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bot.config import ConfigurationError, Settings
from bot.services.pricing import (
    PROVIDERS,
    ImagePrice,
    LongPromptBand,
    ModelUse,
    PriceTable,
    TokenPrice,
    TokenRates,
    UnknownModelError,
)


class PriceFileError(ValueError):
    """PRICES_FILE cannot be read or one of its entries is malformed."""


def load_price_table(settings: Settings) -> PriceTable:
    """The built-in prices with PRICES_FILE applied; every configured model must have a price.
    Raises ConfigurationError with one line naming the first problem."""
    try:
        prices = PriceTable.load(settings.PRICES_FILE)
        prices.check(
            [
                ModelUse(settings.CLAUDE_MODEL, "CLAUDE_MODEL", "tokens", "anthropic"),
                *(
                    ModelUse(model, "CHAT_MODELS", "tokens", "anthropic")
                    for model in settings.chat_models
                ),
                ModelUse(settings.vision_model, "VISION_MODEL", "tokens", "anthropic"),
                ModelUse(settings.IMAGE_MODEL, "IMAGE_MODEL", "image", settings.IMAGE_PROVIDER),
                ModelUse(settings.TRANSCRIBE_MODEL, "TRANSCRIBE_MODEL", "tokens", "google"),
            ]
        )
    except (PriceFileError, UnknownModelError) as exc:
        raise ConfigurationError(str(exc).strip("'\"")) from None
    return prices


_TOKEN_KEYS = ("input", "output", "cache_write", "cache_read")
_IMAGE_KEYS = ("text_input", "image_input", "text_output", "image_output")


def read_prices_file(path: Path) -> dict[str, TokenPrice | ImagePrice]:
    """Parse PRICES_FILE: `[models."<id>"]` tables with `provider`, `price_version` and integer
    rates in micro-USD per million tokens, optionally a `long_prompt` band (image models:
    `per_image` by size in micro-USD)."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise PriceFileError(f"PRICES_FILE {str(path)!r} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceFileError(f"PRICES_FILE {str(path)!r} is not valid TOML: {exc}") from None
    models = document.get("models")
    if not isinstance(models, dict) or not models:
        raise PriceFileError(f'PRICES_FILE {str(path)!r} has no [models."<id>"] tables')
    return {str(model): _entry(str(model), raw) for model, raw in models.items()}


def _entry(model: str, raw: Any) -> TokenPrice | ImagePrice:
    where = f'PRICES_FILE [models."{model}"]'
    if not isinstance(raw, dict):
        raise PriceFileError(f"{where} must be a table")
    provider = raw.get("provider")
    if provider not in PROVIDERS:
        raise PriceFileError(f"{where}: provider must be one of {', '.join(PROVIDERS)}")
    version = raw.get("price_version")
    if not isinstance(version, str) or not version.strip() or len(version) > 64:
        raise PriceFileError(f"{where}: price_version must be a non-empty string (at most 64)")
    image = "per_image" in raw or any(key in raw for key in _IMAGE_KEYS)
    allowed = (
        {"provider", "price_version", "per_image", *_IMAGE_KEYS}
        if image
        else {"provider", "price_version", "long_prompt", *_TOKEN_KEYS}
    )
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise PriceFileError(f"{where}: unknown keys {', '.join(unknown)}")
    if image:
        return ImagePrice(
            by_size=MappingProxyType(_per_image(where, raw.get("per_image"))),
            price_version=version,
            provider=provider,
            **{key: _rate(where, raw, key) for key in _IMAGE_KEYS},
        )
    long_prompt = _long_prompt(where, raw.get("long_prompt"))
    return TokenPrice.of(_token_rates(where, raw), version, provider, long_prompt)


def _token_rates(where: str, raw: Mapping[str, Any]) -> TokenRates:
    rates = {
        key: _rate(where, raw, key, required=key in ("input", "output")) for key in _TOKEN_KEYS
    }
    # A model without context caching (Gemini transcription) bills cached input as input.
    for key in ("cache_write", "cache_read"):
        if key not in raw:
            rates[key] = rates["input"]
    return TokenRates(**rates)


def _long_prompt(where: str, raw: Any) -> LongPromptBand | None:
    """`long_prompt = { above_tokens = 100_000, input = ..., output = ..., cache_write = ...,
    cache_read = ... }`: the rates of a request whose prompt is over `above_tokens`."""
    if raw is None:
        return None
    where = f"{where} long_prompt"
    if not isinstance(raw, dict):
        raise PriceFileError(f"{where} must be a table")
    unknown = sorted(set(raw) - {"above_tokens", *_TOKEN_KEYS})
    if unknown:
        raise PriceFileError(f"{where}: unknown keys {', '.join(unknown)}")
    above = raw.get("above_tokens")
    if not isinstance(above, int) or isinstance(above, bool) or above <= 0:
        raise PriceFileError(f"{where}: above_tokens must be a positive integer (prompt tokens)")
    return LongPromptBand(above_tokens=above, rates=_token_rates(where, raw))


def _rate(where: str, raw: Mapping[str, Any], key: str, *, required: bool = False) -> int:
    if key not in raw:
        if required:
            raise PriceFileError(f"{where}: {key} is missing")
        return 0
    value = raw[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PriceFileError(
            f"{where}: {key} must be a non-negative integer (micro-USD per million tokens)"
        )
    return value


def _per_image(where: str, raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict) or not raw:
        raise PriceFileError(
            f'{where}: per_image is missing; for example per_image = {{ "1K" = 134_000 }}'
        )
    prices: dict[str, int] = {}
    for size, value in raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise PriceFileError(
                f"{where}: per_image.{size} must be a positive integer (micro-USD)"
            )
        prices[str(size)] = value
    return prices
