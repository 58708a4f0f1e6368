"""Throwaway Postgres for tests: one pgserver cluster per session (per xdist worker), one fresh
database per test."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from bot.db.embedded import EmbeddedPostgres
from bot.db.migrate import upgrade_to_head
from bot.db.session import create_engine

# Each xdist worker keeps its own template, so workers sharing a TEST_DATABASE_URL server never drop
# or copy each other's.
TEMPLATE_DB = f"bot_test_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
# The embedded cluster trusts its socket, so this password is never checked; it is in every
# DATABASE_URL the bot gets so the leak scan can prove the bot never logs or sends it.
FAKE_DB_PASSWORD = "test-db-password-not-real-7f3a"


class TestPostgres:
    __test__ = False

    """A server (embedded or TEST_DATABASE_URL) that hands out migrated databases."""

    def __init__(self) -> None:
        self._embedded: EmbeddedPostgres | None = None
        self.server_url = ""

    def start(self) -> None:
        external = os.environ.get("TEST_DATABASE_URL")
        if external:
            self.server_url = external
            return
        self._embedded = EmbeddedPostgres(
            Path(tempfile.mkdtemp(prefix="bot-test-pg-")) / "pg", delete_on_stop=True
        )
        url = make_url(self._embedded.start()).set(password=FAKE_DB_PASSWORD)
        self.server_url = url.render_as_string(hide_password=False)

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()

    def url_for(self, database: str) -> str:
        return (
            make_url(self.server_url).set(database=database).render_as_string(hide_password=False)
        )

    async def _admin(self) -> asyncpg.Connection:
        url = make_url(self.url_for("postgres"))
        return await asyncpg.connect(
            user=url.username,
            password=url.password,
            database=url.database,
            host=url.query.get("host") or url.host,
            port=url.port,
        )

    async def create_template(self) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        finally:
            await conn.close()
        engine = create_engine(self.url_for(TEMPLATE_DB))
        await upgrade_to_head(engine)
        await engine.dispose()

    async def create_database(self) -> str:
        name = f"bot_test_{uuid.uuid4().hex[:12]}"
        conn = await self._admin()
        try:
            for attempt in range(20):
                try:
                    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
                    break
                except asyncpg.ObjectInUseError:
                    await asyncio.sleep(0.05 * (attempt + 1))
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
