"""The fake Telegram server, driven by the real aiogram Bot over HTTP."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.filters import Command
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    InputMediaPhoto,
    Message,
    MessageEntity,
)
from PIL import Image

from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:TEST-fake-token-not-real"
CHAT = 42
MB = 1024 * 1024


def make_bot(tg: FakeTelegram, token: str = TOKEN) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    return Bot(token, session=session)


def spans(entities: list[MessageEntity] | None) -> list[tuple[str, int, int]]:
    return [(entity.type, entity.offset, entity.length) for entity in entities or []]


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        fake.add_chat(CHAT, first_name="Alice")
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    bot = make_bot(tg)
    yield bot
    await bot.session.close()


async def test_get_me_returns_the_bot_user(bot: Bot) -> None:
    me = await bot.get_me()

    assert me.is_bot is True
    assert me.id == 123456
    assert (me.first_name, me.username) == ("FakeBot", "fake_bot")


async def test_wrong_token_is_unauthorized(tg: FakeTelegram) -> None:
    intruder = make_bot(tg, token="654321:TEST-wrong-token")
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await intruder.get_me()
    finally:
        await intruder.session.close()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{tg.base_url}/bot654321:nope/getMe") as response,
    ):
        assert response.status == 401
        assert await response.json() == {
            "ok": False,
            "error_code": 401,
            "description": "Unauthorized",
        }


async def test_unknown_method_is_not_found_and_names_are_case_insensitive(
    tg: FakeTelegram, bot: Bot
) -> None:
    with pytest.raises(TelegramNotFound):
        await bot.get_chat(CHAT)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{tg.base_url}/bot{TOKEN}/noSuchMethod") as response:
            assert response.status == 404
            assert await response.json() == {
                "ok": False,
                "error_code": 404,
                "description": "Not Found: method not found",
            }
        async with http.get(f"{tg.base_url}/bot{TOKEN}/GETME") as response:
            assert response.status == 200
            assert (await response.json())["result"]["is_bot"] is True


async def test_dispatcher_polling_gets_pushed_update_and_confirms_it(
    tg: FakeTelegram, bot: Bot
) -> None:
    dp = Dispatcher()

    @dp.message(Command("start"))
    async def start(message: Message) -> None:
        await message.answer(f"hello {message.from_user.first_name if message.from_user else ''}")

    polling = asyncio.create_task(
        dp.start_polling(bot, polling_timeout=5, handle_signals=False, close_bot_session=False)
    )
    try:
        tg.push_text(CHAT, "/start", first_name="Alice")
        [reply] = await tg.wait_for_sent(CHAT, 1, timeout=5)
        await tg.wait_for(lambda: tg.pending_update_ids() == [], timeout=5)
    finally:
        await dp.stop_polling()
        await polling

    assert reply.text == "hello Alice"
    assert tg.calls("getMe")[0].ok is True
    assert len(tg.get_updates_times) >= 2


async def test_get_updates_confirms_by_offset_and_redelivers_a_pushed_duplicate(
    tg: FakeTelegram, bot: Bot
) -> None:
    first = tg.push_text(CHAT, "one")
    second = tg.push_text(CHAT, "two")

    updates = await bot.get_updates(timeout=0)
    assert [update.update_id for update in updates] == [first, second]
    assert updates[0].message is not None
    assert updates[0].message.text == "one"
    assert len(await bot.get_updates(timeout=0)) == 2  # not confirmed yet
    assert await bot.get_updates(offset=second + 1, timeout=0) == []
    assert tg.pending_update_ids() == []

    tg.push_update(
        {
            "update_id": first,
            "message": {
                "message_id": 1,
                "date": 1700000000,
                "chat": {"id": CHAT, "type": "private", "first_name": "Alice"},
                "from": {"id": CHAT, "is_bot": False, "first_name": "Alice"},
                "text": "one",
            },
        }
    )
    redelivered = await bot.get_updates(offset=second + 1, timeout=0)
    assert [update.update_id for update in redelivered] == [first]


async def test_long_poll_waits_and_wakes_when_an_update_is_pushed(
    tg: FakeTelegram, bot: Bot
) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for(lambda: len(tg.get_updates_times) == 1)
    assert not poll.done()

    update_id = tg.push_text(CHAT, "wake up")
    updates = await asyncio.wait_for(poll, 2)

    assert [update.update_id for update in updates] == [update_id]
    assert time.monotonic() - started < 2


async def test_empty_long_poll_returns_after_its_timeout(bot: Bot) -> None:
    started = time.monotonic()

    assert await bot.get_updates(timeout=1) == []
    assert 0.9 <= time.monotonic() - started < 3


async def test_a_newer_poll_terminates_the_waiting_one(tg: FakeTelegram, bot: Bot) -> None:
    waiting = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for(lambda: len(tg.get_updates_times) == 1)

    assert await bot.get_updates(timeout=0) == []
    with pytest.raises(TelegramConflictError):
        await waiting


async def test_pushed_commands_carry_a_bot_command_entity(tg: FakeTelegram, bot: Bot) -> None:
    tg.push_text(CHAT, "/topup@fake_bot 1 2")
    tg.push_text(CHAT, "/start")
    tg.push_text(CHAT, "say /start")

    messages = [update.message for update in await bot.get_updates(timeout=0)]

    assert messages[0] is not None
    assert spans(messages[0].entities) == [("bot_command", 0, 15)]
    assert messages[1] is not None
    assert spans(messages[1].entities) == [("bot_command", 0, 6)]
    assert messages[2] is not None
    assert messages[2].entities is None


async def test_send_message_with_entities_counts_utf16(tg: FakeTelegram, bot: Bot) -> None:
    text = "😀 bold"  # the emoji is two UTF-16 code units
    bold = MessageEntity(type="bold", offset=3, length=4)

    first = await bot.send_message(CHAT, text, entities=[bold])
    second = await bot.send_message(CHAT, "next")

    assert first.text == text
    assert spans(first.entities) == [("bold", 3, 4)]
    assert first.chat.id == CHAT
    assert first.from_user is not None
    assert first.from_user.is_bot
    assert second.message_id == first.message_id + 1
    [item, _] = tg.sent(CHAT)
    assert (item.method, item.text, item.message_id) == ("sendMessage", text, first.message_id)
    assert item.entities == [{"type": "bold", "offset": 3, "length": 4}]
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(
            CHAT, text, entities=[MessageEntity(type="bold", offset=3, length=5)]
        )


async def test_text_length_limits_are_utf16(tg: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(CHAT, "x" * 4096)
    await bot.send_message(CHAT, "😀" * 2048)
    with pytest.raises(TelegramBadRequest, match="Bad Request: message is too long"):
        await bot.send_message(CHAT, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="Bad Request: message is too long"):
        await bot.send_message(CHAT, "😀" * 2049)
    with pytest.raises(TelegramBadRequest, match="Bad Request: message text is empty"):
        await bot.send_message(CHAT, "")
    assert len(tg.sent(CHAT)) == 2


async def test_html_parse_mode_is_parsed_and_the_raw_text_recorded(
    tg: FakeTelegram, bot: Bot
) -> None:
    message = await bot.send_message(CHAT, "<b>bold</b> &lt;tag&gt;", parse_mode="HTML")

    assert message.text == "bold <tag>"
    assert spans(message.entities) == [("bold", 0, 4)]
    [item] = tg.sent(CHAT)
    assert (item.text, item.parse_mode, item.parsed_text) == (
        "<b>bold</b> &lt;tag&gt;",
        "HTML",
        "bold <tag>",
    )
    with pytest.raises(TelegramBadRequest, match="Can't find end tag corresponding to start tag"):
        await bot.send_message(CHAT, "<b>oops", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match='Unsupported start tag "br"'):
        await bot.send_message(CHAT, "a<br>b", parse_mode="HTML")


async def test_markdown_v2_needs_escaping(bot: Bot) -> None:
    message = await bot.send_message(
        CHAT, "*bold* and `x\\.y` done\\.\n>quoted", parse_mode="MarkdownV2"
    )

    assert message.text == "bold and x.y done.\nquoted"
    assert spans(message.entities) == [("bold", 0, 4), ("code", 9, 3), ("blockquote", 19, 6)]
    with pytest.raises(TelegramBadRequest, match=r"Character '\.' is reserved"):
        await bot.send_message(CHAT, "done.", parse_mode="MarkdownV2")


async def test_a_parse_mode_wins_over_entities_like_telegram(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="can't parse entities: Unsupported start tag"):
        await bot.send_message(
            CHAT,
            "a < b",
            entities=[MessageEntity(type="bold", offset=0, length=1)],
            parse_mode="HTML",
        )


async def test_send_photo_records_bytes_and_real_dimensions(tg: FakeTelegram, bot: Bot) -> None:
    data = png(160, 120)

    message = await bot.send_photo(CHAT, BufferedInputFile(data, "cat.png"), caption="a cat")

    assert message.photo is not None
    thumbnail, largest = message.photo
    assert (largest.width, largest.height, largest.file_size) == (160, 120, len(data))
    assert max(thumbnail.width, thumbnail.height) == 90
    assert message.caption == "a cat"
    [item] = tg.sent(CHAT)
    assert (item.method, item.photo, item.filename, item.mime) == (
        "sendPhoto",
        data,
        "cat.png",
        "image/png",
    )
    assert (item.caption, item.file_id) == ("a cat", largest.file_id)
    file = await bot.get_file(largest.file_id)
    assert file.file_size == len(data)
    downloaded = await bot.download(largest.file_id)
    assert downloaded is not None
    assert downloaded.read() == data
    resent = await bot.send_photo(CHAT, largest.file_id)
    assert resent.photo is not None
    assert resent.photo[-1].file_id == largest.file_id
    assert tg.sent(CHAT)[-1].photo == data


@pytest.mark.parametrize(("width", "height"), [(201, 10), (9001, 1000)])
async def test_photo_with_invalid_dimensions_is_rejected(
    tg: FakeTelegram, bot: Bot, width: int, height: int
) -> None:
    with pytest.raises(TelegramBadRequest, match="Bad Request: PHOTO_INVALID_DIMENSIONS"):
        await bot.send_photo(CHAT, BufferedInputFile(png(width, height, "1"), "x.png"))
    assert tg.sent(CHAT) == []


@pytest.mark.parametrize(("width", "height"), [(200, 10), (9000, 1000)])
async def test_photo_at_the_dimension_limits_is_accepted(bot: Bot, width: int, height: int) -> None:
    message = await bot.send_photo(CHAT, BufferedInputFile(png(width, height, "1"), "x.png"))

    assert message.photo is not None
    assert (message.photo[-1].width, message.photo[-1].height) == (width, height)


async def test_photo_over_10_mb_is_too_large(tg: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(TelegramEntityTooLarge):
        await bot.send_photo(CHAT, BufferedInputFile(b"\0" * (10 * MB + 1), "big.png"))
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(CHAT, BufferedInputFile(b"not an image", "x.png"))
    assert tg.sent(CHAT) == []


async def test_caption_limit(bot: Bot) -> None:
    await bot.send_photo(CHAT, BufferedInputFile(png(8, 8), "x.png"), caption="c" * 1024)
    with pytest.raises(TelegramBadRequest, match="Bad Request: message caption is too long"):
        await bot.send_photo(CHAT, BufferedInputFile(png(8, 8), "x.png"), caption="c" * 1025)


async def test_send_document_and_download_it(tg: FakeTelegram, bot: Bot) -> None:
    data = b"%PDF-1.4 fake report"

    message = await bot.send_document(CHAT, BufferedInputFile(data, "report.pdf"), caption="report")

    assert message.document is not None
    assert message.document.file_name == "report.pdf"
    assert message.document.mime_type == "application/pdf"
    assert message.document.file_size == len(data)
    [item] = tg.sent(CHAT)
    assert (item.method, item.document, item.filename, item.mime, item.caption) == (
        "sendDocument",
        data,
        "report.pdf",
        "application/pdf",
        "report",
    )
    downloaded = await bot.download(message.document.file_id)
    assert downloaded is not None
    assert downloaded.read() == data
    with pytest.raises(TelegramBadRequest, match="can't use file of type Document as Photo"):
        await bot.send_photo(CHAT, message.document.file_id)


async def test_send_media_group(tg: FakeTelegram, bot: Bot) -> None:
    first, second = png(10, 20), png(30, 40)

    messages = await bot.send_media_group(
        CHAT,
        [
            InputMediaPhoto(media=BufferedInputFile(first, "a.png"), caption="two cats"),
            InputMediaPhoto(media=BufferedInputFile(second, "b.png")),
        ],
    )

    assert len(messages) == 2
    assert messages[0].media_group_id is not None
    assert messages[0].media_group_id == messages[1].media_group_id
    assert messages[0].caption == "two cats"
    assert messages[1].photo is not None
    assert (messages[1].photo[-1].width, messages[1].photo[-1].height) == (30, 40)
    items = tg.sent(CHAT)
    assert [(item.method, item.photo) for item in items] == [
        ("sendMediaGroup", first),
        ("sendMediaGroup", second),
    ]
    with pytest.raises(TelegramBadRequest, match="can't be mixed"):
        await bot.send_media_group(
            CHAT,
            [
                InputMediaPhoto(media=BufferedInputFile(first, "a.png")),
                InputMediaDocument(media=BufferedInputFile(b"doc", "d.txt")),
            ],
        )


async def test_pushed_photo_is_downloadable_unless_over_20_mb(tg: FakeTelegram, bot: Bot) -> None:
    data = png(300, 200)
    tg.push_photo(CHAT, data, caption="look")
    tg.push_photo(CHAT, data, file_size=25 * MB)

    small, huge = [update.message for update in await bot.get_updates(timeout=0)]

    assert small is not None
    assert small.photo is not None
    assert small.caption == "look"
    assert (small.photo[-1].width, small.photo[-1].height) == (300, 200)
    downloaded = await bot.download(small.photo[-1].file_id)
    assert downloaded is not None
    assert downloaded.read() == data
    thumbnail = await bot.download(small.photo[0].file_id)
    assert thumbnail is not None
    with Image.open(thumbnail) as image:
        assert image.size == (90, 60)
    assert huge is not None
    assert huge.photo is not None
    assert huge.photo[-1].file_size == 25 * MB
    with pytest.raises(TelegramBadRequest, match="Bad Request: file is too big"):
        await bot.get_file(huge.photo[-1].file_id)


async def test_pushed_document_is_downloadable(tg: FakeTelegram, bot: Bot) -> None:
    tg.push_document(CHAT, b"hello", filename="a.txt", mime_type="text/plain", caption="file")

    [update] = await bot.get_updates(timeout=0)

    assert update.message is not None
    document = update.message.document
    assert document is not None
    assert (document.file_name, document.mime_type, document.file_size) == (
        "a.txt",
        "text/plain",
        5,
    )
    downloaded = await bot.download(document.file_id)
    assert downloaded is not None
    assert downloaded.read() == b"hello"


async def test_scripted_429_raises_retry_after_and_is_recorded(tg: FakeTelegram, bot: Bot) -> None:
    tg.fail("sendMessage", error_code=429, retry_after=3)
    tg.fail("sendMessage", error_code=429, retry_after=9, chat_id=7)

    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(CHAT, "hi")
    await bot.send_message(CHAT, "hi")

    assert caught.value.retry_after == 3
    calls = tg.calls("sendMessage")
    assert [(call.ok, call.error_code) for call in calls] == [(False, 429), (True, None)]
    assert calls[0].description == "Too Many Requests: retry after 3"
    assert len(tg.sent(CHAT)) == 1


async def test_scripted_429_has_telegrams_exact_body(tg: FakeTelegram) -> None:
    tg.fail("sendMessage", error_code=429, retry_after=5)

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{tg.base_url}/bot{TOKEN}/sendMessage", data={"chat_id": str(CHAT), "text": "x"}
        ) as response,
    ):
        assert response.status == 429
        assert await response.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 5",
            "parameters": {"retry_after": 5},
        }


async def test_scripted_server_errors(tg: FakeTelegram, bot: Bot) -> None:
    tg.fail("sendPhoto", error_code=502, times=2)
    photo = BufferedInputFile(png(4, 4), "x.png")

    for _ in range(2):
        with pytest.raises(TelegramServerError):
            await bot.send_photo(CHAT, photo)
    await bot.send_photo(CHAT, photo)

    assert [call.error_code for call in tg.calls("sendPhoto")] == [502, 502, None]


async def test_per_chat_rate_limit_gives_429_after_the_burst() -> None:
    async with FakeTelegram(token=TOKEN, per_chat_rate=1.0, per_chat_burst=3) as tg:
        tg.add_chat(CHAT)
        tg.add_chat(43)
        bot = make_bot(tg)
        try:
            for _ in range(3):
                await bot.send_message(CHAT, "x")
            with pytest.raises(TelegramRetryAfter) as caught:
                await bot.send_message(CHAT, "x")
            await bot.send_message(43, "another chat has its own budget")
        finally:
            await bot.session.close()

    assert caught.value.retry_after >= 1
    assert tg.rate_limited_count == 1
    assert len(tg.sent(CHAT)) == 3


async def test_global_rate_limit() -> None:
    async with FakeTelegram(token=TOKEN, global_rate=2.0, global_burst=2) as tg:
        for chat_id in (1, 2, 3):
            tg.add_chat(chat_id)
        bot = make_bot(tg)
        try:
            await bot.send_message(1, "x")
            await bot.send_message(2, "x")
            with pytest.raises(TelegramRetryAfter):
                await bot.send_message(3, "x")
        finally:
            await bot.session.close()

    assert tg.rate_limited_count == 1


async def test_edit_message_text(tg: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(CHAT, "draft")

    edited = await bot.edit_message_text(text="final", chat_id=CHAT, message_id=sent.message_id)

    assert isinstance(edited, Message)
    assert edited.text == "final"
    assert edited.edit_date is not None
    assert (tg.message(CHAT, sent.message_id) or {})["text"] == "final"
    assert [item.method for item in tg.sent(CHAT)] == ["sendMessage", "editMessageText"]
    with pytest.raises(
        TelegramBadRequest,
        match="message is not modified: specified new message content and reply markup are "
        "exactly the same as a current content and reply markup of the message",
    ):
        await bot.edit_message_text(text="final", chat_id=CHAT, message_id=sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(text="x", chat_id=CHAT, message_id=999)


async def test_drafts_and_chat_actions_are_recorded_only_when_asked(
    tg: FakeTelegram, bot: Bot
) -> None:
    await bot.send_chat_action(CHAT, "typing")
    await bot.send_message_draft(CHAT, draft_id=7, text="Thinking")
    await bot.send_message(CHAT, "done")

    assert [item.method for item in tg.sent(CHAT)] == ["sendMessage"]
    everything = tg.sent(CHAT, include_drafts=True, include_actions=True)
    assert [(item.method, item.action, item.draft_id) for item in everything] == [
        ("sendChatAction", "typing", None),
        ("sendMessageDraft", None, 7),
        ("sendMessage", None, None),
    ]
    with pytest.raises(TelegramBadRequest, match="draft_id"):
        await bot.send_message_draft(CHAT, draft_id=0, text="x")
    with pytest.raises(TelegramBadRequest, match="wrong parameter action"):
        await bot.send_chat_action(CHAT, "dancing")
    tg.add_chat(-100123)
    with pytest.raises(TelegramBadRequest, match="private"):
        await bot.send_message_draft(-100123, draft_id=1, text="x")


async def test_unknown_chat_is_not_found(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="Bad Request: chat not found"):
        await bot.send_message(777, "hello?")


async def test_delete_message(tg: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(CHAT, "bye")

    assert await bot.delete_message(CHAT, sent.message_id) is True
    assert tg.message(CHAT, sent.message_id) is None
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(CHAT, sent.message_id)


async def test_my_commands_round_trip(tg: FakeTelegram, bot: Bot) -> None:
    await bot.set_my_commands([BotCommand(command="start", description="Start")])

    assert [command.command for command in await bot.get_my_commands()] == ["start"]
    assert tg.commands() == [{"command": "start", "description": "Start"}]
    await bot.delete_my_commands()
    assert await bot.get_my_commands() == []
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad-Name", description="x")])


async def test_callback_query_round_trip(tg: FakeTelegram, bot: Bot) -> None:
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="A", callback_data="a")]]
    )
    sent = await bot.send_message(CHAT, "pick", reply_markup=keyboard)
    tg.push_callback(CHAT, "a", message_id=sent.message_id)

    [update] = await bot.get_updates(timeout=0)

    query = update.callback_query
    assert query is not None
    assert query.data == "a"
    assert await bot.answer_callback_query(query.id, text="ok") is True
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query.id)


async def test_wait_for_sent_times_out_with_what_was_sent(tg: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(CHAT, "only one")

    with pytest.raises(AssertionError, match="only one"):
        await tg.wait_for_sent(CHAT, 2, timeout=0.2)


async def test_restart_keeps_the_port(tg: FakeTelegram, bot: Bot) -> None:
    port = tg.port
    await tg.stop()
    with pytest.raises(TelegramNetworkError):
        await bot.get_me()

    await tg.start()

    assert tg.port == port
    assert (await bot.get_me()).username == "fake_bot"


async def test_push_text_options_shape_the_update(tg: FakeTelegram, bot: Bot) -> None:
    tg.push_text(7, "original", chat_id=-100555, username="bob")
    tg.push_text(7, "edited", chat_id=-100555, edited=True)
    tg.push_text(CHAT, "forwarded", forward=True)
    tg.push_text(CHAT, "answer", reply_to=3)

    group, edit, forwarded, reply = await bot.get_updates(timeout=0)

    assert group.message is not None
    assert (group.message.chat.type, group.message.chat.id) == ("supergroup", -100555)
    assert group.message.from_user is not None
    assert group.message.from_user.username == "bob"
    assert edit.edited_message is not None
    assert edit.edited_message.message_id == group.message.message_id
    assert edit.edited_message.text == "edited"
    assert forwarded.message is not None
    assert forwarded.message.forward_origin is not None
    assert reply.message is not None
    assert reply.message.reply_to_message is not None
    assert reply.message.reply_to_message.message_id == 3


async def test_allowed_updates_filters_delivery(tg: FakeTelegram, bot: Bot) -> None:
    tg.push_text(CHAT, "ignored")
    sent = await bot.send_message(CHAT, "pick")
    callback = tg.push_callback(CHAT, "a", message_id=sent.message_id)

    updates = await bot.get_updates(timeout=0, allowed_updates=["callback_query"])

    assert [update.update_id for update in updates] == [callback]


async def test_json_and_query_bodies_are_understood(tg: FakeTelegram) -> None:
    url = f"{tg.base_url}/bot{TOKEN}/sendMessage"
    async with aiohttp.ClientSession() as http:
        body = {
            "chat_id": CHAT,
            "text": "json",
            "entities": [{"type": "bold", "offset": 0, "length": 4}],
        }
        async with http.post(url, json=body) as response:
            assert (await response.json())["result"]["entities"][0]["type"] == "bold"
        async with http.get(url, params={"chat_id": str(CHAT), "text": "query"}) as response:
            assert (await response.json())["result"]["text"] == "query"
        async with http.post(
            url, data={"chat_id": str(CHAT), "text": "x", "entities": "{oops"}
        ) as response:
            assert response.status == 400
            assert (await response.json())["description"].startswith("Bad Request: can't parse")
    assert [item.text for item in tg.sent(CHAT)] == ["json", "query"]


async def test_empty_draft_is_a_thinking_placeholder(tg: FakeTelegram, bot: Bot) -> None:
    assert await bot.send_message_draft(CHAT, draft_id=3) is True

    [draft] = tg.sent(CHAT, include_drafts=True)
    assert (draft.method, draft.draft_id, draft.text) == ("sendMessageDraft", 3, None)
