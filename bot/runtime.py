"""Running the bot: start-up, background tasks, the restart notice, and an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from bot.app import Application, build_application
from bot.builders import secret_values
from bot.config import Settings
from bot.db.lifecycle import database
from bot.db.session import warm_pool
from bot.i18n import DEFAULT_LOCALE, LANGUAGE_NAMES, N_, bot_commands, pick_locale
from bot.logs import configure_logging
from bot.providers.heap import map_large_blocks_separately
from bot.services.pricing import PriceTable
from bot.startup import StartupError, connect_to_telegram
from bot.telegram.webhook import leave_webhook_mode

__all__ = ["StartupError", "run", "secret_values"]

log = structlog.get_logger(__name__)

RESTART_NOTICE = N_(
    "I was restarted while working on your last message, so it was not finished. "
    "Nothing was charged for the unfinished part. Please send it again."
)


async def run(settings: Settings, prices: PriceTable | None = None) -> int:
    configure_logging(
        log_format=settings.LOG_FORMAT, level=settings.LOG_LEVEL, secrets=secret_values(settings)
    )
    map_large_blocks_separately()
    boot_time = datetime.now(UTC)
    stop = asyncio.Event()
    starting = asyncio.current_task()
    assert starting is not None

    def on_signal() -> None:
        # During start-up a signal cancels it wherever it waits (the database, getMe); once
        # polling runs, it asks for a graceful stop.
        stop.set()
        if not started:
            starting.cancel()

    started = False
    _install_signal_handlers(on_signal)
    try:
        async with database(settings) as engine:
            app = build_application(settings, engine, prices)
            app.background.append(asyncio.create_task(warm_pool(engine)))
            try:
                await _start(app, boot_time, stop)
                started = True
                _exclude_startup_objects_from_gc()
                log.info("bot_started", mode=settings.BOT_MODE)
                if app.cluster is not None:
                    await app.cluster.serve(stop)
                else:
                    await app.poller.run(stop)
            finally:
                await _shutdown(app)
    except asyncio.CancelledError:
        if started or not stop.is_set():
            raise
        log.info("startup_interrupted")
        return 0
    log.info("bot_stopped")
    return 0


def _exclude_startup_objects_from_gc() -> None:
    """Start-up leaves about 260k long-lived objects (mostly the SDKs' modules and classes); a full
    collection that scans them takes about 100 ms, a pause every turn in flight would feel. Frozen,
    they are skipped: collections scan only what the running bot creates."""
    gc.freeze()
    log.info("gc_startup_objects_frozen", objects=gc.get_freeze_count())


async def _start(app: Application, boot_time: datetime, stop: asyncio.Event) -> None:
    me = await connect_to_telegram(app.bot, app.settings)
    log.info("telegram_connected", bot_username=me.username)
    if app.s3_blobs is not None:
        await app.s3_blobs.start()
    if app.ops_server is not None:
        await app.ops_server.start()
    if app.cluster is not None:
        # Other replicas' turns are running: their holds and updates are theirs to settle, or
        # the leader's to hand back once their lease runs out.
        await app.cluster.start()
        app.background.append(asyncio.create_task(_set_commands(app)))
        return
    await leave_webhook_mode(app.bot)
    await app.billing.expire_stale_holds(
        now=boot_time + timedelta(seconds=app.settings.HOLD_TTL_SECONDS)
    )
    app.background.append(asyncio.create_task(app.billing.run_sweeper(60.0, stop)))
    app.background.append(
        asyncio.create_task(
            app.files.run_housekeeping(app.settings.FILE_HOUSEKEEPING_INTERVAL_SECONDS, stop)
        )
    )
    app.background.append(
        asyncio.create_task(app.inbox.run_purge(app.settings.INBOX_PURGE_INTERVAL_SECONDS, stop))
    )
    app.background.append(asyncio.create_task(_announce(app, boot_time)))
    app.background.append(
        asyncio.create_task(
            app.payments.run_reconciler(
                app.stars_api, app.settings.STARS_RECONCILE_INTERVAL_SECONDS, stop
            )
        )
    )


async def _set_commands(app: Application) -> None:
    """The command menu, once per language."""
    for locale in LANGUAGE_NAMES:
        try:
            await app.bot.set_my_commands(
                bot_commands(app.i18n, locale),
                language_code=None if locale == DEFAULT_LOCALE else locale,
            )
        except Exception:
            log.exception("set_commands_failed", locale=locale)


async def _announce(app: Application, boot_time: datetime) -> None:
    """Set the command menu and tell people whose messages a restart interrupted."""
    await _set_commands(app)
    unfinished = await app.inbox.unfinished_before(boot_time)
    told: set[int] = set()
    for item in unfinished:
        if item.chat_id is not None and item.chat_id not in told:
            told.add(item.chat_id)
            locale = DEFAULT_LOCALE
            if item.user_id is not None:
                locale = pick_locale(*await app.users.language_of(item.user_id))
            try:
                await app.bot.send_message(
                    item.chat_id, app.i18n.gettext(RESTART_NOTICE, locale=locale)
                )
            except Exception:
                log.exception("restart_notice_failed", chat_id=item.chat_id)
        await app.inbox.mark(item.update_id, "notified")
    if unfinished:
        log.info("restart_notices_sent", updates=len(unfinished), chats=len(told))


async def _shutdown(app: Application) -> None:
    grace = app.settings.SHUTDOWN_GRACE_SECONDS
    log.info("shutdown_started", grace_seconds=grace)
    if app.cluster is not None:
        await app.cluster.stop_taking(min(5.0, grace))
    await app.poller.wait_dispatched(timeout=min(5.0, grace))
    await app.scheduler.shutdown(grace)
    if app.cluster is not None:
        await app.cluster.close()
    if app.ops_server is not None:
        await app.ops_server.close()
    for task in app.background:
        task.cancel()
    for task in app.background:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await app.bot.session.close()
    await app.anthropic.close()
    if app.s3_blobs is not None:
        await app.s3_blobs.aclose()
    with contextlib.suppress(Exception):
        await app.images.aclose()
    with contextlib.suppress(Exception):
        await app.transcriber.aclose()
    await app.pdf_checker.aclose()


def _install_signal_handlers(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)
