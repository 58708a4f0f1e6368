"""Token estimates for stored messages (used for holds and trimming, never for charging)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from bot.services.media import PREVIEW_MAX_SIDE

# Bytes of UTF-8 per token, counted low: English runs about 4 characters a token, and a
# character outside ASCII takes 2-4 bytes and often a token of its own, so counting bytes keeps
# the estimate generous for every script.
BYTES_PER_TOKEN = 3
# An image in a prompt is always a preview of at most PREVIEW_MAX_SIDE px on each side. Current
# Claude models (Opus 4.7 and later, all of 5.5) read it at that size, width x height / 750
# tokens: up to 3279 for a square preview (earlier models scale it down to about 1600).
PIXELS_PER_IMAGE_TOKEN = 750
IMAGE_TOKENS = math.ceil(PREVIEW_MAX_SIDE * PREVIEW_MAX_SIDE / PIXELS_PER_IMAGE_TOKEN)


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: list[dict[str, Any]]
    token_estimate: int


def estimate_tokens(content: Any) -> int:
    """A deliberately generous estimate of the tokens `content` takes."""
    images = _count_images(content)
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return (
        len(text.encode("utf-8")) // BYTES_PER_TOKEN
        + images * IMAGE_TOKENS
        + pdf_tokens(content)
        + 4
    )


def _count_images(content: Any) -> int:
    # (PDF document blocks are counted by pdf_tokens, from the page count in their context.)
    if isinstance(content, dict):
        own = 1 if content.get("type") == "image" else 0
        return own + sum(_count_images(v) for v in content.values())
    if isinstance(content, list):
        return sum(_count_images(v) for v in content)
    return 0


PDF_PAGE_TOKENS = 3000  # text and page image; Anthropic gives 1,500-3,000 per page
_PAGES = re.compile(r"\b(\d{1,4}) pages?\b")


def pdf_tokens(content: Any) -> int:
    """A generous estimate for the PDF document blocks in `content`: their `context` states the
    page count ("PDF, 12 pages"); one without it counts as 100 pages."""
    if isinstance(content, dict):
        return _own_pdf_tokens(content) + sum(
            pdf_tokens(v) for v in content.values() if isinstance(v, dict | list)
        )
    if isinstance(content, list):
        return sum(pdf_tokens(v) for v in content)
    return 0


def _own_pdf_tokens(block: dict[str, Any]) -> int:
    if block.get("type") != "document":
        return 0
    if block.get("source", {}).get("type") not in ("file", "base64"):
        return 0
    found = _PAGES.search(str(block.get("context") or ""))
    return (int(found.group(1)) if found else 100) * PDF_PAGE_TOKENS
