"""Billing test helpers: users made with plain INSERTs, balances read from the tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.session import create_engine, create_sessionmaker
from bot.services.ledger import CallRecord, Ledger
from bot.services.usage import UsageReports

HOLD_TTL = timedelta(minutes=15)


@pytest.fixture
def usage(sessionmaker: async_sessionmaker[AsyncSession]) -> UsageReports:
    return UsageReports(sessionmaker)


@pytest.fixture
def billing(sessionmaker: async_sessionmaker[AsyncSession]) -> Ledger:
    return Ledger(sessionmaker, markup=Decimal("1.0"), hold_ttl=HOLD_TTL)


async def create_user(
    sessionmaker: async_sessionmaker[AsyncSession], user_id: int, username: str | None = None
) -> None:
    async with sessionmaker() as session:
        await session.execute(
            text("INSERT INTO users (id, username, first_name) VALUES (:id, :username, 'Test')"),
            {"id": user_id, "username": username or f"user{user_id}"},
        )
        await session.commit()


async def funded_user(
    sessionmaker: async_sessionmaker[AsyncSession],
    billing: Ledger,
    user_id: int,
    balance_micros: int,
) -> None:
    await create_user(sessionmaker, user_id)
    await billing.topup(user_id, balance_micros, key=f"topup:test:{user_id}")


@dataclass(frozen=True)
class Snapshot:
    balance: int
    held: int
    ledger_sum: int
    ledger_rows: int
    open_holds_sum: int
    open_holds: int
    charged_sum: int


async def snapshot(sessionmaker: async_sessionmaker[AsyncSession], user_id: int) -> Snapshot:
    async with sessionmaker() as session:
        row = (
            await session.execute(
                text(
                    """
                    SELECT u.balance_micros, u.held_micros,
                      (SELECT COALESCE(SUM(amount_micros), 0) FROM balance_operations
                        WHERE user_id = u.id) AS ledger_sum,
                      (SELECT COUNT(*) FROM balance_operations WHERE user_id = u.id) AS rows,
                      (SELECT COALESCE(SUM(amount_micros), 0) FROM balance_holds
                        WHERE user_id = u.id AND status = 'held') AS open_sum,
                      (SELECT COUNT(*) FROM balance_holds
                        WHERE user_id = u.id AND status = 'held') AS open_count,
                      (SELECT COALESCE(SUM(charged_micros), 0) FROM api_calls
                        WHERE user_id = u.id) AS charged_sum
                    FROM users u WHERE u.id = :id
                    """
                ),
                {"id": user_id},
            )
        ).one()
    return Snapshot(*(int(value) for value in row))


def image_call(
    user_id: int,
    tool_use_id: str,
    *,
    status: str = "ok",
    cost: int = 134_000,
) -> CallRecord:
    return CallRecord(
        user_id=user_id,
        provider="google",
        model="gemini-3-pro-image",
        purpose="generate_image",
        status=status,  # type: ignore[arg-type]
        provider_cost_micros=cost,
        price_version="google-2026-11",
        tool_use_id=tool_use_id,
        image_count=1 if status == "ok" else 0,
        image_size="2K",
        error=None if status == "ok" else "provider failed",
        charge_key=f"img:{tool_use_id}",
    )


@pytest.fixture
async def busy_sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions for hundreds of concurrent tasks: a bounded pool (the test server allows 100
    connections), so tasks queue for a connection the way the bot's do."""
    engine = create_engine(database_url, pool_size=60, max_overflow=0)
    yield create_sessionmaker(engine)
    await engine.dispose()
