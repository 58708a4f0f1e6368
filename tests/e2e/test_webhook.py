"""Webhook mode end to end: the real bot process, the fake Telegram posting updates to it.

The update is stored before it is answered (a failed insert answers 500 and Telegram sends it
again), the secret header is checked, a re-sent update is handled once, one replica sets the
webhook with the dispatcher's allowed updates, polling after webhook mode deletes it, and webhook
mode without its URL or secret stops at start-up with one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.session import create_engine
from bot.telegram.dispatcher import ALLOWED_UPDATES
from tests.e2e.conftest import assert_no_leaks
from tests.e2e.test_access_and_caps import echo_reply
from tests.e2e.test_chat import final_texts, wait_update_finished
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.telegram import FakeTelegram
from tests.harness import FAKE_BOT_TOKEN, BotProcess, bot_env
from tests.netutil import free_port

WEBHOOK_SECRET = "test-webhook-secret-not-real_42"
HOOK_PATH = "/tg/hook-1"


def webhook_env(
    database_url: str, data_dir: Path, telegram: FakeTelegram, anthropic: FakeAnthropic, port: int
) -> dict[str, str]:
    return bot_env(
        database_url=database_url,
        data_dir=data_dir,
        telegram_url=telegram.base_url,
        anthropic_url=anthropic.base_url,
        gemini_url="http://127.0.0.1:9",
        BOT_MODE="webhook",
        WEBHOOK_URL=f"http://127.0.0.1:{port}{HOOK_PATH}",
        WEBHOOK_LISTEN=f"127.0.0.1:{port}",
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        REPLICA_LEASE_SECONDS="6",
    )


async def start_webhook_bot(env: dict[str, str], telegram: FakeTelegram) -> BotProcess:
    """Start a webhook-mode process and wait until it listens (its webhook_listening line)."""
    process = BotProcess(env)
    await process.start()
    await process.wait_for_log("webhook_listening", timeout=40)
    return process


@pytest.fixture
async def engine_for(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_webhook_mode_end_to_end(
    database_url: str,
    engine_for: AsyncEngine,
    tmp_path: Path,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
) -> None:
    anthropic_fake.set_default(echo_reply())
    port = free_port()
    env = webhook_env(database_url, tmp_path / "data", telegram, anthropic_fake, port)
    process = await start_webhook_bot(env, telegram)
    processes = [process]
    try:
        await telegram.wait_for(lambda: telegram.webhook is not None, timeout=20)
        [hook] = telegram.webhook_sets
        assert hook.url == f"http://127.0.0.1:{port}{HOOK_PATH}"
        assert hook.secret_token == WEBHOOK_SECRET
        assert hook.allowed_updates == list(ALLOWED_UPDATES)  # the dispatcher's own list
        assert hook.drop_pending_updates is False
        # The leader replica runs the jobs for all, Stars reconciliation among them.
        await telegram.wait_for(lambda: bool(telegram.calls("getStarTransactions")), timeout=20)

        # An ordinary message: posted, stored, answered.
        first = telegram.push_text(81001, "hello webhook")
        await telegram.wait_for_sent(81001, 1, timeout=20)
        assert final_texts(telegram, 81001) == ["Answer to: hello webhook"]
        assert await wait_update_finished(telegram, engine_for, first) == "answered"

        # Without the secret, or with a wrong one: 403, nothing stored.
        url = f"http://127.0.0.1:{port}{HOOK_PATH}"
        forged = {
            "update_id": 999_999_001,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": 81009, "type": "private"},
                "text": "forged",
            },
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=forged) as response:
                assert response.status == 403
            headers = {"X-Telegram-Bot-Api-Secret-Token": "wrong"}
            async with http.post(url, json=forged, headers=headers) as response:
                assert response.status == 403
        async with engine_for.connect() as conn:
            stored = await conn.scalar(
                text("SELECT count(*) FROM inbound_updates WHERE update_id = 999999001")
            )
        assert stored == 0

        # The inbox insert fails: 500, Telegram sends it again, and once stored it is answered.
        failing = telegram._last_update_id + 1
        await _fail_inbox_inserts_of(engine_for, failing)
        assert telegram.push_text(81002, "stored on the second try") == failing
        await telegram.wait_for(
            lambda: any(
                d.update_id == failing and d.status == 500 for d in telegram.webhook_deliveries
            ),
            timeout=20,
        )
        assert final_texts(telegram, 81002) == []
        await _stop_failing(engine_for)
        await telegram.wait_for_sent(81002, 1, timeout=20)
        assert final_texts(telegram, 81002) == ["Answer to: stored on the second try"]
        statuses = [d.status for d in telegram.webhook_deliveries if d.update_id == failing]
        assert statuses[0] == 500
        assert statuses[-1] == 200

        # Telegram re-sends an update it already delivered: acknowledged, not handled again.
        telegram.push_update(
            {
                "update_id": first,
                "message": {
                    "message_id": 1,
                    "date": 0,
                    "chat": {"id": 81001, "type": "private"},
                    "from": {"id": 81001, "is_bot": False, "first_name": "A"},
                    "text": "hello webhook",
                },
            }
        )
        await telegram.wait_for(
            lambda: sum(d.update_id == first for d in telegram.webhook_deliveries) == 2,
            timeout=20,
        )
        await asyncio.sleep(1.0)
        assert final_texts(telegram, 81001) == ["Answer to: hello webhook"]
        assert len(anthropic_fake.message_requests()) == 2

        code = await process.stop()
        assert code == 0, process.log_text()[-3000:]

        # Back to polling: the webhook is deleted and getUpdates works again.
        polling = BotProcess({**env, "BOT_MODE": "polling"})
        processes.append(polling)
        await polling.start_polling(telegram)
        assert telegram.webhook is None
        assert telegram.calls("deleteWebhook")
        telegram.push_text(81003, "polling again")
        await telegram.wait_for_sent(81003, 1, timeout=20)
        assert await polling.stop() == 0
    finally:
        for running in processes:
            await running.stop()
    assert_no_leaks(processes, telegram, anthropic_fake)
    assert not any(WEBHOOK_SECRET in line for p in processes for line in p.lines)


async def _fail_inbox_inserts_of(engine: AsyncEngine, update_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"""
                CREATE FUNCTION test_refuse_update() RETURNS trigger AS $$
                BEGIN
                    IF NEW.update_id = {update_id} THEN
                        RAISE EXCEPTION 'test: inbox unavailable';
                    END IF;
                    RETURN NEW;
                END $$ LANGUAGE plpgsql
                """
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER test_refuse BEFORE INSERT ON inbound_updates "
                "FOR EACH ROW EXECUTE FUNCTION test_refuse_update()"
            )
        )


async def _stop_failing(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DROP TRIGGER test_refuse ON inbound_updates"))
        await conn.execute(text("DROP FUNCTION test_refuse_update()"))


@pytest.mark.parametrize(
    ("missing", "expected"),
    [("WEBHOOK_URL", "the setting WEBHOOK_URL"), ("WEBHOOK_SECRET", "the secret WEBHOOK_SECRET")],
)
async def test_webhook_mode_needs_url_and_secret(
    database_url: str,
    tmp_path: Path,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    missing: str,
    expected: str,
) -> None:
    env = webhook_env(database_url, tmp_path / "data", telegram, anthropic_fake, free_port())
    del env[missing]
    process = BotProcess(env)
    await process.start()
    code = await asyncio.wait_for(process._proc.wait(), 60)  # type: ignore[union-attr]
    await asyncio.sleep(0.2)
    assert code == 2
    lines = [line for line in process.lines if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("BOT_MODE=webhook needs ")
    assert expected in lines[0]
    assert telegram.requests == []
    assert FAKE_BOT_TOKEN not in lines[0]
