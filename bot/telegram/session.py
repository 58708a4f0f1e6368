"""The Bot API session: aiogram's aiohttp session, checking results with the models' own validators.

aiogram checks every response with `Response[method.__returning__]`: a generic model per result
type, and each one holds its own copy of the result's schema. The copy inside `Response[Message]`
costs about 1.1 MB and the one inside `Response[list[Update]]` 1.3 MB, next to the 2.3 MB and
1.7 MB that `Message` and `Update` already hold. A successful response whose result is a model,
or a list of one, is checked here with that model's own validator, with the same context (the
bot) aiogram passes. Everything else (errors, flood waits, plain values such as `True`, a body
that does not parse) goes through aiogram's own check, so its exceptions stay the same.

An answer in a shape the Bot API never gives (a proxy's `{"message": ...}` with HTTP 500, an HTML
error page, a result aiogram cannot decode) raises aiogram's `ClientDecodeError`, which is not a
`TelegramAPIError`: every `except TelegramAPIError` would miss it. It is turned into the
`TelegramAPIError` its HTTP status means (5xx: `TelegramServerError`, retried like one), or into
`TelegramUnexpectedAnswer` for a 2xx whose result does not decode.
"""

from __future__ import annotations

import typing
from http import HTTPStatus
from typing import Any, cast

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from pydantic import BaseModel, ValidationError


def result_model(returning: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a method's result is made of, and whether the result is a list of them."""
    if isinstance(returning, type) and issubclass(returning, BaseModel):
        return returning, False
    if typing.get_origin(returning) is list:
        [item] = typing.get_args(returning)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, True
    return None, False


class TelegramUnexpectedAnswer(TelegramAPIError):
    """A success status with a body that is not a Bot API answer, or a result that does not decode."""


_BY_STATUS: dict[int, type[TelegramAPIError]] = {
    HTTPStatus.BAD_REQUEST: TelegramBadRequest,
    HTTPStatus.UNAUTHORIZED: TelegramUnauthorizedError,
    HTTPStatus.FORBIDDEN: TelegramForbiddenError,
    HTTPStatus.NOT_FOUND: TelegramNotFound,
    HTTPStatus.CONFLICT: TelegramConflictError,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: TelegramEntityTooLarge,
}
MAX_QUOTED_BODY = 200


def unexpected_answer(
    method: TelegramMethod[Any], status_code: int, content: str
) -> TelegramAPIError:
    """The TelegramAPIError for an answer in a shape the Bot API never gives."""
    body = " ".join(content.split())[:MAX_QUOTED_BODY]
    message = f"unexpected answer (HTTP {status_code}): {body}"
    if status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return TelegramServerError(method=method, message=message)
    kind = _BY_STATUS.get(status_code, TelegramUnexpectedAnswer)
    return kind(method=method, message=message)


class BotSession(AiohttpSession):
    def check_response(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        status_code: int,
        content: str,
    ) -> Response[TelegramType]:
        try:
            return self._check_response(bot, method, status_code, content)
        except (ClientDecodeError, TypeError):
            # TypeError: aiogram's own check on an error body without a description.
            raise unexpected_answer(method, status_code, content) from None

    def _check_response(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        status_code: int,
        content: str,
    ) -> Response[TelegramType]:
        model, many = result_model(method.__returning__)
        if model is None or not HTTPStatus.OK <= status_code <= HTTPStatus.IM_USED:
            return super().check_response(bot, method, status_code, content)
        try:
            body = self.json_loads(content)
            if not isinstance(body, dict) or body.get("ok") is not True:
                raise ValueError("not a successful response")
            context = {"bot": bot}
            raw = body["result"]
            if many and not isinstance(raw, list):
                raise ValueError("the result is not a list")
            result = (
                [model.model_validate(item, context=context) for item in raw]
                if many
                else model.model_validate(raw, context=context)
            )
        except (ValueError, KeyError, TypeError, ValidationError):
            # Not a well-formed success after all: aiogram's own check raises its usual error.
            return super().check_response(bot, method, status_code, content)
        # The plain generic class: parametrizing it would build the copy this avoids.
        return cast("Response[TelegramType]", Response.model_construct(ok=True, result=result))
