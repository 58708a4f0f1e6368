"""The person's daily spend limit, enforced by the hold itself on the real database."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.controls import ControlsService, daily_limit_reply
from bot.services.ledger import DailyLimitReached, InsufficientBalance, Ledger
from tests.billing.conftest import HOLD_TTL, funded_user, image_call, snapshot

Sessions = async_sessionmaker[AsyncSession]
USER = 5151


@pytest.fixture
def controls(sessionmaker: Sessions) -> ControlsService:
    return ControlsService(sessionmaker, low_balance_micros=200_000)


async def test_a_hold_past_the_daily_limit_is_refused_with_what_is_left(
    sessionmaker: Sessions, billing: Ledger, controls: ControlsService
) -> None:
    await funded_user(sessionmaker, billing, USER, 5_000_000)
    await controls.set_daily_limit(USER, 300_000)

    hold = await billing.hold(USER, 134_000, key="img:1")
    await billing.settle(hold, image_call(USER, "1"))  # charged 0.134 today
    open_hold = await billing.hold(USER, 100_000, key="img:2")  # 0.066 left after this
    with pytest.raises(DailyLimitReached) as raised:
        await billing.hold(USER, 100_000, key="img:3")

    assert isinstance(raised.value, InsufficientBalance)
    assert (raised.value.limit_micros, raised.value.available_micros) == (300_000, 66_000)
    reply = daily_limit_reply(100_000, 300_000, 66_000)
    assert "daily spending limit of $0.30" in reply and "$0.0660 is left" in reply
    assert "00:00 UTC" in reply
    limit = await controls.daily_limit(USER)
    assert (limit.spent_micros, limit.held_micros, limit.left_micros) == (134_000, 100_000, 66_000)

    await billing.release(open_hold, reason="test")
    await billing.hold(USER, 100_000, key="img:4")  # fits again
    await controls.set_daily_limit(USER, None)
    await billing.hold(USER, 2_000_000, key="big")  # no limit: only the balance counts
    state = await snapshot(sessionmaker, USER)
    assert state.held == state.open_holds_sum == 2_100_000


async def test_an_empty_balance_is_insufficient_not_a_limit(
    sessionmaker: Sessions, billing: Ledger, controls: ControlsService
) -> None:
    await funded_user(sessionmaker, billing, USER, 50_000)
    await controls.set_daily_limit(USER, 1_000_000)
    with pytest.raises(InsufficientBalance) as raised:
        await billing.hold(USER, 100_000, key="h")
    assert not isinstance(raised.value, DailyLimitReached)


async def test_concurrent_holds_never_pass_the_daily_limit(
    busy_sessionmaker: Sessions, controls: ControlsService
) -> None:
    billing = Ledger(busy_sessionmaker, markup=Decimal(1), hold_ttl=HOLD_TTL)
    await funded_user(busy_sessionmaker, billing, USER, 50_000_000)
    await ControlsService(busy_sessionmaker, low_balance_micros=0).set_daily_limit(USER, 1_000_000)

    async def try_hold(n: int) -> bool:
        try:
            await billing.hold(USER, 134_000, key=f"c:{n}")
        except DailyLimitReached:
            return False
        return True

    placed = await asyncio.gather(*(try_hold(n) for n in range(50)))

    assert sum(placed) == 1_000_000 // 134_000  # 7
    assert (await snapshot(busy_sessionmaker, USER)).held == 7 * 134_000


async def test_the_low_balance_notice_is_claimed_once_per_crossing(
    sessionmaker: Sessions, billing: Ledger, controls: ControlsService
) -> None:
    await funded_user(sessionmaker, billing, USER, 300_000)
    mark = await controls.turn_mark(USER)
    hold = await billing.hold(USER, 134_000, key="img:a")
    await billing.settle(hold, image_call(USER, "a"))  # 0.166 left: below 0.20

    first = await controls.turn_end(USER, mark)
    again = await controls.turn_end(USER, mark)

    assert (first.charged_micros, first.available_micros, first.low_balance) == (
        134_000,
        166_000,
        True,
    )
    assert again.low_balance is False  # told once
    await billing.topup(USER, 100_000, key="topup:more")  # 0.266: above again
    assert (await controls.turn_end(USER, await controls.turn_mark(USER))).low_balance is False
    mark = await controls.turn_mark(USER)
    hold = await billing.hold(USER, 134_000, key="img:b")
    await billing.settle(hold, image_call(USER, "b"))  # 0.132: crossed again
    assert (await controls.turn_end(USER, mark)).low_balance is True
    receipts_off = await controls.turn_end(USER, mark)
    assert receipts_off.receipts is False and receipts_off.charged_micros == 134_000
