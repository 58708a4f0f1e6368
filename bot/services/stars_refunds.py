"""Refunds of Stars payments, in three steps (see bot/services/payments.py): hold the credit
and mark the payment `refunding`, ask Telegram, then capture (`refunded`) or release (`paid`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.ledger import capture_whole, debit_available, hold_within, release_locked
from bot.services.stars_orders import (
    PaymentsConfig,
    RefundablePurchase,
    RefundAnswer,
    RefundResult,
    RefundStatus,
    StarsApi,
)

log = structlog.get_logger(__name__)


class StarsRefunds:
    """The refund half of PaymentService (which provides the sessions and the settings)."""

    _sessionmaker: async_sessionmaker[AsyncSession]
    _config: PaymentsConfig

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
            hold = await hold_within(
                session,
                user_id,
                payment.credited_micros,
                key=f"stars-refund:{payment.charge_id}:{secrets.token_hex(4)}",
                description=f"refund of {payment.stars} Stars",
            )
            if hold is None:
                await session.rollback()
                return RefundResult(RefundStatus.CREDIT_SPENT, stars=payment.stars)
            await session.execute(
                text(
                    "UPDATE payments SET status = 'refunding', refund_hold_id = :hold WHERE id = :id"
                ),
                {"hold": hold.id, "id": payment_id},
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
            balance = await self._debit(session, payment)
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
            if payment.refund_hold_id is not None:
                await release_locked(session, payment.refund_hold_id, reason="refund_refused")
            await session.execute(
                text("UPDATE payments SET status = 'paid', refund_hold_id = NULL WHERE id = :id"),
                {"id": payment_id},
            )
            await session.commit()
        log.warning("stars_refund_refused", payment_id=payment_id)

    async def _lock_refunding(self, session: AsyncSession, payment_id: int) -> Locked | None:
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
        return None if row is None else Locked(*row)

    async def _debit(self, session: AsyncSession, payment: Locked) -> tuple[int, int]:
        """Debit the payment's credit: capture its open refund hold, or (no hold, or one no
        longer open) debit as much of the credit as is available. Marks the payment refunded.
        Returns (balance, debited)."""
        key = f"stars-refund:{payment.charge_id}"
        description = f"refund of {payment.stars} Stars"
        moved = None
        if payment.refund_hold_id is not None:
            moved = await capture_whole(
                session,
                payment.refund_hold_id,
                kind="purchase_refund",
                key=key,
                description=description,
            )
        if moved is None:
            moved = await debit_available(
                session,
                payment.user_id,
                payment.credited_micros,
                kind="purchase_refund",
                key=key,
                description=description,
            )
        if moved[1] < payment.credited_micros:
            log.warning(
                "stars_refund_uncollected",
                charge_id=payment.charge_id,
                uncollected_micros=payment.credited_micros - moved[1],
            )
        await session.execute(
            text("UPDATE payments SET status = 'refunded', refunded_at = now() WHERE id = :id"),
            {"id": payment.id},
        )
        return moved

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


@dataclass(frozen=True, slots=True)
class Locked:
    id: int
    user_id: int
    charge_id: str
    stars: int
    credited_micros: int
    refund_hold_id: int | None
