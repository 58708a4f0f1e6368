"""The person's files: lookups scoped to one user, the stored bytes and Files API copies, the
`user_files` rows, and housekeeping.

Every lookup by a model-supplied `file_id` goes through `resolve`, which only ever queries by
(user_id, id): another user's file, a deleted one and a malformed id look the same ("not found").
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import UserFile
from bot.providers.anthropic import ClaudeGateway
from bot.services.blobs import BlobMissing, Blobs
from bot.services.media import ImageProcessor, PreparedImage

log = structlog.get_logger(__name__)

GENERATED_MAX_BYTES = 50 * 1024 * 1024  # what Telegram takes as a document
MAX_FILE_ID = 2**63 - 1
_FILE_ID = re.compile(r"[0-9]{1,19}")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
EXPIRE_BATCH = 200


@dataclass(frozen=True)
class StoredFileRef:
    """A user's file, found by (user_id, id)."""

    id: int
    user_id: int
    kind: str
    source: str
    mime_type: str
    size_bytes: int
    width: int | None
    height: int | None
    sha256: str
    claude_file_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewFile:
    """A `user_files` row to insert."""

    user_id: int
    source: str
    kind: str
    filename: str
    prepared: PreparedImage
    sha256: str
    claude_file_id: str | None
    telegram_file_id: str | None
    telegram_file_unique_id: str | None
    metadata: dict[str, Any]
    api_call_id: int | None = None

    def with_charge(self, api_call_id: int | None, metadata: dict[str, Any]) -> NewFile:
        return replace(self, api_call_id=api_call_id, metadata=self.metadata | metadata)


def parse_file_id(raw: object) -> int | None:
    """The numeric id in a model-supplied `file_id`, or None when it cannot be one of ours."""
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not _FILE_ID.fullmatch(text):
        return None
    value = int(text)
    return value if 0 < value <= MAX_FILE_ID else None


def shown_id(raw: object) -> str:
    """A model-supplied id, shortened and cleaned for an error message."""
    text = re.sub(r"[^\w:.-]", "", str(raw))[:40]
    return text or "(empty)"


@dataclass(frozen=True)
class FilesConfig:
    retention: timedelta
    blob_retention: timedelta
    image_model: str


