"""The hostile corpus, pushed through the fake Telegram into one real bot process: every file
gets a clear reply, rejected ones cost nothing and are never decoded past their header, memory
stays bounded, and the bot answers normally afterwards."""

from __future__ import annotations

import asyncio
import contextlib

import psutil
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_images import balance, rows, wait_turn
from tests.fakes.anthropic import FakeAnthropic, text_reply
from tests.fakes.telegram import FakeTelegram
from tests.hostile import HostileFile, hostile_corpus, hostile_file

FIRST_USER = 7000
STARTER_MICROS = 500_000
ACCEPTED_REPLY = "I can see your image."
RSS_LIMIT_BYTES = 800 * 1024 * 1024
REPLY_WORDS = {
    "empty": "empty",
    "too_large": "MB",
    "unsupported_type": "JPEG, PNG, WebP and GIF",
    "corrupt": "damaged",
    "too_many_pixels": "pixels",
    "bad_dimensions": "pixels",
    "animated": "Animated",
}
AS_PHOTO = {"png_header_12000x12000": (12000, 12000), "jpeg_truncated": (64, 48), "png_1x1": None}


def push(telegram: FakeTelegram, user_id: int, entry: HostileFile) -> int:
    if entry.name in AS_PHOTO:
        size = AS_PHOTO[entry.name]
        width, height = size if size else (None, None)
        return telegram.push_photo(user_id, entry.data, width=width, height=height)
    return telegram.push_document(
        user_id,
        entry.data,
        filename=entry.filename,
        mime_type=entry.claimed_mime,
        caption="what is this?",
    )


async def sample_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            peak[0] = max(peak[0], process.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def test_hostile_corpus_gets_clear_replies_and_costs_nothing(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    bot = await start_bot(MERGE_WINDOW_SECONDS="0")
    anthropic_fake.set_default(text_reply(ACCEPTED_REPLY))
    corpus = hostile_corpus()
    assert len(corpus) >= 30
    peak = [0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(bot.pid, peak, stop))
    users = {entry.name: FIRST_USER + i for i, entry in enumerate(corpus)}
    updates = {entry.name: push(telegram, users[entry.name], entry) for entry in corpus}
    statuses = {
        name: await wait_turn(engine, update, timeout=120) for name, update in updates.items()
    }
    stop.set()
    await sampler

    for entry in corpus:
        user = users[entry.name]
        replies = [s.text or "" for s in telegram.sent(user) if s.method == "sendMessage"]
        assert len(replies) == 1, (entry.name, replies)
        if entry.accepted:
            assert statuses[entry.name] == "answered", entry.name
            assert replies[0] == ACCEPTED_REPLY, entry.name
        else:
            assert statuses[entry.name].startswith("failed"), entry.name
            assert entry.expected_reason in statuses[entry.name], (entry.name, statuses)
            assert REPLY_WORDS[entry.expected_reason] in replies[0], (entry.name, replies)
            assert await balance(engine, user) == STARTER_MICROS, entry.name

    # Nothing was charged for a rejected file; accepted ones paid for Claude's answer only.
    calls = await rows(engine, "SELECT user_id, purpose FROM api_calls")
    accepted_users = {users[e.name] for e in corpus if e.accepted}
    assert {c["user_id"] for c in calls} == accepted_users
    assert {c["purpose"] for c in calls} == {"chat"}
    stored = await rows(engine, "SELECT user_id FROM user_files")
    assert sorted(r["user_id"] for r in stored) == sorted(accepted_users)

    # The over-limit document was refused from Telegram's size alone: never downloaded.
    too_large = hostile_file("document_20_1_mb")
    assert too_large.expected_reason == "too_large"
    big_ids = {
        c.params.get("file_id")
        for c in telegram.calls("getFile")
        if c.params.get("file_id") is not None
    }
    assert len(big_ids) == len(corpus) - 1

    # Hidden payloads never reach Claude.
    for entry in corpus:
        for marker in entry.secret_markers:
            for stored_file in anthropic_fake.files.values():
                assert marker not in stored_file.data, entry.name

    assert peak[0] < RSS_LIMIT_BYTES, f"bot RSS peaked at {peak[0] / 2**20:.0f} MiB"

    # The bot still answers a normal message.
    anthropic_fake.set_default(None)
    anthropic_fake.script(text_reply("Hello again!"))
    user = users[corpus[0].name]
    update = telegram.push_text(user, "hello")
    assert await wait_turn(engine, update) == "answered"
    assert telegram.sent(user)[-1].text == "Hello again!"
