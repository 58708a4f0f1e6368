"""A person's message as the chat turn receives it, and what intake makes of its attachments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Attachment:
    """A Telegram file reference; nothing is downloaded until the turn runs."""

    telegram_file_id: str
    telegram_file_unique_id: str
    kind: str  # photo | document
    file_size: int | None
    filename: str | None = None
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class IncomingMessage:
    user_id: int
    chat_id: int
    update_id: int
    text: str
    attachments: Sequence[Attachment] = ()
    extra_update_ids: Sequence[int] = ()


@dataclass(frozen=True)
class IntakeResult:
    """An attached image, stored and uploaded, ready to be shown to Claude."""

    file_id: int
    claude_file_id: str | None


class AttachmentIntake(Protocol):
    async def intake(self, user_id: int, attachment: Attachment) -> IntakeResult: ...


class UserFacingError(Exception):
    """A failure with a reply already worded for the person."""

    def __init__(self, reply: str, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason
