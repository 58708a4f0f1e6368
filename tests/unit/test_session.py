"""The bot's session checks Bot API responses exactly as aiogram's own session does, except that an
answer in a shape the Bot API never gives raises a `TelegramAPIError` (aiogram: ClientDecodeError,
which every `except TelegramAPIError` would miss)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiogram import Bot, methods, types
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)

from bot.telegram.session import BotSession, TelegramUnexpectedAnswer, result_model
from tests.harness import FAKE_BOT_TOKEN

MESSAGE = {
    "message_id": 7,
    "date": 1_700_000_000,
    "chat": {"id": 42, "type": "private", "first_name": "Ann"},
    "from": {"id": 1, "is_bot": True, "first_name": "Bot"},
    "text": "**hi**",
    "entities": [{"type": "bold", "offset": 0, "length": 2}],
}
UPDATE = {
    "update_id": 100,
    "message": {**MESSAGE, "from": {"id": 42, "is_bot": False, "first_name": "Ann"}},
}
SEND = methods.SendMessage(chat_id=42, text="hi")
POLL = methods.GetUpdates(offset=1, timeout=0)
ACTION = methods.SendChatAction(chat_id=42, action="typing")


def ok(result: Any) -> str:
    return json.dumps({"ok": True, "result": result})


def failed(code: int, description: str, **parameters: Any) -> str:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return json.dumps(body)


CASES = [
    pytest.param(SEND, 200, ok(MESSAGE), id="a message"),
    pytest.param(POLL, 200, ok([UPDATE, {**UPDATE, "update_id": 101}]), id="updates"),
    pytest.param(POLL, 200, ok([]), id="no updates"),
    pytest.param(ACTION, 200, ok(True), id="a plain value"),
    pytest.param(SEND, 429, failed(429, "Too Many Requests", retry_after=3), id="flood wait"),
    pytest.param(SEND, 400, failed(400, "Bad Request: chat not found"), id="bad request"),
    pytest.param(SEND, 502, failed(502, "Bad Gateway"), id="server error"),
    pytest.param(SEND, 200, json.dumps({"ok": False, "description": "odd"}), id="ok false on 200"),
]
ODD = [
    pytest.param(SEND, 200, "<html>not json</html>", TelegramUnexpectedAnswer, id="not json"),
    pytest.param(
        SEND, 200, ok({"message_id": "not a number"}), TelegramUnexpectedAnswer, id="broken"
    ),
    pytest.param(POLL, 200, ok({"update_id": 1}), TelegramUnexpectedAnswer, id="not a list"),
    pytest.param(
        SEND, 500, json.dumps({"message": "upstream"}), TelegramServerError, id="proxy 500"
    ),
    pytest.param(ACTION, 502, "<html>Bad Gateway</html>", TelegramServerError, id="html 502"),
    pytest.param(SEND, 500, json.dumps({"ok": False}), TelegramServerError, id="no description"),
    pytest.param(SEND, 401, "Unauthorized", TelegramUnauthorizedError, id="plain 401"),
    pytest.param(SEND, 418, "{}", TelegramUnexpectedAnswer, id="odd status"),
]


def outcome(session: AiohttpSession, bot: Bot, method: Any, status: int, content: str) -> Any:
    try:
        return session.check_response(bot, method, status, content).result
    except Exception as exc:  # the error aiogram raises is part of what is compared
        return type(exc), str(exc)


@pytest.mark.parametrize(("method", "status", "content"), CASES)
async def test_results_and_errors_are_the_same_as_aiogram_gives(
    method: Any, status: int, content: str
) -> None:
    ours, theirs = BotSession(), AiohttpSession()
    bot = Bot(FAKE_BOT_TOKEN, session=ours)
    try:
        assert outcome(ours, bot, method, status, content) == outcome(
            theirs, bot, method, status, content
        )
    finally:
        await ours.close()
        await theirs.close()


@pytest.mark.parametrize(("method", "status", "content", "kind"), ODD)
async def test_answers_in_odd_shapes_raise_telegram_api_errors(
    method: Any, status: int, content: str, kind: type[Exception]
) -> None:
    session = BotSession()
    bot = Bot(FAKE_BOT_TOKEN, session=session)
    try:
        with pytest.raises(kind) as caught:
            session.check_response(bot, method, status, content)
        assert isinstance(caught.value, TelegramAPIError)
        assert f"HTTP {status}" in str(caught.value)
    finally:
        await session.close()


async def test_models_come_back_bound_to_the_bot_and_errors_keep_their_types() -> None:
    session = BotSession()
    bot = Bot(FAKE_BOT_TOKEN, session=session)
    try:
        message = session.check_response(bot, SEND, 200, ok(MESSAGE)).result
        assert isinstance(message, types.Message) and message.bot is bot
        [update] = session.check_response(bot, POLL, 200, ok([UPDATE])).result
        assert isinstance(update, types.Update) and update.message is not None
        assert update.message.bot is bot and update.message.from_user is not None
        with pytest.raises(TelegramRetryAfter) as flood:
            session.check_response(bot, SEND, 429, failed(429, "Too Many", retry_after=3))
        assert flood.value.retry_after == 3
        with pytest.raises(TelegramBadRequest):
            session.check_response(bot, SEND, 400, failed(400, "Bad Request: no"))
        with pytest.raises(TelegramServerError):
            session.check_response(bot, SEND, 500, failed(500, "Internal"))
        with pytest.raises(TelegramUnexpectedAnswer):
            session.check_response(bot, SEND, 200, ok({"message_id": "x"}))
    finally:
        await session.close()


def test_result_models_are_found_for_models_and_lists_of_them_only() -> None:
    assert result_model(types.Message) == (types.Message, False)
    assert result_model(list[types.Update]) == (types.Update, True)
    assert result_model(bool) == (None, False)
    assert result_model(types.Message | bool) == (None, False)
    assert result_model(list[str]) == (None, False)
