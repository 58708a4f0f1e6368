"""/healthz and /metrics on METRICS_LISTEN, scraped over real HTTP from the real bot process."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp

from tests.e2e.conftest import StartBot
from tests.e2e.test_access_and_caps import echo_reply
from tests.e2e.test_chat import ask
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.telegram import FakeTelegram
from tests.harness import BotProcess


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in the Prometheus text format; 0 when absent."""
    for line in exposition.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if metric == name and found == labels:
            return float(value)
    return 0.0


async def metrics_port(process: BotProcess) -> int:
    """The port the ops server took (METRICS_LISTEN with port 0), from its log line: a port
    chosen by the test beforehand could be taken by another test's server meanwhile."""
    await process.wait_for_log("ops_server_listening")
    for line in process.lines:
        if "ops_server_listening" in line:
            [address] = json.loads(line)["addresses"]
            return int(address.rpartition(":")[2])
    raise AssertionError("no ops_server_listening line")


async def test_metrics_count_turns_calls_charges_and_429s(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.set_default(echo_reply())
    port = await metrics_port(await start_bot(METRICS_LISTEN="127.0.0.1:0"))
    base = f"http://127.0.0.1:{port}"
    user = 71001
    telegram.fail("sendMessage", error_code=429, retry_after=1, times=1, chat_id=user)
    assert await ask(telegram, user, "hello metrics", timeout=20) == ["Answer to: hello metrics"]

    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # the turn is counted once its end is recorded, just after the answer
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                body = await response.text()
            if sample(body, "bot_turns_total", outcome="answered") == 1:
                break
            await asyncio.sleep(0.05)
        assert sample(body, "bot_turns_total", outcome="answered") == 1
        assert sample(body, "bot_turn_seconds_count") == 1
        chat_calls = sample(
            body,
            "bot_provider_calls_total",
            provider="anthropic",
            model="claude-sonnet-5-5",
            purpose="chat",
            status="ok",
        )
        assert chat_calls == 1
        assert sample(body, "bot_charged_micros_total") > 0
        assert (
            sample(
                body,
                "bot_provider_cost_micros_total",
                provider="anthropic",
                model="claude-sonnet-5-5",
            )
            > 0
        )
        assert sample(body, "bot_telegram_retry_after_total") == 1
        assert "bot_holds_open 0.0" in body
        assert "bot_inbox_lag_seconds 0.0" in body

        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"database": "ok", "telegram": "ok"}


async def test_healthz_is_503_while_telegram_refuses(
    start_bot: StartBot, telegram: FakeTelegram
) -> None:
    port = await metrics_port(await start_bot(METRICS_LISTEN="127.0.0.1:0"))
    telegram.fail("getMe", error_code=401, description="Unauthorized", times=1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 503
            assert await response.json() == {"database": "ok", "telegram": "unreachable"}
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
