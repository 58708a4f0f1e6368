"""Markdown → Telegram text + entities, split into messages that fit (UTF-16 limits)."""

from __future__ import annotations

import time

import pytest
from aiogram.types import MessageEntity
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.telegram.rendering import RenderedChunk, render_draft, render_markdown, render_plain

LIMIT = 4096


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def sliced(text: str, entity: MessageEntity) -> str:
    """The characters an entity covers, cut from the UTF-16 encoding as Telegram does."""
    raw = text.encode("utf-16-le")
    return raw[2 * entity.offset : 2 * (entity.offset + entity.length)].decode("utf-16-le")


def only(chunks: list[RenderedChunk]) -> RenderedChunk:
    assert len(chunks) == 1
    return chunks[0]


def covered(chunk: RenderedChunk, entity_type: str) -> list[str]:
    return [sliced(chunk.text, e) for e in chunk.entities if e.type == entity_type]


def assert_well_formed(chunk: RenderedChunk, limit: int) -> None:
    assert chunk.text.strip(), "a chunk must have visible text"
    assert units(chunk.text) <= limit
    for entity in chunk.entities:
        assert entity.offset >= 0
        assert entity.length > 0
        assert entity.offset + entity.length <= units(chunk.text)


def assert_in_order_with_whitespace_gaps(full: str, parts: list[str]) -> None:
    """Each part occurs in `full` after the previous one, separated by whitespace only."""
    position = 0
    for part in parts:
        found = full.find(part, position)
        assert found != -1, part[:60]
        assert not full[position:found].strip(), full[position:found][:60]
        position = found + len(part)
    assert not full[position:].strip()


def test_inline_entities_sit_at_utf16_offsets_after_emoji() -> None:
    chunk = only(
        render_markdown(
            "😀👍🏽 Some **bold**, *italic*, `code`, [link](https://example.com) "
            "and ~~gone~~ then 🇩🇪 **after flag**"
        )
    )

    assert chunk.text.startswith("😀👍🏽 Some bold, italic, code, link and gone")
    assert covered(chunk, "bold") == ["bold", "after flag"]
    assert covered(chunk, "italic") == ["italic"]
    assert covered(chunk, "code") == ["code"]
    assert covered(chunk, "strikethrough") == ["gone"]
    [link] = [e for e in chunk.entities if e.type == "text_link"]
    assert sliced(chunk.text, link) == "link"
    assert link.url == "https://example.com"


def test_fenced_code_block_keeps_language_and_content() -> None:
    chunk = only(render_markdown("Run this:\n\n```python\nprint('😀')\n    x = 1\n```\n\nDone."))

    [pre] = [e for e in chunk.entities if e.type == "pre"]
    assert pre.language == "python"
    assert sliced(chunk.text, pre) == "print('😀')\n    x = 1"
    assert chunk.text.endswith("Done.")


def test_heading_is_bold() -> None:
    chunk = only(render_markdown("# Résumé 🎉\n\nBody text."))

    assert covered(chunk, "bold") == ["Résumé 🎉"]
    assert "Body text." in chunk.text


def test_lists_keep_markers_and_inner_formatting() -> None:
    chunk = only(render_markdown("- one\n- **two** 😀\n\n1. first\n2. `second`"))

    assert "one" in chunk.text
    assert "1. first" in chunk.text
    assert "2. second" in chunk.text
    assert covered(chunk, "bold") == ["two"]
    assert covered(chunk, "code") == ["second"]


def test_table_becomes_monospace_block() -> None:
    chunk = only(render_markdown("Prices:\n\n| model | usd |\n|---|---|\n| 😀 pro | 0.13 |\n"))

    [table] = covered(chunk, "pre")
    assert "model" in table
    assert "😀 pro" in table
    assert "0.13" in table


def test_blockquote_and_strikethrough() -> None:
    chunk = only(render_markdown("> quoted **words**\n\n~~old~~ new"))

    assert covered(chunk, "blockquote") == ["quoted words"]
    assert covered(chunk, "bold") == ["words"]
    assert covered(chunk, "strikethrough") == ["old"]


def test_links_telegram_would_reject_stay_as_plain_text() -> None:
    chunk = only(render_markdown("See [the docs](/relative/path) and [site](https://ok.example)."))

    assert "the docs" in chunk.text
    assert [e.url for e in chunk.entities if e.type == "text_link"] == ["https://ok.example"]


def test_empty_or_blank_markdown_gives_no_chunks() -> None:
    assert render_markdown("") == []
    assert render_markdown(" \n\n\t ") == []
    assert render_plain("  \n ") == []


def mixed_answer() -> str:
    paragraph = "A paragraph with **bold** words, an emoji 😀 and `inline code`. " * 6
    code = "\n".join(f"    value_{i} = compute({i})  # ✓ step {i} 🚀" for i in range(150))
    answer = "\n\n".join([paragraph] * 8 + ["```python\n" + code + "\n```"] + [paragraph] * 5)
    assert len(answer) >= 10_000
    return answer


def test_long_mixed_answer_splits_into_valid_chunks() -> None:
    answer = mixed_answer()

    started = time.perf_counter()
    chunks = render_markdown(answer)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"render_markdown: {len(answer)} chars -> {len(chunks)} chunks in {elapsed_ms:.2f} ms")

    full = only(render_markdown(answer, limit=1_000_000)).text
    assert len(chunks) >= 3
    for chunk in chunks:
        assert_well_formed(chunk, LIMIT)
        assert all(text == "bold" for text in covered(chunk, "bold"))
        assert all(text == "inline code" for text in covered(chunk, "code"))
    assert_in_order_with_whitespace_gaps(full, [chunk.text for chunk in chunks])
    code_pieces = [e for chunk in chunks for e in chunk.entities if e.type == "pre"]
    assert len(code_pieces) >= 2, "the code block is longer than one message"
    assert {e.language for e in code_pieces} == {"python"}


