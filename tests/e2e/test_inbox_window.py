"""Through the real process: an update id seen more than 7 days ago is a new message, one seen
within the window is a duplicate, and old inbox rows are purged by the running bot."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import final_texts, poll_until, wait_update_finished
from tests.fakes.anthropic import FakeAnthropic, text_reply
from tests.fakes.telegram import FakeTelegram


async def _age(engine: AsyncEngine, update_id: int, days: float) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE inbound_updates SET received_at = now() - make_interval(secs => :s) "
                "WHERE update_id = :u"
            ),
            {"s": days * 86400, "u": update_id},
        )


async def test_a_reused_update_id_is_answered_after_the_window_and_old_rows_are_purged(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, engine: AsyncEngine
) -> None:
    bot = await start_bot(INBOX_PURGE_INTERVAL_SECONDS="0.5")
    user = 7301
    anthropic_fake.script(text_reply("First answer."), text_reply("Second answer."))
    update_id = telegram.push_text(user, "Hello", update_id=555_000)
    await telegram.wait_for_sent(user, 1, timeout=20)
    await wait_update_finished(telegram, engine, update_id)

    async def duplicates(count: int) -> None:
        async def seen() -> bool:
            return bot.log_text().count("duplicate_update_ignored") >= count

        await poll_until(seen, 10, lambda: f"fewer than {count} duplicates logged")

    # Within the window (now, and 6.5 days later): the same id again is a duplicate.
    telegram.push_text(user, "Hello", update_id=555_000)
    await duplicates(1)
    await _age(engine, update_id, 6.5)
    telegram.push_text(user, "Hello again", update_id=555_000)
    await duplicates(2)

    # Eight days later Telegram hands the id out again: a new message, answered.
    await _age(engine, update_id, 8)
    telegram.push_text(user, "Hello again", update_id=555_000)
    await telegram.wait_for_sent(user, 2, timeout=20)
    assert bot.log_text().count("duplicate_update_ignored") == 2
    assert final_texts(telegram, user)[0] == "First answer."

    # A row older than the window goes with the next purge.
    await wait_update_finished(telegram, engine, update_id)
    await _age(engine, update_id, 8)

    async def purged() -> bool:
        async with engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM inbound_updates"))
        return count == 0

    await poll_until(purged, 10, lambda: "inbox rows were not purged")
    assert "inbox_purged" in bot.log_text()


async def test_a_reused_update_id_gets_a_real_answer(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, engine: AsyncEngine
) -> None:
    await start_bot()
    user = 7302
    anthropic_fake.script(text_reply("First answer."), text_reply("Second answer."))
    update_id = telegram.push_text(user, "Hello", update_id=556_000)
    await telegram.wait_for_sent(user, 1, timeout=20)
    await wait_update_finished(telegram, engine, update_id)
    await _age(engine, update_id, 8)
    telegram.push_text(user, "Hello again", update_id=556_000)
    await telegram.wait_for_sent(user, 2, timeout=20)
    assert final_texts(telegram, user) == ["First answer.", "Second answer."]
