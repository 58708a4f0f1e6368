"""Images end to end through the real bot process: generation, edits, intake, analysis, blocked
generations, delivery as photo and/or document, and exact charges."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.fakes.anthropic import FakeAnthropic, text_reply, tool_use_reply
from tests.fakes.gemini import (
    FakeGemini,
    blocked_prompt,
    finish,
    image_reply,
    no_image,
    text_only,
)
from tests.fakes.telegram import FakeTelegram
from tests.image_charges import gemini_cost, hold_for

USER = 4242
STARTER_USD = "5.00"
STARTER_MICROS = 5_000_000
IMAGE_MODEL = "gemini-3-pro-image"  # the default configuration
IMAGE_HOLD = hold_for(IMAGE_MODEL, "2K")  # 134000 + 25%
FINISHED = ("answered", "failed")


async def wait_turn(engine: AsyncEngine, update_id: int, timeout: float = 30.0) -> str:
    """Wait until the bot has finished the update (answered or failed); returns the status."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT status, error FROM inbound_updates WHERE update_id = :u"),
                    {"u": update_id},
                )
            ).first()
        status = row.status if row else None
        if status == "answered":
            return "answered"
        if status in FINISHED:
            return f"{status}: {row.error if row else ''}"
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"update {update_id} not finished: {status}")
        await asyncio.sleep(0.05)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).mappings().all())


async def balance(engine: AsyncEngine, user_id: int) -> int:
    [row] = await rows(engine, "SELECT balance_micros FROM users WHERE id = :u", u=user_id)
    return int(row["balance_micros"])


def tool_results(anthropic_fake: FakeAnthropic) -> list[dict[str, Any]]:
    """Every tool_result block the bot sent to Claude, in order (deduplicated by id)."""
    seen: dict[str, dict[str, Any]] = {}
    for body in anthropic_fake.message_requests():
        for message in body.get("messages", []):
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    seen.setdefault(block["tool_use_id"], block)
    return list(seen.values())


def result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content)


def last_image_cost(gemini: FakeGemini, size: str = "2K") -> int:
    """The usage-based cost of the last image the fake answered with (design section 6)."""
    answered = [r for r in gemini.generate_requests() if r.status == 200]
    return gemini_cost(answered[-1].usage, size)


