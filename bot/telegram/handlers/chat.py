"""Text, photos, documents, voice notes and audio files become chat turns."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import Message, Update

from bot.config import Settings
from bot.i18n import N_, _, current_locale
from bot.services.users import UserState
from bot.telegram.handlers.preferences import effective_model
from bot.telegram.middlewares import DEFERRED
from bot.telegram.submit import TurnSubmitter

BUSY_REPLY = N_("I'm restarting right now. Please send that again in a minute.")


async def chat_handler(
    message: Message,
    event_update: Update,
    turns: TurnSubmitter,
    settings: Settings,
    user_state: UserState,
) -> object:
    chat_model = effective_model(settings, user_state)
    submitted = turns.submit(
        message, event_update.update_id, chat_model=chat_model, locale=current_locale()
    )
    if not submitted:
        await message.answer(_(BUSY_REPLY))
        return None
    return DEFERRED


async def is_chat_input(message: Message) -> bool:
    """Text that is not a command, a photo, a document, a voice note or an audio file.

    A coroutine, not aiogram's magic filter: aiogram runs a filter that is a plain function (the
    magic filter's `resolve` is one) in a worker thread, on every message.
    """
    if message.text:
        return not message.text.startswith("/")
    return (
        bool(message.photo)
        or message.document is not None
        or message.voice is not None
        or message.audio is not None
    )


def build_router() -> Router:
    router = Router(name="chat")
    router.message.register(chat_handler, is_chat_input)
    return router
