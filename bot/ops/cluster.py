"""Webhook mode with several replicas on one Postgres: what a replica runs besides the bot itself.

Start: register this replica's lease, listen for Telegram's posts, set the webhook (one replica at
a time), renew the lease (and pace to this replica's share of the global rate), and compete for
leadership, whose holder runs the background jobs: the hold sweeper, file housekeeping and the
recovery of dead replicas' turns.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog
from aiogram import Bot, Dispatcher
from aiogram.utils.i18n import I18n
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.i18n import DEFAULT_LOCALE, N_, pick_locale
from bot.ops.replicas import (
    WEBHOOK_LOCK,
    Job,
    Leadership,
    Replica,
    run_heartbeat,
    run_recovery,
)
from bot.services.files import FileService
from bot.services.inbox import Inbox
from bot.services.ledger import Ledger
from bot.services.users import UserService
from bot.telegram.flood import PACING_HEADROOM, OutgoingPacer
from bot.telegram.webhook import WebhookServer, register_webhook

log = structlog.get_logger(__name__)

REPLICA_LOST_NOTICE = N_(
    "The server working on your last message stopped before it was finished. "
    "Nothing was charged for the unfinished part. Please send it again."
)


@dataclass
class ClusterDeps:
    settings: Settings
    bot: Bot
    dispatcher: Dispatcher
    inbox: Inbox
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    billing: Ledger
    files: FileService
    pacer: OutgoingPacer
    allowed_updates: tuple[str, ...]
    users: UserService | None = None  # with i18n: the lost-turn notice in the person's language
    i18n: I18n | None = None
    # More jobs for the leader alone (the inbox purge, Stars reconciliation), each run until stop.
    leader_jobs: list[Job] = field(default_factory=list)


@dataclass
class Cluster:
    deps: ClusterDeps
    replica: Replica
    webhook: WebhookServer
    leadership: Leadership | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop_jobs: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(cls, deps: ClusterDeps) -> Cluster:
        settings = deps.settings
        assert settings.WEBHOOK_URL is not None
        assert settings.WEBHOOK_SECRET is not None
        replica = Replica(deps.sessionmaker, lease_seconds=settings.REPLICA_LEASE_SECONDS)
        webhook = WebhookServer(
            deps.bot,
            deps.dispatcher,
            deps.inbox,
            url=settings.WEBHOOK_URL,
            secret=settings.WEBHOOK_SECRET.get_secret_value(),
            listen=settings.WEBHOOK_LISTEN,
            claim=replica.claim,
        )
        return cls(deps=deps, replica=replica, webhook=webhook)

    @property
    def check_interval(self) -> float:
        return self.replica.lease_seconds / 3

    async def start(self) -> None:
        deps, settings = self.deps, self.deps.settings
        await self.replica.register()
        await self.webhook.start()
        self.leadership = Leadership(
            deps.engine,
            [self._sweep_holds, self._housekeep_files, self._recover, *deps.leader_jobs],
            retry_seconds=self.check_interval,
        )
        self.tasks.append(
            asyncio.create_task(
                run_heartbeat(
                    self.replica, self._pace_share, self._stop_jobs, interval=self.check_interval
                )
            )
        )
        self.tasks.append(asyncio.create_task(self.leadership.run(self._stop_jobs)))
        assert settings.WEBHOOK_URL is not None
        assert settings.WEBHOOK_SECRET is not None
        await register_webhook(
            deps.bot,
            deps.engine,
            url=settings.WEBHOOK_URL,
            secret=settings.WEBHOOK_SECRET.get_secret_value(),
            allowed_updates=deps.allowed_updates,
            lock_key=WEBHOOK_LOCK,
        )

    async def serve(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def stop_taking(self, grace: float) -> None:
        """Stop taking updates and let those taken reach the turn scheduler."""
        await self.webhook.close()
        await self.webhook.wait_dispatched(timeout=grace)

    async def close(self) -> None:
        """After the turns ended: stop the jobs and let the next leader take over at once."""
        self._stop_jobs.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=10)
        with contextlib.suppress(Exception):
            await self.replica.retire()

    def _pace_share(self, live: int) -> None:
        rate = self.deps.settings.TELEGRAM_GLOBAL_RATE
        self.deps.pacer.set_global_rate(rate * PACING_HEADROOM / live, max(1, int(rate / live)))

    async def _sweep_holds(self, stop: asyncio.Event) -> None:
        await self.deps.billing.run_sweeper(60.0, stop)

    async def _housekeep_files(self, stop: asyncio.Event) -> None:
        await self.deps.files.run_housekeeping(
            self.deps.settings.FILE_HOUSEKEEPING_INTERVAL_SECONDS, stop
        )

    async def _recover(self, stop: asyncio.Event) -> None:
        await run_recovery(self.replica, self._notify, stop, interval=self.check_interval)

    async def _notify(self, chat_id: int) -> None:
        await self.deps.bot.send_message(chat_id, await self._lost_notice(chat_id))

    async def _lost_notice(self, chat_id: int) -> str:
        """In the person's language in a private chat (its id is theirs); in a group, English."""
        users, i18n = self.deps.users, self.deps.i18n
        if users is None or i18n is None:
            return REPLICA_LOST_NOTICE
        locale = pick_locale(*await users.language_of(chat_id)) if chat_id > 0 else DEFAULT_LOCALE
        return i18n.gettext(REPLICA_LOST_NOTICE, locale=locale)
