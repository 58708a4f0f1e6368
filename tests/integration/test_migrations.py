"""Migration stairway: every revision upgrades, downgrades and upgrades again on real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic import command
from alembic.script import Script, ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.migrate import alembic_config
from bot.db.models import Base
from bot.db.session import create_engine
from tests.pg import TestPostgres


def _revisions() -> list[Script]:
    scripts = ScriptDirectory.from_config(alembic_config())
    return list(reversed(list(scripts.walk_revisions("base", "heads"))))


@pytest.fixture
async def empty_engine(test_postgres: TestPostgres) -> AsyncIterator[AsyncEngine]:
    name = f"stairway_{id(object())}"
    conn = await test_postgres._admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    engine = create_engine(test_postgres.url_for(name))
    yield engine
    await engine.dispose()
    await test_postgres.drop_database(name)


async def _run(engine: AsyncEngine, action: str, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: getattr(command, action)(alembic_config(sync), revision))


@pytest.mark.parametrize("revision", _revisions(), ids=lambda r: r.revision)
async def test_migration_stairway(empty_engine: AsyncEngine, revision: Script) -> None:
    down = revision.down_revision or "base"
    assert isinstance(down, str)
    if down != "base":
        await _run(empty_engine, "upgrade", down)
    await _run(empty_engine, "upgrade", revision.revision)
    await _run(empty_engine, "downgrade", down)
    await _run(empty_engine, "upgrade", revision.revision)


async def test_head_matches_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        views = await conn.run_sync(lambda sync: set(inspect(sync).get_view_names()))
    assert set(Base.metadata.tables) <= tables
    assert {"admin_user_costs", "admin_daily_costs", "admin_image_generations"} <= views


async def test_ledger_is_append_only(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO users (id, balance_micros) VALUES (1, 5)"))
        await conn.execute(
            text(
                "INSERT INTO balance_operations (user_id, kind, amount_micros,"
                " balance_after_micros, idempotency_key) VALUES (1, 'topup', 5, 5, 'k1')"
            )
        )
    with pytest.raises(Exception, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE balance_operations SET amount_micros = 6"))
    with pytest.raises(Exception, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM balance_operations"))


async def test_balance_cannot_go_negative(engine: AsyncEngine) -> None:
    with pytest.raises(Exception, match="balance_non_negative"):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO users (id, balance_micros) VALUES (2, -1)"))


def test_head_revision_matches_alembic() -> None:
    from alembic.script import ScriptDirectory

    from bot.db.migrate import head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_a_database_at_head_is_recognised(engine: AsyncEngine) -> None:
    from bot.db.migrate import current_revision, head_revision

    async with engine.connect() as conn:
        assert await current_revision(conn) == head_revision()
