"""Flood control against a local Bot API server, driven by the real aiogram Bot."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiohttp import web
from structlog.testing import capture_logs

from bot.telegram.flood import OutgoingPacer, PacingMiddleware, RetryAfterMiddleware
from tests.netutil import refused_port

TOKEN = "123456:TEST-fake-token-not-real"
FLOOD = (
    429,
    {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    },
)
SERVER_ERROR = (500, {"ok": False, "error_code": 500, "description": "Internal Server Error"})
BAD_GATEWAY = (502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
HANG_UP = (0, {})  # the server drops the connection without answering


@dataclass
class Call:
    method: str
    at: float
    form: dict[str, str]


@dataclass
class FakeBotApi:
    """Answers like the Bot API; scripted failures per method are served first, in order."""

    script: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def fail(self, method: str, *responses: tuple[int, dict[str, Any]]) -> None:
        self.script.setdefault(method, []).extend(responses)

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.match_info["token"] == TOKEN
        method = request.match_info["method"]
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.calls.append(Call(method, time.monotonic(), form))
        if self.script.get(method):
            status, body = self.script[method].pop(0)
            if status == 0:
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            return web.json_response(body, status=status)
        return web.json_response({"ok": True, "result": self.success(method, form)})

    @staticmethod
    def success(method: str, form: dict[str, str]) -> Any:
        if method != "sendMessage":
            return True
        chat_id = int(form["chat_id"])
        return {
            "message_id": 100,
            "date": 1700000000,
            "chat": {"id": chat_id, "type": "private", "first_name": "Alice"},
            "text": form.get("text", ""),
        }


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeBotApi, str]]:
    fake = FakeBotApi()
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def make_bot(base_url: str) -> Bot:
    return Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))


@pytest.fixture
async def bot(api: tuple[FakeBotApi, str]) -> AsyncIterator[Bot]:
    bot = make_bot(api[1])
    yield bot
    await bot.session.close()


@pytest.fixture
def fake(api: tuple[FakeBotApi, str]) -> FakeBotApi:
    return api[0]


class FakeTime:
    """A clock that moves only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def logged_values(logs: list[dict[str, Any]]) -> str:
    return json.dumps(logs, default=str)


async def test_flood_wait_is_honoured_then_the_message_goes(bot: Bot, fake: FakeBotApi) -> None:
    bot.session.middleware(RetryAfterMiddleware())
    fake.fail("sendMessage", FLOOD)

    with capture_logs() as logs:
        message = await bot.send_message(chat_id=42, text="hello")

    assert message.text == "hello"
    first, second = fake.calls_to("sendMessage")
    assert second.at - first.at >= 1.0
    [event] = [e for e in logs if e["event"] == "telegram_retry_after"]
    assert event["method"] == "sendMessage"
    assert event["retry_after"] == 1
    assert TOKEN not in logged_values(logs)
    assert "127.0.0.1" not in logged_values(logs)


async def test_flood_waits_beyond_the_budget_surface(bot: Bot, fake: FakeBotApi) -> None:
    bot.session.middleware(RetryAfterMiddleware(max_wait=1.5))
    fake.fail("sendMessage", FLOOD, FLOOD)

    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(TelegramRetryAfter):
        await bot.send_message(chat_id=42, text="hello")

    assert len(fake.calls_to("sendMessage")) == 2
    assert 1.0 <= time.monotonic() - started < 1.5
    assert [e["event"] for e in logs] == ["telegram_retry_after", "telegram_retry_after_exhausted"]


async def test_a_wait_longer_than_the_budget_is_not_slept_at_all(
    bot: Bot, fake: FakeBotApi
) -> None:
    bot.session.middleware(RetryAfterMiddleware(max_wait=0.5))
    fake.fail("sendMessage", FLOOD)

    started = time.monotonic()
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(chat_id=42, text="hello")

    assert len(fake.calls_to("sendMessage")) == 1
    assert time.monotonic() - started < 0.5


async def test_server_errors_are_retried_twice_then_raised(bot: Bot, fake: FakeBotApi) -> None:
    bot.session.middleware(RetryAfterMiddleware())
    fake.fail("sendMessage", SERVER_ERROR, BAD_GATEWAY, SERVER_ERROR)

    with pytest.raises(TelegramServerError):
        await bot.send_message(chat_id=42, text="hello")

    first, second, third = fake.calls_to("sendMessage")
    assert second.at - first.at >= 0.5
    assert third.at - second.at >= 1.0


async def test_a_dropped_connection_is_retried(bot: Bot, fake: FakeBotApi) -> None:
    bot.session.middleware(RetryAfterMiddleware(failure_backoff=(0.05, 0.1)))
    fake.fail("sendMessage", HANG_UP)

    message = await bot.send_message(chat_id=42, text="hello")

    assert message.text == "hello"
    assert len(fake.calls_to("sendMessage")) == 2


async def test_network_failures_give_up_after_the_backoff() -> None:
    with refused_port() as port:
        bot = make_bot(f"http://127.0.0.1:{port}")
        bot.session.middleware(RetryAfterMiddleware(failure_backoff=(0.05, 0.1)))
        with capture_logs() as logs, pytest.raises(TelegramNetworkError):
            await bot.send_message(chat_id=42, text="hello")
        await bot.session.close()

    assert [e["attempt"] for e in logs if e["event"] == "telegram_request_retry"] == [1, 2]
    assert TOKEN not in logged_values(logs)


