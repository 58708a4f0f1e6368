"""The inbox: every update is recorded before any side effect, so duplicates stop here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL
from bot.db.models import InboundUpdate

UNFINISHED = ("received", "processing", "interrupted")


@dataclass(frozen=True)
class InboundRecord:
    update_id: int
    user_id: int | None
    chat_id: int | None
    kind: str


@dataclass(frozen=True)
class UnfinishedUpdate:
    update_id: int
    user_id: int | None
    chat_id: int | None
    status: str


_RECORD_BATCH = """
    INSERT INTO inbound_updates (update_id, user_id, chat_id, kind)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[])
    ON CONFLICT (update_id) DO NOTHING
    RETURNING update_id
"""
_MARK = """
    UPDATE inbound_updates
    SET status = $2, error = $3, finished_at = CASE WHEN $4 THEN now() ELSE finished_at END
    WHERE update_id = $1
"""


class Inbox:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._sql = DirectSQL.of(sessionmaker)

    async def record(self, records: Sequence[InboundRecord]) -> set[int]:
        """Insert a batch in one statement; returns the ids seen for the first time."""
        if not records:
            return set()
        rows = await self._sql.fetch(
            _RECORD_BATCH,
            [r.update_id for r in records],
            [r.user_id for r in records],
            [r.chat_id for r in records],
            [r.kind for r in records],
        )
        return {int(row["update_id"]) for row in rows}

    async def mark(self, update_id: int, status: str, *, error: str | None = None) -> None:
        await self._sql.execute(_MARK, update_id, status, error, status not in UNFINISHED)

    async def unfinished_before(self, boot_time: datetime) -> list[UnfinishedUpdate]:
        stmt = (
            select(
                InboundUpdate.update_id,
                InboundUpdate.user_id,
                InboundUpdate.chat_id,
                InboundUpdate.status,
            )
            .where(InboundUpdate.status.in_(UNFINISHED), InboundUpdate.received_at < boot_time)
            .order_by(InboundUpdate.update_id)
        )
        async with self._sessionmaker() as session:
            rows = (await session.execute(stmt)).all()
        return [UnfinishedUpdate(*row) for row in rows]
