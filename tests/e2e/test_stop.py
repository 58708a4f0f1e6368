"""/stop end to end: the running turn is cancelled through the real process and the fakes.

A slow stream is closed and charged for its input plus the output streamed so far (status
'cancelled'); tools not yet started are not run; a running image generation is abandoned
without charge; holds are released; the person sees that it stopped; the next message is
answered as usual.
"""

from __future__ import annotations

import math

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.session import create_engine
from bot.services.money import format_usd
from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import (
    STARTER_MICROS,
    ask,
    balance,
    final_texts,
    open_holds,
    poll_until,
    rows,
    scalar,
    wait_update_finished,
)
from tests.fakes.anthropic import FakeAnthropic, Reply, text_block, text_reply, tool_use_block
from tests.fakes.gemini import FakeGemini, Hang
from tests.fakes.telegram import FakeTelegram

USER = 72_001
LONG_TEXT = " ".join(f"word{i}" for i in range(600))  # ~4,000 characters, ~1,000 tokens
INPUT_TOKENS = 1000
NO_CACHE = {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
# Sonnet 5.5: 2 USD in, 10 USD out per MTok.
INPUT_RATE, OUTPUT_RATE = 2_000_000, 10_000_000


def slow_reply() -> Reply:
    """A long answer streamed at 20 tokens a second: it takes about 50 s to finish."""
    return Reply(
        content=[text_block(LONG_TEXT)],
        usage={"input_tokens": INPUT_TOKENS, **NO_CACHE},
        tokens_per_second=20,
    )


async def drafted(telegram: FakeTelegram, user_id: int) -> bool:
    items = telegram.sent(user_id, include_drafts=True)
    return any(i.method == "sendMessageDraft" and "word1" in (i.text or "") for i in items)


async def ledger_matches(engine: AsyncEngine, user_id: int) -> bool:
    total = await scalar(
        engine, "SELECT sum(amount_micros) FROM balance_operations WHERE user_id = :u", u=user_id
    )
    return int(total) == await balance(engine, user_id)


async def charged_so_far(engine: AsyncEngine, user_id: int) -> int:
    total = await scalar(
        engine,
        "SELECT COALESCE(sum(-amount_micros), 0) FROM balance_operations"
        " WHERE user_id = :u AND kind = 'charge'",
        u=user_id,
    )
    return int(total)


async def test_stop_closes_the_stream_and_charges_what_was_streamed(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, database_url: str
) -> None:
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    engine = create_engine(database_url)
    try:
        anthropic_fake.script(slow_reply())
        update_id = telegram.push_text(USER, "tell me a long story")
        await poll_until(lambda: drafted(telegram, USER), 20, lambda: "no draft")
        telegram.push_text(USER, "/stop")
        await telegram.wait_for_sent(USER, 1, timeout=15)
        [stopped] = final_texts(telegram, USER)
        assert stopped.startswith("word0 word1")
        note = "(Stopped. {} was charged for this answer.)"
        assert stopped.endswith(note.format(format_usd(await charged_so_far(engine, USER))))
        assert await wait_update_finished(telegram, engine, update_id) == "answered"

        [request] = await anthropic_fake.wait_for_requests(1, timeout=5, completed=True)
        assert request.duration is not None and request.duration < 20  # closed, not finished

        [call] = await rows(
            engine,
            "SELECT status, input_tokens, output_tokens, provider_cost_micros, charged_micros "
            "FROM api_calls WHERE user_id = :u",
            u=USER,
        )
        status, input_tokens, output_tokens, cost, charged = call
        assert (status, input_tokens) == ("cancelled", INPUT_TOKENS)
        streamed = len(stopped[: stopped.rindex("(Stopped.")].strip())
        assert math.ceil(streamed / 4) <= output_tokens < 1000
        expected = math.ceil((INPUT_TOKENS * INPUT_RATE + output_tokens * OUTPUT_RATE) / 10**6)
        assert cost == charged == expected
        assert await balance(engine, USER) == STARTER_MICROS - expected
        assert await open_holds(engine) == 0
        assert await ledger_matches(engine, USER)

        anthropic_fake.script(text_reply("Back again."))
        assert await ask(telegram, USER, "hello?", finished_in=engine) == ["Back again."]
        telegram.push_text(USER, "/stop")
        await telegram.wait_for_sent(USER, 3, timeout=15)
        assert final_texts(telegram, USER)[-1] == "Nothing is running right now."
    finally:
        await engine.dispose()


async def test_stop_abandons_a_running_image_and_runs_no_later_tool(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    database_url: str,
) -> None:
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000", STARTER_BALANCE_USD="5.00")
    engine = create_engine(database_url)
    try:
        two_images = Reply(
            content=[
                text_block("Drawing both."),
                tool_use_block("generate_image", {"prompt": "a red fox"}),
                tool_use_block("generate_image", {"prompt": "a blue whale"}),
            ],
            stop_reason="tool_use",
            usage={"input_tokens": INPUT_TOKENS, "output_tokens": 100, **NO_CACHE},
        )
        anthropic_fake.script(two_images)
        gemini_fake.script(Hang())
        update_id = telegram.push_text(USER, "draw a fox and a whale")
        await gemini_fake.wait_for_requests(1, timeout=20)
        telegram.push_text(USER, "/stop")
        assert await wait_update_finished(telegram, engine, update_id) == "answered"
        await telegram.wait_for_sent(USER, 2, timeout=15)
        chat_charge = math.ceil((INPUT_TOKENS * INPUT_RATE + 100 * OUTPUT_RATE) / 10**6)
        assert final_texts(telegram, USER) == [
            "Drawing both.",
            f"(Stopped. {format_usd(chat_charge)} was charged for this answer.)",
        ]

        assert len(gemini_fake.requests) == 1  # the second image was never started
        calls = await rows(
            engine,
            "SELECT purpose, status, charged_micros FROM api_calls WHERE user_id = :u ORDER BY id",
            u=USER,
        )
        assert [tuple(c) for c in calls] == [
            ("chat", "ok", chat_charge),
            ("generate_image", "cancelled", 0),
        ]
        assert await balance(engine, USER) == 5_000_000 - chat_charge
        assert await open_holds(engine) == 0
        assert await ledger_matches(engine, USER)
        assert len(anthropic_fake.message_requests()) == 1  # no tool results went back
    finally:
        await engine.dispose()
