"""Voice notes, audio, PDFs, text files, read_document and the web tools, end to end through the
real bot process against the fakes, with exact charges; hostile inputs cost nothing."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.services.pricing import apply_markup
from tests.e2e.conftest import StartBot
from tests.e2e.test_images import balance, rows, wait_turn
from tests.fakes.anthropic import (
    FakeAnthropic,
    overloaded,
    pause_turn_reply,
    text_reply,
    tool_use_reply,
    web_search_reply,
)
from tests.fakes.gemini import FakeGemini, TranscriptReply
from tests.fakes.telegram import FakeTelegram
from tests.media_samples import (
    encrypted_pdf,
    nested_pdf_bomb,
    ogg_not_audio,
    ogg_opus,
    page_count_bomb,
    pdf,
)

USER = 5151
OTHER = 5252
STARTER_MICROS = 5_000_000
MARKUP = Decimal("1.5")
MIB = 1024 * 1024
SONNET = (2_000_000, 10_000_000, 2_500_000, 100_000)  # input, output, cache write, cache read
FLASH = (1_500_000, 9_000_000)


def claude_cost(call: Any, *, searches: int = 0) -> int:
    weighted = (
        call["input_tokens"] * SONNET[0]
        + call["output_tokens"] * SONNET[1]
        + call["cache_write_tokens"] * SONNET[2]
        + call["cache_read_tokens"] * SONNET[3]
    )
    return math.ceil(weighted / 1_000_000) + searches * 10_000


async def calls(engine: AsyncEngine, user_id: int) -> list[Any]:
    return await rows(engine, "SELECT * FROM api_calls WHERE user_id = :u ORDER BY id", u=user_id)


def last_user_blocks(anthropic_fake: FakeAnthropic) -> list[dict[str, Any]]:
    body = anthropic_fake.message_requests()[-1]
    users = [m for m in body["messages"] if m["role"] == "user"]
    content = users[-1]["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


async def test_voice_note_is_transcribed_charged_and_answered(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(PRICE_MARKUP="1.5", STARTER_BALANCE_USD="5.00", ANTHROPIC_MAX_RETRIES="0")
    gemini_fake.script(TranscriptReply("What is the capital of France?"))
    anthropic_fake.script(text_reply("Paris."))
    update = telegram.push_voice(USER, ogg_opus(3), duration=3, caption="short answer please")
    assert await wait_turn(engine, update) == "answered"

    # The person sees what was heard, then the answer.
    [reply] = [s.text or "" for s in telegram.sent(USER) if s.method == "sendMessage"]
    assert reply.startswith("🎤") and "What is the capital of France?" in reply
    assert reply.rstrip().endswith("Paris.")

    # Gemini got the audio inline as audio/ogg and reported AUDIO tokens (3 s x 32).
    [request] = gemini_fake.requests
    assert request.model == "gemini-3.5-flash"
    assert [a.mime_type for a in request.audio] == ["audio/ogg"]
    assert request.audio[0].tokens == 96

    # The transcript (then the caption) is the person's text for Claude.
    texts = [b.get("text", "") for b in last_user_blocks(anthropic_fake)]
    assert texts[-1] == "What is the capital of France?\n\nshort answer please"

    transcribe, chat = await calls(engine, USER)
    assert (transcribe["purpose"], transcribe["provider"], transcribe["status"]) == (
        "transcribe",
        "google",
        "ok",
    )
    prompt_text_tokens = sum(math.ceil(len(t) / 4) for t in request.texts)
    assert transcribe["input_tokens"] == 96 + prompt_text_tokens
    assert transcribe["output_tokens"] == math.ceil(len("What is the capital of France?") / 4)
    cost = math.ceil(
        (transcribe["input_tokens"] * FLASH[0] + transcribe["output_tokens"] * FLASH[1]) / 1_000_000
    )
    assert transcribe["provider_cost_micros"] == cost
    assert transcribe["charged_micros"] == apply_markup(cost, MARKUP)
    assert chat["purpose"] == "chat"
    assert chat["charged_micros"] == apply_markup(claude_cost(chat), MARKUP)
    spent = transcribe["charged_micros"] + chat["charged_micros"]
    assert await balance(engine, USER) == STARTER_MICROS - spent

    [stored] = await rows(engine, "SELECT * FROM user_files WHERE user_id = :u", u=USER)
    assert stored["kind"] == "voice" and stored["mime_type"] == "audio/ogg"
    assert stored["metadata"]["transcript"] == "What is the capital of France?"
    assert stored["api_call_id"] == transcribe["id"]
    holds = await rows(
        engine, "SELECT status FROM balance_holds WHERE user_id = :u AND status = 'held'", u=USER
    )
    assert holds == []

    # Claude busy after a transcription: the reply says what the transcription cost.
    gemini_fake.script(TranscriptReply("And of Spain?"))
    anthropic_fake.script(overloaded())
    update = telegram.push_voice(USER, ogg_opus(2), duration=2)
    assert (await wait_turn(engine, update)).startswith("failed")
    second = (await calls(engine, USER))[-2]
    assert second["purpose"] == "transcribe" and second["charged_micros"] > 0
    reply = [s.text or "" for s in telegram.sent(USER) if s.method == "sendMessage"][-1]
    assert "nothing was charged" not in reply.lower()
    assert "only the transcription of your voice message was charged (" in reply
    assert await balance(engine, USER) == STARTER_MICROS - spent - second["charged_micros"]


async def test_pdf_text_file_and_read_document(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot(PRICE_MARKUP="1.5", STARTER_BALANCE_USD="5.00")

    # A PDF: uploaded to the Files API and sent as a document block with a file source.
    anthropic_fake.script(text_reply("It is a two-page report."))
    report = pdf(2)
    update = telegram.push_document(
        USER, report, filename="report.pdf", mime_type="application/pdf", caption="what is it?"
    )
    assert await wait_turn(engine, update) == "answered"
    blocks = last_user_blocks(anthropic_fake)
    [document] = [b for b in blocks if b["type"] == "document"]
    uploaded = anthropic_fake.files[document["source"]["file_id"]]
    assert uploaded.mime_type == "application/pdf" and uploaded.data == report
    assert document["title"] == "report.pdf"
    [pdf_row] = await rows(engine, "SELECT * FROM user_files WHERE kind = 'pdf'")
    assert pdf_row["metadata"]["pages"] == 2 and pdf_row["claude_file_id"] == uploaded.id

    # A cp1251 text file: decoded and given as text with its file name.
    russian = "Привет! Это заметки о проекте, записанные в старой кодировке Windows."
    anthropic_fake.script(text_reply("Notes about a project."))
    update = telegram.push_document(
        USER, russian.encode("cp1251"), filename="notes.txt", mime_type="text/plain"
    )
    assert await wait_turn(engine, update) == "answered"
    texts = [b.get("text", "") for b in last_user_blocks(anthropic_fake)]
    assert any(t.startswith('<file name="notes.txt">') and russian in t for t in texts)
    # The files note lists the PDF for the model.
    assert any("PDF" in t and f"file_id {pdf_row['id']}" in t for t in texts)

    # read_document brings the PDF back; another person's id is "file not found".
    anthropic_fake.script(
        tool_use_reply(
            "read_document", {"file_id": str(pdf_row["id"]), "question": "page 2?"}, id="toolu_rd"
        ),
        text_reply("Page 2 says Hello PDF 2."),
        text_reply("Page 2 greets you."),
    )
    update = telegram.push_text(USER, "what was on page 2 of the report?")
    assert await wait_turn(engine, update) == "answered"
    reader_request = anthropic_fake.message_requests()[-2]
    [reader_doc] = [b for b in reader_request["messages"][0]["content"] if b["type"] == "document"]
    assert reader_doc["source"] == {"type": "file", "file_id": uploaded.id}

    anthropic_fake.script(
        tool_use_reply("read_document", {"file_id": str(pdf_row["id"])}, id="toolu_other"),
        text_reply("I can't find that file."),
    )
    update = telegram.push_text(OTHER, "read file", first_name="Bob")
    assert await wait_turn(engine, update) == "answered"
    result = [
        b
        for m in anthropic_fake.message_requests()[-1]["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    ][-1]
    assert result["is_error"] is True and "file not found" in str(result["content"])

    chat_calls = await calls(engine, USER)
    purposes = [c["purpose"] for c in chat_calls]
    assert purposes == ["chat", "chat", "chat", "read_document", "chat"]
    for call in chat_calls:
        assert call["charged_micros"] == apply_markup(claude_cost(call), MARKUP)
    assert await balance(engine, USER) == STARTER_MICROS - sum(
        c["charged_micros"] for c in chat_calls
    )
    assert [c["purpose"] for c in await calls(engine, OTHER)] == ["chat", "chat"]


HOSTILE_REPLIES = {
    "voice_19_9_mb": "too long",
    "voice_19_9_mb_claiming_30_s": "too long",
    "voice_20_1_mb": "too large",
    "voice_zero_bytes": "empty",
    "ogg_not_audio": "doesn't contain audio",
    "pdf_nested_bomb": "too complex",
    "pdf_page_count_bomb": "too many pages",
    "pdf_password": "password",
    "text_with_nul": "binary",
    "text_50_mb_one_line": "too large",
}


async def test_hostile_inputs_get_plain_replies_and_cost_nothing(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD="5.00", MERGE_WINDOW_SECONDS="0")
    gemini_fake.set_default(TranscriptReply("never used"))
    users = {name: 9100 + i for i, name in enumerate(HOSTILE_REPLIES)}
    big_voice = ogg_opus(4980, frame_bytes=80)
    assert 19 * MIB < len(big_voice) <= int(19.9 * MIB)
    pushes = {
        # 19.9 MB is about 80 minutes of Opus: refused from Telegram's duration, not downloaded.
        "voice_19_9_mb": lambda u: telegram.push_voice(u, big_voice, duration=4980),
        # The same file claiming 30 s: downloaded, and refused by the duration in its own pages.
        "voice_19_9_mb_claiming_30_s": lambda u: telegram.push_voice(u, big_voice, duration=30),
        "voice_20_1_mb": lambda u: telegram.push_voice(
            u, b"OggS", duration=60, file_size=int(20.1 * MIB)
        ),
        "voice_zero_bytes": lambda u: telegram.push_voice(u, b"", duration=0),
        "ogg_not_audio": lambda u: telegram.push_voice(u, ogg_not_audio(), duration=2),
        "pdf_nested_bomb": lambda u: telegram.push_document(
            u, nested_pdf_bomb(), filename="bomb.pdf", mime_type="application/pdf"
        ),
        "pdf_page_count_bomb": lambda u: telegram.push_document(
            u, page_count_bomb(), filename="pages.pdf", mime_type="application/pdf"
        ),
        "pdf_password": lambda u: telegram.push_document(
            u, encrypted_pdf(), filename="secret.pdf", mime_type="application/pdf"
        ),
        "text_with_nul": lambda u: telegram.push_document(
            u, b"looks like text\x00\x01\x02" * 50, filename="data.txt", mime_type="text/plain"
        ),
        "text_50_mb_one_line": lambda u: telegram.push_document(
            u, b"a" * (50 * MIB), filename="line.txt", mime_type="text/plain"
        ),
    }
    updates = {name: push(users[name]) for name, push in pushes.items()}
    statuses = {name: await wait_turn(engine, u, timeout=60) for name, u in updates.items()}

    for name, words in HOSTILE_REPLIES.items():
        user = users[name]
        replies = [s.text or "" for s in telegram.sent(user) if s.method == "sendMessage"]
        assert len(replies) == 1, (name, replies)
        assert words in replies[0], (name, replies[0])
        assert statuses[name].startswith("failed"), (name, statuses[name])
        assert await balance(engine, user) == STARTER_MICROS, name
    assert await rows(engine, "SELECT id FROM api_calls") == []
    assert await rows(engine, "SELECT id FROM user_files") == []
    assert await rows(engine, "SELECT id FROM balance_holds") == []
    assert gemini_fake.requests == [] and anthropic_fake.message_requests() == []
    assert anthropic_fake.files == {}

    # Refused from Telegram's numbers alone: never downloaded.
    downloaded = {c.params.get("file_id") for c in telegram.calls("getFile")}
    assert len(downloaded) == len(HOSTILE_REPLIES) - 4  # not the long, big, empty or 50 MB ones


async def test_web_search_is_charged_per_search_and_pause_turn_continues(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    await start_bot(PRICE_MARKUP="1.5", STARTER_BALANCE_USD="5.00", WEB_TOOLS="on")
    results = [("https://example.com/weather", "Weather today"), ("https://example.org/b", "B")]
    anthropic_fake.script(web_search_reply("weather Paris", results, "It is sunny in Paris."))
    update = telegram.push_text(USER, "weather in Paris?")
    assert await wait_turn(engine, update) == "answered"
    tools = anthropic_fake.message_requests()[-1]["tools"]
    assert {"type": "web_search_20250305", "name": "web_search", "max_uses": 5} in tools
    assert {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 5} in tools
    [answer] = [s for s in telegram.sent(USER) if s.method == "sendMessage"]
    assert "It is sunny in Paris." in (answer.text or "")
    links = [e for e in answer.entities or [] if e["type"] == "text_link"]
    assert [e["url"] for e in links] == ["https://example.com/weather"]
    [call] = await calls(engine, USER)
    assert (call["web_search_requests"], call["web_fetch_requests"]) == (1, 0)
    assert call["provider_cost_micros"] == claude_cost(call, searches=1)
    assert call["charged_micros"] == apply_markup(claude_cost(call, searches=1), MARKUP)

    # A paused turn is continued with the partial answer; both calls are charged.
    anthropic_fake.script(
        pause_turn_reply("paris museums", "paris parks"),
        web_search_reply("paris cafes", results, "Visit the Louvre."),
    )
    update = telegram.push_text(USER, "plan my day in Paris")
    assert await wait_turn(engine, update) == "answered"
    paused_body, continued_body = anthropic_fake.message_requests()[-2:]
    last = continued_body["messages"][-1]
    assert last["role"] == "assistant"
    assert [b["type"] for b in last["content"]] == [
        "server_tool_use",
        "web_search_tool_result",
        "server_tool_use",
        "web_search_tool_result",
    ]
    assert paused_body["messages"][-1]["role"] == "user"
    # Five searches per turn: the continuation may search three more times.
    assert [t.get("max_uses") for t in continued_body["tools"][:2]] == [3, 5]
    _, paused, continued = await calls(engine, USER)
    assert (paused["web_search_requests"], continued["web_search_requests"]) == (2, 1)
    for c, searches in ((paused, 2), (continued, 1)):
        assert c["charged_micros"] == apply_markup(claude_cost(c, searches=searches), MARKUP)

    # /help tells what the new inputs and a search cost.
    update = telegram.push_text(USER, "/help")
    await telegram.wait_for(
        lambda: any("What I can do" in (s.text or "") for s in telegram.sent(USER)), timeout=20
    )
    [help_text] = [s.text or "" for s in telegram.sent(USER) if "What I can do" in (s.text or "")]
    for words in ("PDFs", "voice messages", "Search the web", "per search", "per minute of audio"):
        assert words in help_text, words

    # The next turn passes the server tool blocks back unchanged (the fake refuses changes).
    anthropic_fake.script(text_reply("You're welcome."))
    update = telegram.push_text(USER, "thanks")
    assert await wait_turn(engine, update) == "answered"
    spent = sum(c["charged_micros"] for c in await calls(engine, USER))
    assert await balance(engine, USER) == STARTER_MICROS - spent


async def test_audio_file_and_rereading_a_text_file(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    await start_bot(STARTER_BALANCE_USD="5.00")
    # An MP3 sent as music: transcribed like a voice note, stored as kind 'audio'.
    mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(9_990)
    gemini_fake.script(TranscriptReply("Lyrics about the sea."))
    anthropic_fake.script(text_reply("A song about the sea."))
    update = telegram.push_voice(
        USER, mp3, duration=5, audio=True, mime_type="audio/mpeg", filename="song.mp3"
    )
    assert await wait_turn(engine, update) == "answered"
    assert [a.mime_type for a in gemini_fake.requests[0].audio] == ["audio/mp3"]
    [audio] = await rows(engine, "SELECT * FROM user_files WHERE kind = 'audio'")
    assert audio["filename"] == "song.mp3"
    assert audio["metadata"]["transcript"] == "Lyrics about the sea."

    # A text file comes back through read_document as a text document.
    code = "def add(a, b):\n    return a + b\n"
    anthropic_fake.script(text_reply("A Python function."))
    update = telegram.push_document(
        USER, code.encode(), filename="add.py", mime_type="text/x-python"
    )
    assert await wait_turn(engine, update) == "answered"
    [text_file] = await rows(engine, "SELECT * FROM user_files WHERE kind = 'text'")
    anthropic_fake.script(
        tool_use_reply("read_document", {"file_id": text_file["id"]}, id="toolu_code"),
        text_reply("It adds two numbers."),
        text_reply("The function adds a and b."),
    )
    update = telegram.push_text(USER, "what did add.py do again?")
    assert await wait_turn(engine, update) == "answered"
    reader = anthropic_fake.message_requests()[-2]
    [document] = [b for b in reader["messages"][0]["content"] if b["type"] == "document"]
    assert document["source"] == {"type": "text", "media_type": "text/plain", "data": code}
    assert document["title"] == "add.py"
    purposes = [c["purpose"] for c in await calls(engine, USER)]
    assert purposes == ["transcribe", "chat", "chat", "chat", "read_document", "chat"]
