"""Apply alembic migrations from inside the bot, under a Postgres advisory lock.

A database already at the newest revision is recognised with one query, so a normal start
neither imports alembic nor takes the lock.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

log = structlog.get_logger(__name__)

MIGRATIONS_LOCK_KEY = 7_303_411_001
PROJECT_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_DIR = PROJECT_ROOT / "migrations" / "versions"
_REVISION = re.compile(r"^revision: str = [\"'](?P<id>[^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision: [^=]+= (?P<id>None|[\"'][^\"']+[\"'])", re.MULTILINE)


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision(versions_dir: Path = VERSIONS_DIR) -> str | None:
    """The single newest revision id, read from the revision files; None if unclear."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions_dir.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision["id"])
        if down["id"] != "None":
            parents.add(down["id"].strip("\"'"))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def current_revision(conn: AsyncConnection) -> str | None:
    exists = (await conn.execute(text("SELECT to_regclass('alembic_version')"))).scalar()
    if exists is None:
        return None
    return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """`alembic upgrade head`, serialized across processes by an advisory lock."""
    head = head_revision()
    async with engine.connect() as conn:
        if head is not None and await current_revision(conn) == head:
            await conn.rollback()
            log.info("migrations_up_to_date", revision=head)
            return
        await conn.rollback()
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATIONS_LOCK_KEY})
        await conn.commit()
        try:
            await conn.run_sync(_upgrade)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATIONS_LOCK_KEY})
            await conn.commit()
    log.info("migrations_applied")


def _upgrade(sync: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(sync), "head")
