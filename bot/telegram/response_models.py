"""Builds, at start-up, the aiogram models the bot uses, and keeps the response models alive.

aiogram's models are built on first use (see `bot.telegram.lazy_models`). Building the ones every
turn needs at start-up means the first person's message does not wait about 100 ms for them.
`Message` goes first: the update, the send methods and their responses all contain it, and reuse
its schema once it is built (less time and memory than building it inside each of them).

A result that is a model (or a list of one) is checked with that model's own validator
(`bot.telegram.session`). Any other result goes through aiogram's `Response[method.__returning__]`.
pydantic caches such generic models only weakly, so each call could build the model again (schema
generation: milliseconds of CPU per request). Holding one reference per such result type avoids
that.
"""

from __future__ import annotations

from typing import Any

from aiogram import methods, types
from aiogram.methods.base import Response

from bot.telegram.session import result_model

USED_METHODS: tuple[type[methods.TelegramMethod[Any]], ...] = (
    methods.GetMe,
    methods.GetUpdates,
    methods.SendMessage,
    methods.SendMessageDraft,
    methods.SendChatAction,
    methods.SendPhoto,
    methods.SendDocument,
    methods.GetFile,
    methods.SetMyCommands,
)


def pin_response_models() -> list[type[Any]]:
    """Build the models the bot uses; the caller keeps the returned list for the bot's lifetime."""
    types.Message.model_rebuild()
    types.Update.model_rebuild()
    pinned: list[type[Any]] = []
    for method in USED_METHODS:
        method.model_rebuild()
        model, _ = result_model(method.__returning__)
        if model is not None:
            model.model_rebuild()
            pinned.append(model)
        else:
            pinned.append(Response[method.__returning__])  # type: ignore[name-defined]
    return pinned
