"""A blocked user is ignored: no reply, no provider call, nothing charged."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.fakes.anthropic import FakeAnthropic, text_reply
from tests.fakes.telegram import FakeTelegram


async def test_blocked_user_gets_nothing_and_costs_nothing(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO users (id, first_name, is_blocked) VALUES (4242, 'Mallory', true)")
        )
    await start_bot()
    anthropic_fake.set_default(text_reply("Hello!"))
    blocked = telegram.push_text(4242, "hello?")
    telegram.push_text(4243, "hi")  # someone else, to know the bot has handled the batch
    await telegram.wait_for_sent(4243, 1, timeout=20)
    await asyncio.sleep(0.5)
    assert telegram.sent(4242) == []
    assert all("hello?" not in str(r.json) for r in anthropic_fake.requests)
    async with engine.connect() as conn:
        status = (
            await conn.execute(
                text("SELECT status FROM inbound_updates WHERE update_id = :u"), {"u": blocked}
            )
        ).scalar_one()
        operations = (
            await conn.execute(text("SELECT count(*) FROM balance_operations WHERE user_id = 4242"))
        ).scalar_one()
    assert status == "ignored"
    assert operations == 0
