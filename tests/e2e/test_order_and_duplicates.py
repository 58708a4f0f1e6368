"""Duplicates and order: a redelivered update is answered once; one user's messages are answered
one at a time and in order, while different users are served in parallel."""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import (
    final_texts,
    last_user_text,
    open_holds,
    rows,
    scalar,
    wait_update_finished,
)
from tests.fakes.anthropic import Delay, FakeAnthropic, RecordedRequest, Reply, text_reply
from tests.fakes.telegram import FakeTelegram


def text_update(user_id: int, update_id: int, text: str, message_id: int) -> dict[str, Any]:
    person = {"id": user_id, "is_bot": False, "first_name": "Dana", "username": "dana"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": "Dana"},
            "from": person,
            "text": text,
        },
    }


async def test_one_update_delivered_100_times_is_answered_once(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    bot = await start_bot()
    user, update_id = 4001, 777001
    anthropic_fake.script(Delay(0.5, text_reply("Only once.")))
    raw = text_update(user, update_id, "Hello, once.", 11)
    for _ in range(4):
        for _ in range(25):
            telegram.push_update(copy.deepcopy(raw))
        await telegram.wait_for(lambda: not telegram.pending_update_ids(), timeout=15)
    await telegram.wait_for_sent(user, 1, timeout=15)
    assert await wait_update_finished(telegram, engine, update_id) == "answered"
    await asyncio.sleep(0.3)  # room for a wrong second answer to show up
    assert final_texts(telegram, user) == ["Only once."]
    assert len(anthropic_fake.message_requests()) == 1
    charges = await scalar(
        engine,
        "SELECT count(*) FROM balance_operations WHERE user_id = :u AND kind = 'charge'",
        u=user,
    )
    assert charges == 1
    assert await scalar(engine, "SELECT count(*) FROM inbound_updates") == 1
    assert await scalar(engine, "SELECT count(*) FROM messages WHERE role = 'user'") == 1
    assert bot.log_text().count('"duplicate_update_ignored"') == 99
    assert await open_holds(engine) == 0


async def echo_slowly(record: RecordedRequest) -> Reply:
    await asyncio.sleep(0.4)
    return text_reply(f"Re: {last_user_text(record.json)}")


def intervals_of(anthropic_fake: FakeAnthropic, prefix: str) -> list[tuple[float, float]]:
    found = [
        (r.time_start, r.time_end or 0.0)
        for r in anthropic_fake.requests
        if r.path == "/v1/messages" and last_user_text(r.json).startswith(prefix)
    ]
    return sorted(found)


async def test_users_run_in_parallel_and_each_users_messages_in_order(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot()
    anthropic_fake.set_default(echo_slowly)
    alice, bob = 4101, 4102
    updates = [telegram.push_text(alice, f"Alice {n}") for n in range(3)]
    updates.append(telegram.push_text(bob, "Bob 0"))
    await telegram.wait_for_sent(alice, 3, timeout=20)
    await telegram.wait_for_sent(bob, 1, timeout=20)
    for update_id in updates:
        await wait_update_finished(telegram, engine, update_id)
    assert final_texts(telegram, alice) == ["Re: Alice 0", "Re: Alice 1", "Re: Alice 2"]
    assert final_texts(telegram, bob) == ["Re: Bob 0"]

    alice_calls = intervals_of(anthropic_fake, "Alice")
    [bob_call] = intervals_of(anthropic_fake, "Bob")
    assert len(alice_calls) == 3
    for (_, previous_end), (next_start, _) in itertools.pairwise(alice_calls):
        assert next_start >= previous_end, "one user's turns must not overlap"
    first_start, first_end = alice_calls[0]
    assert bob_call[0] < first_end and first_start < bob_call[1], "users run in parallel"

    # Alice's third turn saw her first two turns, in order.
    third = next(
        r.json
        for r in anthropic_fake.requests
        if r.path == "/v1/messages" and last_user_text(r.json) == "Alice 2"
    )
    texts = [block["text"] for m in third["messages"] for block in m["content"]]
    assert texts == ["Alice 0", "Re: Alice 0", "Alice 1", "Re: Alice 1", "Alice 2"]
    statuses = await rows(engine, "SELECT status FROM inbound_updates ORDER BY update_id")
    assert [s for (s,) in statuses] == ["answered"] * 4
