"""/stop: cancel the person's running answer.

A command is handled as it arrives, outside the one-turn-at-a-time queue that chat messages wait
in, so it reaches a turn that is still running. The stopped turn itself tells the person.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.i18n import N_, _
from bot.services.cancellation import RunningTurns

NOTHING_TO_STOP_REPLY = N_("Nothing is running right now.")


async def stop_handler(message: Message, running: RunningTurns) -> None:
    assert message.from_user is not None
    if not running.stop(message.from_user.id, message.chat.id):
        await message.answer(_(NOTHING_TO_STOP_REPLY))


def build_router() -> Router:
    router = Router(name="stop")
    router.message.register(stop_handler, Command("stop"))
    return router
