"""Sending text to a chat: Markdown as Telegram entities, split under the limit, plain fallback."""

from __future__ import annotations

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import ReplyParameters

from bot.telegram.rendering import render_markdown, render_plain

log = structlog.get_logger(__name__)


class MessageSender:
    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def send_markdown(
        self,
        chat_id: int,
        markdown: str,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        """Send `markdown` as one or more messages; returns how many were sent.

        In a group, `thread_id` is the forum topic and `reply_to` the addressing message, which
        the first message replies to.
        """
        chunks = render_markdown(markdown)
        for index, chunk in enumerate(chunks):
            try:
                await self._bot.send_message(
                    chat_id=chat_id,
                    text=chunk.text,
                    entities=chunk.entities,
                    parse_mode=None,
                    message_thread_id=thread_id,
                    reply_parameters=_reply(reply_to if index == 0 else None),
                )
            except TelegramBadRequest as exc:
                if "entit" not in exc.message.lower() and "parse" not in exc.message.lower():
                    raise
                log.warning("entities_rejected", chat_id=chat_id, chunk=index)
                rest = "".join(c.text + "\n\n" for c in chunks[index:]).strip()
                first_reply = reply_to if index == 0 else None
                await self.send_plain(chat_id, rest, thread_id=thread_id, reply_to=first_reply)
                return index + len(render_plain(rest))
        return len(chunks)

    async def send_plain(
        self,
        chat_id: int,
        text: str,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        chunks = render_plain(text)
        for index, chunk in enumerate(chunks):
            await self._bot.send_message(
                chat_id=chat_id,
                text=chunk,
                parse_mode=None,
                message_thread_id=thread_id,
                reply_parameters=_reply(reply_to if index == 0 else None),
            )
        return len(chunks)


def _reply(message_id: int | None) -> ReplyParameters | None:
    """A reply that is still sent when the message it answers was deleted meanwhile."""
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)
