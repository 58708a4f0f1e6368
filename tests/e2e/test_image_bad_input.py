"""What the image model may send back that it should not, through the real bot process, each with
its exact charge (design section 6: usage-based; nothing for what was not delivered)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image
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
from tests.fakes.gemini import FakeGemini, ImageReply, image_reply, raw_bytes_reply
from tests.fakes.telegram import FakeTelegram
from tests.image_charges import gemini_cost, hold_for

USER = 6101
HOLD_2K = hold_for("gemini-3-pro-image", "2K")  # 167_500


def encoded(fmt: str, size: tuple[int, int] = (300, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt)
    return out.getvalue()


PNG = encoded("PNG")


@dataclass(frozen=True)
class Case:
    name: str
    reply: ImageReply
    delivered: bool
    # The exact provider cost in micro-USD (checked against the independent formula too).
    cost: int | None
    charged: int | None = None  # defaults to cost when delivered, 0 otherwise
    mime: str | None = None
    size: tuple[int, int] | None = None


# The prompt is "draw <name>"; a 2K 1:1 image. Prompt tokens = ceil(len/4) at 2 USD/MTok,
# 1120 IMAGE tokens at 120, text and thoughts (184 by default) at 12.
CASES = [
    # 2208 = 184 thoughts x 12; 134_400 = 1120 x 120; prompt "draw bigger" = 3 tokens = 6
    Case(
        "bigger", image_reply(width=3000, height=3000), True, 6 + 2208 + 134_400, size=(3000, 3000)
    ),
    Case("too many pixels", image_reply(width=4000, height=4000), False, 10 + 2208 + 134_400),
    Case("truncated", raw_bytes_reply(PNG[: len(PNG) // 2], "image/png"), False, None),
    Case(
        "corrupt", raw_bytes_reply(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "image/png"), False, None
    ),
    Case(
        "jpeg as png",
        raw_bytes_reply(encoded("JPEG"), "image/png"),
        True,
        None,
        mime="image/jpeg",
        size=(300, 200),
    ),
    # Both images are billed (2240 IMAGE tokens), above the hold (one 2K image + 25%, HOLD_2K):
    # the reported cost is charged as far as the available balance allows (design section 6;
    # the restructured ledger); the last image is the one delivered.
    Case("two images", image_reply(images=2), True, 8 + 2208 + 268_800),
    # The draft image counts as thinking: 184 + 1120 + ceil(len("sketching") / 4) = 1307 tokens
    # at 12 = 15_684; prompt "draw thought image" = 5 tokens = 10.
    Case(
        "thought image",
        image_reply(thought_image=True, thought_text="sketching"),
        True,
        10 + 15_684 + 134_400,
    ),
    Case("no usage details", image_reply(usage_mode="no_details"), True, 134_000),
    Case("no usage", image_reply(usage_mode="none"), True, 134_000),
]


async def test_bad_image_answers_are_charged_exactly(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD=STARTER_USD, MAX_IMAGE_PIXELS="10000000")
    for case in CASES:
        before = len(telegram.sent(USER))
        anthropic_fake.script(
            tool_use_reply(
                "generate_image", {"prompt": f"draw {case.name}", "aspect_ratio": "1:1"}
            ),
            text_reply("Done."),
        )
        gemini_fake.script(case.reply)
        update = telegram.push_text(USER, f"please draw {case.name}")
        assert await wait_turn(engine, update) == "answered", case.name
        [call] = await rows(
            engine,
            "SELECT * FROM api_calls WHERE purpose = 'generate_image' ORDER BY id DESC LIMIT 1",
        )
        request = gemini_fake.generate_requests()[-1]
        formula = gemini_cost(request.usage, "2K")
        if case.cost is not None:
            assert formula == case.cost, case.name
        assert call["provider_cost_micros"] == formula, case.name
        result: dict[str, Any] = json.loads(result_text(tool_results(anthropic_fake)[-1]))
        media = [
            s for s in telegram.sent(USER)[before:] if s.method in ("sendPhoto", "sendDocument")
        ]
        if case.delivered:
            expected = case.charged if case.charged is not None else formula
            assert (call["status"], call["charged_micros"]) == ("ok", expected), case.name
            assert result["delivered_files"][0]["delivered"] is True, case.name
            assert media, case.name
            [file] = await rows(
                engine, "SELECT * FROM user_files WHERE api_call_id = :c", c=call["id"]
            )
            if case.mime:
                assert file["mime_type"] == case.mime, case.name
            if case.size:
                assert (file["width"], file["height"]) == case.size, case.name
            assert file["metadata"]["charged_micros"] == expected
        else:
            assert (call["status"], call["charged_micros"]) == ("error", 0), case.name
            assert "invalid_image" in call["error"], case.name
            assert result["delivered_files"][0]["delivered"] is False, case.name
            assert "nothing was charged" in result["delivered_files"][0]["error"]
            assert media == [], case.name
    # The two-image answer: the second (last) image is the one delivered.
    two = await rows(
        engine,
        "SELECT f.* FROM user_files f JOIN api_calls c ON c.id = f.api_call_id"
        " WHERE c.image_output_tokens = 2240",
    )
    assert len(two) == 1
    usage_calls = await rows(
        engine, "SELECT image_output_tokens FROM api_calls WHERE purpose = 'generate_image'"
    )
    assert [c["image_output_tokens"] for c in usage_calls] == [
        1120,
        1120,
        1120,
        1120,
        1120,
        2240,
        1120,
        0,
        0,
    ]  # fmt: skip  (failed deliveries keep what the provider reported; nothing charged)
    everything = await rows(engine, "SELECT COALESCE(SUM(charged_micros), 0) AS s FROM api_calls")
    assert await balance(engine, USER) == STARTER_MICROS - everything[0]["s"]
    assert await rows(engine, "SELECT 1 FROM balance_holds WHERE status = 'held'") == []
