"""Stars payments on the real database, with Telegram's side played by the fake Bot API server
through the real aiogram Bot (the HTTP boundary): credits once per charge, refunds exactly once,
reconciliation, and the ledger invariants after every scenario."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.controls import ControlsService
from bot.services.ledger import DailyLimitReached, InsufficientBalance, Ledger
from bot.services.payments import (
    CheckoutRefusal,
    Order,
    PaymentsConfig,
    PaymentService,
    RefundStatus,
)
from bot.telegram.stars import TelegramStars
from tests.billing.conftest import create_user, snapshot
from tests.fakes.telegram import FakeTelegram

Sessions = async_sessionmaker[AsyncSession]
TOKEN = "123456:TEST-fake-token-not-real"
STAR = 13_000  # 0.013 USD
USER = 4242
CONFIG = PaymentsConfig(
    star_value_micros=STAR, refund_window=timedelta(days=21), low_balance_micros=200_000
)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def stars(tg: FakeTelegram) -> AsyncIterator[TelegramStars]:
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url)))
    yield TelegramStars(bot)
    await bot.session.close()


@pytest.fixture
def payments(sessionmaker: Sessions) -> PaymentService:
    return PaymentService(sessionmaker, CONFIG)


async def mismatches(sessionmaker: Sessions) -> list[int]:
    async with sessionmaker() as session:
        rows = await session.execute(text("SELECT user_id FROM admin_balance_mismatches"))
        return [row[0] for row in rows]


async def payment_status(sessionmaker: Sessions, charge_id: str) -> str:
    async with sessionmaker() as session:
        status = await session.scalar(
            text("SELECT status FROM payments WHERE telegram_payment_charge_id = :c"),
            {"c": charge_id},
        )
    return str(status)


async def bought(
    tg: FakeTelegram, payments: PaymentService, stars_count: int, user_id: int = USER
) -> tuple[str, int]:
    """A paid purchase: (charge id, payment id)."""
    order = Order.new(user_id, stars_count)
    charge_id = tg.push_successful_payment(user_id, stars_count, order.payload, deliver=False)
    await payments.credit(user_id, charge_id, stars_count, order.payload)
    [refundable] = [p for p in await payments.refundable(user_id) if p.charge_id == charge_id]
    return charge_id, refundable.payment_id


# Orders and the pre-checkout


def test_payload_names_person_and_order_within_128_bytes() -> None:
    order = Order.new(2**62, 10_000)
    assert len(order.payload.encode()) <= 128
    assert Order.parse(order.payload) == order
    for bad in ("", "stars:1:2", "other:1:2:abc", "stars:x:2:abc", "stars:1:2:a-b", "s" * 200):
        assert Order.parse(bad) is None
    with pytest.raises(ValueError):
        Order.new(1, 10_001)
    with pytest.raises(ValueError):
        Order.new(1, 0)


async def test_checkout_refusals(sessionmaker: Sessions, payments: PaymentService) -> None:
    await create_user(sessionmaker, USER)
    payload = Order.new(USER, 100).payload
    assert await payments.check_checkout(USER, payload, "XTR", 100) is None
    assert await payments.check_checkout(USER, "junk", "XTR", 100) is CheckoutRefusal.MALFORMED
    assert await payments.check_checkout(USER, payload, "USD", 100) is CheckoutRefusal.MALFORMED
    other = await payments.check_checkout(USER + 1, payload, "XTR", 100)
    assert other is CheckoutRefusal.OTHER_PERSON
    wrong = await payments.check_checkout(USER, payload, "XTR", 99)
    assert wrong is CheckoutRefusal.OUT_OF_RANGE
    forged = Order(USER, 20_000, "abc").payload
    assert await payments.check_checkout(USER, forged, "XTR", 20_000) is (
        CheckoutRefusal.OUT_OF_RANGE
    )
    async with sessionmaker() as session:
        await session.execute(
            text("UPDATE users SET is_blocked = true WHERE id = :id"), {"id": USER}
        )
        await session.commit()
    assert await payments.check_checkout(USER, payload, "XTR", 100) is CheckoutRefusal.BLOCKED


# Credit


async def test_a_payment_credits_stars_times_value_once(
    sessionmaker: Sessions, payments: PaymentService
) -> None:
    await create_user(sessionmaker, USER)
    payload = Order.new(USER, 100).payload

    first = await payments.credit(USER, "stx1", 100, payload)
    again = await payments.credit(USER, "stx1", 100, payload)

    assert (first.applied, first.credited_micros, first.balance_micros) == (
        True,
        1_300_000,
        1_300_000,
    )
    assert (again.applied, again.balance_micros) == (False, 1_300_000)
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                text("SELECT kind, amount_micros, idempotency_key FROM balance_operations")
            )
        ).all()
    assert [tuple(row) for row in rows] == [("purchase", 1_300_000, "stars:stx1")]
    assert await mismatches(sessionmaker) == []


async def test_200_concurrent_deliveries_of_50_payments_credit_exactly_50(
    busy_sessionmaker: Sessions,
) -> None:
    payments = PaymentService(busy_sessionmaker, CONFIG)
    await create_user(busy_sessionmaker, USER)
    deliveries = [(f"stx-{n}", 1 + n) for n in range(50)] * 4

    results = await asyncio.gather(
        *(payments.credit(USER, charge, n, f"stars:{USER}:{n}:o{n}") for charge, n in deliveries)
    )

    assert sum(result.applied for result in results) == 50
    expected = sum(1 + n for n in range(50)) * STAR
    state = await snapshot(busy_sessionmaker, USER)
    assert (state.balance, state.ledger_sum, state.ledger_rows) == (expected, expected, 50)
    async with busy_sessionmaker() as session:
        count = await session.scalar(text("SELECT COUNT(*) FROM payments"))
    assert count == 50
    assert await mismatches(busy_sessionmaker) == []


async def test_a_purchase_re_arms_the_low_balance_notice(
    sessionmaker: Sessions, payments: PaymentService
) -> None:
    await create_user(sessionmaker, USER)
    async with sessionmaker() as session:
        await session.execute(
            text("UPDATE users SET low_balance_notified = true WHERE id = :id"), {"id": USER}
        )
        await session.commit()
    await payments.credit(USER, "small", 1, None)  # 0.013: still under 0.20
    async with sessionmaker() as session:
        assert await session.scalar(text("SELECT low_balance_notified FROM users")) is True
    await payments.credit(USER, "big", 100, None)
    async with sessionmaker() as session:
        assert await session.scalar(text("SELECT low_balance_notified FROM users")) is False


# Refunds


async def test_refund_returns_the_stars_and_debits_the_credit_once(
    sessionmaker: Sessions, payments: PaymentService, tg: FakeTelegram, stars: TelegramStars
) -> None:
    await create_user(sessionmaker, USER)
    charge_id, payment_id = await bought(tg, payments, 100)

    result = await payments.refund(USER, payment_id, stars)
    again = await payments.refund(USER, payment_id, stars)

    assert (result.status, result.debited_micros, result.balance_micros) == (
        RefundStatus.REFUNDED,
        1_300_000,
        0,
    )
    assert again.status is RefundStatus.NOT_REFUNDABLE
    assert tg.stars.refunded(charge_id) and tg.stars.refund_calls == 1
    assert await payment_status(sessionmaker, charge_id) == "refunded"
    state = await snapshot(sessionmaker, USER)
    assert (state.balance, state.held, state.ledger_rows, state.open_holds) == (0, 0, 2, 0)
    assert await payments.refundable(USER) == []
    assert await mismatches(sessionmaker) == []


async def test_a_daily_limit_limits_spending_not_refunds(
    sessionmaker: Sessions,
    payments: PaymentService,
    billing: Ledger,
    tg: FakeTelegram,
    stars: TelegramStars,
) -> None:
    await create_user(sessionmaker, USER)
    charge_id, payment_id = await bought(tg, payments, 100)
    await ControlsService(sessionmaker, low_balance_micros=0).set_daily_limit(USER, 100_000)
    with pytest.raises(DailyLimitReached):
        await billing.hold(USER, 200_000, key="chat:over-the-limit")

    result = await payments.refund(USER, payment_id, stars)

    assert (result.status, result.debited_micros) == (RefundStatus.REFUNDED, 1_300_000)
    assert await payment_status(sessionmaker, charge_id) == "refunded"
    assert await mismatches(sessionmaker) == []


async def test_charge_already_refunded_counts_as_done(
    sessionmaker: Sessions, payments: PaymentService, tg: FakeTelegram, stars: TelegramStars
) -> None:
    await create_user(sessionmaker, USER)
    charge_id, payment_id = await bought(tg, payments, 50)
    tg.refund_outside(charge_id)

    result = await payments.refund(USER, payment_id, stars)

    assert result.status is RefundStatus.REFUNDED
    assert [c.description for c in tg.calls("refundStarPayment")] == [
        "Bad Request: CHARGE_ALREADY_REFUNDED"
    ]
    assert (await snapshot(sessionmaker, USER)).balance == 0
    assert await mismatches(sessionmaker) == []


async def test_a_refund_telegram_refuses_is_undone(
    sessionmaker: Sessions, payments: PaymentService, tg: FakeTelegram, stars: TelegramStars
) -> None:
    await create_user(sessionmaker, USER)
    charge_id, payment_id = await bought(tg, payments, 50)
    tg.fail("refundStarPayment", error_code=400, description="Bad Request: CHARGE_NOT_FOUND")

    result = await payments.refund(USER, payment_id, stars)

    assert result.status is RefundStatus.REFUSED
    assert await payment_status(sessionmaker, charge_id) == "paid"
    state = await snapshot(sessionmaker, USER)
    assert (state.balance, state.held, state.open_holds) == (650_000, 0, 0)
    assert [p.charge_id for p in await payments.refundable(USER)] == [charge_id]
    assert await mismatches(sessionmaker) == []


async def test_a_refund_without_an_answer_stays_pending_until_resumed(
    sessionmaker: Sessions, payments: PaymentService, tg: FakeTelegram, stars: TelegramStars
) -> None:
    await create_user(sessionmaker, USER)
    charge_id, payment_id = await bought(tg, payments, 50)
    tg.fail("refundStarPayment", error_code=502, description="Bad Gateway")

    pending = await payments.refund(USER, payment_id, stars)

    assert pending.status is RefundStatus.PENDING
    assert await payment_status(sessionmaker, charge_id) == "refunding"
    state = await snapshot(sessionmaker, USER)
    assert (state.balance, state.held) == (650_000, 650_000)  # held: it cannot be spent meanwhile
    assert await payments.refundable(USER) == []
    assert await mismatches(sessionmaker) == []

    assert await payments.resume_refunds(stars) == 1
    assert await payments.resume_refunds(stars) == 0

    assert await payment_status(sessionmaker, charge_id) == "refunded"
    assert tg.stars.refunded(charge_id)
    state = await snapshot(sessionmaker, USER)
    assert (state.balance, state.held, state.open_holds) == (0, 0, 0)
    assert await mismatches(sessionmaker) == []


async def test_a_refund_whose_credit_was_spent_is_refused(
    sessionmaker: Sessions,
    payments: PaymentService,
    billing: Ledger,
    tg: FakeTelegram,
    stars: TelegramStars,
) -> None:
    await create_user(sessionmaker, USER)
    charge_id, payment_id = await bought(tg, payments, 50)
    await billing.hold(USER, 1, key="spend")

    result = await payments.refund(USER, payment_id, stars)

    assert result.status is RefundStatus.CREDIT_SPENT
    assert tg.stars.refund_calls == 0
    assert await payment_status(sessionmaker, charge_id) == "paid"
    assert await payments.refundable(USER) == []
    assert await mismatches(sessionmaker) == []


async def test_purchases_past_the_refund_window_are_not_refundable(
    sessionmaker: Sessions, payments: PaymentService, tg: FakeTelegram, stars: TelegramStars
) -> None:
    await create_user(sessionmaker, USER)
    _, payment_id = await bought(tg, payments, 50)
    async with sessionmaker() as session:
        await session.execute(text("UPDATE payments SET created_at = now() - interval '22 days'"))
        await session.commit()

    assert await payments.refundable(USER) == []
    assert (await payments.refund(USER, payment_id, stars)).status is RefundStatus.NOT_REFUNDABLE
    assert (await payments.refund(USER + 1, payment_id, stars)).status is (
        RefundStatus.NOT_REFUNDABLE
    )


@pytest.mark.parametrize("run", range(5))
async def test_a_refund_racing_a_spend_never_takes_the_balance_below_zero(
    sessionmaker: Sessions,
    payments: PaymentService,
    billing: Ledger,
    tg: FakeTelegram,
    stars: TelegramStars,
    run: int,
) -> None:
    await create_user(sessionmaker, USER)
    charge_id, payment_id = await bought(tg, payments, 100)  # 1.30, all of the balance

    async def spend(n: int) -> bool:
        try:
            await billing.hold(USER, 400_000, key=f"spend:{run}:{n}")
        except InsufficientBalance:
            return False
        return True

    refund, *spent = await asyncio.gather(
        payments.refund(USER, payment_id, stars), *(spend(n) for n in range(4))
    )

    state = await snapshot(sessionmaker, USER)
    assert state.balance >= 0 and state.balance - state.held >= 0
    if refund.status is RefundStatus.REFUNDED:
        assert state.balance == 0 and not any(spent)
    else:
        assert refund.status is RefundStatus.CREDIT_SPENT and any(spent)
        assert not tg.stars.refunded(charge_id)
    assert await mismatches(sessionmaker) == []


# Reconciliation


async def test_reconcile_credits_lost_payments_and_records_outside_refunds(
    sessionmaker: Sessions, payments: PaymentService, tg: FakeTelegram, stars: TelegramStars
) -> None:
    await create_user(sessionmaker, USER)
    delivered, _ = await bought(tg, payments, 100)
    lost = tg.push_successful_payment(USER, 50, Order.new(USER, 50).payload, deliver=False)
    stranger = tg.push_successful_payment(777, 10, Order.new(777, 10).payload, deliver=False)
    tg.refund_outside(delivered)
    for n in range(120):  # more than a page
        tg.push_successful_payment(USER + 1, 1, f"stars:{USER + 1}:1:p{n}", deliver=False)

    report = await payments.reconcile(stars)
    again = await payments.reconcile(stars)

    assert (report.transactions, report.credited, report.external_refunds) == (124, 122, 1)
    assert (again.credited, again.external_refunds) == (0, 0)
    assert await payment_status(sessionmaker, lost) == "paid"
    assert await payment_status(sessionmaker, stranger) == "paid"
    assert await payment_status(sessionmaker, delivered) == "refunded"
    assert (await snapshot(sessionmaker, USER)).balance == 50 * STAR
    assert (await snapshot(sessionmaker, USER + 1)).balance == 120 * STAR
    assert await mismatches(sessionmaker) == []


async def test_an_outside_refund_never_takes_the_balance_below_zero(
    sessionmaker: Sessions,
    payments: PaymentService,
    billing: Ledger,
    tg: FakeTelegram,
    stars: TelegramStars,
) -> None:
    await create_user(sessionmaker, USER)
    charge_id, _ = await bought(tg, payments, 100)
    await billing.hold(USER, 1_000_000, key="spend")
    tg.refund_outside(charge_id)

    await payments.reconcile(stars)

    state = await snapshot(sessionmaker, USER)
    assert (state.balance, state.held) == (1_000_000, 1_000_000)  # took what was available
    assert await payment_status(sessionmaker, charge_id) == "refunded"
    assert await mismatches(sessionmaker) == []


async def test_later_reconciliations_start_one_page_before_where_the_last_ended(
    sessionmaker: Sessions, payments: PaymentService, tg: FakeTelegram, stars: TelegramStars
) -> None:
    await create_user(sessionmaker, USER)
    for n in range(250):
        tg.push_successful_payment(USER, 1, f"stars:{USER}:1:a{n}", deliver=False)
    first = await payments.reconcile(stars)
    late = tg.push_successful_payment(USER, 5, f"stars:{USER}:5:late", deliver=False)

    second = await payments.reconcile(stars)

    assert (first.transactions, first.credited) == (250, 250)
    assert (second.transactions, second.credited) == (101, 1)  # the last 100 again, and the new
    offsets = [r.params.get("offset") for r in tg.calls("getStarTransactions")]
    assert [int(o or 0) for o in offsets] == [0, 100, 200, 150, 250]
    assert await payment_status(sessionmaker, late) == "paid"
    assert (await snapshot(sessionmaker, USER)).balance == 255 * STAR
    assert await mismatches(sessionmaker) == []
