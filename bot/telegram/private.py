"""A person's money stays between them and the bot: in a group, an answer that shows their
balance, spending or limit goes to their private chat, with a short note in the group. When the
bot may not message them (they never started it, or blocked it), the group is told to open a
private chat first, with a link that starts one."""

from __future__ import annotations

from typing import Any

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramForbiddenError
from aiogram.types import Message

from bot.i18n import N_, _
from bot.telegram.addressing import is_group

log = structlog.get_logger(__name__)

SENT_PRIVATELY = N_("I've sent it to you in a private message.")
START_PRIVATE_CHAT = N_(
    "I can't send this to you privately yet: open a private chat with me first ({link}), press "
    "Start, then send the command again."
)
START_PARAMETER = "private"


async def answer_privately(message: Message, text: str, **options: Any) -> None:
    """Answer `message` with `text`: in place in a private chat, privately from a group."""
    if not is_group(message) or message.from_user is None:
        await message.answer(text, **options)
        return
    bot = message.bot
    assert bot is not None
    try:
        await bot.send_message(message.from_user.id, text, **options)
    except TelegramForbiddenError as exc:
        log.info("private_answer_refused", user_id=message.from_user.id, error=exc.message)
        await message.reply(_(START_PRIVATE_CHAT).format(link=await start_link(bot)))
        return
    await message.reply(_(SENT_PRIVATELY))


async def start_link(bot: Bot) -> str:
    """The link that opens a private chat with the bot (`/start private` when pressed)."""
    me = await bot.me()
    return f"https://t.me/{me.username}?start={START_PARAMETER}"
