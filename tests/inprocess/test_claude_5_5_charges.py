"""Exact charges of the Claude 5.5 models for the usage the fake Anthropic reports, through the
real loop, metered path and ledger: Sonnet 5.5 and Opus 5.5 cache reads, Haiku 5.5 on both sides
of its 100,000-token prompt threshold, and the hold before each call."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import structlog.testing

from tests.fakes.anthropic import text_reply
from tests.inprocess.conftest import USER, Start

# Haiku 5.5 long-band output rate, micro-USD per token x 1e6: a hold of max_tokens output at the
# long band alone costs CLAUDE_MAX_TOKENS * 2.5 micro-USD.
MAX_TOKENS = 4096
LONG_BAND_OUTPUT_HOLD = MAX_TOKENS * 2_500_000 // 1_000_000  # 10_240


def usage(input_tokens: int, written: int, read: int, output: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": output,
        "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
    }


async def one_call(
    start: Start, model: str, reported: dict[str, Any], **settings: str
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """One turn of `model` whose call reports `reported`: its api_calls row, its hold and the
    person's balance after it."""
    run = await start(
        STARTER_BALANCE_USD="5.00",
        CLAUDE_MODEL=model,
        CLAUDE_MAX_TOKENS=str(MAX_TOKENS),
        PRICE_MARKUP="1.5",
        **settings,
    )
    run.anthropic.script(replace(text_reply("Done."), usage=reported))
    assert await run.turn(USER, "hi") == "answered"
    [call] = await run.rows("SELECT * FROM api_calls")
    [hold] = await run.rows("SELECT amount_micros, captured_micros FROM balance_holds")
    [user] = await run.rows("SELECT balance_micros FROM users")
    return call, hold, int(user["balance_micros"])


# (model, input, cache write, cache read, output) -> exact provider cost in micro-USD
CASES = [
    # Sonnet 5.5: 1000 x 2 + 2000 x 2.50 + 10,000 x 0.10 + 500 x 10 = 13,000
    ("claude-sonnet-5-5", (1_000, 2_000, 10_000, 500), 13_000),
    # 7 cache reads at 0.10 = 0.7, + 3 input at 2 = 6.7 -> 7 (rounded once, up)
    ("claude-sonnet-5-5", (3, 0, 7, 0), 7),
    # Opus 5.5: 1000 x 4 + 2000 x 5 + 10,000 x 0.20 + 500 x 20 = 26,000
    ("claude-opus-5-5", (1_000, 2_000, 10_000, 500), 26_000),
    # Haiku 5.5, prompt exactly 100,000 tokens (20,000 + 30,000 + 50,000): the short band,
    # 20,000 x 0.10 + 30,000 x 0.125 + 50,000 x 0.01 + 1000 x 0.50 = 2000 + 3750 + 500 + 500
    ("claude-haiku-5-5", (20_000, 30_000, 50_000, 1_000), 6_750),
    # Haiku 5.5, prompt 100,001 tokens: every token at the long band, output included,
    # 20,001 x 0.50 + 30,000 x 0.625 + 50,000 x 0.05 + 1000 x 2.50 = 33,750.5 -> 33,751
    ("claude-haiku-5-5", (20_001, 30_000, 50_000, 1_000), 33_751),
]


