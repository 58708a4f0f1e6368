"""/model end to end: the offered models with prices as buttons, the choice stored and used.

The real bot process runs against the fake Telegram and Anthropic servers and a real Postgres.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.session import create_engine
from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import STARTER_MICROS, ask, balance, rows, scalar
from tests.fakes.anthropic import FakeAnthropic, Reply, text_block
from tests.fakes.telegram import FakeTelegram
from tests.harness import PROJECT_ROOT, bot_env

USER = 71_001
MODELS = "claude-sonnet-5-5,claude-haiku-5-5"
USAGE = {
    "input_tokens": 1000,
    "output_tokens": 200,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
# Haiku 5.5 (a prompt up to 100,000 tokens): 0.10 USD in, 0.50 USD out per MTok -> 100 + 100
# micro-USD; Sonnet 5.5 would be 4000.
HAIKU_CHARGE = 200
SONNET_CHARGE = 4000


def reply(text: str) -> Reply:
    return Reply(content=[text_block(text)], usage=USAGE)


async def choose(telegram: FakeTelegram, user_id: int, model: str) -> None:
    before = len(telegram.sent(user_id))
    telegram.push_text(user_id, "/model")
    menu = (await telegram.wait_for_sent(user_id, before + 1, timeout=20))[before]
    assert menu.reply_markup is not None
    buttons = [row[0] for row in menu.reply_markup["inline_keyboard"]]
    assert [b["callback_data"] for b in buttons] == [
        "model:claude-sonnet-5-5",
        "model:claude-haiku-5-5",
    ]
    assert buttons[0]["text"] == "✓ claude-sonnet-5-5 · $2.00 in / $10.00 out per 1M tokens"
    assert buttons[1]["text"] == "claude-haiku-5-5 · from $0.10 in / $0.50 out per 1M tokens"
    assert menu.message_id is not None
    telegram.push_callback(user_id, f"model:{model}", message_id=menu.message_id)
    done = (await telegram.wait_for_sent(user_id, before + 2, timeout=20))[before + 1]
    assert done.text == f"Done: your next answers come from {model}."
    await telegram.wait_for(lambda: not telegram._callback_ids, timeout=10)


async def test_chosen_model_answers_and_is_charged(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    database_url: str,
) -> None:
    await start_bot(CHAT_MODELS=MODELS, RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    engine = create_engine(database_url)
    try:
        anthropic_fake.script(reply("Default model here."))
        assert await ask(telegram, USER, "hello", finished_in=engine) == ["Default model here."]
        assert _last_model(anthropic_fake) == "claude-sonnet-5-5"

        await choose(telegram, USER, "claude-haiku-5-5")
        stored = await scalar(engine, "SELECT chat_model FROM users WHERE id = :u", u=USER)
        assert stored == "claude-haiku-5-5"

        anthropic_fake.script(reply("Haiku here."))
        assert await ask(telegram, USER, "again", finished_in=engine) == ["Haiku here."]
        assert _last_model(anthropic_fake) == "claude-haiku-5-5"
        await _assert_calls(engine)
    finally:
        await engine.dispose()


def _last_model(anthropic_fake: FakeAnthropic) -> str:
    messages = [r for r in anthropic_fake.requests if r.path.endswith("/v1/messages")]
    return str(messages[-1].json["model"])


async def _assert_calls(engine: AsyncEngine) -> None:
    calls = await rows(
        engine,
        "SELECT model, status, input_tokens, output_tokens, charged_micros FROM api_calls "
        "WHERE user_id = :u ORDER BY id",
        u=USER,
    )
    assert [tuple(c) for c in calls] == [
        ("claude-sonnet-5-5", "ok", 1000, 200, SONNET_CHARGE),
        ("claude-haiku-5-5", "ok", 1000, 200, HAIKU_CHARGE),
    ]
    assert await balance(engine, USER) == STARTER_MICROS - SONNET_CHARGE - HAIKU_CHARGE


async def test_an_unpriced_chat_model_stops_startup_with_one_line(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC", "GOOGLE", "GEMINI", "TELEGRAM"))
    }
    env.update(
        bot_env(
            database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none",
            data_dir=tmp_path,
            telegram_url="http://127.0.0.1:9",
            anthropic_url="http://127.0.0.1:9",
            gemini_url="http://127.0.0.1:9",
            CHAT_MODELS="claude-sonnet-5-5,claude-nonexistent-1",
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=str(PROJECT_ROOT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert stdout == b""
    [line] = stderr.decode().splitlines()
    assert line.startswith("No price for model 'claude-nonexistent-1' (CHAT_MODELS)")
    assert "PRICES_FILE" in line, line
