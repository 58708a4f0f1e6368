"""The inbox: every update is recorded before any side effect, so duplicates stop here.

An update id counts as a duplicate only within `DUPLICATE_WINDOW` (7 days): after a week without
updates Telegram may start again from a random id, so an id seen long ago is a new update. Rows
older than the window are purged periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL
from bot.db.models import InboundUpdate

log = structlog.get_logger(__name__)

UNFINISHED = ("received", "processing", "interrupted")
DUPLICATE_WINDOW = timedelta(days=7)
PURGE_INTERVAL_SECONDS = 3600.0


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
    ON CONFLICT (update_id) DO UPDATE
    SET user_id = EXCLUDED.user_id, chat_id = EXCLUDED.chat_id, kind = EXCLUDED.kind,
        status = 'received', error = NULL, received_at = now(), finished_at = NULL
    WHERE inbound_updates.received_at < now() - make_interval(secs => $5)
    RETURNING update_id
"""
_PURGE = """
    DELETE FROM inbound_updates WHERE received_at < now() - make_interval(secs => $1)
"""
_MARK = """
    UPDATE inbound_updates
    SET status = $2, error = $3, finished_at = CASE WHEN $4 THEN now() ELSE finished_at END
    WHERE update_id = $1
"""


class Inbox:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        duplicate_window: timedelta = DUPLICATE_WINDOW,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._sql = DirectSQL.of(sessionmaker)
        self._window_seconds = duplicate_window.total_seconds()

    async def record(self, records: Sequence[InboundRecord]) -> set[int]:
        """Insert a batch in one statement; returns the ids not seen within the window."""
        if not records:
            return set()
        # One row per id: a batch may repeat an update, and an upsert touches a row only once.
        unique = list({r.update_id: r for r in reversed(records)}.values())
        rows = await self._sql.fetch(
            _RECORD_BATCH,
            [r.update_id for r in unique],
            [r.user_id for r in unique],
            [r.chat_id for r in unique],
            [r.kind for r in unique],
            self._window_seconds,
        )
        return {int(row["update_id"]) for row in rows}

    async def purge(self) -> int:
        """Delete the rows older than the duplicate window; returns how many."""
        status = await self._sql.execute(_PURGE, self._window_seconds)
        return int(status.rsplit(" ", 1)[-1])

    async def run_purge(self, interval: float, stop: asyncio.Event) -> None:
        """Purge every `interval` seconds until `stop` (the first after one interval)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                return
            try:
                purged = await self.purge()
            except Exception:
                log.exception("inbox_purge_failed")
                continue
            if purged:
                log.info("inbox_purged", rows=purged)

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
