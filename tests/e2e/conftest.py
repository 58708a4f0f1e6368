"""End-to-end fixtures: the fakes, and a factory that starts the real bot process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.session import create_engine
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.telegram import FakeTelegram
from tests.harness import FAKE_BOT_TOKEN, BotProcess, bot_env
from tests.leaks import find_leaks, outbound_texts
from tests.pg import FAKE_DB_PASSWORD, TestPostgres

if TYPE_CHECKING:
    from tests.fakes.gemini import FakeGemini

StartBot = Callable[..., Awaitable[BotProcess]]


@dataclass
class Running:
    """A bot process shared by a whole test module, with its fake Telegram and database."""

    telegram: FakeTelegram
    engine: AsyncEngine
    bot: BotProcess


@contextlib.asynccontextmanager
async def module_bot(
    test_postgres: TestPostgres, data_dir: Path, **overrides: str
) -> AsyncIterator[Running]:
    """One bot on a fresh database for a module; stopped cleanly and scanned for leaks after."""
    name = await test_postgres.create_database()
    url = test_postgres.url_for(name)
    engine = create_engine(url)
    async with FakeTelegram(token=FAKE_BOT_TOKEN) as telegram, FakeAnthropic() as anthropic:
        env = bot_env(
            database_url=url,
            data_dir=data_dir,
            telegram_url=telegram.base_url,
            anthropic_url=anthropic.base_url,
            gemini_url="http://127.0.0.1:9",
            **overrides,
        )
        process = BotProcess(env)
        await process.start_polling(telegram)
        try:
            yield Running(telegram=telegram, engine=engine, bot=process)
        finally:
            code = await process.stop()
            await engine.dispose()
            await test_postgres.drop_database(name)
        assert code == 0, process.log_text()[-3000:]
        assert_no_leaks([process], telegram, anthropic)


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=FAKE_BOT_TOKEN) as fake:
        yield fake


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def gemini_fake() -> AsyncIterator[FakeGemini]:
    from tests.fakes.gemini import FakeGemini

    async with FakeGemini() as fake:
        yield fake


@pytest.fixture
async def start_bot(
    database_url: str,
    tmp_path: Path,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
) -> AsyncIterator[StartBot]:
    """Start the bot (waits for its first getUpdates); every started process is stopped after."""
    processes: list[BotProcess] = []

    async def start(**overrides: str) -> BotProcess:
        env = bot_env(
            database_url=database_url,
            data_dir=tmp_path / "data",
            telegram_url=telegram.base_url,
            anthropic_url=anthropic_fake.base_url,
            gemini_url=gemini_fake.base_url,
            **overrides,
        )
        process = BotProcess(env)
        processes.append(process)
        await process.start_polling(telegram)
        return process

    yield start
    for process in processes:
        code = await process.stop()
        assert code == 0, f"bot exited with {code}:\n{process.log_text()[-3000:]}"
    assert_no_leaks(processes, telegram, anthropic_fake)


def assert_no_leaks(
    processes: list[BotProcess], telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    """Nothing the bot logged, sent to Telegram or sent to Claude holds a secret or a base64 blob."""
    texts = [line for process in processes for line in process.lines]
    messages = [r for r in anthropic_fake.requests if r.path.endswith("/v1/messages")]
    texts += outbound_texts(telegram.requests, messages)
    leaks = find_leaks(texts, extra_secrets=[FAKE_DB_PASSWORD])
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks[:10])
