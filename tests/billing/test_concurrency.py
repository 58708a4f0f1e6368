"""The balance under heavy concurrency: many tasks, each with its own session, real Postgres."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.ledger import Hold, InsufficientBalance, Ledger
from bot.services.pricing import apply_markup
from bot.services.usage import UsageReports
from tests.billing.conftest import HOLD_TTL, funded_user, image_call, snapshot

Sessions = async_sessionmaker[AsyncSession]
IMAGE = 134_000
START = 5_000_000


class AvailableMonitor:
    """Polls the user's row while the load runs and remembers the lowest values seen."""

    def __init__(self, sessionmaker: Sessions, user_id: int) -> None:
        self._sessionmaker = sessionmaker
        self._user_id = user_id
        self.lowest_balance = START
        self.lowest_available = START
        self.samples = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            async with self._sessionmaker() as session:
                balance, held = (
                    await session.execute(
                        text("SELECT balance_micros, held_micros FROM users WHERE id = :id"),
                        {"id": self._user_id},
                    )
                ).one()
            self.lowest_balance = min(self.lowest_balance, balance)
            self.lowest_available = min(self.lowest_available, balance - held)
            self.samples += 1
            await asyncio.sleep(0)

    def stop(self) -> None:
        self._stop.set()


async def _try_hold(billing: Ledger, user_id: int, key: str, amount: int) -> Hold | None:
    try:
        return await billing.hold(user_id, amount, key=key)
    except InsufficientBalance:
        return None


@pytest.mark.parametrize("run", range(5))
async def test_200_concurrent_image_holds_against_5_dollars(
    usage: UsageReports, busy_sessionmaker: Sessions, run: int
) -> None:
    billing = Ledger(busy_sessionmaker, markup=Decimal(1), hold_ttl=HOLD_TTL)
    user_id = 1000 + run
    await funded_user(busy_sessionmaker, billing, user_id, START)
    monitor = AvailableMonitor(busy_sessionmaker, user_id)
    watching = asyncio.create_task(monitor.run())

    results = await asyncio.gather(
        *(_try_hold(billing, user_id, f"img:{run}:{n}", IMAGE) for n in range(200))
    )
    holds = [hold for hold in results if hold is not None]
    assert len(holds) == 37
    view = await billing.get_balance(user_id)
    assert (view.balance_micros, view.held_micros, view.available_micros) == (
        START,
        37 * IMAGE,
        42_000,
    )

    settlements = await asyncio.gather(
        *(billing.settle(h, image_call(user_id, f"{run}:{h.id}")) for h in holds)
    )
    monitor.stop()
    await watching
    assert all(s.applied and s.charged_micros == IMAGE for s in settlements)
    snap = await snapshot(busy_sessionmaker, user_id)
    assert (snap.balance, snap.held, snap.ledger_sum, snap.open_holds) == (42_000, 0, 42_000, 0)
    assert snap.ledger_rows == 1 + 37
    assert monitor.samples > 0
    assert monitor.lowest_available >= 0
    assert monitor.lowest_balance >= 42_000
    async with busy_sessionmaker() as session:
        lowest_after = await session.scalar(
            text("SELECT MIN(balance_after_micros) FROM balance_operations")
        )
    assert lowest_after == 42_000
    assert await usage.reconcile() == []


async def test_one_topup_key_50_times_concurrently_credits_once(
    usage: UsageReports,
    busy_sessionmaker: Sessions,
) -> None:
    billing = Ledger(busy_sessionmaker, markup=Decimal(1), hold_ttl=HOLD_TTL)
    await funded_user(busy_sessionmaker, billing, 1, 1_000)
    balances = await asyncio.gather(
        *(billing.topup(1, 2_000_000, key="topup:charge_123", admin_user_id=9) for _ in range(50))
    )
    assert set(balances) == {2_001_000}
    snap = await snapshot(busy_sessionmaker, 1)
    assert (snap.balance, snap.ledger_sum, snap.ledger_rows) == (2_001_000, 2_001_000, 2)
    assert await usage.reconcile() == []


