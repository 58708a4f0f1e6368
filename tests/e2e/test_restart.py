"""Restarts: the conversation survives a restart, and a turn cut off by SIGTERM is released,
marked interrupted, and reported to the user after the restart."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import (
    STARTER_MICROS,
    ask,
    assert_extends_cached_prefix,
    balance,
    final_texts,
    open_holds,
    poll_until,
    rows,
    update_status,
    user_texts,
)
from tests.fakes.anthropic import Delay, FakeAnthropic, text_reply
from tests.fakes.telegram import FakeTelegram

GRACE_SECONDS = 1.0


async def test_conversation_is_remembered_across_a_restart(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
) -> None:
    bot = await start_bot()
    user = 5001
    anthropic_fake.script(text_reply("Nice to meet you, Carol."))
    assert await ask(telegram, user, "My name is Carol.") == ["Nice to meet you, Carol."]
    assert await bot.stop() == 0

    await start_bot()
    anthropic_fake.script(text_reply("You are Carol."))
    assert await ask(telegram, user, "Who am I?") == ["You are Carol."]
    before, after = anthropic_fake.message_requests()
    assert [(m["role"], user_texts(m)) for m in after["messages"]] == [
        ("user", ["My name is Carol."]),
        ("assistant", ["Nice to meet you, Carol."]),
        ("user", ["Who am I?"]),
    ]
    assert_extends_cached_prefix(before, after)


async def test_sigterm_during_a_turn_releases_the_hold_and_the_user_is_told(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    bot = await start_bot(SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS))
    user = 5101
    anthropic_fake.script(Delay(30.0, text_reply("This never arrives.")))
    update_id = telegram.push_text(user, "Think very hard about this.")
    await anthropic_fake.wait_for_requests(1, timeout=15)
    assert await update_status(engine, update_id) == "received"

    started = time.monotonic()
    assert await bot.stop() == 0
    assert time.monotonic() - started < GRACE_SECONDS + 4
    assert "turns_interrupted" in bot.log_text()
    assert await update_status(engine, update_id) == "interrupted"
    assert await open_holds(engine) == 0
    assert await balance(engine, user) == STARTER_MICROS
    calls = await rows(
        engine, "SELECT status, charged_micros FROM api_calls WHERE user_id = :u", u=user
    )
    assert calls == [("error", 0)]
    assert final_texts(telegram, user) == []

    await start_bot()
    [notice] = await telegram.wait_for_sent(user, 1, timeout=15)
    assert "send it again" in (notice.text or "")

    async def notified() -> bool:
        return await update_status(engine, update_id) == "notified"

    await poll_until(notified, 10, lambda: "the interrupted update is not marked notified")

    anthropic_fake.script(text_reply("Here is my careful answer."))
    assert await ask(telegram, user, "Think very hard about this.") == [
        "Here is my careful answer."
    ]
    body = anthropic_fake.message_requests()[-1]
    assert len(body["messages"]) == 1  # the interrupted message and its resend, merged
    assert user_texts(body["messages"][0]) == [
        "Think very hard about this.",
        "Think very hard about this.",
    ]
