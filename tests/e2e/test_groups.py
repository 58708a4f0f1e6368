"""Groups end to end (design section 11), with updates built as Telegram sends them.

The real bot process parses every group update with aiogram; the fake Telegram knows group
chats, forum topics and message_thread_id (400 for a thread that is not a topic) and limits
messages per group per minute.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.session import create_engine
from bot.services.money import format_usd
from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import (
    STARTER_MICROS,
    balance,
    poll_until,
    rows,
    wait_update_finished,
)
from tests.fakes.anthropic import FakeAnthropic, Reply, text_block, tool_use_block
from tests.fakes.gemini import FakeGemini, image_reply
from tests.fakes.telegram import FakeTelegram, SentItem

GROUP = -1001234567890
ALICE, BOB, CAROL, ADMIN = 74_001, 74_002, 74_003, 74_009
BOT_MENTION = "@fake_bot"
USAGE = {
    "input_tokens": 1000,
    "output_tokens": 200,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
CHARGE = 4000  # Sonnet 5.5: 1000 x 2 USD + 200 x 10 USD per MTok, in micro-USD


def reply(text: str) -> Reply:
    return Reply(content=[text_block(text)], usage=USAGE)


def mention(text: str) -> tuple[str, list[dict[str, Any]]]:
    """`@fake_bot <text>` with the `mention` entity Telegram adds."""
    return f"{BOT_MENTION} {text}", [{"type": "mention", "offset": 0, "length": len(BOT_MENTION)}]


def answers(telegram: FakeTelegram, chat_id: int = GROUP) -> list[SentItem]:
    return [i for i in telegram.sent(chat_id) if i.method == "sendMessage"]


async def next_answer(telegram: FakeTelegram, before: int, chat_id: int = GROUP) -> SentItem:
    await telegram.wait_for(lambda: len(answers(telegram, chat_id)) > before, timeout=20)
    return answers(telegram, chat_id)[before]


def claude_requests(anthropic_fake: FakeAnthropic) -> list[dict[str, Any]]:
    return [r.json for r in anthropic_fake.requests if r.path.endswith("/v1/messages")]


def texts_of(message: dict[str, Any]) -> list[str]:
    return [b["text"] for b in message["content"] if b.get("type") == "text"]


async def test_group_answers_when_addressed_and_the_addressing_person_pays(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, database_url: str
) -> None:
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    telegram.add_chat(GROUP, title="Team")
    engine = create_engine(database_url)
    try:
        ignored = telegram.push_text(ALICE, "hello everyone", chat_id=GROUP)
        assert await wait_update_finished(telegram, engine, ignored) == "ignored"
        other_bot = telegram.push_text(ALICE, "/help@other_bot", chat_id=GROUP)
        assert await wait_update_finished(telegram, engine, other_bot) == "ignored"

        # 1. Alice mentions the bot: the answer replies to her message; she pays.
        anthropic_fake.script(reply("Four."))
        text, entities = mention("what is 2+2?")
        first = telegram.push_text(ALICE, text, chat_id=GROUP, entities=entities)
        answer = await next_answer(telegram, 0)
        alice_message = telegram.message(GROUP, answer.reply_to_message_id or 0)
        assert answer.text == "Four."
        assert alice_message is not None and alice_message["from"]["id"] == ALICE
        assert answer.message_thread_id is None
        assert await wait_update_finished(telegram, engine, first) == "answered"

        # 2. Bob replies to the bot's answer: same conversation, Bob pays, names for Claude.
        anthropic_fake.script(reply("Twelve."))
        second = telegram.push_text(
            BOB,
            "and times 3?",
            chat_id=GROUP,
            reply_to=answer.message_id,
            first_name="Bob",
            username="bob",
        )
        assert (await next_answer(telegram, 1)).text == "Twelve."
        assert await wait_update_finished(telegram, engine, second) == "answered"
        body = claude_requests(anthropic_fake)[-1]
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert "[Message from Alice (@alice)]" in texts_of(body["messages"][0])
        assert "[Message from Bob (@bob)]" in texts_of(body["messages"][2])
        assert texts_of(body["messages"][2])[-1] == "and times 3?"

        # 3. Carol (no username) addresses the bot with a text_mention entity.
        anthropic_fake.script(reply("Hi Carol."))
        bot_user = telegram.bot_user
        third = telegram.push_text(
            CAROL,
            "FakeBot say hi",
            chat_id=GROUP,
            entities=[{"type": "text_mention", "offset": 0, "length": 7, "user": bot_user}],
            first_name="Carol",
            username=None,
        )
        assert (await next_answer(telegram, 2)).text == "Hi Carol."
        assert await wait_update_finished(telegram, engine, third) == "answered"

        await _assert_group_ledger(engine)
        sent = telegram.sent(GROUP, include_drafts=True, include_actions=True)
        assert not [i for i in sent if i.method == "sendMessageDraft"]  # drafts: private only
        assert [i for i in sent if i.method == "sendChatAction"]
    finally:
        await engine.dispose()


async def _assert_group_ledger(engine: AsyncEngine) -> None:
    for user in (ALICE, BOB, CAROL):
        assert await balance(engine, user) == STARTER_MICROS - CHARGE, user
    calls = await rows(engine, "SELECT user_id, charged_micros FROM api_calls ORDER BY id")
    assert [tuple(c) for c in calls] == [(ALICE, CHARGE), (BOB, CHARGE), (CAROL, CHARGE)]
    conversations = await rows(
        engine, "SELECT user_id, chat_id, message_thread_id FROM conversations"
    )
    assert [tuple(c) for c in conversations] == [(None, GROUP, None)]
    senders = await rows(engine, "SELECT role, sender_id FROM messages ORDER BY id")
    assert [tuple(s) for s in senders] == [
        ("user", ALICE),
        ("assistant", None),
        ("user", BOB),
        ("assistant", None),
        ("user", CAROL),
        ("assistant", None),
    ]


async def test_forum_topics_have_their_own_conversations_and_answers_stay_in_them(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, database_url: str
) -> None:
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    telegram.add_chat(GROUP, title="Forum", is_forum=True)
    telegram.add_topic(GROUP, 5)
    plain_group = -4001
    telegram.add_chat(plain_group, title="Plain")
    engine = create_engine(database_url)
    try:
        anthropic_fake.script(reply("In topic five."))
        text, entities = mention("hello from topic 5")
        telegram.push_text(ALICE, text, chat_id=GROUP, entities=entities, message_thread_id=5)
        answer = await next_answer(telegram, 0)
        assert (answer.text, answer.message_thread_id) == ("In topic five.", 5)

        anthropic_fake.script(reply("In General."))
        text, entities = mention("hello from General")
        telegram.push_text(ALICE, text, chat_id=GROUP, entities=entities)
        answer = await next_answer(telegram, 1)
        assert (answer.text, answer.message_thread_id) == ("In General.", None)
        assert len(claude_requests(anthropic_fake)[-1]["messages"]) == 1  # not topic 5's

        # A reply thread in a group without topics carries a message_thread_id that is not a
        # topic: the answer must not name it (Telegram: "message thread not found").
        anthropic_fake.script(reply("In a reply thread."))
        text, entities = mention("in a thread")
        update_id = telegram.push_text(
            BOB, text, chat_id=plain_group, entities=entities, message_thread_id=77
        )
        answer = await next_answer(telegram, 0, plain_group)
        assert (answer.text, answer.message_thread_id) == ("In a reply thread.", None)
        assert await wait_update_finished(telegram, engine, update_id) == "answered"

        conversations = await rows(
            engine,
            "SELECT chat_id, message_thread_id FROM conversations WHERE user_id IS NULL "
            "ORDER BY id",
        )
        assert [tuple(c) for c in conversations] == [(GROUP, 5), (GROUP, None), (plain_group, None)]
    finally:
        await engine.dispose()


async def test_group_commands_private_only_ones_and_new(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, database_url: str
) -> None:
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000", ADMIN_USER_IDS=str(ADMIN))
    telegram.add_chat(GROUP, title="Team")
    engine = create_engine(database_url)
    try:
        telegram.push_text(ALICE, "/help@fake_bot", chat_id=GROUP)
        assert (await next_answer(telegram, 0)).text.startswith("What I can do")  # type: ignore[union-attr]
        telegram.push_text(ALICE, "/buy@fake_bot", chat_id=GROUP)
        assert (await next_answer(telegram, 1)).text == (
            "That works only in a private chat with me: open one and send it there."
        )
        telegram.push_text(ADMIN, "/stats@fake_bot", chat_id=GROUP)
        assert (await next_answer(telegram, 2)).text == (
            "That works only in a private chat with me: open one and send it there."
        )
        telegram.push_text(ALICE, "/stats@fake_bot", chat_id=GROUP)
        assert (await next_answer(telegram, 3)).text == (
            "I don't know that command. /help lists what I can do."
        )

        anthropic_fake.script(reply("First."), reply("Fresh."))
        text, entities = mention("remember 7")
        telegram.push_text(ALICE, text, chat_id=GROUP, entities=entities)
        assert (await next_answer(telegram, 4)).text == "First."
        telegram.push_text(BOB, "/new@fake_bot", chat_id=GROUP, first_name="Bob")
        assert (await next_answer(telegram, 5)).text == "Started a fresh conversation. What's next?"
        text, entities = mention("what did I say?")
        telegram.push_text(ALICE, text, chat_id=GROUP, entities=entities)
        assert (await next_answer(telegram, 6)).text == "Fresh."
        assert len(claude_requests(anthropic_fake)[-1]["messages"]) == 1
    finally:
        await engine.dispose()


async def test_no_balance_in_a_group_gets_one_line_and_groups_off_ignores_groups(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, database_url: str
) -> None:
    process = await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000", STARTER_BALANCE_USD="0")
    telegram.add_chat(GROUP, title="Team")
    engine = create_engine(database_url)
    try:
        text, entities = mention("draw me something")
        update_id = telegram.push_text(ALICE, text, chat_id=GROUP, entities=entities)
        answer = await next_answer(telegram, 0)
        assert answer.text == (
            "Your balance is too low for this. Open a private chat with me and use /buy to "
            "add funds."
        )
        assert answer.reply_to_message_id is not None
        assert await wait_update_finished(telegram, engine, update_id) == "failed"
        assert claude_requests(anthropic_fake) == []
        assert await balance(engine, ALICE) == 0

        await process.stop()
        await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000", GROUPS="off")
        ignored = telegram.push_text(ALICE, text, chat_id=GROUP, entities=entities)
        command = telegram.push_text(ALICE, "/help@fake_bot", chat_id=GROUP)
        for update in (ignored, command):
            assert await wait_update_finished(telegram, engine, update) == "ignored"
        assert len(answers(telegram)) == 1
        telegram.push_text(ALICE, "/help")  # private chats still work
        await poll_until(lambda: _has_answer(telegram, ALICE), 20)
    finally:
        await engine.dispose()


async def _has_answer(telegram: FakeTelegram, chat_id: int) -> bool:
    return bool(answers(telegram, chat_id))


async def test_the_fake_drops_unaddressed_group_messages_in_privacy_mode() -> None:
    async with FakeTelegram(privacy=True) as telegram:
        telegram.add_chat(GROUP)
        assert telegram.push_text(ALICE, "just chatting", chat_id=GROUP) == 0
        assert telegram.push_text(ALICE, "/help@fake_bot", chat_id=GROUP) > 0
        assert telegram.dropped_by_privacy == 1


async def test_an_image_asked_for_in_a_topic_goes_to_that_topic_and_the_asker_pays(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    database_url: str,
) -> None:
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000", STARTER_BALANCE_USD="5.00")
    telegram.add_chat(GROUP, title="Forum", is_forum=True)
    telegram.add_topic(GROUP, 9)
    engine = create_engine(database_url)
    try:
        anthropic_fake.script(
            Reply(
                content=[tool_use_block("generate_image", {"prompt": "a cat", "image_size": "1K"})],
                stop_reason="tool_use",
                usage=USAGE,
            ),
            reply("Here it is."),
        )
        gemini_fake.script(image_reply(text="A cat."))
        text, entities = mention("draw a cat")
        update_id = telegram.push_text(
            BOB, text, chat_id=GROUP, entities=entities, message_thread_id=9, first_name="Bob"
        )
        assert await wait_update_finished(telegram, engine, update_id) == "answered"
        [photo] = [i for i in telegram.sent(GROUP) if i.method == "sendPhoto"]
        assert photo.message_thread_id == 9
        assert [(a.text, a.message_thread_id) for a in answers(telegram)] == [("Here it is.", 9)]
        calls = await rows(
            engine, "SELECT user_id, purpose, charged_micros FROM api_calls ORDER BY id"
        )
        assert {c[0] for c in calls} == {BOB}
        charged = sum(int(c[2]) for c in calls)
        assert [c[1] for c in calls] == ["chat", "generate_image", "chat"]
        assert (int(calls[0][2]), int(calls[2][2])) == (CHARGE, CHARGE)
        assert int(calls[1][2]) > 0
        assert await balance(engine, BOB) == 5_000_000 - charged
        [file_owner] = await rows(engine, "SELECT user_id FROM user_files")
        assert file_owner[0] == BOB
    finally:
        await engine.dispose()


async def test_stop_in_a_group_stops_only_the_askers_turn(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, database_url: str
) -> None:
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    telegram.add_chat(GROUP, title="Team")
    engine = create_engine(database_url)
    try:
        long_text = " ".join(f"word{i}" for i in range(600))
        anthropic_fake.script(
            Reply(content=[text_block(long_text)], usage=USAGE, tokens_per_second=20)
        )
        text, entities = mention("tell a long story")
        asked = telegram.push_text(ALICE, text, chat_id=GROUP, entities=entities)
        await anthropic_fake.wait_for_requests(1, timeout=20)
        telegram.push_text(BOB, "/stop@fake_bot", chat_id=GROUP, first_name="Bob")
        assert (await next_answer(telegram, 0)).text == "Nothing is running right now."
        telegram.push_text(ALICE, "/stop@fake_bot", chat_id=GROUP)
        assert await wait_update_finished(telegram, engine, asked) == "answered"
        stopped = await next_answer(telegram, 1)
        assert stopped.reply_to_message_id is not None
        [call] = await rows(engine, "SELECT user_id, status, charged_micros FROM api_calls")
        assert (call[0], call[1]) == (ALICE, "cancelled")
        charged = f"{format_usd(int(call[2]))} was charged for this answer" if call[2] else ""
        assert (stopped.text or "").endswith(f"(Stopped. {charged or 'Nothing was charged'}.)")
        assert await balance(engine, ALICE) == STARTER_MICROS - int(call[2])
        assert await balance(engine, BOB) == STARTER_MICROS
    finally:
        await engine.dispose()
