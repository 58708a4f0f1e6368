"""Money for people: micro-USD as dollars, exact."""

from __future__ import annotations

from decimal import Decimal

MICROS_PER_USD = 1_000_000
_CENT_MICROS = 10_000


def format_usd(micros: int) -> str:
    """User-facing dollars, exact: "$0.50" for whole cents, else 4 to 6 decimals ("$0.1340")."""
    sign = "-" if micros < 0 else ""
    magnitude = abs(micros)
    if magnitude % _CENT_MICROS == 0:
        return f"{sign}${Decimal(magnitude) / MICROS_PER_USD:.2f}"
    digits = f"{Decimal(magnitude) / MICROS_PER_USD:.6f}"
    trimmed = digits.rstrip("0")
    decimals = len(trimmed.split(".")[1])
    return f"{sign}${digits[: len(digits) - 6 + max(decimals, 4)]}"


def format_usd_exact(micros: int) -> str:
    """Admin-facing dollars with all six decimals: "$0.134000"."""
    return f"${usd_decimal(micros)}" if micros >= 0 else f"-${usd_decimal(-micros)}"


def usd_decimal(micros: int) -> Decimal:
    """Micro-USD as a six-decimal Decimal number of dollars (exact)."""
    return (Decimal(micros) / MICROS_PER_USD).quantize(Decimal("0.000001"))