async def test_get_updates_is_never_retried_on_failure(bot: Bot, fake: FakeBotApi) -> None:
    bot.session.middleware(RetryAfterMiddleware())
    fake.fail("getUpdates", SERVER_ERROR)

    with pytest.raises(TelegramServerError):
        await bot.get_updates(timeout=0)

    assert len(fake.calls_to("getUpdates")) == 1


async def test_fifth_message_to_a_chat_waits_while_another_chat_goes_at_once(
    bot: Bot, fake: FakeBotApi
) -> None:
    bot.session.middleware(RetryAfterMiddleware())
    bot.session.middleware(PacingMiddleware(OutgoingPacer(per_chat_burst=4)))

    started = time.monotonic()
    burst = [asyncio.create_task(bot.send_message(chat_id=1, text=f"part {i}")) for i in range(5)]
    await asyncio.sleep(0.05)
    await bot.send_message(chat_id=2, text="other chat")
    other_chat_done = time.monotonic() - started
    await asyncio.gather(*burst)

    arrivals = sorted(call.at - started for call in fake.calls if call.form["chat_id"] == "1")
    assert len(arrivals) == 5
    assert arrivals[3] < 0.3, "the burst goes out at once"
    assert 0.95 <= arrivals[4] < 1.5
    assert other_chat_done < 0.3


async def test_chat_actions_and_drafts_are_not_paced(bot: Bot, fake: FakeBotApi) -> None:
    pacer = OutgoingPacer(per_chat_burst=1, per_chat_rate=0.1)
    bot.session.middleware(PacingMiddleware(pacer))

    started = time.monotonic()
    for _ in range(3):
        await bot.send_chat_action(chat_id=42, action="typing")
        await bot.send_message_draft(chat_id=42, draft_id=7, text="thinking")
    await bot.send_message(chat_id=42, text="answer")

    assert time.monotonic() - started < 0.5
    assert len(fake.calls) == 7


async def test_a_flood_wait_pauses_the_chat_for_later_messages(bot: Bot, fake: FakeBotApi) -> None:
    fake_time = FakeTime()
    pacer = OutgoingPacer(clock=fake_time.clock, sleep=fake_time.sleep)
    bot.session.middleware(PacingMiddleware(pacer))
    fake.fail("sendMessage", FLOOD)

    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(chat_id=42, text="first")
    await bot.send_message(chat_id=42, text="second")
    await bot.send_message(chat_id=43, text="another chat")

    assert fake_time.sleeps == [pytest.approx(1.0)]


async def test_pacer_gives_a_burst_then_one_message_per_second() -> None:
    fake_time = FakeTime()
    pacer = OutgoingPacer(per_chat_burst=3, clock=fake_time.clock, sleep=fake_time.sleep)

    waits = [await pacer.acquire(42) for _ in range(5)]

    assert waits == [0.0, 0.0, 0.0, pytest.approx(1.0), pytest.approx(1.0)]
    assert await pacer.acquire(43) == 0.0


async def test_first_message_to_a_chat_does_not_yield_to_the_loop() -> None:
    pacer = OutgoingPacer()
    coroutine = pacer.acquire(42)

    with pytest.raises(StopIteration) as finished:
        coroutine.send(None)  # runs to completion without suspending once

    assert finished.value.value < 0.01


async def test_global_cap_spaces_messages_across_chats() -> None:
    fake_time = FakeTime()
    pacer = OutgoingPacer(
        global_rate=30.0, global_burst=30, clock=fake_time.clock, sleep=fake_time.sleep
    )

    waits = [await pacer.acquire(chat) for chat in range(31)]

    assert waits[:30] == [0.0] * 30
    assert waits[30] == pytest.approx(1 / 30)


async def test_messages_without_a_chat_are_paced_globally_only() -> None:
    fake_time = FakeTime()
    pacer = OutgoingPacer(global_burst=2, clock=fake_time.clock, sleep=fake_time.sleep)

    waits = [await pacer.acquire(None) for _ in range(3)]

    assert waits == [0.0, 0.0, pytest.approx(1 / 30)]
    assert pacer.tracked_chats == 0


async def test_idle_chats_are_forgotten() -> None:
    fake_time = FakeTime()
    pacer = OutgoingPacer(sweep_every=8, clock=fake_time.clock, sleep=fake_time.sleep)
    for chat in range(8):
        await pacer.acquire(chat)
    fake_time.now += 10.0

    await pacer.acquire(1000)

    assert pacer.tracked_chats == 1
    for chat in range(1001, 1100):
        await pacer.acquire(chat)
        fake_time.now += 5.0
    assert pacer.tracked_chats <= 8


async def test_pacer_sends_at_most_20_messages_a_minute_to_a_group() -> None:
    fake_time = FakeTime()
    pacer = OutgoingPacer(per_chat_burst=3, clock=fake_time.clock, sleep=fake_time.sleep)
    group = -1001234567890
    sent_at = []
    for _ in range(45):
        await pacer.acquire(group)
        sent_at.append(fake_time.now)

    most_in_a_minute = max(sum(1 for u in sent_at if t <= u < t + 60.0) for t in sent_at)
    assert most_in_a_minute == 20
    assert sent_at[1] - sent_at[0] == pytest.approx(60.0 / (20 * 0.97))  # evenly, no burst
    assert await pacer.acquire(42) == 0.0  # a private chat keeps its own pace
