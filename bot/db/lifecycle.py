"""The database for a process: the configured Postgres or an embedded one, migrated to head."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import OperatorSettings
from bot.db.embedded import EmbeddedPostgres
from bot.db.migrate import upgrade_to_head
from bot.db.session import create_engine


@contextlib.asynccontextmanager
async def database(settings: OperatorSettings) -> AsyncIterator[AsyncEngine]:
    """The configured Postgres, or an embedded one in DATA_DIR; migrated to head."""
    embedded: EmbeddedPostgres | None = None
    if settings.DATABASE_URL is not None:
        url = settings.DATABASE_URL.get_secret_value()
    else:
        embedded = EmbeddedPostgres(settings.postgres_dir)
        url = await asyncio.to_thread(embedded.start)
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
        yield engine
    finally:
        await engine.dispose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
