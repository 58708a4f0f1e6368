"""The metered path on the real ledger: hold, call, one api_calls row, capture or release."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.ledger import InsufficientBalance, Ledger, Settlement
from bot.services.metered import Meter, MeteredCalls, Report, stopped_report
from tests.billing.conftest import funded_user, snapshot

Sessions = async_sessionmaker[AsyncSession]


class FixedCost:
    """Reads any result as a call that cost `cost`; any failure as an error."""

    def __init__(self, cost: int) -> None:
        self.cost = cost

    def reported(self, result: str) -> Report:
        return Report(provider_cost_micros=self.cost, input_tokens=10, output_tokens=len(result))

    def failed(self, exc: BaseException) -> Report:
        return Report(status="error", error=type(exc).__name__)


def meter(key: str, worst: int = 100_000) -> Meter:
    return Meter(
        user_id=1,
        provider="anthropic",
        model="claude-sonnet-5-5",
        purpose="chat",
        worst_case_micros=worst,
        key=key,
    )


async def answer() -> str:
    return "answer"


async def broken() -> str:
    raise ConnectionError


async def calls(sessionmaker: Sessions) -> list[dict[str, object]]:
    async with sessionmaker() as session:
        result = await session.execute(text("SELECT * FROM api_calls ORDER BY id"))
        return [dict(row) for row in result.mappings()]


async def test_a_call_is_held_recorded_once_and_captured(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    done = await MeteredCalls(billing).call(meter("m:1"), answer, FixedCost(40_000))
    assert (done.value, done.settlement.charged_micros) == ("answer", 40_000)
    [row] = await calls(sessionmaker)
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 10, 6)
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.open_holds) == (460_000, 0, 0)


async def test_a_failed_call_is_recorded_released_and_raised(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    with pytest.raises(ConnectionError):
        await MeteredCalls(billing).call(meter("m:2"), broken, FixedCost(40_000))
    [row] = await calls(sessionmaker)
    assert (row["status"], row["error"], row["charged_micros"]) == ("error", "ConnectionError", 0)
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.open_holds) == (500_000, 0, 0)


async def test_no_call_is_made_without_the_worst_case_available(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 50_000)
    made: list[str] = []

    async def tracked() -> str:
        made.append("called")
        return "x"

    with pytest.raises(InsufficientBalance):
        await MeteredCalls(billing).call(meter("m:3"), tracked, FixedCost(1))
    assert made == []
    assert await calls(sessionmaker) == []


async def test_a_cancelled_call_is_still_recorded_and_released(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    started = asyncio.Event()

    async def hangs() -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    task = asyncio.create_task(MeteredCalls(billing).call(meter("m:4"), hangs, FixedCost(1)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [row] = await calls(sessionmaker)
    assert (row["status"], row["error"]) == ("error", "CancelledError")
    assert (await snapshot(sessionmaker, 1)).open_holds == 0


class StoppedAtCost:
    """Reads a failure as a call the person stopped, which the provider may bill `cost` for."""

    def __init__(self, cost: int) -> None:
        self.cost = cost

    def reported(self, result: str) -> Report:
        return Report(provider_cost_micros=self.cost)

    def failed(self, exc: BaseException) -> Report:
        return stopped_report(self.cost, "v1")


async def test_a_stopped_call_keeps_its_possible_cost_and_charges_nothing(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    started = asyncio.Event()

    async def hangs() -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    task = asyncio.create_task(
        MeteredCalls(billing).call(meter("m:stop"), hangs, StoppedAtCost(40_000))
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [row] = await calls(sessionmaker)
    assert (row["status"], row["provider_cost_micros"], row["charged_micros"]) == (
        "cancelled",
        40_000,
        0,
    )
    assert row["provider_cost_unknown"] is True
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.held, snap.open_holds) == (500_000, 0, 0)


async def test_the_attached_row_and_the_charge_commit_together(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await funded_user(sessionmaker, billing, 1, 500_000)
    metered = MeteredCalls(billing)
    _, pending = await metered.run(meter("m:5"), answer, FixedCost(40_000))

    async def failing_row(session: AsyncSession, settlement: Settlement) -> int:
        raise RuntimeError("the row could not be written")

    with pytest.raises(RuntimeError):
        await pending.capture(attach=failing_row)
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.ledger_rows, snap.open_holds) == (500_000, 1, 1)
    assert await calls(sessionmaker) == []

    async def row(session: AsyncSession, settlement: Settlement) -> int:
        await session.execute(
            text("INSERT INTO conversations (user_id, chat_id) VALUES (1, :charged)"),
            {"charged": settlement.charged_micros},
        )
        return 7

    settlement = await pending.capture(attach=row)
    assert (settlement.charged_micros, settlement.attached_id) == (40_000, 7)
    async with sessionmaker() as session:
        chat_ids = (await session.execute(text("SELECT chat_id FROM conversations"))).scalars()
        assert list(chat_ids) == [40_000]
    snap = await snapshot(sessionmaker, 1)
    assert (snap.balance, snap.open_holds) == (460_000, 0)
