"""Image providers end to end through the real bot process: a model the provider stopped serving
(404 at run time), and the OpenAI Images API as the second provider."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_images import (
    STARTER_MICROS,
    STARTER_USD,
    balance,
    blob_path,
    result_text,
    rows,
    tool_results,
    wait_turn,
)
from tests.fakes.anthropic import FakeAnthropic, text_reply, tool_use_reply
from tests.fakes.gemini import LIVE_MODELS, FakeGemini, image_reply
from tests.fakes.openai import FakeOpenAI, moderation_blocked, rate_limited
from tests.fakes.openai import image_reply as openai_image
from tests.fakes.telegram import FakeTelegram
from tests.harness import FAKE_OPENAI_KEY
from tests.image_charges import openai_cost

UNAVAILABLE = "image generation is unavailable right now"


def error_lines(lines: list[str]) -> list[dict[str, object]]:
    parsed = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") == "error":
            parsed.append(entry)
    return parsed


async def test_a_model_google_stopped_serving_is_unavailable_free_and_logged_once(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    """The default model is shut down while the bot runs: every image request is a tool error
    Claude can explain, nothing is charged for it, the operator gets one error line, and text chat
    goes on."""
    bot = await start_bot(STARTER_BALANCE_USD=STARTER_USD)
    gemini_fake.models = set(LIVE_MODELS) - {"gemini-3-pro-image"}
    users = (5101, 5102, 5101)
    for n, user in enumerate(users):
        anthropic_fake.script(
            tool_use_reply("generate_image", {"prompt": f"a fox {n}"}),
            text_reply("Sorry, I can't draw right now: image generation is unavailable."),
        )
        update = telegram.push_text(user, f"draw a fox {n}")
        assert await wait_turn(engine, update) == "answered"
        result = tool_results(anthropic_fake)[-1]
        assert result.get("is_error") is True
        text = result_text(result)
        assert "Image generation is unavailable right now" in text
        assert "Nothing was charged" in text
        assert "404" not in text and "preview" not in text and "NOT_FOUND" not in text
        assert telegram.sent(user)[-1].text == (
            "Sorry, I can't draw right now: image generation is unavailable."
        )
    assert [r.status for r in gemini_fake.generate_requests()] == [404, 404, 404]
    errors = error_lines(bot.lines)
    assert [e["event"] for e in errors] == ["image_model_unavailable"], errors
    assert errors[0]["model"] == "gemini-3-pro-image"
    assert errors[0]["provider"] == "google"

    image_calls = await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert [(c["status"], c["charged_micros"]) for c in image_calls] == [("error", 0)] * 3
    assert all("model_gone" in c["error"] for c in image_calls)
    assert await rows(engine, "SELECT 1 FROM balance_holds WHERE status = 'held'") == []
    assert await rows(engine, "SELECT 1 FROM user_files") == []

    # Text chat keeps working, and is charged as usual.
    anthropic_fake.script(text_reply("Foxes are small omnivores."))
    update = telegram.push_text(5102, "tell me about foxes")
    assert await wait_turn(engine, update) == "answered"
    assert telegram.sent(5102)[-1].text == "Foxes are small omnivores."
    for user in (5101, 5102):
        [chat] = await rows(
            engine,
            "SELECT COALESCE(SUM(charged_micros), 0) AS s FROM api_calls WHERE user_id = :u",
            u=user,
        )
        assert chat["s"] > 0
        assert await balance(engine, user) == STARTER_MICROS - chat["s"]

    # Google serves it again: the next image works and is charged.
    gemini_fake.models = set(LIVE_MODELS)
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "a fox"}), text_reply("Here it is.")
    )
    gemini_fake.script(image_reply())
    update = telegram.push_text(5102, "draw a fox again")
    assert await wait_turn(engine, update) == "answered"
    assert [s.method for s in telegram.sent(5102)].count("sendPhoto") == 1


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=FAKE_OPENAI_KEY) as fake:
        yield fake


async def test_openai_images_draw_edit_block_and_retry_charged_from_usage(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    openai_fake: FakeOpenAI,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    await start_bot(
        STARTER_BALANCE_USD=STARTER_USD,
        PRICE_MARKUP="1.5",
        IMAGE_PROVIDER="openai",
        OPENAI_API_KEY=FAKE_OPENAI_KEY,
        OPENAI_BASE_URL=openai_fake.base_url,
    )
    user = 5201

    # 1. A new image: images.generate, the nearest size, charged from the reported usage.
    anthropic_fake.script(
        tool_use_reply(
            "generate_image", {"prompt": "a lighthouse", "aspect_ratio": "16:9", "image_size": "2K"}
        ),
        text_reply("Here is your lighthouse."),
    )
    openai_fake.script(openai_image())
    update = telegram.push_text(user, "draw a lighthouse")
    assert await wait_turn(engine, update) == "answered"
    assert [s.method for s in telegram.sent(user)].count("sendPhoto") == 1
    [generation] = openai_fake.image_requests()
    assert generation.endpoint == "generations"
    assert generation.json == {
        "model": "gpt-image-2.6-sunburst",
        "prompt": "a lighthouse",
        "n": 1,
        "size": "2048x1152",
        "output_format": "png",
    }
    assert gemini_fake.generate_requests() == []
    [first] = await rows(engine, "SELECT * FROM user_files WHERE user_id = :u", u=user)
    [call] = await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    cost = openai_cost(generation.usage, "2K")
    assert (call["provider"], call["model"], call["status"]) == (
        "openai",
        "gpt-image-2.6-sunburst",
        "ok",
    )
    assert call["provider_cost_micros"] == cost
    assert call["charged_micros"] == math.ceil(Decimal(cost) * Decimal("1.5"))
    assert generation.usage is not None
    assert call["image_output_tokens"] == generation.usage["output_tokens"]
    assert call["image_list_price_micros"] == 200_000
    assert call["id"] == first["api_call_id"]
    assert first["metadata"]["model"] == "gpt-image-2.6-sunburst"

    # 2. An edit of it: images.edit with the stored bytes as an image[] part; a 429 first.
    anthropic_fake.script(
        tool_use_reply(
            "generate_image",
            {"prompt": "add a moon", "reference_file_ids": [str(first["id"])], "image_size": "1K"},
        ),
        text_reply("Moon added."),
    )
    openai_fake.script(rate_limited(), openai_image())
    update = telegram.push_text(user, "add a moon")
    assert await wait_turn(engine, update) == "answered"
    limited, edit = openai_fake.image_requests()[1:]
    assert (limited.status, edit.status, edit.endpoint) == (429, 200, "edits")
    stored = blob_path(tmp_path / "data", first["sha256"]).read_bytes()
    assert [(i.field_name, i.data) for i in edit.images] == [("image[]", stored)]
    assert edit.fields["size"] == "1024x1024"

    # 3. A moderation block: a tool error with the reason, nothing charged for it.
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "something not allowed"}),
        text_reply("I can't draw that."),
    )
    openai_fake.script(moderation_blocked("input"))
    update = telegram.push_text(user, "draw something not allowed")
    assert await wait_turn(engine, update) == "answered"
    result = tool_results(anthropic_fake)[-1]
    assert result.get("is_error") is True
    assert "MODERATION_BLOCKED" in result_text(result)
    assert "safety filter blocked this prompt" in result_text(result)
    assert "Nothing was charged" in result_text(result)

    calls = await rows(
        engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image' ORDER BY id"
    )
    edit_cost = openai_cost(edit.usage, "1K")
    assert [(c["status"], c["provider_cost_micros"]) for c in calls] == [
        ("ok", cost),
        ("ok", edit_cost),
        ("blocked", 0),
    ]
    assert calls[2]["charged_micros"] == 0
    everything = await rows(engine, "SELECT COALESCE(SUM(charged_micros), 0) AS s FROM api_calls")
    assert await balance(engine, user) == STARTER_MICROS - everything[0]["s"]
    assert await rows(engine, "SELECT 1 FROM balance_holds WHERE status = 'held'") == []


PRICES = """
[models."gemini-3-pro-image-preview"]
provider = "google"
price_version = "ops-test"
text_input = 2_000_000
image_input = 2_000_000
text_output = 12_000_000
image_output = 100_000_000
per_image = { "1K" = 100_000, "2K" = 100_000, "4K" = 200_000 }

