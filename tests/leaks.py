"""The secret-leak scan: what the bot logged, sent to Telegram and sent to Claude must hold no secret."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from tests.harness import FAKE_ANTHROPIC_KEY, FAKE_BOT_TOKEN, FAKE_GOOGLE_KEY, FAKE_OPENAI_KEY

PATTERNS = {
    "bot token": re.compile(r"\d{6,}:[A-Za-z0-9_-]{30,}"),
    "anthropic key": re.compile(r"sk-ant-[A-Za-z0-9_-]{20,}"),
    "google key": re.compile(r"AIza[0-9A-Za-z_-]{30,}"),
    "openai key": re.compile(r"sk-proj-[A-Za-z0-9_-]{20,}"),
    "base64 over 1 KB": re.compile(r"[A-Za-z0-9+/_-]{1024,}={0,2}"),
}
LITERALS = (FAKE_BOT_TOKEN, FAKE_ANTHROPIC_KEY, FAKE_GOOGLE_KEY, FAKE_OPENAI_KEY)


def find_leaks(texts: Iterable[str], extra_secrets: Iterable[str] = ()) -> list[str]:
    """Every (kind, excerpt) of a secret found in `texts`."""
    hits: list[str] = []
    literals = [*LITERALS, *(s for s in extra_secrets if s)]
    for text in texts:
        for secret in literals:
            if secret in text:
                hits.append(f"literal secret: ...{text[max(0, text.index(secret) - 40) :][:120]}")
        for kind, pattern in PATTERNS.items():
            match = pattern.search(text)
            if match:
                hits.append(f"{kind}: {match.group(0)[:60]}...")
    return hits


def outbound_texts(
    telegram_requests: Iterable[object], anthropic_requests: Iterable[object]
) -> list[str]:
    """Parameters the bot sent to Telegram, and the JSON bodies it sent to Claude."""
    texts: list[str] = []
    for record in telegram_requests:
        params = getattr(record, "params", {}) or {}
        texts.append(json.dumps(params, ensure_ascii=False, default=str))
    for record in anthropic_requests:
        body = getattr(record, "json", None)
        if body is not None:
            texts.append(json.dumps(body, ensure_ascii=False))
    return texts
