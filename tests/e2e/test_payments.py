"""Stars payments end to end: the real bot process against the fake Telegram, on a real database.

A person with no balance buys Stars, uses the bot and gets a refund; a payment delivered twice is
credited once; a refund interrupted by SIGKILL at either side of Telegram's refund ends in exactly
one consistent state after the restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot, assert_no_leaks
from tests.e2e.test_chat import ask, balance, final_texts, poll_until, rows, scalar
from tests.fakes.anthropic import FakeAnthropic, text_reply
from tests.fakes.gemini import FakeGemini
from tests.fakes.telegram import FakeTelegram, SentItem
from tests.harness import BotProcess, bot_env

STAR = 13_000


def last_with_buttons(telegram: FakeTelegram, user: int) -> SentItem:
    return [item for item in telegram.sent(user) if item.reply_markup][-1]


def buttons(item: SentItem) -> list[tuple[str, str]]:
    assert item.reply_markup is not None
    return [
        (b["text"], b["callback_data"]) for row in item.reply_markup["inline_keyboard"] for b in row
    ]


async def mismatches(engine: AsyncEngine) -> list[object]:
    return await rows(engine, "SELECT * FROM admin_balance_mismatches")


async def buy(telegram: FakeTelegram, user: int, stars: int) -> str:
    """/buy, press the package button, pay: the charge id (the payment delivered once)."""
    await say_and_wait(telegram, user, "/buy")
    menu = last_with_buttons(telegram, user)
    [data] = [data for text, data in buttons(menu) if text.startswith(f"{stars} Stars")]
    invoices = len(telegram.stars.invoices)
    telegram.push_callback(user, data, message_id=menu.message_id or 0)
    await telegram.wait_for(lambda: len(telegram.stars.invoices) > invoices)
    invoice = telegram.stars.invoices[-1]
    assert (invoice.invoice["currency"], invoice.invoice["total_amount"]) == ("XTR", stars)
    query = telegram.push_pre_checkout(user, stars, invoice.payload)
    await telegram.wait_for(lambda: query in telegram.stars.answers)
    assert telegram.stars.answers[query].ok
    assert telegram.stars.answers[query].seconds < 10
    receipts = len(final_texts(telegram, user))
    charge = telegram.push_successful_payment(user, stars, invoice.payload)
    await poll_until(
        lambda: _count(telegram, user, receipts), 15, lambda: final_texts(telegram, user)[-3:]
    )
    return charge


async def say_and_wait(telegram: FakeTelegram, user: int, text: str) -> None:
    before = len(final_texts(telegram, user))
    telegram.push_text(user, text)
    await poll_until(lambda: _count(telegram, user, before), 15)


async def _count(telegram: FakeTelegram, user: int, before: int) -> bool:
    return len(final_texts(telegram, user)) > before


async def press_refund(telegram: FakeTelegram, user: int, charge_stars: int) -> int:
    """/refund and press the purchase's button; the number of texts sent before the press."""
    await say_and_wait(telegram, user, "/refund")
    menu = last_with_buttons(telegram, user)
    [data] = [data for text, data in buttons(menu) if text.startswith(f"{charge_stars} Stars")]
    before = len(final_texts(telegram, user))
    telegram.push_callback(user, data, message_id=menu.message_id or 0)
    return before


async def test_no_balance_buy_use_and_refund(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD="0")
    user = 8101

    [refusal] = await ask(telegram, user, "Hello?")
    assert "/buy" in refusal and "administrator" not in refusal

    first = await buy(telegram, user, 100)
    assert "Payment received: 100 Stars. $1.30 was added" in final_texts(telegram, user)[-1]
    assert "is now $1.30" in final_texts(telegram, user)[-1]
    telegram.push_successful_payment(user, 100, "ignored-on-duplicate", charge_id=first)
    second = await buy(telegram, user, 50)
    assert "is now $1.95" in final_texts(telegram, user)[-1]
    assert await balance(engine, user) == 150 * STAR  # the duplicate credited nothing

    anthropic_fake.script(text_reply("Hi! How can I help?"))
    assert await ask(telegram, user, "Hello again", finished_in=engine) == ["Hi! How can I help?"]
    spent = 150 * STAR - await balance(engine, user)
    assert 0 < spent < 50 * STAR

    before = await press_refund(telegram, user, 100)
    await poll_until(lambda: _count(telegram, user, before), 15)
    reply = final_texts(telegram, user)[-1]
    assert "Refunded: 100 Stars" in reply and "$1.30 was taken" in reply
    assert telegram.stars.refunded(first) and not telegram.stars.refunded(second)
    assert await balance(engine, user) == 50 * STAR - spent
    statuses = await rows(
        engine, "SELECT telegram_payment_charge_id, status FROM payments ORDER BY id"
    )
    assert [tuple(r) for r in statuses] == [(first, "refunded"), (second, "paid")]
    kinds = await rows(
        engine,
        "SELECT kind, amount_micros FROM balance_operations WHERE kind LIKE 'purchase%' ORDER BY id",
    )
    assert [tuple(r) for r in kinds] == [
        ("purchase", 1_300_000),
        ("purchase", 650_000),
        ("purchase_refund", -1_300_000),
    ]
    assert await mismatches(engine) == []

    [(day_row)] = await rows(
        engine, "SELECT payments, stars, refunds, refunded_stars FROM admin_payments"
    )
    assert tuple(day_row) == (2, 150, 1, 100)


