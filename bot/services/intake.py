"""Intake of the person's images: size checks, download from Telegram, validation, storage,
upload of a preview to the Files API, and the `user_files` row."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest

from bot.i18n import N_, _
from bot.services.files import FileService, NewFile, safe_filename
from bot.services.incoming import Attachment, IntakeResult, UserFacingError
from bot.services.media import ImageProcessor, MediaRejected, rejected_too_large

log = structlog.get_logger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
DOWNLOAD_TIMEOUT_SECONDS = 60
DOWNLOAD_FAILED_REPLY = N_("I couldn't download that file from Telegram. Please send it again.")
UPLOAD_FAILED_REPLY = N_("I couldn't process the image right now. Please try again in a minute.")


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


class ImageIntake:
    """The chat turn's AttachmentIntake."""

    def __init__(self, *, bot: Bot, files: FileService, processor: ImageProcessor) -> None:
        self._bot = bot
        self._files = files
        self._processor = processor

    @property
    def _max_bytes(self) -> int:
        return min(self._processor.limits.max_bytes, TELEGRAM_DOWNLOAD_LIMIT)

    async def intake(self, user_id: int, attachment: Attachment) -> IntakeResult:
        """Check, download, validate, store and upload one attached image."""
        self._check_declared_size(attachment.file_size)
        data = await self._download(attachment.telegram_file_id)
        try:
            prepared = await self._processor.prepare_upload(data, filename_hint=attachment.filename)
        except MediaRejected as exc:
            raise UserFacingError(exc.user_message, f"rejected_{exc.reason}") from None
        del data
        sha256 = await self._files.store_blob(prepared)
        claude_file_id = await self._files.upload_preview(prepared, f"upload-{sha256[:12]}")
        if claude_file_id is None:
            raise UserFacingError(UPLOAD_FAILED_REPLY, "files_api_upload_failed")
        file_id = await self._files.insert(
            NewFile(
                user_id=user_id,
                source="user",
                kind=attachment.kind if attachment.kind in ("photo", "document") else "document",
                filename=safe_filename(attachment.filename, prepared, default="photo"),
                prepared=prepared,
                sha256=sha256,
                claude_file_id=claude_file_id,
                telegram_file_id=attachment.telegram_file_id,
                telegram_file_unique_id=attachment.telegram_file_unique_id,
                metadata={"source_format": prepared.source_format},
            )
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


def _over_limit_message(max_bytes: int) -> str:
    limit = rejected_too_large(max_bytes, max_bytes).user_message.split("; ", 1)[-1]
    return _("This file is too large; {limit}").format(limit=limit)
