"""Ledger writes, holds and settlements, one behaviour at a time, on real Postgres."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from bot.services.ledger import (
    CallRecord,
    HoldNotOpenError,
    IdempotencyConflictError,
    InsufficientBalance,
    Ledger,
    UnknownUserError,
)
from bot.services.usage import UsageReports
from tests.billing.conftest import HOLD_TTL, create_user, funded_user, image_call, snapshot

Sessions = async_sessionmaker[AsyncSession]


async def test_starter_balance_is_credited_once(
    usage: UsageReports, sessionmaker: Sessions, billing: Ledger
) -> None:
    await create_user(sessionmaker, 1)
    assert await billing.credit_starter(1, 500_000) is True
    assert await billing.credit_starter(1, 500_000) is False
    view = await billing.get_balance(1)
    assert (view.balance_micros, view.held_micros, view.available_micros) == (500_000, 0, 500_000)
    ops = await billing.recent_operations(1)
    assert [(op.kind, op.amount_micros, op.balance_after_micros) for op in ops] == [
        ("starter", 500_000, 500_000)
    ]
    assert await usage.reconcile() == []


async def test_topup_applies_once_per_key_and_returns_the_balance(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await create_user(sessionmaker, 1)
    assert await billing.topup(1, 2_000_000, key="topup:admin:7:1", admin_user_id=7) == 2_000_000
    assert await billing.topup(1, 2_000_000, key="topup:admin:7:1", admin_user_id=7) == 2_000_000
    assert await billing.topup(1, 1_000_000, key="topup:admin:7:2", admin_user_id=7) == 3_000_000
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.ledger_sum, snap.ledger_rows) == (3_000_000, 3_000_000, 2)


async def test_topup_for_an_unknown_user_is_refused(usage: UsageReports, billing: Ledger) -> None:
    with pytest.raises(UnknownUserError):
        await billing.topup(404, 1_000, key="topup:x")
    with pytest.raises(UnknownUserError):
        await billing.hold(404, 1_000, key="hold:x")
    with pytest.raises(UnknownUserError):
        await billing.get_balance(404)
    assert await usage.user_overview(404) is None


async def test_negative_adjustment_needs_available_balance(
    usage: UsageReports, sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 1_000_000)
    await billing.hold(1, 600_000, key="hold:1")
    with pytest.raises(InsufficientBalance) as raised:
        await billing.adjust(1, -500_000, key="adj:1", admin_user_id=9, description="refund")
    assert (raised.value.needed_micros, raised.value.available_micros) == (500_000, 400_000)
    assert "$0.50" in str(raised.value)
    assert "$0.40" in str(raised.value)
    balance = await billing.adjust(1, -400_000, key="adj:2", admin_user_id=9, description="fix")
    assert balance == 600_000
    assert await billing.adjust(1, 50, key="adj:3", admin_user_id=9, description="+") == 600_050
    assert await billing.adjust(1, 50, key="adj:3", admin_user_id=9, description="+") == 600_050
    view = await billing.get_balance(1)
    assert (view.balance_micros, view.held_micros, view.available_micros) == (600_050, 600_000, 50)
    assert await usage.reconcile() == []


async def test_hold_reserves_available_balance_without_a_ledger_row(
    usage: UsageReports, sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 300_000)
    hold = await billing.hold(1, 134_000, key="img:a")
    assert (hold.user_id, hold.amount_micros, hold.key) == (1, 134_000, "img:a")
    again = await billing.hold(1, 134_000, key="img:a")
    assert again == hold
    await billing.hold(1, 134_000, key="img:b")
    with pytest.raises(InsufficientBalance) as raised:
        await billing.hold(1, 134_000, key="img:c")
    assert (raised.value.needed_micros, raised.value.available_micros) == (134_000, 32_000)
    assert str(raised.value) == "Insufficient balance: this needs $0.1340, available $0.0320."
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.ledger_rows, snap.open_holds) == (300_000, 268_000, 1, 2)
    assert await usage.reconcile() == []


async def test_hold_key_of_another_user_is_refused(sessionmaker: Sessions, billing: Ledger) -> None:
    await funded_user(sessionmaker, billing, 1, 300_000)
    await funded_user(sessionmaker, billing, 2, 300_000)
    await billing.hold(1, 1_000, key="img:shared")
    with pytest.raises(IdempotencyConflictError):
        await billing.hold(2, 1_000, key="img:shared")
    assert (await billing.get_balance(2)).held_micros == 0


async def test_settle_ok_captures_the_cost_and_frees_the_rest(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 1_000_000)
    hold = await billing.hold(1, 300_000, key="llm:hold:1")
    call = CallRecord(
        user_id=1,
        provider="anthropic",
        model="claude-sonnet-5-5",
        purpose="chat",
        status="ok",
        provider_cost_micros=123_457,
        price_version="anthropic-2026-11",
        input_tokens=1000,
        output_tokens=12_000,
        charge_key="llm:msg_1",
    )
    settlement = await billing.settle(hold, call)
    assert settlement.applied
    assert (settlement.charged_micros, settlement.provider_cost_micros) == (123_457, 123_457)
    assert settlement.balance_micros == 876_543
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.ledger_sum, snap.open_holds) == (876_543, 0, 876_543, 0)
    async with sessionmaker() as session:
        op = (
            await session.execute(
                text(
                    "SELECT kind, amount_micros, api_call_id FROM balance_operations "
                    "WHERE idempotency_key = 'llm:msg_1'"
                )
            )
        ).one()
        hold_row = (
            await session.execute(
                text("SELECT status, captured_micros FROM balance_holds WHERE id = :id"),
                {"id": hold.id},
            )
        ).one()
    assert tuple(op) == ("charge", -123_457, settlement.api_call_id)
    assert tuple(hold_row) == ("captured", 123_457)


@pytest.mark.parametrize("status", ["error", "blocked"])
async def test_failed_or_blocked_calls_cost_nothing(
    usage: UsageReports, sessionmaker: Sessions, billing: Ledger, status: str
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    hold = await billing.hold(1, 134_000, key="img:t1")
    settlement = await billing.settle(hold, image_call(1, "t1", status=status, cost=134_000))
    assert settlement.charged_micros == 0
    assert settlement.balance_micros == 500_000
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.ledger_rows, snap.charged_sum) == (500_000, 0, 1, 0)
    async with sessionmaker() as session:
        stored = (
            await session.execute(
                text("SELECT status, charged_micros, provider_cost_micros FROM api_calls")
            )
        ).one()
    assert tuple(stored) == (status, 0, 134_000)
    assert await usage.reconcile() == []


async def test_markup_is_charged_and_both_amounts_are_stored(
    usage: UsageReports,
    sessionmaker: Sessions,
) -> None:
    billing = Ledger(sessionmaker, markup=Decimal("1.5"), hold_ttl=HOLD_TTL)
    await funded_user(sessionmaker, billing, 1, 1_000_000)
    hold = await billing.hold(1, billing.user_price(134_000), key="img:m")
    assert hold.amount_micros == 201_000
    settlement = await billing.settle(hold, image_call(1, "m"))
    assert (settlement.charged_micros, settlement.provider_cost_micros) == (201_000, 134_000)
    assert settlement.balance_micros == 799_000
    async with sessionmaker() as session:
        stored = (
            await session.execute(
                text("SELECT provider_cost_micros, charged_micros FROM api_calls")
            )
        ).one()
    assert tuple(stored) == (134_000, 201_000)
    assert await usage.reconcile() == []


async def test_a_charge_above_the_hold_is_taken_from_the_available_balance_and_logged(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 1_000_000)
    hold = await billing.hold(1, 100_000, key="img:cap")
    with capture_logs() as logs:
        settlement = await billing.settle(hold, image_call(1, "cap", cost=134_000))
    assert (settlement.charged_micros, settlement.uncollected_micros) == (134_000, 0)
    assert any(entry["event"] == "charge_above_hold" for entry in logs)
    assert (await snapshot(sessionmaker, 1)).balance == 866_000


async def test_a_charge_beyond_the_balance_records_the_shortfall(
    usage: UsageReports, sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 120_000)
    hold = await billing.hold(1, 100_000, key="img:short")
    settlement = await billing.settle(hold, image_call(1, "short", cost=134_000))
    assert (settlement.charged_micros, settlement.uncollected_micros) == (120_000, 14_000)
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.open_holds) == (0, 0, 0)
    async with sessionmaker() as session:
        stored = (
            await session.execute(
                text(
                    "SELECT provider_cost_micros, charged_micros, uncollected_micros FROM api_calls"
                )
            )
        ).one()
    assert tuple(stored) == (134_000, 120_000, 14_000)
    assert await usage.reconcile() == []


async def test_settling_twice_changes_nothing(sessionmaker: Sessions, billing: Ledger) -> None:
    await funded_user(sessionmaker, billing, 1, 1_000_000)
    hold = await billing.hold(1, 134_000, key="img:twice")
    first = await billing.settle(hold, image_call(1, "twice"))
    second = await billing.settle(hold, image_call(1, "twice"))
    assert first.applied
    assert not second.applied
    assert (second.charged_micros, second.api_call_id) == (134_000, first.api_call_id)
    assert second.balance_micros == 866_000
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.ledger_rows, snap.charged_sum) == (866_000, 2, 134_000)
    with pytest.raises(HoldNotOpenError):
        await billing.hold(1, 134_000, key="img:twice")


async def test_a_used_charge_key_releases_the_new_hold_without_charging(
    usage: UsageReports, sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 1_000_000)
    first = await billing.hold(1, 134_000, key="hold:1")
    await billing.settle(first, image_call(1, "same"))
    second = await billing.hold(1, 134_000, key="hold:2")
    settlement = await billing.settle(second, image_call(1, "same"))
    assert not settlement.applied
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.ledger_rows, snap.charged_sum) == (866_000, 0, 2, 134_000)
    assert await usage.reconcile() == []


async def test_release_frees_the_hold_once(sessionmaker: Sessions, billing: Ledger) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    hold = await billing.hold(1, 134_000, key="img:r")
    assert await billing.release(hold, reason="cancelled") is True
    assert await billing.release(hold, reason="cancelled") is False
    settlement = await billing.settle(hold, image_call(1, "r"))
    assert (settlement.applied, settlement.charged_micros) == (False, 0)
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.ledger_rows) == (500_000, 0, 1)


async def test_sweeper_expires_only_stale_holds_and_capture_cannot_follow(
    usage: UsageReports, sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    hold = await billing.hold(1, 134_000, key="img:stale")
    assert await billing.expire_stale_holds() == 0
    later = datetime.now(UTC) + HOLD_TTL + timedelta(seconds=5)
    assert await billing.expire_stale_holds(now=later) == 1
    assert await billing.expire_stale_holds(now=later) == 0
    assert (await billing.get_balance(1)).held_micros == 0
    settlement = await billing.settle(hold, image_call(1, "stale"))
    assert (settlement.applied, settlement.charged_micros) == (False, 0)
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.ledger_rows, snap.charged_sum) == (500_000, 0, 1, 0)
    assert await usage.reconcile() == []


async def test_run_sweeper_expires_holds_until_stopped(
    sessionmaker: Sessions,
) -> None:
    billing = Ledger(sessionmaker, markup=Decimal(1), hold_ttl=timedelta(0))
    await funded_user(sessionmaker, billing, 1, 500_000)
    await billing.hold(1, 134_000, key="img:sweep")
    stop = asyncio.Event()
    sweeper = asyncio.create_task(billing.run_sweeper(0.01, stop))
    for _ in range(200):
        if (await billing.get_balance(1)).held_micros == 0:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(sweeper, timeout=5)
    assert (await billing.get_balance(1)).held_micros == 0


async def test_the_ledger_rejects_edits(sessionmaker: Sessions, billing: Ledger) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    async with sessionmaker() as session:
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(text("UPDATE balance_operations SET amount_micros = 1"))


async def test_reads_for_balance_usage_user_and_stats(
    usage: UsageReports, sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 1_000_000)
    await create_user(sessionmaker, 2)
    for n in range(3):
        hold = await billing.hold(1, 134_000, key=f"img:u{n}")
        await billing.settle(hold, image_call(1, f"u{n}", status="ok" if n else "error"))
    chat_hold = await billing.hold(1, 50_000, key="llm:h")
    await billing.settle(
        chat_hold,
        CallRecord(
            user_id=1,
            provider="anthropic",
            model="claude-sonnet-5-5",
            purpose="chat",
            status="ok",
            provider_cost_micros=12_345,
            charge_key="llm:m",
        ),
    )
    summary = await usage.usage_summary(1)
    assert [(u.purpose, u.calls, u.charged_micros, u.images) for u in summary.lines] == [
        ("chat", 1, 12_345, 0),
        ("generate_image", 3, 268_000, 2),
    ]
    assert summary.total_charged_micros == 280_345
    ops = await billing.recent_operations(1, limit=2)
    assert [(op.kind, op.amount_micros, op.balance_after_micros) for op in ops] == [
        ("charge", -12_345, 719_655),
        ("charge", -134_000, 732_000),
    ]
    overview = await usage.user_overview(1)
    assert overview is not None
    assert (overview.balance_micros, overview.total_topups_micros) == (719_655, 1_000_000)
    assert (overview.total_spent_micros, overview.total_provider_cost_micros) == (
        280_345,
        414_345,
    )
    assert (overview.api_calls, overview.images_generated) == (4, 2)
    stats = await usage.global_stats()
    assert stats.users == 2
    assert [(w.label, w.calls, w.active_users, w.charged_micros) for w in stats.windows] == [
        ("today", 4, 1, 280_345),
        ("7 days", 4, 1, 280_345),
        ("30 days", 4, 1, 280_345),
    ]
    assert [w.provider_cost_micros for w in stats.windows] == [414_345] * 3
