"""What the metered path charges for the loop's Claude calls, in process."""

from __future__ import annotations

from dataclasses import replace

from bot.services.money import format_usd
from tests.fakes.anthropic import ApiError, refusal_reply, text_reply
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
