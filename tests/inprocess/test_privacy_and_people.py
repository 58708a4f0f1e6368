"""Money stays private in groups, the operator's texts follow /language, and a person whose row a
Stars payment created still gets the starter credit with their first message (once), through
aiogram's Dispatcher.feed_update in process."""

from __future__ import annotations

from pathlib import Path

from bot.services.payments import Order
from bot.telegram.handlers.preferences import LANGUAGE_CALLBACK_PREFIX
from tests.fakes.anthropic import text_reply, tool_use_reply
from tests.fakes.telegram import SentItem
from tests.inprocess.conftest import USER, InProcess, Start

GROUP = -1001234567890
BUILTIN_TEXTS = Path(__file__).resolve().parents[2] / "bot" / "texts" / "builtin"
SENT_PRIVATELY = "I've sent it to you in a private message."
START_FIRST = (
    "I can't send this to you privately yet: open a private chat with me first "
    "(https://t.me/fake_bot?start=private), press Start, then send the command again."
)


def messages(run: InProcess, chat_id: int) -> list[SentItem]:
    return [s for s in run.telegram.sent(chat_id) if s.method == "sendMessage"]


async def in_group(run: InProcess, command: str) -> str:
    update_id = run.telegram.push_text(USER, f"{command}@fake_bot", chat_id=GROUP)
    await run.feed()
    return await run.finished(update_id)


async def test_operator_texts_follow_the_language_choice(start: Start) -> None:
    run = await start()
    await run.turn(USER, "/language")  # Telegram says "en"
    [menu] = [s for s in messages(run, USER) if s.reply_markup]
    assert menu.message_id is not None
    chosen = run.telegram.push_callback(
        USER, f"{LANGUAGE_CALLBACK_PREFIX}ru", message_id=menu.message_id
    )
    await run.feed()
    await run.finished(chosen)
    for name in ("paysupport", "terms", "privacy"):
        await run.turn(USER, f"/{name}")
        russian = (BUILTIN_TEXTS / f"{name}.ru.md").read_text(encoding="utf-8").strip()
        assert messages(run, USER)[-1].text == russian


async def test_money_commands_in_a_group_answer_privately(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00", RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    run.telegram.add_chat(GROUP, title="Team")
    await run.turn(USER, "/help")  # a private chat with the bot exists
    for command in ("/balance", "/usage", "/limit"):
        before = len(messages(run, USER))
        assert await in_group(run, command) == "answered"
        note = messages(run, GROUP)[-1]
        assert note.text == SENT_PRIVATELY
        assert note.reply_to_message_id is not None
        [private] = messages(run, USER)[before:]
        assert "$1.00" in (private.text or "") or command != "/balance"
    assert not any("$" in (s.text or "") for s in messages(run, GROUP))


async def test_a_group_member_who_never_started_the_bot_gets_a_start_link(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="1.00")
    run.telegram.add_chat(GROUP, title="Team")
    assert await in_group(run, "/balance") == "answered"
    [note] = messages(run, GROUP)
    assert note.text == START_FIRST
    assert messages(run, USER) == []
    [refused] = [r for r in run.telegram.requests if r.error_code == 403]
    assert refused.description == "Forbidden: bot can't initiate conversation with a user"

    await run.turn(USER, "/start private")  # they open the link and press Start
    assert await in_group(run, "/balance") == "answered"
    assert messages(run, GROUP)[-1].text == SENT_PRIVATELY
    assert (messages(run, USER)[-1].text or "").startswith("Your balance: $1.00")


async def test_a_person_a_payment_created_gets_the_starter_credit_once(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="0.50", STAR_VALUE_USD="0.01")
    stranger = USER + 1
    run.telegram.push_successful_payment(
        stranger, 100, Order.new(stranger, 100).payload, deliver=False
    )
    report = await run.app.payments.reconcile(run.app.stars_api)
    assert report.credited == 1
    assert await ledger(run, stranger) == [("purchase", 1_000_000)]

    run.anthropic.script(text_reply("Hi."), text_reply("Again."))
    assert await run.turn(stranger, "hello") == "answered"
    assert await run.turn(stranger, "/balance") == "answered"
    assert await seen_again(run, stranger, "hello again") == "answered"
    kinds = [kind for kind, _ in await ledger(run, stranger)]
    assert kinds == ["purchase", "starter", "charge", "charge"]
    assert (await ledger(run, stranger))[1] == ("starter", 500_000)

    # Someone who wrote first gets the same, once, however often they are seen.
    run.anthropic.script(text_reply("Hello."))
    assert await run.turn(USER, "hello") == "answered"
    assert await seen_again(run, USER, "/balance") == "answered"
    assert [kind for kind, _ in await ledger(run, USER)] == ["starter", "charge"]


async def seen_again(run: InProcess, user_id: int, text: str) -> str:
    """A message under a changed name: the person's row is written again (not a cached read)."""
    update_id = run.telegram.push_text(user_id, text, first_name="Renamed")
    await run.feed()
    return await run.finished(update_id)


async def ledger(run: InProcess, user_id: int) -> list[tuple[str, int]]:
    rows = await run.rows(
        "SELECT kind, amount_micros FROM balance_operations WHERE user_id = :u ORDER BY id",
        u=user_id,
    )
    return [(str(r["kind"]), int(r["amount_micros"])) for r in rows]


async def test_claude_is_not_told_a_balance_it_would_repeat_in_a_group(start: Start) -> None:
    run = await start(STARTER_BALANCE_USD="0.12")  # the chat calls fit, the image's hold not
    run.telegram.add_chat(GROUP, title="Team")
    run.anthropic.script(
        tool_use_reply("generate_image", {"prompt": "a cat"}), text_reply("Top up first.")
    )
    mention = "@fake_bot draw a cat"
    update_id = run.telegram.push_text(
        USER, mention, chat_id=GROUP, entities=[{"type": "mention", "offset": 0, "length": 9}]
    )
    await run.feed()
    assert await run.finished(update_id) == "answered"
    result = run.anthropic.message_requests()[-1]["messages"][-1]["content"][0]
    assert "Insufficient balance" in str(result["content"])
    assert "available" not in str(result["content"])  # the balance is not named
    assert messages(run, GROUP)[-1].text == "Top up first."
