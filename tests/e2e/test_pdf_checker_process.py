"""The PDF checker's child process and the bot's life: started in the background once the bot
polls, the same process for PDF after PDF, and gone when the bot stops or is killed."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import StartBot
from tests.e2e.test_images import wait_turn
from tests.e2e.test_restart_images import start_unmanaged_bot
from tests.fakes.anthropic import FakeAnthropic, text_reply
from tests.fakes.gemini import FakeGemini
from tests.fakes.telegram import FakeTelegram
from tests.harness import BotProcess
from tests.media_samples import pdf

USER = 5353


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def checker_pids(bot: BotProcess) -> list[int]:
    events = [json.loads(line) for line in bot.lines if line.startswith("{")]
    return [e["pid"] for e in events if e.get("event") == "pdf_checker_started"]


async def gone(pid: int, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_one_checker_process_serves_the_bot_and_ends_with_it(
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    engine: AsyncEngine,
) -> None:
    bot = await start_bot()
    anthropic_fake.script(text_reply("Hello."))
    assert await wait_turn(engine, telegram.push_text(USER, "hi")) == "answered"
    assert checker_pids(bot) == []  # no PDF yet: no checker process (it holds about 37 MB)

    for n in (2, 3):
        anthropic_fake.script(text_reply(f"A {n}-page report."))
        update = telegram.push_document(
            USER, pdf(n), filename=f"r{n}.pdf", mime_type="application/pdf", caption="what?"
        )
        assert await wait_turn(engine, update) == "answered"
    [pid] = checker_pids(bot)
    assert alive(pid)

    assert await bot.stop() == 0
    assert await gone(pid, timeout=1.0)


async def test_the_checker_process_ends_when_the_bot_is_killed(
    database_url: str,
    tmp_path: Path,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
) -> None:
    bot = await start_unmanaged_bot(
        database_url, tmp_path / "data", telegram, anthropic_fake, gemini_fake
    )
    try:
        anthropic_fake.script(text_reply("A 2-page report."))
        telegram.push_document(
            USER, pdf(2), filename="r.pdf", mime_type="application/pdf", caption="what?"
        )
        await bot.wait_for_log("pdf_checker_started")
        [pid] = checker_pids(bot)
        assert alive(pid)
    finally:
        await bot.kill()
    assert bot.returncode == -signal.SIGKILL
    assert await gone(pid)  # the end of its input ends it
