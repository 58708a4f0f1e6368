"""A Bot API server that answers in shapes Telegram never gives (a proxy's `{"message": ...}` with
HTTP 500, a result that does not decode) or ignores getUpdates' timeout: every failure is logged
and handled, the turn ends with the answer, and nothing dies in the background."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import ask, final_texts, streamed_reply
from tests.fakes.anthropic import Delay, FakeAnthropic, text_reply
from tests.fakes.telegram import FakeTelegram

PROXY_ERROR = '{"message": "upstream connect error"}'
NOT_A_RESULT = '{"ok": true, "result": {"surprise": 1}}'
ANSWER = "The answer streams for a while. " * 12


def _assert_no_dead_tasks(log: str) -> None:
    assert "Task exception was never retrieved" not in log
    assert "Traceback" not in log


async def test_a_draft_that_fails_oddly_stops_drafts_and_the_answer_still_arrives(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    bot = await start_bot()
    user = 7101
    telegram.fail_raw("sendMessageDraft", status=500, body=PROXY_ERROR, times=5)
    anthropic_fake.script(streamed_reply(ANSWER, tokens_per_second=100.0))
    [reply] = await ask(telegram, user, "Tell me something long.", timeout=30)
    assert reply.startswith("The answer streams")
    # One failed draft, then no more drafts in that turn (they would keep failing).
    assert len(telegram.calls("sendMessageDraft")) == 1
    assert "drafts_disabled" in bot.log_text()
    _assert_no_dead_tasks(bot.log_text())


async def test_a_chat_action_that_does_not_decode_keeps_the_action_loop_alive(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    bot = await start_bot()
    user = 7102
    telegram.fail_raw("sendChatAction", status=200, body=NOT_A_RESULT, times=1)
    anthropic_fake.script(Delay(5.5, text_reply("Done thinking.")))
    assert await ask(telegram, user, "Think hard.", timeout=30) == ["Done thinking."]
    actions = telegram.calls("sendChatAction")
    assert len(actions) >= 2, "the chat action is refreshed after the failed one"
    assert not actions[0].ok and actions[1].ok
    assert bot.log_text().count("chat_action_failed") == 1
    _assert_no_dead_tasks(bot.log_text())


async def test_the_admin_gets_the_top_up_confirmation_when_the_notice_fails_oddly(
    start_bot: StartBot, telegram: FakeTelegram
) -> None:
    admin, user = 7103, 7104
    bot = await start_bot(ADMIN_USER_IDS=str(admin))
    telegram.push_text(user, "/start")
    await telegram.wait_for_sent(user, 1, timeout=20)
    telegram.push_text(admin, "/start")
    await telegram.wait_for_sent(admin, 1, timeout=20)
    telegram.fail_raw("sendMessage", status=500, body=PROXY_ERROR, times=3, chat_id=user)
    telegram.push_text(admin, f"/topup {user} 5")
    await telegram.wait_for_sent(admin, 2, timeout=20)
    confirmation = final_texts(telegram, admin)[-1]
    assert confirmation.startswith(f"Topped up {user} by $5.00")
    assert "Could not notify them" in confirmation
    assert "topup_notice_failed" in bot.log_text()
    _assert_no_dead_tasks(bot.log_text())


async def test_polls_that_come_back_empty_at_once_are_spaced(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    await start_bot()
    telegram.answer_polls_at_once()
    before = len(telegram.get_updates_times)
    await asyncio.sleep(2.0)
    polls = len(telegram.get_updates_times) - before
    assert polls <= 8, f"{polls} getUpdates in 2 s"
    # Messages still arrive promptly.
    anthropic_fake.script(text_reply("Still here."))
    assert await ask(telegram, 7105, "Hello?", timeout=10) == ["Still here."]


async def test_polling_survives_answers_that_do_not_decode(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    bot = await start_bot()
    telegram.fail_raw("getUpdates", status=200, body=NOT_A_RESULT, times=1)
    telegram.fail_raw("getUpdates", status=502, body="<html>Bad Gateway</html>", times=1)
    telegram.answer_polls_at_once()  # end the poll in flight, so the scripted answers come next
    anthropic_fake.script(text_reply("Polling goes on."))
    assert await ask(telegram, 7106, "Still polling?", timeout=20) == ["Polling goes on."]
    # Both odd answers were met, and polling went on after them.
    await telegram.wait_for(
        lambda: [r.error_code for r in telegram.calls("getUpdates")][-3:-1] == [200, 502],
        timeout=15,
    )
    assert bot.log_text().count("polling_failed") >= 2, [
        (r.method, r.error_code, r.description) for r in telegram.calls("getUpdates")
    ]
    _assert_no_dead_tasks(bot.log_text())


async def test_the_healthcheck_follows_the_poll_loop(
    start_bot: StartBot, telegram: FakeTelegram, tmp_path: Path
) -> None:
    """`python -m bot.health` (the compose healthcheck) passes while the bot polls and fails
    once it has stopped long enough."""
    data_dir = tmp_path / "data"
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    bot = await start_bot()
    healthy = subprocess.run(
        [sys.executable, "-m", "bot.health"], env=env, capture_output=True, text=True, check=False
    )
    assert healthy.returncode == 0, healthy.stderr
    await bot.stop()
    beat = data_dir / "heartbeat"
    os.utime(beat, (time.time() - 600, time.time() - 600))
    stale = subprocess.run(
        [sys.executable, "-m", "bot.health"], env=env, capture_output=True, text=True, check=False
    )
    assert stale.returncode == 1
    assert "stuck" in stale.stderr
