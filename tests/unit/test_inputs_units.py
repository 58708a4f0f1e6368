"""The pieces of document, voice and web-tool handling that need no process: PDF and text checks
(bombs included), audio sniffing, the files note, token estimates, citations and server tool
charges, and how transcripts and their charges are worded."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from anthropic.types import Message

from bot.agent.web_tools import (
    WEB_SEARCH_MICROS,
    ServerToolUse,
    server_tool_params,
    server_tool_use,
    sources_markdown,
    worst_case_micros,
)
from bot.services.documents import (
    DocumentRejected,
    decode_text,
    inspect_pdf,
    is_pdf,
    is_text,
)
from bot.services.file_catalog import CatalogEntry, files_note
from bot.services.incoming import IntakeResult
from bot.services.inputs import ogg_seconds, pdf_block, sniff_audio
from bot.services.media import PREVIEW_MAX_SIDE
from bot.services.tokens import PDF_PAGE_TOKENS, estimate_tokens, pdf_tokens
from bot.services.transcripts import shown_transcript, spoken_text
from bot.turns.content import user_content
from bot.turns.replies import with_intake_charge
from tests.fakes.anthropic import cited_text_block, image_tokens, web_search_reply
from tests.media_samples import (
    encrypted_pdf,
    nested_pdf_bomb,
    ogg_not_audio,
    ogg_opus,
    page_count_bomb,
    pdf,
    zero_page_pdf,
)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encrypted_pdf(), "pdf_encrypted"),
        (nested_pdf_bomb(), "pdf_too_complex"),
        (nested_pdf_bomb(60), "pdf_too_complex"),
        (page_count_bomb(), "pdf_too_many_pages"),
        (page_count_bomb(101), "pdf_too_many_pages"),
        (zero_page_pdf(), "pdf_empty"),
        (b"%PDF-1.7\n garbage without objects", "pdf_corrupt"),
        (pdf(3)[: len(pdf(3)) // 3], "pdf_corrupt"),
    ],
)
def test_unreadable_pdfs_are_refused_quickly(data: bytes, reason: str) -> None:
    started = time.monotonic()
    with pytest.raises(DocumentRejected) as caught:
        inspect_pdf(data)
    assert caught.value.reason == reason
    assert caught.value.reply and "Traceback" not in caught.value.reply
    assert time.monotonic() - started < 2


def test_text_is_decoded_or_refused() -> None:
    assert decode_text("héllo\r\nworld".encode()) == "héllo\nworld"
    assert decode_text("\ufeffbom".encode()) == "bom"
    russian = "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 3
    assert decode_text(russian.encode("cp1251")) == russian
    for data, reason in (
        (b"text\x00with nul", "text_binary"),
        (b"   \n ", "text_empty"),
        (b"\x01\x02\x03\x04\x05\x06" * 20, "text_binary"),
        (b"a" * (1024 * 1024 + 1), "too_large"),
    ):
        with pytest.raises(DocumentRejected) as caught:
            decode_text(data)
        assert caught.value.reason == reason


def test_documents_are_recognised_by_name_or_type() -> None:
    assert is_pdf("Report.PDF", None) and is_pdf(None, "application/pdf")
    assert is_text("main.py", "application/octet-stream") and is_text("x", "text/csv")
    assert is_text("data.json", None) and is_text("Dockerfile", None)
    assert not is_text("photo.png", "image/png") and not is_text("a.docx", None)


def test_audio_is_sniffed_from_its_bytes() -> None:
    assert sniff_audio(ogg_opus(2)) == "audio/ogg"
    assert sniff_audio(ogg_not_audio()) is None
    assert sniff_audio(b"") is None
    assert sniff_audio(b"ID3\x04\x00" + bytes(20)) == "audio/mp3"
    assert sniff_audio(b"RIFF\x24\x00\x00\x00WAVEfmt ") == "audio/wav"
    assert sniff_audio(b"fLaC\x00\x00") == "audio/flac"
    assert sniff_audio(b"\x00\x00\x00\x20ftypM4A \x00") == "audio/mp4"
    assert sniff_audio(b"%PDF-1.4") is None
    assert ogg_seconds(ogg_opus(12)) == pytest.approx(12, abs=0.1)
    assert ogg_seconds(ogg_not_audio()) is None


def test_files_note_lists_documents_and_voice() -> None:
    when = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    note = files_note(
        [
            CatalogEntry(1, "pdf", "user", "application/pdf", 200_000, None, None, None, when,
                         filename="report.pdf", pages=12),
            CatalogEntry(2, "text", "user", "text/plain", 900, None, None, None, when,
                         filename="main.py"),
            CatalogEntry(3, "voice", "user", "audio/ogg", 9_000, None, None, None, when,
                         transcript="call mum at five"),
            CatalogEntry(4, "photo", "user", "image/jpeg", 50_000, 640, 480, None, when),
        ]
    )  # fmt: skip
    assert note is not None
    lines = note.splitlines()[1:]
    assert lines[0].startswith('- file_id 1: PDF "report.pdf" sent by the user, 12 pages')
    assert lines[1].startswith('- file_id 2: text file "main.py"')
    assert 'voice message sent by the user, transcript: "call mum at five"' in lines[2]
    assert "image sent by the user as a photo, 640x480" in lines[3]


def test_pdf_blocks_are_estimated_by_their_pages() -> None:
    block = pdf_block("file_1", "a.pdf", 12)
    assert pdf_tokens([{"role": "user", "content": [block]}]) == 12 * PDF_PAGE_TOKENS
    assert estimate_tokens([block]) > 12 * PDF_PAGE_TOKENS
    unknown = {"type": "document", "source": {"type": "file", "file_id": "f"}}
    assert pdf_tokens(unknown) == 100 * PDF_PAGE_TOKENS
    text_doc = {"type": "document", "source": {"type": "text", "data": "x"}}
    assert pdf_tokens(text_doc) == 0


@pytest.mark.parametrize(
    "model", ["claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5", "claude-sonnet-4-6"]
)
@pytest.mark.parametrize("height", [PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE * 9 // 16])
def test_an_image_is_estimated_at_no_less_than_claude_bills_for_a_preview(
    model: str, height: int
) -> None:
    # Every image in a prompt is a preview of at most PREVIEW_MAX_SIDE px a side; Claude 5.5
    # reads it at that size (3279 tokens when square), earlier models at about 1600.
    block = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    assert estimate_tokens([block]) >= image_tokens(PREVIEW_MAX_SIDE, height, model)


def message(content: list[dict[str, Any]], usage: dict[str, Any]) -> Message:
    return Message.construct(
        id="msg_1",
        type="message",
        role="assistant",
        model="claude-sonnet-5-5",
        content=content,
        stop_reason="end_turn",
        usage={"input_tokens": 10, "output_tokens": 5} | usage,
    )


def test_server_tools_are_priced_and_sources_are_links() -> None:
    assert server_tool_params(False) == [] and worst_case_micros(False) == 0
    assert [t["max_uses"] for t in server_tool_params(True)] == [5, 5]
    assert worst_case_micros(True) == 5 * WEB_SEARCH_MICROS
    # The budget is per turn: later calls get what is left, a spent tool is left out.
    spent = ServerToolUse(web_search_requests=5, web_fetch_requests=1)
    assert server_tool_params(True, spent) == [
        {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 4}
    ]
    assert worst_case_micros(True, ServerToolUse(3, 0)) == 2 * WEB_SEARCH_MICROS
    reply = web_search_reply(
        "q", [("https://a.example/x(1)", "A [page]"), ("https://b.example", "B")], "ans", cite=2
    )
    used = {"server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 2}}
    msg = message([dict(b) for b in reply.content], used)
    use = server_tool_use(msg)
    assert (use.web_search_requests, use.web_fetch_requests) == (3, 2)
    assert use.cost_micros == 3 * WEB_SEARCH_MICROS
    assert server_tool_use(message([], {})).cost_micros == 0
    assert sources_markdown(msg) == (
        "\n\nSources: [A (page)](https://a.example/x%281%29), [B](https://b.example)"
    )
    unsafe = cited_text_block("x", [("javascript:alert(1)", "bad")])
    assert sources_markdown(message([unsafe], {})) == ""


def test_transcripts_become_the_text_and_charges_are_stated() -> None:
    assert spoken_text(["hello there"], "caption") == "hello there\n\ncaption"
    assert spoken_text(["  "], "") == ""
    shown = shown_transcript("a_b *c* " + "word " * 100)
    assert shown.startswith("🎤 _“a\\_b \\*c\\*") and shown.endswith("…”_\n\n")
    voice = IntakeResult(7, None, blocks=({"type": "text", "text": "[voice]"},), transcript="hi")
    blocks = user_content("and caption", [voice], None)
    assert blocks == [
        {"type": "text", "text": "[voice]"},
        {"type": "text", "text": "hi\n\nand caption"},
    ]
    reply = with_intake_charge("Claude is busy; nothing was charged.", 1234)
    assert reply == (
        "Claude is busy; only the transcription of your voice message was charged ($0.001234)."
    )
    assert "cost $0.001234" in with_intake_charge("Your balance is too low.", 1234)


def test_a_long_text_file_is_cut_in_the_conversation_saying_so() -> None:
    from bot.services.inputs import INLINE_TEXT_CHARS, text_file_block

    short = text_file_block("a.md", "# Title\nbody")
    assert short == {"type": "text", "text": '<file name="a.md">\n# Title\nbody\n</file>'}
    long = text_file_block("big.csv", "x" * (INLINE_TEXT_CHARS + 5))
    assert long["text"].count("x") == INLINE_TEXT_CHARS
    assert "Only the first 100,000 of 100,005 characters are shown" in long["text"]
