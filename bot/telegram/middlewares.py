"""Update-level bookkeeping and the gate every message passes before a handler runs."""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import structlog
from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import Message, TelegramObject, Update

from bot.i18n import N_, _
from bot.logs import bind_context
from bot.services.inbox import Inbox
from bot.services.users import TelegramIdentity, UserService

log = structlog.get_logger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

DEFERRED = object()  # returned by a handler that scheduled a turn; the turn records its own outcome
IGNORED = object()  # returned when the gate turned a message away
NOT_ALLOWED_REPLY = N_("Sorry, this bot is private. Ask its owner for access.")
MAX_REMEMBERED_STRANGERS = 100_000
MAX_TRACKED_USERS = 10_000
TOO_FAST_REPLY = N_(
    "You're sending messages faster than I can take them. Please wait a minute and try again."
)


class UpdateOutcomeMiddleware(BaseMiddleware):
    """Binds log context and records in the inbox how each update ended."""

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        bind_context({"update_id": event.update_id})
        status: str | None = "failed"
        try:
            result = await handler(event, data)
            status = _status_for(result)
            return result
        finally:
            if status is not None:
                await self._inbox.mark(event.update_id, status)


def _status_for(result: object) -> str | None:
    if result is DEFERRED:
        return None
    if result is UNHANDLED or result is IGNORED:
        return "ignored"
    return "answered"


class GateMiddleware(BaseMiddleware):
    """Whitelist, user creation, blocked users and the per-user message rate limit."""

    def __init__(
        self,
        users: UserService,
        *,
        allowed_ids: Collection[int],
        admin_ids: Collection[int],
        messages_per_minute: int,
    ) -> None:
        self._users = users
        self._allowed = set(allowed_ids) | set(admin_ids) if allowed_ids else set()
        self._refused: set[int] = set()
        self._rate = MessageRateLimit(messages_per_minute)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Message)
        who = event.from_user
        if who is None or who.is_bot:
            return IGNORED
        if event.chat.type != "private" and not data.get("group_addressed"):
            return IGNORED  # groups: see bot.telegram.addressing, registered before the gate
        if self._allowed and who.id not in self._allowed:
            return await self._refuse_stranger(event)
        state = await self._users.touch(
            TelegramIdentity(who.id, who.username, who.first_name, who.language_code)
        )
        if event.successful_payment is not None:  # money was taken: always credit it
            data["user_state"] = state
            return await handler(event, data)
        if state.is_blocked:
            return IGNORED
        verdict = self._rate.check(who.id, time.monotonic())
        if verdict is not RateVerdict.ALLOWED:
            if verdict is RateVerdict.REFUSED_TELL:
                log.info("message_rate_limited", user_id=who.id)
                await event.answer(_(TOO_FAST_REPLY))
            return IGNORED
        data["user_state"] = state
        return await handler(event, data)

    async def _refuse_stranger(self, event: Message) -> Any:
        assert event.from_user is not None
        if event.from_user.id not in self._refused:
            if len(self._refused) >= MAX_REMEMBERED_STRANGERS:
                self._refused.clear()
            self._refused.add(event.from_user.id)
            log.info("stranger_refused", user_id=event.from_user.id)
            await event.answer(_(NOT_ALLOWED_REPLY))
        return IGNORED


class RateVerdict(enum.Enum):
    ALLOWED = "allowed"
    REFUSED_TELL = "refused_tell"  # the first refusal in a window: say why
    REFUSED_SILENT = "refused_silent"  # already told in this window: a flood gets no flood back


class MessageRateLimit:
    """At most `per_window` messages per user in any sliding `window_seconds`. Refused messages
    do not count; the user is told once per window, not once per refused message."""

    def __init__(self, per_window: int, *, window_seconds: float = 60.0) -> None:
        self._per_window = per_window
        self._window = window_seconds
        self._recent: dict[int, deque[float]] = {}
        self._told_at: dict[int, float] = {}

    def check(self, user_id: int, now: float) -> RateVerdict:
        recent = self._recent.setdefault(user_id, deque())
        while recent and now - recent[0] >= self._window:
            recent.popleft()
        if len(recent) < self._per_window:
            recent.append(now)
            if len(self._recent) > MAX_TRACKED_USERS:
                self._drop_idle(now)
            return RateVerdict.ALLOWED
        told = self._told_at.get(user_id)
        if told is not None and now - told < self._window:
            return RateVerdict.REFUSED_SILENT
        self._told_at[user_id] = now
        return RateVerdict.REFUSED_TELL

    def _drop_idle(self, now: float) -> None:
        idle = [u for u, r in self._recent.items() if not r or now - r[-1] >= self._window]
        for user_id in idle:
            del self._recent[user_id]
        for user_id in [u for u, t in self._told_at.items() if now - t >= self._window]:
            del self._told_at[user_id]
