"""Creating a hold: the one statement (`statements.HOLD`) and the one function that runs it.

A provider call's hold (kind 'call', under the person's daily limit) runs it on its own, through
`Ledger.hold` on the metered path. A Stars refund's hold (kind 'refund', not a spend, so the limit
does not apply; it waits for Telegram's answer) runs it inside the refund's own transaction,
which marks the payment `refunding` in the same commit (`hold_within`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.ledger.model import Hold
from bot.services.ledger.statements import HOLD

HoldKind = Literal["call", "refund"]
# A refund's hold never expires before resume_refunds settles it.
REFUND_HOLD_TTL = timedelta(days=30)

FetchValue = Callable[..., Awaitable[Any]]


async def place(
    fetchval: FetchValue,
    user_id: int,
    amount_micros: int,
    *,
    key: str,
    description: str | None,
    ttl: timedelta,
    kind: HoldKind,
) -> int | None:
    """Reserve the amount and record the hold; its id, or None when nothing was reserved (too
    little available, the daily limit, an unknown user). A used key raises (nothing changed)."""
    if amount_micros <= 0:
        raise ValueError("a hold must be positive")
    under_limit = kind == "call"
    hold_id = await fetchval(HOLD, user_id, amount_micros, key, description, ttl, under_limit)
    return None if hold_id is None else int(hold_id)


async def hold_within(
    session: AsyncSession,
    user_id: int,
    amount_micros: int,
    *,
    key: str,
    description: str,
) -> Hold | None:
    """A refund's hold: `place` inside the caller's transaction (the caller commits); None when
    the available balance does not cover the amount."""
    connection = await session.connection()

    async def fetchval(query: str, *args: object) -> Any:
        return (await connection.exec_driver_sql(query, args)).scalar()

    hold_id = await place(
        fetchval,
        user_id,
        amount_micros,
        key=key,
        description=description,
        ttl=REFUND_HOLD_TTL,
        kind="refund",
    )
    if hold_id is None:
        return None
    return Hold(id=hold_id, user_id=user_id, amount_micros=amount_micros, key=key)
