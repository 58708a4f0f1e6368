"""The chat turn, the loop, the tools and delivery, in process: real clients, fake servers."""

from __future__ import annotations

import json

from tests.fakes.anthropic import text_reply, tool_use_reply
from tests.fakes.gemini import blocked_prompt, image_reply
from tests.image_charges import gemini_cost
from tests.inprocess.conftest import USER, InProcess, Start


def tool_result(run: InProcess) -> dict[str, object]:
    """The last tool_result block the bot sent to Claude."""
    for body in reversed(run.anthropic.message_requests()):
        for message in reversed(body.get("messages", [])):
            content = message.get("content")
            if isinstance(content, list):
                for block in content:
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        return block
    raise AssertionError("no tool_result was sent")


async def test_a_text_turn_is_answered_and_charged_once(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.anthropic.script(text_reply("Hello there!"))
    assert await run.turn(USER, "hi") == "answered"
    assert any(s.text == "Hello there!" for s in run.telegram.sent(USER))
    [call] = await run.rows("SELECT * FROM api_calls")
    assert (call["purpose"], call["status"], call["uncollected_micros"]) == ("chat", "ok", 0)
    assert call["charged_micros"] == call["provider_cost_micros"] > 0
    inputs = call["input_tokens"] + call["cache_write_tokens"] + call["cache_read_tokens"]
    assert inputs > 0 and call["output_tokens"] > 0
    [charge] = await run.rows("SELECT * FROM balance_operations WHERE kind = 'charge'")
    assert charge["api_call_id"] == call["id"]
    assert charge["amount_micros"] == -call["charged_micros"]
    assert await run.rows("SELECT * FROM balance_holds WHERE status = 'held'") == []
    assert await run.rows("SELECT * FROM admin_balance_mismatches") == []


async def test_a_generated_image_is_sent_recorded_and_charged_together(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="5.00")
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "a cat"}, id="toolu_cat"),
        text_reply("Here is your cat."),
    )
    run.gemini.script(image_reply(text="A cat."))
    assert await run.turn(USER, "draw a cat") == "answered"
    # Charged from the usage the fake reported (issue 16), not the per-image price.
    [answered] = [r for r in run.gemini.generate_requests() if r.status == 200]
    image_cost = gemini_cost(answered.usage, "2K")
    sent = run.telegram.sent(USER, include_actions=True)
    assert [s.method for s in sent].count("sendPhoto") == 1
    assert "upload_photo" in [s.action for s in sent if s.method == "sendChatAction"]
    [image_call] = await run.rows("SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert (image_call["status"], image_call["charged_micros"]) == ("ok", image_cost)
    assert image_call["tool_use_id"] == "toolu_cat"
    [file] = await run.rows("SELECT * FROM user_files")
    assert file["api_call_id"] == image_call["id"]
    assert file["metadata"]["charged_micros"] == image_cost
    assert file["metadata"]["prompt"] == "a cat"
    [charge] = await run.rows(
        "SELECT * FROM balance_operations WHERE idempotency_key = 'img:toolu_cat'"
    )
    assert charge["amount_micros"] == -image_cost
    result = json.loads(str(tool_result(run)["content"]))
    assert result["delivered_files"][0]["file_id"] == str(file["id"])


async def test_an_image_telegram_refuses_is_not_charged(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="5.00")
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "a cat"}, id="toolu_refused"),
        text_reply("Sorry."),
    )
    run.gemini.script(image_reply())
    for method in ("sendPhoto", "sendDocument"):  # a failed photo is tried as a document
        run.telegram.fail(
            method, error_code=400, description="Bad Request: chat not found", times=5
        )
    assert await run.turn(USER, "draw a cat") == "answered"
    [image_call] = await run.rows("SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert (image_call["status"], image_call["charged_micros"]) == ("error", 0)
    assert image_call["error"].startswith("send_failed")
    assert await run.rows("SELECT * FROM user_files") == []
    assert await run.rows("SELECT * FROM balance_holds WHERE status = 'held'") == []
    result = tool_result(run)
    assert result.get("is_error") is True
    # The result tells Claude what was charged for the image: nothing, not its list price.
    assert '"cost_usd":"$0.00"' in str(result["content"])
    assert "$0.1340" not in str(result["content"])


async def test_a_blocked_prompt_is_recorded_and_not_charged(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="5.00")
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "something"}, id="toolu_blocked"),
        text_reply("I could not draw that."),
    )
    run.gemini.script(blocked_prompt())
    assert await run.turn(USER, "draw something") == "answered"
    [image_call] = await run.rows("SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert (image_call["status"], image_call["charged_micros"]) == ("blocked", 0)
    assert "Nothing was charged" in str(tool_result(run)["content"])
    assert await run.rows("SELECT * FROM balance_holds WHERE status = 'held'") == []


async def test_too_little_balance_for_an_image_calls_no_image_model(start: Start) -> None:
    # Enough for both chat calls (with the larger system prompt and tools of issues 16-19), not
    # for the image's hold (its per-image price plus 25%).
    run = await start(STARTER_BALANCE_USD="0.12")
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "a cat"}), text_reply("Top up first.")
    )
    assert await run.turn(USER, "draw a cat") == "answered"
    assert run.gemini.generate_requests() == []
    assert "Insufficient balance" in str(tool_result(run)["content"])
    assert await run.rows("SELECT * FROM api_calls WHERE purpose = 'generate_image'") == []


