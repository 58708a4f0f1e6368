"""Text, photos and image documents become chat turns."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message, Update

from bot.telegram.middlewares import DEFERRED
from bot.telegram.submit import TurnSubmitter

BUSY_REPLY = "I'm restarting right now. Please send that again in a minute."


async def chat_handler(message: Message, event_update: Update, turns: TurnSubmitter) -> object:
    if not turns.submit(message, event_update.update_id):
        await message.answer(BUSY_REPLY)
        return None
    return DEFERRED


def build_router() -> Router:
    router = Router(name="chat")
    is_text = F.text & ~F.text.startswith("/")
    router.message.register(chat_handler, is_text | F.photo | F.document)
    return router
