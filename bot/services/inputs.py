"""Intake of everything a person can attach: images go to the image intake as before; PDFs, text
files, voice notes and audio files are checked, stored and turned into what Claude reads here.

Every refusal is a `UserFacingError` with a plain reply, raised before anything is charged: sizes
and durations from Telegram's own numbers before any download, content checks before any upload
or provider call. The one paid call of intake is transcription, which holds, calls, records one
`api_calls` row (purpose `transcribe`) and captures or releases like every other paid call.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import aiohttp
import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.providers.anthropic import ClaudeGateway, UploadedFile
from bot.providers.gemini_audio import GeminiTranscriber, Transcript, TranscriptionFailed
from bot.services.audio import AUDIO_EXTENSIONS, declared_audio, ogg_seconds, sniff_audio
from bot.services.blobs import Blobs, put_while
from bot.services.documents import (
    MAX_PDF_BYTES,
    MAX_TEXT_BYTES,
    PDF_MIME,
    PDF_TOO_LARGE_REPLY,
    TEXT_TOO_LARGE_REPLY,
    DocumentRejected,
    check_pdf,
    decode_text,
    is_pdf,
    is_text,
)
from bot.services.incoming import Attachment, IntakeResult, UserFacingError
from bot.services.input_replies import (
    AUDIO_EMPTY_REPLY,
    AUDIO_NOT_AUDIO_REPLY,
    AUDIO_TOO_LARGE_REPLY,
    AUDIO_UNREADABLE_REPLY,
    DOWNLOAD_FAILED_REPLY,
    NO_SPEECH_REPLY,
    TRANSCRIBE_BUSY_REPLY,
    UPLOAD_FAILED_REPLY,
    audio_too_long_reply,
)
from bot.services.metered import MeteredCalls, PendingCharge
from bot.services.money import format_usd
from bot.services.pdf_worker import PdfChecker
from bot.services.pricing import PriceTable
from bot.services.transcribe import TranscribeMeasure, transcribe_meter
from bot.services.upload_rows import UploadRows

log = structlog.get_logger(__name__)

MEBIBYTE = 1024 * 1024
MAX_AUDIO_BYTES = 20 * MEBIBYTE  # what a bot can download from Telegram
DOWNLOAD_TIMEOUT_SECONDS = 60
TRANSCRIBE_TIMEOUT_SECONDS = 120

_SAFE_NAME = re.compile(r"[^\w.() -]+")


class ImageIntake(Protocol):
    async def intake(self, user_id: int, attachment: Attachment) -> IntakeResult: ...


@dataclass(frozen=True)
class InputsConfig:
    transcribe_model: str
    max_audio_seconds: int
    retention: timedelta


class InputIntake:
    """The chat's AttachmentIntake: routes each attachment by what it says it is."""

    def __init__(
        self,
        *,
        images: ImageIntake,
        sessionmaker: async_sessionmaker[AsyncSession],
        bot: Bot,
        claude: ClaudeGateway,
        blobs: Blobs,
        metered: MeteredCalls,
        prices: PriceTable,
        transcriber: GeminiTranscriber,
        pdf_checker: PdfChecker,
        config: InputsConfig,
    ) -> None:
        self._images = images
        self._bot = bot
        self._claude = claude
        self._blobs = blobs
        self._metered = metered
        self._prices = prices
        self._transcriber = transcriber
        self._pdf_checker = pdf_checker
        self._config = config
        self._rows = UploadRows(sessionmaker, config.retention)

    async def intake(self, user_id: int, attachment: Attachment) -> IntakeResult:
        if attachment.kind in ("voice", "audio") or declared_audio(attachment):
            return await self._audio(user_id, attachment)
        if attachment.kind == "document" and not _declared_image(attachment):
            if is_pdf(attachment.filename, attachment.mime_type):
                return await self._pdf(user_id, attachment)
            if is_text(attachment.filename, attachment.mime_type):
                return await self._text(user_id, attachment)
        return await self._images.intake(user_id, attachment)

    # PDFs ------------------------------------------------------------------------------------

    async def _pdf(self, user_id: int, attachment: Attachment) -> IntakeResult:
        data = await self._download(attachment, MAX_PDF_BYTES, PDF_TOO_LARGE_REPLY)
        try:
            info = await check_pdf(data, self._pdf_checker)
        except DocumentRejected as exc:
            raise UserFacingError(exc.reply, f"rejected_{exc.reason}") from None
        filename = _filename(attachment.filename, "document", "pdf")
        sha256, uploaded = await put_while(self._blobs, data, self._upload(filename, data))
        file_id = await self._rows.insert(
            self._rows.row(
                user_id,
                attachment,
                kind="pdf",
                filename=filename,
                mime_type=PDF_MIME,
                data=data,
                sha256=sha256,
                claude_file_id=uploaded.file_id,
                metadata={"pages": info.pages, "filename": filename},
            )
        )
        log.info("pdf_received", user_id=user_id, file_id=file_id, pages=info.pages)
        return IntakeResult(
            file_id=file_id,
            claude_file_id=uploaded.file_id,
            blocks=(
                pdf_block(uploaded.file_id, filename, info.pages),
                _note(
                    f"The user attached a PDF: file_id {file_id}, {filename}, {info.pages} pages"
                ),
            ),
        )

    async def _upload(self, filename: str, data: bytes) -> UploadedFile:
        try:
            return await self._claude.upload_file(filename, data, PDF_MIME)
        except Exception as exc:
            log.warning("files_api_upload_failed", error=type(exc).__name__)
            raise UserFacingError(UPLOAD_FAILED_REPLY, "files_api_upload_failed") from None

    # Text files ------------------------------------------------------------------------------

    async def _text(self, user_id: int, attachment: Attachment) -> IntakeResult:
        data = await self._download(attachment, MAX_TEXT_BYTES, TEXT_TOO_LARGE_REPLY)
        try:
            text = decode_text(data)
        except DocumentRejected as exc:
            raise UserFacingError(exc.reply, f"rejected_{exc.reason}") from None
        filename = _filename(attachment.filename, "file", "txt")
        sha256 = await self._blobs.put(data)
        file_id = await self._rows.insert(
            self._rows.row(
                user_id,
                attachment,
                kind="text",
                filename=filename,
                mime_type="text/plain",
                data=data,
                sha256=sha256,
                claude_file_id=None,
                metadata={"chars": len(text), "lines": text.count("\n") + 1, "filename": filename},
            )
        )
        log.info("text_file_received", user_id=user_id, file_id=file_id, chars=len(text))
        return IntakeResult(
            file_id=file_id,
            claude_file_id=None,
            blocks=(
                text_file_block(filename, text),
                _note(f"The user attached a text file: file_id {file_id}, {filename}"),
            ),
        )

    # Voice notes and audio files -------------------------------------------------------------

    async def _audio(self, user_id: int, attachment: Attachment) -> IntakeResult:
        limit = self._config.max_audio_seconds
        if attachment.duration is not None and attachment.duration > limit:
            raise UserFacingError(audio_too_long_reply(limit), "rejected_audio_too_long")
        if attachment.file_size == 0:
            raise UserFacingError(AUDIO_EMPTY_REPLY, "rejected_audio_empty")
        data = await self._download(attachment, MAX_AUDIO_BYTES, AUDIO_TOO_LARGE_REPLY)
        if not data:
            raise UserFacingError(AUDIO_EMPTY_REPLY, "rejected_audio_empty")
        mime = sniff_audio(data)
        if mime is None:
            raise UserFacingError(AUDIO_NOT_AUDIO_REPLY, "rejected_not_audio")
        seconds = max(attachment.duration or 0, math.ceil(ogg_seconds(data) or 0))
        if seconds > limit:
            raise UserFacingError(audio_too_long_reply(limit), "rejected_audio_too_long")
        if not seconds:
            seconds = limit  # unknown: hold for the longest accepted recording
        sha256, (transcript, charge) = await self._stored_while_transcribed(
            user_id, data, mime, seconds
        )
        kind = "voice" if attachment.kind == "voice" else "audio"
        filename = _filename(attachment.filename, kind, AUDIO_EXTENSIONS.get(mime, "ogg"))
        row = self._rows.row(
            user_id,
            attachment,
            kind=kind,
            filename=filename,
            mime_type=mime,
            data=data,
            sha256=sha256,
            claude_file_id=None,
            metadata={
                "transcript": transcript.text,
                "duration_seconds": attachment.duration,
                "transcribe_model": self._transcriber.model,
            },
        )
        settlement = await self._rows.insert_charged(row, charge)
        file_id, charged = settlement.attached_id, settlement.charged_micros
        assert file_id is not None
        log.info(
            "transcribe_charged",
            user_id=user_id,
            audio_tokens=transcript.audio_tokens,
            charged=format_usd(charged),
        )
        log.info("voice_transcribed", user_id=user_id, file_id=file_id, seconds=seconds)
        label = "voice message" if kind == "voice" else f"audio file ({filename})"
        return IntakeResult(
            file_id=file_id,
            claude_file_id=None,
            blocks=(
                _note(
                    f"The user sent a {label}, file_id {file_id}; its transcript is their message"
                ),
            ),
            transcript=transcript.text,
            charged_micros=charged,
        )

    async def _stored_while_transcribed(
        self, user_id: int, data: bytes, mime: str, seconds: int
    ) -> tuple[str, tuple[Transcript, PendingCharge]]:
        """The blob written while the audio is transcribed; a transcription whose blob could not
        be written is still charged (the provider did the work), and the failure raised."""
        transcribing = asyncio.ensure_future(self._transcribe(user_id, data, mime, seconds))
        try:
            return await put_while(self._blobs, data, transcribing)
        except BaseException:
            if (
                transcribing.done()
                and not transcribing.cancelled()
                and not transcribing.exception()
            ):
                await transcribing.result()[1].capture()
            raise

    async def _transcribe(
        self, user_id: int, data: bytes, mime: str, seconds: int
    ) -> tuple[Transcript, PendingCharge]:
        """The transcript and its charge, still to be captured (with the file's row); audio
        without speech is recorded as an error, charged nothing, and refused."""
        model = self._transcriber.model
        price = self._prices.token_price(model)

        async def call() -> Transcript:
            deadline = time.monotonic() + TRANSCRIBE_TIMEOUT_SECONDS
            return await self._transcriber.transcribe(data, mime, deadline=deadline)

        meter = transcribe_meter(user_id, model, price, seconds)
        try:
            transcript, charge = await self._metered.run(meter, call, TranscribeMeasure(price))
        except TranscriptionFailed as exc:
            if exc.kind == "bad_audio":
                raise UserFacingError(AUDIO_UNREADABLE_REPLY, "transcribe_bad_audio") from None
            raise UserFacingError(TRANSCRIBE_BUSY_REPLY, f"transcribe_{exc.kind}") from None
        if charge.report.status != "ok":
            await charge.capture()
            raise UserFacingError(NO_SPEECH_REPLY, "transcribe_no_speech")
        return transcript, charge

    # Downloads and rows ----------------------------------------------------------------------

    async def _download(self, attachment: Attachment, limit: int, too_large: str) -> bytes:
        """The file's bytes; refused from Telegram's declared size before any download."""
        if attachment.file_size is not None and attachment.file_size > limit:
            raise UserFacingError(too_large, "rejected_too_large")
        try:
            file = await self._bot.get_file(attachment.telegram_file_id)
        except TelegramBadRequest as exc:
            if "too big" in exc.message.lower():
                raise UserFacingError(too_large, "rejected_too_large") from None
            raise UserFacingError(DOWNLOAD_FAILED_REPLY, "download_failed") from None
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError):
            raise UserFacingError(DOWNLOAD_FAILED_REPLY, "download_failed") from None
        if file.file_size is not None and file.file_size > limit:
            raise UserFacingError(too_large, "rejected_too_large")
        if not file.file_path:
            raise UserFacingError(DOWNLOAD_FAILED_REPLY, "download_failed")
        buffer = _CappedBuffer(limit)
        try:
            await self._bot.download_file(
                file.file_path, destination=buffer, timeout=DOWNLOAD_TIMEOUT_SECONDS
            )
        except _TooLarge:
            raise UserFacingError(too_large, "rejected_too_large") from None
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError):
            raise UserFacingError(DOWNLOAD_FAILED_REPLY, "download_failed") from None
        return buffer.getvalue()


