"""A person's message as the chat turn receives it, and what intake makes of its attachments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Attachment:
    """A Telegram file reference; nothing is downloaded until the turn runs."""

    telegram_file_id: str
    telegram_file_unique_id: str
    kind: str  # photo | document | voice | audio
    file_size: int | None
    filename: str | None = None
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None
    duration: int | None = None  # seconds, for voice and audio


@dataclass(frozen=True)
class IncomingMessage:
    user_id: int
    chat_id: int
    update_id: int
    text: str
    attachments: Sequence[Attachment] = ()
    extra_update_ids: Sequence[int] = ()
    chat_model: str | None = None  # the sender's chosen model; None = the default
    # Groups (design section 11): the forum topic (0 outside topics; None = a private chat), the
    # addressing message the answer replies to, and the sender's name shown to Claude.
    group_topic: int | None = None
    reply_to_message_id: int | None = None
    sender_name: str | None = None
    locale: str = "en"  # the sender's language, for everything the turn says

    @property
    def in_group(self) -> bool:
        return self.group_topic is not None

    @property
    def topic_thread_id(self) -> int | None:
        """The message_thread_id to send in: only for a real forum topic."""
        return self.group_topic or None


@dataclass(frozen=True)
class IntakeResult:
    """An attachment, stored (and uploaded), ready to be shown to Claude. `blocks`, when given,
    replace the image block (documents, text files, voice notes); `transcript` is what a voice
    note or audio file said, which becomes the person's text."""

    file_id: int
    claude_file_id: str | None
    blocks: tuple[dict[str, Any], ...] = ()
    transcript: str | None = None
    charged_micros: int = 0  # what taking it cost (a transcription), charged already


class AttachmentIntake(Protocol):
    async def intake(self, user_id: int, attachment: Attachment) -> IntakeResult: ...


class UserFacingError(Exception):
    """A failure with a reply already worded for the person."""

    def __init__(self, reply: str, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason
