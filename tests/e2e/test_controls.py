"""The person's own controls, end to end through the real process: /limit refuses a turn with its
own reply, /receipts adds the exact charge after an answer, and the low-balance notice comes once
per crossing with a /buy button, re-armed by a purchase."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.services.money import format_usd
from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import ask, balance, final_texts, poll_until, scalar
from tests.fakes.anthropic import FakeAnthropic, text_reply
from tests.fakes.telegram import FakeTelegram


async def test_limit_receipts_and_the_low_balance_notice(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD="0.30", LOW_BALANCE_USD="0.20")
    user = 9101

    [shown] = await ask(telegram, user, "/limit")
    assert shown.startswith("No daily limit. Spent today (UTC): $0.00.")
    [bad] = await ask(telegram, user, "/limit lots")
    assert bad.startswith("Send /limit <dollars>")
    [set_reply] = await ask(telegram, user, "/limit 0.01")
    assert set_reply.startswith("Daily limit: $0.01. Spent today: $0.00; left: $0.01.")
    assert (
        await scalar(engine, "SELECT daily_limit_micros FROM users WHERE id = :u", u=user) == 10_000
    )

    [refused] = await ask(telegram, user, "Hello")
    assert "daily spending limit of $0.01" in refused and "resets at 00:00 UTC" in refused
    assert "/limit" in refused
    [off] = await ask(telegram, user, "/limit off")
    assert off.startswith("No daily limit.")

    [on] = await ask(telegram, user, "/receipts on")
    assert on.startswith("Receipts on")
    before = await balance(engine, user)
    anthropic_fake.script(text_reply("Hi there."))
    answer, receipt = await ask(telegram, user, "Hello again", replies=2, finished_in=engine)
    charged = before - await balance(engine, user)
    assert answer == "Hi there."
    assert charged > 0
    assert (
        receipt
        == f"Charged {format_usd(charged)} for this answer · balance {format_usd(before - charged)}"
    )
    [off_reply] = await ask(telegram, user, "/receipts off")
    assert off_reply.startswith("Receipts off")

    # 0.30 minus a little is above 0.20: no notice yet. An admin-style debit brings it near.
    assert not any("balance is low" in t for t in final_texts(telegram, user))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO balance_operations (user_id, kind, amount_micros,"
                " balance_after_micros, idempotency_key) SELECT id, 'adjustment', -100000,"
                " balance_micros - 100000, 'test-spend' FROM users WHERE id = :u"
            ),
            {"u": user},
        )
        await conn.execute(
            text("UPDATE users SET balance_micros = balance_micros - 100000 WHERE id = :u"),
            {"u": user},
        )
    anthropic_fake.script(text_reply("One."), text_reply("Two."))
    answer, notice = await ask(telegram, user, "One?", replies=2, finished_in=engine)
    assert answer == "One."
    assert notice.startswith("Your balance is low: $0.1")
    [item] = [i for i in telegram.sent(user) if i.text == notice]
    assert item.reply_markup == {
        "inline_keyboard": [[{"text": "Top up with Stars", "callback_data": "buymenu"}]]
    }
    assert await ask(telegram, user, "Two?", finished_in=engine) == ["Two."]  # told once

    # the button opens the /buy menu; a purchase lifts the balance above 0.20 and re-arms it
    count = len(final_texts(telegram, user))
    telegram.push_callback(user, "buymenu", message_id=item.message_id or 0)

    async def menu_shown() -> bool:
        return len(final_texts(telegram, user)) > count

    await poll_until(menu_shown, 15)
    assert final_texts(telegram, user)[-1].startswith("Top up your balance with Telegram Stars")
    telegram.push_successful_payment(user, 100, f"stars:{user}:100:abc")

    async def rearmed() -> bool:
        flag = await scalar(engine, "SELECT low_balance_notified FROM users WHERE id = :u", u=user)
        return flag is False

    await poll_until(rearmed, 15)
