"""How a transcript becomes the person's text for the turn, and how they see it was heard."""

from __future__ import annotations

import re
from collections.abc import Sequence

SHOWN_TRANSCRIPT_CHARS = 300
AUDIO_TOKENS_PER_SECOND = 32  # Gemini counts 32 tokens per second of audio


def spoken_text(transcripts: Sequence[str], caption: str) -> str:
    """The turn's text: the transcripts in order, then the caption (if any)."""
    parts = [t.strip() for t in transcripts if t.strip()]
    if caption.strip():
        parts.append(caption.strip())
    return "\n\n".join(parts)


def shown_transcript(text: str) -> str:
    """The first line of the answer: the transcript, quoted and shortened, in Markdown."""
    flat = " ".join(text.split())
    if len(flat) > SHOWN_TRANSCRIPT_CHARS:
        flat = flat[:SHOWN_TRANSCRIPT_CHARS].rstrip() + "…"
    return f"🎤 _“{_escape_markdown(flat)}”_\n\n"


def _escape_markdown(text: str) -> str:
    return re.sub(r"([\\_*`\[\]])", r"\\\1", text)
