"""Groups (design section 11): which group messages are meant for the bot.

With `GROUPS=mention` the bot answers in a group only when addressed: a command to it
(`/cmd@botname`), a reply to one of its messages, or a message whose entities mention it (a
`mention` of its @username or a `text_mention` of its user). Everything else in a group is
ignored without a word, and with `GROUPS=off` every group message is.

In privacy mode (the default) Telegram itself delivers only commands to the bot and replies to
it; a plain @mention reaches the bot only with privacy mode off or when it is a group admin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import structlog
from aiogram import BaseMiddleware, Bot
from aiogram.types import Message, TelegramObject, User

from bot.telegram.middlewares import IGNORED

log = structlog.get_logger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
GROUP_CHAT_TYPES = ("group", "supergroup")
ADDRESSED_KEY = "group_addressed"


def is_group(message: Message) -> bool:
    return message.chat.type in GROUP_CHAT_TYPES


def is_addressed(message: Message, me: User) -> bool:
    """A command to this bot, a reply to one of its messages, or an entity mentioning it."""
    reply = message.reply_to_message
    if reply is not None and reply.from_user is not None and reply.from_user.id == me.id:
        return True
    text = message.text or message.caption or ""
    entities = message.entities or message.caption_entities or []
    username = f"@{me.username}".casefold() if me.username else None
    for entity in entities:
        if entity.type == "text_mention" and entity.user is not None and entity.user.id == me.id:
            return True
        if entity.type not in ("mention", "bot_command") or username is None:
            continue
        fragment = entity.extract_from(text)
        if entity.type == "mention" and fragment.casefold() == username:
            return True
        if entity.type == "bot_command" and fragment.casefold().endswith(username):
            return True
    return False


class GroupAddressingMiddleware(BaseMiddleware):
    """Lets through private messages, and group messages addressed to the bot when allowed.

    Registered before the gate; the gate admits a group message only when this marked it.
    """

    def __init__(self, mode: Literal["off", "mention"]) -> None:
        self._mode = mode

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Message)
        if not is_group(event):
            return await handler(event, data)
        if self._mode == "off":
            return IGNORED
        bot: Bot = data["bot"]
        if not is_addressed(event, await bot.me()):
            return IGNORED
        log.info("group_addressed", chat_id=event.chat.id, thread_id=event.message_thread_id)
        data[ADDRESSED_KEY] = True
        return await handler(event, data)
