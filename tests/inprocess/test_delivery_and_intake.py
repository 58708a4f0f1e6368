"""Delivery to the chat and intake of the person's images, in process."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import tracemalloc

from PIL import Image

from tests.fakes.anthropic import text_reply, tool_use_reply
from tests.fakes.gemini import image_reply, raw_bytes_reply
from tests.image_charges import gemini_cost
from tests.inprocess.conftest import USER, InProcess, Start
from tests.traced import bytes_held_by


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 90)).save(out, "PNG")
    return out.getvalue()


async def test_a_4k_image_goes_as_photo_and_document_with_one_row_and_one_charge(
    start: Start,
) -> None:
    run = await start(STARTER_BALANCE_USD="5.00")
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "a castle", "image_size": "4K"}, id="toolu_4k"),
        text_reply("Done."),
    )
    run.gemini.script(image_reply())
    assert await run.turn(USER, "draw a castle in 4K") == "answered"
    methods = [s.method for s in run.telegram.sent(USER)]
    assert (methods.count("sendPhoto"), methods.count("sendDocument")) == (1, 1)
    [call] = await run.rows("SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    [file] = await run.rows("SELECT * FROM user_files")
    # Charged from the usage the fake reported (issue 16), not the per-image price.
    [answered] = [r for r in run.gemini.generate_requests() if r.status == 200]
    assert (call["image_size"], call["charged_micros"]) == ("4K", gemini_cost(answered.usage, "4K"))
    assert file["api_call_id"] == call["id"]
    assert file["telegram_file_id"]


async def test_a_generated_original_goes_to_the_chat_from_its_stored_file(start: Start) -> None:
    # While the chat receives the original (seconds for a 4K one), the bot holds no copy of it:
    # the blob was written first and aiogram reads the file.
    run = await start(STARTER_BALANCE_USD="5.00")
    noise = Image.frombytes("RGB", (1024, 1024), os.urandom(3 * 1024 * 1024))
    out = io.BytesIO()
    noise.save(out, "PNG")
    original = out.getvalue()
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "noise", "image_size": "4K"}, id="toolu_n"),
        text_reply("Done."),
    )
    run.gemini.script(raw_bytes_reply(original, "image/png"))
    run.telegram.hang("sendDocument")
    tracemalloc.start()
    try:
        run.telegram.push_text(USER, "draw noise")
        await run.feed()
        document = await sent_document(run)
        held = bytes_held_by("*/bot/*")
    finally:
        tracemalloc.stop()
    assert document == original  # nothing to strip: the provider's own bytes
    sha256 = hashlib.sha256(document).hexdigest()
    stored = run.app.settings.files_dir / sha256[:2] / sha256[2:4] / sha256
    assert stored.read_bytes() == document
    assert held < len(original) // 2  # Claude's preview of this noise is 0.8 MB of it


async def test_an_image_that_cannot_be_stored_is_neither_sent_nor_charged(start: Start) -> None:
    # The original is stored before it is sent: a store that fails (a full or broken disk) ends
    # the delivery before the chat gets anything, and the image is not charged.
    run = await start(STARTER_BALANCE_USD="5.00")
    files_dir = run.app.settings.files_dir
    shutil.rmtree(files_dir, ignore_errors=True)
    files_dir.parent.mkdir(parents=True, exist_ok=True)
    files_dir.write_bytes(b"not a directory")  # every blob's directory fails to be made
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "a castle"}, id="toolu_broken"),
        text_reply("Sorry, that did not work."),
    )
    run.gemini.script(image_reply())
    assert await run.turn(USER, "draw a castle") == "answered"
    methods = [s.method for s in run.telegram.sent(USER)]
    assert "sendPhoto" not in methods and "sendDocument" not in methods
    [call] = await run.rows("SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert call["charged_micros"] == 0
    assert await run.rows("SELECT id FROM user_files") == []
    [result] = [
        b
        for b in run.anthropic.message_requests()[-1]["messages"][-1]["content"]
        if b.get("type") == "tool_result"
    ]
    assert result["is_error"] is True


async def sent_document(run: InProcess, timeout: float = 20.0) -> bytes:
    """The bytes of the first sendDocument the fake Telegram has read (answered or not)."""
    async with asyncio.timeout(timeout):
        while True:
            for record in list(run.telegram.requests):
                if record.method.lower() == "senddocument" and record.files:
                    return next(iter(record.files.values())).data
            await asyncio.sleep(0.02)


async def test_a_photo_is_taken_in_stored_and_shown_to_claude(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.anthropic.script(text_reply("A green square."))
    update_id = run.telegram.push_photo(USER, png(64, 48), caption="what is this?")
    await run.feed()
    assert await run.finished(update_id) == "answered"
    [file] = await run.rows("SELECT * FROM user_files")
    assert (file["source"], file["kind"], file["width"], file["height"]) == (
        "user",
        "photo",
        64,
        48,
    )
    assert file["claude_file_id"] in run.anthropic.files
    [request] = run.anthropic.message_requests()
    blocks = request["messages"][-1]["content"]
    assert {"type": "file", "file_id": file["claude_file_id"]} in [
        b.get("source") for b in blocks if b.get("type") == "image"
    ]
    assert any(s.text == "A green square." for s in run.telegram.sent(USER))
