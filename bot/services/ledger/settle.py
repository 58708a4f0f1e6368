"""Settling a hold inside one transaction: capture, release, or record after the fact.

The charge is the call's price (provider cost x markup). When it exceeds the hold, the person is
charged as far as their available balance (the hold included) allows, and the rest is recorded
on the call as `uncollected_micros`; it is never dropped silently.
"""

from __future__ import annotations

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import BalanceOperation
from bot.services.ledger import rows
from bot.services.ledger.model import CallRecord, Hold, IdempotencyConflictError, Settlement

log = structlog.get_logger(__name__)


async def settle_locked(
    session: AsyncSession, hold: Hold, call: CallRecord, price: int
) -> Settlement:
    """Settle `hold` whatever state it is in; the caller commits."""
    status, amount = await rows.lock_hold(session, hold.id)
    if status == "held":
        settlement = await _settle_open(session, hold, amount, call, price)
        if settlement is not None:
            return settlement
        await release_locked(session, hold.id, reason="charge_key_already_used")
        return await _already_settled(session, hold, call)
    if status == "expired":
        return await _record_after_expiry(session, hold, call)
    await session.rollback()
    log.info("settle_duplicate", hold_id=hold.id, status=status)
    return await _already_settled(session, hold, call)


async def release_locked(session: AsyncSession, hold_id: int, *, reason: str) -> bool:
    status, amount = await rows.lock_hold(session, hold_id)
    if status != "held":
        return False
    await _give_back(session, hold_id, amount, reason=reason)
    return True


async def capture_whole(
    session: AsyncSession, hold_id: int, *, kind: str, key: str, description: str
) -> tuple[int, int] | None:
    """Capture a whole open hold as one ledger row of `kind`, with no api_calls row (a Stars
    refund is no provider call). (balance, debited), or None when the hold is not open. Raises
    IdempotencyConflictError (the transaction rolled back) when the key was used."""
    status, amount = await rows.lock_hold(session, hold_id)
    if status != "held":
        return None
    user_id = await rows.close_hold(session, hold_id, "captured", captured_micros=amount)
    balance = await rows.post(
        session,
        user_id=user_id,
        kind=kind,
        amount_micros=-amount,
        key=key,
        description=description,
        held_change_micros=-amount,
    )
    if balance is None:
        raise IdempotencyConflictError(f"Ledger key {key!r} was used before.")
    log.info("hold_captured", hold_id=hold_id, charged_micros=amount)
    return balance, amount


async def _give_back(session: AsyncSession, hold_id: int, amount: int, *, reason: str) -> int:
    """Close a locked open hold as released and free its amount; returns the balance."""
    user_id = await rows.close_hold(session, hold_id, "released", captured_micros=0)
    balance = await rows.change_held(session, user_id, -amount)
    log.info("hold_released", hold_id=hold_id, reason=reason)
    return balance


async def _settle_open(
    session: AsyncSession, hold: Hold, hold_amount: int, call: CallRecord, price: int
) -> Settlement | None:
    """Capture or release a locked open hold. None when the charge key was used before."""
    if price == 0:
        return await _release_open(session, hold, hold_amount, call)
    charged = price
    if price > hold_amount:
        charged = min(price, hold_amount + await rows.lock_available(session, hold.user_id))
        _log_above_hold(hold, price, charged)
    api_call_id = await rows.insert_call(
        session, call, charged_micros=charged, uncollected_micros=price - charged
    )
    balance = await rows.post(
        session,
        user_id=hold.user_id,
        kind="charge",
        amount_micros=-charged,
        key=call.charge_key or hold.key,
        api_call_id=api_call_id,
        description=f"{call.purpose} {call.model}",
        held_change_micros=-hold_amount,
    )
    if balance is None:
        log.warning("charge_key_already_used", hold_id=hold.id, key=call.charge_key)
        return None
    # The hold covers at most its own amount; the rest came from the available balance.
    captured = min(charged, hold_amount)
    await rows.close_hold(session, hold.id, "captured", captured_micros=captured)
    log.info("hold_captured", hold_id=hold.id, charged_micros=charged)
    return Settlement(
        api_call_id=api_call_id,
        charged_micros=charged,
        provider_cost_micros=call.provider_cost_micros,
        balance_micros=balance,
        applied=True,
        uncollected_micros=price - charged,
    )


async def _release_open(
    session: AsyncSession, hold: Hold, hold_amount: int, call: CallRecord
) -> Settlement:
    api_call_id = await rows.insert_call(session, call, charged_micros=0)
    balance = await _give_back(session, hold.id, hold_amount, reason=call.status)
    return Settlement(
        api_call_id=api_call_id,
        charged_micros=0,
        provider_cost_micros=call.provider_cost_micros,
        balance_micros=balance,
        applied=True,
    )


def _log_above_hold(hold: Hold, price: int, charged: int) -> None:
    log.warning(
        "charge_above_hold",
        hold_id=hold.id,
        user_id=hold.user_id,
        price_micros=price,
        hold_micros=hold.amount_micros,
        charged_micros=charged,
        uncollected_micros=price - charged,
    )


async def _record_after_expiry(session: AsyncSession, hold: Hold, call: CallRecord) -> Settlement:
    """The sweeper already gave the hold back: keep the provider cost, charge nothing."""
    api_call_id = await rows.insert_call(session, call, charged_micros=0)
    log.warning("settled_after_hold_expired", hold_id=hold.id, user_id=hold.user_id)
    return Settlement(
        api_call_id=api_call_id,
        charged_micros=0,
        provider_cost_micros=call.provider_cost_micros,
        balance_micros=await rows.current_balance(session, hold.user_id),
        applied=False,
    )


async def _already_settled(session: AsyncSession, hold: Hold, call: CallRecord) -> Settlement:
    charge = (
        await session.execute(
            select(BalanceOperation.api_call_id, BalanceOperation.amount_micros).where(
                BalanceOperation.idempotency_key == (call.charge_key or hold.key),
                BalanceOperation.user_id == hold.user_id,
            )
        )
    ).first()
    return Settlement(
        api_call_id=charge.api_call_id if charge else None,
        charged_micros=-charge.amount_micros if charge else 0,
        provider_cost_micros=call.provider_cost_micros,
        balance_micros=await rows.current_balance(session, hold.user_id),
        applied=False,
    )
