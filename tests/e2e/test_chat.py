"""Chat end to end: streaming, a remembered conversation, prompt caching, tool calls, long answers.

The real bot process runs against the fake Telegram and Anthropic servers and a real Postgres.
The helpers at the top are shared by the other chat end-to-end test modules.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.fakes.anthropic import (
    FakeAnthropic,
    Reply,
    text_block,
    text_reply,
    thinking_block,
    tool_use_block,
)
from tests.fakes.telegram import FakeTelegram, SentItem

STARTER_MICROS = 500_000
FINISHED = ("answered", "failed", "ignored", "interrupted", "notified")

# ------------------------------------------------------------------------------------------------
# Helpers shared by the chat end-to-end tests
# ------------------------------------------------------------------------------------------------


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def balance(engine: AsyncEngine, user_id: int) -> int:
    return int(await scalar(engine, "SELECT balance_micros FROM users WHERE id = :u", u=user_id))


async def open_holds(engine: AsyncEngine) -> int:
    return int(await scalar(engine, "SELECT count(*) FROM balance_holds WHERE status = 'held'"))


async def update_status(engine: AsyncEngine, update_id: int) -> str | None:
    sql = "SELECT status FROM inbound_updates WHERE update_id = :u"
    return await scalar(engine, sql, u=update_id)  # type: ignore[no-any-return]


async def wait_update_finished(
    telegram: FakeTelegram, engine: AsyncEngine, update_id: int, timeout: float = 15.0
) -> str:
    """Wait until the bot recorded how the update ended; returns the status."""
    status: str | None = None

    async def finished() -> bool:
        nonlocal status
        status = await update_status(engine, update_id)
        return status in FINISHED

    await poll_until(finished, timeout, lambda: f"update {update_id} is {status!r}")
    assert status is not None
    return status


async def poll_until(check: Any, timeout: float, describe: Any = lambda: "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {describe()}")
        await asyncio.sleep(0.05)


def final_texts(telegram: FakeTelegram, chat_id: int) -> list[str]:
    return [item.text or "" for item in telegram.sent(chat_id) if item.method == "sendMessage"]


async def ask(
    telegram: FakeTelegram,
    user_id: int,
    message: str,
    *,
    replies: int = 1,
    timeout: float = 15,
    finished_in: AsyncEngine | None = None,
) -> list[str]:
    """Send a text and wait for `replies` more final messages in the chat; returns the new ones.

    With `finished_in`, also wait until the bot has recorded the turn's end in that database:
    the answer goes out while the call is still being charged and the answer stored.
    """
    before = len(final_texts(telegram, user_id))
    update_id = telegram.push_text(user_id, message)
    await telegram.wait_for_sent(user_id, before + replies, timeout=timeout)
    if finished_in is not None:
        await wait_update_finished(telegram, finished_in, update_id, timeout=timeout)
    return final_texts(telegram, user_id)[before:]


def user_texts(message: dict[str, Any]) -> list[str]:
    return [b["text"] for b in message["content"] if b.get("type") == "text"]


def last_user_text(body: dict[str, Any]) -> str:
    return user_texts(body["messages"][-1])[-1]


def without_cache_markers(value: Any) -> Any:
    """The request with every `cache_control` removed (markers move; the cache keys on content)."""
    if isinstance(value, dict):
        return {k: without_cache_markers(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [without_cache_markers(v) for v in value]
    return value


def prefix_to_last_breakpoint(body: dict[str, Any]) -> dict[str, Any]:
    """`body` cut after the last message block that carries a cache breakpoint."""
    cut = copy.deepcopy(body)
    messages = cut["messages"]
    for m_index in range(len(messages) - 1, -1, -1):
        blocks = messages[m_index]["content"]
        marked = [i for i, b in enumerate(blocks) if "cache_control" in b]
        if marked:
            messages[m_index]["content"] = blocks[: marked[-1] + 1]
            cut["messages"] = messages[: m_index + 1]
            return cut
    raise AssertionError("the request has no cache breakpoint in its messages")


def assert_extends_cached_prefix(earlier: dict[str, Any], later: dict[str, Any]) -> None:
    """`later` starts with exactly what `earlier` sent up to its last cache breakpoint."""
    prefix = without_cache_markers(prefix_to_last_breakpoint(earlier))
    head = without_cache_markers(later)
    for key in ("model", "max_tokens", "system", "tools"):
        assert head.get(key) == prefix.get(key), key
    count = len(prefix["messages"])
    assert head["messages"][: count - 1] == prefix["messages"][: count - 1]
    last = prefix["messages"][-1]
    assert head["messages"][count - 1]["role"] == last["role"]
    assert head["messages"][count - 1]["content"][: len(last["content"])] == last["content"]
    # Byte for byte: the serialized prefix of the later request is the serialized earlier one.
    later_blocks = json.dumps(head["messages"][: count - 1], sort_keys=True)
    assert later_blocks == json.dumps(prefix["messages"][: count - 1], sort_keys=True)


def streamed_reply(text_value: str, *, tokens_per_second: float = 400.0) -> Reply:
    """A text answer that streams over a fraction of a second, so drafts can be seen."""
    return Reply(content=[text_block(text_value)], tokens_per_second=tokens_per_second)


def methods_in_order(items: list[SentItem]) -> list[str]:
    return [item.method for item in items]


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

LONG_ANSWER_WORDS = (
    "Streaming answers arrive piece by piece, and the person sees the text grow in a draft "
    "before the final message replaces it. "
)


async def test_conversation_streams_remembers_caches_and_runs_tools(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot()
    user = 2001

    # Turn 1: `typing` shows before anything else, the answer comes as a final message.
    anthropic_fake.script(text_reply("**Hello, Bob!** Nice to meet you."))
    [reply] = await ask(telegram, user, "Hi, my name is Bob.")
    assert reply == "Hello, Bob! Nice to meet you."
    shown = telegram.sent(user, include_drafts=True, include_actions=True)
    assert shown[0].method == "sendChatAction" and shown[0].action == "typing"
    final = next(i for i in shown if i.method == "sendMessage")
    assert {"type": "bold", "offset": 0, "length": 11} in (final.entities or [])

    # Turn 2: the earlier turn is in the request; the text streams as growing drafts first;
    # the prompt cache serves the prefix.
    second_answer = "Your name is **Bob**. " + LONG_ANSWER_WORDS * 3
    seen_before = len(telegram.sent(user, include_drafts=True, include_actions=True))
    anthropic_fake.script(streamed_reply(second_answer))
    [reply] = await ask(telegram, user, "What is my name?", finished_in=engine)
    assert reply.startswith("Your name is Bob.")
    shown = telegram.sent(user, include_drafts=True, include_actions=True)[seen_before:]
    kinds = methods_in_order(shown)
    assert kinds[-1] == "sendMessage" and kinds.count("sendMessage") == 1
    drafts = [i for i in shown if i.method == "sendMessageDraft"]
    assert len(drafts) >= 2, "the text should grow in several drafts"
    assert len({d.draft_id for d in drafts}) == 1
    assert len(drafts[-1].parsed_text or "") > len(drafts[0].parsed_text or "")
    first, second = anthropic_fake.message_requests()[-2:]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert user_texts(second["messages"][0]) == ["Hi, my name is Bob."]
    assert second["messages"][1]["content"] == [
        {"type": "text", "text": "**Hello, Bob!** Nice to meet you."}
    ]
    assert user_texts(second["messages"][2]) == ["What is my name?"]
    assert_extends_cached_prefix(first, second)
    assert "temperature" not in second and "tool_choice" not in second
    cache_reads = [
        r[0]
        for r in await rows(
            engine, "SELECT cache_read_tokens FROM api_calls WHERE user_id = :u ORDER BY id", u=user
        )
    ]
    assert cache_reads[0] == 0 and cache_reads[1] > 0

    # Turn 3: two tool calls the product does not have, thinking kept, then the answer.
    thinking = thinking_block("The user wants two things at once.")
    calls = [
        tool_use_block("no_such_tool", {"x": 1}),
        tool_use_block("another_missing_tool", {"y": "two"}),
    ]
    anthropic_fake.script(
        Reply(content=[thinking, text_block("Let me check."), *calls], stop_reason="tool_use"),
        text_reply("Those tools are not available, sorry."),
    )
    replies = await ask(telegram, user, "Do two things.", replies=2, finished_in=engine)
    assert replies == ["Let me check.", "Those tools are not available, sorry."]
    before_tools, after_tools = anthropic_fake.message_requests()[-2:]
    assistant, results = after_tools["messages"][-2:]
    assert assistant["role"] == "assistant"
    emitted = anthropic_fake.sent_messages()[-2]["content"][0]
    assert emitted["thinking"] == thinking["thinking"]
    assert without_cache_markers(assistant["content"]) == [
        emitted,
        text_block("Let me check."),
        *calls,
    ]
    assert results["role"] == "user"
    assert [b["tool_use_id"] for b in results["content"]] == [c["id"] for c in calls]
    for block, call in zip(results["content"], calls, strict=True):
        assert block["type"] == "tool_result" and block["is_error"] is True
        assert "Unknown tool" in block["content"] and call["name"] in block["content"]
    assert_extends_cached_prefix(second, before_tools)
    assert second["messages"][2]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert_extends_cached_prefix(before_tools, after_tools)
    [[tools_used]] = await rows(
        engine,
        "SELECT count(*) FROM api_calls WHERE user_id = :u AND status = 'ok' AND charged_micros > 0",
        u=user,
    )
    assert tools_used == 4  # one charge per Claude call, nothing for the unknown tools

    # /new: the next request starts a fresh conversation.
    assert await ask(telegram, user, "/new") == ["Started a fresh conversation. What's next?"]
    anthropic_fake.script(text_reply("Hello again."))
    assert await ask(telegram, user, "Do you remember me?", finished_in=engine) == ["Hello again."]
    fresh = anthropic_fake.message_requests()[-1]
    assert len(fresh["messages"]) == 1
    assert user_texts(fresh["messages"][0]) == ["Do you remember me?"]
    assert await open_holds(engine) == 0


def long_markdown_answer() -> str:
    """About 10000 characters: paragraphs with formatting and two fenced code blocks."""
    paragraph = (
        "This is **paragraph {n}** with a [link](https://example.com/{n}) and `inline code`. "
        + "It goes on for a while so that the whole answer is long enough to be split. " * 4
    )
    code = "```python\n" + "\n".join(f"print('line {i}')  # step {i}" for i in range(40)) + "\n```"
    parts = [paragraph.format(n=n) for n in range(12)]
    parts.insert(4, code)
    parts.insert(10, code)
    parts += [paragraph.format(n=n) for n in range(12, 20)]
    return "\n\n".join(parts)


def utf16_len(value: str) -> int:
    return len(value.encode("utf-16-le")) // 2


async def test_an_answer_that_arrives_at_once_goes_out_without_a_draft(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    # The first draft waits half the draft interval (0.5 s here); this answer is complete sooner.
    await start_bot(DRAFT_INTERVAL_SECONDS="1.0")
    user = 2001
    anthropic_fake.script(text_reply("Short and quick."))
    assert await ask(telegram, user, "Quick?") == ["Short and quick."]
    shown = methods_in_order(telegram.sent(user, include_drafts=True, include_actions=True))
    assert shown == ["sendChatAction", "sendMessage"]


async def test_long_answer_is_split_at_boundaries(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    await start_bot()
    user = 2002
    answer = long_markdown_answer()
    assert 9500 < len(answer) < 11000
    anthropic_fake.script(text_reply(answer))
    telegram.push_text(user, "Tell me a long story.")
    await telegram.wait_for_sent(user, 3, timeout=20)
    await anthropic_fake.wait_for_requests(1)
    messages = [i for i in telegram.sent(user) if i.method == "sendMessage"]
    assert len(messages) == 3
    for item in messages:
        body = item.parsed_text or ""
        assert 0 < utf16_len(body) <= 4096
        for entity in item.entities or []:
            assert entity["offset"] >= 0
            assert entity["offset"] + entity["length"] <= utf16_len(body)
    whole = "".join(item.parsed_text or "" for item in messages)
    for n in range(20):
        assert f"paragraph {n} with a link" in whole
    # Each code block arrives whole, as one `pre` entity inside one message.
    code_blocks = [e for item in messages for e in item.entities or [] if e["type"] == "pre"]
    assert len(code_blocks) == 2
    for item in messages:
        body = item.parsed_text or ""
        for entity in item.entities or []:
            if entity["type"] == "pre":
                inner = body.encode("utf-16-le")[
                    entity["offset"] * 2 : (entity["offset"] + entity["length"]) * 2
                ].decode("utf-16-le")
                assert "line 0" in inner and "line 39" in inner
    # Chunks end at a paragraph boundary: none starts or ends in the middle of a sentence.
    for item in messages[:-1]:
        assert (item.parsed_text or "").rstrip().endswith((".", "```", "')  # step 39"))
