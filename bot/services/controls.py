"""What a person controls about their own spending (design sections 8 and 10): a daily spend
limit (/limit, enforced by the ledger's hold statement), a one-line receipt after each answer (/receipts),
and the low-balance notice, given once per crossing of LOW_BALANCE_USD (re-armed by a purchase or
top-up that lifts the balance above it; see PaymentService.credit)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL
from bot.i18n import _, format_money

MAX_DAILY_LIMIT_MICROS = 10_000 * 1_000_000

# What the person was charged in the current UTC day ('charge' ledger rows since midnight UTC).
SPENT_TODAY_SQL = """
    SELECT COALESCE(SUM(-amount_micros), 0) FROM balance_operations
    WHERE user_id = {user} AND kind = 'charge'
      AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
"""


@dataclass(frozen=True, slots=True)
class DailyLimit:
    limit_micros: int | None
    spent_micros: int
    held_micros: int
    resets_at: datetime

    @property
    def left_micros(self) -> int | None:
        if self.limit_micros is None:
            return None
        return max(0, self.limit_micros - self.spent_micros - self.held_micros)


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """After a turn: what it charged, the available balance, whether receipts are on, and
    whether this turn took the balance below the low-balance threshold for the first time."""

    charged_micros: int
    available_micros: int
    receipts: bool
    low_balance: bool


def daily_limit_reply(
    needed_micros: int, limit_micros: int, left_micros: int, now: datetime | None = None
) -> str:
    """The reply when a hold would pass the person's own daily limit."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    hours = max(1, round((next_utc_midnight(moment) - moment).total_seconds() / 3600))
    return _(
        "This would pass your daily spending limit of {limit}: {left} is left today and this "
        "needs about {needed}. The limit resets at 00:00 UTC (in about {hours} h). "
        "Change it with /limit."
    ).format(
        limit=format_money(limit_micros),
        left=format_money(left_micros),
        needed=format_money(needed_micros),
        hours=hours,
    )


def next_utc_midnight(now: datetime | None = None) -> datetime:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


# The three statements every turn runs (its mark, its charges, its end) go to asyncpg directly:
# one round trip each instead of BEGIN, the statement and COMMIT or ROLLBACK.
_TURN_MARK = "SELECT COALESCE(MAX(id), 0) FROM balance_operations WHERE user_id = $1"
_CHARGED_SINCE = """
    SELECT COALESCE(SUM(-amount_micros), 0) FROM balance_operations
    WHERE user_id = $1 AND kind = 'charge' AND id > $2
"""
_TURN_END = """
    WITH spent AS (
        SELECT COALESCE(SUM(-amount_micros), 0) AS micros FROM balance_operations
        WHERE user_id = $1 AND kind = 'charge' AND id > $2
    ), claimed AS (
        UPDATE users SET low_balance_notified = true
        WHERE id = $1 AND NOT low_balance_notified
          AND balance_micros - held_micros < $3 AND (SELECT micros FROM spent) > 0
        RETURNING id
    ), rearmed AS (
        -- a top-up lifted the balance above the threshold since: tell them again next time
        -- (exclusive with `claimed`, so the row is updated at most once)
        UPDATE users SET low_balance_notified = false
        WHERE id = $1 AND low_balance_notified AND balance_micros - held_micros >= $3
        RETURNING id
    )
    SELECT u.receipts, u.balance_micros - u.held_micros AS available,
           (SELECT micros FROM spent) AS charged,
           EXISTS (SELECT 1 FROM claimed) AS low_balance,
           EXISTS (SELECT 1 FROM rearmed) AS rearmed
    FROM users u WHERE u.id = $1
"""


class ControlsService:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, low_balance_micros: int
    ) -> None:
        self._sessionmaker = sessionmaker
        self._sql = DirectSQL.of(sessionmaker)
        self._low = low_balance_micros

    async def set_daily_limit(self, user_id: int, limit_micros: int | None) -> DailyLimit:
        if limit_micros is not None and not 0 < limit_micros <= MAX_DAILY_LIMIT_MICROS:
            raise ValueError("a daily limit is more than 0 and at most 10000 USD")
        async with self._sessionmaker() as session:
            await session.execute(
                text("UPDATE users SET daily_limit_micros = :limit WHERE id = :id"),
                {"limit": limit_micros, "id": user_id},
            )
            await session.commit()
        return await self.daily_limit(user_id)

    async def daily_limit(self, user_id: int) -> DailyLimit:
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT daily_limit_micros, held_micros, ("
                        + SPENT_TODAY_SQL.format(user=":id")
                        + ") AS spent FROM users WHERE id = :id"
                    ),
                    {"id": user_id},
                )
            ).one()
        return DailyLimit(
            limit_micros=row.daily_limit_micros,
            spent_micros=int(row.spent),
            held_micros=int(row.held_micros),
            resets_at=next_utc_midnight(),
        )

    async def set_receipts(self, user_id: int, on: bool) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                text("UPDATE users SET receipts = :on WHERE id = :id"), {"on": on, "id": user_id}
            )
            await session.commit()

    async def turn_mark(self, user_id: int) -> int:
        """The user's newest ledger row before a turn; the turn's charges are the ones after."""
        return int(await self._sql.fetchval(_TURN_MARK, user_id) or 0)

    async def charged_since(self, user_id: int, mark: int) -> int:
        """What the ledger charged the user after `mark` (a turn's charges so far)."""
        return int(await self._sql.fetchval(_CHARGED_SINCE, user_id, mark) or 0)

    async def turn_end(self, user_id: int, mark: int) -> TurnEnd:
        row = await self._sql.fetchrow(_TURN_END, user_id, mark, self._low)
        if row is None:
            raise LookupError(f"no user {user_id}")
        return TurnEnd(
            charged_micros=int(row["charged"]),
            available_micros=int(row["available"]),
            receipts=bool(row["receipts"]),
            low_balance=bool(row["low_balance"]),
        )
