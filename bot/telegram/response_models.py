"""Keeps aiogram's parsed-response models alive.

aiogram validates every Bot API response with `Response[method.__returning__]`. pydantic caches
such generic models only weakly, so each call could build the model again (schema generation:
milliseconds of CPU per request). Holding one reference per result type we use avoids that.
"""

from __future__ import annotations

from typing import Any

from aiogram import methods
from aiogram.methods.base import Response

USED_METHODS: tuple[type[methods.TelegramMethod[Any]], ...] = (
    methods.GetMe,
    methods.GetUpdates,
    methods.SendMessage,
    methods.SendMessageDraft,
    methods.SendChatAction,
    methods.SendPhoto,
    methods.SendDocument,
    methods.SendMediaGroup,
    methods.GetFile,
    methods.SetMyCommands,
)


def pin_response_models() -> list[type[Any]]:
    """Build each response model once; the caller keeps the returned list for the bot's lifetime."""
    return [Response[method.__returning__] for method in USED_METHODS]  # type: ignore[name-defined]
