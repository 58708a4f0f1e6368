"""Every failure a person can meet in a chat turn: a plain reply, nothing charged for what failed,
no hold left open, the message kept in the conversation, and the next message works."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import (
    STARTER_MICROS,
    ask,
    balance,
    final_texts,
    open_holds,
    rows,
    scalar,
    user_texts,
    wait_update_finished,
)
from tests.fakes.anthropic import (
    ApiError,
    Delay,
    FakeAnthropic,
    Reply,
    corrupt_chunk,
    max_tokens_reply,
    midstream_error,
    overloaded,
    rate_limited,
    spend_limit_reached,
    text_block,
    text_reply,
    tool_use_block,
    truncated_stream,
)
from tests.fakes.telegram import FakeTelegram
from tests.netutil import refused_port

MAX_RETRIES = 2
ATTEMPTS = 1 + MAX_RETRIES
PARTIAL_TEXT = "This answer is going to be cut off"


@dataclass(frozen=True)
class Failure:
    name: str
    replies: tuple[Any, ...]
    requests: int
    says: str
    call_status: str = "error"


FAILURES = [
    Failure("spend_limit", (spend_limit_reached(),), 1, "temporarily unavailable"),
    Failure("overloaded_529", (overloaded(),) * ATTEMPTS, ATTEMPTS, "busy"),
    Failure("server_500", (ApiError(500),) * ATTEMPTS, ATTEMPTS, "busy"),
    Failure("outage_503", (ApiError(503),) * ATTEMPTS, ATTEMPTS, "busy"),
    Failure("timeout", (Delay(4.0, text_reply("Too late.")),), 1, "took too long"),
    Failure("error_event_mid_stream", (midstream_error(),), 1, "busy"),
    Failure("cut_before_message_stop", (truncated_stream(),), 1, "connection problem"),
    Failure("corrupt_chunk", (corrupt_chunk(),), 1, "connection problem"),
    Failure(
        "refusal",
        (
            Reply(
                content=[
                    text_block("I can't help with that."),
                    tool_use_block("no_such_tool", {"harm": True}),
                ],
                stop_reason="refusal",
                stop_details={"type": "refusal", "category": "cyber", "explanation": None},
            ),
        ),
        1,
        "can't help",
        call_status="blocked",
    ),
]


async def next_reply_after(telegram: FakeTelegram, user: int, before: int) -> list[str]:
    await telegram.wait_for_sent(user, before + 1, timeout=20)
    return final_texts(telegram, user)[before:]


async def assert_nothing_charged(engine: AsyncEngine, user: int, status: str = "error") -> None:
    assert await balance(engine, user) == STARTER_MICROS
    assert await open_holds(engine) == 0
    calls = await rows(
        engine, "SELECT status, charged_micros FROM api_calls WHERE user_id = :u", u=user
    )
    assert calls and all(c == (status, 0) for c in calls), calls
    charges = await scalar(
        engine,
        "SELECT count(*) FROM balance_operations WHERE user_id = :u AND kind = 'charge'",
        u=user,
    )
    assert charges == 0


async def assert_message_kept(engine: AsyncEngine, user: int, words: str) -> None:
    stored = await rows(
        engine,
        "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.user_id = :u AND m.role = 'user' ORDER BY m.id",
        u=user,
    )
    assert any(words in block.get("text", "") for (content,) in stored for block in content)


async def assert_next_message_works(
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
    user: int,
    failed_text: str,
) -> None:
    anthropic_fake.script(text_reply("Back to normal."))
    answer = await ask(telegram, user, "Let's try again.", timeout=20, finished_in=engine)
    assert answer == ["Back to normal."]
    body = anthropic_fake.message_requests()[-1]
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user" and roles[-1] == "user"
    assert all(a != b for a, b in itertools.pairwise(roles)), roles
    texts = [t for m in body["messages"] if m["role"] == "user" for t in user_texts(m)]
    assert failed_text in texts and texts[-1] == "Let's try again."
    for message in body["messages"]:
        if message["role"] == "assistant":
            assert all(b["type"] != "tool_use" for b in message["content"])


async def test_provider_failures_cost_nothing_and_the_chat_continues(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot(ANTHROPIC_TIMEOUT_SECONDS="1.0", ANTHROPIC_MAX_RETRIES=str(MAX_RETRIES))
    for number, case in enumerate(FAILURES):
        user = 3001 + number
        question = f"Question number {number} ({case.name})"
        anthropic_fake.script(*case.replies)
        requests_before = len(anthropic_fake.message_requests())
        update_id = telegram.push_text(user, question)
        [reply] = await next_reply_after(telegram, user, 0)
        assert case.says in reply, (case.name, reply)
        status = await wait_update_finished(telegram, engine, update_id)
        assert status == "failed" or (case.name == "refusal" and status == "answered"), status
        sent = len(anthropic_fake.message_requests()) - requests_before
        assert sent == case.requests, (case.name, sent)
        assert len(final_texts(telegram, user)) == 1, (case.name, final_texts(telegram, user))
        assert all(PARTIAL_TEXT not in t for t in final_texts(telegram, user))
        await assert_nothing_charged(engine, user, case.call_status)
        await assert_message_kept(engine, user, question)
        assert anthropic_fake.pending_replies == 0, case.name
        await assert_next_message_works(telegram, anthropic_fake, engine, user, question)


async def test_retry_then_success_and_cut_answers_are_charged_once(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot(ANTHROPIC_MAX_RETRIES=str(MAX_RETRIES))

    # A 429 is retried once by our single retry layer; the user gets the answer and one charge.
    anthropic_fake.script(rate_limited(), text_reply("Answered after a retry."))
    assert await ask(telegram, 3101, "Busy?", finished_in=engine) == ["Answered after a retry."]
    assert len(anthropic_fake.message_requests()) == 2
    calls = await rows(engine, "SELECT status, charged_micros FROM api_calls WHERE user_id = 3101")
    assert len(calls) == 1 and calls[0][0] == "ok" and calls[0][1] > 0
    assert await balance(engine, 3101) == STARTER_MICROS - calls[0][1]

    # max_tokens: shown as cut, charged for what was used.
    anthropic_fake.script(max_tokens_reply("The beginning of a very long answer"))
    [reply] = await ask(telegram, 3102, "Write a lot.", finished_in=engine)
    assert reply.startswith("The beginning of a very long answer")
    assert "cut" in reply
    [(status, charged)] = await rows(
        engine, "SELECT status, charged_micros FROM api_calls WHERE user_id = 3102"
    )
    assert status == "truncated" and charged > 0
    assert await balance(engine, 3102) == STARTER_MICROS - charged
    assert await open_holds(engine) == 0


async def test_messages_that_cannot_be_answered(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot()

    # Insufficient balance: the reply says the balance; Claude is not called.
    user = 3201
    assert len(await ask(telegram, user, "/start")) == 1
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE users SET balance_micros = 100 WHERE id = :u"), {"u": user})
    [reply] = await ask(telegram, user, "Please answer this.")
    assert "balance" in reply and "$0.0001" in reply, reply
    assert "top up" in reply
    assert anthropic_fake.message_requests() == []
    assert await balance(engine, user) == 100
    assert await open_holds(engine) == 0
    await assert_message_kept(engine, user, "Please answer this.")
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE users SET balance_micros = :b WHERE id = :u"),
            {"u": user, "b": STARTER_MICROS},
        )
    await assert_next_message_works(telegram, anthropic_fake, engine, user, "Please answer this.")

    # An empty (whitespace) text and a location (not something the bot reads) get a plain reply
    # and cost nothing.
    requests_before = len(anthropic_fake.message_requests())
    [reply] = await ask(telegram, 3202, "   ")
    assert "empty" in reply
    telegram.push_update(location_update(3203, update_id=900001))
    [reply] = await next_reply_after(telegram, 3203, 0)
    assert "isn't supported" in reply
    assert await wait_update_finished(telegram, engine, 900001) == "ignored"
    assert len(anthropic_fake.message_requests()) == requests_before
    for user_id in (3202, 3203):
        assert await balance(engine, user_id) == STARTER_MICROS


def location_update(user_id: int, *, update_id: int) -> dict[str, Any]:
    person = {"id": user_id, "is_bot": False, "first_name": "Vera"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": 7,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": "Vera"},
            "from": person,
            "location": {"latitude": 48.8584, "longitude": 2.2945},
        },
    }


async def test_connection_refused_is_retried_a_bounded_number_of_times(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    with refused_port() as port:
        bot = await start_bot(
            ANTHROPIC_BASE_URL=f"http://127.0.0.1:{port}",
            ANTHROPIC_MAX_RETRIES=str(MAX_RETRIES),
        )
        user = 3301
        update_id = telegram.push_text(user, "Anyone there?")
        [reply] = await next_reply_after(telegram, user, 0)
        assert "couldn't reach Claude" in reply
        assert await wait_update_finished(telegram, engine, update_id) == "failed"
    assert bot.log_text().count('"claude_retry"') == MAX_RETRIES
    await assert_nothing_charged(engine, user)
    await assert_message_kept(engine, user, "Anyone there?")
    assert anthropic_fake.requests == []
