"""/stop during an image, and the Confirm / Cancel question when the balance cannot cover the
call, through aiogram's Dispatcher.feed_update in process."""

from __future__ import annotations

import asyncio

from bot.services.money import format_usd
from tests.fakes.anthropic import Reply, text_block, text_reply, tool_use_block, tool_use_reply
from tests.fakes.gemini import Hang, image_reply
from tests.inprocess.conftest import USER, InProcess, Start

USAGE = {
    "input_tokens": 1000,
    "output_tokens": 100,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
CHAT_CHARGE = 3000  # Sonnet 5.5: 1000 x 2 USD + 100 x 10 USD per MTok, in micro-USD
IMAGE_2K_PRICE = 134_000  # gemini-3-pro-image per-image price at 2K
IMAGE_4K_PRICE, IMAGE_4K_HOLD = 240_000, 300_000  # and at 4K, and its hold (+25%)


def final_texts(run: InProcess) -> list[str]:
    return [s.text for s in run.telegram.sent(USER) if s.method == "sendMessage" and s.text]


async def ledger_charges(run: InProcess) -> list[int]:
    rows = await run.rows(
        "SELECT amount_micros FROM balance_operations WHERE user_id = :u AND kind = 'charge'"
        " ORDER BY id",
        u=USER,
    )
    return [-int(r["amount_micros"]) for r in rows]


async def available(run: InProcess) -> int:
    [row] = await run.rows(
        "SELECT balance_micros - held_micros AS available FROM users WHERE id = :u", u=USER
    )
    return int(row["available"])


async def test_an_image_stopped_by_the_person_is_cancelled_and_not_charged(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="5.00", RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    draw = Reply(
        content=[text_block("Drawing."), tool_use_block("generate_image", {"prompt": "a fox"})],
        stop_reason="tool_use",
        usage=USAGE,
    )
    run.anthropic.script(draw)
    run.gemini.script(Hang())
    update_id = run.telegram.push_text(USER, "draw a fox")
    await run.feed()
    await run.gemini.wait_for_requests(1, timeout=20)
    run.telegram.push_text(USER, "/stop")
    await run.feed()
    assert await run.finished(update_id) == "answered"

    calls = await run.rows(
        "SELECT purpose, status, provider_cost_micros, charged_micros, error FROM api_calls"
        " ORDER BY id"
    )
    assert [(c["purpose"], c["status"], c["charged_micros"]) for c in calls] == [
        ("chat", "ok", CHAT_CHARGE),
        ("generate_image", "cancelled", 0),
    ]
    # What the provider may bill for the abandoned image is kept for the admins, not charged.
    assert calls[1]["provider_cost_micros"] == IMAGE_2K_PRICE
    assert await ledger_charges(run) == [CHAT_CHARGE]
    assert await available(run) == 5_000_000 - CHAT_CHARGE
    assert await run.rows("SELECT id FROM balance_holds WHERE status = 'held'") == []
    stopped = final_texts(run)[-1]
    assert stopped.endswith(f"(Stopped. {format_usd(CHAT_CHARGE)} was charged for this answer.)")
    assert len(run.anthropic.message_requests()) == 1  # no tool result went back


async def test_a_stop_before_anything_was_charged_says_nothing_was(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="5.00", RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    run.anthropic.script(Hang())
    update_id = run.telegram.push_text(USER, "hello")
    await run.feed()
    await run.anthropic.wait_for_requests(1, timeout=20)
    run.telegram.push_text(USER, "/stop")
    await run.feed()
    assert await run.finished(update_id) == "answered"
    assert final_texts(run)[-1] == "(Stopped. Nothing was charged.)"
    assert await ledger_charges(run) == []


async def confirm_run(start: Start, balance_usd: str, **settings: str) -> InProcess:
    run = await start(STARTER_BALANCE_USD=balance_usd, CONFIRM_ABOVE_USD="0.20", **settings)
    four_k = tool_use_reply("generate_image", {"prompt": "a fox", "image_size": "4K"})
    four_k = Reply(content=four_k.content, stop_reason="tool_use", usage=USAGE)
    run.anthropic.script(four_k, Reply(content=[text_block("Sorry.")], usage=USAGE))
    return run


async def test_a_confirmation_the_balance_cannot_cover_is_not_asked(start: Start) -> None:
    run = await confirm_run(start, "0.28")  # above the 4K price, below its hold
    assert await run.turn(USER, "draw a 4K fox") == "answered"

    sent = [s for s in run.telegram.sent(USER) if s.method == "sendMessage"]
    assert not any(s.reply_markup for s in sent)  # no Confirm / Cancel question
    told = sent[0].text or ""
    left = 280_000 - CHAT_CHARGE
    assert told == (
        f"Your balance is too low for a 4K image: it costs {format_usd(IMAGE_4K_PRICE)} "
        f"({format_usd(IMAGE_4K_HOLD)} is set aside while it is made) and you have "
        f"{format_usd(left)} available. Nothing was charged for it. "
        "You can top up with Telegram Stars: /buy"
    )
    assert run.gemini.generate_requests() == []
    [_, second] = run.anthropic.message_requests()
    result = second["messages"][-1]["content"][0]
    assert result["is_error"] is True
    assert "Insufficient balance" in str(result["content"])
    assert "nothing was charged" in str(result["content"])
    assert await ledger_charges(run) == [CHAT_CHARGE, CHAT_CHARGE]
    assert [c["purpose"] for c in await run.rows("SELECT purpose FROM api_calls")] == [
        "chat",
        "chat",
    ]


async def test_a_confirmation_past_the_daily_limit_is_not_asked(start: Start) -> None:
    run = await confirm_run(start, "5.00")
    await run.turn(USER, "/limit 0.25")
    assert await run.turn(USER, "draw a 4K fox") == "answered"
    sent = [s for s in run.telegram.sent(USER) if s.method == "sendMessage"]
    assert not any(s.reply_markup for s in sent)
    assert any("daily spending limit" in (s.text or "") for s in sent)
    assert run.gemini.generate_requests() == []


async def test_a_confirmation_the_balance_covers_is_still_asked(start: Start) -> None:
    run = await confirm_run(start, "5.00")
    update_id = run.telegram.push_text(USER, "draw a 4K fox")
    await run.feed()
    deadline = asyncio.get_running_loop().time() + 20
    while not any(s.reply_markup for s in run.telegram.sent(USER)):
        assert asyncio.get_running_loop().time() < deadline, "no question"
        await asyncio.sleep(0.02)
    [question] = [s for s in run.telegram.sent(USER) if s.reply_markup]
    assert question.text == f"Making a 4K image costs {format_usd(IMAGE_4K_PRICE)}. Go ahead?"
    run.telegram.push_text(USER, "/stop")
    await run.feed()
    assert await run.finished(update_id) == "answered"


async def test_a_look_at_an_image_stopped_by_the_person_is_cancelled_and_not_charged(
    start: Start,
) -> None:
    run = await start(STARTER_BALANCE_USD="5.00", RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    run.anthropic.script(tool_use_reply("generate_image", {"prompt": "a cat"}), text_reply("Here."))
    run.gemini.script(image_reply())
    assert await run.turn(USER, "draw a cat") == "answered"
    [file] = await run.rows("SELECT id FROM user_files")
    before = await ledger_charges(run)
    look = Reply(
        content=[tool_use_block("analyze_image", {"file_id": str(file["id"])})],
        stop_reason="tool_use",
        usage=USAGE,
    )
    run.anthropic.script(look, Hang())
    update_id = run.telegram.push_text(USER, "what colour?")
    await run.feed()
    deadline = asyncio.get_running_loop().time() + 20
    while len(run.anthropic.message_requests()) < 4:  # until the vision call is under way
        assert asyncio.get_running_loop().time() < deadline, "no vision call"
        await asyncio.sleep(0.02)
    run.telegram.push_text(USER, "/stop")
    await run.feed()
    assert await run.finished(update_id) == "answered"

    [vision] = await run.rows(
        "SELECT status, charged_micros FROM api_calls WHERE purpose = 'analyze_image'"
    )
    assert (vision["status"], vision["charged_micros"]) == ("cancelled", 0)
    assert await ledger_charges(run) == [*before, CHAT_CHARGE]
    assert final_texts(run)[-1].endswith(
        f"(Stopped. {format_usd(CHAT_CHARGE)} was charged for this answer.)"
    )
    assert await run.rows("SELECT id FROM balance_holds WHERE status = 'held'") == []
