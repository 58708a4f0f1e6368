"""Images to the chat: a photo when Telegram takes one, a document otherwise or as well."""

from __future__ import annotations

import aiohttp
import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramEntityTooLarge
from aiogram.types import BufferedInputFile, FSInputFile, InputFile, Message

from bot.services.delivery import Delivery, SendFailed
from bot.services.media import DeliveryPlan, PreparedImage, plan_delivery

log = structlog.get_logger(__name__)


class TelegramFileSender:
    """The delivery's FileSender."""

    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def send_image(
        self,
        chat_id: int,
        image: PreparedImage,
        filename: str,
        image_size: str | None,
        *,
        thread_id: int | None = None,
    ) -> Delivery:
        try:
            return await self._send(chat_id, image, filename, image_size, thread_id)
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("file_send_failed", chat_id=chat_id, error=type(exc).__name__)
            raise SendFailed(type(exc).__name__) from None
        except Exception as exc:  # an answer aiogram cannot read: the file was not delivered
            log.exception("file_send_failed", chat_id=chat_id, error=type(exc).__name__)
            raise SendFailed(type(exc).__name__) from None

    async def _send(
        self,
        chat_id: int,
        image: PreparedImage,
        filename: str,
        image_size: str | None,
        thread_id: int | None,
    ) -> Delivery:
        plan = _plan(image, image_size)
        sent_as: list[str] = []
        file_ids: tuple[str | None, str | None] = (None, None)
        if plan.as_photo:
            photo = (
                BufferedInputFile(image.photo, filename.rsplit(".", 1)[0] + ".jpg")
                if image.photo is not None
                else _original(image, filename)
            )
            message = await self._send_photo(chat_id, photo, thread_id)
            if message is not None and message.photo:
                sent_as.append("photo")
                if image.photo is None:  # a preview's file is not the image itself
                    file_ids = (message.photo[-1].file_id, message.photo[-1].file_unique_id)
        if plan.also_document or not sent_as:
            message = await self._bot.send_document(
                chat_id, _original(image, filename), message_thread_id=thread_id
            )
            sent_as.append("document")
            if message.document is not None and file_ids[0] is None:
                file_ids = (message.document.file_id, message.document.file_unique_id)
        return Delivery(sent_as, *file_ids)

    async def _send_photo(
        self, chat_id: int, photo: InputFile, thread_id: int | None
    ) -> Message | None:
        """A photo, or None when it was not sent as one: Telegram refused this image as a photo,
        or the send failed in any other way (then a document is tried before giving up)."""
        try:
            return await self._bot.send_photo(chat_id, photo, message_thread_id=thread_id)
        except TelegramEntityTooLarge:
            log.info("photo_refused", chat_id=chat_id, reason="too_large")
            return None
        except TelegramBadRequest as exc:
            text = exc.message.upper()
            if "PHOTO_" in text or "TOO BIG" in text or "IMAGE_PROCESS_FAILED" in text:
                log.info("photo_refused", chat_id=chat_id, reason=exc.message[:100])
                return None
            log.warning("photo_send_failed", chat_id=chat_id, error=exc.message[:100])
            return None
        except Exception as exc:
            log.warning("photo_send_failed", chat_id=chat_id, error=type(exc).__name__)
            return None


UPLOAD_CHUNK_BYTES = 1 << 20  # a 28 MB original goes out in 28 reads and writes, not 430


def _original(image: PreparedImage, filename: str) -> InputFile:
    """The original as aiogram uploads it: read from its stored file once the image has let go
    of its bytes, else from memory."""
    if image.original_file is not None:
        return FSInputFile(image.original_file, filename, chunk_size=UPLOAD_CHUNK_BYTES)
    return BufferedInputFile(image.original, filename, chunk_size=UPLOAD_CHUNK_BYTES)


def _plan(image: PreparedImage, image_size: str | None) -> DeliveryPlan:
    """A JPEG preview as the photo always comes with the original as a document."""
    if image.photo is not None:
        return DeliveryPlan(as_photo=True, also_document=True)
    return plan_delivery(image.width, image.height, image.size_bytes, image_size=image_size)
