"""Files in and out: intake of the user's images, delivery of generated ones, lookups scoped to
one user, and housekeeping of Files API copies and blobs.

Every lookup by a model-supplied `file_id` goes through `resolve`, which only ever queries by
(user_id, id): another user's file, a deleted one and a malformed id look the same ("not found").
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramEntityTooLarge
from aiogram.types import BufferedInputFile, Message
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.agent.tools.base import ToolContext
from bot.db.models import UserFile
from bot.integrations.anthropic import ClaudeGateway
from bot.services.billing import BillingService, CallRecord, Hold
from bot.services.blobs import BlobMissing, Blobs
from bot.services.chat import Attachment, IntakeResult, UserFacingError
from bot.services.media import (
    ImageProcessor,
    MediaRejected,
    PreparedImage,
    plan_delivery,
    rejected_too_large,
)
from bot.telegram.i18n import N_, _

log = structlog.get_logger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
GENERATED_MAX_BYTES = 50 * 1024 * 1024  # what Telegram takes as a document
MAX_FILE_ID = 2**63 - 1
_FILE_ID = re.compile(r"[0-9]{1,19}")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
EXPIRE_BATCH = 200
DOWNLOAD_TIMEOUT_SECONDS = 60

DOWNLOAD_FAILED_REPLY = N_("I couldn't download that file from Telegram. Please send it again.")
UPLOAD_FAILED_REPLY = N_("I couldn't process the image right now. Please try again in a minute.")
GENERATED_INVALID = "the image model returned an unusable image; nothing was charged"
SEND_FAILED = "the image could not be sent to the chat; nothing was charged"


@dataclass(frozen=True)
class PendingCharge:
    """A hold and the call record to settle it with, once the file is delivered."""

    hold: Hold
    record: CallRecord


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
class Delivery:
    sent_as: list[str]
    telegram_file_id: str | None
    telegram_file_unique_id: str | None


class _DownloadTooLarge(Exception):
    pass


class _CappedBuffer(io.BytesIO):
    """A download destination that refuses to grow past `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self._limit:
            raise _DownloadTooLarge
        return super().write(data)


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
        bot: Bot,
        claude: ClaudeGateway,
        blobs: Blobs,
        processor: ImageProcessor,
        billing: BillingService,
        config: FilesConfig,
        generated_processor: ImageProcessor | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._bot = bot
        self._claude = claude
        self._blobs = blobs
        self._processor = processor
        self._generated_processor = generated_processor or processor
        self._billing = billing
        self._config = config

    @property
    def _max_bytes(self) -> int:
        return min(self._processor.limits.max_bytes, TELEGRAM_DOWNLOAD_LIMIT)

    # Intake ----------------------------------------------------------------------------------

    async def intake(self, user_id: int, attachment: Attachment) -> IntakeResult:
        """Check, download, validate, store and upload one attached image."""
        self._check_declared_size(attachment.file_size)
        data = await self._download(attachment.telegram_file_id)
        try:
            prepared = await self._processor.prepare_upload(data, filename_hint=attachment.filename)
        except MediaRejected as exc:
            raise UserFacingError(exc.user_message, f"rejected_{exc.reason}") from None
        del data
        sha256 = await self._blobs.put(prepared.original)
        claude_file_id = await self._upload_preview(prepared, f"upload-{sha256[:12]}")
        if claude_file_id is None:
            raise UserFacingError(UPLOAD_FAILED_REPLY, "files_api_upload_failed")
        file_id = await self._insert(
            user_id=user_id,
            source="user",
            kind=attachment.kind if attachment.kind in ("photo", "document") else "document",
            filename=_filename(attachment.filename, prepared),
            prepared=prepared,
            sha256=sha256,
            claude_file_id=claude_file_id,
            telegram_file_id=attachment.telegram_file_id,
            telegram_file_unique_id=attachment.telegram_file_unique_id,
            metadata={"source_format": prepared.source_format},
        )
        log.info("file_received", user_id=user_id, file_id=file_id, bytes=prepared.size_bytes)
        return IntakeResult(file_id=file_id, claude_file_id=claude_file_id)

    def _check_declared_size(self, size: int | None) -> None:
        if size is not None and size > self._max_bytes:
            exc = rejected_too_large(size, self._max_bytes)
            raise UserFacingError(exc.user_message, "rejected_too_large")

    async def _download(self, telegram_file_id: str) -> bytes:
        try:
            file = await self._bot.get_file(telegram_file_id)
        except TelegramBadRequest as exc:
            if "too big" in exc.message.lower():
                raise self._too_large(None) from None
            raise UserFacingError(DOWNLOAD_FAILED_REPLY, "download_failed") from None
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError):
            raise UserFacingError(DOWNLOAD_FAILED_REPLY, "download_failed") from None
        self._check_declared_size(file.file_size)
        if not file.file_path:
            raise self._too_large(file.file_size)
        buffer = _CappedBuffer(self._max_bytes)
        try:
            await self._bot.download_file(
                file.file_path, destination=buffer, timeout=DOWNLOAD_TIMEOUT_SECONDS
            )
        except _DownloadTooLarge:
            raise self._too_large(None) from None
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError):
            raise UserFacingError(DOWNLOAD_FAILED_REPLY, "download_failed") from None
        return buffer.getvalue()

    def _too_large(self, size: int | None) -> UserFacingError:
        exc = rejected_too_large(size or self._max_bytes + 1, self._max_bytes)
        message = exc.user_message if size else _over_limit_message(self._max_bytes)
        return UserFacingError(message, "rejected_too_large")

    async def _upload_preview(self, prepared: PreparedImage, stem: str) -> str | None:
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
            uploaded = await self._upload_preview(prepared, f"file-{ref.id}")
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

    # Delivery (the agent loop's FileSink) ----------------------------------------------------

    async def deliver(self, files: list[dict[str, Any]], ctx: ToolContext) -> list[dict[str, Any]]:
        """Validate, store, upload, send and record each file; settle its charge only after the
        file reached the chat. Never raises for a bad file; never returns bytes."""
        results = []
        for entry in files:
            charge = entry.get("charge")
            pending = charge if isinstance(charge, PendingCharge) else None
            try:
                results.append(await self._deliver_one(entry, pending, ctx))
            except asyncio.CancelledError:
                await asyncio.shield(self._settle_failed(pending, "interrupted"))
                raise
            except Exception:
                log.exception("file_delivery_crashed", tool_use_id=ctx.tool_use_id)
                await asyncio.shield(self._settle_failed(pending, "delivery_crashed"))
                results.append({"delivered": False, "error": "internal error"})
        return results

    async def _deliver_one(
        self, entry: dict[str, Any], charge: PendingCharge | None, ctx: ToolContext
    ) -> dict[str, Any]:
        content = entry.get("content")
        if not isinstance(content, bytes):
            await self._settle_failed(charge, "no_content")
            return {"delivered": False, "error": GENERATED_INVALID}
        try:
            prepared = await self._generated_processor.validate_generated(
                content, str(entry.get("mime_type") or "")
            )
        except MediaRejected as exc:
            await self._settle_failed(charge, f"invalid_image: {exc.reason}")
            return {"delivered": False, "error": GENERATED_INVALID}
        sha256 = await self._blobs.put(prepared.original)
        filename = _generated_filename(entry.get("filename"), prepared)
        image_size = entry.get("image_size")
        try:
            delivery = await self._send(
                ctx.chat_id,
                prepared,
                filename,
                str(image_size) if image_size else None,
                thread_id=ctx.message_thread_id,
            )
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("file_send_failed", chat_id=ctx.chat_id, error=type(exc).__name__)
            await self._settle_failed(charge, f"send_failed: {type(exc).__name__}")
            return {"delivered": False, "error": SEND_FAILED}
        api_call_id, charged = await self._settle_delivered(charge)
        claude_file_id = await self._upload_preview(prepared, f"generated-{sha256[:12]}")
        metadata = dict(entry.get("metadata") or {})
        file_id = await self._insert(
            user_id=ctx.user_id,
            source="assistant",
            kind="generated",
            filename=filename,
            prepared=prepared,
            sha256=sha256,
            claude_file_id=claude_file_id,
            telegram_file_id=delivery.telegram_file_id,
            telegram_file_unique_id=delivery.telegram_file_unique_id,
            metadata=metadata | {"charged_micros": charged},
            api_call_id=api_call_id,
        )
        log.info(
            "file_delivered",
            user_id=ctx.user_id,
            file_id=file_id,
            sent_as="+".join(delivery.sent_as),
            bytes=prepared.size_bytes,
            files_api=claude_file_id is not None,
        )
        return {
            "file_id": str(file_id),
            "delivered": True,
            "sent_as": "+".join(delivery.sent_as),
            "width": prepared.width,
            "height": prepared.height,
            "size_bytes": prepared.size_bytes,
        }

    async def _send(
        self,
        chat_id: int,
        prepared: PreparedImage,
        filename: str,
        image_size: str | None,
        *,
        thread_id: int | None = None,
    ) -> Delivery:
        plan = plan_delivery(
            prepared.width, prepared.height, prepared.size_bytes, image_size=image_size
        )
        sent_as: list[str] = []
        file_ids: tuple[str | None, str | None] = (None, None)
        if plan.as_photo:
            message = await self._send_photo(chat_id, prepared.original, filename, thread_id)
            if message is not None and message.photo:
                sent_as.append("photo")
                file_ids = (message.photo[-1].file_id, message.photo[-1].file_unique_id)
        if plan.also_document or not sent_as:
            message = await self._bot.send_document(
                chat_id,
                BufferedInputFile(prepared.original, filename=filename),
                message_thread_id=thread_id,
            )
            sent_as.append("document")
            if message.document is not None and file_ids[0] is None:
                file_ids = (message.document.file_id, message.document.file_unique_id)
        return Delivery(sent_as, *file_ids)

    async def _send_photo(
        self, chat_id: int, data: bytes, filename: str, thread_id: int | None = None
    ) -> Message | None:
        """A photo, or None when Telegram refuses this image as a photo (send a document)."""
        try:
            return await self._bot.send_photo(
                chat_id, BufferedInputFile(data, filename=filename), message_thread_id=thread_id
            )
        except TelegramEntityTooLarge:
            log.info("photo_refused", chat_id=chat_id, reason="too_large")
            return None
        except TelegramBadRequest as exc:
            text = exc.message.upper()
            if "PHOTO_" in text or "TOO BIG" in text or "IMAGE_PROCESS_FAILED" in text:
                log.info("photo_refused", chat_id=chat_id, reason=exc.message[:100])
                return None
            raise

    async def _settle_delivered(self, charge: PendingCharge | None) -> tuple[int | None, int]:
        if charge is None:
            return None, 0
        settlement = await asyncio.shield(self._billing.settle(charge.hold, charge.record))
        return settlement.api_call_id, settlement.charged_micros

    async def _settle_failed(self, charge: PendingCharge | None, error: str) -> None:
        if charge is None:
            return
        record = charge.record
        failed = CallRecord(
            user_id=record.user_id,
            provider=record.provider,
            model=record.model,
            purpose=record.purpose,
            status="error",
            provider_cost_micros=record.provider_cost_micros,
            price_version=record.price_version,
            tool_use_id=record.tool_use_id,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            image_count=record.image_count,
            image_size=record.image_size,
            image_output_tokens=record.image_output_tokens,
            image_list_price_micros=record.image_list_price_micros,
            error=error,
            request_id=record.request_id,
            duration_ms=record.duration_ms,
        )
        try:
            await self._billing.settle(charge.hold, failed)
        except Exception:
            log.exception("settle_failed_delivery_failed", hold_id=charge.hold.id)

    # Rows ------------------------------------------------------------------------------------

    async def _insert(
        self,
        *,
        user_id: int,
        source: str,
        kind: str,
        filename: str,
        prepared: PreparedImage,
        sha256: str,
        claude_file_id: str | None,
        telegram_file_id: str | None,
        telegram_file_unique_id: str | None,
        metadata: dict[str, Any],
        api_call_id: int | None = None,
    ) -> int:
        values = {
            "user_id": user_id,
            "source": source,
            "kind": kind,
            "filename": filename,
            "mime_type": prepared.original_mime,
            "size_bytes": prepared.size_bytes,
            "width": prepared.width,
            "height": prepared.height,
            "sha256": sha256,
            "claude_file_id": claude_file_id,
            "telegram_file_id": telegram_file_id,
            "telegram_file_unique_id": telegram_file_unique_id,
            "api_call_id": api_call_id,
            "metadata_": metadata,
            "expires_at": datetime.now(UTC) + self._config.retention,
        }
        async with self._sessionmaker() as session:
            file_id = await session.scalar(insert(UserFile).values(**values).returning(UserFile.id))
            await session.commit()
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


def _filename(name: str | None, prepared: PreparedImage) -> str:
    stem = _SAFE_NAME.sub("_", (name or "").rsplit("/", 1)[-1]).strip(" .")
    stem = stem.rsplit(".", 1)[0][:100] if stem else "photo"
    return f"{stem or 'photo'}.{prepared.extension}"


def _generated_filename(name: object, prepared: PreparedImage) -> str:
    return _filename(str(name) if isinstance(name, str) else "image", prepared)


def _over_limit_message(max_bytes: int) -> str:
    limit = rejected_too_large(max_bytes, max_bytes).user_message.split("; ", 1)[-1]
    return _("This file is too large; {limit}").format(limit=limit)


__all__ = [
    "BlobMissing",
    "FileService",
    "FilesConfig",
    "PendingCharge",
    "StoredFileRef",
    "parse_file_id",
    "shown_id",
]
