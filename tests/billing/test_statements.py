"""The two single statements of the hot path (HOLD, CAPTURE), run directly on asyncpg, and
CAPTURE against the transactional settlement it stands in for."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL, UniqueViolation
from bot.services.ledger import Ledger
from bot.services.ledger.settle import settle_locked
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


async def ledger_state(sessionmaker: Sessions, user_id: int) -> dict[str, object]:
    """Everything a settlement wrote for `user_id`, without ids, times or the user's own id."""
    queries = {
        "user": "SELECT balance_micros, held_micros FROM users WHERE id = :id",
        "holds": "SELECT amount_micros, status, captured_micros, settled_at IS NOT NULL"
        " FROM balance_holds WHERE user_id = :id ORDER BY id",
        "calls": "SELECT to_jsonb(c) - 'id' - 'user_id' - 'created_at' FROM api_calls c"
        " WHERE user_id = :id ORDER BY id",
        "ledger": "SELECT kind, amount_micros, balance_after_micros, description,"
        " api_call_id IS NOT NULL, split_part(idempotency_key, ':', 1)"
        " FROM balance_operations WHERE user_id = :id ORDER BY id",
    }
    async with sessionmaker() as session:
        return {
            name: [tuple(row) for row in await session.execute(text(query), {"id": user_id})]
            for name, query in queries.items()
        }


@pytest.mark.parametrize("cost", [1, 134_000, 200_000])
async def test_the_one_statement_capture_and_the_transaction_write_the_same_ledger(
    sessionmaker: Sessions, billing: Ledger, cost: int
) -> None:
    # The ledger captures a charge that fits its hold with CAPTURE (1 round trip instead of 7);
    # anything else takes settle_locked's transaction. Both must leave the same rows.
    for user in (1, 2):
        await funded_user(sessionmaker, billing, user, 500_000)
    fast_hold = await billing.hold(1, 200_000, key="img:fast")
    slow_hold = await billing.hold(2, 200_000, key="img:slow")
    fast_call = replace(image_call(1, "same", cost=cost), charge_key="img:fast-charge")
    slow_call = replace(image_call(2, "same", cost=cost), charge_key="img:slow-charge")

    arguments = capture_arguments(fast_call, fast_hold.id, 200_000, cost, "img:fast-charge")
    row = await DirectSQL.of(sessionmaker).fetchrow(CAPTURE, *arguments)
    async with sessionmaker() as session:
        settlement = await settle_locked(session, slow_hold, slow_call, cost)
        await session.commit()

    assert row is not None and settlement.applied
    assert (row["balance_micros"], settlement.balance_micros) == (500_000 - cost,) * 2
    fast, slow = await ledger_state(sessionmaker, 1), await ledger_state(sessionmaker, 2)
    assert fast == slow
    assert fast["user"] == [(500_000 - cost, 0)]
    assert fast["holds"] == [(200_000, "captured", cost, True)]
