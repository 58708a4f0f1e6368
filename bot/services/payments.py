"""Telegram Stars: orders, the credit of a payment, refunds, and reconciliation with Telegram.

Every balance change here is one transaction that moves the balance and appends its ledger row
through the ledger's own operations inside that transaction (bot/services/ledger/: `post`,
`hold_within`, `capture_whole`, `release_locked`, `debit_available`); the SQL here touches only
the `payments` table:

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

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.ledger import post
from bot.services.stars_orders import (
    MAX_PAYLOAD_BYTES,
    MAX_STARS,
    MIN_STARS,
    REARM_LOW_BALANCE,
    TRANSACTIONS_PAGE,
    CheckoutRefusal,
    Order,
    PaymentsConfig,
    Purchase,
    ReconcileReport,
    RefundablePurchase,
    RefundAnswer,
    RefundResult,
    RefundStatus,
    StarPage,
    StarsApi,
    StarTransaction,
)
from bot.services.stars_refunds import Locked, StarsRefunds

__all__ = [
    "MAX_STARS",
    "MIN_STARS",
    "CheckoutRefusal",
    "Order",
    "PaymentService",
    "PaymentsConfig",
    "Purchase",
    "ReconcileReport",
    "RefundAnswer",
    "RefundResult",
    "RefundStatus",
    "RefundablePurchase",
    "StarPage",
    "StarTransaction",
    "StarsApi",
]

log = structlog.get_logger(__name__)


class PaymentService(StarsRefunds):
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
        credit, low = self.credit_for(stars), self._config.low_balance_micros
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
            balance = await post(
                session,
                user_id=user_id,
                kind="purchase",
                amount_micros=credit,
                key=f"stars:{charge_id}",
                description=f"{stars} Stars",
            )
            if balance is None:  # the ledger has the key but payments had not: never commit both
                log.error("purchase_key_without_payment", charge_id=charge_id)
                return await self._already_credited(session, charge_id)
            await session.execute(REARM_LOW_BALANCE, {"user_id": user_id, "low": low})
            await session.commit()
        log.info("stars_credited", user_id=user_id, charge_id=charge_id, stars=stars, micros=credit)
        return Purchase(charge_id, stars, credit, balance, applied=True)

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
            payment = Locked(*row[:6])
            await self._debit(session, payment)
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
