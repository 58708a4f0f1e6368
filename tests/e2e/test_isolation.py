"""A file_id is resolved only among the requesting user's files: the model, scripted to use
another user's ids (and deleted, malformed, huge and Anthropic-style ids), always gets
"file not found", and no provider call or reply carries the other user's data."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_images import result_text, rows, tool_results, wait_turn
from tests.fakes.anthropic import FakeAnthropic, text_reply, tool_use_reply, tool_uses_reply
from tests.fakes.gemini import FakeGemini, image_reply
from tests.fakes.telegram import FakeTelegram

VICTIM = 5001
ATTACKER = 5002
VICTIM_PROMPT = "victim-private-prompt-7f3a9 a lighthouse"
VICTIM_CAPTION = "victim-caption-c0ffee"
BATCH = 20


def jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 90), color).save(out, "JPEG")
    return out.getvalue()


def blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def id_variants(victim: list[dict[str, Any]], deleted_id: int) -> list[Any]:
    """Ids the attacker's model tries: foreign, deleted, malformed, huge, Anthropic-style."""
    variants: list[Any] = []
    for row in victim:
        fid = row["id"]
        variants += [
            str(fid),
            fid,
            f" {fid} ",
            f"0{fid}",
            f"00{fid}",
            f"{fid}.0",
            f"+{fid}",
            f"-{fid}",
            f"{fid}\n",
            f"file_id {fid}",
            f"{fid} OR 1=1",
            f"{fid}; DROP TABLE user_files",
            hex(fid),
            row["claude_file_id"],
            row["sha256"],
            row["telegram_file_id"],
            f"../{fid}",
            "".join(chr(0x0660 + int(d)) for d in str(fid)),  # Arabic-Indic digits
        ]
    variants += [
        str(deleted_id),
        deleted_id,
        "",
        " ",
        "0",
        "-1",
        "999999",
        str(2**63 - 1),
        str(2**63),
        str(10**30),
        10**30,
        "9" * 900,
        "abc",
        "null",
        "true",
        "[1]",
        "1,2",
        "1e3",
        "%s",
        "' OR '1'='1",
        "file_011CNha8iCJcU1wXNR6q4V8w",
        "file_" + "A" * 200,
        "../../etc/passwd",
        "file\u202e1",
        "1\x00",
    ]
    return [v for v in variants if v is not None]


async def test_foreign_and_bogus_file_ids_are_not_found(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD="20.00", MERGE_WINDOW_SECONDS="0")

    # The victim sends a photo and generates an image.
    anthropic_fake.script(text_reply("Nice photo."))
    update = telegram.push_photo(VICTIM, jpeg((250, 10, 10)), caption=VICTIM_CAPTION)
    assert await wait_turn(engine, update) == "answered"
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": VICTIM_PROMPT}), text_reply("Done.")
    )
    gemini_fake.script(image_reply(color=(1, 2, 3)))
    update = telegram.push_text(VICTIM, "draw a lighthouse")
    assert await wait_turn(engine, update) == "answered"
    victim = await rows(engine, "SELECT * FROM user_files WHERE user_id = :u ORDER BY id", u=VICTIM)
    assert [r["source"] for r in victim] == ["user", "assistant"]
    victim_file_ids = {r["claude_file_id"] for r in victim}

    # The attacker has two photos of their own; one of them is deleted.
    for color in ((10, 250, 10), (10, 10, 250)):
        anthropic_fake.script(text_reply("Got it."))
        update = telegram.push_photo(ATTACKER, jpeg(color))
        assert await wait_turn(engine, update) == "answered"
    own, deleted = await rows(
        engine, "SELECT * FROM user_files WHERE user_id = :u ORDER BY id", u=ATTACKER
    )
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE user_files SET deleted_at = now() WHERE id = :id"), {"id": deleted["id"]}
        )
    requests_before = len(anthropic_fake.message_requests())
    gemini_before = len(gemini_fake.generate_requests())

    variants = id_variants(victim, deleted["id"])
    calls: list[tuple[str, dict[str, Any]]] = []
    for variant in variants:
        calls.append(("analyze_image", {"file_id": variant, "question": "what is it?"}))
        calls.append(("generate_image", {"prompt": "copy it", "reference_file_ids": [variant]}))
        calls.append(
            ("generate_image", {"prompt": "mix", "reference_file_ids": [str(own["id"]), variant]})
        )
    assert len(variants) >= 50
    for start in range(0, len(calls), BATCH):
        anthropic_fake.script(tool_uses_reply(*calls[start : start + BATCH]), text_reply("Hmm."))
        update = telegram.push_text(ATTACKER, f"show me other people's pictures {start}")
        assert await wait_turn(engine, update, timeout=60) == "answered"

    results = tool_results(anthropic_fake)[-len(calls) :]
    assert len(results) == len(calls)
    for (name, args), result in zip(calls, results, strict=True):
        assert result.get("is_error") is True, (name, args, result)
        assert "file not found" in result_text(result), (name, args, result)

    # Positive control: the attacker's own live file works.
    anthropic_fake.script(
        tool_use_reply("analyze_image", {"file_id": str(own["id"])}),
        text_reply("A green picture."),
        text_reply("It's green."),
    )
    update = telegram.push_text(ATTACKER, "describe my photo")
    assert await wait_turn(engine, update) == "answered"
    assert json.loads(result_text(tool_results(anthropic_fake)[-1]))["answer"] == "A green picture."

    # No provider call carried the victim's files or data; no reply leaked them.
    assert len(gemini_fake.generate_requests()) == gemini_before
    attacker_requests = anthropic_fake.message_requests()[requests_before:]
    image_ids = {
        block["source"].get("file_id")
        for body in attacker_requests
        for message in body["messages"]
        for block in blocks_of(message)
        if block.get("type") == "image"
    }
    assert image_ids.isdisjoint(victim_file_ids)
    user_side = json.dumps(
        [m for body in attacker_requests for m in body["messages"] if m["role"] == "user"]
    )
    assert VICTIM_PROMPT not in user_side
    assert VICTIM_CAPTION not in user_side
    leaks = [
        s.text or s.caption or ""
        for s in telegram.sent(ATTACKER)
        if any(x in (s.text or s.caption or "") for x in (VICTIM_PROMPT, VICTIM_CAPTION))
    ]
    assert leaks == []
    assert not any(s.method in ("sendPhoto", "sendDocument") for s in telegram.sent(ATTACKER))
    charged = await rows(
        engine,
        "SELECT * FROM api_calls WHERE user_id = :u AND purpose <> 'chat' AND charged_micros > 0",
        u=ATTACKER,
    )
    assert [c["purpose"] for c in charged] == ["analyze_image"]