async def test_one_hold_and_charge_key_50_times_concurrently_debits_once(
    usage: UsageReports,
    busy_sessionmaker: Sessions,
) -> None:
    billing = Ledger(busy_sessionmaker, markup=Decimal(1), hold_ttl=HOLD_TTL)
    await funded_user(busy_sessionmaker, billing, 1, 1_000_000)

    holds = await asyncio.gather(*(billing.hold(1, IMAGE, key="img:tool_1") for _ in range(50)))
    assert len({hold.id for hold in holds}) == 1
    assert (await billing.get_balance(1)).held_micros == IMAGE

    settlements = await asyncio.gather(
        *(billing.settle(hold, image_call(1, "tool_1")) for hold in holds)
    )
    assert sum(s.applied for s in settlements) == 1
    assert {s.charged_micros for s in settlements} == {IMAGE}
    assert len({s.api_call_id for s in settlements}) == 1
    snap = await snapshot(busy_sessionmaker, 1)
    assert (snap.balance, snap.held, snap.ledger_rows, snap.charged_sum) == (
        1_000_000 - IMAGE,
        0,
        2,
        IMAGE,
    )
    async with busy_sessionmaker() as session:
        calls = await session.scalar(text("SELECT COUNT(*) FROM api_calls"))
    assert calls == 1
    assert await usage.reconcile() == []


async def test_one_charge_key_on_50_holds_concurrently_charges_once(
    usage: UsageReports,
    busy_sessionmaker: Sessions,
) -> None:
    billing = Ledger(busy_sessionmaker, markup=Decimal(1), hold_ttl=HOLD_TTL)
    await funded_user(busy_sessionmaker, billing, 1, 50 * IMAGE)
    holds = [await billing.hold(1, IMAGE, key=f"hold:{n}") for n in range(50)]
    settlements = await asyncio.gather(
        *(billing.settle(hold, image_call(1, "same_tool")) for hold in holds)
    )
    assert sum(s.applied for s in settlements) == 1
    snap = await snapshot(busy_sessionmaker, 1)
    assert (snap.balance, snap.held, snap.open_holds, snap.ledger_rows) == (49 * IMAGE, 0, 0, 2)
    assert snap.charged_sum == IMAGE
    assert await usage.reconcile() == []


@dataclass
class Flow:
    hold_micros: int
    provider_cost: int
    fails: bool
    held: bool = False
    charged: int = 0


async def _hold_then_settle(billing: Ledger, user_id: int, n: int, flow: Flow) -> None:
    hold = await _try_hold(billing, user_id, f"hold:flow:{n}", flow.hold_micros)
    if hold is None:
        return
    flow.held = True
    await asyncio.sleep(random.Random(n).random() / 100)  # the provider call
    call = image_call(
        user_id,
        f"flow{n}",
        status="error" if flow.fails else "ok",
        cost=flow.provider_cost,
    )
    settlement = await billing.settle(hold, call)
    assert settlement.applied
    flow.charged = settlement.charged_micros


@pytest.mark.parametrize("markup", ["1.0", "1.5"])
async def test_200_concurrent_hold_then_settle_flows_with_failures(
    usage: UsageReports, busy_sessionmaker: Sessions, markup: str
) -> None:
    billing = Ledger(busy_sessionmaker, markup=Decimal(markup), hold_ttl=HOLD_TTL)
    start = 25_000_000
    await funded_user(busy_sessionmaker, billing, 1, start)
    rng = random.Random(20261122)
    flows = []
    for _ in range(200):
        max_cost = rng.randint(10_000, 300_000)
        flows.append(
            Flow(
                hold_micros=billing.user_price(max_cost),
                provider_cost=rng.randint(0, max_cost),
                fails=rng.random() < 0.2,
            )
        )

    await asyncio.gather(*(_hold_then_settle(billing, 1, n, f) for n, f in enumerate(flows)))

    held = [f for f in flows if f.held]
    assert len(held) >= start // max(f.hold_micros for f in flows) - 1
    assert any(f.fails for f in held)
    for flow in held:
        expected = 0 if flow.fails else apply_markup(flow.provider_cost, Decimal(markup))
        assert flow.charged == expected
        assert flow.charged <= flow.hold_micros
    captured = sum(f.charged for f in flows)
    snap = await snapshot(busy_sessionmaker, 1)
    assert (snap.open_holds, snap.held) == (0, 0)
    assert snap.balance == start - captured
    assert snap.ledger_sum == snap.balance
    assert snap.charged_sum == captured
    async with busy_sessionmaker() as session:
        failed_charged, over_hold, capture_rows = (
            await session.execute(
                text(
                    "SELECT"
                    " (SELECT COALESCE(SUM(charged_micros), 0) FROM api_calls"
                    "   WHERE status <> 'ok'),"
                    " (SELECT COUNT(*) FROM balance_holds WHERE captured_micros > amount_micros),"
                    " (SELECT COUNT(*) FROM balance_operations WHERE kind = 'charge')"
                )
            )
        ).one()
    assert (failed_charged, over_hold) == (0, 0)
    assert capture_rows == sum(1 for f in flows if f.charged > 0)
    assert await usage.reconcile() == []
