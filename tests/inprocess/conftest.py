"""In-process fixtures: the real application (app.py's builders) in the test's event loop, its
real Bot, AsyncAnthropic and genai clients pointed at the fake servers, on the test Postgres.

Updates are taken from the fake Telegram with the real Bot's getUpdates, recorded in the inbox
the way the poller does, and handed to aiogram's `Dispatcher.feed_update`. Nothing of ours is
patched: the fakes sit at the HTTP boundary only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import Application, build_application
from bot.config import load_settings
from bot.telegram.poller import inbound_record
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.gemini import FakeGemini
from tests.fakes.telegram import FakeTelegram
from tests.harness import FAKE_ANTHROPIC_KEY, FAKE_BOT_TOKEN, FAKE_GOOGLE_KEY

FINISHED = ("answered", "failed", "interrupted", "notified", "ignored", "rejected")
USER = 7001


@dataclass
class InProcess:
    app: Application
    telegram: FakeTelegram
    anthropic: FakeAnthropic
    gemini: FakeGemini
    engine: AsyncEngine
    offset: int = 0

    async def feed(self) -> list[int]:
        """Feed every update waiting at the fake Telegram; returns their ids."""
        bot, dp = self.app.bot, self.app.dispatcher
        updates = await bot.get_updates(offset=self.offset, timeout=0)
        await self.app.inbox.record([inbound_record(u) for u in updates])
        for update in updates:
            await dp.feed_update(bot, update)
            self.offset = update.update_id + 1
        return [u.update_id for u in updates]

    async def turn(self, user_id: int, message: str) -> str:
        """Send `message` as `user_id`, feed it, and wait for its turn to finish."""
        update_id = self.telegram.push_text(user_id, message)
        await self.feed()
        return await self.finished(update_id)

    async def finished(self, update_id: int, timeout: float = 20.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            [row] = await self.rows(
                "SELECT status, error FROM inbound_updates WHERE update_id = :u", u=update_id
            ) or [None]
            if row is not None and row["status"] in FINISHED:
                return (
                    str(row["status"])
                    if row["status"] == "answered"
                    else (f"{row['status']}: {row['error']}")
                )
            await asyncio.sleep(0.02)
        raise AssertionError(f"update {update_id} did not finish")

    async def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]


Start = Callable[..., Awaitable[InProcess]]


@pytest.fixture
async def start(engine: AsyncEngine, database_url: str, tmp_path: Path) -> AsyncIterator[Start]:
    """Build the application with these settings overrides; closed after the test."""
    stack = contextlib.AsyncExitStack()
    apps: list[Application] = []

    async def build(**overrides: Any) -> InProcess:
        telegram = await stack.enter_async_context(FakeTelegram(token=FAKE_BOT_TOKEN))
        anthropic = await stack.enter_async_context(FakeAnthropic())
        gemini = await stack.enter_async_context(FakeGemini())
        settings = load_settings(
            **{
                "TELEGRAM_BOT_TOKEN": FAKE_BOT_TOKEN,
                "ANTHROPIC_API_KEY": FAKE_ANTHROPIC_KEY,
                "GOOGLE_API_KEY": FAKE_GOOGLE_KEY,
                "DATABASE_URL": database_url,
                "DATA_DIR": tmp_path / "data",
                "TELEGRAM_API_URL": telegram.base_url,
                "ANTHROPIC_BASE_URL": anthropic.base_url,
                "GEMINI_BASE_URL": gemini.base_url,
                "DRAFT_INTERVAL_SECONDS": 0.05,
                "GEMINI_RETRY_INITIAL_DELAY": 0.01,
                "MERGE_WINDOW_SECONDS": 0.05,
                "CONFIRM_ABOVE_USD": "1000",  # as tests/harness.py: no Confirm / Cancel step
                **overrides,
            }
        )
        app = build_application(settings, engine)
        apps.append(app)
        return InProcess(app, telegram, anthropic, gemini, engine)

    yield build
    for app in apps:
        await app.scheduler.shutdown(1.0)
        await app.bot.session.close()
        await app.anthropic.close()
        await app.images.aclose()
        await app.pdf_checker.aclose()
    await stack.aclose()
