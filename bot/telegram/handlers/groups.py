"""Commands that work in private chats only, when sent to the bot in a group.

Buying and refunding (design section 10) and the admin commands stay out of groups: in a group
the person gets one line pointing to a private chat. To anyone but an admin the admin commands
stay unknown, in groups as in private chats.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.i18n import N_, _
from bot.telegram.addressing import is_group
from bot.telegram.handlers.admin import is_admin

PRIVATE_ONLY_COMMANDS = ("buy", "refund", "paysupport")
ADMIN_COMMANDS = ("topup", "user", "stats")
PRIVATE_ONLY_REPLY = N_("That works only in a private chat with me: open one and send it there.")


async def private_only_handler(message: Message) -> None:
    await message.reply(_(PRIVATE_ONLY_REPLY))


async def in_group(message: Message) -> bool:
    """A coroutine: aiogram runs a filter that is a plain function in a worker thread."""
    return is_group(message)


def build_router() -> Router:
    """Include before the admin and payment routers."""
    router = Router(name="groups")
    router.message.filter(in_group)
    router.message.register(private_only_handler, Command(*PRIVATE_ONLY_COMMANDS))
    router.message.register(private_only_handler, Command(*ADMIN_COMMANDS), is_admin)
    return router
