"""The `user_files` rows of the files people send (PDFs, text files, voice notes): written on
their own, or in the transaction that captures the file's charge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import UserFile
from bot.services.incoming import Attachment
from bot.services.ledger import Settlement
from bot.services.metered import PendingCharge


class UploadRows:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], retention: timedelta
    ) -> None:
        self._sessionmaker = sessionmaker
        self._retention = retention

    def row(
        self,
        user_id: int,
        attachment: Attachment,
        *,
        kind: str,
        filename: str,
        mime_type: str,
        data: bytes,
        sha256: str,
        claude_file_id: str | None,
        metadata: dict[str, Any],
    ) -> dict[str, Any]:
        """The values of the file's `user_files` row."""
        return {
            "user_id": user_id,
            "source": "user",
            "kind": kind,
            "filename": filename,
            "mime_type": mime_type,
            "size_bytes": len(data),
            "sha256": sha256,
            "claude_file_id": claude_file_id,
            "telegram_file_id": attachment.telegram_file_id,
            "telegram_file_unique_id": attachment.telegram_file_unique_id,
            "api_call_id": None,
            "metadata_": metadata,
            "expires_at": datetime.now(UTC) + self._retention,
        }

    async def insert(self, row: dict[str, Any]) -> int:
        async with self._sessionmaker() as session:
            file_id = await _insert_row(session, row)
            await session.commit()
        return file_id

    async def insert_charged(self, row: dict[str, Any], charge: PendingCharge) -> Settlement:
        """The row written in the transaction that captures `charge`: the person is charged for
        the file exactly when its row exists."""

        async def attach(session: AsyncSession, settlement: Settlement) -> int:
            return await _insert_row(session, {**row, "api_call_id": settlement.api_call_id})

        settlement = await charge.capture(attach=attach)
        assert settlement.attached_id is not None
        return settlement


async def _insert_row(session: AsyncSession, row: dict[str, Any]) -> int:
    file_id = await session.scalar(insert(UserFile).values(**row).returning(UserFile.id))
    assert file_id is not None
    return int(file_id)
