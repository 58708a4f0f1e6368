"""Feeding recorded updates to the dispatcher, each in its own task, one sender's in arrival
order; polling (bot/telegram/poller.py) and the webhook (bot/telegram/webhook.py) share it."""

from __future__ import annotations

import asyncio

import structlog
from aiogram import Bot, Dispatcher
from aiogram.types import Update

log = structlog.get_logger(__name__)

# Updates past the gate at once (user bookkeeping, commands, handing chat turns to the scheduler).
# The rest wait as parsed updates: a burst from hundreds of people would otherwise hold as many
# database checkouts, middleware frames and pending statements at once, for no gain in speed.
MAX_UPDATES_IN_FLIGHT = 32


class OrderedDispatch:
    def __init__(self, bot: Bot, dispatcher: Dispatcher) -> None:
        self._bot = bot
        self._dp = dispatcher
        self.tasks: set[asyncio.Task[None]] = set()
        self._last_of_sender: dict[int, asyncio.Task[None]] = {}
        self._in_flight = asyncio.Semaphore(MAX_UPDATES_IN_FLIGHT)

    def dispatch(self, update: Update, sender: int | None) -> None:
        """Feed `update` in its own task, after the sender's previous update is handled."""
        previous = self._last_of_sender.get(sender) if sender is not None else None
        task = asyncio.create_task(self._feed(update, previous))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if sender is not None:
            self._last_of_sender[sender] = task
            task.add_done_callback(lambda done: self._forget_sender(sender, done))

    async def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the updates being fed."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)

    def _forget_sender(self, sender: int, task: asyncio.Task[None]) -> None:
        if self._last_of_sender.get(sender) is task:
            del self._last_of_sender[sender]

    async def _feed(self, update: Update, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        async with self._in_flight:
            try:
                await self._dp.feed_update(self._bot, update)
            except Exception:
                log.exception("update_handling_failed", update_id=update.update_id)
