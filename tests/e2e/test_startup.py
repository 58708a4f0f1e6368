"""The bot starts against the fakes, creates its tables, answers /start, and stops cleanly."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.gemini import FakeGemini
from tests.fakes.telegram import FakeTelegram
from tests.harness import BotProcess, bot_env


async def update_status(engine: AsyncEngine, *, wait_for: str, timeout: float = 10.0) -> str:
    """The one update's status once it is `wait_for`, or whatever it is at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        async with engine.connect() as conn:
            status = str(
                (await conn.execute(text("SELECT status FROM inbound_updates"))).scalar_one()
            )
        if status == wait_for or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


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
    assert balance == 500_000
    # The update is marked answered just after the reply goes out.
    assert await update_status(engine, wait_for="answered") == "answered"
    assert await bot.stop(signal.SIGTERM) == 0
    assert "bot_stopped" in bot.log_text()


async def test_embedded_postgres_when_database_url_is_unset(
    tmp_path: Path,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
) -> None:
    """No DATABASE_URL: the bot runs its own cluster in DATA_DIR/postgres and reuses it."""
    data_dir = tmp_path / "data"
    env = bot_env(
        database_url="",
        data_dir=data_dir,
        telegram_url=telegram.base_url,
        anthropic_url=anthropic_fake.base_url,
        gemini_url=gemini_fake.base_url,
    )
    env.pop("DATABASE_URL")
    created_at: list[int] = []
    for user_id in (3001, 3002):
        bot = BotProcess(env)
        await bot.start()
        telegram.push_text(user_id, "/start")
        await telegram.wait_for_sent(user_id, 1, timeout=60)
        assert await bot.stop() == 0, bot.log_text()[-2000:]
        assert "embedded_postgres_stopped" in bot.log_text()
        created_at.append((data_dir / "postgres" / "PG_VERSION").stat().st_mtime_ns)
    # initdb ran once: the second start reused the first run's cluster.
    assert created_at[0] == created_at[1]