# Content blocks ------------------------------------------------------------------------------


def pdf_block(claude_file_id: str, filename: str, pages: int) -> dict[str, Any]:
    """The document block of a PDF; its context states the page count (see pdf_tokens)."""
    return {
        "type": "document",
        "source": {"type": "file", "file_id": claude_file_id},
        "title": filename,
        "context": f"PDF, {pages} pages",
    }


INLINE_TEXT_CHARS = 100_000  # about 25-35k tokens: a 1 MB file would not fit the context


def text_file_block(filename: str, text: str) -> dict[str, Any]:
    """The file as text with its name; a long one is cut, saying so (read_document reads more)."""
    if len(text) > INLINE_TEXT_CHARS:
        note = (
            f"\n[Only the first {INLINE_TEXT_CHARS:,} of {len(text):,} characters are shown; "
            "read_document answers questions about the whole file.]"
        )
        text = text[:INLINE_TEXT_CHARS] + note
    return {"type": "text", "text": f'<file name="{filename}">\n{text}\n</file>'}


def _note(text: str) -> dict[str, Any]:
    return {"type": "text", "text": f"[{text}]"}


def _declared_image(attachment: Attachment) -> bool:
    mime = (attachment.mime_type or "").lower()
    name = (attachment.filename or "").lower()
    return mime.startswith("image/") or name.endswith(
        (".jpg", ".jpeg", ".png", ".webp", ".gif", ".heic", ".bmp", ".tif", ".tiff", ".svg")
    )


def _filename(name: str | None, stem: str, extension: str) -> str:
    base = _SAFE_NAME.sub("_", (name or "").rsplit("/", 1)[-1]).strip(" .")[:120]
    return base or f"{stem}.{extension}"


class _TooLarge(Exception):
    pass


class _CappedBuffer(io.BytesIO):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self._limit:
            raise _TooLarge
        return super().write(data)
