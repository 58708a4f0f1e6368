"""Running the bot: start-up, background tasks, the restart notice, and an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from datetime import UTC, datetime, timedelta

import structlog
from aiogram.types import BotCommand

from bot.app import Application, build_application
from bot.config import Settings
from bot.db.lifecycle import database
from bot.logs import configure_logging

log = structlog.get_logger(__name__)

BOT_COMMANDS = [
    BotCommand(command="start", description="Greeting and your balance"),
    BotCommand(command="help", description="What I can do, and prices"),
    BotCommand(command="new", description="Start a fresh conversation"),
    BotCommand(command="balance", description="Balance and recent charges"),
    BotCommand(command="usage", description="Spending over the last 30 days"),
]
RESTART_NOTICE = (
    "I was restarted while working on your last message, so it was not finished. "
    "Nothing was charged for the unfinished part. Please send it again."
)


def secret_values(settings: Settings) -> list[str]:
    values = [
        settings.TELEGRAM_BOT_TOKEN.get_secret_value(),
        settings.ANTHROPIC_API_KEY.get_secret_value(),
        settings.GOOGLE_API_KEY.get_secret_value(),
    ]
    if settings.DATABASE_URL is not None:
        from sqlalchemy.engine import make_url

        password = make_url(settings.DATABASE_URL.get_secret_value()).password
        if password:
            values.append(str(password))
    return values


async def run(settings: Settings) -> int:
    configure_logging(
        log_format=settings.LOG_FORMAT, level=settings.LOG_LEVEL, secrets=secret_values(settings)
    )
    boot_time = datetime.now(UTC)
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    async with database(settings) as engine:
        app = build_application(settings, engine)
        try:
            await _start(app, boot_time, stop)
            _exclude_startup_objects_from_gc()
            log.info("bot_started")
            await app.poller.run(stop)
        finally:
            await _shutdown(app)
    log.info("bot_stopped")
    return 0


def _exclude_startup_objects_from_gc() -> None:
    """Start-up leaves about 260k long-lived objects (mostly the SDKs' modules and classes); a full
    collection that scans them takes about 100 ms, a pause every turn in flight would feel. Frozen,
    they are skipped: collections scan only what the running bot creates."""
    gc.freeze()
    log.info("gc_startup_objects_frozen", objects=gc.get_freeze_count())


async def _start(app: Application, boot_time: datetime, stop: asyncio.Event) -> None:
    me = await app.bot.get_me()
    log.info("telegram_connected", bot_username=me.username)
    await app.billing.expire_stale_holds(
        now=boot_time + timedelta(seconds=app.settings.HOLD_TTL_SECONDS)
    )
    app.background.append(asyncio.create_task(app.billing.run_sweeper(60.0, stop)))
    app.background.append(
        asyncio.create_task(
            app.files.run_housekeeping(app.settings.FILE_HOUSEKEEPING_INTERVAL_SECONDS, stop)
        )
    )
    app.background.append(asyncio.create_task(_announce(app, boot_time)))


async def _announce(app: Application, boot_time: datetime) -> None:
    """Set the command menu and tell people whose messages a restart interrupted."""
    try:
        await app.bot.set_my_commands(BOT_COMMANDS)
    except Exception:
        log.exception("set_commands_failed")
    unfinished = await app.inbox.unfinished_before(boot_time)
    told: set[int] = set()
    for item in unfinished:
        if item.chat_id is not None and item.chat_id not in told:
            told.add(item.chat_id)
            try:
                await app.bot.send_message(item.chat_id, RESTART_NOTICE)
            except Exception:
                log.exception("restart_notice_failed", chat_id=item.chat_id)
        await app.inbox.mark(item.update_id, "notified")
    if unfinished:
        log.info("restart_notices_sent", updates=len(unfinished), chats=len(told))


async def _shutdown(app: Application) -> None:
    grace = app.settings.SHUTDOWN_GRACE_SECONDS
    log.info("shutdown_started", grace_seconds=grace)
    await app.poller.wait_dispatched(timeout=min(5.0, grace))
    await app.scheduler.shutdown(grace)
    for task in app.background:
        task.cancel()
    for task in app.background:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await app.bot.session.close()
    await app.anthropic.close()
    with contextlib.suppress(Exception):
        await app.images.aclose()


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
