"""Image providers end to end through the real bot process: a model the provider stopped serving
(404 at run time), and the OpenAI Images API as the second provider."""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_images import (
    STARTER_MICROS,
    STARTER_USD,
    balance,
    result_text,
    rows,
    tool_results,
    wait_turn,
)
from tests.fakes.anthropic import FakeAnthropic, text_reply, tool_use_reply
from tests.fakes.gemini import LIVE_MODELS, FakeGemini, image_reply
from tests.fakes.telegram import FakeTelegram

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
