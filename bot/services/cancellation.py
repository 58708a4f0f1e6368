"""/stop: the registry of running turns, so a person can cancel their own.

A turn registers the task that runs it; `/stop` (handled outside the one-turn-at-a-time queue)
marks its token and cancels that task. The loop reads the token to settle a cut call as
'cancelled' (charging what was streamed) rather than as an interruption, and the chat service
turns the cancellation into a "stopped" reply instead of letting it end the person's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass
class StopToken:
    """Set when the person asked to stop the turn that holds it."""

    requested: bool = False


class RunningTurns:
    """The task running each person's current turn in each chat (a private chat or a group)."""

    def __init__(self) -> None:
        self._running: dict[tuple[int, int], tuple[asyncio.Task[Any], StopToken]] = {}

    @contextlib.contextmanager
    def running(self, user_id: int, chat_id: int) -> Iterator[StopToken]:
        """Register the current task as `user_id`'s running turn in `chat_id` for the block."""
        task = asyncio.current_task()
        assert task is not None
        token = StopToken()
        key = (user_id, chat_id)
        self._running[key] = (task, token)
        try:
            yield token
        finally:
            if key in self._running and self._running[key][1] is token:
                del self._running[key]

    def stop(self, user_id: int, chat_id: int) -> bool:
        """Cancel `user_id`'s running turn in `chat_id`; False when there is none (or it is
        already stopping)."""
        entry = self._running.get((user_id, chat_id))
        if entry is None or entry[1].requested:
            return False
        task, token = entry
        token.requested = True
        task.cancel()
        log.info("turn_stop_requested", user_id=user_id, chat_id=chat_id)
        return True


def stopped_by_person(token: StopToken | None) -> bool:
    """Inside `except CancelledError`: True when this cancellation is the person's /stop alone.

    Consumes the cancellation (`uncancel`) in that case, so the task goes on to reply; any other
    cancellation (a shutdown) still pending leaves it to propagate.
    """
    if token is None or not token.requested:
        return False
    task = asyncio.current_task()
    return task is not None and task.uncancel() == 0


def cut_by_stop(exc: BaseException, token: StopToken | None) -> bool:
    """A provider call ended by `exc` was cut by the person's /stop (not by a shutdown)."""
    return isinstance(exc, asyncio.CancelledError) and token is not None and token.requested
