"""Long polling that records each update in the inbox before it is confirmed to Telegram."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import structlog
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramUnauthorizedError
from aiogram.methods import GetUpdates
from aiogram.types import Update

from bot.services.inbox import InboundRecord, Inbox
from bot.telegram.ordered import OrderedDispatch

log = structlog.get_logger(__name__)

MAX_BACKOFF = 5.0
# The shortest time between two getUpdates calls that both came back empty. Telegram holds an
# empty poll for `timeout` seconds; a server that answers at once would otherwise be polled
# about a thousand times a second.
MIN_EMPTY_POLL_INTERVAL = 0.5
HEARTBEAT_EVERY = 5.0
# Updates received but not yet through the gate before the next getUpdates waits: beyond this,
# Telegram keeps them (one batch is at most 100), so a burst is not held in memory all at once.
MAX_UPDATES_WAITING = 100


def inbound_record(update: Update) -> InboundRecord:
    event = update.event
    user = getattr(event, "from_user", None)
    chat = getattr(event, "chat", None)
    if chat is None:
        message = getattr(event, "message", None)
        chat = getattr(message, "chat", None)
    return InboundRecord(
        update_id=update.update_id,
        user_id=user.id if user else None,
        chat_id=chat.id if chat else None,
        kind=update.event_type,
    )


class Poller:
    """getUpdates -> inbox (one batch insert) -> dispatch each new update in its own task.

    An update is confirmed to Telegram only by the next getUpdates call, which happens after the
    batch was recorded: a crash can cause a redelivery (deduplicated by the inbox), never a loss.
    """

    def __init__(
        self,
        bot: Bot,
        dispatcher: Dispatcher,
        inbox: Inbox,
        *,
        allowed_updates: Sequence[str],
        timeout: int,
        min_empty_interval: float = MIN_EMPTY_POLL_INTERVAL,
        heartbeat: Path | None = None,
    ) -> None:
        self._bot = bot
        self._dp = dispatcher
        self._inbox = inbox
        self._allowed = list(allowed_updates)
        self._timeout = timeout
        self._offset: int | None = None
        self._ordered = OrderedDispatch(bot, dispatcher)
        self._min_empty_interval = min_empty_interval
        self._heartbeat = heartbeat
        self._last_beat = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            began = loop.time()
            self._beat(began)
            try:
                updates = await self._fetch(stop)
            except TelegramUnauthorizedError:
                log.error("telegram_token_rejected")
                raise
            except Exception as exc:
                # Network, 5xx, or an answer in a shape the Bot API never gives: wait and poll
                # again; polling never stops on its own.
                log.warning("polling_failed", error=type(exc).__name__, retry_in=backoff)
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 0.5
            if updates:
                await self._accept(updates)
                await self._wait_for_room(stop)
            else:
                early = self._min_empty_interval - (loop.time() - began)
                if early > 0:
                    await _sleep_unless(stop, early)
        await self._confirm_offset()

    def _beat(self, now: float) -> None:
        """Touch the heartbeat file (the container healthcheck reads its age), at most every 5 s."""
        if self._heartbeat is None or now - self._last_beat < HEARTBEAT_EVERY:
            return
        self._last_beat = now
        try:
            self._heartbeat.parent.mkdir(parents=True, exist_ok=True)
            self._heartbeat.touch()
        except OSError as exc:
            log.warning("heartbeat_failed", path=str(self._heartbeat), error=str(exc))
            self._heartbeat = None

    async def _fetch(self, stop: asyncio.Event) -> list[Update]:
        request = GetUpdates(
            offset=self._offset, timeout=self._timeout, allowed_updates=self._allowed
        )
        poll = asyncio.ensure_future(self._bot(request, request_timeout=self._timeout + 10))
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if poll not in done:
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poll
            return []
        stopping.cancel()
        return list(poll.result())

    async def _accept(self, updates: list[Update]) -> None:
        records = [inbound_record(u) for u in updates]
        fresh = await self._inbox.record(records)
        for update, record in zip(updates, records, strict=True):
            if update.update_id in fresh:
                fresh.discard(update.update_id)  # a batch may repeat an update
                self._ordered.dispatch(update, record.user_id)
            else:
                log.info("duplicate_update_ignored", update_id=update.update_id)
        self._offset = max(u.update_id for u in updates) + 1

    async def _wait_for_room(self, stop: asyncio.Event) -> None:
        """Hold the next getUpdates while `MAX_UPDATES_WAITING` updates are still being fed."""
        tasks = self._ordered.tasks
        if len(tasks) < MAX_UPDATES_WAITING:
            return
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while len(tasks) >= MAX_UPDATES_WAITING and not stop.is_set():
                await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def _confirm_offset(self) -> None:
        if self._offset is None:
            return
        with contextlib.suppress(Exception):
            await self._bot(GetUpdates(offset=self._offset, timeout=0, limit=1), request_timeout=5)

    async def wait_dispatched(self, timeout: float) -> None:
        await self._ordered.wait(timeout)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