def test_paragraph_text_breaks_only_between_paragraphs() -> None:
    paragraphs = [f"Paragraph {i}: " + "words and more words 😀 " * 30 for i in range(20)]
    answer = "\n\n".join(paragraphs)

    chunks = render_markdown(answer)

    assert len(chunks) >= 2
    for chunk in chunks:
        assert_well_formed(chunk, LIMIT)
        assert chunk.text.startswith("Paragraph ")
        assert chunk.text.endswith("😀")


def test_code_block_longer_than_a_message_becomes_several_code_blocks() -> None:
    lines = [f"print('line {i:04d}')  # padding to make it longer" for i in range(190)]
    code = "\n".join(lines)
    assert len(code) >= 9000

    chunks = render_markdown("```python\n" + code + "\n```")

    assert len(chunks) >= 3
    for chunk in chunks:
        assert_well_formed(chunk, LIMIT)
        [pre] = chunk.entities
        assert pre.type == "pre"
        assert pre.language == "python"
        assert sliced(chunk.text, pre) == chunk.text
    assert "\n".join(chunk.text for chunk in chunks) == code


def test_small_entities_are_never_cut_even_when_that_means_an_early_break() -> None:
    answer = "x" * 90 + " **" + "bold words " * 3 + "end**"

    chunks = render_markdown(answer, limit=100)

    bold = [text for chunk in chunks for text in covered(chunk, "bold")]
    assert bold == ["bold words bold words bold words end"]
    for chunk in chunks:
        assert_well_formed(chunk, 100)


def test_text_without_breaks_is_cut_hard_but_never_inside_an_emoji_cluster() -> None:
    family = "👨\u200d👩\u200d👧"  # one visible emoji, 8 UTF-16 units
    chunks = render_plain(family * 50, limit=50)

    assert len(chunks) > 1
    for chunk in chunks:
        assert units(chunk) <= 50
        assert chunk.startswith("👨")
        assert chunk.endswith("👧")
    assert "".join(chunks) == family * 50


def test_plain_split_prefers_paragraphs_then_lines_then_words() -> None:
    text = "first paragraph\n\n" + "line one\nline two\n" + "word " * 10

    assert render_plain(text, limit=30) == [
        "first paragraph",
        "line one\nline two",
        "word word word word word word",
        "word word word word",
    ]


def test_limit_below_one_character_is_rejected() -> None:
    with pytest.raises(ValueError, match="limit"):
        render_markdown("hi", limit=1)


@pytest.mark.parametrize(
    "partial",
    [
        "**bold",
        "*it",
        "`code",
        "```python\nx = 1\nfor i in",
        "[link](https://exa",
        "| a | b |\n|---|",
        "> quote\n> **mid",
        "1. one\n2.",
        "~~strike",
        "||spoil",
        "$x + ",
        "😀",
    ],
)
def test_draft_never_raises_on_unfinished_markdown(partial: str) -> None:
    draft = render_draft(partial)

    assert draft.text
    assert_well_formed(draft, LIMIT)


def test_draft_of_an_open_code_fence_is_already_code() -> None:
    draft = render_draft("Here:\n\n```python\ndef f():\n    return 1\n")

    [pre] = [e for e in draft.entities if e.type == "pre"]
    assert pre.language == "python"
    assert sliced(draft.text, pre) == "def f():\n    return 1"


def test_long_draft_shows_the_tail_that_fits() -> None:
    answer = mixed_answer() + "\n\nThe **very end** 🏁"

    draft = render_draft(answer)

    assert units(draft.text) <= LIMIT
    assert draft.text.startswith("…")
    assert draft.text.endswith("The very end 🏁")
    assert covered(draft, "bold")[-1] == "very end"
    assert_well_formed(draft, LIMIT)


def test_short_draft_is_the_whole_rendering() -> None:
    assert render_draft("Hello **there**") == only(render_markdown("Hello **there**"))


def test_empty_draft_is_allowed() -> None:
    assert render_draft("") == RenderedChunk(text="", entities=[])


@settings(max_examples=300, deadline=None)
@given(markdown=st.text(), limit=st.integers(min_value=2, max_value=300))
def test_any_text_renders_into_valid_chunks(markdown: str, limit: int) -> None:
    for chunk in render_markdown(markdown, limit=limit):
        assert_well_formed(chunk, limit)
    for part in render_plain(markdown, limit=limit):
        assert part.strip()
        assert units(part) <= limit
    draft = render_draft(markdown, limit=limit)
    assert units(draft.text) <= limit
    for entity in draft.entities:
        assert entity.offset >= 0
        assert entity.offset + entity.length <= units(draft.text)


markdownish = st.lists(
    st.sampled_from(
        ["**", "*", "`", "```", "```py\n", "\n", "\n\n", " ", "# ", "- ", "1. ", "> ", "|", "~~"]
    )
    | st.text(min_size=1, max_size=12),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(markdown=markdownish, limit=st.integers(min_value=2, max_value=120))
def test_markdown_like_text_renders_into_valid_chunks(markdown: str, limit: int) -> None:
    full = render_markdown(markdown, limit=1_000_000)
    chunks = render_markdown(markdown, limit=limit)

    for chunk in chunks:
        assert_well_formed(chunk, limit)
    if full:
        assert_in_order_with_whitespace_gaps(only(full).text, [chunk.text for chunk in chunks])
    else:
        assert chunks == []
