"""The bot starts against the fakes, creates its tables, answers /start, and stops cleanly."""

from __future__ import annotations

import signal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.fakes.telegram import FakeTelegram


async def test_start_command_is_answered(
    start_bot: StartBot, telegram: FakeTelegram, engine: AsyncEngine
) -> None:
    bot = await start_bot()
    telegram.push_text(1001, "/start", first_name="Alice")
    [reply] = await telegram.wait_for_sent(1001, 1, timeout=20)
    assert "Hi Alice" in (reply.text or "")
    assert "$0.50" in (reply.text or "")
    await telegram.wait_for(lambda: bool(telegram.commands()), timeout=10)
    assert {c["command"] for c in telegram.commands()} >= {"start", "help", "new", "balance"}
    async with engine.connect() as conn:
        balance = (
            await conn.execute(text("SELECT balance_micros FROM users WHERE id = 1001"))
        ).scalar_one()
        status = (await conn.execute(text("SELECT status FROM inbound_updates"))).scalar_one()
    assert balance == 500_000
    assert status == "answered"
    assert await bot.stop(signal.SIGTERM) == 0
    assert "bot_stopped" in bot.log_text()
