"""Thinking blocks in a long conversation: trimmed history, /model switches, the tool loop.

Sonnet 5.5 binds each thinking block to the conversation before it; the fake Anthropic refuses
a request whose trimmed history still carries blocks made before the trim (the API's 400),
unless the request asks for such blocks to be dropped.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.services.price_file import load_price_table
from bot.services.pricing import TokenUsage, token_cost_micros
from tests.fakes.anthropic import (
    Reply,
    pause_turn_reply,
    text_reply,
    thinking_block,
    tool_use_reply,
)
from tests.inprocess.conftest import USER, InProcess, Start

FILLER = "Tell me more about the history of tea, please. " * 30  # about 500 estimated tokens


def texts(run: InProcess) -> list[str]:
    return [s.text for s in run.telegram.sent(USER) if s.text]


def plain(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def dropped(response: dict[str, Any], reason: str) -> list[str]:
    return [t["path"] for t in response.get("input_transformations") or [] if t["reason"] == reason]


async def assert_charged_as_reported(run: InProcess, start_micros: int) -> None:
    """Every Claude call is charged exactly what its reported usage costs, nothing more."""
    calls = await run.rows("SELECT * FROM api_calls ORDER BY id")
    responses = run.anthropic.sent_messages()
    assert len(calls) == len(responses)
    prices = load_price_table(run.app.settings)
    for call, response in zip(calls, responses, strict=True):
        usage = response["usage"]
        reported = TokenUsage(
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            cache_write_tokens=usage["cache_creation_input_tokens"],
            cache_read_tokens=usage["cache_read_input_tokens"],
        )
        cost = token_cost_micros(prices.token_price(response["model"]), reported)
        assert (call["model"], call["status"]) == (response["model"], "ok")
        assert call["provider_cost_micros"] == call["charged_micros"] == cost
    [user] = await run.rows("SELECT balance_micros, held_micros FROM users WHERE id = :u", u=USER)
    spent = sum(c["charged_micros"] for c in calls)
    assert user == {"balance_micros": start_micros - spent, "held_micros": 0}


async def test_a_long_conversation_with_thinking_keeps_answering_after_trimming(
    start: Start,
) -> None:
    run = await start(STARTER_BALANCE_USD="5.00", CONTEXT_TOKEN_BUDGET="2000")
    for n in range(1, 11):
        run.anthropic.script(text_reply(f"Answer {n}.", thinking=f"Turn {n}: think it over."))
        assert await run.turn(USER, f"{n}. {FILLER}") == "answered", f"turn {n}"
        assert texts(run)[-1] == f"Answer {n}."
    requests = run.anthropic.message_requests()
    first_texts = [r["messages"][0]["content"][0]["text"][:3] for r in requests]
    assert first_texts[0] == "1. " and first_texts[-1] != "1. "  # the history was trimmed
    # The trimmed history still carried thinking blocks made before the trim: they were dropped.
    responses = run.anthropic.sent_messages()
    assert any(dropped(r, "prefix_binding_mismatch") for r in responses)
    # A block made after the last trim is shown to the model: the newest one always is.
    last = requests[-1]["messages"]
    assert plain(last[-2]["content"][0]) == responses[-2]["content"][0]
    assert f"messages.{len(last) - 2}.content.0" not in dropped(
        responses[-1], "prefix_binding_mismatch"
    )
    await assert_charged_as_reported(run, 5_000_000)


async def test_the_tool_loop_sends_its_thinking_back_unchanged_and_it_is_kept(
    start: Start,
) -> None:
    run = await start(STARTER_BALANCE_USD="5.00", CONTEXT_TOKEN_BUDGET="2000")
    for n in range(1, 7):
        run.anthropic.script(text_reply(f"Answer {n}.", thinking=f"Turn {n}."))
        assert await run.turn(USER, f"{n}. {FILLER}") == "answered"
    run.anthropic.script(
        tool_use_reply("no_such_tool", {"q": 1}, thinking="I need the tool first."),
        tool_use_reply("no_such_tool", {"q": 2}, thinking="Once more."),
        text_reply("Done with tools."),
    )
    assert await run.turn(USER, f"7. {FILLER}") == "answered"
    assert texts(run)[-1] == "Done with tools."
    *_, first, second, third = run.anthropic.message_requests()
    *_, made_first, made_second, answer = run.anthropic.sent_messages()
    # Each request of the loop extends the previous one, thinking blocks as they were sent.
    n = len(first["messages"])
    assert [plain(b) for b in second["messages"][n]["content"]] == made_first["content"]
    assert [plain(b) for b in third["messages"][n + 2]["content"]] == made_second["content"]
    assert f"messages.{n}.content.0" not in dropped(made_second, "prefix_binding_mismatch")
    stale = dropped(answer, "prefix_binding_mismatch")
    assert f"messages.{n}.content.0" not in stale and f"messages.{n + 2}.content.0" not in stale
    await assert_charged_as_reported(run, 5_000_000)


async def choose_model(run: InProcess, model: str) -> None:
    await run.turn(USER, "/model")
    menu = run.telegram.sent(USER)[-1]
    assert menu.reply_markup is not None and menu.message_id is not None
    run.telegram.push_callback(USER, f"model:{model}", message_id=menu.message_id)
    await run.feed()
    for _ in range(200):
        if texts(run)[-1] == f"Done: your next answers come from {model}.":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"/model {model} was not confirmed")


async def test_switching_models_mid_conversation_keeps_working(start: Start) -> None:
    run = await start(
        STARTER_BALANCE_USD="5.00",
        CONTEXT_TOKEN_BUDGET="2000",
        CHAT_MODELS="claude-sonnet-5-5,claude-haiku-5-5,claude-sonnet-4-6",
    )
    plan = ["claude-sonnet-5-5"] * 3 + ["claude-sonnet-4-6"] * 2 + ["claude-haiku-5-5"] * 2
    plan += ["claude-sonnet-5-5"] * 3
    current = "claude-sonnet-5-5"
    for n, model in enumerate(plan, start=1):
        if model != current:
            await choose_model(run, model)
            current = model
        run.anthropic.script(text_reply(f"{model} {n}.", thinking=f"{model} thinks {n}."))
        assert await run.turn(USER, f"{n}. {FILLER}") == "answered", f"turn {n} on {model}"
        assert texts(run)[-1] == f"{model} {n}."
    requests = run.anthropic.message_requests()
    responses = run.anthropic.sent_messages()
    assert [r["model"] for r in requests] == plan
    # The older model gets no block_binding (it would refuse the field) and no beta header.
    older = [i for i, m in enumerate(plan) if m == "claude-sonnet-4-6"]
    assert all("thinking" not in requests[i] for i in older)
    assert all("anthropic-beta" not in run.anthropic.requests[i].headers for i in older)
    # Haiku cannot read Sonnet's blocks: they were left out of its prompt.
    haiku = plan.index("claude-haiku-5-5")
    assert dropped(responses[haiku], "model_binding_mismatch")
    await assert_charged_as_reported(run, 5_000_000)


@pytest.mark.xfail(
    strict=True,
    reason="known: a later call of a web-search turn sends web_search with a smaller max_uses; "
    "the tools are part of every thinking block's prefix, so the turn's own thinking is dropped",
)
async def test_a_paused_web_search_turn_keeps_its_thinking(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="5.00", WEB_TOOLS="on")
    paused = pause_turn_reply("tea history")
    run.anthropic.script(
        Reply(content=[thinking_block("Search first."), *paused.content], stop_reason="pause_turn"),
        text_reply("Tea came from China."),
    )
    assert await run.turn(USER, "Where does tea come from?") == "answered"
    first, second = run.anthropic.message_requests()
    made, answer = run.anthropic.sent_messages()
    n = len(first["messages"])
    assert plain(second["messages"][n]["content"][0]) == made["content"][0]  # sent back unchanged
    assert dropped(answer, "prefix_binding_mismatch") == []  # and shown to the model
