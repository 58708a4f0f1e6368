"""Confirm / Cancel before a 4K image (list price 0.24 USD above CONFIRM_ABOVE_USD 0.20), end to
end: Confirm runs and charges it; Cancel and silence run nothing and charge nothing for it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_images import (
    STARTER_USD,
    balance,
    last_image_cost,
    result_text,
    rows,
    tool_results,
    wait_turn,
)
from tests.fakes.anthropic import FakeAnthropic, text_reply, tool_use_reply
from tests.fakes.gemini import FakeGemini, image_reply
from tests.fakes.telegram import FakeTelegram, SentItem

FOUR_K = {"prompt": "a lighthouse", "image_size": "4K"}


def question(telegram: FakeTelegram, user: int) -> SentItem | None:
    asked = [i for i in telegram.sent(user) if i.reply_markup and "costs" in (i.text or "")]
    return asked[-1] if asked else None


@pytest.mark.parametrize("choice", ["y", "n", "silence"])
async def test_a_4k_image_asks_first(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
    choice: str,
) -> None:
    await start_bot(
        STARTER_BALANCE_USD=STARTER_USD,
        CONFIRM_ABOVE_USD="0.20",
        CONFIRM_TIMEOUT_SECONDS="2" if choice == "silence" else "60",
    )
    user = 9301
    anthropic_fake.script(
        tool_use_reply("generate_image", FOUR_K, id="toolu_4k"), text_reply("Done.")
    )
    gemini_fake.script(image_reply(text="A lighthouse."))

    update = telegram.push_text(user, "draw a lighthouse in 4K")
    await telegram.wait_for(lambda: question(telegram, user) is not None, timeout=20)
    asked = question(telegram, user)
    assert asked is not None
    assert asked.text == "Making a 4K image costs $0.24. Go ahead?"
    assert asked.reply_markup is not None
    [[confirm, cancel]] = asked.reply_markup["inline_keyboard"]
    assert (confirm["text"], cancel["text"]) == ("Confirm ($0.24)", "Cancel")
    if choice != "silence":
        button = confirm if choice == "y" else cancel
        telegram.push_callback(user, button["callback_data"], message_id=asked.message_id or 0)

    assert await wait_turn(engine, update, timeout=40) == "answered"
    images = await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    [result] = tool_results(anthropic_fake)
    settled = telegram.message(user, asked.message_id or 0)
    assert settled is not None
    if choice == "y":
        [image] = images
        # Charged from the usage Gemini reported (design section 6), not the 0.24 list price.
        assert (image["status"], image["image_size"], image["charged_micros"]) == (
            "ok",
            "4K",
            last_image_cost(gemini_fake, "4K"),
        )
        assert settled["text"].endswith("Confirmed.")
    else:
        assert images == []
        assert len(gemini_fake.generate_requests()) == 0
        assert result.get("is_error") is True
        assert "nothing was charged" in result_text(result)
        assert settled["text"].endswith("Cancelled. Nothing was charged for it.")
        charged = await rows(
            engine, "SELECT purpose, charged_micros FROM api_calls WHERE user_id = :u", u=user
        )
        assert {c["purpose"] for c in charged} == {"chat"}  # only Claude was paid for
        spent = sum(c["charged_micros"] for c in charged)
        assert await balance(engine, user) == int(Decimal(STARTER_USD) * 1_000_000) - spent


async def test_a_2k_image_does_not_ask(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD=STARTER_USD, CONFIRM_ABOVE_USD="0.20")
    user = 9302
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "a cat", "image_size": "2K"}),
        text_reply("Done."),
    )
    gemini_fake.script(image_reply(text="A cat."))
    update = telegram.push_text(user, "draw a cat")
    assert await wait_turn(engine, update) == "answered"
    assert question(telegram, user) is None
    assert len(await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image'")) == 1