[models."gemini-3.1-flash-image"]
provider = "google"
price_version = "ops-test-flash"
text_input = 1_000_000
image_input = 1_000_000
text_output = 4_000_000
image_output = 50_000_000
per_image = { "1K" = 60_000, "2K" = 90_000, "4K" = 140_000 }
"""


async def test_prices_file_prices_a_model_and_a_retired_id_is_still_refused_by_google(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    """An operator who prices the shut-down -preview id in PRICES_FILE gets past start-up, and
    Google's 404 is then the tool error; an overridden price is what an image is charged at."""
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    retired = await start_bot(
        STARTER_BALANCE_USD=STARTER_USD,
        PRICES_FILE=str(prices),
        IMAGE_MODEL="gemini-3-pro-image-preview",
    )
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "a fox"}), text_reply("Not available.")
    )
    update = telegram.push_text(5301, "draw a fox")
    assert await wait_turn(engine, update) == "answered"
    assert "Image generation is unavailable right now" in result_text(
        tool_results(anthropic_fake)[-1]
    )
    [request] = gemini_fake.generate_requests()
    assert (request.model, request.status) == ("gemini-3-pro-image-preview", 404)
    [call] = await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert (call["status"], call["charged_micros"], call["price_version"]) == (
        "error",
        0,
        "ops-test",
    )
    assert await retired.stop() == 0

    await start_bot(
        STARTER_BALANCE_USD=STARTER_USD,
        PRICES_FILE=str(prices),
        IMAGE_MODEL="gemini-3.1-flash-image",
    )
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "a fox", "image_size": "1K"}),
        text_reply("Here."),
    )
    gemini_fake.script(image_reply())
    update = telegram.push_text(5301, "draw a fox again")
    assert await wait_turn(engine, update) == "answered"
    flash = gemini_fake.generate_requests()[-1]
    assert flash.model == "gemini-3.1-flash-image"
    assert flash.usage is not None
    [_, call] = await rows(
        engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image' ORDER BY id"
    )
    # 2 prompt tokens at 1, 1120 image tokens at 50, 184 thoughts at 4 USD/MTok
    assert flash.usage["promptTokenCount"] == 2
    assert call["provider_cost_micros"] == 2 + 56_000 + 736
    assert (call["status"], call["charged_micros"], call["price_version"]) == (
        "ok",
        56_738,
        "ops-test-flash",
    )
    assert call["image_list_price_micros"] == 60_000


