"""TurnScheduler: each user's turns in order, and no more than `max_running` turns at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bot.telegram.turns import TurnScheduler


async def test_turns_run_in_order_per_user_and_at_most_max_running_at_once() -> None:
    scheduler = TurnScheduler(max_running=2)
    running = 0
    most_running = 0
    done: dict[int, list[int]] = {}

    def turn(user: int, index: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            nonlocal running, most_running
            running += 1
            most_running = max(most_running, running)
            await asyncio.sleep(0.01)
            done.setdefault(user, []).append(index)
            running -= 1

        return job

    for index in range(3):
        for user in range(5):
            assert scheduler.submit(user, turn(user, index))
    while scheduler.active_users:
        await asyncio.sleep(0.01)
    assert most_running == 2
    assert done == {user: [0, 1, 2] for user in range(5)}


async def test_a_turn_waiting_for_its_start_is_cancelled_at_shutdown() -> None:
    scheduler = TurnScheduler(max_running=1)
    started: list[int] = []
    release = asyncio.Event()

    def turn(user: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            started.append(user)
            await release.wait()

        return job

    scheduler.submit(1, turn(1))
    scheduler.submit(2, turn(2))
    await asyncio.sleep(0.01)
    assert started == [1]
    assert await scheduler.shutdown(grace_seconds=0.05) == 2
    assert started == [1]
    assert not scheduler.submit(3, turn(3))


def test_max_running_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TurnScheduler(max_running=0)
