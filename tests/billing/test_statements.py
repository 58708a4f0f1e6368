"""The two single statements of the hot path (HOLD, CAPTURE), run directly on asyncpg."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL, UniqueViolation
from bot.services.ledger import Ledger
from bot.services.ledger.statements import CAPTURE, HOLD, capture_arguments
from tests.billing.conftest import HOLD_TTL, create_user, funded_user, image_call, snapshot

Sessions = async_sessionmaker[AsyncSession]


async def test_hold_reserves_and_records_in_one_statement(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    sql = DirectSQL.of(sessionmaker)
    hold_id = await sql.fetchval(HOLD, 1, 200_000, "img:direct", "generate_image", HOLD_TTL, True)
    assert hold_id is not None
    snap = await snapshot(sessionmaker, 1)
    assert (snap.held, snap.open_holds_sum, snap.open_holds) == (200_000, 200_000, 1)


async def test_hold_changes_nothing_without_the_balance_or_the_user(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 100_000)
    sql = DirectSQL.of(sessionmaker)
    assert await sql.fetchval(HOLD, 1, 100_001, "img:much", None, HOLD_TTL, True) is None
    assert await sql.fetchval(HOLD, 404, 1, "img:nobody", None, HOLD_TTL, True) is None
    snap = await snapshot(sessionmaker, 1)
    assert (snap.held, snap.open_holds) == (0, 0)


async def test_hold_with_a_used_key_is_a_unique_violation_and_changes_nothing(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    sql = DirectSQL.of(sessionmaker)
    await sql.fetchval(HOLD, 1, 100_000, "img:same", None, HOLD_TTL, True)
    with pytest.raises(UniqueViolation):
        await sql.fetchval(HOLD, 1, 100_000, "img:same", None, HOLD_TTL, True)
    assert (await snapshot(sessionmaker, 1)).held == 100_000


async def test_capture_closes_records_moves_and_posts_in_one_statement(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    hold = await billing.hold(1, 200_000, key="img:cap1")
    sql = DirectSQL.of(sessionmaker)
    call = image_call(1, "cap1", cost=134_000)
    row = await sql.fetchrow(CAPTURE, *capture_arguments(call, hold.id, 200_000, 134_000, hold.key))
    assert row is not None and row["balance_micros"] == 366_000
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.ledger_sum, snap.charged_sum) == (
        366_000,
        0,
        366_000,
        134_000,
    )


async def test_capture_changes_nothing_above_the_hold_or_on_a_closed_hold(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    hold = await billing.hold(1, 100_000, key="img:cap2")
    sql = DirectSQL.of(sessionmaker)
    call = image_call(1, "cap2", cost=134_000)
    above = capture_arguments(call, hold.id, 100_000, 134_000, hold.key)
    assert await sql.fetchrow(CAPTURE, *above) is None
    fits = capture_arguments(call, hold.id, 100_000, 100_000, hold.key)
    assert await sql.fetchrow(CAPTURE, *fits) is not None
    assert await sql.fetchrow(CAPTURE, *fits) is None
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.ledger_rows) == (400_000, 0, 2)


async def test_capture_with_a_used_charge_key_is_a_unique_violation(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await create_user(sessionmaker, 1)
    await billing.topup(1, 500_000, key="topup:used")
    hold = await billing.hold(1, 100_000, key="img:cap3")
    sql = DirectSQL.of(sessionmaker)
    call = image_call(1, "cap3", cost=50_000)
    with pytest.raises(UniqueViolation):
        await sql.fetchrow(
            CAPTURE, *capture_arguments(call, hold.id, 100_000, 50_000, "topup:used")
        )
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.open_holds) == (500_000, 100_000, 1)
