"""A turn has a deadline (TURN_TIMEOUT_SECONDS): whatever is slow (Claude before its first word,
Claude mid-answer, an image generation), the person is told it took too long, every hold is
released, nothing is charged for the unfinished part and the next message works."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.services.money import format_usd
from bot.turns.replies import CHARGED_REPLIES, TIMEOUT_REPLY
from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import (
    ask,
    balance,
    final_texts,
    open_holds,
    rows,
    scalar,
    wait_update_finished,
)
from tests.fakes.anthropic import (
    Delay,
    FakeAnthropic,
    Reply,
    text_block,
    text_reply,
    tool_use_reply,
)
from tests.fakes.gemini import FakeGemini, image_reply
from tests.fakes.telegram import FakeTelegram

TURN_TIMEOUT = 2.0
STARTER_MICROS = 5_000_000
SLOW_TEXT = "This answer streams far too slowly " + "and goes on " * 150


async def turn_error(engine: AsyncEngine, update_id: int) -> str | None:
    sql = "SELECT error FROM inbound_updates WHERE update_id = :u"
    return await scalar(engine, sql, u=update_id)  # type: ignore[no-any-return]


async def charged_ok_calls(engine: AsyncEngine, user: int) -> int:
    sql = "SELECT coalesce(sum(charged_micros), 0) FROM api_calls WHERE user_id = :u"
    return int(await scalar(engine, sql, u=user))


async def assert_timed_out_and_free(
    telegram: FakeTelegram, engine: AsyncEngine, user: int, update_id: int, started: float
) -> None:
    """One "took too long" reply near the deadline; no hold open; failed calls cost nothing."""
    [reply] = await telegram.wait_for_sent(user, 1, timeout=20, methods=["sendMessage"])
    elapsed = time.monotonic() - started
    assert TURN_TIMEOUT <= elapsed < TURN_TIMEOUT + 3.0, elapsed
    assert await wait_update_finished(telegram, engine, update_id) == "failed"
    assert await turn_error(engine, update_id) == "timeout"
    # The reply states what the ledger charged: nothing, or what was done before the deadline.
    charged = await charged_ok_calls(engine, user)
    expected = (
        CHARGED_REPLIES[TIMEOUT_REPLY].format(charged=format_usd(charged))
        if charged
        else TIMEOUT_REPLY
    )
    assert reply.text == expected
    assert "took too long" in expected
    assert final_texts(telegram, user) == [expected]
    assert await open_holds(engine) == 0
    failed = await rows(
        engine,
        "SELECT charged_micros FROM api_calls WHERE user_id = :u AND status <> 'ok'",
        u=user,
    )
    assert failed and all(charged == 0 for (charged,) in failed), failed
    assert await balance(engine, user) == STARTER_MICROS - await charged_ok_calls(engine, user)


async def assert_next_message_works(
    telegram: FakeTelegram, anthropic_fake: FakeAnthropic, user: int
) -> None:
    anthropic_fake.script(text_reply("Quick answer."))
    assert await ask(telegram, user, "And now?") == ["Quick answer."]
    assert anthropic_fake.pending_replies == 0


async def test_slow_turns_stop_at_the_deadline(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    bot = await start_bot(TURN_TIMEOUT_SECONDS=str(TURN_TIMEOUT), STARTER_BALANCE_USD="5.00")

    # Claude says nothing before the deadline.
    user = 8001
    anthropic_fake.script(Delay(TURN_TIMEOUT + 3.0, text_reply("Much too late.")))
    started = time.monotonic()
    update_id = telegram.push_text(user, "Think about this for a long time")
    await assert_timed_out_and_free(telegram, engine, user, update_id, started)
    assert await charged_ok_calls(engine, user) == 0
    await assert_next_message_works(telegram, anthropic_fake, user)

    # Claude starts answering but is still writing at the deadline: the drafts stop, the cut
    # text is never sent as a final message.
    user = 8002
    anthropic_fake.script(Reply(content=[text_block(SLOW_TEXT)], tokens_per_second=40.0))
    started = time.monotonic()
    update_id = telegram.push_text(user, "Write slowly")
    await assert_timed_out_and_free(telegram, engine, user, update_id, started)
    drafts = [s for s in telegram.sent(user, include_drafts=True) if s.method == "sendMessageDraft"]
    assert drafts and all((d.text or "").startswith("This answer") for d in drafts)
    assert await charged_ok_calls(engine, user) == 0
    await assert_next_message_works(telegram, anthropic_fake, user)

    # The image generation is still running at the deadline: its hold is released too. The image
    # worker is started first, by another person's image (on a busy machine its start alone can
    # take the 2 s deadline; it goes on starting for the next image even if that turn ends).
    # (Defaults, not a script: whatever that turn does not get to use is not left for the next.)
    anthropic_fake.script(tool_use_reply("generate_image", {"prompt": "a cat"}, id="toolu_cat"))
    anthropic_fake.set_default(text_reply("A cat."))
    gemini_fake.set_default(image_reply())
    warm_up = telegram.push_text(8004, "Draw a cat")
    await bot.wait_for_log("image_worker_started", timeout=60)
    await wait_update_finished(telegram, engine, warm_up, timeout=30)
    anthropic_fake.set_default(None)
    gemini_fake.set_default(None)
    requests_before = len(gemini_fake.generate_requests())
    user = 8003
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "a slow snail"}, id="toolu_slow_snail")
    )
    gemini_fake.script(Delay(TURN_TIMEOUT + 3.0, image_reply()))
    started = time.monotonic()
    update_id = telegram.push_text(user, "Draw a snail")
    await assert_timed_out_and_free(telegram, engine, user, update_id, started)
    assert len(gemini_fake.generate_requests()) == requests_before + 1
    assert [s for s in telegram.sent(user) if s.method in ("sendPhoto", "sendDocument")] == []
    image_calls = await rows(
        engine,
        "SELECT status, charged_micros FROM api_calls"
        " WHERE purpose = 'generate_image' AND user_id = :u",
        u=user,
    )
    assert image_calls and all(status != "ok" and charged == 0 for status, charged in image_calls)
    [(hold_status,)] = await rows(
        engine,
        "SELECT status FROM balance_holds WHERE idempotency_key = 'img:toolu_slow_snail'",
    )
    assert hold_status != "held"
    await assert_next_message_works(telegram, anthropic_fake, user)
