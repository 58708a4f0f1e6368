"""Telegram Stars orders and what payments take and give back: invoice payloads, refusals,
Telegram's answers and transactions, purchases, refunds, the payments settings, and the
statement a credit runs (bot/services/payments.py)."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import text

from bot.config import OperatorSettings, usd_to_micros

MIN_STARS = 1
MAX_STARS = 10_000
MAX_PAYLOAD_BYTES = 128
PAYLOAD_PREFIX = "stars"
TRANSACTIONS_PAGE = 100


# Orders and their invoice payloads


@dataclass(frozen=True, slots=True)
class Order:
    """One /buy: who pays, how many Stars, and a random order id; the invoice payload names all
    three ("stars:<user id>:<stars>:<order id>", at most 128 bytes)."""

    user_id: int
    stars: int
    order_id: str

    @property
    def payload(self) -> str:
        return f"{PAYLOAD_PREFIX}:{self.user_id}:{self.stars}:{self.order_id}"

    @classmethod
    def new(cls, user_id: int, stars: int) -> Order:
        if not MIN_STARS <= stars <= MAX_STARS:
            raise ValueError(f"a purchase is {MIN_STARS} to {MAX_STARS} Stars")
        return cls(user_id=user_id, stars=stars, order_id=secrets.token_hex(6))

    @classmethod
    def parse(cls, payload: str) -> Order | None:
        """The order a payload names, or None when it is not one of ours."""
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            return None
        parts = payload.split(":")
        if len(parts) != 4 or parts[0] != PAYLOAD_PREFIX:
            return None
        _, user, stars, order_id = parts
        if not (user.isdigit() and stars.isdigit() and order_id.isalnum()):
            return None
        return cls(user_id=int(user), stars=int(stars), order_id=order_id)


class CheckoutRefusal(enum.Enum):
    """Why a pre-checkout query is answered ok=False."""

    MALFORMED = "malformed"
    OTHER_PERSON = "other_person"
    OUT_OF_RANGE = "out_of_range"
    BLOCKED = "blocked"


# Telegram, as the payments need it (implemented over the Bot API in bot/telegram/stars.py)


class RefundAnswer(enum.Enum):
    REFUNDED = "refunded"
    ALREADY_REFUNDED = "already_refunded"  # Telegram: CHARGE_ALREADY_REFUNDED
    REFUSED = "refused"  # any other definite refusal: nothing was returned
    UNKNOWN = "unknown"  # no answer (timeout, network): it may or may not have happened


@dataclass(frozen=True, slots=True)
class StarTransaction:
    """One entry of getStarTransactions that concerns a person: an incoming payment, or a refund
    of one (same id as the payment)."""

    charge_id: str
    user_id: int
    stars: int
    payload: str | None
    incoming: bool
    first_name: str | None = None
    username: str | None = None


@dataclass(frozen=True, slots=True)
class StarPage:
    """The person-related transactions of one page, and how many the page had in all (paging
    stops at a short page)."""

    transactions: Sequence[StarTransaction]
    size: int


class StarsApi(Protocol):
    async def refund(self, user_id: int, charge_id: str) -> RefundAnswer: ...

    async def transactions(self, offset: int, limit: int) -> StarPage: ...


# Results


@dataclass(frozen=True, slots=True)
class Purchase:
    """A credited payment; `applied` is False when this charge id was credited before."""

    charge_id: str
    stars: int
    credited_micros: int
    balance_micros: int
    applied: bool


@dataclass(frozen=True, slots=True)
class RefundablePurchase:
    payment_id: int
    charge_id: str
    stars: int
    credited_micros: int
    created_at: datetime


class RefundStatus(enum.Enum):
    REFUNDED = "refunded"  # Stars returned, credit debited
    NOT_REFUNDABLE = "not_refundable"  # not this person's, too old, already refunded or pending
    CREDIT_SPENT = "credit_spent"  # the credit is no longer available in the balance
    REFUSED = "refused"  # Telegram refused; nothing changed
    PENDING = "pending"  # Telegram's answer is unknown; resolved by resume_refunds


@dataclass(frozen=True, slots=True)
class RefundResult:
    status: RefundStatus
    stars: int = 0
    debited_micros: int = 0
    balance_micros: int = 0


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    transactions: int = 0
    credited: int = 0
    external_refunds: int = 0
    resumed_refunds: int = 0


@dataclass(frozen=True, slots=True)
class PaymentsConfig:
    star_value_micros: int
    refund_window: timedelta
    low_balance_micros: int = 0

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> PaymentsConfig:
        return cls(
            star_value_micros=usd_to_micros(settings.STAR_VALUE_USD),
            refund_window=timedelta(days=settings.REFUND_WINDOW_DAYS),
            low_balance_micros=usd_to_micros(settings.LOW_BALANCE_USD),
        )


# A purchase that lifts the available balance to the low-balance threshold re-arms the notice.
REARM_LOW_BALANCE = text(
    """
    UPDATE users SET low_balance_notified = false
    WHERE id = :user_id AND low_balance_notified AND balance_micros - held_micros >= :low
    """
)
