"""Shared fixtures: a real Postgres per session, a fresh migrated database per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db.session import create_engine, create_sessionmaker
from tests.pg import TestPostgres

_LEAKY_ENV = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_CUSTOM_HEADERS",
    "ANTHROPIC_PROFILE",
    "ANTHROPIC_CONFIG_DIR",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_API_VERSION",
    "TELEGRAM_BOT_TOKEN",
    "DATABASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "IMAGE_PROVIDER",
    "IMAGE_MODEL",
    "PRICES_FILE",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Two workers per core, at most eight: the end-to-end tests mostly wait on the real bot
    process (polls, leases, retries), so more workers than cores keep the cores busy."""
    return min(2 * (os.cpu_count() or 1), 8)


@pytest.fixture(scope="session", autouse=True)
def _no_provider_env() -> Iterator[None]:
    """No real credentials or endpoints leak into tests from the developer's shell."""
    saved = {name: os.environ.pop(name) for name in _LEAKY_ENV if name in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
async def test_postgres() -> AsyncIterator[TestPostgres]:
    pg = TestPostgres()
    pg.start()
    await pg.create_template()
    yield pg
    pg.stop()


@pytest.fixture
async def database_url(test_postgres: TestPostgres) -> AsyncIterator[str]:
    name = await test_postgres.create_database()
    yield test_postgres.url_for(name)
    await test_postgres.drop_database(name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=10, max_overflow=30)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)