async def test_analyze_image_is_one_metered_vision_call(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="5.00")
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "a cat"}, id="toolu_draw"),
        text_reply("Here."),
    )
    run.gemini.script(image_reply())
    assert await run.turn(USER, "draw a cat") == "answered"
    [file] = await run.rows("SELECT id FROM user_files")
    run.anthropic.script(
        tool_use_reply("analyze_image", {"file_id": str(file["id"])}, id="toolu_look"),
        text_reply("It is blue."),
        text_reply("The cat is blue."),
    )
    assert await run.turn(USER, "what colour?") == "answered"
    [vision] = await run.rows("SELECT * FROM api_calls WHERE purpose = 'analyze_image'")
    assert (vision["status"], vision["tool_use_id"]) == ("ok", "toolu_look")
    assert vision["charged_micros"] == vision["provider_cost_micros"] > 0
    assert json.loads(str(tool_result(run)["content"]))["answer"] == "It is blue."
    assert await run.rows("SELECT * FROM admin_balance_mismatches") == []


async def test_analyze_image_falls_back_to_the_stored_copy_when_the_files_api_copy_is_gone(
    start: Start,
) -> None:
    run = await start(STARTER_BALANCE_USD="5.00")
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "a cat"}, id="toolu_draw2"),
        text_reply("Here."),
    )
    run.gemini.script(image_reply())
    assert await run.turn(USER, "draw a cat") == "answered"
    [file] = await run.rows("SELECT id, claude_file_id FROM user_files")
    del run.anthropic.files[file["claude_file_id"]]
    run.anthropic.script(
        tool_use_reply("analyze_image", {"file_id": str(file["id"])}, id="toolu_gone"),
        text_reply("Green."),
        text_reply("It is green."),
    )
    assert await run.turn(USER, "what colour?") == "answered"
    [vision] = await run.rows("SELECT * FROM api_calls WHERE purpose = 'analyze_image'")
    assert (vision["status"], vision["charged_micros"] > 0) == ("ok", True)
    sources = [
        body["messages"][0]["content"][0]["source"]["type"]
        for body in run.anthropic.message_requests()
        if len(body["messages"]) == 1 and body["messages"][0]["content"][0].get("type") == "image"
    ]
    assert sources == ["file", "base64"]


async def test_a_photo_the_server_fails_oddly_is_sent_as_a_document(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="5.00")
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "a cat"}, id="toolu_doc"),
        text_reply("Here it is."),
    )
    run.gemini.script(image_reply())
    run.telegram.fail_raw("sendPhoto", status=500, body='{"message": "boom"}', times=5)
    assert await run.turn(USER, "draw a cat") == "answered"
    [image_call] = await run.rows("SELECT * FROM api_calls WHERE purpose = 'generate_image'")
    assert image_call["status"] == "ok" and image_call["charged_micros"] > 0
    assert [s.method for s in run.telegram.sent(USER) if s.document] == ["sendDocument"]
    result = json.loads(str(tool_result(run)["content"]))
    assert result["delivered_files"][0]["sent_as"] == "document"
