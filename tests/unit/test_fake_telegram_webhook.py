"""The fake Telegram's webhook delivery, against a real local HTTP receiver and the real aiogram
client: secret header, per-chat order, re-send on non-2xx, 409 for getUpdates, deleteWebhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramConflictError
from aiohttp import web

from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:TEST-fake-token-not-real"


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[int, str | None]] = []
        self.fail_next: set[int] = set()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        update_id = body["update_id"]
        self.received.append((update_id, request.headers.get("X-Telegram-Bot-Api-Secret-Token")))
        if update_id in self.fail_next:
            self.fail_next.discard(update_id)
            return web.Response(status=500)
        await asyncio.sleep(0.05)
        return web.json_response({})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    receiver.runner = web.AppRunner(app)
    await receiver.runner.setup()
    site = web.TCPSite(receiver.runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{receiver.runner.addresses[0][1]}/hook"
    yield receiver
    await receiver.runner.cleanup()


async def test_webhook_delivery(receiver: Receiver) -> None:
    async with FakeTelegram(token=TOKEN) as telegram:
        telegram.webhook_retry_delay = 0.05
        bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)))
        try:
            first = telegram.push_text(1, "one")
            second = telegram.push_text(1, "two")
            other = telegram.push_text(2, "elsewhere")
            receiver.fail_next.add(first)
            await bot.set_webhook(
                receiver.url, secret_token="s3cret", allowed_updates=["message"], max_connections=5
            )
            await telegram.wait_for(lambda: not telegram.pending_update_ids(), timeout=10)
            chat_one = [u for u, _ in receiver.received if u in (first, second)]
            assert chat_one == [first, first, second]  # re-sent after the 500, then the next
            assert {secret for _, secret in receiver.received} == {"s3cret"}
            assert other in [u for u, _ in receiver.received]
            info = await bot.get_webhook_info()
            assert info.url == receiver.url
            assert info.allowed_updates == ["message"]
            assert info.max_connections == 5
            assert info.last_error_message is not None
            assert "500" in info.last_error_message
            with pytest.raises(TelegramConflictError):
                await bot.get_updates(timeout=0)
            await bot.delete_webhook()
            telegram.push_text(1, "three")
            await asyncio.sleep(0.3)
            assert len(receiver.received) == 4  # nothing delivered once deleted
            updates = await bot.get_updates(timeout=0)
            assert [u.message.text for u in updates if u.message] == ["three"]
        finally:
            await bot.session.close()


async def test_set_webhook_validates_the_secret() -> None:
    async with FakeTelegram(token=TOKEN) as telegram:
        bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)))
        try:
            with pytest.raises(Exception, match="unallowed characters"):
                await bot.set_webhook("https://example.invalid/hook", secret_token="no spaces!")
            assert telegram.webhook is None
        finally:
            await bot.session.close()
