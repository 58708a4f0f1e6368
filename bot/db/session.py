"""Engine and session factories (no module-level globals)."""

from __future__ import annotations

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def create_engine(url: str | URL, *, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
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
