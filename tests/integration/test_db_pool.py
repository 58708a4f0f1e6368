"""The connection pool is filled at start, so a first burst of statements opens no connection."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.direct import DirectSQL
from bot.db.session import warm_pool


def count_new_connections(engine: AsyncEngine) -> list[object]:
    """A list that grows by one each time the pool opens a new database connection."""
    opened: list[object] = []

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        opened.append(dbapi_connection)

    event.listen(engine.sync_engine, "connect", on_connect)
    return opened


async def burst(engine: AsyncEngine, statements: int) -> None:
    """Statements in flight at once, each holding its connection for a moment."""
    sql = DirectSQL(engine)
    await asyncio.gather(*(sql.fetchval("SELECT pg_sleep(0.05)") for _ in range(statements)))


async def test_a_warmed_pool_serves_a_burst_without_new_connections(engine: AsyncEngine) -> None:
    opened = count_new_connections(engine)
    await warm_pool(engine, 6)
    assert len(opened) == 6
    await burst(engine, 6)
    assert len(opened) == 6


async def test_a_cold_pool_opens_connections_for_the_same_burst(engine: AsyncEngine) -> None:
    """The same burst on a pool that was not warmed: what the warm-up spares the first turns."""
    opened = count_new_connections(engine)
    await burst(engine, 6)
    assert len(opened) == 6
