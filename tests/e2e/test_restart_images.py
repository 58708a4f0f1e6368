"""Restarts in the middle of an image generation: SIGTERM (graceful, within the grace period) and
SIGKILL (nothing graceful). Either way no hold stays open, nothing is charged for an image that
was not delivered, and after the restart the person is told to send the request again."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot, assert_no_leaks
from tests.e2e.test_chat import (
    final_texts,
    open_holds,
    poll_until,
    rows,
    scalar,
    update_status,
    wait_update_finished,
)
from tests.e2e.test_images import IMAGE_HOLD, last_image_cost
from tests.fakes.anthropic import FakeAnthropic, text_reply, tool_use_reply
from tests.fakes.gemini import Delay, FakeGemini, image_reply
from tests.fakes.telegram import FakeTelegram
from tests.harness import BotProcess, bot_env
from tests.reliability_figures import RESTART_CASES

STARTER_USD = "5.00"
STARTER_MICROS = 5_000_000
GRACE_SECONDS = 1.0
GENERATION_SECONDS = 30.0
PROMPT = "a castle at night"


async def start_drawing(
    telegram: FakeTelegram, anthropic_fake: FakeAnthropic, gemini_fake: FakeGemini, user: int
) -> int:
    """The user asks for an image; returns the update id once Gemini is working on it."""
    anthropic_fake.script(tool_use_reply("generate_image", {"prompt": PROMPT}))
    gemini_fake.script(Delay(GENERATION_SECONDS, image_reply()))
    update_id = telegram.push_text(user, f"draw {PROMPT}")
    await gemini_fake.wait_for_requests(1, timeout=15)
    return update_id


async def api_calls(engine: AsyncEngine, user: int) -> list[Any]:
    return await rows(
        engine,
        "SELECT purpose, status, charged_micros, provider_cost_unknown FROM api_calls "
        "WHERE user_id = :u ORDER BY id",
        u=user,
    )


async def assert_charged_only_for_what_was_delivered(
    engine: AsyncEngine, telegram: FakeTelegram, user: int
) -> None:
    """The first Claude call (it asked for the tool) is charged; the image is not."""
    calls = await api_calls(engine, user)
    assert [c for c in calls if c[0] == "generate_image" and (c[1] == "ok" or c[2] != 0)] == []
    charged = sum(c[2] for c in calls)
    assert [c[0] for c in calls if c[2] > 0] == ["chat"]
    balance = await scalar(engine, "SELECT balance_micros FROM users WHERE id = :u", u=user)
    assert balance == STARTER_MICROS - charged
    ledger = await scalar(
        engine,
        "SELECT COALESCE(SUM(amount_micros), 0) FROM balance_operations WHERE user_id = :u",
        u=user,
    )
    assert ledger == balance
    assert [s for s in telegram.sent(user) if s.method in ("sendPhoto", "sendDocument")] == []
    assert await scalar(engine, "SELECT count(*) FROM user_files WHERE user_id = :u", u=user) == 0


async def assert_told_to_resend(telegram: FakeTelegram, engine: AsyncEngine, user: int) -> None:
    [notice] = await telegram.wait_for_sent(user, 1, timeout=15)
    assert "send it again" in (notice.text or "")
    assert "Nothing was charged" in (notice.text or "")


async def assert_resend_works(
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
    user: int,
) -> None:
    """Sending the request again draws the image and charges for it once."""
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": PROMPT}), text_reply("Here it is.")
    )
    gemini_fake.script(image_reply())
    before = len(final_texts(telegram, user))
    update_id = telegram.push_text(user, f"draw {PROMPT}")
    await telegram.wait_for_sent(user, before + 2, timeout=20)  # the photo and the text
    assert await wait_update_finished(telegram, engine, update_id, timeout=20) == "answered"
    assert final_texts(telegram, user)[before:] == ["Here it is."]
    images = [c for c in await api_calls(engine, user) if c[0] == "generate_image"]
    assert [c[1:3] for c in images if c[1] == "ok"] == [("ok", last_image_cost(gemini_fake))]
    assert await open_holds(engine) == 0


async def test_sigterm_during_an_image_generation(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    assert "sigterm_during_image_generation" in RESTART_CASES
    bot = await start_bot(
        SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS), STARTER_BALANCE_USD=STARTER_USD
    )
    user = 7101
    update_id = await start_drawing(telegram, anthropic_fake, gemini_fake, user)
    assert await open_holds(engine) == 1  # the image's hold

    started = time.monotonic()
    assert await bot.stop() == 0
    assert time.monotonic() - started < GRACE_SECONDS + 4
    assert await update_status(engine, update_id) == "interrupted"
    assert await open_holds(engine) == 0
    assert len(gemini_fake.requests) == 1
    images = [c for c in await api_calls(engine, user) if c[0] == "generate_image"]
    assert images == [("generate_image", "error", 0, True)]  # Google may bill it: cost unknown
    await assert_charged_only_for_what_was_delivered(engine, telegram, user)
    assert final_texts(telegram, user) == []

    await start_bot(STARTER_BALANCE_USD=STARTER_USD)
    await assert_told_to_resend(telegram, engine, user)

    async def notified() -> bool:
        return await update_status(engine, update_id) == "notified"

    await poll_until(notified, 10, lambda: "the interrupted update is not marked notified")
    await assert_charged_only_for_what_was_delivered(engine, telegram, user)
    await assert_resend_works(telegram, anthropic_fake, gemini_fake, engine, user)


async def start_unmanaged_bot(
    database_url: str,
    data_dir: Path,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
) -> BotProcess:
    """A bot process the `start_bot` fixture does not own (that one expects a clean exit)."""
    env = bot_env(
        database_url=database_url,
        data_dir=data_dir,
        telegram_url=telegram.base_url,
        anthropic_url=anthropic_fake.base_url,
        gemini_url=gemini_fake.base_url,
        STARTER_BALANCE_USD=STARTER_USD,
    )
    bot = BotProcess(env)
    await bot.start_polling(telegram)
    return bot


async def test_sigkill_during_an_image_generation_then_restart(
    start_bot: StartBot,
    database_url: str,
    tmp_path: Path,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    engine: AsyncEngine,
) -> None:
    assert "sigkill_during_image_generation" in RESTART_CASES
    bot = await start_unmanaged_bot(
        database_url, tmp_path / "data", telegram, anthropic_fake, gemini_fake
    )
    user = 7201
    try:
        update_id = await start_drawing(telegram, anthropic_fake, gemini_fake, user)
    finally:
        await bot.kill()
    assert bot.returncode == -signal.SIGKILL
    assert_no_leaks([bot], telegram, anthropic_fake)
    assert await update_status(engine, update_id) == "received"
    [(held_amount,)] = await rows(
        engine, "SELECT amount_micros FROM balance_holds WHERE status = 'held'"
    )
    assert held_amount == IMAGE_HOLD  # stranded by the kill, until the next start

    restarted = await start_bot(STARTER_BALANCE_USD=STARTER_USD)
    await restarted.wait_for_log('"holds_expired"', timeout=15)
    assert await open_holds(engine) == 0
    [(status,)] = await rows(
        engine, "SELECT status FROM balance_holds WHERE idempotency_key LIKE 'img:%'"
    )
    assert status == "expired"
    await assert_told_to_resend(telegram, engine, user)

    async def notified() -> bool:
        return await update_status(engine, update_id) == "notified"

    await poll_until(notified, 10, lambda: "the killed update is not marked notified")
    assert len(gemini_fake.requests) == 1
    await assert_charged_only_for_what_was_delivered(engine, telegram, user)
    await assert_resend_works(telegram, anthropic_fake, gemini_fake, engine, user)
