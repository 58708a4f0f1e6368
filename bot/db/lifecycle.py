"""The database for a process: the configured Postgres or an embedded one, migrated to head."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import OperatorSettings
from bot.db.embedded import EmbeddedPostgres
from bot.db.migrate import upgrade_to_head
from bot.db.session import create_engine


@contextlib.asynccontextmanager
async def database(settings: OperatorSettings) -> AsyncIterator[AsyncEngine]:
    """The configured Postgres, or an embedded one in DATA_DIR; migrated to head.

    Cancellable at every step (a signal during start-up): an embedded cluster that was starting
    is stopped once its start returns, so no server is left running."""
    embedded: EmbeddedPostgres | None = None
    url: str | URL | None = settings.database_url()
    if url is None:
        embedded = EmbeddedPostgres(settings.postgres_dir)
        url = await _start_embedded(embedded)
    try:
        engine = create_engine(url)
        try:
            await upgrade_to_head(engine)
            yield engine
        finally:
            await engine.dispose()
    finally:
        if embedded is not None:
            await asyncio.shield(asyncio.to_thread(embedded.stop))


async def _start_embedded(embedded: EmbeddedPostgres) -> str:
    starting = asyncio.ensure_future(asyncio.to_thread(embedded.start))
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        # The thread cannot be interrupted: let initdb/pg_ctl finish, then stop what it started.
        with contextlib.suppress(Exception):
            await starting
        await asyncio.to_thread(embedded.stop)
        raise
