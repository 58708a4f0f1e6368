"""A long text that Telegram split into several messages is one turn, as an album is."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import final_texts, last_user_text, wait_update_finished
from tests.fakes.anthropic import FakeAnthropic, text_reply
from tests.fakes.telegram import FakeTelegram


def _part(word: str, length: int) -> str:
    return (word * (length // len(word) + 1))[:length]


async def test_a_long_text_split_in_three_messages_is_one_turn(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, engine: AsyncEngine
) -> None:
    await start_bot()
    user = 7201
    parts = [_part("alpha ", 4096), _part("beta ", 4096), _part("gamma ", 808)]
    anthropic_fake.script(text_reply("I read all of it."), text_reply("Unexpected second turn."))
    update_ids = []
    for part in parts:
        update_ids.append(telegram.push_text(user, part))
        await asyncio.sleep(0.05)
    await telegram.wait_for_sent(user, 1, timeout=20)
    for update_id in update_ids:
        assert await wait_update_finished(telegram, engine, update_id) == "answered"
    await asyncio.sleep(1.0)  # a second turn would have started by now
    assert final_texts(telegram, user) == ["I read all of it."]
    [request] = anthropic_fake.message_requests()
    assert last_user_text(request) == "\n".join(parts)


async def test_short_messages_in_quick_succession_stay_separate_turns(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    await start_bot()
    user = 7202
    anthropic_fake.script(text_reply("First."), text_reply("Second."))
    telegram.push_text(user, "Hello")
    await asyncio.sleep(0.05)
    telegram.push_text(user, "Are you there?")
    await telegram.wait_for_sent(user, 2, timeout=20)
    assert final_texts(telegram, user) == ["First.", "Second."]
    assert [last_user_text(r) for r in anthropic_fake.message_requests()] == [
        "Hello",
        "Are you there?",
    ]
