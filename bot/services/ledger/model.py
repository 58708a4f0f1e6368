"""What the ledger takes and gives back: holds, call records, settlements, balances, errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.services.money import format_usd

CallStatus = Literal["ok", "error", "blocked", "truncated", "cancelled"]
# A stopped stream is charged for what it streamed; a cut (max_tokens) one for what it reported.
CHARGED_STATUSES = ("ok", "truncated", "cancelled")
Provider = Literal["anthropic", "google", "openai"]
Purpose = Literal["chat", "analyze_image", "generate_image", "transcribe", "read_document"]
ERROR_TEXT_LIMIT = 2000


def starter_key(user_id: int) -> str:
    """The ledger key of a person's starter credit: it applies once."""
    return f"starter:{user_id}"


class BillingError(Exception):
    """Base of the billing errors callers may want to handle."""


class InsufficientBalance(BillingError):
    def __init__(self, needed_micros: int, available_micros: int) -> None:
        self.needed_micros = needed_micros
        self.available_micros = available_micros
        super().__init__(
            f"Insufficient balance: this needs {format_usd(needed_micros)}, "
            f"available {format_usd(available_micros)}."
        )


class DailyLimitReached(InsufficientBalance):
    """The person's own daily spend limit (/limit) leaves less than this hold needs."""

    def __init__(self, needed_micros: int, limit_micros: int, left_micros: int) -> None:
        self.limit_micros = limit_micros
        InsufficientBalance.__init__(self, needed_micros, left_micros)
        self.args = (
            f"Daily spending limit reached: this needs {format_usd(needed_micros)}, "
            f"{format_usd(left_micros)} of today's {format_usd(limit_micros)} is left.",
        )

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownUserError(BillingError):
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        super().__init__(f"No user with id {user_id}.")


class HoldNotOpenError(BillingError):
    """The hold key was used before and that hold is already captured, released or expired."""

    def __init__(self, key: str, status: str) -> None:
        self.key = key
        self.status = status
        super().__init__(f"Hold {key!r} is already {status}.")


class IdempotencyConflictError(BillingError):
    """An idempotency key was reused for a different user."""


@dataclass(frozen=True, slots=True)
class Hold:
    id: int
    user_id: int
    amount_micros: int
    key: str


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One provider call, as stored in api_calls. `charge_key` defaults to the hold's key."""

    user_id: int
    provider: Provider
    model: str
    purpose: Purpose
    status: CallStatus
    provider_cost_micros: int = 0
    price_version: str | None = None
    tool_use_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    image_count: int = 0
    image_size: str | None = None
    image_output_tokens: int = 0
    image_list_price_micros: int | None = None
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    error: str | None = None
    provider_cost_unknown: bool = False
    request_id: str | None = None
    duration_ms: int = 0
    charge_key: str | None = None
    # False: recorded with its cost to the provider but never charged (an image /stop abandoned)
    chargeable: bool = True

    @property
    def stored_error(self) -> str | None:
        return self.error[:ERROR_TEXT_LIMIT] if self.error else None


@dataclass(frozen=True, slots=True)
class Settlement:
    """Outcome of settle(); `applied` is False when the hold was already settled or the charge
    key already used (nothing changed then). `uncollected_micros` is what the person could not
    be charged; `attached_id` is the id of the row written with the charge, if any."""

    api_call_id: int | None
    charged_micros: int
    provider_cost_micros: int
    balance_micros: int
    applied: bool
    uncollected_micros: int = 0
    attached_id: int | None = None


@dataclass(frozen=True, slots=True)
class BalanceView:
    balance_micros: int
    held_micros: int
    available_micros: int


@dataclass(frozen=True, slots=True)
class Operation:
    id: int
    kind: str
    amount_micros: int
    balance_after_micros: int
    description: str | None
    created_at: datetime