async def test_openai_answers_without_usage_or_with_odd_images_are_charged_exactly(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    openai_fake: FakeOpenAI,
    engine: AsyncEngine,
) -> None:
    await start_bot(
        STARTER_BALANCE_USD=STARTER_USD,
        IMAGE_PROVIDER="openai",
        OPENAI_API_KEY=FAKE_OPENAI_KEY,
        OPENAI_BASE_URL=openai_fake.base_url,
    )
    user = 5401
    cases = [
        # (reply, delivered, expected provider cost, expected charge); 2K 16:9 = 2048x1152,
        # 5754 output tokens (the fake: 4160 x (pixels / 1 MP) ** 0.4); prompt "a bay" = 2 text tokens at 5 USD/MTok.
        (openai_image(usage_mode="none"), True, 200_000, 200_000),  # the per-image price
        (openai_image(usage_mode="no_output_details"), True, 10 + 5754 * 30, 10 + 5754 * 30),
        # Two images billed, above the hold (200000 + 25%): the reported cost is charged as far
        # as the available balance allows (design section 6; the restructured ledger).
        (openai_image(images=2), True, 10 + 2 * 5754 * 30, 10 + 2 * 5754 * 30),
        (openai_image(data=b"\x89PNG\r\n\x1a\n-truncated"), False, 10 + 5754 * 30, 0),
    ]
    for n, (reply, delivered, cost, charged) in enumerate(cases):
        anthropic_fake.script(
            tool_use_reply(
                "generate_image", {"prompt": "a bay", "aspect_ratio": "16:9", "image_size": "2K"}
            ),
            text_reply("Done."),
        )
        openai_fake.script(reply)
        update = telegram.push_text(user, f"draw a bay {n}")
        assert await wait_turn(engine, update) == "answered"
        request = openai_fake.image_requests()[-1]
        assert openai_cost(request.usage, "2K") == cost, n
        [call] = await rows(
            engine,
            "SELECT * FROM api_calls WHERE purpose = 'generate_image' ORDER BY id DESC LIMIT 1",
        )
        assert call["provider_cost_micros"] == cost, n
        assert (call["status"], call["charged_micros"]) == (
            ("ok" if delivered else "error"),
            charged,
        ), n
    everything = await rows(engine, "SELECT COALESCE(SUM(charged_micros), 0) AS s FROM api_calls")
    assert await balance(engine, user) == STARTER_MICROS - everything[0]["s"]
