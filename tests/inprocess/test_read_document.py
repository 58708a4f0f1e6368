"""read_document goes through the ClaudeGateway inside the metered path, in process: an overloaded
Claude is tried again and the reading charged once; a refused request is a plain tool error the
model relays, recorded and charged nothing."""

from __future__ import annotations

from typing import Any

from bot.agent.tools.read_document import READER_SYSTEM
from tests.fakes.anthropic import ApiError, overloaded, text_reply, tool_use_reply
from tests.inprocess.conftest import USER, InProcess, Start

NOTES = "Meeting notes: the launch moves to Thursday; budget stays at 40k."


async def send_notes(run: InProcess) -> str:
    """A text file the person sent earlier; its file_id."""
    run.anthropic.script(text_reply("Got your notes."))
    update = run.telegram.push_document(
        USER, NOTES.encode(), filename="notes.txt", mime_type="text/plain"
    )
    await run.feed()
    assert await run.finished(update) == "answered"
    [row] = await run.rows("SELECT id FROM user_files WHERE kind = 'text'")
    return str(row["id"])


def reader_requests(run: InProcess) -> list[dict[str, Any]]:
    return [r for r in run.anthropic.message_requests() if r.get("system") == READER_SYSTEM]


def tool_results(run: InProcess) -> list[dict[str, Any]]:
    return [
        block
        for message in run.anthropic.message_requests()[-1]["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


async def balance(run: InProcess) -> int:
    [row] = await run.rows("SELECT balance_micros FROM users WHERE id = :u", u=USER)
    return int(row["balance_micros"])


async def test_an_overloaded_reading_is_tried_again_and_charged_once(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00", ANTHROPIC_MAX_RETRIES="2")
    file_id = await send_notes(run)
    run.anthropic.script(
        tool_use_reply("read_document", {"file_id": file_id, "question": "when?"}, id="toolu_rd"),
        overloaded(),
        text_reply("Thursday."),
        text_reply("The launch is on Thursday."),
    )
    assert await run.turn(USER, "when is the launch?") == "answered"

    readers = reader_requests(run)
    assert len(readers) == 2  # the 529, then the answer
    assert readers[0] == readers[1]
    [document] = [b for b in readers[1]["messages"][0]["content"] if b["type"] == "document"]
    assert NOTES in document["source"]["data"]
    [result] = tool_results(run)
    assert "Thursday." in str(result["content"]) and not result.get("is_error")

    calls = await run.rows("SELECT * FROM api_calls ORDER BY id")
    assert [c["purpose"] for c in calls] == ["chat", "chat", "read_document", "chat"]
    [reading] = [c for c in calls if c["purpose"] == "read_document"]
    assert reading["status"] == "ok" and reading["charged_micros"] > 0
    assert await balance(run) == 1_000_000 - sum(c["charged_micros"] for c in calls)
    assert await run.rows("SELECT id FROM balance_holds WHERE status = 'held'") == []


async def test_a_refused_reading_is_a_plain_error_and_costs_nothing(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00", ANTHROPIC_MAX_RETRIES="2")
    file_id = await send_notes(run)
    run.anthropic.script(
        tool_use_reply("read_document", {"file_id": file_id}, id="toolu_bad"),
        ApiError(400, message="messages.0.content.0: the document could not be processed"),
        text_reply("I couldn't read the notes, and it cost you nothing."),
    )
    assert await run.turn(USER, "summarise my notes") == "answered"

    assert len(reader_requests(run)) == 1  # a 400 is not tried again
    [result] = tool_results(run)
    assert result["is_error"] is True
    assert "Reading this document failed. Nothing was charged." in str(result["content"])
    assert "400" not in str(result["content"])

    calls = await run.rows("SELECT * FROM api_calls ORDER BY id")
    [reading] = [c for c in calls if c["purpose"] == "read_document"]
    assert reading["status"] == "error" and reading["charged_micros"] == 0
    assert "bad_request" in reading["error"]
    assert await balance(run) == 1_000_000 - sum(c["charged_micros"] for c in calls)
    assert await run.rows("SELECT id FROM balance_holds WHERE status = 'held'") == []
