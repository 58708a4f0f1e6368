"""The Dispatcher: middlewares and routers in one place."""

from __future__ import annotations

from typing import Any

from aiogram import Dispatcher, Router
from aiogram.utils.i18n import I18n

from bot.config import Settings
from bot.i18n import LocaleMiddleware, create_i18n
from bot.services.inbox import Inbox
from bot.services.users import UserService
from bot.telegram.addressing import GroupAddressingMiddleware
from bot.telegram.handlers import (
    admin,
    billing,
    chat,
    common,
    controls,
    groups,
    payments,
    preferences,
    stop,
)
from bot.telegram.middlewares import GateMiddleware, UpdateOutcomeMiddleware

ALLOWED_UPDATES = ("message", "callback_query", "pre_checkout_query")


def feature_routers() -> list[Router]:
    """The routers tried between the common commands and chat input, in that order."""
    return [
        groups.build_router(),
        billing.build_router(),
        admin.build_router(),
        payments.build_router(),
        controls.build_router(),
        preferences.build_router(),
        stop.build_router(),
    ]


def build_dispatcher(
    settings: Settings,
    *,
    inbox: Inbox,
    users: UserService,
    extra_routers: list[Any],
    i18n: I18n | None = None,
    **deps: Any,
) -> Dispatcher:
    """`deps` become handler arguments by name (aiogram workflow data)."""
    i18n = i18n or create_i18n()
    # No handler keeps conversation state in aiogram's FSM (turns live in Postgres): without it,
    # no FSM context is built for every update.
    dp = Dispatcher(disable_fsm=True, settings=settings, users=users, **deps)
    dp.update.outer_middleware(UpdateOutcomeMiddleware(inbox))
    dp.update.outer_middleware(LocaleMiddleware(i18n))  # the gate's own replies
    dp.message.middleware(LocaleMiddleware(i18n))  # after the gate: the person's choice
    dp.callback_query.middleware(LocaleMiddleware(i18n, users))
    dp.pre_checkout_query.middleware(LocaleMiddleware(i18n, users))  # refusal reasons
    dp.message.outer_middleware(GroupAddressingMiddleware(settings.GROUPS))
    dp.message.outer_middleware(
        GateMiddleware(
            users,
            allowed_ids=settings.ALLOWED_USER_IDS,
            admin_ids=settings.ADMIN_USER_IDS,
            messages_per_minute=settings.RATE_LIMIT_MESSAGES_PER_MINUTE,
        )
    )
    dp.include_routers(common.build_router(), *extra_routers, chat.build_router())
    dp.include_router(common.build_fallback_router())
    return dp
