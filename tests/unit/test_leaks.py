"""The leak scan itself must catch what it is meant to catch."""

from __future__ import annotations

import base64

from tests.harness import FAKE_ANTHROPIC_KEY, FAKE_BOT_TOKEN, FAKE_GOOGLE_KEY
from tests.leaks import find_leaks


def test_scan_finds_each_kind_of_secret() -> None:
    blob = base64.b64encode(bytes(range(256)) * 8).decode()
    samples = [
        f"GET /bot{FAKE_BOT_TOKEN}/getMe",
        f"key={FAKE_ANTHROPIC_KEY}",
        f"x-goog-api-key: {FAKE_GOOGLE_KEY}",
        f'{{"data": "{blob}"}}',
        "password hunter2-db-secret",
    ]
    for sample in samples[:4]:
        assert find_leaks([sample]), sample
    assert find_leaks([samples[4]], extra_secrets=["hunter2-db-secret"])


def test_scan_passes_ordinary_text() -> None:
    assert find_leaks(["Hello! Your balance is $0.50.", "update 123456 from user 42"]) == []
