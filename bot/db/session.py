"""Engine and session factories (no module-level globals)."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = structlog.get_logger(__name__)

POOL_SIZE = 10
WARM_UP_SECONDS = 30.0


def create_engine(
    url: str | URL, *, pool_size: int = POOL_SIZE, max_overflow: int = 20
) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # The most recently returned connection is handed out next. One person's turn then runs
        # on a connection that has already prepared its statements, and whose server process is
        # awake; a queue would rotate through every pooled connection, each preparing every
        # statement (and looking up the JSON types) once more, an extra round trip each time.
        pool_use_lifo=True,
        pool_pre_ping=False,
        connect_args={"server_settings": {"application_name": "telegram-assistant-bot"}},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def warm_pool(engine: AsyncEngine, connections: int = POOL_SIZE) -> None:
    """Opens `connections` of the pool's connections together, then hands them back to it.

    The pool otherwise opens a connection when a moment first needs one more than it has: the
    first burst after a start (eight images arriving together) paid for several, each a new
    server process whose first statements took 20-100 ms (its catalog caches cold, the JSON
    codecs looked up, every statement prepared again). A failure only costs the warm-up."""
    opened = 0
    everyone_in = asyncio.Event()

    async def hold_one() -> None:
        nonlocal opened
        async with engine.connect():
            opened += 1
            if opened == connections:
                everyone_in.set()
            await everyone_in.wait()

    try:
        # A task group: one connection failing releases the others at once.
        async with asyncio.timeout(WARM_UP_SECONDS), asyncio.TaskGroup() as group:
            for _ in range(connections):
                group.create_task(hold_one())
    except Exception as exc:
        log.warning("db_pool_warm_up_failed", opened=opened, error=type(exc).__name__)
        return
    log.info("db_pool_warmed", connections=connections)
