"""Ledger row operations inside the caller's session. None of them commits."""

from __future__ import annotations

import structlog
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import ApiCall, BalanceHold, BalanceOperation, User
from bot.services.ledger.model import (
    BalanceView,
    CallRecord,
    DailyLimitReached,
    Hold,
    HoldNotOpenError,
    IdempotencyConflictError,
    InsufficientBalance,
    UnknownUserError,
)
from bot.services.ledger.statements import DAILY_LIMIT_STATE, api_call_values

log = structlog.get_logger(__name__)


async def post(
    session: AsyncSession,
    *,
    user_id: int,
    kind: str,
    amount_micros: int,
    key: str,
    admin_user_id: int | None = None,
    description: str | None = None,
    api_call_id: int | None = None,
    held_change_micros: int = 0,
) -> int | None:
    """Move the balance and append its ledger row. Returns the new balance, or None when the
    key was used before (the transaction is rolled back then). Raises InsufficientBalance."""
    change = (
        update(User)
        .where(User.id == user_id)
        .values(
            balance_micros=User.balance_micros + amount_micros,
            held_micros=User.held_micros + held_change_micros,
        )
        .returning(User.balance_micros)
        .execution_options(synchronize_session=False)
    )
    if amount_micros < 0 and held_change_micros == 0:
        change = change.where(User.balance_micros - User.held_micros >= -amount_micros)
    new_balance = await session.scalar(change)
    if new_balance is None:
        await session.rollback()
        if await ledger_key_used(session, key):
            return None
        view = await balance_view(session, user_id)
        raise InsufficientBalance(-amount_micros, view.available_micros)
    inserted = await session.scalar(
        pg_insert(BalanceOperation)
        .values(
            user_id=user_id,
            kind=kind,
            amount_micros=amount_micros,
            balance_after_micros=new_balance,
            idempotency_key=key,
            api_call_id=api_call_id,
            admin_user_id=admin_user_id,
            description=description,
        )
        .on_conflict_do_nothing(index_elements=[BalanceOperation.idempotency_key])
        .returning(BalanceOperation.id)
    )
    if inserted is None:
        await session.rollback()
        return None
    return new_balance


async def debit_available(
    session: AsyncSession,
    user_id: int,
    amount_micros: int,
    *,
    kind: str,
    key: str,
    description: str,
) -> tuple[int, int]:
    """Debit `amount_micros`, or as much of it as the available balance allows (never below
    zero). (balance, debited). Raises IdempotencyConflictError (rolled back) on a used key."""
    debit = max(0, min(amount_micros, await lock_available(session, user_id)))
    if debit == 0:
        return await current_balance(session, user_id), 0
    balance = await post(
        session, user_id=user_id, kind=kind, amount_micros=-debit, key=key, description=description
    )
    if balance is None:
        raise IdempotencyConflictError(f"Ledger key {key!r} was used before.")
    return balance, debit


async def ledger_key_used(session: AsyncSession, key: str) -> bool:
    used = await session.scalar(
        select(BalanceOperation.id).where(BalanceOperation.idempotency_key == key)
    )
    return used is not None


async def existing_hold(session: AsyncSession, user_id: int, key: str) -> Hold | None:
    """The open hold under `key`; None when there is none. Raises when the key was used for
    another user or its hold is closed."""
    row = (
        await session.execute(
            select(
                BalanceHold.id, BalanceHold.user_id, BalanceHold.amount_micros, BalanceHold.status
            ).where(BalanceHold.idempotency_key == key)
        )
    ).first()
    if row is None:
        return None
    if row.user_id != user_id:
        raise IdempotencyConflictError(f"Hold key {key!r} belongs to another user.")
    if row.status != "held":
        raise HoldNotOpenError(key, row.status)
    return Hold(id=row.id, user_id=row.user_id, amount_micros=row.amount_micros, key=key)


async def lock_hold(session: AsyncSession, hold_id: int) -> tuple[str, int]:
    row = (
        await session.execute(
            select(BalanceHold.status, BalanceHold.amount_micros)
            .where(BalanceHold.id == hold_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise LookupError(f"No hold with id {hold_id}.")
    return str(row.status), int(row.amount_micros)


async def lock_available(session: AsyncSession, user_id: int) -> int:
    """The user's available balance, with the user row locked until the transaction ends."""
    row = (
        await session.execute(
            select(User.balance_micros, User.held_micros)
            .where(User.id == user_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise UnknownUserError(user_id)
    return int(row.balance_micros) - int(row.held_micros)


async def close_hold(
    session: AsyncSession, hold_id: int, status: str, *, captured_micros: int
) -> int:
    user_id = await session.scalar(
        update(BalanceHold)
        .where(BalanceHold.id == hold_id)
        .values(status=status, captured_micros=captured_micros, settled_at=func.now())
        .returning(BalanceHold.user_id)
        .execution_options(synchronize_session=False)
    )
    assert user_id is not None
    return user_id


async def change_held(session: AsyncSession, user_id: int, delta: int) -> int:
    balance = await session.scalar(
        update(User)
        .where(User.id == user_id)
        .values(held_micros=User.held_micros + delta)
        .returning(User.balance_micros)
        .execution_options(synchronize_session=False)
    )
    assert balance is not None
    return balance


async def insert_call(
    session: AsyncSession, call: CallRecord, *, charged_micros: int, uncollected_micros: int = 0
) -> int:
    api_call_id = await session.scalar(
        insert(ApiCall)
        .values(
            charged_micros=charged_micros,
            uncollected_micros=uncollected_micros,
            **api_call_values(call),
        )
        .returning(ApiCall.id)
    )
    assert api_call_id is not None
    return int(api_call_id)


async def balance_view(session: AsyncSession, user_id: int) -> BalanceView:
    row = (
        await session.execute(
            select(User.balance_micros, User.held_micros).where(User.id == user_id)
        )
    ).first()
    if row is None:
        raise UnknownUserError(user_id)
    balance, held = int(row.balance_micros), int(row.held_micros)
    return BalanceView(balance_micros=balance, held_micros=held, available_micros=balance - held)


async def current_balance(session: AsyncSession, user_id: int) -> int:
    return (await balance_view(session, user_id)).balance_micros


async def daily_limit_reached(
    session: AsyncSession, user_id: int, amount_micros: int
) -> DailyLimitReached:
    """Why a hold the balance covers was refused: the person's own daily limit."""
    limit, left = await daily_limit_left(session, user_id)
    log.info("hold_daily_limit", user_id=user_id, needed_micros=amount_micros, left=left)
    return DailyLimitReached(amount_micros, limit or 0, left or 0)


async def daily_limit_left(session: AsyncSession, user_id: int) -> tuple[int | None, int | None]:
    """The person's daily limit and what of it is left today (held and spent counted); (None,
    None) without a limit."""
    row = (await session.execute(text(DAILY_LIMIT_STATE), {"id": user_id})).one()
    if row.daily_limit_micros is None:
        return None, None
    limit = int(row.daily_limit_micros)
    return limit, max(0, limit - int(row.spent) - int(row.held_micros))
