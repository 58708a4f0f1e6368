"""Telegram Stars: orders, the credit of a payment, refunds, and reconciliation with Telegram.

Every balance change here is one transaction that moves `users.balance_micros` with a conditional
UPDATE and appends its ledger row (`balance_operations`, unique `idempotency_key`), like the rest
of the ledger (bot/services/ledger/):

* A payment is credited once per `telegram_payment_charge_id`: the `payments` row (unique on the
  charge id), the balance and the `purchase` row (key `stars:{charge_id}`) commit together, so a
  duplicate delivery, a redelivery after a crash and the reconciliation all meet at the unique key.
* A refund has three steps, each its own transaction or call, and a payment's `status` says which
  one it reached:

      paid --(1) hold the credit--> refunding --(2) refundStarPayment--> (3) refunded
                                        |                                     ^
                                        +-- Telegram refused: hold released, paid again

  (1) locks the payment, holds its credit (so it cannot be spent while Telegram answers; a refund
  that would need more than the available balance is refused here) and marks it `refunding`.
  (3) captures the hold as the `purchase_refund` row (key `stars-refund:{charge_id}`) and marks
  it `refunded`. `CHARGE_ALREADY_REFUNDED` counts as done. An unknown outcome (timeout, crash)
  leaves the payment `refunding`; `resume_refunds` (at start-up and in every reconciliation) asks
  Telegram again, which gives done or already-done if the first request arrived, so each
  interrupted refund ends in exactly one of `paid` (nothing moved) or `refunded` (Stars returned
  and credit debited once).
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import OperatorSettings, usd_to_micros

log = structlog.get_logger(__name__)

MIN_STARS = 1
MAX_STARS = 10_000
MAX_PAYLOAD_BYTES = 128
PAYLOAD_PREFIX = "stars"
REFUND_HOLD_TTL = timedelta(days=30)  # never expires before resume_refunds settles it
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


_CREDIT_USER = text(
    """
    UPDATE users
    SET balance_micros = balance_micros + :credit,
        low_balance_notified = low_balance_notified
            AND balance_micros + :credit - held_micros < :low
    WHERE id = :user_id
    RETURNING balance_micros
    """
)

_INSERT_LEDGER = text(
    """
    INSERT INTO balance_operations
        (user_id, kind, amount_micros, balance_after_micros, idempotency_key, description)
    VALUES (:user_id, :kind, :amount, :balance, :key, :description)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
    """
)


class PaymentService:
    """Stars payments; each method is its own short transaction (or a few, for a refund)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], config: PaymentsConfig
    ) -> None:
        self._sessionmaker = sessionmaker
        self._config = config
        # Where the next reconciliation starts: transactions are chronological and only ever
        # appended, so a pass re-reads only the last page it saw (0 after a restart: one full pass)
        self._reconcile_from = 0

    @property
    def config(self) -> PaymentsConfig:
        return self._config

    def credit_for(self, stars: int) -> int:
        """What `stars` Stars credit, in micro-USD (exact: STAR_VALUE_USD has whole micros)."""
        return stars * self._config.star_value_micros

    # Buying

    async def check_checkout(
        self, user_id: int, payload: str, currency: str, total_amount: int
    ) -> CheckoutRefusal | None:
        """None when the order may be paid; else why not. One indexed read: well within 10 s."""
        order = Order.parse(payload)
        if order is None or currency != "XTR":
            return CheckoutRefusal.MALFORMED
        if order.user_id != user_id:
            return CheckoutRefusal.OTHER_PERSON
        if order.stars != total_amount or not MIN_STARS <= total_amount <= MAX_STARS:
            return CheckoutRefusal.OUT_OF_RANGE
        async with self._sessionmaker() as session:
            blocked = await session.scalar(
                text("SELECT is_blocked FROM users WHERE id = :id"), {"id": user_id}
            )
        return CheckoutRefusal.BLOCKED if blocked else None

    async def credit(
        self,
        user_id: int,
        charge_id: str,
        stars: int,
        payload: str | None,
        *,
        first_name: str | None = None,
        username: str | None = None,
    ) -> Purchase:
        """Credit a Stars payment once per charge id: the payments row, the balance and the
        'purchase' ledger row commit together. A repeated charge id changes nothing."""
        credit = self.credit_for(stars)
        async with self._sessionmaker() as session:
            await session.execute(
                text(
                    "INSERT INTO users (id, first_name, username) VALUES (:id, :first, :username)"
                    " ON CONFLICT (id) DO NOTHING"
                ),
                {"id": user_id, "first": first_name, "username": username},
            )
            payment_id = await session.scalar(
                text(
                    """
                    INSERT INTO payments
                        (user_id, telegram_payment_charge_id, stars, credited_micros,
                         invoice_payload)
                    VALUES (:user_id, :charge_id, :stars, :credit, :payload)
                    ON CONFLICT (telegram_payment_charge_id) DO NOTHING
                    RETURNING id
                    """
                ),
                {
                    "user_id": user_id,
                    "charge_id": charge_id,
                    "stars": stars,
                    "credit": credit,
                    "payload": payload[:MAX_PAYLOAD_BYTES] if payload else None,
                },
            )
            if payment_id is None:
                await session.rollback()
                return await self._already_credited(session, charge_id)
            balance = await session.scalar(
                _CREDIT_USER,
                {"credit": credit, "user_id": user_id, "low": self._config.low_balance_micros},
            )
            posted = await session.scalar(
                _INSERT_LEDGER,
                {
                    "user_id": user_id,
                    "kind": "purchase",
                    "amount": credit,
                    "balance": balance,
                    "key": f"stars:{charge_id}",
                    "description": f"{stars} Stars",
                },
            )
            if posted is None:  # the ledger has the key but payments had not: never commit both
                await session.rollback()
                log.error("purchase_key_without_payment", charge_id=charge_id)
                return await self._already_credited(session, charge_id)
            await session.commit()
        log.info("stars_credited", user_id=user_id, charge_id=charge_id, stars=stars, micros=credit)
        assert balance is not None
        return Purchase(charge_id, stars, credit, int(balance), applied=True)

    async def _already_credited(self, session: AsyncSession, charge_id: str) -> Purchase:
        row = (
            await session.execute(
                text(
                    """
                    SELECT p.stars, p.credited_micros, u.balance_micros
                    FROM payments p JOIN users u ON u.id = p.user_id
                    WHERE p.telegram_payment_charge_id = :charge_id
                    """
                ),
                {"charge_id": charge_id},
            )
        ).one()
        log.info("stars_payment_duplicate", charge_id=charge_id)
        return Purchase(charge_id, row.stars, row.credited_micros, row.balance_micros, False)

    # Refunds

    async def refundable(self, user_id: int) -> list[RefundablePurchase]:
        """The person's purchases /refund offers: paid within the window, not refunded, and whose
        credit is still available in the balance."""
        async with self._sessionmaker() as session:
            rows = await session.execute(
                text(
                    """
                    SELECT p.id, p.telegram_payment_charge_id, p.stars, p.credited_micros,
                           p.created_at
                    FROM payments p JOIN users u ON u.id = p.user_id
                    WHERE p.user_id = :user_id AND p.status = 'paid'
                      AND p.created_at >= now() - CAST(:window AS interval)
                      AND p.credited_micros <= u.balance_micros - u.held_micros
                    ORDER BY p.created_at DESC, p.id DESC
                    LIMIT 10
                    """
                ),
                {"user_id": user_id, "window": self._config.refund_window},
            )
            return [RefundablePurchase(*row) for row in rows]

    async def refund(self, user_id: int, payment_id: int, api: StarsApi) -> RefundResult:
        """Return a purchase's Stars and debit its credit, exactly once (see the module doc)."""
        started = await self._start_refund(user_id, payment_id)
        if isinstance(started, RefundResult):
            return started
        charge_id, _ = started
        answer = await api.refund(user_id, charge_id)
        return await self._resolve(payment_id, answer)

    async def _start_refund(self, user_id: int, payment_id: int) -> tuple[str, int] | RefundResult:
        async with self._sessionmaker() as session:
            payment = (
                await session.execute(
                    text(
                        """
                        SELECT telegram_payment_charge_id AS charge_id, stars, credited_micros
                        FROM payments
                        WHERE id = :id AND user_id = :user_id AND status = 'paid'
                          AND created_at >= now() - CAST(:window AS interval)
                        FOR UPDATE
                        """
                    ),
                    {"id": payment_id, "user_id": user_id, "window": self._config.refund_window},
                )
            ).first()
            if payment is None:
                return RefundResult(RefundStatus.NOT_REFUNDABLE)
            reserved = await session.scalar(
                text(
                    """
                    UPDATE users SET held_micros = held_micros + :amount
                    WHERE id = :user_id AND balance_micros - held_micros >= :amount
                    RETURNING balance_micros
                    """
                ),
                {"amount": payment.credited_micros, "user_id": user_id},
            )
            if reserved is None:
                await session.rollback()
                return RefundResult(RefundStatus.CREDIT_SPENT, stars=payment.stars)
            hold_id = await session.scalar(
                text(
                    """
                    INSERT INTO balance_holds
                        (user_id, amount_micros, idempotency_key, description, expires_at)
                    VALUES (:user_id, :amount, :key, :description, now() + CAST(:ttl AS interval))
                    RETURNING id
                    """
                ),
                {
                    "user_id": user_id,
                    "amount": payment.credited_micros,
                    "key": f"stars-refund:{payment.charge_id}:{secrets.token_hex(4)}",
                    "description": f"refund of {payment.stars} Stars",
                    "ttl": REFUND_HOLD_TTL,
                },
            )
            await session.execute(
                text(
                    "UPDATE payments SET status = 'refunding', refund_hold_id = :hold WHERE id = :id"
                ),
                {"hold": hold_id, "id": payment_id},
            )
            await session.commit()
        log.info("stars_refund_started", payment_id=payment_id, charge_id=payment.charge_id)
        return str(payment.charge_id), int(payment.stars)

    async def _resolve(self, payment_id: int, answer: RefundAnswer) -> RefundResult:
        if answer in (RefundAnswer.REFUNDED, RefundAnswer.ALREADY_REFUNDED):
            return await self._finish_refund(payment_id)
        if answer is RefundAnswer.REFUSED:
            await self._undo_refund(payment_id)
            return RefundResult(RefundStatus.REFUSED)
        log.warning("stars_refund_pending", payment_id=payment_id)
        return RefundResult(RefundStatus.PENDING)

    async def _finish_refund(self, payment_id: int) -> RefundResult:
        """Telegram returned the Stars: capture the held credit as 'purchase_refund'."""
        async with self._sessionmaker() as session:
            payment = await self._lock_refunding(session, payment_id)
            if payment is None:
                return RefundResult(RefundStatus.NOT_REFUNDABLE)
            hold_open = await session.scalar(
                text(
                    """
                    UPDATE balance_holds
                    SET status = 'captured', captured_micros = amount_micros, settled_at = now()
                    WHERE id = :hold AND status = 'held'
                    RETURNING amount_micros
                    """
                ),
                {"hold": payment.refund_hold_id},
            )
            held = int(hold_open or 0)
            debit = payment.credited_micros if hold_open is not None else None
            balance = await self._debit(
                session, payment, debit=debit, held_change=-held, key_kind="purchase_refund"
            )
            await session.commit()
        log.info("stars_refunded", payment_id=payment_id, charge_id=payment.charge_id)
        return RefundResult(
            RefundStatus.REFUNDED,
            stars=payment.stars,
            debited_micros=balance[1],
            balance_micros=balance[0],
        )

    async def _undo_refund(self, payment_id: int) -> None:
        """Telegram refused: release the held credit, the purchase is paid again."""
        async with self._sessionmaker() as session:
            payment = await self._lock_refunding(session, payment_id)
            if payment is None:
                return
            released = await session.scalar(
                text(
                    """
                    UPDATE balance_holds SET status = 'released', settled_at = now()
                    WHERE id = :hold AND status = 'held'
                    RETURNING amount_micros
                    """
                ),
                {"hold": payment.refund_hold_id},
            )
            if released is not None:
                await session.execute(
                    text("UPDATE users SET held_micros = held_micros - :amount WHERE id = :id"),
                    {"amount": released, "id": payment.user_id},
                )
            await session.execute(
                text("UPDATE payments SET status = 'paid', refund_hold_id = NULL WHERE id = :id"),
                {"id": payment_id},
            )
            await session.commit()
        log.warning("stars_refund_refused", payment_id=payment_id)

    async def _lock_refunding(self, session: AsyncSession, payment_id: int) -> _Locked | None:
        row = (
            await session.execute(
                text(
                    """
                    SELECT id, user_id, telegram_payment_charge_id AS charge_id, stars,
                           credited_micros, refund_hold_id
                    FROM payments WHERE id = :id AND status = 'refunding'
                    FOR UPDATE
                    """
                ),
                {"id": payment_id},
            )
        ).first()
        return None if row is None else _Locked(*row)

    async def _debit(
        self,
        session: AsyncSession,
        payment: _Locked,
        *,
        debit: int | None,
        held_change: int,
        key_kind: str,
    ) -> tuple[int, int]:
        """Debit the payment's credit (None: as much of it as is available, for a refund whose
        credit was not held) and mark the payment refunded. Returns (balance, debited)."""
        user = (
            await session.execute(
                text("SELECT balance_micros, held_micros FROM users WHERE id = :id FOR UPDATE"),
                {"id": payment.user_id},
            )
        ).one()
        if debit is None:
            debit = max(0, min(payment.credited_micros, user.balance_micros - user.held_micros))
        balance = int(user.balance_micros) - debit
        await session.execute(
            text(
                """
                UPDATE users SET balance_micros = balance_micros - :debit,
                                 held_micros = held_micros + :held_change
                WHERE id = :id
                """
            ),
            {"debit": debit, "held_change": held_change, "id": payment.user_id},
        )
        if debit > 0:
            await session.execute(
                _INSERT_LEDGER,
                {
                    "user_id": payment.user_id,
                    "kind": key_kind,
                    "amount": -debit,
                    "balance": balance,
                    "key": f"stars-refund:{payment.charge_id}",
                    "description": f"refund of {payment.stars} Stars",
                },
            )
        if debit < payment.credited_micros:
            log.warning(
                "stars_refund_uncollected",
                charge_id=payment.charge_id,
                uncollected_micros=payment.credited_micros - debit,
            )
        await session.execute(
            text("UPDATE payments SET status = 'refunded', refunded_at = now() WHERE id = :id"),
            {"id": payment.id},
        )
        return balance, debit

    async def resume_refunds(self, api: StarsApi) -> int:
        """Settle refunds a crash or a lost answer left `refunding`: ask Telegram again (a refund
        that went through answers CHARGE_ALREADY_REFUNDED). Returns how many were settled."""
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT id, user_id, telegram_payment_charge_id FROM payments"
                        " WHERE status = 'refunding' ORDER BY id"
                    )
                )
            ).all()
        settled = 0
        for payment_id, user_id, charge_id in rows:
            answer = await api.refund(user_id, charge_id)
            result = await self._resolve(payment_id, answer)
            settled += result.status is not RefundStatus.PENDING
            log.info("stars_refund_resumed", payment_id=payment_id, outcome=result.status.value)
        return settled

    # Reconciliation

    async def record_external_refund(self, charge_id: str) -> bool:
        """A refund Telegram shows that the bot did not make (the owner, a store chargeback):
        debit the credit as far as the available balance allows (never below zero; any shortfall
        is logged). False when there is nothing to record."""
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    text(
                        """
                        SELECT id, user_id, telegram_payment_charge_id AS charge_id, stars,
                               credited_micros, refund_hold_id, status
                        FROM payments WHERE telegram_payment_charge_id = :charge_id
                        FOR UPDATE
                        """
                    ),
                    {"charge_id": charge_id},
                )
            ).first()
            if row is None or row.status == "refunded":
                return False
            if row.status == "refunding":
                await session.rollback()
                await self._finish_refund(row.id)
                return True
            payment = _Locked(*row[:6])
            await self._debit(
                session, payment, debit=None, held_change=0, key_kind="purchase_refund"
            )
            await session.commit()
        log.warning("stars_refund_outside_bot", charge_id=charge_id, user_id=row.user_id)
        return True

    async def reconcile(self, api: StarsApi) -> ReconcileReport:
        """Page through Telegram's Star transactions: credit payments the database lacks, record
        refunds made outside the bot, then settle refunds left in progress. The first pass of a
        process reads every transaction; later ones start one page before where the last ended."""
        seen = credited = external = 0
        offset = self._reconcile_from
        while True:
            page = await api.transactions(offset, TRANSACTIONS_PAGE)
            seen += page.size
            known = await self._known(tuple(tx.charge_id for tx in page.transactions))
            for tx in page.transactions:
                state = known.get(tx.charge_id)
                if tx.incoming and state is None:
                    purchase = await self.credit(
                        tx.user_id,
                        tx.charge_id,
                        tx.stars,
                        tx.payload,
                        first_name=tx.first_name,
                        username=tx.username,
                    )
                    credited += purchase.applied
                    known[tx.charge_id] = "paid"
                elif not tx.incoming and state == "paid":
                    external += await self.record_external_refund(tx.charge_id)
                    known[tx.charge_id] = "refunded"
            if page.size < TRANSACTIONS_PAGE:
                break
            offset += page.size
        self._reconcile_from = max(0, offset + page.size - TRANSACTIONS_PAGE)
        resumed = await self.resume_refunds(api)
        report = ReconcileReport(seen, credited, external, resumed)
        log.info(
            "stars_reconciled",
            transactions=seen,
            credited=credited,
            external_refunds=external,
            resumed_refunds=resumed,
        )
        return report

    async def run_reconciler(
        self, api: StarsApi, interval_seconds: float, stop_event: asyncio.Event
    ) -> None:
        """Reconcile now and then every `interval_seconds` until `stop_event` is set."""
        while not stop_event.is_set():
            try:
                await self.reconcile(api)
            except Exception:
                log.exception("stars_reconcile_failed")
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=interval_seconds)
            except TimeoutError:
                continue

    async def _known(self, charge_ids: tuple[str, ...]) -> dict[str, str]:
        if not charge_ids:
            return {}
        async with self._sessionmaker() as session:
            rows = await session.execute(
                text(
                    "SELECT telegram_payment_charge_id, status FROM payments"
                    " WHERE telegram_payment_charge_id = ANY(:ids)"
                ),
                {"ids": list(charge_ids)},
            )
            return {str(charge): str(status) for charge, status in rows}


@dataclass(frozen=True, slots=True)
class _Locked:
    id: int
    user_id: int
    charge_id: str
    stars: int
    credited_micros: int
    refund_hold_id: int | None