def png(width: int, height: int, color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def blob_path(data_dir: Path, sha256: str) -> Path:
    return data_dir / "files" / sha256[:2] / sha256[2:4] / sha256


async def test_draw_edit_look_and_analyze_are_charged_exactly(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    await start_bot(PRICE_MARKUP="1.5", STARTER_BALANCE_USD=STARTER_USD)
    markup = Decimal("1.5")

    # 1. "draw a cat": a photo, a user_files row with provenance, an api_calls row.
    anthropic_fake.script(
        tool_use_reply(
            "generate_image",
            {"prompt": "a cat", "aspect_ratio": "16:9", "image_size": "2K"},
            id="toolu_draw_cat",
        ),
        text_reply("Here is your cat."),
    )
    gemini_fake.script(image_reply(text="A cat."))
    update = telegram.push_text(USER, "draw a cat")
    assert await wait_turn(engine, update) == "answered"
    photos = [s for s in telegram.sent(USER) if s.method == "sendPhoto"]
    assert len(photos) == 1
    [gen_request] = gemini_fake.generate_requests()
    assert gen_request.api_version == "v1beta"
    assert gen_request.model == IMAGE_MODEL  # the default configuration, a live model id
    assert gen_request.texts == ["a cat"]
    assert gen_request.aspect_ratio == "16:9"
    assert gen_request.image_size == "2K"
    assert set(gen_request.response_modalities or []) == {"TEXT", "IMAGE"}
    assert "personGeneration" not in json.dumps(gen_request.json)

    [cat] = await rows(engine, "SELECT * FROM user_files WHERE user_id = :u", u=USER)
    assert cat["source"] == "assistant"
    assert cat["kind"] == "generated"
    assert cat["metadata"]["prompt"] == "a cat"
    assert cat["metadata"]["aspect_ratio"] == "16:9"
    assert cat["metadata"]["image_size"] == "2K"
    assert cat["metadata"]["reference_file_ids"] == []
    assert cat["claude_file_id"] in anthropic_fake.files
    assert cat["telegram_file_id"]
    assert photos[0].photo == blob_path(tmp_path / "data", cat["sha256"]).read_bytes()
    [image_call] = await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert image_call["id"] == cat["api_call_id"]
    assert image_call["provider"] == "google"
    assert image_call["status"] == "ok"
    assert image_call["image_count"] == 1
    assert image_call["image_size"] == "2K"
    cat_cost = gemini_cost(gen_request.usage, "2K")
    assert cat_cost > 134_400  # 1120 image tokens at 120 USD/MTok, plus prompt and thinking
    assert image_call["provider_cost_micros"] == cat_cost
    assert image_call["charged_micros"] == math.ceil(Decimal(cat_cost) * markup)
    assert image_call["image_output_tokens"] == 1120
    assert image_call["output_tokens"] > 1120
    [draw_result] = tool_results(anthropic_fake)
    payload = json.loads(result_text(draw_result))
    assert payload["success"] is True
    assert payload["delivered_files"][0]["file_id"] == str(cat["id"])
    assert payload["delivered_files"][0]["sent_as"] == "photo"
    assert "base64" not in result_text(draw_result)

    # 2. "make it blue": the previous image's bytes go to Gemini as a reference.
    anthropic_fake.script(
        tool_use_reply(
            "generate_image",
            {"prompt": "make the cat blue", "reference_file_ids": [str(cat["id"])]},
        ),
        text_reply("Blue now."),
    )
    gemini_fake.script(image_reply(color=(20, 40, 220)))
    update = telegram.push_text(USER, "make it blue")
    assert await wait_turn(engine, update) == "answered"
    edit_request = gemini_fake.generate_requests()[-1]
    assert len(edit_request.images) == 1
    stored_cat = blob_path(tmp_path / "data", cat["sha256"]).read_bytes()
    assert edit_request.images[0].data == stored_cat
    assert edit_request.texts == ["make the cat blue"]
    blue = (await rows(engine, "SELECT * FROM user_files ORDER BY id DESC LIMIT 1"))[0]
    assert blue["metadata"]["reference_file_ids"] == [cat["id"]]

    # 3. A photo plus "what's in this?" reaches Claude as an image block with a live file id.
    anthropic_fake.script(text_reply("A blue square."))
    update = telegram.push_photo(USER, png(300, 200), caption="what's in this?")
    assert await wait_turn(engine, update) == "answered"
    last_user = anthropic_fake.message_requests()[-1]["messages"][-1]
    images = [b for b in last_user["content"] if b.get("type") == "image"]
    assert len(images) == 1
    file_id = images[0]["source"]["file_id"]
    assert file_id in anthropic_fake.files and not anthropic_fake.files[file_id].deleted
    photo_row = (await rows(engine, "SELECT * FROM user_files ORDER BY id DESC LIMIT 1"))[0]
    assert photo_row["source"] == "user"
    assert photo_row["kind"] == "photo"
    assert photo_row["claude_file_id"] == file_id
    texts = " ".join(b.get("text", "") for b in last_user["content"] if b.get("type") == "text")
    assert "what's in this?" in texts
    assert f"file_id {cat['id']}" in texts  # the Available files note

    # 4. analyze_image on the earlier generated file: a vision call on that file's copy.
    anthropic_fake.script(
        tool_use_reply(
            "analyze_image", {"file_id": str(cat["id"]), "question": "What colour is it?"}
        ),
        text_reply("It is red."),
        text_reply("The cat is red."),
    )
    update = telegram.push_text(USER, "what colour was the first cat?")
    assert await wait_turn(engine, update) == "answered"
    vision = [
        b
        for b in anthropic_fake.message_requests()
        if b["messages"][0]["content"][0].get("type") == "image" and len(b["messages"]) == 1
    ]
    assert len(vision) == 1
    assert vision[0]["messages"][0]["content"][0]["source"] == {
        "type": "file",
        "file_id": cat["claude_file_id"],
    }
    analyze_result = tool_results(anthropic_fake)[-1]
    assert json.loads(result_text(analyze_result))["answer"] == "It is red."

    # Money: the balance is lower by exactly the charges, each provider cost x markup.
    calls = await rows(engine, "SELECT * FROM api_calls ORDER BY id")
    assert {c["purpose"] for c in calls} == {"chat", "generate_image", "analyze_image"}
    for call in calls:
        assert call["status"] == "ok"
        expected = math.ceil(Decimal(call["provider_cost_micros"]) * markup)
        assert call["charged_micros"] == expected, call
    images_charged = [c for c in calls if c["purpose"] == "generate_image"]
    expected_costs = [gemini_cost(r.usage, "2K") for r in gemini_fake.generate_requests()]
    assert [c["provider_cost_micros"] for c in images_charged] == expected_costs
    total = sum(c["charged_micros"] for c in calls)
    assert await balance(engine, USER) == STARTER_MICROS - total
    [ledger] = await rows(
        engine,
        "SELECT COALESCE(SUM(amount_micros), 0) AS s FROM balance_operations WHERE user_id = :u",
        u=USER,
    )
    assert ledger["s"] == STARTER_MICROS - total
    holds = await rows(engine, "SELECT status FROM balance_holds WHERE status = 'held'")
    assert holds == []


BLOCKED_CASES = [
    (blocked_prompt("PROHIBITED_CONTENT"), "PROHIBITED_CONTENT", "safety filter"),
    (finish("IMAGE_SAFETY"), "IMAGE_SAFETY", "safety filter"),
    (no_image(), "NO_IMAGE", "without an image"),
    (text_only("I cannot draw that."), "TEXT_ONLY", "I cannot draw that."),
]


async def test_blocked_generations_cost_nothing_and_tell_the_model_why(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD=STARTER_USD)
    for reply, reason, words in BLOCKED_CASES:
        anthropic_fake.script(
            tool_use_reply("generate_image", {"prompt": f"something {reason}"}),
            text_reply("Sorry, that was blocked."),
        )
        gemini_fake.script(reply)
        update = telegram.push_text(USER, f"draw something {reason}")
        assert await wait_turn(engine, update) == "answered"
        result = tool_results(anthropic_fake)[-1]
        assert result.get("is_error") is True
        assert reason in result_text(result)
        assert words in result_text(result)
        assert "Nothing was charged" in result_text(result)
    assert [s for s in telegram.sent(USER) if s.method in ("sendPhoto", "sendDocument")] == []
    image_calls = await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert len(image_calls) == len(BLOCKED_CASES)
    assert {c["status"] for c in image_calls} == {"blocked"}
    assert {c["charged_micros"] for c in image_calls} == {0}
    chat_charged = sum(
        c["charged_micros"]
        for c in await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'chat'")
    )
    assert chat_charged > 0
    assert await balance(engine, USER) == STARTER_MICROS - chat_charged
    assert await rows(engine, "SELECT 1 FROM user_files") == []


async def test_large_and_odd_images_arrive_as_documents(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD=STARTER_USD)
    cases = [
        ({"prompt": "a 4K castle", "image_size": "4K"}, image_reply(), "photo+document"),
        ({"prompt": "a thin tower"}, image_reply(width=20, height=600), "document"),
        # Over the photo limits (9000 + 1100 > 10000): a JPEG a third its size is the photo.
        ({"prompt": "a wide panorama"}, image_reply(width=9000, height=1100), "photo+document"),
    ]
    for args, reply, sent_as in cases:
        before = len(telegram.sent(USER))
        anthropic_fake.script(tool_use_reply("generate_image", args), text_reply("Done."))
        gemini_fake.script(reply)
        update = telegram.push_text(USER, str(args["prompt"]))
        assert await wait_turn(engine, update) == "answered"
        new = [s.method for s in telegram.sent(USER)[before:]]
        expected = {"photo+document": ["sendPhoto", "sendDocument"], "document": ["sendDocument"]}
        assert [m for m in new if m != "sendMessage"] == expected[sent_as], new
        result = json.loads(result_text(tool_results(anthropic_fake)[-1]))
        assert result["delivered_files"][0]["sent_as"] == sent_as
    # The panorama's photo is a JPEG preview; its document is the original, untouched.
    panorama_photo = [s for s in telegram.sent(USER) if s.method == "sendPhoto"][-1]
    panorama_document = [s for s in telegram.sent(USER) if s.method == "sendDocument"][-1]
    assert panorama_photo.photo is not None and panorama_document.document is not None
    with Image.open(io.BytesIO(panorama_photo.photo)) as shown:
        assert (shown.format, shown.size) == ("JPEG", (3000, 367))
    with Image.open(io.BytesIO(panorama_document.document)) as original:
        assert (original.format, original.size) == ("PNG", (9000, 1100))
    calls = await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    expected = [
        gemini_cost(r.usage, size)
        for r, size in zip(gemini_fake.generate_requests(), ["4K", "2K", "2K"], strict=True)
    ]
    assert expected[0] > 240_000  # 2000 image tokens at 120 USD/MTok, plus prompt and thinking
    assert [c["charged_micros"] for c in calls] == expected
    assert [c["image_output_tokens"] for c in calls] == [2000, 1120, 1120]
    assert [c["image_list_price_micros"] for c in calls] == [240_000, 134_000, 134_000]
    drift = await rows(
        engine,
        "SELECT image_size, images, usage_cost_usd, list_price_usd FROM admin_image_price_drift"
        " ORDER BY image_size",
    )
    assert [(d["image_size"], d["images"]) for d in drift] == [("2K", 2), ("4K", 1)]
    assert drift[0]["usage_cost_usd"] == Decimal(expected[1] + expected[2]) / 1_000_000
    assert drift[0]["list_price_usd"] == Decimal("0.268")
    assert drift[1]["usage_cost_usd"] == Decimal(expected[0]) / 1_000_000
    files = await rows(engine, "SELECT width, height FROM user_files ORDER BY id")
    assert [(f["width"], f["height"]) for f in files][1:] == [(20, 600), (9000, 1100)]


async def test_insufficient_balance_makes_no_gemini_call(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD="0.10")
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "a cat"}),
        text_reply("You need a top-up."),
    )
    update = telegram.push_text(USER, "draw a cat")
    assert await wait_turn(engine, update) == "answered"
    assert gemini_fake.generate_requests() == []
    result = tool_results(anthropic_fake)[-1]
    assert result.get("is_error") is True
    assert "Insufficient balance" in result_text(result)
    assert "$0.1340" in result_text(result)
    image_holds = await rows(
        engine, "SELECT * FROM balance_holds WHERE idempotency_key LIKE 'img:%'"
    )
    assert image_holds == []


