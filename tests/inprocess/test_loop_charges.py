"""What the metered path charges for the loop's Claude calls, in process."""

from __future__ import annotations

from dataclasses import replace

from structlog.testing import capture_logs

from bot.i18n import format_money
from bot.services.money import format_usd
from bot.services.price_file import load_price_table
from bot.services.pricing import TokenUsage, token_cost_micros
from tests.fakes.anthropic import (
    ApiError,
    cut_tool_use_reply,
    refusal_reply,
    text_reply,
    tool_use_reply,
)
from tests.inprocess.conftest import USER, Start

ADMIN = 7999


async def test_a_cost_beyond_hold_and_balance_is_charged_as_far_as_it_goes(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00", ADMIN_USER_IDS=[ADMIN])
    # Far more output than max_tokens allows: the reported cost exceeds hold and balance.
    run.anthropic.script(replace(text_reply("A long answer."), usage={"output_tokens": 1_000_000}))
    assert await run.turn(USER, "hi") == "answered"
    [call] = await run.rows("SELECT * FROM api_calls")
    assert call["output_tokens"] == 1_000_000
    assert call["charged_micros"] == 1_000_000  # the whole balance
    assert call["charged_micros"] + call["uncollected_micros"] == call["provider_cost_micros"]
    [user] = await run.rows("SELECT balance_micros, held_micros FROM users")
    assert (user["balance_micros"], user["held_micros"]) == (0, 0)
    assert await run.rows("SELECT * FROM admin_balance_mismatches") == []
    await run.turn(ADMIN, f"/user {USER}")
    [overview] = [s.text for s in run.telegram.sent(ADMIN) if s.text and "Uncollected" in s.text]
    assert format_usd(call["uncollected_micros"]) in overview


async def test_a_refusal_is_recorded_as_blocked_and_not_charged(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.anthropic.script(refusal_reply())
    assert await run.turn(USER, "something bad") == "answered"
    [call] = await run.rows("SELECT * FROM api_calls")
    assert (call["status"], call["error"], call["charged_micros"]) == ("blocked", "refusal", 0)
    assert call["provider_cost_micros"] > 0
    assert await run.rows("SELECT * FROM balance_operations WHERE kind = 'charge'") == []


async def test_a_failed_claude_call_is_recorded_and_released(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00", ANTHROPIC_MAX_RETRIES="0")
    run.anthropic.script(ApiError(400, "invalid_request_error", "bad"))
    status = await run.turn(USER, "hi")
    assert status.startswith("failed")
    [call] = await run.rows("SELECT * FROM api_calls")
    assert (call["status"], call["charged_micros"]) == ("error", 0)
    assert call["duration_ms"] >= 0
    [hold] = await run.rows("SELECT * FROM balance_holds")
    assert hold["status"] == "released"
    [user] = await run.rows("SELECT balance_micros, held_micros FROM users")
    assert (user["balance_micros"], user["held_micros"]) == (1_000_000, 0)
    assert any("Try /new" in (s.text or "") for s in run.telegram.sent(USER))


async def test_a_tool_call_cut_by_max_tokens_is_a_charged_truncated_answer(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    usage = {"input_tokens": 1500, "output_tokens": 4096}
    cut = cut_tool_use_reply(
        "generate_image", {"prompt": "a very long prompt " * 50}, text="Here:", usage=usage
    )
    run.anthropic.script(cut, text_reply("Shorter, then."))
    assert await run.turn(USER, "draw everything") == "answered"
    [call] = await run.rows("SELECT * FROM api_calls")  # the cut tool call was not run
    price = load_price_table(run.app.settings).token_price(call["model"])
    assert (call["input_tokens"], call["output_tokens"]) == (1500, 4096)
    reported = TokenUsage(
        input_tokens=1500,
        output_tokens=4096,
        cache_write_tokens=call["cache_write_tokens"],
        cache_read_tokens=call["cache_read_tokens"],
    )
    cost = token_cost_micros(price, reported)
    assert (call["status"], call["provider_cost_micros"]) == ("truncated", cost)
    assert call["charged_micros"] > 0
    [user] = await run.rows("SELECT balance_micros, held_micros FROM users")
    assert user == {"balance_micros": 1_000_000 - call["charged_micros"], "held_micros": 0}
    sent = [s.text or "" for s in run.telegram.sent(USER)]
    assert any("Here:" in t and "Ask for less" in t for t in sent)
    assert not any("nothing was charged" in t for t in sent)
    # The cut tool call is not stored: the next request has no tool_use without its result.
    assert await run.turn(USER, "less then") == "answered"
    history = run.anthropic.message_requests()[-1]["messages"]
    assert not any(
        isinstance(m["content"], list) and any(b.get("type") == "tool_use" for b in m["content"])
        for m in history
    )


async def test_a_tool_call_cut_before_any_text_still_tells_the_person(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.anthropic.script(cut_tool_use_reply("generate_image", {"prompt": "x" * 200}))
    assert await run.turn(USER, "draw everything") == "answered"
    [call] = await run.rows("SELECT status, charged_micros FROM api_calls")
    assert call["status"] == "truncated" and call["charged_micros"] > 0
    assert any("too long and was cut" in (s.text or "") for s in run.telegram.sent(USER))


async def test_a_turn_failing_after_a_charged_call_says_what_was_charged(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00", ANTHROPIC_MAX_RETRIES="0")
    # The first call is charged (its unknown tool costs nothing); the second one fails.
    run.anthropic.script(tool_use_reply("no_such_tool", {}), ApiError(529))
    with capture_logs() as logs:
        status = await run.turn(USER, "hi")
    assert status.startswith("failed")
    charges = await run.rows("SELECT amount_micros FROM balance_operations WHERE kind = 'charge'")
    charged = -sum(c["amount_micros"] for c in charges)
    assert charged > 0
    [reply] = [s.text or "" for s in run.telegram.sent(USER)]
    assert "nothing was charged" not in reply.lower()
    assert f"{format_money(charged)} was charged" in reply
    [done] = [e for e in logs if e["event"] == "turn_completed"]
    assert done["charged_micros"] == charged
