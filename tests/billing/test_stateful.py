"""A Hypothesis state machine drives the billing service and the Stars payments on real Postgres
(Telegram's side played by the fake Bot API server) and compares the database with a plain
in-memory model after every step."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db.session import create_engine, create_sessionmaker
from bot.services.ledger import (
    CallRecord,
    Hold,
    HoldNotOpenError,
    InsufficientBalance,
    Ledger,
)
from bot.services.payments import PaymentsConfig, PaymentService, RefundStatus
from bot.services.pricing import apply_markup
from bot.telegram.stars import TelegramStars
from tests.billing.conftest import HOLD_TTL
from tests.fakes.telegram import FakeTelegram

T = TypeVar("T")
MARKUP = Decimal("1.5")
amounts = st.integers(min_value=1, max_value=2_000_000)
STAR = 13_000
TOKEN = "123456:TEST-fake-token-not-real"
PAYMENTS = PaymentsConfig(star_value_micros=STAR, refund_window=timedelta(days=21))


class LoopThread:
    """An event loop of its own in a helper thread, so the sync state machine can await."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class Env:
    runner: LoopThread
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    billing: Ledger
    payments: PaymentService
    telegram: FakeTelegram
    bot: Bot
    stars: TelegramStars


@dataclass
class ModelPurchase:
    payment_id: int
    credit: int
    status: str = "paid"


@dataclass
class ModelHold:
    id: int
    amount: int
    status: str = "held"


@dataclass
class Model:
    balance: int = 0
    held: int = 0
    holds: dict[str, ModelHold] = field(default_factory=dict)
    topup_keys: list[str] = field(default_factory=list)
    adjust_keys: list[str] = field(default_factory=list)
    charge_keys: list[str] = field(default_factory=list)
    purchases: dict[str, ModelPurchase] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return self.balance - self.held

    def close(self, key: str, status: str) -> None:
        hold = self.holds[key]
        hold.status = status
        self.held -= hold.amount


_STATE_SQL = text(
    """
    SELECT u.balance_micros, u.held_micros,
      (SELECT COALESCE(SUM(amount_micros), 0) FROM balance_operations WHERE user_id = u.id),
      (SELECT COALESCE(SUM(amount_micros), 0) FROM balance_holds
        WHERE user_id = u.id AND status = 'held'),
      (SELECT COUNT(*) FROM admin_balance_mismatches WHERE user_id = u.id),
      (SELECT COALESCE(json_object_agg(idempotency_key, status), '{}'::json)
         FROM balance_holds WHERE user_id = u.id AND idempotency_key NOT LIKE 'stars-refund:%'),
      (SELECT COALESCE(json_object_agg(telegram_payment_charge_id, status), '{}'::json)
         FROM payments WHERE user_id = u.id)
    FROM users u WHERE u.id = :id
    """
)