async def test_failed_files_api_upload_still_delivers_the_image(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD=STARTER_USD)
    anthropic_fake.fail_uploads(times=2, status=500)  # the first try and the one retry
    anthropic_fake.script(tool_use_reply("generate_image", {"prompt": "a dog"}), text_reply("Ok"))
    gemini_fake.script(image_reply())
    update = telegram.push_text(USER, "draw a dog")
    assert await wait_turn(engine, update) == "answered"
    assert [s.method for s in telegram.sent(USER)].count("sendPhoto") == 1
    [row] = await rows(engine, "SELECT * FROM user_files")
    assert row["claude_file_id"] is None
    [call] = await rows(engine, "SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert call["charged_micros"] == last_image_cost(gemini_fake)

    # analyze_image on it re-uploads the stored copy and records the new Files API id.
    anthropic_fake.script(
        tool_use_reply("analyze_image", {"file_id": str(row["id"])}),
        text_reply("A red picture."),
        text_reply("It's red."),
    )
    update = telegram.push_text(USER, "describe it")
    assert await wait_turn(engine, update) == "answered"
    [row] = await rows(engine, "SELECT * FROM user_files")
    assert row["claude_file_id"] in anthropic_fake.files
    stored = hashlib.sha256(anthropic_fake.files[row["claude_file_id"]].data).hexdigest()
    assert stored  # the preview, uploaded
    assert json.loads(result_text(tool_results(anthropic_fake)[-1]))["answer"] == "A red picture."