@pytest.mark.parametrize(("model", "tokens", "cost"), CASES)
async def test_a_claude_5_5_call_is_charged_exactly(
    start: Start, model: str, tokens: tuple[int, int, int, int], cost: int
) -> None:
    call, hold, balance = await one_call(start, model, usage(*tokens), WEB_TOOLS="off")
    assert (call["model"], call["status"], call["price_version"]) == (
        model,
        "ok",
        "anthropic-2026-12",
    )
    assert (
        call["input_tokens"],
        call["cache_write_tokens"],
        call["cache_read_tokens"],
        call["output_tokens"],
    ) == tokens
    assert call["provider_cost_micros"] == cost
    charged = -(-cost * 3 // 2)  # x 1.5, rounded up
    assert (call["charged_micros"], call["uncollected_micros"]) == (charged, 0)
    assert hold["captured_micros"] == min(charged, hold["amount_micros"])
    assert balance == 5_000_000 - charged


async def test_a_short_haiku_5_5_turn_holds_at_the_short_band(start: Start) -> None:
    """Without server tools, a small conversation cannot reach 100,000 prompt tokens: the hold
    is the short band's (far below even the long band's output alone)."""
    call, hold, _ = await one_call(
        start, "claude-haiku-5-5", usage(1_000, 0, 0, 100), WEB_TOOLS="off"
    )
    assert call["provider_cost_micros"] == 150  # 1000 x 0.10 + 100 x 0.50
    assert hold["captured_micros"] == call["charged_micros"]
    assert hold["amount_micros"] < LONG_BAND_OUTPUT_HOLD * 3 // 2


async def test_a_haiku_5_5_turn_with_web_tools_holds_at_the_long_band(start: Start) -> None:
    """Search results join the prompt while the call runs, so the call can cross the threshold
    whatever the estimate: the hold covers the long band."""
    call, hold, _ = await one_call(
        start, "claude-haiku-5-5", usage(60_000, 0, 40_001, 100), WEB_TOOLS="on"
    )
    # 60,000 x 0.50 + 40,001 x 0.05 + 100 x 2.50 = 30,000 + 2,000.05 + 250 -> 32,251
    assert call["provider_cost_micros"] == 32_251
    assert hold["amount_micros"] >= LONG_BAND_OUTPUT_HOLD * 3 // 2


async def test_help_and_model_menu_say_what_a_long_prompt_costs(start: Start) -> None:
    run = await start(
        STARTER_BALANCE_USD="5.00",
        CLAUDE_MODEL="claude-haiku-5-5",
        CHAT_MODELS="claude-haiku-5-5,claude-sonnet-5-5",
    )
    await run.turn(USER, "/help")
    [help_text] = [s.text for s in run.telegram.sent(USER) if s.text and "Chat:" in s.text]
    assert "$0.10 per million input tokens, $0.50 per million output tokens" in help_text
    assert "more than 100,000 tokens costs $0.50 and $2.50 per million for all its" in help_text
    await run.turn(USER, "/model")
    [menu] = [s for s in run.telegram.sent(USER) if s.reply_markup]
    labels = [row[0]["text"] for row in menu.reply_markup["inline_keyboard"]]
    assert labels == [
        "✓ claude-haiku-5-5 · from $0.10 in / $0.50 out per 1M tokens",
        "claude-sonnet-5-5 · $2.00 in / $10.00 out per 1M tokens",
    ]


async def test_a_retired_claude_model_is_a_plain_message_and_costs_nothing(start: Start) -> None:
    """claude-sonnet-4-5 reached its end of life on 2026-11-30 (priced still, for the rows it
    left): the API answers 404 for it, as the fake does. The person is told plainly, nothing is
    charged, and the operator gets one error line, not one per turn."""
    run = await start(STARTER_BALANCE_USD="5.00", CLAUDE_MODEL="claude-sonnet-4-5")
    with structlog.testing.capture_logs() as logs:
        assert await run.turn(USER, "hi") == "failed: claude_model_gone"
        assert await run.turn(USER, "hello?") == "failed: claude_model_gone"
    assert [r.outcome for r in run.anthropic.requests] == ["invalid", "invalid"]
    replies = [s.text for s in run.telegram.sent(USER) if s.text]
    gone = (
        "The assistant's model is not available right now; the operator has been told. "
        "Nothing was charged."
    )
    assert replies == [gone, gone]
    errors = [e for e in logs if e["event"] == "claude_model_unavailable"]
    assert [(e["log_level"], e["model"]) for e in errors] == [("error", "claude-sonnet-4-5")]
    [user] = await run.rows("SELECT balance_micros, held_micros FROM users")
    assert user == {"balance_micros": 5_000_000, "held_micros": 0}
