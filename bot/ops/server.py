"""The operations HTTP server on METRICS_LISTEN: ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import time

import structlog
from aiogram import Bot
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import parse_listen
from bot.db.direct import DirectSQL
from bot.listening import listen
from bot.ops.metrics import Metrics

log = structlog.get_logger(__name__)

CHECK_TIMEOUT = 3.0
# A Telegram check is reused this long, so a scraper or load balancer polling /healthz every
# second does not turn into a getMe per second.
TELEGRAM_CHECK_TTL = 10.0


class Health:
    """200 when the database answers and Telegram answers getMe, else 503 naming what failed."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], bot: Bot) -> None:
        self._sql = DirectSQL.of(sessionmaker)
        self._bot = bot
        self._telegram_ok_until = 0.0

    async def check(self) -> dict[str, str]:
        database, telegram = await asyncio.gather(self._database(), self._telegram())
        return {"database": database, "telegram": telegram}

    async def _database(self) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._sql.fetchrow("SELECT 1")
        except Exception as exc:
            log.warning("health_database_failed", error=type(exc).__name__)
            return "unreachable"
        return "ok"

    async def _telegram(self) -> str:
        if time.monotonic() < self._telegram_ok_until:
            return "ok"
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._bot.get_me(request_timeout=int(CHECK_TIMEOUT))
        except Exception as exc:
            log.warning("health_telegram_failed", error=type(exc).__name__)
            return "unreachable"
        self._telegram_ok_until = time.monotonic() + TELEGRAM_CHECK_TTL
        return "ok"


class OpsServer:
    def __init__(
        self,
        listen: str,
        *,
        metrics: Metrics,
        health: Health,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        self._host, self._port = parse_listen(listen)
        self._metrics = metrics
        self._health = health
        self._sessionmaker = sessionmaker
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._scrape)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        addresses = await listen(self._runner, self._host, self._port, setting="METRICS_LISTEN")
        log.info("ops_server_listening", addresses=addresses)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        checks = await self._health.check()
        healthy = all(v == "ok" for v in checks.values())
        return web.json_response(checks, status=200 if healthy else 503)

    async def _scrape(self, _: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._metrics.refresh_shared(self._sessionmaker)
        except Exception as exc:
            log.warning("metrics_refresh_failed", error=type(exc).__name__)
        return web.Response(
            body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
