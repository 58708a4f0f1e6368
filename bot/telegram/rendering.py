"""Claude's Markdown as Telegram text + entities, split into messages that fit.

Telegram counts message length and entity offsets in UTF-16 code units, so every limit here
is in UTF-16 units. Conversion is done by `telegramify-markdown`; splitting is ours, because
long answers must break at paragraphs or lines and never inside a formatted span.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Final

import structlog
import telegramify_markdown
from aiogram.types import MessageEntity

log = structlog.get_logger(__name__)

TELEGRAM_TEXT_LIMIT: Final = 4096
DRAFT_TAIL_PREFIX: Final = "…"

_LINK_SCHEMES: Final = ("http://", "https://", "tg://", "mailto:")
_CODE_TYPES: Final = frozenset({"pre", "code"})
_PARAGRAPH_BREAK = re.compile(r"\n(?=\n)")
_LINE_BREAK = re.compile(r"\n")
_ZWJ: Final = "\u200d"


@dataclass(frozen=True)
class RenderedChunk:
    """One Telegram message: text plus entities with UTF-16 offsets relative to this text."""

    text: str
    entities: list[MessageEntity]


def render_markdown(markdown: str, *, limit: int = TELEGRAM_TEXT_LIMIT) -> list[RenderedChunk]:
    """Converts Markdown into message chunks of at most `limit` UTF-16 units each.

    Returns an empty list when there is nothing visible to send.
    """
    _check_limit(limit)
    doc, spans = _convert(markdown)
    ranges = _Splitter(doc, spans, limit).ranges()
    return [_chunk(doc, spans, start, end) for start, end in ranges]


def render_plain(text: str, *, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Splits raw text like `render_markdown`, for when Telegram rejects our entities."""
    _check_limit(limit)
    doc = _Text(text)
    return [text[start:end] for start, end in _Splitter(doc, [], limit).ranges()]


def render_draft(markdown: str, *, limit: int = TELEGRAM_TEXT_LIMIT) -> RenderedChunk:
    """Renders a streaming preview of possibly unfinished Markdown; never raises on markup.

    Text longer than `limit` shows its tail behind an ellipsis. Empty text is possible
    (sendMessageDraft shows a "Thinking…" placeholder for it).
    """
    _check_limit(limit)
    doc, spans = _convert(markdown)
    start, end = _trim(doc, _Coverage(doc, spans), 0, len(doc.text))
    if doc.units(start, end) <= limit:
        return _chunk(doc, spans, start, end)
    tail_start = _tail_start(doc, end, limit - len(DRAFT_TAIL_PREFIX))
    tail = _chunk(doc, spans, tail_start, end, shift=len(DRAFT_TAIL_PREFIX))
    return RenderedChunk(text=DRAFT_TAIL_PREFIX + tail.text, entities=tail.entities)


def _check_limit(limit: int) -> None:
    if limit < 2:
        msg = "limit must be at least 2 UTF-16 units (one non-BMP character)"
        raise ValueError(msg)


class _Text:
    """Text with the UTF-16 offset of every character position precomputed."""

    __slots__ = ("text", "u16")

    def __init__(self, text: str) -> None:
        self.text = text
        self.u16: Sequence[int] = (
            range(len(text) + 1)
            if text.isascii()
            else list(accumulate((2 if ord(c) > 0xFFFF else 1 for c in text), initial=0))
        )

    def units(self, start: int, end: int) -> int:
        return self.u16[end] - self.u16[start]

    def index_of_unit(self, unit: int) -> int:
        return min(bisect_left(self.u16, unit), len(self.text))

    def furthest_end(self, start: int, limit: int) -> int:
        """The largest index `end` such that text[start:end] fits in `limit` units."""
        return bisect_right(self.u16, self.u16[start] + limit) - 1


@dataclass(frozen=True, slots=True)
class _Span:
    """An entity in Python string indices."""

    start: int
    end: int
    type: str
    url: str | None = None
    language: str | None = None
    custom_emoji_id: str | None = None


