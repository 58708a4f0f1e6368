"""Webhook mode (design section 12): Telegram posts updates to WEBHOOK_URL's path on WEBHOOK_LISTEN.

Each request is checked against the secret Telegram echoes in `X-Telegram-Bot-Api-Secret-Token`
(403 otherwise), recorded in the inbox and claimed by this replica before it is answered: a failed
insert or claim answers 500, so Telegram sends it again; an update already claimed answers 200 and
stops there.
Then it is handled in the background through the same dispatcher polling feeds, one sender's
updates in arrival order. aiogram's own SimpleRequestHandler answers 200 before anything is
stored, so a crash would lose the update; this one never does.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import structlog
from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import parse_listen
from bot.listening import listen
from bot.services.inbox import Inbox
from bot.telegram.ordered import OrderedDispatch
from bot.telegram.poller import inbound_record

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
DEFAULT_LISTEN = "0.0.0.0:8080"
MAX_CONNECTIONS = 40
Claim = Callable[[Sequence[int]], Awaitable[set[int]]]


def webhook_path(url: str) -> str:
    return urlsplit(url).path or "/"


class WebhookServer:
    def __init__(
        self,
        bot: Bot,
        dispatcher: Dispatcher,
        inbox: Inbox,
        *,
        url: str,
        secret: str,
        listen: str | None,
        claim: Claim | None = None,
    ) -> None:
        self._bot = bot
        self._inbox = inbox
        self._path = webhook_path(url)
        self._secret = secret.encode()
        self._host, self._port = parse_listen(listen or DEFAULT_LISTEN)
        self._claim = claim
        self._runner: web.AppRunner | None = None
        self._ordered = OrderedDispatch(bot, dispatcher)
        self.accepting = True

    def application(self) -> web.Application:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_post(self._path, self._receive)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        addresses = await listen(self._runner, self._host, self._port, setting="WEBHOOK_LISTEN")
        log.info("webhook_listening", addresses=addresses, path=self._path)

    async def close(self) -> None:
        """Stop taking updates (Telegram re-sends what gets no answer to another replica)."""
        self.accepting = False
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_dispatched(self, timeout: float) -> None:
        await self._ordered.wait(timeout)

    async def _receive(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not secrets.compare_digest(given, self._secret):
            log.warning("webhook_secret_mismatch", remote=request.remote)
            return web.Response(status=403, text="Forbidden")
        if not self.accepting:
            return web.Response(status=503, text="Stopping")
        try:
            update = Update.model_validate(await request.json(), context={"bot": self._bot})
        except (ValueError, ValidationError):
            log.warning("webhook_bad_update")
            return web.Response(status=400, text="Bad update")
        record = inbound_record(update)
        try:
            fresh = await self._inbox.record([record])
            if self._claim is not None:
                # Claimed here (and handled) only if no replica has claimed it: an update whose
                # claim failed after it was recorded is taken when Telegram sends it again.
                fresh = await self._claim([update.update_id])
        except Exception:
            log.exception("webhook_record_failed", update_id=update.update_id)
            return web.Response(status=500, text="Not recorded; send it again")
        if update.update_id in fresh:
            self._ordered.dispatch(update, record.user_id)
        else:
            log.info("duplicate_update_ignored", update_id=update.update_id)
        return web.json_response({})


async def register_webhook(
    bot: Bot,
    engine: AsyncEngine,
    *,
    url: str,
    secret: str,
    allowed_updates: Sequence[str],
    lock_key: int,
) -> bool:
    """setWebhook from one replica at a time (a transaction-level advisory lock); a replica that
    finds the lock taken leaves it to the one holding it. True when this replica set it."""
    async with engine.connect() as conn:
        got = await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key})
        if not got:
            log.info("webhook_set_by_another_replica")
            await conn.rollback()
            return False
        await bot.set_webhook(
            url,
            secret_token=secret,
            allowed_updates=list(allowed_updates),
            max_connections=MAX_CONNECTIONS,
            drop_pending_updates=False,
        )
        await conn.commit()
    log.info("webhook_set", url=url, allowed_updates=list(allowed_updates))
    return True


async def leave_webhook_mode(bot: Bot) -> None:
    """Polling after webhook mode: getUpdates works only once the webhook is deleted. Pending
    updates are kept (a selling bot must not drop a successful_payment)."""
    with contextlib.suppress(Exception):
        info = await bot.get_webhook_info()
        if not info.url:
            return
    await bot.delete_webhook(drop_pending_updates=False)
    log.info("webhook_deleted")
