"""Telegram flood control: honour `retry_after`, retry brief outages, pace visible messages.

Install both on the bot's session, retries first so that every retry is paced again:

    bot.session.middleware(RetryAfterMiddleware())
    bot.session.middleware(PacingMiddleware(OutgoingPacer()))

Telegram allows about one message per second per chat (short bursts are tolerated) and about
30 per second overall; beyond that it answers 429 with `retry_after`. Pacing keeps us under
those limits so the first message of a turn goes out at once and 429s stay rare.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods.base import TelegramType

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.methods import Response, TelegramMethod

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
ChatKey = int | str

# Messages people see in the chat; these count against Telegram's per-chat limits.
PACED_METHODS: Final = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendMediaGroup",
        "editMessageText",
        "editMessageCaption",
        "editMessageMedia",
        "sendAnimation",
        "sendVideo",
        "sendAudio",
        "sendVoice",
        "sendSticker",
        "copyMessage",
        "forwardMessage",
    }
)
# aiogram's polling loop already backs off on failures; a retry here would only stack delays.
# getUpdates has its own back-off in the poller, and start-up's getMe its own deadline; a draft or
# a chat action is cosmetic and stale a second later (the next one replaces it).
NOT_RETRIED_ON_FAILURE: Final = frozenset(
    {"getUpdates", "getMe", "sendMessageDraft", "sendChatAction"}
)
FAILURE_BACKOFF: Final = (0.5, 1.0)
_MIN_JITTER: Final = 0.05


def _method_name(method: TelegramMethod[TelegramType]) -> str:
    return str(getattr(method, "__api_method__", type(method).__name__))


def _chat_of(method: TelegramMethod[TelegramType]) -> ChatKey | None:
    chat_id = getattr(method, "chat_id", None)
    return chat_id if isinstance(chat_id, int | str) else None


class RetryAfterMiddleware(BaseRequestMiddleware):
    """Retries a request after Telegram's flood wait, and after brief server or network failures.

    Flood waits: sleeps `retry_after` plus a small jitter (never less), as long as the total wait
    stays within `max_wait` seconds; then the `TelegramRetryAfter` surfaces.

    Failures (5xx, network): retried after each delay in `failure_backoff`, for every method
    except `getUpdates`. A send that reached Telegram before the connection broke can then be
    delivered twice; that is rare and a repeated message is better than a lost answer.
    """

    def __init__(
        self,
        *,
        max_wait: float = 60.0,
        failure_backoff: Sequence[float] = FAILURE_BACKOFF,
        jitter: float = 0.25,
        not_retried_on_failure: frozenset[str] = NOT_RETRIED_ON_FAILURE,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        on_retry_after: Callable[[], None] | None = None,
    ) -> None:
        self._max_wait = max_wait
        self._on_retry_after = on_retry_after
        self._failure_backoff = tuple(failure_backoff)
        self._jitter = jitter
        self._not_retried = not_retried_on_failure
        self._sleep = sleep
        self._rng = rng or random.Random()

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        waited = 0.0
        failures = 0
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                waited += await self._wait_out_flood(method, exc, waited)
            except (TelegramServerError, TelegramNetworkError) as exc:
                await self._back_off(method, exc, failures)
                failures += 1

    async def _wait_out_flood(
        self, method: TelegramMethod[TelegramType], exc: TelegramRetryAfter, waited: float
    ) -> float:
        name, chat = _method_name(method), _chat_of(method)
        if self._on_retry_after is not None:
            self._on_retry_after()
        if waited + exc.retry_after > self._max_wait:
            log.warning(
                "telegram_retry_after_exhausted",
                method=name,
                chat_id=chat,
                retry_after=exc.retry_after,
                waited=round(waited, 2),
            )
            raise exc
        delay = exc.retry_after + _MIN_JITTER + self._rng.uniform(0.0, self._jitter)
        log.warning("telegram_retry_after", method=name, chat_id=chat, retry_after=exc.retry_after)
        await self._sleep(delay)
        return delay

    async def _back_off(
        self, method: TelegramMethod[TelegramType], exc: Exception, failures: int
    ) -> None:
        name = _method_name(method)
        if name in self._not_retried or failures >= len(self._failure_backoff):
            raise exc
        delay = self._failure_backoff[failures]
        log.warning(
            "telegram_request_retry",
            method=name,
            error=type(exc).__name__,
            attempt=failures + 1,
            delay=delay,
        )
        await self._sleep(delay)


@dataclass(slots=True)
class _Bucket:
    """Token bucket kept as a theoretical arrival time (GCRA): O(1) to reserve, no timers."""

    interval: float
    tolerance: float
    next_free: float = float("-inf")
    hold_until: float = float("-inf")

    def reserve(self, now: float) -> float:
        """Takes the next free slot; returns the time it starts (now, or later when busy)."""
        next_free = max(self.next_free, now)
        self.next_free = next_free + self.interval
        return max(next_free - self.tolerance, now)

    def hold(self, until: float) -> None:
        """No message before `until`, and no burst right after it."""
        self.hold_until = max(self.hold_until, until)
        self.next_free = max(self.next_free, until + self.tolerance)

    def is_idle(self, now: float) -> bool:
        return self.next_free <= now and self.hold_until <= now


# Telegram counts messages where they arrive. Pacing at exactly its rates, a message that arrives a
# few milliseconds early (the one before it took longer on the way) finds the chat's or the bot's
# allowance empty and draws a 429: about one in 1,500 in the benchmark. Pacing 3 % under the rates
# lets Telegram's side build up that much slack.
PACING_HEADROOM = 0.97


class OutgoingPacer:
    """Per-chat and global pacing of visible messages, as token buckets.

    A chat gets `per_chat_burst` messages at once and then `per_chat_rate` per second; a group (a
    negative chat id) gets at most `group_per_minute` messages in any minute, evenly spaced; all
    chats together get `global_burst` at once and `global_rate` per second. Callers wait in arrival
    order by sleeping until their slot; a message with a free slot does not wait (or yield) at
    all. Buckets of idle chats are dropped, so memory follows the number of active chats.
    """

    def __init__(
        self,
        *,
        per_chat_rate: float = 1.0,
        per_chat_burst: int = 3,
        global_rate: float = 30.0,
        global_burst: int = 30,
        group_per_minute: float = 20.0 * PACING_HEADROOM,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        sweep_every: int = 1024,
    ) -> None:
        self._chat_interval = 1.0 / per_chat_rate
        self._chat_tolerance = (per_chat_burst - 1) * self._chat_interval
        # No burst in a group: evenly spaced, no minute holds more than `group_per_minute`.
        self._group_interval = max(60.0 / group_per_minute, self._chat_interval)
        global_interval = 1.0 / global_rate
        self._global = _Bucket(global_interval, (global_burst - 1) * global_interval)
        self._chats: dict[ChatKey, _Bucket] = {}
        self._clock = clock
        self._sleep = sleep
        self._sweep_every = sweep_every
        self._sweep_at = sweep_every

    @property
    def tracked_chats(self) -> int:
        return len(self._chats)

    def set_global_rate(self, rate: float, burst: int) -> None:
        """A new overall allowance (several replicas share Telegram's global rate)."""
        self._global.interval = 1.0 / rate
        self._global.tolerance = (max(1, burst) - 1) * self._global.interval

    async def acquire(self, chat_id: ChatKey | None) -> float:
        """Waits until a visible message to `chat_id` may be sent; returns the seconds waited."""
        started = self._clock()
        if chat_id is not None:
            await self._wait_for(self._chat_bucket(chat_id, started))
        await self._wait_for(self._global)
        return self._clock() - started

    def hold(self, chat_id: ChatKey | None, seconds: float) -> None:
        """Telegram asked us to pause: nothing more to this chat (or at all) for `seconds`."""
        now = self._clock()
        bucket = self._global if chat_id is None else self._chat_bucket(chat_id, now)
        bucket.hold(now + seconds)

    async def _wait_for(self, bucket: _Bucket) -> None:
        now = self._clock()
        start = bucket.reserve(now)
        while start > now:
            await self._sleep(start - now)
            now = self._clock()
            start = bucket.reserve(now) if bucket.hold_until > now else now

    def _chat_bucket(self, chat_id: ChatKey, now: float) -> _Bucket:
        bucket = self._chats.get(chat_id)
        if bucket is None:
            self._drop_idle_chats(now)
            if isinstance(chat_id, int) and chat_id < 0:
                bucket = _Bucket(self._group_interval, 0.0)
            else:
                bucket = _Bucket(self._chat_interval, self._chat_tolerance)
            self._chats[chat_id] = bucket
        return bucket

    def _drop_idle_chats(self, now: float) -> None:
        """Amortised O(1): a full sweep only after the table has doubled since the last one."""
        if len(self._chats) < self._sweep_at:
            return
        for chat_id in [c for c, bucket in self._chats.items() if bucket.is_idle(now)]:
            del self._chats[chat_id]
        self._sweep_at = max(self._sweep_every, 2 * len(self._chats))


class PacingMiddleware(BaseRequestMiddleware):
    """Paces visible messages through an `OutgoingPacer`; a 429 pauses that chat for everyone.

    Chat actions, drafts (throttled by the streaming code) and all other methods pass through.
    """

    def __init__(
        self, pacer: OutgoingPacer, *, paced_methods: frozenset[str] = PACED_METHODS
    ) -> None:
        self._pacer = pacer
        self._paced_methods = paced_methods

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if _method_name(method) not in self._paced_methods:
            return await make_request(bot, method)
        chat = _chat_of(method)
        await self._pacer.acquire(chat)
        try:
            return await make_request(bot, method)
        except TelegramRetryAfter as exc:
            self._pacer.hold(chat, exc.retry_after)
            raise
