"""Delivery of the files a tool produced: validate, store, send to the chat, record, charge.

The charge of a file and its `user_files` row commit in one transaction, and only after the file
reached the chat; a file that could not be delivered is recorded as failed and charges nothing.
Sending goes through a `FileSender` (the Telegram layer fills it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.files import FileService, NewFile, safe_filename
from bot.services.ledger import Settlement
from bot.services.media import ImageProcessor, MediaRejected, PreparedImage
from bot.services.metered import PendingCharge

log = structlog.get_logger(__name__)

GENERATED_INVALID = "the image model returned an unusable image; nothing was charged"
SEND_FAILED = "the image could not be sent to the chat; nothing was charged"


@dataclass(frozen=True)
class ProducedFile:
    """A file a tool made, with its provenance and the charge to capture once it is delivered."""

    filename: str
    content: bytes = field(repr=False)
    mime_type: str
    metadata: dict[str, Any]
    image_size: str | None = None
    charge: PendingCharge | None = None
    # Already checked and prepared by the tool (None: the delivery checks `content` itself).
    prepared: PreparedImage | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Recipient:
    user_id: int
    chat_id: int
    tool_use_id: str
    thread_id: int | None = None  # a group's forum topic: the file goes there


@dataclass(frozen=True)
class Delivery:
    sent_as: list[str]
    telegram_file_id: str | None
    telegram_file_unique_id: str | None


class SendFailed(Exception):
    """The chat did not take the file (the sender logged why)."""


class FileSender(Protocol):
    async def send_image(
        self,
        chat_id: int,
        image: PreparedImage,
        filename: str,
        image_size: str | None,
        *,
        thread_id: int | None = None,
    ) -> Delivery:
        """Send as a photo and/or a document; raises SendFailed."""
        ...


class FileDelivery:
    """The agent loop's file sink."""

    def __init__(
        self, *, files: FileService, sender: FileSender, processor: ImageProcessor
    ) -> None:
        self._files = files
        self._sender = sender
        self._processor = processor

    async def deliver(
        self, produced: Sequence[ProducedFile], to: Recipient
    ) -> list[dict[str, Any]]:
        """Deliver each file; never raises for a bad file; never returns bytes."""
        return [await self._deliver_guarded(item, to) for item in produced]

    async def _deliver_guarded(self, item: ProducedFile, to: Recipient) -> dict[str, Any]:
        try:
            return await self._deliver_one(item, to)
        except asyncio.CancelledError:
            await _release(item.charge, "interrupted")
            raise
        except Exception:
            log.exception("file_delivery_crashed", tool_use_id=to.tool_use_id)
            await _release(item.charge, "delivery_crashed")
            return {"delivered": False, "error": "internal error"}

    async def _deliver_one(self, item: ProducedFile, to: Recipient) -> dict[str, Any]:
        try:
            prepared = item.prepared or await self._processor.validate_generated(
                item.content, item.mime_type
            )
        except MediaRejected as exc:
            await _release(item.charge, f"invalid_image: {exc.reason}")
            return {"delivered": False, "error": GENERATED_INVALID}
        filename = safe_filename(item.filename, prepared, default="image")
        storing = await self._start_storing(prepared)
        try:
            delivery = await self._sender.send_image(
                to.chat_id, prepared, filename, item.image_size, thread_id=to.thread_id
            )
        except SendFailed as exc:
            await _finished(storing)
            await _release(item.charge, f"send_failed: {exc}")
            return {"delivered": False, "error": SEND_FAILED}
        except BaseException:
            storing.cancel()
            raise
        sha256 = await storing
        claude_file_id = await self._files.upload_preview(prepared, f"generated-{sha256[:12]}")
        row = NewFile(
            user_id=to.user_id,
            source="assistant",
            kind="generated",
            filename=filename,
            prepared=prepared,
            sha256=sha256,
            claude_file_id=claude_file_id,
            telegram_file_id=delivery.telegram_file_id,
            telegram_file_unique_id=delivery.telegram_file_unique_id,
            metadata=item.metadata,
        )
        file_id = await self._record(row, item.charge)
        return _delivered(file_id, row, delivery)

    async def _start_storing(self, prepared: PreparedImage) -> asyncio.Future[str]:
        """The original's storing. With blobs on this machine's disk it is done before the send,
        and the chat receives the stored file: the image lets go of its bytes once they are on
        disk (a 4K original is 28 MB, and its upload to the chat can take seconds). With a store
        elsewhere (S3) it runs while the chat receives the image. The row that refers to the
        blob comes after both."""
        if self._files.blob_file(prepared) is None:
            return asyncio.ensure_future(self._files.store_blob(prepared))
        stored: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        stored.set_result(await self._files.store_blob(prepared))
        return stored

    async def _record(self, row: NewFile, charge: PendingCharge | None) -> int:
        """The file's row, in the same transaction as its charge."""
        if charge is None:
            return await self._files.insert(row)

        async def attach(session: AsyncSession, settlement: Settlement) -> int:
            charged = {"charged_micros": settlement.charged_micros}
            return await self._files.insert_in(
                session, row.with_charge(settlement.api_call_id, charged)
            )

        settlement = await charge.capture(attach=attach)
        assert settlement.attached_id is not None
        return settlement.attached_id


def _delivered(file_id: int, row: NewFile, delivery: Delivery) -> dict[str, Any]:
    """What the model is told about a delivered file (no bytes)."""
    prepared = row.prepared
    log.info(
        "file_delivered",
        user_id=row.user_id,
        file_id=file_id,
        sent_as="+".join(delivery.sent_as),
        bytes=prepared.size_bytes,
        files_api=row.claude_file_id is not None,
    )
    return {
        "file_id": str(file_id),
        "delivered": True,
        "sent_as": "+".join(delivery.sent_as),
        "width": prepared.width,
        "height": prepared.height,
        "size_bytes": prepared.size_bytes,
    }


async def _finished(task: asyncio.Future[Any]) -> None:
    """Wait for a side task whose result is no longer needed (a failure is logged)."""
    try:
        await task
    except Exception:
        log.exception("blob_store_failed")


async def _release(charge: PendingCharge | None, error: str) -> None:
    if charge is None:
        return
    try:
        await charge.release(error)
    except Exception:
        log.exception("settle_failed_delivery_failed", hold_id=charge.hold.id)
