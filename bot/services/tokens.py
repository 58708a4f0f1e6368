"""Token estimates for stored messages (used for holds and trimming, never for charging)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Bytes of UTF-8 per token, counted low: English runs about 4 characters a token, and a
# character outside ASCII takes 2-4 bytes and often a token of its own, so counting bytes keeps
# the estimate generous for every script.
BYTES_PER_TOKEN = 3
IMAGE_TOKENS = 1600


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: list[dict[str, Any]]
    token_estimate: int


def estimate_tokens(content: Any) -> int:
    """A deliberately generous estimate of the tokens `content` takes."""
    images = _count_images(content)
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8")) // BYTES_PER_TOKEN + images * IMAGE_TOKENS + 4


def _count_images(content: Any) -> int:
    if isinstance(content, dict):
        own = 1 if content.get("type") == "image" else 0
        return own + sum(_count_images(v) for v in content.values())
    if isinstance(content, list):
        return sum(_count_images(v) for v in content)
    return 0
