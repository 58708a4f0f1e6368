"""Delivery to the chat and intake of the person's images, in process."""

from __future__ import annotations

import io

from PIL import Image

from tests.fakes.anthropic import text_reply, tool_use_reply
from tests.fakes.gemini import image_reply
from tests.image_charges import gemini_cost
from tests.inprocess.conftest import USER, Start


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