class BillingMachine(RuleBasedStateMachine):
    env: ClassVar[Env]
    user_ids: ClassVar[itertools.count[int]] = itertools.count(100_000)

    def __init__(self) -> None:
        super().__init__()
        self.user_id = next(self.user_ids)
        self.model = Model()
        self.serial = itertools.count()
        self.run(self._create_user())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.env.runner.run(coro)

    @property
    def billing(self) -> Ledger:
        return self.env.billing

    def key(self, prefix: str) -> str:
        return f"{prefix}:{self.user_id}:{next(self.serial)}"

    async def _create_user(self) -> None:
        async with self.env.sessionmaker() as session:
            await session.execute(
                text("INSERT INTO users (id, first_name) VALUES (:id, 'Model')"),
                {"id": self.user_id},
            )
            await session.commit()

    @rule(amount=amounts)
    def topup(self, amount: int) -> None:
        key = self.key("topup")
        balance = self.run(self.billing.topup(self.user_id, amount, key=key))
        self.model.balance += amount
        self.model.topup_keys.append(key)
        assert balance == self.model.balance

    @precondition(lambda self: self.model.topup_keys)
    @rule(data=st.data(), amount=amounts)
    def topup_again_with_a_used_key(self, data: st.DataObject, amount: int) -> None:
        key = data.draw(st.sampled_from(self.model.topup_keys))
        assert self.run(self.billing.topup(self.user_id, amount, key=key)) == self.model.balance

    @rule(amount=st.integers(min_value=-2_000_000, max_value=2_000_000).filter(bool))
    def adjust(self, amount: int) -> None:
        key = self.key("adjust")
        call = self.billing.adjust(
            self.user_id, amount, key=key, admin_user_id=1, description="model"
        )
        if -amount > self.model.available:
            with pytest.raises(InsufficientBalance) as raised:
                self.run(call)
            assert raised.value.available_micros == self.model.available
            return
        assert self.run(call) == self.model.balance + amount
        self.model.balance += amount
        self.model.adjust_keys.append(key)

    @precondition(lambda self: self.model.adjust_keys)
    @rule(data=st.data())
    def adjust_again_with_a_used_key(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.model.adjust_keys))
        balance = self.run(
            self.billing.adjust(self.user_id, -1, key=key, admin_user_id=1, description="again")
        )
        assert balance == self.model.balance

    @rule(amount=amounts)
    def hold(self, amount: int) -> None:
        key = self.key("hold")
        if amount > self.model.available:
            with pytest.raises(InsufficientBalance) as raised:
                self.run(self.billing.hold(self.user_id, amount, key=key))
            assert raised.value.needed_micros == amount
            assert raised.value.available_micros == self.model.available
            return
        hold = self.run(self.billing.hold(self.user_id, amount, key=key))
        self.model.holds[key] = ModelHold(id=hold.id, amount=amount)
        self.model.held += amount

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def hold_again_with_a_used_key(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.holds)))
        known = self.model.holds[key]
        again = self.billing.hold(self.user_id, known.amount, key=key)
        if known.status != "held":
            with pytest.raises(HoldNotOpenError):
                self.run(again)
            return
        assert self.run(again).id == known.id

    @precondition(lambda self: self.model.holds)
    @rule(
        data=st.data(),
        status=st.sampled_from(["ok", "ok", "error", "blocked"]),
        cost=st.integers(min_value=0, max_value=1_500_000),
        reuse_charge_key=st.booleans(),
    )
    def settle(self, data: st.DataObject, status: str, cost: int, reuse_charge_key: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.holds)))
        known = self.model.holds[key]
        charge_key = f"charge:{key}"
        if reuse_charge_key and self.model.charge_keys:
            charge_key = data.draw(st.sampled_from(self.model.charge_keys))
        call = CallRecord(
            user_id=self.user_id,
            provider="anthropic",
            model="claude-sonnet-5-5",
            purpose="chat",
            status=status,  # type: ignore[arg-type]
            provider_cost_micros=cost,
            charge_key=charge_key,
        )
        hold = self._hold(key)
        settlement = self.run(self.billing.settle(hold, call))
        if known.status != "held":
            assert not settlement.applied
            return
        # A price above the hold is charged as far as the available balance (the hold included)
        # allows; the rest is recorded as uncollected (design section 6).
        reachable = known.amount + self.model.available
        charged = min(apply_markup(cost, MARKUP), reachable) if status == "ok" else 0
        if charged and charge_key in self.model.charge_keys:
            assert not settlement.applied
            self.model.close(key, "released")
        elif charged:
            assert (settlement.applied, settlement.charged_micros) == (True, charged)
            self.model.close(key, "captured")
            self.model.balance -= charged
            self.model.charge_keys.append(charge_key)
        else:
            assert (settlement.applied, settlement.charged_micros) == (True, 0)
            self.model.close(key, "released")
        assert settlement.balance_micros == self.model.balance

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.holds)))
        was_open = self.model.holds[key].status == "held"
        assert self.run(self.billing.release(self._hold(key), reason="model")) is was_open
        if was_open:
            self.model.close(key, "released")

    @rule(move_time=st.booleans())
    def expire(self, move_time: bool) -> None:
        now = datetime.now(UTC) + HOLD_TTL + timedelta(minutes=1) if move_time else None
        expired = self.run(self.billing.expire_stale_holds(now=now))
        open_keys = [k for k, h in self.model.holds.items() if h.status == "held"]
        if not move_time:
            assert expired == 0
            return
        assert expired == len(open_keys)
        for key in open_keys:
            self.model.close(key, "expired")

    # Stars

    @rule(stars=st.integers(min_value=1, max_value=300), deliveries=st.integers(1, 3))
    def purchase(self, stars: int, deliveries: int) -> None:
        charge = self.run(self._pay(stars))
        for n in range(deliveries):
            bought = self.run(
                self.env.payments.credit(self.user_id, charge, stars, f"stars:{self.user_id}")
            )
            assert bought.applied is (n == 0)
            assert bought.credited_micros == stars * STAR
            if n == 0:
                self.model.balance += stars * STAR
            assert bought.balance_micros == self.model.balance
        payment_id = self.run(self._payment_id(charge))
        self.model.purchases[charge] = ModelPurchase(payment_id, stars * STAR)

    @precondition(lambda self: self.model.purchases)
    @rule(data=st.data(), answer=st.sampled_from(["ok", "ok", "refused", "no_answer"]))
    def refund(self, data: st.DataObject, answer: str) -> None:
        charge = data.draw(st.sampled_from(sorted(self.model.purchases)))
        known = self.model.purchases[charge]
        if answer == "refused":
            self.run(self._fail_refund(400, "Bad Request: CHARGE_NOT_FOUND"))
        elif answer == "no_answer":
            self.run(self._fail_refund(502, "Bad Gateway"))
        result = self.run(self.env.payments.refund(self.user_id, known.payment_id, self.env.stars))
        self.run(self._clear_failures())
        if known.status != "paid":
            assert result.status is RefundStatus.NOT_REFUNDABLE
        elif known.credit > self.model.available:
            assert result.status is RefundStatus.CREDIT_SPENT
        elif answer == "ok":
            assert result.status is RefundStatus.REFUNDED
            assert result.debited_micros == known.credit
            self.model.balance -= known.credit
            known.status = "refunded"
            assert result.balance_micros == self.model.balance
        elif answer == "refused":
            assert result.status is RefundStatus.REFUSED
        else:
            assert result.status is RefundStatus.PENDING
            self.model.held += known.credit
            known.status = "refunding"

    @rule()
    def resume_refunds(self) -> None:
        pending = [p for p in self.model.purchases.values() if p.status == "refunding"]
        assert self.run(self.env.payments.resume_refunds(self.env.stars)) == len(pending)
        for known in pending:
            self.model.held -= known.credit
            self.model.balance -= known.credit
            known.status = "refunded"

    @invariant()
    def database_matches_the_model(self) -> None:
        row = self.run(self._state())
        balance, held, ledger_sum, open_holds, mismatches, statuses, payments = row
        assert balance >= 0
        assert balance == ledger_sum == self.model.balance
        assert held == open_holds == self.model.held
        assert mismatches == 0
        assert statuses == {k: h.status for k, h in self.model.holds.items()}
        assert payments == {k: p.status for k, p in self.model.purchases.items()}

    @invariant()
    def refundable_purchases_match_the_model(self) -> None:
        offered = self.run(self.env.payments.refundable(self.user_id))
        expected = {
            charge
            for charge, p in self.model.purchases.items()
            if p.status == "paid" and p.credit <= self.model.available
        }
        if len(expected) <= 10:  # /refund lists at most the 10 newest
            assert {p.charge_id for p in offered} == expected
        else:
            assert len(offered) == 10 and {p.charge_id for p in offered} <= expected

    async def _pay(self, stars: int) -> str:
        return self.env.telegram.push_successful_payment(
            self.user_id, stars, f"stars:{self.user_id}", deliver=False
        )

    async def _fail_refund(self, code: int, description: str) -> None:
        self.env.telegram.fail("refundStarPayment", error_code=code, description=description)

    async def _clear_failures(self) -> None:
        self.env.telegram.clear_failures()

    async def _payment_id(self, charge: str) -> int:
        async with self.env.sessionmaker() as session:
            payment_id = await session.scalar(
                text("SELECT id FROM payments WHERE telegram_payment_charge_id = :c"), {"c": charge}
            )
        assert payment_id is not None
        return int(payment_id)

    def teardown(self) -> None:
        self.run(self.env.payments.resume_refunds(self.env.stars))
        for key, known in self.model.holds.items():
            if known.status == "held":
                self.run(self.billing.release(self._hold(key), reason="teardown"))

    def _hold(self, key: str) -> Hold:
        known = self.model.holds[key]
        return Hold(id=known.id, user_id=self.user_id, amount_micros=known.amount, key=key)

    async def _state(self) -> tuple[Any, ...]:
        async with self.env.sessionmaker() as session:
            row = (await session.execute(_STATE_SQL, {"id": self.user_id})).one()
        return tuple(row)


@pytest.mark.slow  # about 40-60 s: 200 examples x 25 steps on real Postgres
def test_billing_state_machine_matches_the_model(database_url: str) -> None:
    runner = LoopThread()

    async def open_env() -> Env:
        engine = create_engine(database_url, pool_size=5, max_overflow=5)
        sessions = create_sessionmaker(engine)
        billing = Ledger(sessions, markup=MARKUP, hold_ttl=HOLD_TTL)
        telegram = FakeTelegram(token=TOKEN)
        await telegram.start()
        bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)))
        return Env(
            runner=runner,
            engine=engine,
            sessionmaker=sessions,
            billing=billing,
            payments=PaymentService(sessions, PAYMENTS),
            telegram=telegram,
            bot=bot,
            stars=TelegramStars(bot),
        )

    async def close_env(env: Env) -> None:
        await env.engine.dispose()
        await env.bot.session.close()
        await env.telegram.stop()

    env = runner.run(open_env())
    try:
        BillingMachine.env = env
        run_state_machine_as_test(
            BillingMachine,
            settings=settings(
                max_examples=200,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        runner.run(close_env(env))
        runner.close()
