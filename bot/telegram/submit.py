"""Turns Telegram messages into chat turns, queued per user; album parts become one turn, and so do
the parts of a long text that Telegram split into several messages."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiogram.types import Message

from bot.services.incoming import Attachment, IncomingMessage
from bot.telegram.addressing import is_group
from bot.telegram.turns import TurnScheduler
from bot.turns.chat import ChatService

# Telegram splits a text over 4096 UTF-16 units into messages of up to 4096, cut at a line or word
# boundary where it can: a text this long may be the first part of one, and the text messages that
# follow it within the merge window are its other parts.
SPLIT_PART_MIN_UTF16 = 3800
SPLIT_TEXT_SEPARATOR = "\n"


def may_be_split(text: str) -> bool:
    """Long enough to be a part of a text Telegram split (a short text is told in O(1))."""
    return len(text) * 2 >= SPLIT_PART_MIN_UTF16 and (
        len(text.encode("utf-16-le")) // 2 >= SPLIT_PART_MIN_UTF16
    )


@dataclass
class _Album:
    messages: list[tuple[int, Message]] = field(default_factory=list)
    chat_model: str | None = None
    locale: str = "en"
    last_at: float = field(default_factory=time.monotonic)


class TurnSubmitter:
    def __init__(self, scheduler: TurnScheduler, chat: ChatService, *, merge_window: float) -> None:
        self._scheduler = scheduler
        self._chat = chat
        self._merge_window = merge_window
        self._albums: dict[tuple[int, str], _Album] = {}
        self._split_texts: dict[int, _Album] = {}

    def submit(
        self,
        message: Message,
        update_id: int,
        *,
        chat_model: str | None = None,
        locale: str = "en",
    ) -> bool:
        assert message.from_user is not None
        user_id = message.from_user.id
        # A group's turns share its conversation, so they wait in one queue (by the group's
        # negative chat id); a person's private turns wait in theirs.
        queue = message.chat.id if is_group_chat(message) else user_id
        group = message.media_group_id
        if group is None:
            if message.text is not None:
                return self._submit_text(queue, user_id, message, update_id, chat_model, locale)
            incoming = to_incoming(
                user_id, [(update_id, message)], chat_model=chat_model, locale=locale
            )
            return self._scheduler.submit(queue, lambda: self._chat.run_turn(incoming))
        key = (user_id, group)
        album = self._albums.get(key)
        if album is not None:
            album.messages.append((update_id, message))
            return True
        album = self._albums[key] = _Album([(update_id, message)], chat_model, locale)
        return self._scheduler.submit(queue, lambda: self._run_album(key, album))

    async def _run_album(self, key: tuple[int, str], album: _Album) -> None:
        await asyncio.sleep(self._merge_window)
        self._albums.pop(key, None)
        await self._chat.run_turn(
            to_incoming(key[0], album.messages, chat_model=album.chat_model, locale=album.locale)
        )

    def _submit_text(
        self,
        queue: int,
        user_id: int,
        message: Message,
        update_id: int,
        chat_model: str | None,
        locale: str,
    ) -> bool:
        assert message.text is not None
        split = self._split_texts.get(user_id)
        if split is not None:  # the next part of a long text that Telegram split
            split.messages.append((update_id, message))
            split.last_at = time.monotonic()
            return True
        if may_be_split(message.text):
            split = self._split_texts[user_id] = _Album([(update_id, message)], chat_model, locale)
            if not self._scheduler.submit(queue, lambda: self._run_split(user_id, split)):
                del self._split_texts[user_id]  # shutting down: later parts are not merged into it
                return False
            return True
        incoming = to_incoming(
            user_id, [(update_id, message)], chat_model=chat_model, locale=locale
        )
        return self._scheduler.submit(queue, lambda: self._chat.run_turn(incoming))

    async def _run_split(self, user_id: int, split: _Album) -> None:
        """Waits until no part came for a merge window, then runs the parts as one turn."""
        left = self._merge_window
        while left > 0:
            await asyncio.sleep(left)
            left = split.last_at + self._merge_window - time.monotonic()
        self._split_texts.pop(user_id, None)
        incoming = to_incoming(
            user_id,
            split.messages,
            separator=SPLIT_TEXT_SEPARATOR,
            chat_model=split.chat_model,
            locale=split.locale,
        )
        await self._chat.run_turn(incoming)


def to_incoming(
    user_id: int,
    parts: list[tuple[int, Message]],
    *,
    separator: str = "\n\n",
    chat_model: str | None = None,
    locale: str = "en",
) -> IncomingMessage:
    parts = sorted(parts, key=lambda p: p[1].message_id)
    texts = [m.text or m.caption or "" for _, m in parts]
    attachments = [a for _, m in parts if (a := attachment_of(m)) is not None]
    first = parts[0][1]
    in_group = is_group_chat(first)
    return IncomingMessage(
        user_id=user_id,
        chat_id=first.chat.id,
        update_id=parts[0][0],
        text=separator.join(t for t in texts if t),
        attachments=attachments,
        extra_update_ids=[u for u, _ in parts[1:]],
        chat_model=chat_model,
        group_topic=topic_of(first) if in_group else None,
        reply_to_message_id=first.message_id if in_group else None,
        sender_name=sender_name(first) if in_group else None,
        locale=locale,
    )


def topic_of(message: Message) -> int:
    """The forum topic of a group message; 0 outside topics (a reply thread is not a topic)."""
    return (message.message_thread_id or 0) if message.is_topic_message else 0


def is_group_chat(message: Message) -> bool:
    return is_group(message)


def sender_name(message: Message) -> str:
    who = message.from_user
    if who is None:
        return "someone"
    name = who.full_name
    return f"{name} (@{who.username})" if who.username else name


def attachment_of(message: Message) -> Attachment | None:
    if message.photo:
        largest = message.photo[-1]
        return Attachment(
            telegram_file_id=largest.file_id,
            telegram_file_unique_id=largest.file_unique_id,
            kind="photo",
            file_size=largest.file_size,
            width=largest.width,
            height=largest.height,
        )
    if message.document:
        doc = message.document
        return Attachment(
            telegram_file_id=doc.file_id,
            telegram_file_unique_id=doc.file_unique_id,
            kind="document",
            file_size=doc.file_size,
            filename=doc.file_name,
            mime_type=doc.mime_type,
        )
    if message.voice:
        voice = message.voice
        return Attachment(
            telegram_file_id=voice.file_id,
            telegram_file_unique_id=voice.file_unique_id,
            kind="voice",
            file_size=voice.file_size,
            mime_type=voice.mime_type,
            duration=voice.duration,
        )
    if message.audio:
        audio = message.audio
        return Attachment(
            telegram_file_id=audio.file_id,
            telegram_file_unique_id=audio.file_unique_id,
            kind="audio",
            file_size=audio.file_size,
            filename=audio.file_name,
            mime_type=audio.mime_type,
            duration=audio.duration,
        )
    return None
