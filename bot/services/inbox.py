"""The inbox: every update is recorded before any side effect, so duplicates stop here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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


class Inbox:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def record(self, records: Sequence[InboundRecord]) -> set[int]:
        """Insert a batch in one round trip; returns the ids seen for the first time."""
        if not records:
            return set()
        stmt = (
            insert(InboundUpdate)
            .values(
                [
                    {
                        "update_id": r.update_id,
                        "user_id": r.user_id,
                        "chat_id": r.chat_id,
                        "kind": r.kind,
                    }
                    for r in records
                ]
            )
            .on_conflict_do_nothing(index_elements=[InboundUpdate.update_id])
            .returning(InboundUpdate.update_id)
        )
        async with self._sessionmaker() as session:
            fresh = set((await session.execute(stmt)).scalars())
            await session.commit()
        return fresh

    async def mark(self, update_id: int, status: str, *, error: str | None = None) -> None:
        finished = status not in UNFINISHED
        values: dict[str, object] = {"status": status, "error": error}
        if finished:
            values["finished_at"] = func.now()
        async with self._sessionmaker() as session:
            await session.execute(
                update(InboundUpdate).where(InboundUpdate.update_id == update_id).values(**values)
            )
            await session.commit()

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
