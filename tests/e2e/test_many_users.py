"""Ten people each send five messages at once: every message is answered once, each person's
answers come in the order they wrote, and nothing of one person reaches another."""

from __future__ import annotations

import asyncio
import json
import random
import re

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import (
    STARTER_MICROS,
    final_texts,
    last_user_text,
    open_holds,
    rows,
    scalar,
)
from tests.fakes.anthropic import FakeAnthropic, RecordedRequest, Reply, text_reply
from tests.fakes.telegram import FakeTelegram
from tests.reliability_figures import LOAD_CASES

USERS = [8001 + n for n in range(10)]
MESSAGES_PER_USER = 5
TAG = re.compile(r"\[u(\d+)-m(\d+)\]")


def tag(user: int, number: int) -> str:
    return f"[u{user}-m{number}]"


def owners(text: str) -> set[int]:
    return {int(user) for user, _ in TAG.findall(text)}


async def echo_after_a_random_pause(record: RecordedRequest) -> Reply:
    await asyncio.sleep(random.uniform(0.01, 0.25))
    return text_reply(f"Answer to {last_user_text(record.json)}")


async def test_ten_users_five_messages_each_at_once(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    assert "ten_users_five_messages_each" in LOAD_CASES
    await start_bot()
    anthropic_fake.set_default(echo_after_a_random_pause)
    for number in range(MESSAGES_PER_USER):
        for user in USERS:
            telegram.push_text(user, f"Message {tag(user, number)}")

    for user in USERS:
        await telegram.wait_for_sent(user, MESSAGES_PER_USER, timeout=60)
    await asyncio.sleep(0.3)  # room for a wrong extra answer to show up

    for user in USERS:
        expected = [f"Answer to Message {tag(user, n)}" for n in range(MESSAGES_PER_USER)]
        assert final_texts(telegram, user) == expected
        for item in telegram.sent(user, include_drafts=True):
            assert owners(json.dumps(item.text or "")) <= {user}, item

    # What each call to Claude held: one person's messages only, in order, all of them so far.
    calls = anthropic_fake.message_requests()
    assert len(calls) == len(USERS) * MESSAGES_PER_USER
    for body in calls:
        [asker] = owners(last_user_text(body))
        assert owners(json.dumps(body)) == {asker}
        asked = [int(m) for _, m in TAG.findall(json.dumps(body["messages"]))]
        number = int(TAG.findall(last_user_text(body))[0][1])
        user_turns = [m for m in body["messages"] if m["role"] == "user"]
        assert len(user_turns) == number + 1
        assert asked == sorted(asked) and asked[-1] == number

    # Every message stored once, in order; charged once per answer; nothing left held.
    assert await scalar(engine, "SELECT count(*) FROM inbound_updates") == len(calls)
    statuses = await rows(engine, "SELECT DISTINCT status FROM inbound_updates")
    assert statuses == [("answered",)]
    for user in USERS:
        stored = await rows(
            engine,
            "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.user_id = :u AND m.role = 'user' ORDER BY m.id",
            u=user,
        )
        texts = [b["text"] for (content,) in stored for b in content if "[u" in b.get("text", "")]
        assert texts == [f"Message {tag(user, n)}" for n in range(MESSAGES_PER_USER)]
        charges = await rows(
            engine,
            "SELECT charged_micros FROM api_calls WHERE user_id = :u AND status = 'ok'",
            u=user,
        )
        assert len(charges) == MESSAGES_PER_USER and all(c > 0 for (c,) in charges)
        balance = await scalar(engine, "SELECT balance_micros FROM users WHERE id = :u", u=user)
        assert balance == STARTER_MICROS - sum(c for (c,) in charges)
    assert await open_holds(engine) == 0


async def test_turns_beyond_the_running_cap_wait_then_all_are_answered(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
) -> None:
    # One provider slot: at most two turns run at once; the rest wait before they start (no
    # "typing" yet, nothing held), and each is answered once when its turn comes.
    await start_bot(MAX_CONCURRENT_PROVIDER_CALLS="1")
    release = asyncio.Event()

    async def answer_when_released(record: RecordedRequest) -> Reply:
        await release.wait()
        return text_reply(f"Answer to {last_user_text(record.json)}")

    anthropic_fake.set_default(answer_when_released)
    users = USERS[:6]
    for user in users:
        telegram.push_text(user, f"Message {tag(user, 0)}")

    def chats_with_typing() -> set[int]:
        return {int(r.params["chat_id"]) for r in telegram.calls("sendChatAction")}

    await telegram.wait_for(lambda: len(chats_with_typing()) >= 2, timeout=30)
    await asyncio.sleep(0.5)  # room for a third turn to start, if the cap did not hold
    assert len(chats_with_typing()) == 2
    assert len(anthropic_fake.requests) == 1

    release.set()
    for user in users:
        await telegram.wait_for_sent(user, 1, timeout=60)
        assert final_texts(telegram, user) == [f"Answer to Message {tag(user, 0)}"]


async def test_a_burst_larger_than_a_batch_is_answered_once_each(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
) -> None:
    # 150 people at once: more than one getUpdates batch (100), than the updates the bot lets
    # into its gate at once (32) and than it holds waiting before it polls again (100).
    await start_bot()
    anthropic_fake.set_default(
        lambda record: text_reply(f"Answer to {last_user_text(record.json)}")
    )
    users = [9001 + n for n in range(150)]
    for user in users:
        telegram.push_text(user, f"Message {tag(user, 0)}")
    for user in users:
        await telegram.wait_for_sent(user, 1, timeout=120)
    await asyncio.sleep(0.3)  # room for a wrong extra answer to show up
    for user in users:
        assert final_texts(telegram, user) == [f"Answer to Message {tag(user, 0)}"]
    assert len(anthropic_fake.requests) == len(users)
    assert max(len(r.result or []) for r in telegram.calls("getUpdates") if r.ok) <= 100
