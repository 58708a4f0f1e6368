"""Commands and tool errors through aiogram's Dispatcher.feed_update, in process."""

from __future__ import annotations

from tests.fakes.anthropic import (
    Reply,
    max_tokens_reply,
    text_reply,
    thinking_block,
    tool_use_reply,
)
from tests.inprocess.conftest import USER, InProcess, Start


def texts(run: InProcess) -> list[str]:
    return [s.text for s in run.telegram.sent(USER) if s.text]


async def test_balance_and_usage_show_the_charge_of_a_turn(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.anthropic.script(text_reply("Hi."))
    assert await run.turn(USER, "hello") == "answered"
    await run.turn(USER, "/balance")
    await run.turn(USER, "/usage")
    balance, usage = texts(run)[-2:]
    assert "Welcome credit" in balance
    assert "Chat" in usage


async def test_an_unknown_tool_is_an_error_the_model_sees_and_costs_nothing_extra(
    start: Start,
) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.anthropic.script(tool_use_reply("no_such_tool", {}), text_reply("Sorry."))
    assert await run.turn(USER, "do it") == "answered"
    last = run.anthropic.message_requests()[-1]["messages"][-1]["content"][0]
    assert (last["type"], last.get("is_error")) == ("tool_result", True)
    assert "Unknown tool" in str(last["content"])
    purposes = [c["purpose"] for c in await run.rows("SELECT purpose FROM api_calls")]
    assert purposes == ["chat", "chat"]


async def test_a_cut_answer_is_charged_and_says_so(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.anthropic.script(max_tokens_reply("The beginning of a long"))
    assert await run.turn(USER, "tell me everything") == "answered"
    assert any("length limit" in t for t in texts(run))
    [call] = await run.rows("SELECT * FROM api_calls")
    assert call["status"] == "truncated" and call["charged_micros"] > 0


async def test_an_answer_without_text_still_gets_a_reply(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.anthropic.script(Reply(content=[], stop_reason="end_turn"))
    assert await run.turn(USER, "hm") == "answered"
    assert texts(run) == ["I have no answer to that. Try rephrasing."]
    [call] = await run.rows("SELECT status, charged_micros FROM api_calls")
    assert call["status"] == "ok" and call["charged_micros"] > 0


async def test_an_answer_cut_before_any_text_says_it_was_cut(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.anthropic.script(Reply(content=[thinking_block("x " * 100)], stop_reason="max_tokens"))
    assert await run.turn(USER, "think hard") == "answered"
    [reply] = texts(run)
    assert "too long and was cut" in reply and "Ask for less" in reply
