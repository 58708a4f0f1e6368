"""The routers the bot registers: filters that run on the event loop and route messages right."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from aiogram import Router
from aiogram.dispatcher.event.handler import FilterObject, HandlerObject
from aiogram.types import Audio, Chat, Document, Message, PhotoSize, User, Voice

from bot.telegram.dispatcher import feature_routers
from bot.telegram.handlers import chat, common


def all_routers() -> list[Router]:
    """Every router the bot registers: `build_dispatcher`'s own and the `feature_routers` the
    bot passes it (the same list, so a router added there is checked here too)."""
    return [
        common.build_router(),
        *feature_routers(),
        chat.build_router(),
        common.build_fallback_router(),
    ]


def filters_of(router: Router) -> list[FilterObject]:
    found: list[FilterObject] = []
    for observer in router.observers.values():
        found.extend(observer._handler.filters or [])  # router-level filters
        for handler in observer.handlers:
            found.extend(handler.filters or [])
    return found


def handlers_of(router: Router) -> list[HandlerObject]:
    return [handler for observer in router.observers.values() for handler in observer.handlers]


def message(**fields: Any) -> Message:
    return Message(
        message_id=1,
        date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        chat=Chat(id=7, type="private"),
        from_user=User(id=7, is_bot=False, first_name="Ann"),
        **fields,
    )


def test_every_filter_runs_on_the_event_loop() -> None:
    # aiogram runs a filter that is a plain function (a magic filter's `resolve` is one) in a
    # worker thread: a thread hop per message, and worker threads that keep their own memory.
    checked = 0
    for router in all_routers():
        for found in filters_of(router):
            assert found.awaitable, f"{router.name}: {found.callback!r} would run in a thread"
            checked += 1
    assert checked >= 8  # the commands, the admin gate, chat input and the fallback


def test_every_handler_runs_on_the_event_loop() -> None:
    # The same rule holds for handlers: a plain function would run in a worker thread.
    checked = 0
    for router in all_routers():
        for handler in handlers_of(router):
            assert handler.awaitable, f"{router.name}: {handler.callback!r} would run in a thread"
            checked += 1
    assert checked >= 10  # the commands, chat turns and the fallbacks


@pytest.mark.parametrize(
    ("fields", "is_chat", "is_command"),
    [
        ({"text": "hello"}, True, False),
        ({"text": "/help"}, False, True),
        ({"text": "/unknown thing"}, False, True),
        ({"photo": [PhotoSize(file_id="p", file_unique_id="u", width=1, height=1)]}, True, False),
        ({"document": Document(file_id="d", file_unique_id="u")}, True, False),
        ({"voice": Voice(file_id="v", file_unique_id="u", duration=3)}, True, False),
        ({"audio": Audio(file_id="a", file_unique_id="u", duration=3)}, True, False),
        ({"caption": "just a caption"}, False, False),
        ({}, False, False),
    ],
)
async def test_chat_input_and_command_filters(
    fields: dict[str, Any], is_chat: bool, is_command: bool
) -> None:
    incoming = message(**fields)
    assert await chat.is_chat_input(incoming) is is_chat
    assert await common.is_command_text(incoming) is is_command
