"""One turn at a time per user, in arrival order; different users run in parallel, up to a cap."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

Job = Callable[[], Awaitable[None]]


class TurnScheduler:
    """Runs each user's turns in order, and at most `max_running` turns of all users at once.

    A turn in progress holds its conversation, its requests and its Telegram messages in memory;
    one waiting for its start holds only the incoming message. The cap keeps a burst from hundreds
    of people from holding hundreds of turns at once when the provider slots and Telegram's
    message rate would let only a fraction of them progress anyway.
    """

    def __init__(self, *, max_running: int) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self._queues: dict[int, deque[Job]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._running = asyncio.Semaphore(max_running)
        self._accepting = True

    @property
    def active_users(self) -> int:
        return len(self._workers)

    def submit(self, user_id: int, job: Job) -> bool:
        """Queue `job` behind the user's earlier turns. False once shutdown has begun."""
        if not self._accepting:
            return False
        self._queues.setdefault(user_id, deque()).append(job)
        if user_id not in self._workers:
            self._workers[user_id] = asyncio.create_task(self._work(user_id))
        return True

    async def _work(self, user_id: int) -> None:
        queue = self._queues[user_id]
        try:
            while queue:
                job = queue.popleft()
                try:
                    async with self._running:
                        await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("turn_job_failed", user_id=user_id)
        finally:
            self._workers.pop(user_id, None)
            if not queue:
                self._queues.pop(user_id, None)

    async def shutdown(self, grace_seconds: float) -> int:
        """Stop accepting, give running turns `grace_seconds`, cancel the rest; returns cancelled."""
        self._accepting = False
        workers = list(self._workers.values())
        if not workers:
            return 0
        _, pending = await asyncio.wait(workers, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if pending:
            log.warning("turns_interrupted", count=len(pending))
        return len(pending)
