"""Sending text to a chat: Markdown as Telegram entities, split under the limit, plain fallback."""

from __future__ import annotations

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest

from bot.telegram.rendering import render_markdown, render_plain

log = structlog.get_logger(__name__)


class MessageSender:
    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def send_markdown(self, chat_id: int, markdown: str) -> int:
        """Send `markdown` as one or more messages; returns how many were sent."""
        chunks = render_markdown(markdown)
        for index, chunk in enumerate(chunks):
            try:
                await self._bot.send_message(
                    chat_id=chat_id, text=chunk.text, entities=chunk.entities, parse_mode=None
                )
            except TelegramBadRequest as exc:
                if "entit" not in exc.message.lower() and "parse" not in exc.message.lower():
                    raise
                log.warning("entities_rejected", chat_id=chat_id, chunk=index)
                rest = "".join(c.text + "\n\n" for c in chunks[index:]).strip()
                await self.send_plain(chat_id, rest)
                return index + len(render_plain(rest))
        return len(chunks)

    async def send_plain(self, chat_id: int, text: str) -> int:
        chunks = render_plain(text)
        for chunk in chunks:
            await self._bot.send_message(chat_id=chat_id, text=chunk, parse_mode=None)
        return len(chunks)