def _convert(markdown: str) -> tuple[_Text, list[_Span]]:
    try:
        text, entities = telegramify_markdown.convert(markdown)
    except Exception:
        log.warning("markdown_conversion_failed", chars=len(markdown), exc_info=True)
        return _Text(markdown), []
    doc = _Text(text)
    spans = [span for entity in entities if (span := _span_of(doc, entity)) is not None]
    spans.sort(key=lambda span: (span.start, -span.end))
    return doc, spans


def _span_of(doc: _Text, entity: telegramify_markdown.MessageEntity) -> _Span | None:
    start = doc.index_of_unit(entity.offset)
    end = doc.index_of_unit(entity.offset + entity.length)
    if end <= start:
        return None
    if entity.type == "text_link" and not (entity.url or "").startswith(_LINK_SCHEMES):
        return None  # Telegram rejects relative or unknown links; the text stays visible
    return _Span(start, end, entity.type, entity.url, entity.language, entity.custom_emoji_id)


def _chunk(doc: _Text, spans: list[_Span], start: int, end: int, shift: int = 0) -> RenderedChunk:
    """The text between two indices, with the entities clipped to it and rebased."""
    base = doc.u16[start] - shift
    entities: list[MessageEntity] = []
    for span in spans:
        if span.start >= end:
            break
        lo, hi = max(span.start, start), min(span.end, end)
        if hi > lo:
            entities.append(
                MessageEntity(
                    type=span.type,
                    offset=doc.u16[lo] - base,
                    length=doc.units(lo, hi),
                    url=span.url,
                    language=span.language,
                    custom_emoji_id=span.custom_emoji_id,
                )
            )
    return RenderedChunk(text=doc.text[start:end], entities=entities)


class _Coverage:
    """Which characters are covered by entities, as flags per character position."""

    def __init__(self, doc: _Text, spans: Sequence[_Span], *, max_units: int | None = None) -> None:
        size = len(doc.text) + 1
        self.guarded = bytearray(size)  # inside an entity small enough never to be split
        self.guard_start = bytearray(size)  # first character of a guarded run
        self.code = bytearray(size)  # inside code, where whitespace is content
        self.guard_starts: list[int] = []
        kept = [s for s in spans if max_units is None or doc.units(s.start, s.end) <= max_units]
        for start, end in _merge((s.start, s.end) for s in kept):
            self.guarded[start:end] = b"\x01" * (end - start)
            self.guard_start[start] = 1
            self.guard_starts.append(start)
        for span in spans:
            if span.type in _CODE_TYPES:
                self.code[span.start : span.end] = b"\x01" * (span.end - span.start)

    def splits_entity(self, cut: int) -> bool:
        """Whether cutting the text before index `cut` would split a guarded entity."""
        return bool(self.guarded[cut]) and not self.guard_start[cut]

    def run_start(self, cut: int) -> int:
        return self.guard_starts[bisect_right(self.guard_starts, cut) - 1]


def _merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Unites overlapping intervals; touching ones stay apart so a cut may fall between them."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _strippable(doc: _Text, coverage: _Coverage, index: int) -> bool:
    char = doc.text[index]
    return char.isspace() and (char == "\n" or not coverage.code[index])


def _trim(doc: _Text, coverage: _Coverage, start: int, end: int) -> tuple[int, int]:
    """Drops edge whitespace, keeping indentation inside code."""
    while start < end and _strippable(doc, coverage, start):
        start += 1
    while end > start and _strippable(doc, coverage, end - 1):
        end -= 1
    return start, end