async def test_pre_checkout_refusals_reach_the_person(
    start_bot: StartBot, telegram: FakeTelegram, engine: AsyncEngine
) -> None:
    await start_bot()
    user = 8201
    await ask(telegram, user, "/terms")
    malformed = telegram.push_pre_checkout(user, 10, "something-else")
    other = telegram.push_pre_checkout(user, 10, "stars:999:10:abc123")
    await telegram.wait_for(lambda: {malformed, other} <= set(telegram.stars.answers))
    assert not telegram.stars.answers[malformed].ok
    assert "someone else" in (telegram.stars.answers[other].error_message or "")


async def test_paysupport_terms_privacy_are_built_in_and_overridable(
    start_bot: StartBot, telegram: FakeTelegram, tmp_path: Path
) -> None:
    texts = tmp_path / "data" / "texts"
    texts.mkdir(parents=True)
    (texts / "terms.md").write_text("Our own terms.", encoding="utf-8")
    (texts / "terms.ru.md").write_text("Наши условия.", encoding="utf-8")
    await start_bot()
    user = 8301

    [support] = await ask(telegram, user, "/paysupport")
    [terms] = await ask(telegram, user, "/terms")
    [privacy] = await ask(telegram, user, "/privacy")

    assert "/refund" in support
    assert terms == "Our own terms."
    assert "AI models" in privacy
    telegram.push_text(user + 1, "/terms", language_code="ru")
    [terms_ru] = await telegram.wait_for_sent(user + 1, 1)
    assert terms_ru.text == "Наши условия."


@pytest.mark.parametrize("stall", ["before", "after"])
async def test_sigkill_during_a_refund_ends_in_one_state_after_restart(
    start_bot: StartBot,
    database_url: str,
    tmp_path: Path,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
    stall: str,
) -> None:
    env = bot_env(
        database_url=database_url,
        data_dir=tmp_path / "data",
        telegram_url=telegram.base_url,
        anthropic_url=anthropic_fake.base_url,
        gemini_url=gemini_fake.base_url,
        STARTER_BALANCE_USD="0",
    )
    bot = BotProcess(env)
    await bot.start_polling(telegram)
    user = 8401
    try:
        charge = await buy(telegram, user, 100)
        telegram.stars.stall_refunds = stall
        await press_refund(telegram, user, 100)
        await telegram.wait_for(lambda: telegram.stars.refund_calls == 1)

        async def in_progress() -> bool:
            return await scalar(engine, "SELECT status FROM payments") == "refunding"

        await poll_until(in_progress, 10)
    finally:
        await bot.kill()
    assert_no_leaks([bot], telegram, anthropic_fake)
    telegram.stars.released.set()
    telegram.stars.stall_refunds = None
    # between the steps: the credit is held, so it cannot be spent while the refund is open
    assert await balance(engine, user) == 100 * STAR
    assert await scalar(engine, "SELECT held_micros FROM users WHERE id = :u", u=user) == 100 * STAR
    assert telegram.stars.refunded(charge) is (stall == "after")

    restarted = await start_bot(STARTER_BALANCE_USD="0")
    await restarted.wait_for_log('"stars_refund_resumed"', timeout=20)

    assert await scalar(engine, "SELECT status FROM payments") == "refunded"
    assert telegram.stars.refunded(charge)
    assert telegram.stars.refund_calls == 2
    assert await balance(engine, user) == 0
    assert await scalar(engine, "SELECT held_micros FROM users WHERE id = :u", u=user) == 0
    assert (
        await scalar(
            engine, "SELECT count(*) FROM balance_operations WHERE kind = 'purchase_refund'"
        )
        == 1
    )
    assert await mismatches(engine) == []


async def test_a_payment_whose_update_was_lost_is_credited_by_reconciliation(
    start_bot: StartBot, telegram: FakeTelegram, engine: AsyncEngine
) -> None:
    user = 8501
    telegram.push_successful_payment(user, 77, f"stars:{user}:77:lost1", deliver=False)

    bot = await start_bot(STARTER_BALANCE_USD="0")
    await bot.wait_for_log('"stars_reconciled"', timeout=20)

    assert await balance(engine, user) == 77 * STAR
    assert await mismatches(engine) == []


async def test_a_blocked_person_is_refused_at_checkout_but_a_payment_is_still_credited(
    start_bot: StartBot, telegram: FakeTelegram, engine: AsyncEngine
) -> None:
    await start_bot(STARTER_BALANCE_USD="0")
    user = 8601
    await ask(telegram, user, "/terms")
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE users SET is_blocked = true WHERE id = :u"), {"u": user})
    payload = f"stars:{user}:10:blk1"

    query = telegram.push_pre_checkout(user, 10, payload)
    await telegram.wait_for(lambda: query in telegram.stars.answers)
    answer = telegram.stars.answers[query]
    assert not answer.ok and "can't make purchases" in (answer.error_message or "")

    # Telegram took the Stars anyway (the person was blocked after paying): credit it
    telegram.push_successful_payment(user, 10, payload)

    async def credited() -> bool:
        return await balance(engine, user) == 10 * STAR

    await poll_until(credited, 15)
    assert await mismatches(engine) == []