class FileService:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        claude: ClaudeGateway,
        blobs: Blobs,
        processor: ImageProcessor,
        config: FilesConfig,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._claude = claude
        self._blobs = blobs
        self._processor = processor
        self._config = config

    def blob_file(self, prepared: PreparedImage) -> Path | None:
        """Where the image's original is (or will be) stored on this machine's disk; None with
        a store elsewhere (S3)."""
        return self._blobs.local_file(prepared.sha256)

    async def store_blob(self, prepared: PreparedImage) -> str:
        """Keep the original bytes; returns their sha256. When blobs are files on this machine,
        the image lets go of its bytes once they are written and synced, and its original is
        read from the blob's file from then on."""
        if prepared.original_file is not None:
            return prepared.sha256
        sha256 = await self._blobs.put(prepared.original)
        stored = self._blobs.local_file(sha256)
        if stored is not None:
            prepared.original_image.stored_in(stored)
        return sha256

    async def upload_preview(self, prepared: PreparedImage, stem: str) -> str | None:
        """The preview's Files API id; None when the upload failed (logged)."""
        extension = "png" if prepared.preview_mime == "image/png" else "jpg"
        try:
            uploaded = await self._claude.upload_file(
                f"{stem}.{extension}", prepared.preview, prepared.preview_mime
            )
        except Exception as exc:
            log.warning("files_api_upload_failed", error=type(exc).__name__)
            return None
        return uploaded.file_id

    # Lookups ---------------------------------------------------------------------------------

    async def resolve(self, user_id: int, raw_file_id: object) -> StoredFileRef | None:
        """The user's own, not deleted file with this id; None for anything else."""
        file_id = parse_file_id(raw_file_id)
        if file_id is None:
            return None
        stmt = select(UserFile).where(
            UserFile.user_id == user_id, UserFile.id == file_id, UserFile.deleted_at.is_(None)
        )
        async with self._sessionmaker() as session:
            row = (await session.execute(stmt)).scalar_one_or_none()
        return None if row is None else _ref(row)

    async def load_original(self, ref: StoredFileRef) -> bytes:
        """The stored bytes; raises BlobMissing when they were purged."""
        return await self._blobs.get(ref.sha256)

    async def image_source(self, ref: StoredFileRef, *, avoid_file_id: bool) -> dict[str, Any]:
        """An image source for Claude: the Files API copy, a fresh upload, or base64 of a
        preview. Raises BlobMissing when a copy is needed and the bytes are gone."""
        if ref.claude_file_id and not avoid_file_id:
            return {"type": "file", "file_id": ref.claude_file_id}
        prepared = await self._processor.prepare_upload(await self.load_original(ref))
        if ref.claude_file_id is None:
            uploaded = await self.upload_preview(prepared, f"file-{ref.id}")
            if uploaded is not None:
                await self._set_claude_file_id(ref, uploaded)
                return {"type": "file", "file_id": uploaded}
        encoded = base64.b64encode(prepared.preview).decode("ascii")
        return {"type": "base64", "media_type": prepared.preview_mime, "data": encoded}

    async def _set_claude_file_id(self, ref: StoredFileRef, claude_file_id: str) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                update(UserFile)
                .where(UserFile.id == ref.id, UserFile.user_id == ref.user_id)
                .values(claude_file_id=claude_file_id)
            )
            await session.commit()

    # Rows ------------------------------------------------------------------------------------

    async def insert(self, row: NewFile) -> int:
        async with self._sessionmaker() as session:
            file_id = await self.insert_in(session, row)
            await session.commit()
        return file_id

    async def insert_in(self, session: AsyncSession, row: NewFile) -> int:
        """Insert within the caller's transaction (a generated file commits with its charge)."""
        prepared = row.prepared
        file_id = await session.scalar(
            insert(UserFile)
            .values(
                user_id=row.user_id,
                source=row.source,
                kind=row.kind,
                filename=row.filename,
                mime_type=prepared.original_mime,
                size_bytes=prepared.size_bytes,
                width=prepared.width,
                height=prepared.height,
                sha256=row.sha256,
                claude_file_id=row.claude_file_id,
                telegram_file_id=row.telegram_file_id,
                telegram_file_unique_id=row.telegram_file_unique_id,
                api_call_id=row.api_call_id,
                metadata_=row.metadata,
                expires_at=datetime.now(UTC) + self._config.retention,
            )
            .returning(UserFile.id)
        )
        assert file_id is not None
        return int(file_id)

    # Housekeeping ----------------------------------------------------------------------------

    async def expire_files(self, now: datetime | None = None) -> int:
        """Delete Files API copies past `expires_at` and mark their rows deleted."""
        cutoff = now or datetime.now(UTC)
        stmt = (
            select(UserFile.id, UserFile.claude_file_id)
            .where(UserFile.deleted_at.is_(None), UserFile.expires_at <= cutoff)
            .order_by(UserFile.id)
            .limit(EXPIRE_BATCH)
        )
        async with self._sessionmaker() as session:
            rows = (await session.execute(stmt)).all()
        expired = 0
        for row_id, claude_file_id in rows:
            if claude_file_id and not await self._delete_remote(claude_file_id):
                continue
            async with self._sessionmaker() as session:
                await session.execute(
                    update(UserFile)
                    .where(UserFile.id == row_id, UserFile.deleted_at.is_(None))
                    .values(deleted_at=datetime.now(UTC))
                )
                await session.commit()
            expired += 1
        if expired:
            log.info("files_expired", count=expired)
        return expired

    async def _delete_remote(self, claude_file_id: str) -> bool:
        try:
            await self._claude.delete_file(claude_file_id)
        except Exception as exc:
            log.warning("files_api_delete_failed", error=type(exc).__name__)
            return False
        return True

    async def housekeeping(self) -> None:
        await self.expire_files()
        await self._blobs.purge_older_than(self._config.blob_retention)

    async def run_housekeeping(self, interval_seconds: float, stop_event: asyncio.Event) -> None:
        """Run housekeeping every `interval_seconds` until `stop_event` is set."""
        while not stop_event.is_set():
            try:
                await self.housekeeping()
            except Exception:
                log.exception("file_housekeeping_failed")
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=interval_seconds)
            except TimeoutError:
                continue


def _ref(row: UserFile) -> StoredFileRef:
    return StoredFileRef(
        id=row.id,
        user_id=row.user_id,
        kind=row.kind,
        source=row.source,
        mime_type=row.mime_type,
        size_bytes=row.size_bytes,
        width=row.width,
        height=row.height,
        sha256=row.sha256,
        claude_file_id=row.claude_file_id,
        metadata=dict(row.metadata_ or {}),
    )


def safe_filename(name: object, prepared: PreparedImage, *, default: str) -> str:
    """A filename safe to send and store, with the extension of the image's real format."""
    raw = name if isinstance(name, str) else ""
    stem = _SAFE_NAME.sub("_", raw.rsplit("/", 1)[-1]).strip(" .")
    stem = stem.rsplit(".", 1)[0][:100] if stem else default
    return f"{stem or default}.{prepared.extension}"


__all__ = [
    "BlobMissing",
    "FileService",
    "FilesConfig",
    "NewFile",
    "StoredFileRef",
    "parse_file_id",
    "safe_filename",
    "shown_id",
]