def _breaks_grapheme(text: str, cut: int) -> bool:
    """Whether a cut before `cut` would tear a user-perceived character apart."""
    if cut <= 0 or cut >= len(text):
        return False
    before, after = text[cut - 1], text[cut]
    code = ord(after)
    return (
        _ZWJ in (before, after)
        or (before == "\r" and after == "\n")
        or unicodedata.category(after) in ("Mn", "Me", "Mc")
        or 0xFE00 <= code <= 0xFE0F
        or 0x1F3FB <= code <= 0x1F3FF
        or 0xE0020 <= code <= 0xE007F
        or (0x1F1E6 <= code <= 0x1F1FF and 0x1F1E6 <= ord(before) <= 0x1F1FF)
    )


def _tail_start(doc: _Text, end: int, units: int) -> int:
    """Where the last `units` UTF-16 units before `end` begin, preferably at a line start."""
    start = doc.index_of_unit(doc.u16[end] - units)
    while start < end and _breaks_grapheme(doc.text, start):
        start += 1
    newline = doc.text.find("\n", start, min(end, start + units // 8))
    if newline != -1 and doc.text[newline + 1 : end].strip():
        return newline + 1
    return start


class _Splitter:
    """Greedy split: the fullest chunk that ends at a paragraph, else a line, else a word."""

    def __init__(self, doc: _Text, spans: list[_Span], limit: int) -> None:
        self._doc = doc
        self._limit = limit
        self._coverage = _Coverage(doc, spans, max_units=limit)
        guarded = self._coverage.guarded
        self._separators = [
            [m.start() for m in pattern.finditer(doc.text) if not guarded[m.start()]]
            for pattern in (_PARAGRAPH_BREAK, _LINE_BREAK)
        ]

    def ranges(self) -> list[tuple[int, int]]:
        """(start, end) index pairs of non-empty chunks, in order."""
        doc, coverage = self._doc, self._coverage
        start, text_end = _trim(doc, coverage, 0, len(doc.text))
        ranges: list[tuple[int, int]] = []
        while start < text_end:
            if doc.units(start, text_end) <= self._limit:
                end, resume = text_end, text_end
            else:
                end, resume = self._cut(start)
            chunk_start, chunk_end = _trim(doc, coverage, start, end)
            if doc.text[chunk_start:chunk_end].strip():
                ranges.append((chunk_start, chunk_end))
            start, _ = _trim(doc, coverage, resume, text_end)
        return ranges

    def _cut(self, start: int) -> tuple[int, int]:
        """Where the chunk beginning at `start` ends, and where the next one begins."""
        furthest = self._doc.furthest_end(start, self._limit)
        fallback: int | None = None
        for separators in self._separators:
            index = bisect_right(separators, furthest) - 1
            if index >= 0 and separators[index] > start:
                cut = separators[index]
                if self._full_enough(start, cut):
                    return cut, cut + 1
                fallback = cut if fallback is None else fallback
        word_cut = self._word_cut(start, furthest)
        if word_cut is not None and (self._full_enough(start, word_cut) or fallback is None):
            return word_cut, word_cut
        if fallback is not None:
            return fallback, fallback + 1
        hard_cut = self._hard_cut(start, furthest)
        return hard_cut, hard_cut

    def _word_cut(self, start: int, furthest: int) -> int | None:
        """The last cut just after a space, outside guarded entities, if any."""
        text, coverage = self._doc.text, self._coverage
        end = furthest
        while (space := max(text.rfind(" ", start, end), text.rfind("\t", start, end))) > start:
            cut = space + 1
            if not coverage.splits_entity(cut):
                return cut
            end = coverage.run_start(cut)
        return None

    def _full_enough(self, start: int, cut: int) -> bool:
        return self._doc.units(start, cut) * 2 >= self._limit

    def _hard_cut(self, start: int, furthest: int) -> int:
        """The last index before `furthest` outside guarded entities and grapheme clusters."""
        cut = furthest
        while cut > start:
            if self._coverage.splits_entity(cut):
                cut = self._coverage.run_start(cut)
            elif _breaks_grapheme(self._doc.text, cut):
                cut -= 1
            else:
                return cut
        return furthest
